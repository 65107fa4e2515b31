//! Seals: how the embedded keystore's root key — the 32 bytes that unlock every key of
//! the keystore — is kept at rest (docs/FORMAT.md "Seals", docs/THREAT-MODEL.md "The
//! root of trust").
//!
//! - **passphrase** (`root.seal`): the root key sealed with AES-256-GCM under a key
//!   stretched from a passphrase by Argon2id; the parameters are recorded beside it and
//!   bound into the seal. The passphrase comes from `KMSFS_PASSPHRASE_FILE`, a systemd
//!   credential `$CREDENTIALS_DIRECTORY/kmsfs-passphrase`, or a prompt on the terminal
//!   (asked twice when new).
//! - **systemd credential** (`KMSFS_ROOT_KEY`, `$CREDENTIALS_DIRECTORY/kmsfs-root-key`):
//!   the raw key from a file the service manager provides (`LoadCredentialEncrypted=`
//!   seals it with the host's TPM or credential key); nothing is stored beside the
//!   keystore.
//! - **none** (`root.key`): the root key in the clear beside the keystore, as keystores
//!   made before seals existed. Every open warns; `kmsfs kms seal change --to passphrase`
//!   seals it and destroys the file.
//!
//! A process unseals a keystore once and keeps the root key in memory only (zeroized on
//! drop, locked in RAM where the limit allows, and the process made non-dumpable).

mod keyring;
mod passphrase;
pub mod pkcs11;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::crypto::SecretKey;
use crate::error::{err, fail, Result};

pub use passphrase::{allow_prompts, passphrase, Kdf};

/// A passphrase-sealed root key, in the keystore directory.
pub const SEAL_FILE: &str = "root.seal";
/// The root key in the clear (seal "none", and keystores made before seals).
pub const CLEAR_FILE: &str = "root.key";

/// How a keystore's root key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// In the clear beside the keystore (`root.key`).
    None,
    /// Sealed under a passphrase (`root.seal`).
    Passphrase,
    /// A file the service manager provides (systemd credential, `KMSFS_ROOT_KEY`).
    Credential,
    /// Wrapped by a key of another KMS (`root.seal`), unwrapped there at open.
    Kms,
    /// Encrypted by a non-extractable key in a PKCS#11 token (`root.seal`).
    Pkcs11,
}

/// The target of a seal change: a seal, and for `kms:KEY@LOCATION` the key and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealTarget {
    /// Which seal.
    pub seal: Seal,
    /// For `Seal::Kms`: (key, KMS location); for `Seal::Pkcs11`: (URI, "").
    pub kms: Option<(String, String)>,
}

impl SealTarget {
    /// `passphrase`, `none`, or `kms:KEY@LOCATION` (KEY an ARN or alias of that KMS;
    /// LOCATION as `--kms` takes it: `https://HOST:PORT`, `aws:REGION`).
    pub fn parse(s: &str) -> Result<SealTarget> {
        if s.starts_with("pkcs11:") {
            pkcs11::Uri::parse(s)?;
            return Ok(SealTarget {
                seal: Seal::Pkcs11,
                kms: Some((s.to_string(), String::new())),
            });
        }
        if let Some(rest) = s.strip_prefix("kms:") {
            let (key, loc) = rest.split_once('@').ok_or_else(|| {
                err!("seal {s:?}: write kms:KEY@LOCATION (e.g. kms:alias/seal@https://kms.example:8443, kms:alias/seal@aws:eu-west-1)")
            })?;
            if key.is_empty() || loc.starts_with("local:") {
                fail!("seal {s:?}: KEY must be named, and LOCATION another KMS (not a local keystore)");
            }
            crate::kms::KmsLocation::parse(loc)?;
            return Ok(SealTarget {
                seal: Seal::Kms,
                kms: Some((key.to_string(), loc.to_string())),
            });
        }
        Ok(SealTarget {
            seal: Seal::parse(s)?,
            kms: None,
        })
    }
}

impl Seal {
    /// Its name on the command line and in `kmsfs kms seal show`.
    pub fn name(self) -> &'static str {
        match self {
            Seal::None => "none",
            Seal::Passphrase => "passphrase",
            Seal::Credential => "systemd-credential",
            Seal::Kms => "kms",
            Seal::Pkcs11 => "pkcs11",
        }
    }

    /// The seal named `s` (of those a keystore can be changed to).
    pub fn parse(s: &str) -> Result<Seal> {
        Ok(match s {
            "none" => Seal::None,
            "passphrase" => Seal::Passphrase,
            _ => fail!("unknown seal {s:?}: passphrase, kms:KEY@LOCATION, pkcs11:token=T;object=O?module-path=M or none"),
        })
    }
}

/// `root.seal`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealFile {
    /// Always "kmsfs-seal".
    format: String,
    /// Always 1.
    version: u8,
    /// "passphrase" or "kms".
    seal: String,
    /// passphrase: the KDF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<Kdf>,
    /// passphrase: AES-256-GCM nonce, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    nonce: String,
    /// passphrase: the sealed root key and its tag, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sealed: String,
    /// kms: where, under which key, and the ciphertext blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kms: Option<KmsSealed>,
    /// pkcs11: the token and key object (RFC 7512 URI); the IV and ciphertext are in
    /// `nonce` and `sealed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<String>,
}

/// A root key wrapped by another KMS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsSealed {
    /// The KMS location (`https://HOST:PORT`, `aws:REGION`).
    location: String,
    /// The key (ARN or alias) it was wrapped under.
    key: String,
    /// The KMS ciphertext blob, base64.
    blob: String,
}

/// The encryption context of a root key wrapped by another KMS.
fn kms_context() -> crate::kms::EncryptionContext {
    let mut c = crate::kms::EncryptionContext::new();
    c.insert("kmsfs:purpose".into(), "keystore-root".into());
    c
}

const SEAL_AAD: &[u8] = b"kmsfs root seal v1";

/// Where a keystore's root key comes from, without reading it.
pub fn seal_of(dir: &Path) -> Option<Seal> {
    if credential_path().is_some() {
        Some(Seal::Credential)
    } else if dir.join(SEAL_FILE).exists() {
        match read_seal_file(dir).map(|f| f.seal) {
            Ok(s) if s == "kms" => Some(Seal::Kms),
            Ok(s) if s == "pkcs11" => Some(Seal::Pkcs11),
            _ => Some(Seal::Passphrase),
        }
    } else if dir.join(CLEAR_FILE).exists() {
        Some(Seal::None)
    } else {
        None
    }
}

/// The root key file a service manager provides: `KMSFS_ROOT_KEY`, else the systemd
/// credential `$CREDENTIALS_DIRECTORY/kmsfs-root-key`.
fn credential_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KMSFS_ROOT_KEY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let d = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    Some(PathBuf::from(d).join("kmsfs-root-key")).filter(|p| p.exists())
}

/// Root keys this process has unsealed, by keystore directory: each is unsealed once.
fn unsealed() -> &'static Mutex<HashMap<PathBuf, SecretKey>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, SecretKey>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

/// The root key of the keystore in `dir` (which exists), through its seal; with
/// `create`, a keystore without a root key gets one, sealed as `create_root` says.
pub fn root_key(dir: &Path, create: bool) -> Result<SecretKey> {
    import_from_parent();
    // Checked at every open, unsealed already or not: a key file others may read is
    // refused.
    for (f, what) in [(CLEAR_FILE, "root key file"), (SEAL_FILE, "root seal file")] {
        let p = dir.join(f);
        if p.exists() {
            crate::kms::local::check_private(&p, what)?;
        }
    }
    let id = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(k) = unsealed().lock().get(&id) {
        return Ok(k.clone());
    }
    harden_process();
    let key = match seal_of(dir) {
        Some(Seal::Credential) => {
            let p = credential_path().expect("seal_of saw it");
            read_clear(&p, "root key file")?
        }
        Some(Seal::Passphrase) => {
            if dir.join(CLEAR_FILE).exists() {
                warn_once(dir, "holds both root.seal and root.key (a seal change was interrupted?): the root key is still in the clear; run `kmsfs kms seal change --to passphrase` to finish");
            }
            // Unlocked a moment ago (`kmsfs kms unlock`)? Else ask.
            match keyring::get(dir) {
                Some(k) => k,
                None => open_sealed(dir)?,
            }
        }
        Some(Seal::Kms) => open_kms_sealed(dir)?,
        Some(Seal::Pkcs11) => {
            let f = read_seal_file(dir)?;
            let uri = pkcs11::Uri::parse(f.pkcs11.as_deref().unwrap_or_default())?;
            let iv = B64.decode(&f.nonce).map_err(|_| err!("root.seal: bad IV"))?;
            let ct = B64.decode(&f.sealed).map_err(|_| err!("root.seal: bad sealed key"))?;
            pkcs11::unseal(&uri, &iv, &ct)
                .map_err(|e| err!("the keystore {} is sealed by a PKCS#11 token: {e}", dir.display()))?
        }
        Some(Seal::None) => {
            warn_once(dir, "keeps its root key in the clear (root.key): anyone with a copy of that directory (a backup of $HOME, a stolen disk) can read every key in it and so every file; seal it with `kmsfs kms seal change --to passphrase`");
            read_clear(&dir.join(CLEAR_FILE), "root key file")?
        }
        None if create => {
            // Two first commands racing to make the keystore: one makes the root key,
            // the other waits and opens it.
            let d = std::fs::File::open(dir)
                .map_err(|e| err!("cannot open the keystore {}: {e}", dir.display()))?;
            rustix::fs::flock(&d, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| err!("cannot lock the keystore {}: {e}", dir.display()))?;
            if seal_of(dir).is_some() {
                return root_key(dir, false);
            }
            create_root(dir)?
        }
        None => fail!(
            "no keystore at {} (no root key: {SEAL_FILE} or {CLEAR_FILE}); `kmsfs init` or `kmsfs key create` makes one",
            dir.display()
        ),
    };
    unsealed().lock().insert(id, key.clone());
    Ok(key)
}

/// Unseals the passphrase-sealed keystore in `dir` with `pass` (given by the caller, not
/// asked for) and keeps its root key for this process: a later open needs no passphrase.
pub fn unlock(dir: &Path, pass: &[u8]) -> Result<()> {
    let root = open_sealed_with(dir, pass)?;
    let id = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    unsealed().lock().insert(id, root);
    Ok(())
}

/// Seals a new keystore's root key in `dir` (which has none yet) under `pass`, with
/// `kdf`; keeps it for this process. For callers that hold the passphrase themselves.
pub fn create_with_passphrase(dir: &Path, pass: &[u8], kdf: &Kdf) -> Result<()> {
    if seal_of(dir).is_some() {
        fail!("{} already has a root key", dir.display());
    }
    let root = SecretKey::random();
    write_sealed(dir, &root, pass, kdf)?;
    let id = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    unsealed().lock().insert(id, root);
    Ok(())
}

/// Would opening a passphrase-sealed keystore ask on a terminal (no passphrase file)?
pub fn may_prompt() -> bool {
    passphrase::available() && passphrase::from_file().is_none()
}

/// The root keys this process unsealed, written into a pipe (directory path, NUL, 32
/// key bytes, each) whose read end is answered: for a daemon this process starts
/// (`KMSFS_ROOT_KEYS_FD`), which then need not ask again. None if there are none. The
/// pipe holds at most a few hundred bytes, within the pipe buffer.
pub fn export_to_pipe() -> Result<Option<std::os::fd::OwnedFd>> {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let keys = unsealed().lock();
    if keys.is_empty() {
        return Ok(None);
    }
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut data = zeroize::Zeroizing::new(Vec::new());
    for (dir, k) in keys.iter() {
        data.extend_from_slice(&(dir.as_os_str().len() as u32).to_be_bytes());
        data.extend_from_slice(dir.as_os_str().as_bytes());
        data.extend_from_slice(k.as_bytes());
    }
    if data.len() > 4096 {
        fail!("too many unsealed keystores to hand over");
    }
    std::fs::File::from(wr).write_all(&data)?;
    Ok(Some(rd))
}

/// Takes the root keys a parent handed over (`KMSFS_ROOT_KEYS_FD`), once.
fn import_from_parent() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(fd) = std::env::var("KMSFS_ROOT_KEYS_FD")
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|&fd| fd > 2)
        else {
            return;
        };
        // SAFETY: our parent (spawn_background) kept this descriptor open across exec
        // for us alone; it is read once, here, and closed.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut data = zeroize::Zeroizing::new(Vec::new());
        if f.by_ref().take(4096).read_to_end(&mut data).is_err() {
            return;
        }
        let mut rest = &data[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() < 4 + n + 32 {
                break;
            }
            let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&rest[4..4 + n]));
            if let Some(k) = SecretKey::from_slice(&rest[4 + n..4 + n + 32]) {
                unsealed().lock().insert(dir, k);
            }
            rest = &rest[4 + n + 32..];
        }
    });
}

/// Whether a new keystore may keep its root key in the clear when nobody chose a seal
/// and no passphrase is at hand. Off: the command line refuses (seal "none" only when
/// asked for, by `--seal none` / `KMSFS_SEAL=none`). An embedding program or a test that
/// wants throwaway keystores says so with `allow_clear_by_default`; so do this crate's
/// unit tests (the refusal is tested through the binary, tests/it/seal.rs).
static CLEAR_BY_DEFAULT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(cfg!(test));

/// Lets keystores this process makes without a chosen seal keep their root key in the
/// clear (with a warning) instead of refusing.
pub fn allow_clear_by_default() {
    CLEAR_BY_DEFAULT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The seal chosen for new keystores: `KMSFS_SEAL` (the command line's `--seal` sets it).
fn chosen_seal() -> Result<Option<SealTarget>> {
    match std::env::var("KMSFS_SEAL").ok().filter(|s| !s.is_empty()) {
        Some(s) => Ok(Some(SealTarget::parse(&s)?)),
        None => Ok(None),
    }
}

/// A new keystore's root key, sealed as chosen (`--seal`), else under a passphrase when
/// one is at hand (a terminal, a passphrase file or credential). With neither, refused:
/// a root key in the clear protects nothing against a copy of the directory, so it is
/// made only when asked for (see docs/THREAT-MODEL.md "The root of trust").
fn create_root(dir: &Path) -> Result<SecretKey> {
    let want = match chosen_seal()? {
        Some(t) => t,
        None if passphrase::available() => SealTarget {
            seal: Seal::Passphrase,
            kms: None,
        },
        None if CLEAR_BY_DEFAULT.load(std::sync::atomic::Ordering::Relaxed) => SealTarget {
            seal: Seal::None,
            kms: None,
        },
        None => fail!(
            "no seal for the new keystore {}: there is no terminal to ask a passphrase on; give one with --passphrase-file FILE (or KMSFS_PASSPHRASE_FILE, or the systemd credential kmsfs-passphrase), choose a seal with --seal pkcs11:URI|kms:KEY@LOCATION, or --seal none to keep its root key in the clear",
            dir.display()
        ),
    };
    let root = SecretKey::random();
    write_seal(dir, &root, &want)?;
    if want.seal == Seal::None {
        warn_once(dir, "was made with its root key in the clear (root.key), as asked (seal none); seal it with `kmsfs kms seal change --to passphrase`");
    }
    Ok(root)
}

/// Re-seals the root key of the keystore in `dir` (unsealed through its current seal)
/// with `to`. Crash-safe: the new seal is written whole (temp file, fsync, rename)
/// before the old one is removed, and an open prefers `root.seal`, so a kill at any point
/// leaves a keystore that opens with the old or the new seal. Leaving "none" destroys
/// the clear `root.key` (overwritten, synced, unlinked).
pub fn change(dir: &Path, to: &SealTarget) -> Result<()> {
    if seal_of(dir) == Some(Seal::Credential) {
        fail!("the root key comes from a service credential (KMSFS_ROOT_KEY / $CREDENTIALS_DIRECTORY): change it there");
    }
    let root = root_key(dir, false)?;
    write_seal(dir, &root, to)?;
    let id = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    unsealed().lock().insert(id, root);
    Ok(())
}

/// Seals `root` in `dir` with `to`: writes `root.seal` (whole, atomically) and then
/// destroys `root.key`, or for "none" writes `root.key` and then removes `root.seal`.
/// A sealed root key is checked to open before it replaces anything.
fn write_seal(dir: &Path, root: &SecretKey, to: &SealTarget) -> Result<()> {
    match to.seal {
        Seal::Pkcs11 => {
            let (s, _) = to.kms.clone().expect("parsed with its URI");
            let uri = pkcs11::Uri::parse(&s)?;
            let (iv, ct) = pkcs11::seal(&uri, root)?;
            if pkcs11::unseal(&uri, &iv, &ct)? != *root {
                fail!(
                    "the token opened the sealed root key to something else; not sealing with it"
                );
            }
            let f = SealFile {
                format: "kmsfs-seal".into(),
                version: 1,
                seal: "pkcs11".into(),
                kdf: None,
                nonce: B64.encode(iv),
                sealed: B64.encode(ct),
                kms: None,
                pkcs11: Some(s),
            };
            crate::kms::local::write_atomic(
                dir,
                SEAL_FILE,
                serde_json::to_string_pretty(&f)?.as_bytes(),
            )?;
            destroy(&dir.join(CLEAR_FILE))?;
        }
        Seal::Kms => {
            let (key, loc) = to.kms.clone().expect("parsed with its key and location");
            write_kms_sealed(dir, root, &key, &loc)?;
            destroy(&dir.join(CLEAR_FILE))?;
        }
        Seal::Passphrase => {
            let pass = passphrase(dir, true)?;
            write_sealed(dir, root, &pass, &Kdf::for_new())?;
            destroy(&dir.join(CLEAR_FILE))?;
        }
        Seal::None => {
            crate::kms::local::write_atomic(dir, CLEAR_FILE, root.as_bytes())?;
            let _ = std::fs::remove_file(dir.join(SEAL_FILE));
            sync_dir(dir)?;
        }
        Seal::Credential => fail!("a credential seal is set up by the service manager, not here"),
    }
    // A change killed before its rename leaves its temp file; one of "none" holds the
    // root key in the clear.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&format!(".{CLEAR_FILE}.tmp."))
                || n.starts_with(&format!(".{SEAL_FILE}.tmp."))
            {
                destroy(&e.path())?;
            }
        }
    }
    Ok(())
}

/// `kmsfs kms unlock`: unseals the keystore in `dir` (asking for its passphrase) and
/// keeps its root key in the kernel keyring for `secs` seconds, so that commands in the
/// meantime need no passphrase (see `keyring`).
pub fn unlock_for(dir: &Path, secs: u32) -> Result<()> {
    if seal_of(dir) != Some(Seal::Passphrase) {
        fail!(
            "the keystore {} is not sealed with a passphrase ({}): nothing to unlock",
            dir.display(),
            seal_of(dir).map(Seal::name).unwrap_or("no keystore")
        );
    }
    keyring::remove(dir);
    let root = root_key(dir, false)?;
    keyring::put(dir, &root, secs.max(1))
}

/// `kmsfs kms lock`: forgets an unlocked root key; whether one was kept.
pub fn lock(dir: &Path) -> bool {
    keyring::remove(dir)
}

/// What `kmsfs kms seal show` prints.
pub fn describe(dir: &Path) -> Result<String> {
    Ok(match seal_of(dir) {
        None => fail!("no keystore at {}", dir.display()),
        Some(Seal::Passphrase) => {
            let f = read_seal_file(dir)?;
            let k = f.kdf.expect("checked by read_seal_file");
            format!(
                "passphrase (Argon2id, {} MiB, {} passes, {} lanes) in {}",
                k.m_kib / 1024,
                k.t,
                k.p,
                dir.join(SEAL_FILE).display()
            )
        }
        Some(Seal::Pkcs11) => {
            let u = read_seal_file(dir)?.pkcs11.unwrap_or_default();
            let key = pkcs11::describe_key(&pkcs11::Uri::parse(&u)?)
                .unwrap_or_else(|e| format!("(the token cannot be asked: {e})"));
            format!("pkcs11: {u}; {key}")
        }
        Some(Seal::Kms) => {
            let k = read_seal_file(dir)?.kms.expect("checked by read_seal_file");
            format!("kms: wrapped under {} at {}", k.key, k.location)
        }
        Some(Seal::Credential) => format!(
            "systemd-credential ({})",
            credential_path().expect("seen").display()
        ),
        Some(Seal::None) => format!(
            "none: the root key is in the clear in {} (seal it: kmsfs kms seal change --to passphrase)",
            dir.join(CLEAR_FILE).display()
        ),
    })
}

fn read_seal_file(dir: &Path) -> Result<SealFile> {
    let p = dir.join(SEAL_FILE);
    crate::kms::local::check_private(&p, "root seal file")?;
    let b = std::fs::read(&p).map_err(|e| err!("cannot read {}: {e}", p.display()))?;
    if b.len() > 4096 {
        fail!("{}: larger than 4 KiB; not a kmsfs seal", p.display());
    }
    let f: SealFile =
        serde_json::from_slice(&b).map_err(|e| err!("{}: not a kmsfs seal: {e}", p.display()))?;
    if f.format != "kmsfs-seal" || f.version != 1 {
        fail!(
            "{}: unsupported seal format {} v{}",
            p.display(),
            f.format,
            f.version
        );
    }
    match (f.seal.as_str(), &f.kdf, &f.kms) {
        ("pkcs11", None, None) if f.pkcs11.as_ref().is_some_and(|u| u.len() < 2048) => {}
        ("passphrase", Some(k), None) => k.check().map_err(|e| err!("{}: {e}", p.display()))?,
        ("kms", None, Some(k))
            if k.location.len() < 1024 && k.key.len() < 2048 && k.blob.len() < 8192 => {}
        _ => fail!("{}: not a valid {:?} seal", p.display(), f.seal),
    }
    Ok(f)
}

fn open_sealed(dir: &Path) -> Result<SecretKey> {
    read_seal_file(dir)?;
    let pass = passphrase(dir, false)?;
    open_sealed_with(dir, &pass)
}

/// The root key wrapped by another KMS, unwrapped there.
fn open_kms_sealed(dir: &Path) -> Result<SecretKey> {
    let k = read_seal_file(dir)?.kms.expect("checked by read_seal_file");
    let name = || {
        format!(
            "the keystore {} is sealed by the KMS {} (key {})",
            dir.display(),
            k.location,
            k.key
        )
    };
    let kms = crate::kms::KmsLocation::parse(&k.location)?
        .open(false)
        .map_err(|e| err!("{}: {e}", name()))?;
    let r = kms
        .decrypt(crate::kms::DecryptRequest {
            ciphertext_blob: B64
                .decode(&k.blob)
                .map_err(|_| err!("root.seal: bad blob"))?,
            encryption_context: Some(kms_context()),
            key_id: Some(k.key.clone()),
            ..Default::default()
        })
        .map_err(|e| err!("{}: cannot unwrap the root key there: {e}", name()))?;
    SecretKey::from_slice(&r.plaintext.0).ok_or_else(|| err!("{}: not a 32-byte key", name()))
}

/// Wraps `root` under `key` of the KMS at `location` into `root.seal`.
fn write_kms_sealed(dir: &Path, root: &SecretKey, key: &str, location: &str) -> Result<()> {
    let kms = crate::kms::KmsLocation::parse(location)?.open(false)?;
    let r = kms
        .encrypt(crate::kms::EncryptRequest {
            key_id: key.to_string(),
            plaintext: crate::kms::Secret(root.as_bytes().to_vec()),
            encryption_context: Some(kms_context()),
            ..Default::default()
        })
        .map_err(|e| err!("cannot wrap the root key under {key} at {location}: {e}"))?;
    // It must unwrap there before it replaces the old seal.
    let back = kms
        .decrypt(crate::kms::DecryptRequest {
            ciphertext_blob: r.ciphertext_blob.clone(),
            encryption_context: Some(kms_context()),
            key_id: Some(key.to_string()),
            ..Default::default()
        })
        .map_err(|e| {
            err!("the root key wrapped under {key} at {location} does not unwrap there: {e}")
        })?;
    if back.plaintext.0 != root.as_bytes() {
        fail!(
            "the KMS at {location} unwrapped the root key to something else; not sealing with it"
        );
    }
    let f = SealFile {
        format: "kmsfs-seal".into(),
        version: 1,
        seal: "kms".into(),
        kdf: None,
        nonce: String::new(),
        sealed: String::new(),
        kms: Some(KmsSealed {
            location: location.to_string(),
            key: key.to_string(),
            blob: B64.encode(&r.ciphertext_blob),
        }),
        pkcs11: None,
    };
    crate::kms::local::write_atomic(dir, SEAL_FILE, serde_json::to_string_pretty(&f)?.as_bytes())?;
    Ok(())
}

fn open_sealed_with(dir: &Path, pass: &[u8]) -> Result<SecretKey> {
    let f = read_seal_file(dir)?;
    let kdf = f
        .kdf
        .clone()
        .ok_or_else(|| err!("{}: not a passphrase seal", dir.join(SEAL_FILE).display()))?;
    let nonce = B64
        .decode(&f.nonce)
        .map_err(|_| err!("root.seal: bad nonce"))?;
    let sealed = B64
        .decode(&f.sealed)
        .map_err(|_| err!("root.seal: bad sealed key"))?;
    if nonce.len() != 12 || sealed.len() != 32 + 16 {
        fail!("{}: damaged (wrong lengths)", dir.join(SEAL_FILE).display());
    }
    let kek = kdf.derive(pass)?;
    let aad = [SEAL_AAD, &serde_json::to_vec(&kdf)?].concat();
    let root = aead(&kek, &nonce, &sealed, &aad, false).map_err(|_| {
        err!(
            "wrong passphrase for the keystore {} (or {} was altered)",
            dir.display(),
            SEAL_FILE
        )
    })?;
    SecretKey::from_slice(&root).ok_or_else(|| err!("root.seal: not a 32-byte key"))
}

fn write_sealed(dir: &Path, root: &SecretKey, pass: &[u8], kdf: &Kdf) -> Result<()> {
    let kek = kdf.derive(pass)?;
    let nonce: [u8; 12] = crate::crypto::random_bytes();
    let aad = [SEAL_AAD, &serde_json::to_vec(kdf)?].concat();
    let sealed = aead(&kek, &nonce, root.as_bytes(), &aad, true)?;
    let f = SealFile {
        format: "kmsfs-seal".into(),
        version: 1,
        seal: "passphrase".into(),
        kdf: Some(kdf.clone()),
        nonce: B64.encode(nonce),
        sealed: B64.encode(&sealed),
        kms: None,
        pkcs11: None,
    };
    crate::kms::local::write_atomic(dir, SEAL_FILE, serde_json::to_string_pretty(&f)?.as_bytes())?;
    Ok(())
}

/// AES-256-GCM seal (`seal`: data ‖ tag) or open (data ‖ tag) of `data`.
fn aead(
    key: &SecretKey,
    nonce: &[u8],
    data: &[u8],
    aad: &[u8],
    seal: bool,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let nonce: &[u8; crate::crypto::NONCE_LEN] =
        nonce.try_into().map_err(|_| err!("bad nonce length"))?;
    let k = crate::crypto::Backend::AwsLc.key(&key.0);
    let mut buf = zeroize::Zeroizing::new(data.to_vec());
    if seal {
        let tag = k.seal(nonce, aad, &mut buf);
        buf.extend_from_slice(&tag);
        Ok(buf)
    } else {
        k.open(nonce, aad, &mut buf)
            .map_err(|_| err!("AES-GCM open failed"))?;
        let n = buf.len() - crate::crypto::TAG_LEN;
        buf.truncate(n);
        Ok(buf)
    }
}

fn read_clear(p: &Path, what: &str) -> Result<SecretKey> {
    crate::kms::local::check_private(p, what)?;
    let raw = zeroize::Zeroizing::new(
        std::fs::read(p).map_err(|e| err!("cannot read {what} {}: {e}", p.display()))?,
    );
    SecretKey::from_slice(&raw)
        .ok_or_else(|| err!("{what} {} is {} bytes, expected 32", p.display(), raw.len()))
}

/// Overwrites the clear root key with zeros, syncs and removes it (if there).
fn destroy(p: &Path) -> Result<()> {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).open(p) {
        Ok(mut f) => {
            f.write_all(&[0u8; 32])?;
            f.sync_all()?;
            drop(f);
            std::fs::remove_file(p)?;
            sync_dir(p.parent().unwrap_or(Path::new(".")))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => fail!("cannot destroy {}: {e}", p.display()),
    }
}

fn sync_dir(d: &Path) -> Result<()> {
    Ok(std::fs::File::open(d)?.sync_all()?)
}

/// One warning per keystore per process.
fn warn_once(dir: &Path, what: &str) {
    static SEEN: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock();
    if !seen.iter().any(|d| d == dir) {
        seen.push(dir.to_path_buf());
        eprintln!("kmsfs: warning: keystore {} {what}", dir.display());
        tracing::warn!("keystore {} {what}", dir.display());
    }
}

/// A process that holds a root key is not dumpable (no core file, no ptrace by other
/// users of the same uid).
fn harden_process() {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/FORMAT.md: the Argon2id parameters are bound into the seal (lowering them in
    /// root.seal makes it fail) and parameters out of range are refused before any work.
    #[test]
    fn the_kdf_parameters_cannot_be_lowered_or_made_absurd() {
        let d = tempfile::tempdir().unwrap();
        create_with_passphrase(d.path(), b"bound parameters", &Kdf::with(16 * 1024, 2, 1)).unwrap();
        assert!(open_sealed_with(d.path(), b"bound parameters").is_ok());
        let p = d.path().join(SEAL_FILE);
        let text = std::fs::read_to_string(&p).unwrap();
        let edit = |from: &str, to: &str| {
            let t = text.replace(from, to);
            assert_ne!(t, text, "{from}");
            crate::kms::local::write_atomic(d.path(), SEAL_FILE, t.as_bytes()).unwrap();
        };
        edit("\"t\": 2", "\"t\": 1");
        let e = open_sealed_with(d.path(), b"bound parameters")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wrong passphrase") && e.contains("altered"),
            "{e}"
        );
        edit("\"m_kib\": 16384", "\"m_kib\": 1");
        let e = open_sealed_with(d.path(), b"bound parameters")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        edit("\"m_kib\": 16384", "\"m_kib\": 4294967295");
        let e = open_sealed_with(d.path(), b"bound parameters")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
