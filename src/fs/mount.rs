//! Mounting: the trusted tree and its KMS, the mountpoint checks, the FUSE session, the
//! signal handler and the automatic-rotation ticker; and unmounting.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::{fail, Context, Result};
use crate::kms::Kms;

use super::{FsOptions, KmsFs};

/// How to mount a tree.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// `--kms`: where the KMS is (else `KMSFS_KMS`, else the tree's own hint if pinned).
    pub kms: Option<String>,
    /// `--expect-key`: the keys the tree must be wrapped under (else this host's pin).
    pub expect_keys: Vec<String>,
    /// Let other users in (the kernel then checks permissions).
    pub allow_other: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Files whose keys are cached.
    pub cache_entries: usize,
    /// How long an unwrapped key is cached.
    pub cache_ttl: Duration,
    /// New-file headers made ahead of need.
    pub dek_pool: usize,
    /// FUSE_WRITEBACK_CACHE.
    pub writeback_cache: bool,
    /// OPEN and RELEASE for every open (see `FsOptions::open_requests`).
    pub open_requests: bool,
    /// Files made ahead of need (see `FsOptions::files_ahead`).
    pub files_ahead: bool,
    /// Entry and attribute timeout handed to the kernel (0..=86400 s).
    pub attr_timeout: Duration,
}

/// A live mount, not yet serving requests (see [`Mount::run`]).
pub struct Mount {
    session: fuser::Session<super::fuse::Fuse>,
    kms: Arc<dyn Kms>,
    mountpoint: PathBuf,
    /// Mounted by `mount_as_root`, not fuser: unmounting on a signal is ours too.
    self_mounted: bool,
    /// Told once INIT is answered and the read-ahead raised (see `Fuse::new`).
    settled: std::sync::mpsc::Receiver<()>,
}

/// Mounts the tree at `backing` on `mountpoint`: the tree's config must be trusted by
/// this host (see `crate::trust`), the mountpoint an empty directory nothing is mounted on.
pub fn mount(backing: &Path, mountpoint: &Path, opts: &MountOptions) -> Result<Mount> {
    if opts.attr_timeout > Duration::from_secs(86400) {
        fail!(
            "--attr-timeout {}: must be between 0 and 86400 seconds",
            opts.attr_timeout.as_secs_f64()
        );
    }
    // Before anything asks for a passphrase: can this user mount at all?
    check_fuse_access(mountpoint)?;
    let backing = std::fs::canonicalize(backing)
        .with_context(|| format!("backing directory {}", backing.display()))?;
    let tree = crate::trust::open_tree(&backing, opts.kms.as_deref(), &opts.expect_keys)?;
    tree.check_settled()?;
    check_mountpoint(mountpoint)?;
    // After a `rotate --to` or a key change on the mounted tree, headers name keys the
    // mount started without: it re-authenticates kmsfs.json (MAC and pin) to adopt them.
    let (reload_backing, reload_kms, reload_expect) =
        (backing.clone(), opts.kms.clone(), opts.expect_keys.clone());
    let kms = tree.kms.clone();
    let name_key = tree.name_key();
    let place_key = tree.place_key();
    let auth = tree.auth_key();
    let reader = tree.is_reader();
    let env = Arc::new(
        Envelope::new(kms.clone(), tree.cfg)
            .with_auth(auth, reader)
            .with_cache(opts.cache_entries)
            .with_pool(opts.dek_pool)
            .with_ttl(opts.cache_ttl)
            .with_reload(move || {
                match crate::trust::open_tree(
                    &reload_backing,
                    reload_kms.as_deref(),
                    &reload_expect,
                ) {
                    Ok(t) => Some(t.cfg.keys),
                    Err(e) => {
                        tracing::warn!("re-reading the tree's config: {e}");
                        None
                    }
                }
            }),
    );
    let fs = KmsFs::new(
        &FsOptions {
            backing: backing.clone(),
            writeback_cache: opts.writeback_cache,
            open_requests: opts.open_requests,
            files_ahead: opts.files_ahead,
            attr_timeout: opts.attr_timeout,
            mountpoint: std::fs::canonicalize(mountpoint)
                .unwrap_or_else(|_| mountpoint.to_path_buf()),
        },
        env,
        opts.cache_entries,
    )
    .with_context(|| format!("cannot open {}", backing.display()))?;
    let fs = match name_key {
        Some(k) => fs.with_names(k, place_key),
        None => fs,
    };
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
    if opts.allow_other {
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    // A reader (a read-only share: no write key) could make nothing the tree's writers
    // accept: the mount is read-only, so nothing it makes is silently refused later.
    if reader {
        tracing::info!(
            "this host may not unwrap the tree's write key (a read-only share): mounting read-only"
        );
        config.mount_options.push(fuser::MountOption::RO);
    }
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = opts.threads > 1;
    let notifier = fs.notifier_slot();
    let (settled_tx, settled) = std::sync::mpsc::sync_channel(1);
    let fuse = super::fuse::Fuse::new(fs, settled_tx);
    let own = mount_as_root(&backing, mountpoint, opts.allow_other, reader)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let self_mounted = own.is_some();
    let session = match own {
        Some(fd) => fuser::Session::from_fd(fuse, fd, config.acl, config),
        None => fuser::Session::new(fuse, mountpoint, &config),
    }
    .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    // For telling the kernel about changes it did not make (a write's privilege kill).
    let _ = notifier.set(session.notifier());
    tracing::info!("mounted {} on {}", backing.display(), mountpoint.display());
    Ok(Mount {
        session,
        kms,
        mountpoint: mountpoint.to_path_buf(),
        self_mounted,
        settled,
    })
}

/// Says in one line why a user cannot mount, before fuser says only "Permission denied":
/// `/dev/fuse` must be open to the user (fusermount3 opens it with the user's rights
/// too), and a user mounts through `fusermount3`.
fn check_fuse_access(mountpoint: &Path) -> Result<()> {
    use rustix::fs::Access;
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    match rustix::fs::access("/dev/fuse", Access::READ_OK | Access::WRITE_OK) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT) => fail!(
            "cannot mount on {}: there is no /dev/fuse (load the fuse module: modprobe fuse)",
            mountpoint.display()
        ),
        Err(_) => {
            let md = std::fs::metadata("/dev/fuse").ok();
            fail!(
                "cannot mount on {}: this user (uid {}) may not open /dev/fuse (mode {:o}, owner {}:{}), so FUSE is root's alone here; mount as root, or have an administrator open the device to users (chmod 0666 /dev/fuse, most distributions' default)",
                mountpoint.display(),
                rustix::process::getuid().as_raw(),
                md.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0),
                md.as_ref().map(|m| m.uid()).unwrap_or(0),
                md.as_ref().map(|m| m.gid()).unwrap_or(0)
            )
        }
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !on_path {
        fail!(
            "cannot mount on {}: fusermount3 is not installed (a user mounts through it): install the fuse3 package",
            mountpoint.display()
        );
    }
    Ok(())
}

/// As root, mounts the FUSE device itself with type `fuse.kmsfs` (what `findmnt -t
/// fuse.kmsfs` and fstab's `fuse.kmsfs` look for) and answers its descriptor: fuser
/// 0.18's own mount(2) passes type `fuse` and drops the subtype. Without the privilege
/// (EPERM: a user namespace), None: fuser mounts (through fusermount3, which keeps the
/// subtype). Options as fuser's: nosuid, nodev, the mountpoint's root mode, our ids.
fn mount_as_root(
    backing: &Path,
    mountpoint: &Path,
    allow_other: bool,
    read_only: bool,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let dev = rustix::fs::open(
        "/dev/fuse",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    if allow_other {
        data.push_str(",default_permissions,allow_other");
    }
    let data = std::ffi::CString::new(data).expect("no NUL");
    match rustix::mount::mount(
        backing.as_os_str(),
        mountpoint,
        "fuse.kmsfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | if read_only {
                rustix::mount::MountFlags::RDONLY
            } else {
                rustix::mount::MountFlags::empty()
            },
        data.as_c_str(),
    ) {
        Ok(()) => Ok(Some(dev)),
        Err(rustix::io::Errno::PERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Mount {
    /// Serves requests until the mount goes: unmounted from outside, or by SIGTERM,
    /// SIGINT or SIGHUP (which unmount cleanly). `live` is called once it answers, with
    /// its read-ahead in place (from another thread: this one serves INIT).
    pub fn run(self, live: impl FnOnce() + Send + 'static) -> Result<()> {
        let Mount {
            mut session,
            kms,
            mountpoint,
            self_mounted,
            settled,
        } = self;
        let mut unmounter = session.unmount_callable();
        let mp = mountpoint.clone();
        let mut signals =
            signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!("signal {sig}: unmounting");
                let r = match self_mounted {
                    true => rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::empty())
                        .map_err(std::io::Error::from),
                    false => unmounter.unmount(),
                };
                if let Err(e) = r {
                    tracing::warn!("unmount failed: {e}");
                }
            }
        });
        // Weak: the keystore (and its audit log, which checkpoints on close) is released
        // when the session ends.
        crate::kms::spawn_rotation_ticker(Arc::downgrade(&kms));
        drop(kms);
        std::thread::spawn(move || {
            // Bounded: should INIT not be answered within 10 s, the parent is told
            // anyway, as it was before this wait existed.
            let _ = settled.recv_timeout(std::time::Duration::from_secs(10));
            live();
        });
        session.run().context("FUSE session failed")?;
        tracing::info!("unmounted {}", mountpoint.display());
        Ok(())
    }
}

/// Unmounts the kmsfs mount at `mp` (root: umount2, retrying a moment while the kernel
/// finishes a release; others: fusermount3 -u).
pub fn unmount(mp: &Path) -> Result<()> {
    let canon =
        std::fs::canonicalize(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !is_mounted(&canon) {
        fail!("{} is not mounted", mp.display());
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
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => fail!(
                    "cannot unmount {}: {e} (files still open on it?)",
                    mp.display()
                ),
            }
        }
    } else {
        let st = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&canon)
            .status()
            .context("cannot run fusermount3 (install the fuse3 package)")?;
        if !st.success() {
            fail!("fusermount3 -u {} failed", mp.display());
        }
    }
    Ok(())
}

/// One mount of /proc/self/mountinfo: its device, mountpoint, type and source.
struct MountInfo {
    dev: String,
    point: String,
    fstype: String,
    source: String,
}

/// /proc/self/mountinfo, parsed (escapes `\040` for spaces undone).
fn mountinfo() -> Vec<MountInfo> {
    let unescape = |s: &str| s.replace("\\040", " ");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            let mut t = tail.split(' ');
            (f.len() > 4).then(|| MountInfo {
                dev: f[2].to_string(),
                point: unescape(f[4]),
                fstype: t.next().unwrap_or("").to_string(),
                source: unescape(t.next().unwrap_or("")),
            })
        })
        .collect()
}

/// The devices (`major:minor`) of the mounts at `path`.
pub fn mount_devices(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy();
    mountinfo()
        .into_iter()
        .filter(|m| m.point == p)
        .map(|m| m.dev)
        .collect()
}

/// Is something mounted at `path` (canonical)?
pub fn is_mounted(path: &Path) -> bool {
    !mount_devices(path).is_empty()
}

/// Is the tree `backing` mounted by kmsfs (a FUSE mount whose source is this path)?
pub fn is_mounted_backing(backing: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(backing) else {
        return false;
    };
    let want = canon.to_string_lossy();
    mountinfo()
        .iter()
        .any(|m| m.fstype.starts_with("fuse") && m.source == want)
}

fn check_mountpoint(mp: &Path) -> Result<()> {
    let md = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !md.is_dir() {
        fail!("mountpoint {} is not a directory", mp.display());
    }
    let canon = std::fs::canonicalize(mp)?;
    if let Some(parent) = canon.parent() {
        let pmd = std::fs::metadata(parent)?;
        if pmd.dev() != md.dev() || is_mounted(&canon) {
            fail!("{} is already a mount point (busy)", mp.display());
        }
    }
    // As gocryptfs: never mount over files. They would be hidden by the mount, and they
    // may be plaintext someone wrote there while the tree was not mounted.
    let entries = std::fs::read_dir(mp)?.take(1000).count();
    if entries > 0 {
        fail!(
            "mountpoint {} is not empty ({}{} entries, maybe written while it was not mounted: they are not encrypted); move them away (or into the mount once it is up) and mount again",
            mp.display(),
            entries,
            if entries == 1000 { "+" } else { "" }
        );
    }
    Ok(())
}

/// The mount keeps a cache of directory descriptors sized from the descriptor limit (and
/// one descriptor per open file): raise the limit as far as allowed (root may go past the
/// hard limit, up to fs.nr_open).
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let cur = getrlimit(Resource::Nofile);
    let want = Rlimit {
        current: Some(nr_open),
        maximum: Some(nr_open.max(cur.maximum.unwrap_or(u64::MAX))),
    };
    if setrlimit(Resource::Nofile, want).is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}
