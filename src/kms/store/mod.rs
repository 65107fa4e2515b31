//! The KMS's store: where keys, aliases, grants, principals and the rest live, behind one
//! interface with two engines — SQLite (bundled, WAL; the embedded KMS and a single server)
//! and PostgreSQL (N servers sharing one database). Modelled on OpenBao's `physical`
//! backends: the engines hold opaque rows and know nothing of keys.
//!
//! A row is `(kind, id) -> data`, where data is the row's JSON sealed under a key derived
//! from the root key (AES-256-GCM, AAD binding it to its kind and id): secret material
//! never reaches either database in the clear, and a row cannot be moved to another name.
//! Every commit bumps one generation counter and stamps the rows it wrote (a removed row
//! stays as a tombstone, data NULL), so a reader catches up by reading the rows newer than
//! the generation it holds: O(changes), not O(store).

use std::path::{Path, PathBuf};

use crate::crypto::{random_nonce, Backend as Aead, SecretKey, NONCE_LEN, TAG_LEN};

mod postgres;
mod sqlite;
mod table;

pub use table::Table;

/// The SQLite store's file, in the keystore directory.
pub const SQLITE_FILE: &str = "keystore.sqlite";

/// Why the store could not be read or written (one line naming the store).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Store result.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One row as the engines hold it; `data: None` is a removed row (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What the row is (`key`, `alias`, …).
    pub kind: String,
    /// Its id within the kind.
    pub id: String,
    /// The sealed row, or None once removed.
    pub data: Option<Vec<u8>>,
}

/// What a write decides once it has seen the rows committed since its base: the rows to
/// write, or None to write nothing (the transaction is rolled back).
pub type Decide<'a> = dyn FnMut(u64, Vec<Row>) -> Option<Vec<Row>> + 'a;

/// An engine. Every method is one transaction.
pub trait Engine: Send + Sync {
    /// Names the store in messages (never a password).
    fn describe(&self) -> String;

    /// The generation of the newest commit (0 for an empty store).
    fn generation(&self) -> Result<u64>;

    /// The rows committed after generation `gen`, and the generation they bring the reader to.
    fn changes_since(&self, gen: u64) -> Result<(u64, Vec<Row>)>;

    /// Under the store's write lock (one writer at a time, across processes and servers):
    /// hands `decide` the current generation and the rows committed after `base`, then
    /// commits what it returns as generation + 1. Returns the new generation, or None when
    /// `decide` wrote nothing.
    fn write(&self, base: u64, decide: &mut Decide<'_>) -> Result<Option<u64>>;

    /// Whether servers of several Regions may share this store (their rows then live in
    /// Region scopes: `KIND@REGION`).
    fn shared(&self) -> bool {
        false
    }

    /// Where the audit chain is kept, if this engine keeps it (a database shared by
    /// servers keeps one chain for all); None: the keystore directory's files.
    fn audit_db(&self) -> Option<std::sync::Arc<dyn crate::kms::audit::AuditDb>> {
        None
    }
}

/// Where the store is: `sqlite:PATH` (default: `DIR/keystore.sqlite`) or
/// `postgres://user@host:port/db` (the password from `KMSFS_STORE_PASSWORD_FILE` or the
/// systemd credential `kmsfs-store-password`, never the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a libpq URL without a password.
    Postgres(String),
}

impl Location {
    /// Parses `--store`.
    pub fn parse(s: &str) -> crate::Result<Location> {
        if let Some(p) = s.strip_prefix("sqlite:") {
            if p.is_empty() {
                crate::error::fail!("--store sqlite:PATH needs a path");
            }
            return Ok(Location::Sqlite(PathBuf::from(p)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let cfg: ::postgres::Config = s
                .parse()
                .map_err(|e| crate::error::err!("--store {}: {e}", redact(s)))?;
            if cfg.get_password().is_some() {
                crate::error::fail!(
                    "--store {}: put the password in a file (KMSFS_STORE_PASSWORD_FILE) or the credential kmsfs-store-password, not in the URL",
                    redact(s)
                );
            }
            return Ok(Location::Postgres(s.to_string()));
        }
        crate::error::fail!("--store {s:?}: expected sqlite:PATH or postgres://USER@HOST:PORT/DB")
    }

    /// The store of keystore `dir` when none was chosen.
    pub fn default_for(dir: &Path) -> Location {
        Location::Sqlite(dir.join(SQLITE_FILE))
    }

    /// Whether several servers may share it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

/// A URL with any password hidden.
fn redact(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(a), Some(b)) if b > a => {
            let userinfo = &s[a + 3..b];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &s[..a + 3], &userinfo[..c], &s[b..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
thread_local! {
    static TEST_STORE: std::cell::RefCell<Option<Location>> = const { std::cell::RefCell::new(None) };
}

/// Tests: the store every keystore opened on this thread uses (one test, one thread).
#[cfg(test)]
pub fn set_test_store(loc: Option<Location>) {
    TEST_STORE.with(|t| *t.borrow_mut() = loc);
}

/// The store chosen for this process (`--store`, which the command line exports as
/// `KMSFS_STORE` so a re-executed daemon sees it too), if any.
pub fn chosen() -> crate::Result<Option<Location>> {
    #[cfg(test)]
    if let Some(l) = TEST_STORE.with(|t| t.borrow().clone()) {
        return Ok(Some(l));
    }
    match std::env::var("KMSFS_STORE") {
        Ok(s) if !s.is_empty() => Location::parse(&s).map(Some),
        _ => Ok(None),
    }
}

/// Opens (creating its schema if `create`) the store at `loc`.
pub fn open(loc: &Location, create: bool) -> crate::Result<Box<dyn Engine>> {
    match loc {
        Location::Sqlite(p) => Ok(Box::new(sqlite::Sqlite::open(p, create)?)),
        Location::Postgres(url) => Ok(Box::new(postgres::Postgres::open(url, create)?)),
    }
}

/// Seals and opens rows under a key derived from the root key.
pub struct RowSeal(Box<dyn crate::crypto::Aead>);

const ROW_AAD: &[u8] = b"kmsfs store row v1";

impl RowSeal {
    /// The row key of a root key.
    pub fn new(root: &SecretKey) -> RowSeal {
        RowSeal(Aead::AwsLc.key(&root.derive(b"kmsfs store", b"kmsfs store rows v1").0))
    }

    fn aad(kind: &str, id: &str) -> Vec<u8> {
        let mut a = ROW_AAD.to_vec();
        a.extend_from_slice(&(kind.len() as u32).to_be_bytes());
        a.extend_from_slice(kind.as_bytes());
        a.extend_from_slice(id.as_bytes());
        a
    }

    /// nonce(12) ‖ AES-256-GCM(plain) ‖ tag(16).
    pub fn seal(&self, kind: &str, id: &str, plain: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal(&nonce, &Self::aad(kind, id), &mut out[NONCE_LEN..]);
        out.extend_from_slice(&tag);
        out
    }

    /// The plaintext of a sealed row (zeroized on drop), or why it does not open.
    pub fn open(&self, kind: &str, id: &str, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError(format!("row {kind}/{id} is truncated")));
        }
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().unwrap();
        let mut buf = zeroize::Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        self.0
            .open(&nonce, &Self::aad(kind, id), &mut buf)
            .map_err(|_| {
                StoreError(format!(
                    "row {kind}/{id} does not authenticate under the root key (another keystore's root key, or edited)"
                ))
            })?;
        let n = buf.len() - TAG_LEN;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests;
