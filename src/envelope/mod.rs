//! Envelope encryption of file data keys: making a header for a new file (one DEK,
//! wrapped under each configured KMS key) and opening a header back into the file's
//! content key, with an LRU cache so a steady state makes no KMS calls.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

pub mod public;

use crate::crypto::{Aead, Backend, SecretKey};
use crate::format::{Header, TreeConfig, Wrap, SUITE_AES256GCM_HKDF_SHA256};
use crate::kms::{
    DecryptRequest, EncryptRequest, EncryptionContext, ErrorCode, GenerateDataKeyRequest, Kms,
    KmsError, Secret,
};

/// Keys derived from one file's DEK. The DEK itself is dropped (zeroized) after derivation.
pub struct FileKeys {
    /// The AEAD key of the file's chunks.
    pub content: Box<dyn Aead>,
    /// The key of the header's MAC.
    pub mac: SecretKey,
}

/// The two keys derived from a file's DEK, as bytes: what the key cache and the pool keep
/// (64 bytes a file). The AEAD's expanded key schedule is built from them on each open and
/// lives only while the file is open: kept in the cache it cost ≈ 2 KiB a file.
#[derive(Clone)]
struct DerivedKeys {
    content: SecretKey,
    mac: SecretKey,
}

#[derive(Debug, thiserror::Error)]
/// Why a file's keys could not be had.
pub enum EnvelopeError {
    #[error("header belongs to another filesystem or was altered (MAC mismatch)")]
    /// The header MAC does not verify.
    BadMac,
    #[error("no wrapped key could be unwrapped: {0}")]
    /// No wrap could be unwrapped (each KMS error listed).
    Unwrap(String),
    #[error("this host may not unwrap its key: {0}")]
    /// The KMS refused every unwrap (AccessDenied): this principal may not read the
    /// file (an encrypt-only host, a read of a revoked share).
    Denied(String),
    #[error("the key unwrapped under {0} is not bound to this file (an RSA wrap copied from another file or tree)")]
    /// An RSA wrap decrypted, but to a key bound to another tree or file.
    Binding(String),
    #[error("its key is wrapped only under {0}, which is not one of the tree's keys (a file forged or copied from another tree?)")]
    /// The header is wrapped only under keys that are not the tree's.
    ForeignKeys(String),
    #[error("public key of {0}: {1}")]
    /// A tree's pinned public key does not parse or seal.
    PublicKey(String, public::PublicKeyError),
    #[error("not authenticated under the tree key: {0}")]
    /// The file's `user.kmsfs.auth` does not check out (generation 1 on).
    Auth(String),
    #[error("KMS returned a data key of {0} bytes, expected 32")]
    /// The KMS returned a data key of the wrong length.
    KeyLength(usize),
    #[error("{0}")]
    /// The KMS refused or failed.
    Kms(#[from] KmsError),
    #[error("header: {0}")]
    /// The header does not encode or decode.
    Header(#[from] crate::format::HeaderError),
}

/// A tree's file keys: unwrapped through the KMS, cached, and made ahead for new files.
pub struct Envelope {
    kms: Arc<dyn Kms>,
    /// The tree's config (authenticated by `crate::trust`).
    pub config: TreeConfig,
    fs_id: [u8; 16],
    backend: Backend,
    /// file id -> (unwrapped at, keys); entries older than `ttl` count as missing.
    cache: Mutex<LruCache<[u8; 16], CachedKeys>>,
    ttl: Duration,
    /// Headers made ahead of need, so creating a file makes no KMS round trip (and a
    /// burst of creates costs a few group-committed audit fsyncs instead of one each).
    pool: Mutex<VecDeque<Ready>>,
    pool_size: usize,
    /// The pre-makers were started (once, on the first need: `REFILL_THREADS` threads
    /// that live as long as the envelope and sleep on `refill_wake` between rounds).
    refilling: AtomicBool,
    refill: Arc<RefillWake>,
    /// The tree's keys as last authenticated: `config.keys`, refreshed by `reload` when a
    /// header is wrapped only under other keys (a `rotate --to` run while mounted).
    tree_keys: parking_lot::RwLock<Vec<String>>,
    reload: Option<Reload>,
    last_reload: Mutex<Option<Instant>>,
    /// Trees of generation 1 on: what files are authenticated under (`format::auth`).
    auth: Option<crate::format::auth::AuthKey>,
    /// A reader (read-only share): it may not unwrap the write key, so it cannot check
    /// file authentication (and makes no files).
    reader: bool,
}

/// Re-reads and re-authenticates the tree's config; its keys, or None.
type Reload = Box<dyn Fn() -> Option<Vec<String>> + Send + Sync>;

/// A header wrapped only under unknown keys triggers a reload at most this often.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// (when unwrapped, keys)
type CachedKeys = (Instant, DerivedKeys);

/// How the pre-makers are woken: a round counter under a lock, and a condition variable.
/// Shared with them apart from the envelope, so a sleeping pre-maker does not keep the
/// envelope (and its KMS) alive.
#[derive(Default)]
struct RefillWake {
    lock: Mutex<()>,
    cv: parking_lot::Condvar,
    /// Refill rounds asked for; a pre-maker runs a round when it sees a new one.
    asked: AtomicU64,
}

impl RefillWake {
    fn ask(&self) {
        let _g = self.lock.lock();
        self.asked.fetch_add(1, Ordering::AcqRel);
        self.cv.notify_all();
    }
}

impl Drop for Envelope {
    /// The pre-makers end now rather than at their next timeout.
    fn drop(&mut self) {
        self.refill.ask();
    }
}

struct Ready {
    made: Instant,
    header: Header,
    keys: DerivedKeys,
}

/// A pre-made header older than this is discarded, so a key disabled or rotated in the
/// KMS stops being used for new files within this time.
pub const POOL_MAX_AGE: Duration = Duration::from_secs(30);
const REFILL_THREADS: usize = 8;

/// Do two key references (ARN or bare key id, as different KMSs answer) name one key?
pub fn same_key(a: &str, b: &str) -> bool {
    let id = |k: &str| k.rsplit_once(":key/").map_or(k, |(_, id)| id).to_string();
    a == b || id(a) == id(b)
}

/// The encryption context every wrap of a file's DEK is bound to.
pub fn wrap_context(fs_id: &str, file_id: &[u8; 16]) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("kmsfs:fs".into(), fs_id.into());
    c.insert("kmsfs:file".into(), hex::encode(file_id));
    c
}

impl Envelope {
    /// The file keys of a tree (`config`) through `kms`: a 1,024-file key cache, no
    /// header pool (every new file calls the KMS), the AEAD backend of `Backend::from_env`.
    pub fn new(kms: Arc<dyn Kms>, config: TreeConfig) -> Envelope {
        let fs_id = config.fs_id_bytes().expect("validated config");
        Envelope {
            kms,
            fs_id,
            backend: Backend::from_env(),
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(1024).unwrap())),
            pool: Mutex::new(VecDeque::new()),
            pool_size: 0,
            ttl: Duration::from_secs(3600),
            refilling: AtomicBool::new(false),
            refill: Arc::new(RefillWake::default()),
            tree_keys: parking_lot::RwLock::new(config.keys.clone()),
            config,
            reload: None,
            last_reload: Mutex::new(None),
            auth: None,
            reader: false,
        }
    }

    /// Authenticates files under `auth` (the write key's current generation); `reader`:
    /// this host may not unwrap the write key (a read-only share), so it cannot.
    pub fn with_auth(
        mut self,
        auth: Option<crate::format::auth::AuthKey>,
        reader: bool,
    ) -> Envelope {
        self.auth = auth;
        self.reader = reader;
        self
    }

    /// Writes a new file's header on `fd`, and (generation 1 on) its authentication.
    pub fn write_new_header(&self, fd: std::os::fd::BorrowedFd, h: &Header) -> crate::Result<()> {
        crate::backing::create_header(fd, h)?;
        self.write_auth(fd, h)
    }

    /// (Re)writes the authentication of header `h` on `fd` (generation 1 on).
    pub fn write_auth(&self, fd: std::os::fd::BorrowedFd, h: &Header) -> crate::Result<()> {
        if let Some(a) = &self.auth {
            rustix::fs::fsetxattr(
                fd,
                crate::format::auth::AUTH_XATTR,
                &a.seal(h),
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| crate::Error::from(e).context("cannot write the file's authentication"))?;
        }
        Ok(())
    }

    /// Writes the authentication of node file `fd` whose sealed record is `record`
    /// (generation 1 on).
    pub fn write_node_auth(&self, fd: std::os::fd::BorrowedFd, record: &[u8]) -> crate::Result<()> {
        if let Some(a) = &self.auth {
            rustix::fs::fsetxattr(
                fd,
                crate::format::auth::AUTH_XATTR,
                &a.seal_node(record),
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| crate::Error::from(e).context("cannot write the node's authentication"))?;
        }
        Ok(())
    }

    /// Checks that node file `fd`, whose sealed record is `record`, was made by a writer
    /// of the current generation (readers and trees of generation 0 cannot tell).
    pub fn check_node_auth(
        &self,
        fd: std::os::fd::BorrowedFd,
        record: &[u8],
    ) -> Result<(), EnvelopeError> {
        let Some(a) = &self.auth else {
            if self.config.generation > 0 && !self.reader {
                return Err(EnvelopeError::Auth(
                    "no write key at hand to check it".into(),
                ));
            }
            return Ok(());
        };
        let stored = stored_auth(fd)?;
        a.verify_node(record, stored.as_deref())
            .map_err(|e| EnvelopeError::Auth(e.to_string()))
    }

    /// Checks that header `h`, read from `fd`, was made (or moved to this generation) by
    /// a holder of the tree key's current generation. Trees of generation 0 have no file
    /// authentication; one of a later generation without the key at hand fails closed.
    pub fn check_auth(&self, fd: std::os::fd::BorrowedFd, h: &Header) -> Result<(), EnvelopeError> {
        let Some(a) = &self.auth else {
            if self.config.generation > 0 && !self.config.public_key_tree() && !self.reader {
                return Err(EnvelopeError::Auth(
                    "no tree key at hand to check it".into(),
                ));
            }
            return Ok(());
        };
        let stored = stored_auth(fd)?;
        a.verify(h, stored.as_deref())
            .map_err(|e| EnvelopeError::Auth(e.to_string()))
    }

    /// Keeps the keys of up to `entries` files (default 1024).
    pub fn with_cache(mut self, entries: usize) -> Envelope {
        self.cache = Mutex::new(LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap()));
        self
    }

    /// Keeps up to `headers` new-file headers made ahead of need (default 0: none).
    pub fn with_pool(mut self, headers: usize) -> Envelope {
        self.pool_size = headers;
        self
    }

    /// Uses the AEAD implementation `backend` (default: `Backend::from_env()`).
    pub fn with_backend(mut self, backend: Backend) -> Envelope {
        self.backend = backend;
        self
    }

    /// Re-reads the tree's keys with `f` when a header names none of them (a key change on a mounted tree).
    pub fn with_reload(
        mut self,
        f: impl Fn() -> Option<Vec<String>> + Send + Sync + 'static,
    ) -> Envelope {
        self.reload = Some(Box::new(f));
        self
    }

    /// The wraps of `h` under the tree's (authenticated) keys, reloading those once if
    /// there are none (rate-limited).
    fn own_wraps<'h>(&self, h: &'h Header) -> Vec<&'h Wrap> {
        let pick = |keys: &[String]| -> Vec<&'h Wrap> {
            h.wraps
                .iter()
                .filter(|w| keys.iter().any(|k| same_key(k, &w.key_arn)))
                .collect()
        };
        let ours = pick(&self.tree_keys.read());
        if !ours.is_empty() {
            return ours;
        }
        let Some(reload) = &self.reload else {
            return ours;
        };
        {
            let mut last = self.last_reload.lock();
            if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
                return ours;
            }
            *last = Some(Instant::now());
        }
        match reload() {
            Some(keys) => {
                let ours = pick(&keys);
                *self.tree_keys.write() = keys;
                ours
            }
            None => ours,
        }
    }

    /// A header for a new file: pre-made if one is ready, else made now.
    pub fn take_header(self: &Arc<Self>) -> Result<(Header, Arc<FileKeys>), EnvelopeError> {
        let ready = {
            let mut pool = self.pool.lock();
            loop {
                match pool.pop_front() {
                    Some(r) if r.made.elapsed() < POOL_MAX_AGE => break Some(r),
                    Some(_) => continue, // too old: dropped (keys zeroized)
                    None => break None,
                }
            }
        };
        self.refill_in_background();
        match ready {
            Some(r) => {
                let keys = Arc::new(self.file_keys(&r.keys));
                self.cache
                    .lock()
                    .put(r.header.file_id, (Instant::now(), r.keys));
                Ok((r.header, keys))
            }
            None => self.new_header(),
        }
    }

    fn refill_in_background(self: &Arc<Self>) {
        if self.pool_size == 0 || self.pool.lock().len() >= self.pool_size / 2 {
            return;
        }
        // Long-lived pre-makers, not threads per round: a round every pool_size/2 creates
        // spawned nine threads (clone, stack, exit) per round, 0.2 thread per file created.
        if !self.refilling.swap(true, Ordering::AcqRel) {
            for _ in 0..REFILL_THREADS {
                let (me, wake) = (Arc::downgrade(self), self.refill.clone());
                let spawned = std::thread::Builder::new()
                    .name("kmsfs-premake".into())
                    .spawn(move || Self::pre_maker(me, wake));
                if let Err(e) = spawned {
                    tracing::debug!("cannot start a header pre-maker: {e}");
                }
            }
        }
        self.refill.ask();
    }

    /// A pre-maker: on each round asked for, fills the pool (several in parallel put more
    /// records in each of the audit log's group commits); sleeps between rounds, and
    /// ends once the envelope is gone. A failure (the KMS refuses) ends the round: the
    /// next take_header asks again, so a refusing KMS is not called in the background.
    fn pre_maker(me: Weak<Envelope>, wake: Arc<RefillWake>) {
        let mut seen = 0;
        loop {
            let asked = wake.asked.load(Ordering::Acquire);
            if asked != seen {
                seen = asked;
                let Some(env) = me.upgrade() else { return };
                while env.pool.lock().len() < env.pool_size {
                    match env.make_header() {
                        Ok((header, keys)) => env.pool.lock().push_back(Ready {
                            made: Instant::now(),
                            header,
                            keys,
                        }),
                        Err(e) => {
                            tracing::debug!("pre-making file keys stopped: {e}");
                            break;
                        }
                    }
                }
            }
            let mut g = wake.lock.lock();
            if me.strong_count() == 0 {
                return;
            }
            if wake.asked.load(Ordering::Acquire) == seen {
                wake.cv.wait_for(&mut g, Duration::from_secs(5));
            }
        }
    }

    /// Makes the KMS's record of this process verifiable now (an audit checkpoint).
    pub fn flush_audit(&self) {
        self.kms.flush_audit();
    }

    /// How long an unwrapped key is reused before the KMS is asked again.
    pub fn with_ttl(mut self, ttl: Duration) -> Envelope {
        self.ttl = ttl;
        self
    }

    fn derive(&self, dek: &[u8], file_id: &[u8; 16]) -> Result<DerivedKeys, EnvelopeError> {
        let dek = SecretKey::from_slice(dek).ok_or(EnvelopeError::KeyLength(dek.len()))?;
        Ok(derive_key(&dek, file_id))
    }

    /// The usable keys (the AEAD's key schedule built now) of derived keys `k`.
    fn file_keys(&self, k: &DerivedKeys) -> FileKeys {
        FileKeys {
            content: self.backend.key(k.content.as_bytes()),
            mac: k.mac.clone(),
        }
    }

    /// How many files' keys the cache holds (for the tests).
    pub fn cached_count(&self) -> usize {
        self.cache.lock().len()
    }

    /// Drops the cached keys of `file_id` (a file made ahead and never used: its keys
    /// would take the place of a real file's in the LRU).
    pub fn forget_keys(&self, file_id: &[u8; 16]) {
        let gone = self.cache.lock().pop(file_id);
        drop(gone); // zeroized outside the lock
    }

    /// The keys of file `file_id` if the cache holds them (unexpired): a re-open of a
    /// file whose authenticated header this process has read needs neither the header
    /// nor the KMS again.
    pub fn cached_keys(&self, file_id: &[u8; 16]) -> Option<Arc<FileKeys>> {
        let k = self
            .cache
            .lock()
            .get(file_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, k)| k.clone())?;
        Some(Arc::new(self.file_keys(&k)))
    }

    /// A fresh header made now (and its keys cached).
    pub fn new_header(&self) -> Result<(Header, Arc<FileKeys>), EnvelopeError> {
        let (h, keys) = self.make_header()?;
        let usable = Arc::new(self.file_keys(&keys));
        self.cache.lock().put(h.file_id, (Instant::now(), keys));
        Ok((h, usable))
    }

    /// A fresh header: new file id, new DEK from GenerateDataKey under the first key,
    /// the same DEK Encrypted under each further key.
    fn make_header(&self) -> Result<(Header, DerivedKeys), EnvelopeError> {
        let file_id: [u8; 16] = crate::crypto::random_bytes();
        if self.config.public_key_tree() {
            return self.make_public_header(file_id);
        }
        let ctx = wrap_context(&self.config.fs_id, &file_id);
        let first = self.kms.generate_data_key(GenerateDataKeyRequest {
            key_id: self.config.keys[0].clone(),
            key_spec: Some("AES_256".into()),
            number_of_bytes: None,
            encryption_context: Some(ctx.clone()),
            ..Default::default()
        })?;
        let mut wraps = vec![Wrap {
            key_arn: first.key_id.clone(),
            material_id: first.key_material_id.clone().unwrap_or_default(),
            blob: first.ciphertext_blob.clone(),
        }];
        for key in &self.config.keys[1..] {
            let r = self.kms.encrypt(EncryptRequest {
                key_id: key.clone(),
                plaintext: Secret(first.plaintext.0.clone()),
                encryption_context: Some(ctx.clone()),
                encryption_algorithm: None,
                ..Default::default()
            })?;
            wraps.push(Wrap {
                key_arn: r.key_id,
                material_id: r.key_material_id.unwrap_or_default(),
                blob: r.ciphertext_blob,
            });
        }
        let keys = self.derive(&first.plaintext.0, &file_id)?;
        Ok(self.seal_header(file_id, wraps, keys))
    }

    /// A header of an encrypt-only tree: the DEK drawn here and sealed under each RSA
    /// public key of the config, with no KMS call (see `public`).
    fn make_public_header(
        &self,
        file_id: [u8; 16],
    ) -> Result<(Header, DerivedKeys), EnvelopeError> {
        let dek = SecretKey::random();
        let mut wraps = vec![];
        for key in &self.config.keys {
            let b64 = self.config.public_keys.get(key).map_or("", String::as_str);
            let pk =
                public::parse_b64(b64).map_err(|e| EnvelopeError::PublicKey(key.clone(), e))?;
            let blob = public::seal(&pk, &self.fs_id, &file_id, &dek)
                .map_err(|e| EnvelopeError::PublicKey(key.clone(), e))?;
            wraps.push(Wrap {
                key_arn: key.clone(),
                material_id: String::new(),
                blob,
            });
        }
        let keys = derive_key(&dek, &file_id);
        Ok(self.seal_header(file_id, wraps, keys))
    }

    fn seal_header(
        &self,
        file_id: [u8; 16],
        wraps: Vec<Wrap>,
        keys: DerivedKeys,
    ) -> (Header, DerivedKeys) {
        let mut h = Header {
            suite: SUITE_AES256GCM_HKDF_SHA256,
            chunk_shift: crate::format::chunk_shift(self.config.chunk_size).expect("validated"),
            file_id,
            mac: [0; 32],
            wraps,
        };
        h.mac = h.compute_mac(&keys.mac, &self.fs_id);
        (h, keys)
    }

    /// The DEK of `h` from its wrap `w`, through KMS Decrypt.
    fn unwrap(&self, h: &Header, w: &Wrap) -> Result<SecretKey, EnvelopeError> {
        unwrap_dek(&*self.kms, &self.config, &self.fs_id, &h.file_id, w)
    }

    /// The content keys of a file: from the cache, else by unwrapping the copies in order.
    /// The header MAC is checked every time (it is cheap), so a cached key is never paired
    /// with an altered header.
    pub fn open_header(&self, h: &Header) -> Result<Arc<FileKeys>, EnvelopeError> {
        let cached = self
            .cache
            .lock()
            .get(&h.file_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .cloned();
        let hit = cached.is_some();
        let keys = match cached {
            Some((_, k)) => k,
            None => {
                let mut errors = vec![];
                let mut denied = true;
                let mut found = None;
                // Only through the tree's own (authenticated) keys: a wrap under any other
                // key could only hold a key its maker chose, never this file's.
                let ours = self.own_wraps(h);
                if ours.is_empty() {
                    let theirs: Vec<&str> = h.wraps.iter().map(|w| w.key_arn.as_str()).collect();
                    return Err(EnvelopeError::ForeignKeys(theirs.join(", ")));
                }
                for w in ours {
                    match self.unwrap(h, w) {
                        Ok(dek) => {
                            found = Some(derive_key(&dek, &h.file_id));
                            break;
                        }
                        Err(e) => {
                            denied &= matches!(&e, EnvelopeError::Kms(k) if k.code == ErrorCode::AccessDeniedException);
                            errors.push(format!("{}: {}", w.key_arn, e));
                        }
                    }
                }
                let errors = errors.join("; ");
                found.ok_or(if denied {
                    EnvelopeError::Denied(errors)
                } else {
                    EnvelopeError::Unwrap(errors)
                })?
            }
        };
        if !h.verify_mac(&keys.mac, &self.fs_id) {
            return Err(EnvelopeError::BadMac);
        }
        let usable = Arc::new(self.file_keys(&keys));
        if !hit {
            self.cache.lock().put(h.file_id, (Instant::now(), keys));
        }
        Ok(usable)
    }
}

/// K_content and K_mac of a file (docs/FORMAT.md, "Keys").
fn derive_key(dek: &SecretKey, file_id: &[u8; 16]) -> DerivedKeys {
    DerivedKeys {
        content: dek.derive(file_id, b"kmsfs v1 content"),
        mac: dek.derive(file_id, b"kmsfs v1 header mac"),
    }
}

/// The stored `user.kmsfs.auth` of `fd` (None: none; an oversized one is cut, and fails).
pub fn stored_auth(fd: std::os::fd::BorrowedFd) -> Result<Option<Vec<u8>>, EnvelopeError> {
    let mut buf = vec![0u8; crate::format::auth::AUTH_LEN + 1];
    match rustix::fs::fgetxattr(fd, crate::format::auth::AUTH_XATTR, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(rustix::io::Errno::RANGE) => Ok(Some(buf)),
        Err(e) => Err(EnvelopeError::Auth(format!("cannot read it: {e}"))),
    }
}

/// The DEK of file `file_id` of the tree `cfg` from its wrap `w`, through KMS Decrypt:
/// with the wrap context for a symmetric key, with RSAES_OAEP_SHA_256 and the binding
/// checked for an RSA key of an encrypt-only tree.
pub fn unwrap_dek(
    kms: &dyn Kms,
    cfg: &TreeConfig,
    fs_id: &[u8; 16],
    file_id: &[u8; 16],
    w: &Wrap,
) -> Result<SecretKey, EnvelopeError> {
    if cfg.public_key_tree() {
        let pinned = cfg.public_keys.get(&w.key_arn).map_or("", String::as_str);
        return public::open(kms, pinned, &w.key_arn, &w.blob, fs_id, file_id).map_err(
            |e| match e {
                public::PublicKeyError::Kms(e) => e.into(),
                public::PublicKeyError::Binding => EnvelopeError::Binding(w.key_arn.clone()),
                e => EnvelopeError::PublicKey(w.key_arn.clone(), e),
            },
        );
    }
    let r = kms.decrypt(DecryptRequest {
        ciphertext_blob: w.blob.clone(),
        encryption_context: Some(wrap_context(&cfg.fs_id, file_id)),
        key_id: Some(w.key_arn.clone()),
        encryption_algorithm: None,
        ..Default::default()
    })?;
    SecretKey::from_slice(&r.plaintext.0).ok_or(EnvelopeError::KeyLength(r.plaintext.0.len()))
}
