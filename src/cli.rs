//! Command-line interface: `init`, `mount`, `umount`, `key ...`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::crypto::Backend;
use crate::envelope::Envelope;
use crate::format::{TreeConfig, CONFIG_FILE, DEFAULT_CHUNK_SIZE};
use crate::kms::{
    CreateAliasRequest, CreateKeyRequest, DeleteAliasRequest, DescribeKeyRequest,
    EnableKeyRotationRequest, GetKeyPolicyRequest, KeyIdRequest, Kms, KmsLocation,
    ListAliasesRequest, ListKeyRotationsRequest, ListKeysRequest, PutKeyPolicyRequest,
    ScheduleKeyDeletionRequest,
};

fn fmt_epoch(t: f64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(st).to_string()
}

/// The alias `kmsfs init` uses (and creates on first use) when no --key is given.
pub const DEFAULT_ALIAS: &str = "alias/kmsfs-default";

#[derive(Parser, Debug)]
#[command(
    name = "kmsfs",
    version,
    about = "Encrypted FUSE filesystem with KMS-managed keys"
)]
pub struct Cli {
    /// KMS location: local:DIR (embedded KMS keystore). Default: $KMSFS_KMS, else the
    /// tree's hint, else /var/lib/kmsfs (root) or $XDG_DATA_HOME/kmsfs.
    #[arg(long, global = true, value_name = "LOCATION")]
    pub kms: Option<String>,

    /// The tree must wrap under these keys only (key id, ARN or alias; repeat): its
    /// config is authenticated through them, whatever this host pinned (also
    /// KMSFS_EXPECT_KEYS, comma-separated; fstab: expect_key=KEY).
    #[arg(long = "expect-key", global = true, value_name = "KEY")]
    pub expect_keys: Vec<String>,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a new encrypted tree in BACKING (and the keystore and a default key on first use).
    Init {
        backing: PathBuf,
        /// KMS key (id, ARN or alias/NAME) to wrap file keys with; repeat for recovery keys.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Plaintext bytes per chunk: a power of two from 4096 to 1048576.
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
    },
    /// Mount BACKING at MOUNTPOINT; returns once the mount is live (unless --foreground).
    Mount {
        backing: PathBuf,
        mountpoint: PathBuf,
        /// Stay in the foreground and log to stderr.
        #[arg(long, short = 'f')]
        foreground: bool,
        /// Let other users use the mount (permissions are still checked by the kernel).
        #[arg(long)]
        allow_other: bool,
        /// Append the daemon's log to this file (background mode; default: discard).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// FUSE request threads. More than cores: a thread waiting on the backing disk
        /// (a cold page under a small write) should not hold up the others.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Unwrapped file keys kept in memory (LRU), so re-opening a file needs no KMS call.
        #[arg(long, default_value_t = 32768)]
        key_cache: usize,
        /// Seconds an unwrapped file key is reused before the KMS is asked again.
        #[arg(long, default_value_t = 3600)]
        key_cache_ttl: u64,
        /// New-file keys made ahead of need (each pre-made key is used within 30 s or
        /// dropped); 0 = call the KMS for every new file.
        #[arg(long, default_value_t = 64)]
        dek_pool: usize,
        /// Write through to the backing file on every write(2) instead of letting the
        /// kernel cache writes (the writeback cache is on by default).
        #[arg(long)]
        no_writeback_cache: bool,
        /// Seconds the kernel may trust names and attributes without asking kmsfs again.
        /// Changes made through the mount are always seen at once; a longer time only
        /// matters if something else changes the backing tree while it is mounted.
        #[arg(long, default_value_t = 1.0)]
        attr_timeout: f64,
        /// Internal: descriptor on which to report readiness to the launching process.
        #[arg(long, hide = true)]
        ready_fd: Option<i32>,
    },
    /// Unmount a kmsfs mount.
    Umount { mountpoint: PathBuf },
    /// Manage keys in the KMS.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Re-wrap every file header under the current version of its keys (or under --to KEY);
    /// no data byte is read or written. Works on a mounted tree too.
    Rotate {
        backing: PathBuf,
        /// Move every file (and the tree's config) to this key instead.
        #[arg(long, value_name = "KEY")]
        to: Option<String>,
        /// Files re-wrapped at once (KMS calls in flight).
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Change the keys a tree wraps its file keys under (recovery keys); re-wraps every header.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Re-encrypt files under new data keys (after a suspected DEK exposure). Unmount first.
    Rekey {
        backing: PathBuf,
        /// Files to rekey (paths in the backing tree); default: all.
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Inspect and verify the embedded KMS's audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run or administer the KMS server.
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Check a backing tree (headers, keys, every chunk); exit 0 clean, 1 damage, 2 could not run.
    Fsck {
        backing: PathBuf,
        /// Structure only: do not unwrap keys or check chunks.
        #[arg(long)]
        no_kms: bool,
        /// Write every damaged file here with its unreadable chunks zero-filled.
        #[arg(long, value_name = "DIR")]
        salvage: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print a backing file's plaintext (no mount needed).
    Cat { file: PathBuf },
    /// Restore backing files or directories into DIR (no mount needed).
    Decrypt {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep set-user-ID, set-group-ID and sticky bits from the backing tree (dropped by
        /// default: whoever can write the tree could plant a set-user-ID file).
        #[arg(long)]
        preserve_special_bits: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KmsCmd {
    /// Serve the embedded KMS over the AWS KMS JSON protocol (SigV4).
    Serve {
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Keystore directory (default: --kms local:DIR / KMSFS_KMS / the default keystore).
        #[arg(long)]
        keystore: Option<PathBuf>,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Allow plain HTTP on a non-loopback address.
        #[arg(long)]
        insecure_http: bool,
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Connections one source address may hold (default: a quarter of --max-connections).
        #[arg(long)]
        max_per_source: Option<usize>,
        /// Seconds a client may take to send a request's headers or body, or stay idle
        /// between requests, before its connection is closed.
        #[arg(long, default_value_t = 10)]
        idle_timeout: u64,
    },
    /// Manage the principals (remote callers) of the server.
    #[command(subcommand)]
    Principal(PrincipalCmd),
}

#[derive(Subcommand, Debug)]
pub enum PrincipalCmd {
    /// Create a principal; prints its access key id and secret (shown only this once).
    Create {
        name: String,
    },
    List,
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add KEY to the tree's keys and wrap every file's key under it too.
    Add { backing: PathBuf, key: String },
    /// Remove KEY from the tree's keys and drop its wrapped copies.
    Remove { backing: PathBuf, key: String },
    /// Show the tree's keys.
    List { backing: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the hash chain and checkpoints; exit 1 naming the first bad sequence number.
    Verify {
        #[arg(long)]
        json: bool,
        /// Also check the copies of the checkpoints kept in DIR (the directory the
        /// daemons were given as KMSFS_AUDIT_ANCHOR).
        #[arg(long, value_name = "DIR")]
        anchor: Option<PathBuf>,
    },
    /// Show records, filtered.
    Show(AuditFilter),
    /// Show the last N records (default 20).
    Tail {
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditFilter {
    /// Key id, ARN or a part of it.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub op: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Print raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a symmetric key; prints its ARN.
    Create {
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List keys with their state and aliases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a key's metadata, rotation status and versions (id, ARN or alias/NAME).
    Describe {
        key: String,
    },
    /// Give KEY a new version now (old versions keep decrypting).
    Rotate {
        key: String,
    },
    /// Rotate KEY automatically every N days (90..2560).
    EnableRotation {
        key: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    DisableRotation {
        key: String,
    },
    /// List KEY's rotations.
    Rotations {
        key: String,
    },
    /// Perform automatic rotations that are due (also done by running mounts).
    RotateDue,
    /// Destroy the material of keys whose deletion date has passed (for cron/timers;
    /// mounts and the server also do it every 5 minutes).
    PurgeDue,
    Enable {
        key: String,
    },
    Disable {
        key: String,
    },
    /// Schedule KEY's deletion after N days (7..30); its material is destroyed then.
    ScheduleDeletion {
        key: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion; the key is left Disabled.
    CancelDeletion {
        key: String,
    },
    #[command(subcommand)]
    Alias(AliasCmd),
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    Create { name: String, key: String },
    Update { name: String, key: String },
    Delete { name: String },
    List,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print KEY's key policy.
    Get { key: String },
    /// Replace KEY's key policy with FILE's contents (stdin if no FILE).
    Put { key: String, file: Option<PathBuf> },
}

/// `mount.fuse3` (fstab `fuse.kmsfs`, `mount -t fuse.kmsfs`) runs
/// `kmsfs SOURCE MOUNTPOINT -o OPTIONS`: turn that into `kmsfs mount ...`.
fn mount_helper_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    let is_sub = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    if first.starts_with('-') || is_sub || args.len() < 3 {
        return args;
    }
    let mut out: Vec<std::ffi::OsString> = vec![
        args[0].clone(),
        "mount".into(),
        args[1].clone(),
        args[2].clone(),
    ];
    let mut it = args[3..].iter();
    while let Some(a) = it.next() {
        if a != "-o" {
            continue; // -n, -s, -v from mount(8): nothing to do for us
        }
        let Some(opts) = it.next().and_then(|o| o.to_str()) else {
            break;
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = o
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((o, None));
            match (k, v) {
                ("kms", Some(v)) => out.extend(["--kms".into(), v.into()]),
                ("expect_key", Some(v)) => out.extend(["--expect-key".into(), v.into()]),
                ("allow_other", None) => out.push("--allow-other".into()),
                ("log", Some(v)) => out.extend(["--log-file".into(), v.into()]),
                ("threads", Some(v)) => out.extend(["--threads".into(), v.into()]),
                ("key_cache", Some(v)) => out.extend(["--key-cache".into(), v.into()]),
                ("key_cache_ttl", Some(v)) => out.extend(["--key-cache-ttl".into(), v.into()]),
                ("dek_pool", Some(v)) => out.extend(["--dek-pool".into(), v.into()]),
                ("no_writeback_cache", None) => out.push("--no-writeback-cache".into()),
                ("attr_timeout", Some(v)) => out.extend(["--attr-timeout".into(), v.into()]),
                // generic mount options: the kernel or mount(8) handles (or ignores) them
                (
                    "rw"
                    | "ro"
                    | "suid"
                    | "nosuid"
                    | "dev"
                    | "nodev"
                    | "exec"
                    | "noexec"
                    | "auto"
                    | "noauto"
                    | "user"
                    | "nouser"
                    | "users"
                    | "defaults"
                    | "nofail"
                    | "_netdev"
                    | "atime"
                    | "noatime"
                    | "relatime"
                    | "default_permissions",
                    _,
                ) => {}
                (k, _) if k.starts_with("x-") || k.starts_with("comment=") => {}
                _ => eprintln!("kmsfs: ignoring unknown mount option {o:?}"),
            }
        }
    }
    out
}

/// The command line as parsed (after the mount-helper translation), for re-executing
/// ourselves as the mount daemon.
static ARGS: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();

pub fn main() -> i32 {
    let args = ARGS.get_or_init(|| mount_helper_args(std::env::args_os().collect()));
    let cli = Cli::parse_from(args);
    if !cli.expect_keys.is_empty() {
        // Exported so that the re-executed mount daemon sees it too (still one thread).
        std::env::set_var("KMSFS_EXPECT_KEYS", cli.expect_keys.join(","));
    }
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // one line: the chain of causes joined
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("kmsfs: error: {msg}");
            if e.downcast_ref::<CouldNotRun>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

fn init_logging(to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMSFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd (stderr connected to the journal): no timestamps, `<N>` priorities.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .event_format(JournalFormat)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(to_stderr && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// sd-daemon(3) style lines: `<3>message` for errors, `<4>` warnings, `<6>` info, `<7>` debug.
struct JournalFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{prio}>")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn normalize_alias(a: &str) -> String {
    if a.starts_with("alias/") {
        a.to_string()
    } else {
        format!("alias/{a}")
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init {
            backing,
            keys,
            chunk_size,
        } => cmd_init(cli.kms.as_deref(), &backing, keys, chunk_size),
        Cmd::Mount {
            backing,
            mountpoint,
            foreground,
            allow_other,
            log_file,
            threads,
            key_cache,
            key_cache_ttl,
            dek_pool,
            no_writeback_cache,
            attr_timeout,
            ready_fd,
        } => {
            if foreground {
                init_logging(true);
                let ready = ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                let opts = MountOpts {
                    allow_other,
                    threads,
                    cache_entries: key_cache,
                    cache_ttl: key_cache_ttl,
                    dek_pool,
                    writeback_cache: !no_writeback_cache,
                    attr_timeout,
                };
                cmd_mount_foreground(cli.kms.as_deref(), &backing, &mountpoint, &opts, ready)
            } else {
                spawn_background(log_file.as_deref())
            }
        }
        Cmd::Umount { mountpoint } => cmd_umount(&mountpoint),
        Cmd::Key(k) => cmd_key(cli.kms.as_deref(), k),
        Cmd::Rotate {
            backing,
            to,
            jobs,
            json,
        } => cmd_rotate(cli.kms.as_deref(), &backing, to, jobs, json),
        Cmd::Keys(k) => cmd_keys(cli.kms.as_deref(), k),
        Cmd::Rekey {
            backing,
            paths,
            json,
        } => cmd_rekey(cli.kms.as_deref(), &backing, paths, json),
        Cmd::Audit(a) => cmd_audit(cli.kms.as_deref(), a),
        Cmd::Kms(k) => cmd_kms(cli.kms.as_deref(), k),
        Cmd::Fsck {
            backing,
            no_kms,
            salvage,
            json,
        } => cmd_fsck(cli.kms.as_deref(), &backing, no_kms, salvage, json),
        Cmd::Cat { file } => {
            let root = crate::offline::find_root(&file)?;
            let env = offline_env(cli.kms.as_deref(), &root)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let file = std::fs::canonicalize(&file)?;
            let f = crate::offline::open_backing_file(&file)?;
            crate::offline::decrypt_file(&env, &f, &file, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Cmd::Decrypt {
            paths,
            out,
            preserve_special_bits,
        } => {
            let root = crate::offline::find_root(&paths[0])?;
            let env = offline_env(cli.kms.as_deref(), &root)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let rep = crate::offline::decrypt_tree(
                &env,
                &root,
                &paths,
                &out,
                true,
                preserve_special_bits,
            )?;
            println!(
                "restored {} files ({} bytes) into {}",
                rep.files,
                rep.bytes,
                out.display()
            );
            for (p, e) in &rep.failed {
                eprintln!("kmsfs: {p}: {e}");
            }
            if !rep.failed.is_empty() {
                bail!("{} file(s) could not be restored", rep.failed.len());
            }
            Ok(())
        }
    }
}

fn offline_env(kms_arg: Option<&str>, root: &Path) -> Result<Arc<Envelope>> {
    let crate::trust::TrustedTree { cfg, kms, .. } = open_tree(root, kms_arg)?;
    Ok(Arc::new(Envelope::new(
        kms,
        cfg,
        Backend::from_env(),
        1024,
        0,
    )))
}

/// Exit status 2: fsck could not run.
#[derive(Debug)]
pub struct CouldNotRun(pub String);
impl std::fmt::Display for CouldNotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CouldNotRun {}

fn cmd_fsck(
    kms_arg: Option<&str>,
    backing: &Path,
    no_kms: bool,
    salvage: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let cfg = TreeConfig::load(backing).map_err(|e| CouldNotRun(format!("{e:#}")))?;
    let env = if no_kms {
        None
    } else {
        let kms = open_tree(backing, kms_arg)
            .map_err(|e| CouldNotRun(format!("{e:#}")))?
            .kms;
        Some(Arc::new(Envelope::new(
            kms,
            cfg.clone(),
            Backend::from_env(),
            1024,
            0,
        )))
    };
    if let Some(d) = &salvage {
        std::fs::create_dir_all(d)
            .map_err(|e| CouldNotRun(format!("cannot create {}: {e}", d.display())))?;
    }
    let rep = crate::offline::fsck(backing, &cfg, env.as_ref(), salvage.as_deref(), !json)
        .map_err(|e| CouldNotRun(format!("{e:#}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for p in &rep.problems {
            let at = match (p.chunk, p.offset) {
                (Some(c), Some(o)) => format!(": chunk {c} at offset {o}"),
                (None, Some(o)) => format!(": at offset {o}"),
                _ => String::new(),
            };
            println!("{}{at}: {}: {}", p.path, p.kind, p.detail);
        }
        for s in &rep.salvaged {
            println!(
                "salvaged {} -> {} (zero-filled chunks: {:?})",
                s.path, s.out, s.zero_filled_chunks
            );
        }
        println!(
            "{} files, {} bytes checked{}: {} damaged, {} problems",
            rep.files,
            rep.bytes,
            if no_kms { " (structure only)" } else { "" },
            rep.damaged_files,
            rep.problems.len()
        );
    }
    if !rep.problems.is_empty() {
        bail!("damage found in {}", backing.display());
    }
    Ok(())
}

fn cmd_kms(kms_arg: Option<&str>, cmd: KmsCmd) -> Result<()> {
    match cmd {
        KmsCmd::Serve {
            listen,
            keystore,
            tls_cert,
            tls_key,
            insecure_http,
            max_connections,
            max_per_source,
            idle_timeout,
        } => {
            init_logging(true);
            let dir = match keystore {
                Some(d) => d,
                None => local_dir(kms_arg)?,
            };
            let kms = crate::kms::local::LocalKms::open(&dir, true)?;
            // automatic rotations are performed by whoever holds the keystore
            let rot = kms.with_caller(kms.caller().clone());
            std::thread::spawn(move || loop {
                match rot.rotate_due_keys() {
                    Ok(r) => r
                        .iter()
                        .for_each(|k| tracing::info!("automatic rotation of {k}")),
                    Err(e) => tracing::warn!("automatic rotation check failed: {e}"),
                }
                std::thread::sleep(std::time::Duration::from_secs(300));
            });
            let opts = crate::server::ServeOpts {
                listen,
                tls: tls_cert.zip(tls_key),
                insecure_http,
                max_connections,
                idle_timeout: std::time::Duration::from_secs(idle_timeout.max(1)),
                max_per_source: max_per_source.unwrap_or(max_connections / 4).max(1),
            };
            let r = crate::server::serve(kms, opts, |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
                // systemd Type=notify: the listener accepts connections now
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            });
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            r
        }
        KmsCmd::Principal(p) => {
            let kms = crate::kms::local::LocalKms::open(&local_dir(kms_arg)?, false)?;
            match p {
                PrincipalCmd::Create { name } => {
                    let (akid, secret) = kms.create_principal(&name)?;
                    println!("principal {name}");
                    println!("aws_access_key_id = {akid}");
                    println!(
                        "aws_secret_access_key = {}",
                        String::from_utf8_lossy(&secret.0)
                    );
                    eprintln!("kmsfs: the secret is shown only now; store it (e.g. in ~/.aws/credentials)");
                }
                PrincipalCmd::List => {
                    for p in kms.list_principals()? {
                        println!(
                            "{}\t{}\t{}\t{}",
                            p.name,
                            p.access_key_id,
                            if p.enabled { "enabled" } else { "disabled" },
                            fmt_epoch(p.created)
                        );
                    }
                }
                PrincipalCmd::Disable { name } => kms.change_principal(&name, Some(false))?,
                PrincipalCmd::Enable { name } => kms.change_principal(&name, Some(true))?,
                PrincipalCmd::Delete { name } => kms.change_principal(&name, None)?,
            }
            Ok(())
        }
    }
}

fn print_summary(s: &crate::tree::Summary, verb: &str, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        println!("{}", s.line(verb));
    }
    if s.failed > 0 {
        bail!("{} file(s) failed (listed above)", s.failed);
    }
    Ok(())
}

/// Resolves keys to ARNs through the KMS.
fn key_arns(kms: &dyn Kms, keys: &[String]) -> Result<Vec<String>> {
    keys.iter()
        .map(|k| {
            kms.describe_key(DescribeKeyRequest { key_id: k.clone() })
                .map(|r| r.key_metadata.arn)
                .with_context(|| format!("key {k}"))
        })
        .collect()
}

fn cmd_rotate(
    kms_arg: Option<&str>,
    backing: &Path,
    to: Option<String>,
    jobs: usize,
    json: bool,
) -> Result<()> {
    let mut t = open_tree(backing, kms_arg)?;
    if let Some(k) = to {
        // Config first: new files use the new key at once; a killed run resumes with
        // a plain `kmsfs rotate`, which re-wraps to whatever the config says.
        t.cfg.keys = key_arns(&*t.kms, &[k])?;
        t.seal()?;
        t.save(backing, write_config)?;
    } else if !t.authenticated() {
        // An older tree: the daily rotation adds the config's MAC.
        t.seal()?;
        t.save(backing, write_config)?;
    }
    let (cfg, kms) = (&t.cfg, &t.kms);
    let s = crate::tree::rewrap(backing, cfg, &**kms, &cfg.keys, jobs, !json)?;
    print_summary(&s, "re-wrapped", json)
}

fn cmd_keys(kms_arg: Option<&str>, cmd: KeysCmd) -> Result<()> {
    let (backing, change) = match &cmd {
        KeysCmd::Add { backing, key } => (backing, Some((true, key))),
        KeysCmd::Remove { backing, key } => (backing, Some((false, key))),
        KeysCmd::List { backing } => (backing, None),
    };
    let Some((add, key)) = change else {
        for k in &TreeConfig::load(backing)?.keys {
            println!("{k}");
        }
        return Ok(());
    };
    let mut t = open_tree(backing, kms_arg)?;
    let kms = t.kms.clone();
    let cfg = &mut t.cfg;
    let arn = key_arns(&*kms, std::slice::from_ref(key))?.remove(0);
    if add {
        if cfg.keys.contains(&arn) {
            bail!("{arn} is already one of {}'s keys", backing.display());
        }
        if cfg.keys.len() >= crate::format::MAX_WRAPS {
            bail!("a tree can have at most {} keys", crate::format::MAX_WRAPS);
        }
        cfg.keys.push(arn);
    } else {
        if !cfg.keys.contains(&arn) {
            bail!("{arn} is not one of {}'s keys", backing.display());
        }
        if cfg.keys.len() == 1 {
            bail!(
                "{arn} is {}'s only key; add another first (or use `kmsfs rotate --to`)",
                backing.display()
            );
        }
        cfg.keys.retain(|k| *k != arn);
    }
    t.seal()?;
    t.save(backing, write_config)?;
    let s = crate::tree::rewrap(backing, &t.cfg, &*kms, &t.cfg.keys, 8, true)?;
    print_summary(&s, "re-wrapped", false)
}

fn cmd_rekey(kms_arg: Option<&str>, backing: &Path, paths: Vec<PathBuf>, json: bool) -> Result<()> {
    let crate::trust::TrustedTree { cfg, kms, .. } = open_tree(backing, kms_arg)?;
    let files = if paths.is_empty() {
        crate::tree::walk_files(backing)?
    } else {
        paths
            .into_iter()
            .map(|p| if p.is_absolute() { p } else { backing.join(p) })
            .collect()
    };
    let env = Arc::new(Envelope::new(kms, cfg, Backend::from_env(), 64, 0));
    let s = crate::tree::rekey(backing, &env, files, !json)?;
    print_summary(&s, "rekeyed", json)
}

fn local_dir(kms_arg: Option<&str>) -> Result<PathBuf> {
    match KmsLocation::resolve(kms_arg)? {
        KmsLocation::Local(d) => Ok(d),
        other => bail!(
            "this command works on the embedded KMS's keystore (local:DIR), not {}",
            other.describe()
        ),
    }
}

fn cmd_audit(kms_arg: Option<&str>, cmd: AuditCmd) -> Result<()> {
    let dir = local_dir(kms_arg)?;
    match cmd {
        AuditCmd::Verify { json, anchor } => {
            let kms = crate::kms::local::LocalKms::open_unchecked(&dir, false)?;
            let vouched = kms.audit_vouched();
            match kms.audit().verify_with(vouched.as_ref(), anchor.as_deref()) {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "audit log OK: {} records, {} checkpoints, {} records after the last checkpoint",
                            r.records, r.checkpoints, r.unchecked_tail
                        );
                    }
                    Ok(())
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "seq": e.seq, "reason": e.reason})
                        );
                    }
                    bail!("{e}")
                }
            }
        }
        AuditCmd::Show(f) => show_audit(&dir, &f, None),
        AuditCmd::Tail { n, filter } => show_audit(&dir, &filter, Some(n)),
    }
}

fn show_audit(dir: &Path, f: &AuditFilter, last: Option<usize>) -> Result<()> {
    let parse_time = |s: &Option<String>| -> Result<Option<std::time::SystemTime>> {
        s.as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t).with_context(|| format!("invalid time {t:?}"))
            })
            .transpose()
    };
    let (since, until) = (parse_time(&f.since)?, parse_time(&f.until)?);
    let recs: Vec<_> = crate::kms::audit::read_records(dir)?
        .into_iter()
        .filter(|r| {
            f.key
                .as_ref()
                .is_none_or(|k| r.key_arn.as_deref().is_some_and(|a| a.contains(k.as_str())))
        })
        .filter(|r| f.principal.as_ref().is_none_or(|p| &r.principal == p))
        .filter(|r| f.op.as_ref().is_none_or(|o| r.op.eq_ignore_ascii_case(o)))
        .filter(|r| {
            let t = humantime::parse_rfc3339_weak(&r.time).ok();
            since.is_none_or(|s| t.is_some_and(|t| t >= s))
                && until.is_none_or(|u| t.is_some_and(|t| t <= u))
        })
        .collect();
    let skip = last.map(|n| recs.len().saturating_sub(n)).unwrap_or(0);
    for r in &recs[skip..] {
        if f.json {
            let mut v = serde_json::to_value(r)?;
            v["hash"] = serde_json::Value::String(r.hash.clone());
            println!("{v}");
        } else {
            println!(
                "{:>6} {} {:<14} {:<28} {:<6} {} {}",
                r.seq,
                r.time,
                r.principal,
                r.op,
                r.error_code.as_deref().unwrap_or(&r.outcome),
                r.key_arn.as_deref().unwrap_or("-"),
                r.source
            );
        }
    }
    Ok(())
}

fn cmd_init(
    kms_arg: Option<&str>,
    backing: &Path,
    keys: Vec<String>,
    chunk_size: u32,
) -> Result<()> {
    crate::format::chunk_shift(chunk_size).map_err(|e| anyhow::anyhow!("--chunk-size: {e}"))?;
    // Check the target before touching the KMS, so a failed init creates nothing.
    if backing.join(CONFIG_FILE).exists() {
        bail!(
            "{} is already a kmsfs tree ({} exists)",
            backing.display(),
            CONFIG_FILE
        );
    }
    let existed = backing.exists();
    if existed {
        if !backing.is_dir() {
            bail!("{} exists and is not a directory", backing.display());
        }
        if std::fs::read_dir(backing)?.next().is_some() {
            bail!(
                "{} is not empty; kmsfs init needs a new or empty directory",
                backing.display()
            );
        }
    } else if let Some(parent) = backing.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("parent directory {} does not exist", parent.display());
        }
    }
    let loc = KmsLocation::resolve(kms_arg)?;
    let kms = loc.open(true)?;
    let arns = if keys.is_empty() {
        vec![default_key(&*kms)?]
    } else {
        let arns = key_arns(&*kms, &keys)?;
        if arns.len() > crate::format::MAX_WRAPS {
            bail!("a tree can have at most {} keys", crate::format::MAX_WRAPS);
        }
        if (1..arns.len()).any(|i| arns[..i].contains(&arns[i])) {
            bail!("the same key is given twice");
        }
        arns
    };
    let t = crate::trust::TrustedTree::create(
        TreeConfig::new(chunk_size, arns, Some(loc.describe())),
        kms.clone(),
        loc.describe(),
    )?;
    let cfg = &t.cfg;
    if !existed {
        std::fs::create_dir(backing)
            .with_context(|| format!("cannot create {}", backing.display()))?;
    }
    let r = t.save(backing, write_config);
    if r.is_err() && !existed {
        let _ = std::fs::remove_dir_all(backing);
    }
    r?;
    println!(
        "initialised {} (fs id {}, chunk size {})",
        backing.display(),
        cfg.fs_id,
        cfg.chunk_size
    );
    for k in &cfg.keys {
        println!("  wraps file keys under {k}");
    }
    Ok(())
}

fn write_config(backing: &Path, cfg: &TreeConfig) -> Result<()> {
    let tmp = backing.join(format!(".{CONFIG_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot write in {}", backing.display()))?;
    // Headers live in user xattrs: refuse a backing filesystem that cannot hold them.
    if let Err(e) = rustix::fs::fsetxattr(
        &f,
        "user.kmsfs.probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    ) {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{} does not support user extended attributes ({e}); kmsfs stores file headers in them",
            backing.display()
        );
    }
    let _ = rustix::fs::fremovexattr(&f, "user.kmsfs.probe");
    f.write_all(serde_json::to_string_pretty(cfg)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, backing.join(CONFIG_FILE))?;
    std::fs::File::open(backing)?.sync_all()?;
    Ok(())
}

fn default_key(kms: &dyn Kms) -> Result<String> {
    match kms.describe_key(DescribeKeyRequest {
        key_id: DEFAULT_ALIAS.into(),
    }) {
        Ok(r) => Ok(r.key_metadata.arn),
        Err(e) if e.code == crate::kms::ErrorCode::NotFoundException => {
            let md = kms
                .create_key(CreateKeyRequest {
                    description: Some("kmsfs default key".into()),
                    ..Default::default()
                })?
                .key_metadata;
            kms.create_alias(CreateAliasRequest {
                alias_name: DEFAULT_ALIAS.into(),
                target_key_id: md.key_id.clone(),
            })?;
            eprintln!("kmsfs: created key {} ({DEFAULT_ALIAS})", md.arn);
            Ok(md.arn)
        }
        Err(e) => Err(e.into()),
    }
}

/// Re-runs this binary as a detached `mount --foreground` and waits until it reports the
/// mount live (or why it failed) on a pipe.
fn spawn_background(log_file: Option<&Path>) -> Result<()> {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let exe = std::env::current_exe().context("cannot find the kmsfs binary")?;
    // The daemon runs with --foreground; one that would spawn another has a bug: refuse.
    if std::env::var_os("KMSFS_MOUNT_DAEMON").is_some() {
        bail!("internal error: the mount daemon tried to start another daemon");
    }
    let mut args: Vec<std::ffi::OsString> = ARGS
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
        .into_iter()
        .skip(1)
        .collect();
    args.push("--foreground".into());
    args.push("--ready-fd".into());
    args.push(wr.as_raw_fd().to_string().into());
    let stderr = match log_file {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let wr_raw = wr.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // a detached daemon is not the service's main process: it must not notify
        .env_remove("NOTIFY_SOCKET")
        .env("KMSFS_MOUNT_DAEMON", "1");
    unsafe {
        cmd.pre_exec(move || {
            // detach from the terminal's session; keep the pipe across exec
            libc::setsid();
            let flags = libc::fcntl(wr_raw, libc::F_GETFD);
            libc::fcntl(wr_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    drop(wr);
    let mut msg = String::new();
    std::fs::File::from(rd).read_to_string(&mut msg)?;
    if msg.starts_with("ok") {
        return Ok(());
    }
    let status = child.wait()?;
    match msg.strip_prefix("error: ") {
        Some(m) => bail!("{}", m.trim()),
        None => bail!("mount daemon exited ({status}) before the mount was live"),
    }
}

fn report(ready: &mut Option<OwnedFd>, msg: &str) {
    if let Some(fd) = ready.take() {
        let _ = std::fs::File::from(fd).write_all(msg.as_bytes());
    }
}

fn check_mountpoint(mp: &Path) -> Result<()> {
    let md = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    let canon = std::fs::canonicalize(mp)?;
    if let Some(parent) = canon.parent() {
        let pmd = std::fs::metadata(parent)?;
        if pmd.dev() != md.dev() || is_mounted(&canon) {
            bail!("{} is already a mount point (busy)", mp.display());
        }
    }
    if std::fs::read_dir(mp)?.next().is_some() {
        bail!("mountpoint {} is not empty", mp.display());
    }
    Ok(())
}

fn is_mounted(path: &Path) -> bool {
    !crate::fs::mount_devices(path).is_empty()
}

/// The mount keeps a cache of directory descriptors sized from the descriptor limit (and
/// one descriptor per open file): raise the limit as far as allowed (root may go past the
/// hard limit, up to fs.nr_open).
fn raise_nofile_limit() {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        let want = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Opens the KMS for an existing tree: --kms, else KMSFS_KMS, else the tree's hint.
/// Opens a tree whose config this host trusts (see `crate::trust`), with its KMS.
pub fn open_tree(backing: &Path, kms_arg: Option<&str>) -> Result<crate::trust::TrustedTree> {
    let expect: Vec<String> = std::env::var("KMSFS_EXPECT_KEYS")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    crate::trust::open_tree(backing, kms_arg, &expect)
}

#[derive(Debug, Clone, Copy)]
pub struct MountOpts {
    pub allow_other: bool,
    pub threads: usize,
    pub cache_entries: usize,
    pub cache_ttl: u64,
    pub dek_pool: usize,
    pub writeback_cache: bool,
    pub attr_timeout: f64,
}

fn cmd_mount_foreground(
    kms_arg: Option<&str>,
    backing: &Path,
    mountpoint: &Path,
    opts: &MountOpts,
    mut ready: Option<OwnedFd>,
) -> Result<()> {
    let MountOpts {
        allow_other,
        threads,
        cache_entries,
        cache_ttl,
        dek_pool,
        writeback_cache,
        attr_timeout,
    } = *opts;
    if !(0.0..=86400.0).contains(&attr_timeout) {
        bail!("--attr-timeout {attr_timeout}: must be between 0 and 86400 seconds");
    }
    let setup = || -> Result<(fuser::Session<crate::fs::KmsFs>, Arc<dyn Kms>)> {
        let backing = std::fs::canonicalize(backing)
            .with_context(|| format!("backing directory {}", backing.display()))?;
        let crate::trust::TrustedTree { cfg, kms, .. } = open_tree(&backing, kms_arg)?;
        check_mountpoint(mountpoint)?;
        // After a `rotate --to` or a key change on the mounted tree, headers name keys the
        // mount started without: it re-authenticates kmsfs.json (MAC and pin) to adopt them.
        let (reload_backing, reload_kms) = (backing.clone(), kms_arg.map(str::to_string));
        let env = Arc::new(
            Envelope::new(
                kms.clone(),
                cfg,
                Backend::from_env(),
                cache_entries,
                dek_pool,
            )
            .with_ttl(std::time::Duration::from_secs(cache_ttl))
            .with_reload(move || {
                match open_tree(&reload_backing, reload_kms.as_deref()) {
                    Ok(t) => Some(t.cfg.keys),
                    Err(e) => {
                        tracing::warn!("re-reading the tree's config: {e:#}");
                        None
                    }
                }
            }),
        );
        let fs = crate::fs::KmsFs::new(
            &crate::fs::FsOptions {
                backing: backing.clone(),
                writeback_cache,
                attr_timeout: std::time::Duration::from_secs_f64(attr_timeout),
                mountpoint: std::fs::canonicalize(mountpoint)
                    .unwrap_or_else(|_| mountpoint.to_path_buf()),
            },
            env,
            cache_entries,
        )
        .with_context(|| format!("cannot open {}", backing.display()))?;
        // Modes are applied exactly as asked: the kernel already applied the caller's umask.
        rustix::process::umask(rustix::fs::Mode::empty());
        raise_nofile_limit();
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(backing.display().to_string()),
            fuser::MountOption::Subtype("kmsfs".into()),
        ];
        // Other users need the kernel to check permissions for them (the daemon acts
        // with its own rights on the backing tree). Without allow_other only the mounting
        // user gets in, and the backing filesystem already checks that user: skipping
        // default_permissions then spares a GETATTR of the directory after every change
        // in it (the kernel drops a directory's attributes when an entry changes).
        if allow_other {
            config
                .mount_options
                .push(fuser::MountOption::DefaultPermissions);
        }
        config.acl = if allow_other {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        config.n_threads = Some(threads.max(1));
        config.clone_fd = threads > 1;
        let session = fuser::Session::new(fs, mountpoint, &config)
            .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        Ok((session, kms))
    };
    let (mut session, env_kms) = match setup() {
        Ok(s) => s,
        Err(e) => {
            report(
                &mut ready,
                &format!("error: {}\n", format!("{e:#}").replace('\n', " ")),
            );
            return Err(e);
        }
    };
    tracing::info!("mounted {} on {}", backing.display(), mountpoint.display());
    // Unmount cleanly on SIGTERM/SIGINT/SIGHUP.
    let mut unmounter = session.unmount_callable();
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                tracing::warn!("unmount failed: {e}");
            }
        }
    });
    // The embedded KMS rotates keys only when someone holding the keystore checks.
    // Weak: the keystore (and its audit log, which checkpoints on close) is released
    // when the session ends.
    let kms = Arc::downgrade(&env_kms);
    drop(env_kms);
    std::thread::spawn(move || loop {
        let Some(kms) = kms.upgrade() else { return };
        match kms.rotate_due() {
            Ok(rotated) => rotated
                .iter()
                .for_each(|k| tracing::info!("automatic rotation of {k}")),
            Err(e) => tracing::warn!("automatic rotation check failed: {e}"),
        }
        drop(kms);
        std::thread::sleep(std::time::Duration::from_secs(300));
    });
    report(&mut ready, "ok\n");
    // systemd Type=notify: the mount answers now
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    session.run().context("FUSE session failed")?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(())
}

fn cmd_umount(mp: &Path) -> Result<()> {
    let canon =
        std::fs::canonicalize(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !is_mounted(&canon) {
        bail!("{} is not mounted", mp.display());
    }
    if rustix::process::geteuid().is_root() {
        // A file closed a moment ago may still be in the kernel's hands (its release or
        // writeback in flight): EBUSY then clears quickly, so retry briefly.
        let mut tries = 0;
        loop {
            match rustix::mount::unmount(&canon, rustix::mount::UnmountFlags::empty()) {
                Ok(()) => break,
                Err(rustix::io::Errno::BUSY) if tries < 20 => {
                    tries += 1;
                    rustix::fs::sync();
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => bail!(
                    "cannot unmount {}: {e} (files still open on it?)",
                    mp.display()
                ),
            }
        }
    } else {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&canon)
            .status()
            .context("cannot run fusermount3 (install the fuse3 package)")?;
        if !st.success() {
            bail!("fusermount3 -u {} failed", mp.display());
        }
    }
    Ok(())
}

fn cmd_key(kms_arg: Option<&str>, cmd: KeyCmd) -> Result<()> {
    let loc = KmsLocation::resolve(kms_arg)?;
    match cmd {
        KeyCmd::Create { alias, description } => {
            let kms = loc.open(true)?;
            let md = kms
                .create_key(CreateKeyRequest {
                    description,
                    ..Default::default()
                })?
                .key_metadata;
            if let Some(a) = alias {
                let a = normalize_alias(&a);
                kms.create_alias(CreateAliasRequest {
                    alias_name: a.clone(),
                    target_key_id: md.key_id.clone(),
                })
                .with_context(|| format!("key {} was created, but alias {a} was not", md.arn))?;
            }
            println!("{}", md.arn);
        }
        KeyCmd::List { json } => {
            let kms = loc.open(false)?;
            let mut keys = vec![];
            let mut marker = None;
            loop {
                let r = kms.list_keys(ListKeysRequest {
                    limit: Some(1000),
                    marker,
                })?;
                keys.extend(r.keys);
                if !r.truncated {
                    break;
                }
                marker = r.next_marker;
            }
            let aliases = kms.list_aliases(ListAliasesRequest::default())?.aliases;
            let mut rows = vec![];
            for k in keys {
                let md = match kms.describe_key(DescribeKeyRequest {
                    key_id: k.key_id.clone(),
                }) {
                    Ok(r) => r.key_metadata,
                    Err(e) => {
                        // a key the caller may not describe is listed, not fatal
                        if !json {
                            println!("{}\t({})", k.key_arn, e.code.name());
                        }
                        continue;
                    }
                };
                let names: Vec<String> = aliases
                    .iter()
                    .filter(|a| a.target_key_id == md.key_id)
                    .map(|a| a.alias_name.clone())
                    .collect();
                rows.push((md, names));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(md, names)| serde_json::json!({"KeyMetadata": md, "Aliases": names}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (md, names) in rows {
                    println!(
                        "{}\t{}\t{}\t{}",
                        md.arn,
                        md.key_state,
                        names.join(","),
                        md.description
                    );
                }
            }
        }
        KeyCmd::Describe { key } => {
            let kms = loc.open(false)?;
            let md = kms
                .describe_key(DescribeKeyRequest {
                    key_id: key.clone(),
                })
                .with_context(|| format!("key {key}"))?;
            let id = md.key_metadata.key_id.clone();
            // Extras the caller may not be allowed to see are left out, not fatal.
            let rot = kms
                .get_key_rotation_status(KeyIdRequest { key_id: id.clone() })
                .ok();
            let rots = kms
                .list_key_rotations(ListKeyRotationsRequest {
                    key_id: id.clone(),
                    ..Default::default()
                })
                .ok()
                .map(|r| r.rotations);
            let aliases = kms
                .list_aliases(ListAliasesRequest {
                    key_id: Some(id),
                    ..Default::default()
                })
                .ok()
                .map(|r| {
                    r.aliases
                        .into_iter()
                        .map(|a| a.alias_name)
                        .collect::<Vec<_>>()
                });
            let v = serde_json::json!({
                "KeyMetadata": md.key_metadata,
                "Aliases": aliases,
                "Rotation": rot,
                "Rotations": rots,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        KeyCmd::Rotate { key } => {
            let kms = loc.open(false)?;
            let r = kms.rotate_key_on_demand(KeyIdRequest {
                key_id: key.clone(),
            })?;
            let md = kms
                .describe_key(DescribeKeyRequest {
                    key_id: r.key_id.clone(),
                })?
                .key_metadata;
            println!(
                "{} now at key material {}",
                r.key_id,
                md.current_key_material_id.unwrap_or_default()
            );
        }
        KeyCmd::EnableRotation { key, days } => {
            loc.open(false)?
                .enable_key_rotation(EnableKeyRotationRequest {
                    key_id: key,
                    rotation_period_in_days: Some(days),
                })?;
        }
        KeyCmd::DisableRotation { key } => loc
            .open(false)?
            .disable_key_rotation(KeyIdRequest { key_id: key })?,
        KeyCmd::Rotations { key } => {
            let r = loc
                .open(false)?
                .list_key_rotations(ListKeyRotationsRequest {
                    key_id: key,
                    ..Default::default()
                })?;
            for e in r.rotations {
                println!(
                    "{}\t{}\t{}",
                    fmt_epoch(e.rotation_date),
                    e.rotation_type,
                    e.key_material_id
                );
            }
        }
        KeyCmd::PurgeDue => {
            let dir = local_dir(kms_arg)?;
            for arn in crate::kms::local::LocalKms::open(&dir, false)?.purge_due_keys()? {
                println!("deleted {arn}");
            }
        }
        KeyCmd::RotateDue => {
            for arn in loc.open(false)?.rotate_due()? {
                println!("rotated {arn}");
            }
        }
        KeyCmd::Enable { key } => loc.open(false)?.enable_key(KeyIdRequest { key_id: key })?,
        KeyCmd::Disable { key } => loc.open(false)?.disable_key(KeyIdRequest { key_id: key })?,
        KeyCmd::ScheduleDeletion { key, days } => {
            let r = loc
                .open(false)?
                .schedule_key_deletion(ScheduleKeyDeletionRequest {
                    key_id: key,
                    pending_window_in_days: Some(days),
                })?;
            println!(
                "{} will be deleted at {}",
                r.key_id,
                fmt_epoch(r.deletion_date)
            );
        }
        KeyCmd::CancelDeletion { key } => {
            let r = loc
                .open(false)?
                .cancel_key_deletion(KeyIdRequest { key_id: key })?;
            println!("{} deletion cancelled; the key is Disabled", r.key_id);
        }
        KeyCmd::Alias(a) => {
            let kms = loc.open(false)?;
            match a {
                AliasCmd::Create { name, key } => kms.create_alias(CreateAliasRequest {
                    alias_name: normalize_alias(&name),
                    target_key_id: key,
                })?,
                AliasCmd::Update { name, key } => kms.update_alias(CreateAliasRequest {
                    alias_name: normalize_alias(&name),
                    target_key_id: key,
                })?,
                AliasCmd::Delete { name } => kms.delete_alias(DeleteAliasRequest {
                    alias_name: normalize_alias(&name),
                })?,
                AliasCmd::List => {
                    for a in kms.list_aliases(ListAliasesRequest::default())?.aliases {
                        println!("{}\t{}", a.alias_name, a.target_key_id);
                    }
                }
            }
        }
        KeyCmd::Policy(p) => {
            let kms = loc.open(false)?;
            match p {
                PolicyCmd::Get { key } => {
                    let r = kms.get_key_policy(GetKeyPolicyRequest {
                        key_id: key,
                        policy_name: None,
                    })?;
                    let pretty = serde_json::from_str::<serde_json::Value>(&r.policy)
                        .and_then(|v| serde_json::to_string_pretty(&v))
                        .unwrap_or(r.policy);
                    println!("{pretty}");
                }
                PolicyCmd::Put { key, file } => {
                    let text = match file {
                        Some(f) => std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))?,
                        None => {
                            let mut s = String::new();
                            std::io::stdin().read_to_string(&mut s)?;
                            s
                        }
                    };
                    kms.put_key_policy(PutKeyPolicyRequest {
                        key_id: key,
                        policy: text,
                        policy_name: None,
                        bypass_policy_lockout_safety_check: None,
                    })?;
                }
            }
        }
    }
    Ok(())
}
