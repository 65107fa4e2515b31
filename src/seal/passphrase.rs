//! The passphrase seal: where a passphrase comes from, and Argon2id.

use std::io::{IsTerminal, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::error::{err, fail, Result};

/// Argon2id parameters, recorded in `root.seal` (and bound into the seal, so that they
/// cannot be lowered there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    /// Always "argon2id" (version 0x13).
    pub alg: String,
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// 16 random bytes, base64.
    pub salt: String,
}

/// New seals: 256 MiB, 3 passes, 1 lane (gocryptfs's scrypt default uses 64 MiB; one
/// guess here costs ~4× its memory and several times its time, bench/seal.py).
/// `KMSFS_ARGON2=M_KIB,T,P` sets others (at least 8 MiB, 1 pass: tests use small ones).
const DEFAULT: (u32, u32, u32) = (256 * 1024, 3, 1);

impl Kdf {
    /// Explicit parameters with a fresh salt (tests, benchmarks).
    pub fn with(m_kib: u32, t: u32, p: u32) -> Kdf {
        Kdf {
            m_kib,
            t,
            p,
            ..Kdf::for_new()
        }
    }

    /// Parameters for a new seal, with a fresh salt.
    pub fn for_new() -> Kdf {
        let (m_kib, t, p) = std::env::var("KMSFS_ARGON2")
            .ok()
            .and_then(|s| {
                let v: Vec<u32> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                (v.len() == 3).then(|| (v[0], v[1], v[2]))
            })
            .unwrap_or(DEFAULT);
        use base64::Engine as _;
        Kdf {
            alg: "argon2id".into(),
            m_kib,
            t,
            p,
            salt: base64::engine::general_purpose::STANDARD
                .encode(crate::crypto::random_bytes::<16>()),
        }
    }

    /// Refuses parameters no kmsfs made (or too weak to be a seal: a floor, so that an
    /// edited file cannot make unsealing cheap — the parameters are also bound into the
    /// seal) and ones that would exhaust memory.
    pub fn check(&self) -> Result<()> {
        if self.alg != "argon2id" {
            fail!("unknown KDF {:?}", self.alg);
        }
        if !(8 * 1024..=4 * 1024 * 1024).contains(&self.m_kib)
            || !(1..=64).contains(&self.t)
            || !(1..=16).contains(&self.p)
        {
            fail!(
                "Argon2id parameters out of range (m {} KiB, t {}, p {})",
                self.m_kib,
                self.t,
                self.p
            );
        }
        Ok(())
    }

    /// The 32-byte key `pass` stretches to.
    pub fn derive(&self, pass: &[u8]) -> Result<SecretKey> {
        use base64::Engine as _;
        self.check()?;
        let salt = base64::engine::general_purpose::STANDARD
            .decode(&self.salt)
            .map_err(|_| err!("bad salt"))?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| err!("Argon2id parameters: {e}"))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        a.hash_password_into(pass, &salt, &mut out[..])
            .map_err(|e| err!("Argon2id: {e}"))?;
        Ok(SecretKey(*out))
    }
}

/// A passphrase file named by the environment: `KMSFS_PASSPHRASE_FILE`, else the systemd
/// credential `$CREDENTIALS_DIRECTORY/kmsfs-passphrase`.
pub(super) fn from_file() -> Option<std::path::PathBuf> {
    passphrase_file()
}

fn passphrase_file() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("KMSFS_PASSPHRASE_FILE").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let d = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    Some(std::path::PathBuf::from(d).join("kmsfs-passphrase")).filter(|p| p.exists())
}

/// Whether this process may ask on its terminal: only the command line says so
/// (`allow_prompts`); a library user (a test, an embedding program) never blocks on a
/// prompt.
static PROMPTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets this process ask for passphrases on its terminal (the `kmsfs` command line).
pub fn allow_prompts() {
    PROMPTS.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn can_prompt() -> bool {
    PROMPTS.load(std::sync::atomic::Ordering::Relaxed)
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Is a passphrase at hand without asking for one on a terminal that is not there?
pub(super) fn available() -> bool {
    passphrase_file().is_some() || can_prompt()
}

/// The passphrase of the keystore in `dir`: from a file (`KMSFS_PASSPHRASE_FILE`, a
/// systemd credential; its first line), else asked on the terminal without echo — twice
/// if `new`. A passphrase is never taken from the command line or the environment
/// itself (both are visible to other processes).
pub fn passphrase(dir: &Path, new: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = passphrase_file() {
        let mut f = std::fs::File::open(&p)
            .map_err(|e| err!("cannot read the passphrase file {}: {e}", p.display()))?;
        let mut v = Zeroizing::new(Vec::new());
        f.by_ref()
            .take(4096)
            .read_to_end(&mut v)
            .map_err(|e| err!("cannot read the passphrase file {}: {e}", p.display()))?;
        let line = v.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            fail!("the passphrase file {} is empty", p.display());
        }
        return Ok(Zeroizing::new(line.to_vec()));
    }
    if !can_prompt() {
        fail!(
            "the keystore {} is sealed with a passphrase and there is no terminal to ask for it: give --passphrase-file FILE (or KMSFS_PASSPHRASE_FILE=FILE, or the systemd credential kmsfs-passphrase)",
            dir.display()
        );
    }
    let ask = |prompt: &str| -> Result<Zeroizing<Vec<u8>>> {
        let s = rpassword::prompt_password(prompt)
            .map_err(|e| err!("cannot read a passphrase: {e}"))?;
        Ok(Zeroizing::new(s.into_bytes()))
    };
    let what = format!("keystore {}", dir.display());
    let p = ask(&format!("Passphrase for the {what}: "))?;
    if p.is_empty() {
        fail!("an empty passphrase seals nothing");
    }
    if new {
        if p.len() < 8 {
            fail!("a passphrase of fewer than 8 characters is too easily guessed");
        }
        let again = ask("Repeat it: ")?;
        if again != p {
            fail!("the two passphrases differ; nothing was changed");
        }
    }
    Ok(p)
}
