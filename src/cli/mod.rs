//! The command line: clap types, and for each command the library call and the printing.
//! Parsing only here (`mod.rs`); one file per family of commands.

mod daemon;
mod fstab;
mod grant;
mod key;
mod kms;
mod logging;
mod tree;
mod xks;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::format::DEFAULT_CHUNK_SIZE;
use crate::kms::KmsLocation;

/// Files re-wrapped at once by `rotate` and `keys add|remove` unless `--jobs` says.
const REWRAP_JOBS: usize = crate::tree::REWRAP_JOBS;

/// Exit statuses (like gocryptfs's `exitcodes`): 0 success, 1 failure.
pub mod exit {
    /// The command did what was asked.
    pub const OK: i32 = 0;
    /// It failed (the error is on stderr, one line).
    pub const FAILED: i32 = 1;
    /// `fsck` could not check the tree at all (as opposed to finding damage: FAILED).
    pub const FSCK_COULD_NOT_RUN: i32 = 2;
}

#[derive(Parser, Debug)]
#[command(
    name = "kmsfs",
    version,
    about = "Encrypted FUSE filesystem with KMS-managed keys"
)]
pub(crate) struct Cli {
    /// KMS location: local:DIR (embedded KMS keystore), https://HOST:PORT (kmsfs kms
    /// serve, moto, any AWS-KMS-compatible endpoint) or aws:REGION (AWS KMS). Default:
    /// $KMSFS_KMS, else the tree's hint, else /var/lib/kmsfs (root) or
    /// $XDG_DATA_HOME/kmsfs.
    #[arg(long, global = true, value_name = "LOCATION")]
    pub kms: Option<String>,

    /// The tree must wrap under these keys only (key id, ARN or alias; repeat): its
    /// config is authenticated through them, whatever this host pinned (also
    /// KMSFS_EXPECT_KEYS, comma-separated; fstab: expect_key=KEY).
    #[arg(long = "expect-key", global = true, value_name = "KEY")]
    pub expect_keys: Vec<String>,

    /// How a keystore made by this command keeps its root key: passphrase (the default
    /// on a terminal or with a passphrase file), pkcs11:token=T;object=O?module-path=M,
    /// kms:KEY@LOCATION, or none (in the clear; only when asked for). Also KMSFS_SEAL.
    #[arg(long, global = true, value_name = "SEAL")]
    pub seal: Option<String>,

    /// Read the keystore's passphrase from the first line of FILE instead of asking on
    /// the terminal (also KMSFS_PASSPHRASE_FILE, or the systemd credential
    /// kmsfs-passphrase). Never on the command line itself.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Where the embedded KMS keeps its keys: sqlite:PATH (default: keystore.sqlite in
    /// the keystore directory) or postgres://USER@HOST:PORT/DB (servers sharing one
    /// database; the password from KMSFS_STORE_PASSWORD_FILE or the systemd credential
    /// kmsfs-store-password). Also KMSFS_STORE.
    #[arg(long, global = true, value_name = "STORE")]
    pub store: Option<String>,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Create a new encrypted tree in BACKING (and the keystore and a default key on first use).
    Init {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// KMS key (id, ARN or alias/NAME) to wrap file keys with; repeat for recovery keys.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Plaintext bytes per chunk: a power of two from 4096 to 1048576.
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Keep names in the clear in the backing tree (format 1; the only mode of a
        /// tree of RSA keys). Default: names encrypted (format 2).
        #[arg(long)]
        plaintext_names: bool,
    },
    /// Mount BACKING at MOUNTPOINT; returns once the mount is live (unless --foreground).
    Mount {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// The directory where the plaintext view appears.
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
        #[arg(long, default_value_t = 16)]
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
        /// Have the kernel ask kmsfs at every open and close of a file (one round trip
        /// more per open; by default files are opened on first read or write and the
        /// kernel does not ask; encrypt-only trees always ask).
        #[arg(long)]
        open_requests: bool,
        /// Do not make files ahead: by default, when files are created one after another
        /// in a directory, the next one (two in a long run) is made there ahead of time
        /// in the background, so small-file creates ran 1.3-2.2x as fast here.
        #[arg(long)]
        no_files_ahead: bool,
        /// Accepted for older command lines and fstab entries: files are made ahead by
        /// default.
        #[arg(long, hide = true, conflicts_with = "no_files_ahead")]
        files_ahead: bool,
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
    Umount {
        /// The directory the tree is mounted on.
        mountpoint: PathBuf,
    },
    /// Manage keys in the KMS.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Grants: let another principal use a key for some operations.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Re-wrap every file header under the current version of its keys (or under --to KEY);
    /// no data byte is read or written. Works on a mounted tree too.
    Rotate {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// Move every file (and the tree's config) to this key instead.
        #[arg(long, value_name = "KEY")]
        to: Option<String>,
        /// Files re-wrapped at once (KMS calls in flight). The threads mostly wait on the
        /// KMS (its audit log's fsync, or the network), so many more than cores: 32 was
        /// 1.8x faster than 8 on a 2-core host (bench/rotate.sh).
        #[arg(long, default_value_t = REWRAP_JOBS)]
        jobs: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change the keys a tree wraps its file keys under (recovery keys); re-wraps every header.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The tree key (names, symlink targets, file authentication).
    #[command(subcommand)]
    TreeKey(TreeKeyCmd),
    /// Share a tree with a principal by KMS grants bound to this tree (kmsfs:fs = its id):
    /// it can mount this tree and no other tree under the same keys.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["with", "list", "revoke"])))]
    Share {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// The principal (a name, or arn:aws:iam::ACCOUNT:user/NAME) to share with.
        #[arg(long, value_name = "PRINCIPAL")]
        with: Option<String>,
        /// Decrypt only: the principal can read, not create files.
        #[arg(long, requires = "with")]
        read_only: bool,
        /// The principals the tree is shared with.
        #[arg(long)]
        list: bool,
        /// Revoke every grant of PRINCIPAL bound to this tree, then move the tree to a new
        /// tree key (`kmsfs tree-key rotate`; the tree must be unmounted) so that nothing
        /// PRINCIPAL kept opens what is written afterwards.
        #[arg(long, value_name = "PRINCIPAL")]
        revoke: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt files under new data keys (after a suspected DEK exposure). Unmount first.
    Rekey {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// Files to rekey (paths in the backing tree); default: all.
        paths: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and verify the embedded KMS's audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run or administer the KMS server.
    #[command(subcommand)]
    Kms(KmsCmd),
    /// An External Key Store (XKS) proxy in front of a PKCS#11 token, for AWS KMS or our KMS.
    #[command(subcommand)]
    Xks(XksCmd),
    /// Check a backing tree (headers, keys, every chunk); exit 0 clean, 1 damage, 2 could not run.
    Fsck {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// Structure only: do not unwrap keys or check chunks.
        #[arg(long)]
        no_kms: bool,
        /// Write every damaged file here with its unreadable chunks zero-filled.
        #[arg(long, value_name = "DIR")]
        salvage: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions for kmsfs (made from its command line definition).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print kmsfs's manual page (roff; e.g. `kmsfs man > /usr/local/share/man/man1/kmsfs.1`).
    Man,
    /// Print a file's plaintext (no mount needed): a backing FILE, or the file at
    /// plaintext PATH in the tree BACKING (`cat BACKING PATH`).
    Cat {
        /// A backing file of a tree, or the tree's backing directory with PATH.
        file: PathBuf,
        /// The plaintext path of the file inside the tree (with FILE the tree's backing directory).
        path: Option<PathBuf>,
    },
    /// The backing path of the file at plaintext PATH in tree BACKING; with --reverse,
    /// the plaintext path of a backing path (for a restore from backup).
    Path {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// A plaintext path inside the tree (with --reverse: a backing path).
        path: PathBuf,
        /// Map a backing path back to its plaintext path instead.
        #[arg(long)]
        reverse: bool,
    },
    /// Restore backing files or directories into DIR (no mount needed).
    Decrypt {
        /// Backing files or directories of the tree to restore.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The directory to restore into (made if missing; nothing is written outside it).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep set-user-ID, set-group-ID and sticky bits from the backing tree (dropped by
        /// default: whoever can write the tree could plant a set-user-ID file).
        #[arg(long)]
        preserve_special_bits: bool,
    },
}

// Parsed once per process: the size of the Serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub(crate) enum KmsCmd {
    /// Serve the embedded KMS over the AWS KMS JSON protocol (SigV4).
    Serve {
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Keystore directory (default: --kms local:DIR / KMSFS_KMS / the default keystore).
        #[arg(long)]
        keystore: Option<PathBuf>,
        /// TLS certificate chain (PEM); with --tls-key the server speaks HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Allow plain HTTP on a non-loopback address.
        #[arg(long)]
        insecure_http: bool,
        /// Connections held at once, in all.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Connections one source address may hold (default: a quarter of --max-connections).
        #[arg(long)]
        max_per_source: Option<usize>,
        /// Seconds a client may take to send a request's headers or body, or stay idle
        /// between requests, before its connection is closed.
        #[arg(long, default_value_t = 10)]
        idle_timeout: u64,
        /// The region this server is: ARNs carry it, and requests signed for another
        /// region see no keys (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1 —
        /// what `--kms https://…` signs for by default). Several, comma-separated
        /// (`us-east-1,eu-west-1`): the server answers each request as the Region it is
        /// signed for, each Region with its own keys, aliases and grants, and multi-Region
        /// keys work between them (the first is where region-less requests are answered).
        #[arg(long)]
        region: Option<String>,
        /// The 12-digit account in ARNs; `arn:aws:iam::ACCOUNT:root` in a key policy means
        /// every principal of this server.
        #[arg(long, default_value = crate::kms::local::DEFAULT_ACCOUNT)]
        account_id: String,
        /// A principal that may create, connect, update and delete custom key stores
        /// (which make this server connect to the proxy URL they name); repeat. The
        /// keystore's own host may always.
        #[arg(long = "xks-admin", value_name = "PRINCIPAL")]
        xks_admins: Vec<String>,
        /// Requests per second one principal may make (expensive operations weigh more:
        /// GetParametersForImport 1000, GenerateDataKeyPair 100); bursts of twice that.
        /// Beyond: ThrottlingException.
        #[arg(long, default_value_t = 2000.0, value_name = "N")]
        max_rate: f64,
        /// Request bytes per second one principal may send (so the audit bytes it causes
        /// are bounded); bursts of twice that.
        #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
        max_request_bytes: u64,
        /// Resources one principal may hold: keys=N,aliases=N,grants=N,grants-per-key=N
        /// (defaults 10000, 10000, 10000, 50000); beyond: LimitExceededException.
        #[arg(long, value_name = "LIST")]
        quotas: Option<String>,
    },
    /// Manage the principals (remote callers) of the server.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// How the embedded keystore's root key is kept at rest (its seal).
    #[command(subcommand)]
    Seal(SealCmd),
    /// Unseal the keystore once (asking for its passphrase) and keep its root key in the
    /// kernel keyring for a while: commands in the meantime ask for nothing.
    Unlock {
        /// How long (e.g. 15m, 1h; at most 24h).
        #[arg(long = "for", value_name = "DURATION", default_value = "15m")]
        duration: String,
    },
    /// Forget an unlocked keystore's root key now (before its time runs out).
    Lock,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SealCmd {
    /// Print the keystore's seal.
    Show,
    /// Re-seal the root key (no KMS key or tree changes); leaving "none" destroys the
    /// clear root.key. The passphrase is asked twice on the terminal, or read from
    /// KMSFS_PASSPHRASE_FILE.
    Change {
        /// The new seal: passphrase, kms:KEY@LOCATION (a key of another KMS: kmsfs kms
        /// serve, AWS KMS) or none.
        #[arg(long, value_name = "SEAL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PrincipalCmd {
    /// Create a principal; prints its access key id and secret (shown only this once).
    Create {
        /// The principal's name.
        name: String,
        /// Its AWS account (12 digits), when it is not the server's `--account-id`: its
        /// keys and aliases are that account's; other accounts' keys answer it by key ARN
        /// when their key policy names it or its account.
        #[arg(long)]
        account: Option<String>,
    },
    /// List the principals (name, access key id, account, state, creation time).
    List,
    /// Disable a principal: its requests are refused until it is enabled.
    Disable {
        /// The principal's name.
        name: String,
    },
    /// Enable a disabled principal.
    Enable {
        /// The principal's name.
        name: String,
    },
    /// Delete a principal and its secret.
    Delete {
        /// The principal's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TreeKeyCmd {
    /// Draw a new tree key and move every name, symlink target and file authentication
    /// to it (no data byte touched; resumable: run it again after an interruption).
    /// Whoever held the old tree key can read nothing written afterwards and plant
    /// nothing the mount accepts. The tree must be unmounted.
    Rotate {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCmd {
    /// Add KEY to the tree's keys and wrap every file's key under it too.
    Add {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// The key to add: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Remove KEY from the tree's keys and drop its wrapped copies; the tree then moves
    /// to a new tree key (unless mounted).
    Remove {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
        /// The key to remove: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Show the tree's keys.
    List {
        /// The backing directory: the tree as it is stored (ciphertext and kmsfs.json).
        backing: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Check the hash chain and checkpoints; exit 1 naming the first bad sequence number.
    Verify {
        /// Print JSON instead of text.
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
        /// How many of the newest records.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AuditFilter {
    /// Key id, ARN or a part of it.
    #[arg(long)]
    pub key: Option<String>,
    /// Only records of this principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records of this operation (e.g. Decrypt).
    #[arg(long)]
    pub op: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Print raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCmd {
    /// Create a key (symmetric unless --spec says otherwise); prints its ARN.
    Create {
        /// An alias for it, alias/NAME.
        #[arg(long)]
        alias: Option<String>,
        /// A description (up to 8,192 characters).
        #[arg(long)]
        description: Option<String>,
        /// KeySpec: SYMMETRIC_DEFAULT (default), HMAC_224|256|384|512,
        /// RSA_2048|3072|4096, ECC_NIST_P256|P384|P521, ECC_SECG_P256K1, ECC_NIST_EDWARDS25519,
        /// ML_DSA_44|65|87 (post-quantum signing), ML_KEM_512|768|1024 (post-quantum KEM).
        #[arg(long)]
        spec: Option<String>,
        /// KeyUsage: ENCRYPT_DECRYPT (default; RSA keys too), GENERATE_VERIFY_MAC (HMAC
        /// keys), SIGN_VERIFY (RSA, ECC and ML-DSA keys), ENCAPSULATE_DECAPSULATE (ML-KEM).
        #[arg(long)]
        usage: Option<String>,
        /// A multi-Region primary key (an mrk- id; replicate it with `key replicate`):
        /// needs several Regions on one store (kms serve --region A,B, or a cluster).
        #[arg(long)]
        multi_region: bool,
    },
    /// Replicate a multi-Region primary key into another Region; prints the replica's ARN.
    Replicate {
        /// The primary key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The Region of the replica (its server shares this store).
        #[arg(long)]
        region: String,
        /// The replica's description (default: the primary's).
        #[arg(long)]
        description: Option<String>,
    },
    /// An asymmetric key's public key (DER SubjectPublicKeyInfo), base64 or PEM.
    PublicKey {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// Print it as PEM instead of base64 DER.
        #[arg(long)]
        pem: bool,
    },
    /// Signs FILE (stdin if none, 1..4096 bytes) with a SIGN_VERIFY key; base64 signature.
    Sign {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The file to read the message (or document) from; standard input if none.
        file: Option<PathBuf>,
        /// SigningAlgorithm (default: the key's first, e.g. ECDSA_SHA_256).
        #[arg(long)]
        algorithm: Option<String>,
        /// FILE is a digest, not the message.
        #[arg(long)]
        digest: bool,
    },
    /// Checks a base64 SIGNATURE of FILE (stdin if none); exit status 1 if invalid.
    Verify {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The signature, base64.
        signature: String,
        /// The file holding the message that was signed; standard input if none.
        file: Option<PathBuf>,
        /// The signing algorithm (default: the key's first).
        #[arg(long)]
        algorithm: Option<String>,
        /// The message is a digest of the right length (MessageType DIGEST), not the message itself.
        #[arg(long)]
        digest: bool,
    },
    /// HMAC of FILE (stdin if none, 1..4096 bytes) under an HMAC key, base64; with
    /// --verify MAC, checks MAC instead (exit status 1 if it does not match).
    Mac {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The file holding the message; standard input if none.
        file: Option<PathBuf>,
        /// The MAC to check (base64).
        #[arg(long)]
        verify: Option<String>,
    },
    /// List keys with their state and aliases.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's metadata, rotation status and versions (id, ARN or alias/NAME).
    Describe {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Give KEY a new version now (old versions keep decrypting).
    Rotate {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Rotate KEY automatically every N days (90..2560).
    EnableRotation {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// Rotation period in days (90..2560; default 365).
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Stop rotating KEY automatically.
    DisableRotation {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// List KEY's rotations.
    Rotations {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Perform automatic rotations that are due (also done by running mounts).
    RotateDue,
    /// Destroy the material of keys whose deletion date has passed (for cron/timers;
    /// mounts and the server also do it every 5 minutes).
    PurgeDue,
    /// Enable a disabled key.
    Enable {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Disable a key: nothing is encrypted or decrypted under it until it is enabled.
    Disable {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Schedule KEY's deletion after N days (7..30); its material is destroyed then.
    ScheduleDeletion {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// Waiting period in days (7..30; default 30).
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion; the key is left Disabled.
    CancelDeletion {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Add or replace tags (KEY=VALUE ...).
    Tag {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// Tags as KEY=VALUE.
        tags: Vec<String>,
    },
    /// Remove tags (by tag key).
    Untag {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The tag keys to remove.
        tag_keys: Vec<String>,
    },
    /// Show a key's tags.
    Tags {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Aliases (alias/NAME) of keys.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Key policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AliasCmd {
    /// Create alias NAME for KEY.
    Create {
        /// The alias, alias/NAME.
        name: String,
        /// The key the alias points at: key id or key ARN.
        key: String,
    },
    /// Point alias NAME at KEY instead.
    Update {
        /// The alias, alias/NAME.
        name: String,
        /// The key the alias points at from now on: key id or key ARN.
        key: String,
    },
    /// Delete alias NAME (the key stays).
    Delete {
        /// The alias, alias/NAME.
        name: String,
    },
    /// List the aliases and the keys they point at.
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum XksCmd {
    /// Serve the XKS Proxy API (v1) described by a configuration file (README "Custom key
    /// stores"); the token's PIN from KMSFS_PKCS11_PIN_FILE or the credential
    /// kmsfs-pkcs11-pin.
    Serve {
        /// The proxy's configuration (JSON: listen, path_prefix, token, credentials, keys, tls).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Listen here instead of the configuration's address (port 0: any free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Make a key in the token: AES-256, sensitive, never extractable.
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        cmd: XksKeyCmd,
    },
    /// SigV4 credentials of the proxy.
    Credential {
        /// What to do with credentials.
        #[command(subcommand)]
        cmd: XksCredentialCmd,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum XksCredentialCmd {
    /// Make a SigV4 credential: the secret goes to a file (0600), the access key id is
    /// printed.
    Create {
        /// Where to write the secret (0600; refused if it exists).
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
        /// Also write the JSON file AWS KMS's console takes (XksProxyUriPath and the
        /// credential, 0600) for this URI path prefix.
        #[arg(long, value_name = "FILE")]
        aws_json: Option<PathBuf>,
        /// The proxy's path_prefix (for --aws-json).
        #[arg(long, default_value = "", value_name = "PREFIX")]
        path_prefix: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum XksKeyCmd {
    /// Make an AES-256 key object labelled LABEL (its external key id) in the token.
    Create {
        /// The key object's label, used as the external key id.
        label: String,
        /// The token: pkcs11:token=T?module-path=M (PIN from KMSFS_PKCS11_PIN_FILE).
        #[arg(long, value_name = "URI")]
        token: String,
        /// What the key may do: both (default), encrypt or decrypt.
        #[arg(long, default_value = "both", value_parser = ["both", "encrypt", "decrypt"])]
        usage: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Print KEY's key policy.
    Get {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// Replace KEY's key policy with FILE's contents (stdin if no FILE).
    Put {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The policy document (JSON); standard input if none.
        file: Option<PathBuf>,
    },
}

/// The command line as parsed (after the mount-helper translation), for re-executing
/// ourselves as the mount daemon.
static ARGS: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();

/// Runs the command line; returns the exit status.
pub fn main() -> i32 {
    let args = ARGS.get_or_init(|| fstab::mount_helper_args(std::env::args_os().collect()));
    let cli = Cli::parse_from(args);
    // The command line may ask for a passphrase on its terminal; the library never does.
    crate::seal::allow_prompts();
    if !cli.expect_keys.is_empty() {
        // Exported so that the re-executed mount daemon sees it too (still one thread).
        std::env::set_var("KMSFS_EXPECT_KEYS", cli.expect_keys.join(","));
    }
    // Likewise for the seal of a new keystore and the passphrase file: the library and
    // the mount daemon read them from the environment.
    if let Some(s) = &cli.seal {
        if let Err(e) = crate::seal::SealTarget::parse(s) {
            print_error(&e.into());
            return exit::FAILED;
        }
        std::env::set_var("KMSFS_SEAL", s);
    }
    if let Some(s) = &cli.store {
        if let Err(e) = crate::kms::store::Location::parse(s) {
            print_error(&e.into());
            return exit::FAILED;
        }
        std::env::set_var("KMSFS_STORE", s);
    }
    if let Some(p) = &cli.passphrase_file {
        std::env::set_var(
            "KMSFS_PASSPHRASE_FILE",
            std::path::absolute(p).unwrap_or(p.clone()),
        );
    }
    match run(cli) {
        Ok(status) => status,
        Err(e) => {
            print_error(&e);
            exit::FAILED
        }
    }
}

/// The error on stderr, one line: the chain of causes joined.
fn print_error(e: &anyhow::Error) {
    let msg = format!("{e:#}").replace('\n', " ");
    eprintln!("kmsfs: error: {msg}");
}

/// Runs one parsed command; returns the exit status (errors: FAILED).
fn run(cli: Cli) -> Result<i32> {
    let kms = cli.kms.as_deref();
    match cli.cmd {
        Cmd::Init {
            backing,
            keys,
            chunk_size,
            plaintext_names,
        } => tree::init(kms, &backing, keys, chunk_size, !plaintext_names)?,
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
            open_requests,
            no_files_ahead,
            files_ahead: _,
            attr_timeout,
            ready_fd,
        } => {
            if !foreground {
                // A keystore sealed with a passphrase is unsealed here, where the
                // terminal is, and its root key handed to the daemon (crate::seal).
                if crate::seal::may_prompt() {
                    crate::trust::open_tree(&backing, kms, &expect_keys())?;
                }
                return daemon::spawn_background(log_file.as_deref(), &ARGS).map(|()| exit::OK);
            }
            if !(0.0..=86400.0).contains(&attr_timeout) {
                anyhow::bail!("--attr-timeout {attr_timeout}: must be between 0 and 86400 seconds");
            }
            let opts = crate::fs::MountOptions {
                kms: cli.kms.clone(),
                expect_keys: expect_keys(),
                allow_other,
                threads,
                cache_entries: key_cache,
                cache_ttl: std::time::Duration::from_secs(key_cache_ttl),
                dek_pool,
                writeback_cache: !no_writeback_cache,
                open_requests,
                files_ahead: !no_files_ahead,
                attr_timeout: std::time::Duration::from_secs_f64(attr_timeout),
            };
            daemon::mount_foreground(&backing, &mountpoint, &opts, ready_fd)?
        }
        Cmd::Umount { mountpoint } => crate::fs::unmount(&mountpoint)?,
        Cmd::Key(k) => key::run(kms, k)?,
        Cmd::Grant(g) => grant::run(kms, g)?,
        Cmd::Rotate {
            backing,
            to,
            jobs,
            json,
        } => tree::rotate(kms, &backing, to, jobs, json)?,
        Cmd::Keys(k) => tree::keys(kms, k)?,
        Cmd::TreeKey(TreeKeyCmd::Rotate { backing, json }) => {
            tree::tree_key_rotate(kms, &backing, json)?
        }
        Cmd::Share {
            backing,
            with,
            read_only,
            list,
            revoke,
            json,
        } => tree::share(kms, &backing, with, read_only, list, revoke, json)?,
        Cmd::Rekey {
            backing,
            paths,
            json,
        } => tree::rekey(kms, &backing, paths, json)?,
        Cmd::Audit(a) => kms::audit(kms, a)?,
        Cmd::Kms(k) => kms::run(kms, k)?,
        Cmd::Xks(x) => xks::run(x)?,
        Cmd::Fsck {
            backing,
            no_kms,
            salvage,
            json,
        } => return tree::fsck(kms, &backing, no_kms, salvage, json),
        Cmd::Cat { file, path } => tree::cat(kms, &file, path.as_deref())?,
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut cmd = Cli::command();
            // into memory first: a closed pipe is an error to report, not a panic
            let mut out = vec![];
            clap_complete::generate(shell, &mut cmd, "kmsfs", &mut out);
            std::io::stdout().write_all(&out)?;
        }
        Cmd::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
        }
        Cmd::Path {
            backing,
            path,
            reverse,
        } => tree::path(kms, &backing, &path, reverse)?,
        Cmd::Decrypt {
            paths,
            out,
            preserve_special_bits,
        } => tree::decrypt(kms, &paths, &out, preserve_special_bits)?,
    }
    Ok(exit::OK)
}

/// `--expect-key` (exported as KMSFS_EXPECT_KEYS, which the mount daemon inherits).
fn expect_keys() -> Vec<String> {
    std::env::var("KMSFS_EXPECT_KEYS")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Opens a tree whose config this host trusts (see `crate::trust`), with its KMS.
fn open_tree(backing: &Path, kms_arg: Option<&str>) -> crate::Result<crate::trust::TrustedTree> {
    crate::trust::open_tree(backing, kms_arg, &expect_keys())
}

/// The keystore directory of the embedded KMS named by --kms (other KMSes refused).
fn local_dir(kms_arg: Option<&str>) -> Result<PathBuf> {
    match KmsLocation::resolve(kms_arg)? {
        KmsLocation::Local(d) => Ok(d),
        other => anyhow::bail!(
            "this command works on the embedded KMS's keystore (local:DIR), not {}",
            other.describe()
        ),
    }
}

/// A time in seconds since the epoch, as RFC 3339.
fn fmt_epoch(t: f64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(st).to_string()
}

#[derive(Subcommand, Debug)]
pub(crate) enum GrantCmd {
    /// Let GRANTEE perform OPERATIONs on KEY; prints the grant id and token.
    Create {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The principal the grant is for.
        #[arg(long)]
        grantee: String,
        /// Encrypt, Decrypt, GenerateDataKey, Sign, ... (repeat).
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        /// The principal that may retire the grant.
        #[arg(long)]
        retiring: Option<String>,
        /// A name for the grant (makes CreateGrant idempotent).
        #[arg(long)]
        name: Option<String>,
        /// The request's encryption context must contain KEY=VALUE (repeat).
        #[arg(long = "context-subset", value_name = "KEY=VALUE")]
        subset: Vec<String>,
        /// The request's encryption context must be exactly these KEY=VALUE (repeat).
        #[arg(long = "context-equals", value_name = "KEY=VALUE")]
        equals: Vec<String>,
    },
    /// KEY's grants.
    List {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
    },
    /// End a grant as its retiring principal, grantee or creator.
    Retire {
        /// The grant token.
        #[arg(long)]
        token: Option<String>,
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        #[arg(long)]
        key: Option<String>,
        /// The grant id.
        #[arg(long)]
        id: Option<String>,
    },
    /// End a grant as the key's administrator.
    Revoke {
        /// A key: key id, key ARN, alias/NAME or alias ARN.
        key: String,
        /// The grant id.
        id: String,
    },
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Completions and the manual page are made from the same definition.
    #[test]
    fn completions_and_man_page_name_every_command() {
        let mut cmd = super::Cli::command();
        let mut out = vec![];
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "kmsfs", &mut out);
        let text = String::from_utf8(out).unwrap();
        for c in ["tree-key", "share", "decrypt", "seal", "unlock"] {
            assert!(text.contains(c), "bash completion lacks {c}");
        }
        let mut man = vec![];
        clap_mangen::Man::new(super::Cli::command())
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(
            man.contains(".TH kmsfs 1") && man.contains("tree\\-key"),
            "{}",
            &man[..200]
        );
    }

    /// Every command, argument and flag says what it is in `--help`.
    #[test]
    fn every_argument_has_a_description() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", c.get_name());
            if c.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{here} (command)"));
            }
            for a in c.get_arguments() {
                if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{here} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                if s.get_name() != "help" {
                    walk(s, &here, missing);
                }
            }
        }
        let mut missing = vec![];
        walk(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without help:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
