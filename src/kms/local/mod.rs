//! The embedded KMS: symmetric AES-256 keys with versions, kept in a keystore directory
//! sealed under a root key. Safe across processes: every change takes an exclusive file
//! lock, re-reads the store, and replaces it atomically; readers notice a new store by
//! its inode and reload.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

mod admin;
mod aliases;
mod asym;
mod authz;
mod blob;
mod data;
mod ecdh;
mod extras;
mod grants;
mod import;
mod kem;
mod keys;
mod lc_sign;
mod mac;
mod migrate;
mod operations;
mod quotas;
mod regions;
mod rsa_oaep;
mod schema;
mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_accounts;
#[cfg(test)]
mod tests_asym;
#[cfg(test)]
mod tests_aws;
#[cfg(test)]
mod tests_grants;
#[cfg(test)]
mod tests_import;
#[cfg(test)]
mod tests_pq;
mod xks;

use super::audit::{AuditLog, Event};
use super::messages::{self, Violation};
use super::policy::{default_policy, Policy};
use super::store::{Location, Row, RowSeal, Table};
use super::*;
use crate::crypto::{
    encode_context, random_bytes, random_nonce, Backend, SecretKey, NONCE_LEN, TAG_LEN,
};
use extras::{check_message_len, length_rule, value_rule};

/// The root key file, in the keystore directory (unless given elsewhere).
pub const ROOT_KEY_FILE: &str = "root.key";
/// The sealed store file of keystores made before the store engines (migrated at open).
pub const STORE_FILE: &str = "keystore.sealed";
const LOCK_FILE: &str = "keystore.lock";
const STORE_AAD: &[u8] = b"kmsfs keystore v1";
const BLOB_FORMAT: u8 = 1;
/// format ‖ key uuid ‖ version (u32 BE)
const BLOB_PREFIX: usize = 1 + 16 + 4;
const BLOB_OVERHEAD: usize = BLOB_PREFIX + NONCE_LEN + TAG_LEN;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
const ENCRYPT_DECRYPT: &str = "ENCRYPT_DECRYPT";
const GENERATE_VERIFY_MAC: &str = "GENERATE_VERIFY_MAC";

/// The region in the embedded KMS's ARNs. A server accepts ARNs of this region (with
/// `DEFAULT_ACCOUNT`) as names of its own keys: trees made through the embedded KMS pin them.
pub const LOCAL_REGION: &str = "local";
/// The account of the embedded KMS, and the server's default `--account-id`.
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// The principal local (embedded) use acts as, unless `KMSFS_PRINCIPAL` says otherwise.
pub const DEFAULT_PRINCIPAL: &str = "local-admin";

/// Where the root key is: `KMSFS_ROOT_KEY` (a file), else a systemd credential
/// `$CREDENTIALS_DIRECTORY/kmsfs-root-key` (LoadCredential=/LoadCredentialEncrypted=),
/// else `DIR/root.key`.
pub fn root_key_path(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("KMSFS_ROOT_KEY").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = PathBuf::from(d).join("kmsfs-root-key");
        if p.exists() {
            return p;
        }
    }
    dir.join(ROOT_KEY_FILE)
}

/// The default keystore: /var/lib/kmsfs for root, else $XDG_DATA_HOME/kmsfs (or ~/.local/share/kmsfs).
pub fn default_keystore_dir() -> crate::Result<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/kmsfs"));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kmsfs"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/kmsfs")),
        None => crate::error::fail!(
            "cannot find a keystore directory: set HOME, XDG_DATA_HOME or --kms local:DIR"
        ),
    }
}

/// Now, in seconds since the epoch (AWS's timestamps).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

use asym::*;
use authz::*;
use ecdh::*;
use extras::*;
use import::*;
use kem::*;
use mac::*;
pub use quotas::{set_quotas, Quotas};
use regions::*;
use rsa_oaep::*;
use schema::*;
pub use schema::{Caller, KeyState, LocalKms, PrincipalInfo};
use store::*;
pub use xks::set_xks_admins;
use xks::BLOB_FORMAT_XKS;

/// Refuses a file or directory that group or others may read.
pub(crate) fn check_private(path: &Path, what: &str) -> crate::Result<()> {
    let md = fs::metadata(path)
        .map_err(|e| crate::error::err!("cannot stat {what} {}: {e}", path.display()))?;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        crate::error::fail!(
            "refusing to use {what} {}: mode {:o} lets group/others read it (chmod {} {})",
            path.display(),
            mode,
            if md.is_dir() { "700" } else { "600" },
            path.display()
        );
    }
    Ok(())
}

/// Writes `DIR/name` (0600) whole: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    write_private_atomic(dir, name, data)
}

fn write_private_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The Regions of a server's `--region` (comma-separated; one or more, each once).
pub fn region_list(arg: &str) -> crate::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in arg.split(',').map(str::trim) {
        if out.iter().any(|o| o == r) {
            crate::error::fail!("--region {arg}: {r} is named twice");
        }
        out.push(r.to_string());
    }
    if out.len() > 64 {
        crate::error::fail!("--region {arg}: at most 64 Regions");
    }
    Ok(out)
}

impl LocalKms {
    /// Opens the keystore in `dir`. With `create`, a missing directory and root key are
    /// made (0700 / 0600); without it a missing keystore is an error.
    pub fn open(dir: &Path, create: bool) -> crate::Result<LocalKms> {
        let kms = Self::open_unchecked(dir, create)?;
        if let Some((seq, _)) = kms.audit_vouched() {
            kms.e.audit.check_reaches(seq).map_err(|e| {
                crate::error::err!(
                    "keystore {}: {e}; run `kmsfs audit verify` (refusing to run on a tampered audit log)",
                    dir.display()
                )
            })?;
        }
        Ok(kms)
    }

    /// The checkpoint the sealed store vouches for (see `Store::audit_checkpoint`).
    pub fn audit_vouched(&self) -> Option<(u64, String)> {
        self.snapshot().ok()?.audit_checkpoint.clone()
    }

    /// `open` without the check that the audit log reaches what the keystore vouches for
    /// (for `kmsfs audit verify`, which reports it).
    pub fn open_unchecked(dir: &Path, create: bool) -> crate::Result<LocalKms> {
        if create && !dir.exists() {
            fs::create_dir_all(dir)
                .map_err(|e| crate::error::err!("cannot create keystore {}: {e}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        if !dir.is_dir() {
            crate::error::fail!(
                "no keystore at {}; `kmsfs init` or `kmsfs key create` makes one",
                dir.display()
            );
        }
        check_private(dir, "keystore directory")?;
        // Through the keystore's seal (crate::seal), once per process.
        let root = crate::seal::root_key(dir, create)?;
        let location = super::store::chosen()?.unwrap_or_else(|| Location::default_for(dir));
        let store = super::store::open(&location, true)?;
        let audit = match store.audit_db() {
            Some(db) => AuditLog::open_db(dir, &root, db),
            None => AuditLog::open(dir, &root),
        };
        let e = Engine {
            dir: dir.to_path_buf(),
            store,
            rows: RowSeal::new(&root),
            next_due: parking_lot::Mutex::new(0.0),
            audit,
            root,
            region: LOCAL_REGION.into(),
            account: DEFAULT_ACCOUNT.into(),
            regional: false,
            scope: None,
            cache: RwLock::new(Cached {
                store: Arc::new(Store::default()),
                gen: 0,
            }),
            policies: Default::default(),
            last_use: Default::default(),
        };
        let e = Arc::new(e);
        // Best effort: keep the root key out of swap (RLIMIT_MEMLOCK permitting).
        // SAFETY: the address and length are those of a live field of `e`, which the Arc
        // keeps at this address for as long as the engine lives.
        unsafe {
            libc::mlock(e.root.0.as_ptr().cast(), e.root.0.len());
        }
        let kms = LocalKms {
            e,
            caller: Caller::local(),
        };
        kms.adopt_store()
            .map_err(|e| crate::error::err!("keystore {}: {e}", dir.display()))?;
        kms.snapshot()
            .map_err(|e| crate::error::err!("keystore {}: {}", dir.display(), e))?;
        Ok(kms)
    }

    /// Makes this KMS answer as `region` and `account` (a server's `--region`,
    /// `--account-id`): ARNs carry them, ARNs naming another region or account are not
    /// found, and requests signed for another region see no keys. Call it right after
    /// `open`, before the KMS is shared.
    pub fn serving(self, region: &str, account: &str) -> crate::Result<LocalKms> {
        self.serving_one_of(region, account, false)
    }

    /// `serving`, for one of the Regions a server answers as (`several`): this view then
    /// keeps its rows in its Region's scope on any store, as servers of several Regions
    /// sharing one database do, so the server's Regions see each their own keys.
    pub fn serving_one_of(
        mut self,
        region: &str,
        account: &str,
        several: bool,
    ) -> crate::Result<LocalKms> {
        if region.is_empty()
            || region.len() > 32
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            crate::error::fail!("invalid region {region:?} (e.g. us-east-1)");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            crate::error::fail!("invalid account id {account:?}: 12 digits");
        }
        let e = Arc::get_mut(&mut self.e)
            .ok_or_else(|| crate::error::err!("the keystore is already shared"))?;
        e.region = region.to_string();
        e.account = account.to_string();
        e.regional = true;
        if e.store.shared() || several {
            // Servers of several Regions may share this store: this one reads and writes
            // its Region's scope (and rows of no Region).
            e.scope = Some(region.to_string());
            *e.cache.write() = Cached {
                store: Arc::new(Store::scoped(e.scope.clone())),
                gen: 0,
            };
        }
        Ok(self)
    }

    /// The region and account this KMS answers as.
    pub fn region_and_account(&self) -> (&str, &str) {
        (&self.e.region, &self.e.account)
    }

    /// The region the caller signed for, when it is not this KMS's region.
    pub(super) fn foreign_region(&self) -> Option<&str> {
        match &self.caller.region {
            Some(r) if self.e.regional && *r != self.e.region => Some(r),
            _ => None,
        }
    }

    /// The same keystore as seen by another caller (the server's authenticated principals).
    pub fn with_caller(&self, caller: Caller) -> LocalKms {
        LocalKms {
            e: self.e.clone(),
            caller,
        }
    }

    /// Who this view acts as.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The keystore directory.
    pub fn dir(&self) -> &Path {
        &self.e.dir
    }

    /// The keystore's audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.e.audit
    }
}
