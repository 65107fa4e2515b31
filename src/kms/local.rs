//! The embedded KMS: symmetric AES-256 keys with versions, kept in a keystore directory
//! sealed under a root key. Safe across processes: every change takes an exclusive file
//! lock, re-reads the store, and replaces it atomically; readers notice a new store by
//! its inode and reload.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::audit::{AuditLog, Event};
use super::policy::{default_policy, Policy};
use super::*;
use crate::crypto::{
    encode_context, random_bytes, random_nonce, Backend, SecretKey, NONCE_LEN, TAG_LEN,
};

pub const ROOT_KEY_FILE: &str = "root.key";
pub const STORE_FILE: &str = "keystore.sealed";
const LOCK_FILE: &str = "keystore.lock";
const STORE_AAD: &[u8] = b"kmsfs keystore v1";
const BLOB_FORMAT: u8 = 1;
/// format ‖ key uuid ‖ version (u32 BE)
const BLOB_PREFIX: usize = 1 + 16 + 4;
const BLOB_OVERHEAD: usize = BLOB_PREFIX + NONCE_LEN + TAG_LEN;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

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

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    fn name(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyVersion {
    material_id: String,
    created: f64,
    /// None for the initial material, AUTOMATIC or ON_DEMAND after a rotation.
    rotation_type: Option<String>,
    material: Secret,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    description: String,
    created: f64,
    state: KeyState,
    deletion_date: Option<f64>,
    pending_window_days: Option<u32>,
    versions: Vec<KeyVersion>,
    current: u32,
    rotation_enabled: bool,
    rotation_period_days: Option<u32>,
    next_rotation: Option<f64>,
    tags: Vec<Tag>,
    policy: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct AliasRecord {
    target: String,
    created: f64,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Store {
    version: u32,
    keys: BTreeMap<String, KeyRecord>,
    aliases: BTreeMap<String, AliasRecord>,
    /// remote callers of `kmsfs kms serve`, by name; secrets sealed with the store
    #[serde(default)]
    principals: BTreeMap<String, PrincipalRecord>,
    /// (sequence number, record hash) of the newest audit checkpoint when the store was
    /// last written: the sealed store vouches that the log reaches at least that far, so
    /// a log cut back (with its checkpoints) or removed is an error, not a fresh start.
    #[serde(default)]
    audit_checkpoint: Option<(u64, String)>,
}

#[derive(Clone, Serialize, Deserialize)]
struct PrincipalRecord {
    access_key_id: String,
    secret: Secret,
    created: f64,
    enabled: bool,
}

/// A principal as listed (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct PrincipalInfo {
    pub name: String,
    pub access_key_id: String,
    pub created: f64,
    pub enabled: bool,
}

impl Store {
    /// Keys whose deletion date has passed are gone, whether or not a writer purged them yet.
    fn is_destroyed(k: &KeyRecord, at: f64) -> bool {
        k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= at)
    }

    fn purge_due(&mut self, at: f64) {
        let gone: Vec<String> = self
            .keys
            .values()
            .filter(|k| Store::is_destroyed(k, at))
            .map(|k| k.id.clone())
            .collect();
        for id in &gone {
            self.keys.remove(id); // drops (and zeroizes) the material
        }
        self.aliases.retain(|_, a| !gone.contains(&a.target));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

struct Cached {
    store: Arc<Store>,
    stamp: Option<Stamp>,
}

/// Who is calling: the principal key policies match and the audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: String,
    /// e.g. `local:PID` or the client's address
    pub source: String,
}

impl Caller {
    pub fn local() -> Caller {
        Caller {
            principal: std::env::var("KMSFS_PRINCIPAL")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PRINCIPAL.to_string()),
            source: format!("local:{}", std::process::id()),
        }
    }
}

/// State shared by every caller's view of one keystore.
struct Engine {
    dir: PathBuf,
    root: SecretKey,
    region: String,
    account: String,
    cache: RwLock<Cached>,
    audit: AuditLog,
    /// parsed key policies by key id, with the text they were parsed from
    policies: parking_lot::Mutex<std::collections::HashMap<String, (String, Arc<Policy>)>>,
}

/// The embedded KMS over one keystore directory, as seen by one caller.
pub struct LocalKms {
    e: Arc<Engine>,
    caller: Caller,
}

/// What one operation's audit record says about the key it touched.
#[derive(Default)]
struct OpInfo {
    key_arn: Option<String>,
    key_version: Option<String>,
    context: Option<EncryptionContext>,
    /// set once a mutation's record was made durable ahead of the store write
    recorded: bool,
}

impl OpInfo {
    fn key(&mut self, arn: String, version: Option<&KeyVersion>) {
        self.key_arn = Some(arn);
        self.key_version = version.map(|v| v.material_id.clone());
    }
}

fn check_private(path: &Path, what: &str) -> crate::Result<()> {
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
        let key_path = root_key_path(dir);
        if create && !dir.exists() {
            fs::create_dir_all(dir)
                .map_err(|e| crate::error::err!("cannot create keystore {}: {e}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        if !key_path.exists() {
            if !create || key_path != dir.join(ROOT_KEY_FILE) {
                crate::error::fail!(
                    "no keystore at {} (no root key {}); `kmsfs init` or `kmsfs key create` makes one",
                    dir.display(),
                    key_path.display()
                );
            }
            let root = SecretKey::random();
            // create_new: two processes racing here must not both write a root key.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
            {
                Ok(mut f) => {
                    f.write_all(root.as_bytes())?;
                    f.sync_all()?;
                    File::open(dir)?.sync_all()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => crate::error::fail!("cannot create {}: {e}", key_path.display()),
            }
        }
        check_private(dir, "keystore directory")?;
        check_private(&key_path, "root key file")?;
        let raw =
            zeroize::Zeroizing::new(fs::read(&key_path).map_err(|e| {
                crate::error::err!("cannot read root key {}: {e}", key_path.display())
            })?);
        let root = SecretKey::from_slice(&raw).ok_or_else(|| {
            crate::error::err!(
                "root key {} is {} bytes, expected 32",
                key_path.display(),
                raw.len()
            )
        })?;
        let e = Engine {
            dir: dir.to_path_buf(),
            audit: AuditLog::open(dir, &root),
            root,
            region: "local".into(),
            account: "000000000000".into(),
            cache: RwLock::new(Cached {
                store: Arc::new(Store::default()),
                stamp: None,
            }),
            policies: Default::default(),
        };
        let kms = LocalKms {
            e: Arc::new(e),
            caller: Caller::local(),
        };
        kms.snapshot()
            .map_err(|e| crate::error::err!("keystore {}: {}", dir.display(), e))?;
        Ok(kms)
    }

    /// The same keystore as seen by another caller (the server's authenticated principals).
    pub fn with_caller(&self, caller: Caller) -> LocalKms {
        LocalKms {
            e: self.e.clone(),
            caller,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn dir(&self) -> &Path {
        &self.e.dir
    }

    pub fn audit(&self) -> &AuditLog {
        &self.e.audit
    }

    fn arn(&self, id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.e.region, self.e.account, id
        )
    }

    fn alias_arn(&self, name: &str) -> String {
        format!("arn:aws:kms:{}:{}:{}", self.e.region, self.e.account, name)
    }

    /// The key id an existing alias points at (NotFoundException otherwise).
    fn alias_target(&self, store: &Store, name: &str) -> KmsResult<String> {
        store
            .aliases
            .get(name)
            .map(|a| a.target.clone())
            .ok_or_else(|| {
                KmsError::not_found(format!("Alias {} is not found.", self.alias_arn(name)))
            })
    }

    /// Runs one operation: the record (allowed or not) is durable in the audit log before
    /// the result is returned; if it cannot be made durable the operation fails.
    fn run<R>(&self, op: &str, f: impl FnOnce(&mut OpInfo) -> KmsResult<R>) -> KmsResult<R> {
        let mut info = OpInfo::default();
        let r = f(&mut info);
        if info.recorded && r.is_ok() {
            return r;
        }
        self.record(op, &info, r.as_ref().err())?;
        r
    }

    fn record(&self, op: &str, info: &OpInfo, err: Option<&KmsError>) -> KmsResult<()> {
        self.e
            .audit
            .append(Event {
                principal: self.caller.principal.clone(),
                op: op.to_string(),
                key_arn: info.key_arn.clone(),
                key_version: info.key_version.clone(),
                context: info.context.clone(),
                error_code: err.map(|e| e.code.name().to_string()),
                request_id: uuid::Builder::from_random_bytes(random_bytes::<16>())
                    .into_uuid()
                    .to_string(),
                source: self.caller.source.clone(),
            })
            .map_err(|e| {
                tracing::error!("{e}; failing the {op} request (audit is fail-closed)");
                KmsError::internal(format!("audit log unavailable: {e}"))
            })
    }

    fn stamp(&self) -> KmsResult<Option<Stamp>> {
        match fs::metadata(self.e.dir.join(STORE_FILE)) {
            Ok(md) => Ok(Some(Stamp {
                ino: md.ino(),
                mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                size: md.size(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KmsError::internal(format!("cannot stat keystore: {e}"))),
        }
    }

    fn read_store(&self) -> KmsResult<Store> {
        let path = self.e.dir.join(STORE_FILE);
        let mut data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
            Err(e) => {
                return Err(KmsError::internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        if data.len() < NONCE_LEN + TAG_LEN {
            return Err(KmsError::internal(format!(
                "{} is truncated",
                path.display()
            )));
        }
        let nonce: [u8; NONCE_LEN] = data[..NONCE_LEN].try_into().unwrap();
        let aead = Backend::AwsLc.key(self.e.root.as_bytes());
        aead.open(&nonce, STORE_AAD, &mut data[NONCE_LEN..])
            .map_err(|_| {
                KmsError::internal(format!(
                    "{} does not authenticate under the root key (wrong root.key or damaged file)",
                    path.display()
                ))
            })?;
        let plain = &data[NONCE_LEN..data.len() - TAG_LEN];
        let store: Result<Store, _> = serde_json::from_slice(plain);
        zeroize::Zeroize::zeroize(&mut data);
        store.map_err(|e| KmsError::internal(format!("{}: invalid store: {e}", path.display())))
    }

    fn write_store(&self, store: &Store) -> KmsResult<()> {
        let mut json = serde_json::to_vec(store).map_err(|e| KmsError::internal(e.to_string()))?;
        let nonce = random_nonce();
        let aead = Backend::AwsLc.key(self.e.root.as_bytes());
        let tag = aead.seal(&nonce, STORE_AAD, &mut json);
        let mut out = Vec::with_capacity(NONCE_LEN + json.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&json);
        out.extend_from_slice(&tag);
        zeroize::Zeroize::zeroize(&mut json);
        let r = write_private_atomic(&self.e.dir, STORE_FILE, &out).map_err(|e| {
            KmsError::internal(format!(
                "cannot write keystore {}: {e}",
                self.e.dir.display()
            ))
        });
        zeroize::Zeroize::zeroize(&mut out);
        r
    }

    /// The current store, reloaded if another process replaced it.
    fn snapshot(&self) -> KmsResult<Arc<Store>> {
        let stamp = self.stamp()?;
        {
            let c = self.e.cache.read();
            if c.stamp == stamp && (stamp.is_some() || c.store.keys.is_empty()) {
                return Ok(c.store.clone());
            }
        }
        let store = Arc::new(self.read_store()?);
        let mut c = self.e.cache.write();
        c.store = store.clone();
        c.stamp = stamp;
        Ok(store)
    }

    /// Runs `f` on the freshest store under an exclusive cross-process lock; the audit
    /// record is made durable, then the store is replaced atomically. Nothing is written
    /// if `f` fails.
    fn mutate<R>(
        &self,
        op: &str,
        info: &mut OpInfo,
        f: impl FnOnce(&mut Store, &mut OpInfo) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.e.dir.join(LOCK_FILE))
            .map_err(|e| KmsError::internal(format!("cannot open keystore lock: {e}")))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| KmsError::internal(format!("cannot lock keystore: {e}")))?;
        let mut store = self.read_store()?;
        store.purge_due(now());
        let r = f(&mut store, info)?;
        self.record(op, info, None)?;
        info.recorded = true;
        store.version += 1;
        if let Some(ck) = self.e.audit.latest_checkpoint() {
            if store
                .audit_checkpoint
                .as_ref()
                .is_none_or(|(seq, _)| ck.0 > *seq)
            {
                store.audit_checkpoint = Some(ck);
            }
        }
        if let Err(e) = self.write_store(&store) {
            info.recorded = false; // run() records the failure too
            return Err(e);
        }
        let stamp = self.stamp()?;
        let mut c = self.e.cache.write();
        c.store = Arc::new(store);
        c.stamp = stamp;
        Ok(r)
    }

    /// Resolves a key id, key ARN, alias name or alias ARN to a key id.
    fn resolve(&self, store: &Store, key: &str) -> KmsResult<String> {
        let name = if let Some(rest) = key.strip_prefix("arn:aws:kms:") {
            // arn:aws:kms:REGION:ACCOUNT:key/ID or :alias/NAME
            let mut parts = rest.splitn(3, ':');
            let (_region, _account, res) = (parts.next(), parts.next(), parts.next());
            res.ok_or_else(|| KmsError::not_found(format!("invalid ARN {key:?}")))?
        } else {
            key
        };
        if let Some(id) = name.strip_prefix("key/") {
            return self.resolve(store, id);
        }
        let id = if name.starts_with("alias/") {
            store
                .aliases
                .get(name)
                .map(|a| a.target.clone())
                .ok_or_else(|| {
                    KmsError::not_found(format!("Alias {} is not found.", self.alias_arn(name)))
                })?
        } else {
            name.to_string()
        };
        match store.keys.get(&id) {
            Some(k) if !Store::is_destroyed(k, now()) => Ok(id),
            _ => Err(KmsError::not_found(format!(
                "Key '{}' does not exist",
                self.arn(&id)
            ))),
        }
    }

    /// Resolves `key`, records it in `info`, and checks the key policy for `action`.
    fn authorized<'s>(
        &self,
        store: &'s Store,
        key: &str,
        action: &str,
        ctx: Option<&EncryptionContext>,
        info: &mut OpInfo,
    ) -> KmsResult<&'s KeyRecord> {
        let id = self.resolve(store, key)?;
        let k = &store.keys[&id];
        info.key(self.arn(&id), k.versions.get(k.current as usize));
        if !self
            .policy_of(k)?
            .allows(&self.caller.principal, action, ctx)
        {
            return Err(KmsError::new(
                ErrorCode::AccessDeniedException,
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {} because no key policy statement allows it",
                    self.caller.principal,
                    self.arn(&id)
                ),
            ));
        }
        Ok(k)
    }

    fn policy_of(&self, k: &KeyRecord) -> KmsResult<Arc<Policy>> {
        let text = match &k.policy {
            Some(p) => p.clone(),
            None => default_policy(DEFAULT_PRINCIPAL),
        };
        let mut cache = self.e.policies.lock();
        if let Some((t, p)) = cache.get(&k.id) {
            if *t == text {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(Policy::parse(&text).map_err(|e| {
            KmsError::internal(format!(
                "stored policy of {} is invalid: {}",
                self.arn(&k.id),
                e.message
            ))
        })?);
        cache.insert(k.id.clone(), (text, p.clone()));
        Ok(p)
    }

    /// A new policy must still let its author manage the key (AWS's lockout safety check).
    fn check_lockout(&self, policy: &Policy) -> KmsResult<()> {
        if !policy.allows(&self.caller.principal, "kms:PutKeyPolicy", None) {
            return Err(KmsError::new(
                ErrorCode::MalformedPolicyDocumentException,
                format!(
                    "The new key policy will not allow you ({}) to update the key policy in the future (lockout safety check)",
                    self.caller.principal
                ),
            ));
        }
        Ok(())
    }

    fn usable<'a>(&self, k: &'a KeyRecord) -> KmsResult<&'a KeyRecord> {
        match k.state {
            KeyState::Enabled => Ok(k),
            KeyState::Disabled => Err(KmsError::new(
                ErrorCode::DisabledException,
                format!("{} is disabled.", self.arn(&k.id)),
            )),
            KeyState::PendingDeletion => Err(KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!("{} is pending deletion.", self.arn(&k.id)),
            )),
        }
    }

    fn not_pending_deletion(&self, k: &KeyRecord) -> KmsResult<()> {
        if k.state == KeyState::PendingDeletion {
            return Err(KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!("{} is pending deletion.", self.arn(&k.id)),
            ));
        }
        Ok(())
    }

    fn metadata(&self, k: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            aws_account_id: self.e.account.clone(),
            key_id: k.id.clone(),
            arn: self.arn(&k.id),
            creation_date: k.created,
            enabled: k.state == KeyState::Enabled,
            description: k.description.clone(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_state: k.state.name().into(),
            deletion_date: k.deletion_date,
            pending_deletion_window_in_days: k.pending_window_days,
            origin: "AWS_KMS".into(),
            key_manager: "CUSTOMER".into(),
            key_spec: SYMMETRIC_DEFAULT.into(),
            customer_master_key_spec: SYMMETRIC_DEFAULT.into(),
            encryption_algorithms: vec![SYMMETRIC_DEFAULT.into()],
            current_key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            multi_region: false,
        }
    }

    fn seal_blob(
        &self,
        k: &KeyRecord,
        plaintext: &[u8],
        ctx: &Option<EncryptionContext>,
    ) -> Vec<u8> {
        let version = k.current;
        let material = &k.versions[version as usize].material;
        let mut blob = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
        blob.push(BLOB_FORMAT);
        blob.extend_from_slice(
            uuid::Uuid::parse_str(&k.id)
                .expect("key ids are UUIDs")
                .as_bytes(),
        );
        blob.extend_from_slice(&version.to_be_bytes());
        let nonce = random_nonce();
        blob.extend_from_slice(&nonce);
        let aad = blob_aad(&blob[..BLOB_PREFIX], ctx);
        let start = blob.len();
        blob.extend_from_slice(plaintext);
        let key: [u8; 32] = material.0.as_slice().try_into().expect("32-byte material");
        let tag = Backend::AwsLc
            .key(&key)
            .seal(&nonce, &aad, &mut blob[start..]);
        blob.extend_from_slice(&tag);
        blob
    }

    /// Opens a blob after checking the caller may `action` on its key:
    /// (key id, version index, plaintext). Any mismatch is InvalidCiphertext.
    fn open_blob(
        &self,
        store: &Store,
        blob: &[u8],
        ctx: &Option<EncryptionContext>,
        key_hint: Option<&str>,
        action: &str,
        info: &mut OpInfo,
    ) -> KmsResult<(String, u32, Secret)> {
        let invalid = || {
            KmsError::new(
                ErrorCode::InvalidCiphertextException,
                "The ciphertext is invalid or was encrypted under another encryption context.",
            )
        };
        info.context = ctx.clone();
        if blob.len() < BLOB_OVERHEAD || blob[0] != BLOB_FORMAT {
            return Err(invalid());
        }
        let id = uuid::Uuid::from_slice(&blob[1..17])
            .map_err(|_| invalid())?
            .to_string();
        if let Some(hint) = key_hint {
            let want = self.resolve(store, hint)?;
            if want != id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKeyException,
                    format!("The ciphertext was not encrypted under {}", self.arn(&want)),
                ));
            }
        }
        let k = self.authorized(store, &id, action, ctx.as_ref(), info)?;
        self.usable(k)?;
        let version = u32::from_be_bytes(blob[17..21].try_into().unwrap());
        let v = k.versions.get(version as usize).ok_or_else(invalid)?;
        info.key_version = Some(v.material_id.clone());
        let nonce: [u8; NONCE_LEN] = blob[BLOB_PREFIX..BLOB_PREFIX + NONCE_LEN]
            .try_into()
            .unwrap();
        let aad = blob_aad(&blob[..BLOB_PREFIX], ctx);
        let mut buf = Secret(blob[BLOB_PREFIX + NONCE_LEN..].to_vec());
        let key: [u8; 32] = v
            .material
            .0
            .as_slice()
            .try_into()
            .expect("32-byte material");
        Backend::AwsLc
            .key(&key)
            .open(&nonce, &aad, &mut buf.0)
            .map_err(|_| invalid())?;
        let n = buf.0.len() - TAG_LEN;
        buf.0.truncate(n);
        Ok((k.id.clone(), version, buf))
    }

    fn data_key_len(req: &GenerateDataKeyRequest) -> KmsResult<usize> {
        match (req.key_spec.as_deref(), req.number_of_bytes) {
            (Some(_), Some(_)) => Err(KmsError::validation(
                "specify either KeySpec or NumberOfBytes, not both",
            )),
            (Some("AES_256"), None) => Ok(32),
            (Some("AES_128"), None) => Ok(16),
            (Some(s), None) => Err(KmsError::validation(format!(
                "KeySpec {s:?} is not AES_256 or AES_128"
            ))),
            (None, Some(n)) if (1..=1024).contains(&n) => Ok(n as usize),
            (None, Some(n)) => Err(KmsError::validation(format!(
                "NumberOfBytes {n} is outside 1..1024"
            ))),
            (None, None) => Err(KmsError::validation("KeySpec or NumberOfBytes is required")),
        }
    }

    fn new_version(rotation_type: Option<&str>) -> KeyVersion {
        KeyVersion {
            material_id: hex::encode(random_bytes::<32>()),
            created: now(),
            rotation_type: rotation_type.map(str::to_string),
            material: Secret(SecretKey::random().0.to_vec()),
        }
    }

    fn generate(
        &self,
        op: &str,
        action: &str,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.run(op, |info| {
            info.context = req.encryption_context.clone();
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                action,
                req.encryption_context.as_ref(),
                info,
            )?;
            let n = Self::data_key_len(&req)?;
            self.usable(k)?;
            let mut plaintext = Secret(vec![0u8; n]);
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut plaintext.0);
            Ok(GenerateDataKeyResponse {
                ciphertext_blob: self.seal_blob(k, &plaintext.0, &req.encryption_context),
                plaintext,
                key_id: self.arn(&k.id),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }

    /// A lifecycle change of one key: resolve + authorize + change, audited.
    fn change_key<R>(
        &self,
        op: &str,
        key: &str,
        f: impl FnOnce(&LocalKms, &mut KeyRecord) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.run(op, |info| {
            self.mutate(op, info, |s, info| {
                let id = self
                    .authorized(s, key, &format!("kms:{op}"), None, info)?
                    .id
                    .clone();
                let k = s.keys.get_mut(&id).expect("resolved");
                let r = f(self, k)?;
                info.key(self.arn(&id), k.versions.get(k.current as usize));
                Ok(r)
            })
        })
    }

    /// Adds a version to every key whose automatic rotation is due. Runs under the store
    /// lock, so two processes checking at once rotate a key once. Returns rotated ARNs.
    pub fn rotate_due_keys(&self) -> KmsResult<Vec<String>> {
        let at = now();
        let due = |k: &KeyRecord| {
            k.rotation_enabled
                && k.state == KeyState::Enabled
                && k.next_rotation.is_some_and(|n| n <= at)
        };
        let snap = self.snapshot()?;
        if snap.keys.values().any(|k| Store::is_destroyed(k, at)) {
            // Deletion dates that passed: the material goes now, not at the next write.
            for arn in self.purge_due_keys()? {
                tracing::info!("key {arn} deleted (its deletion date passed); material destroyed");
            }
        }
        if !snap.keys.values().any(due) {
            return Ok(vec![]);
        }
        self.run("RotateDueKeys", |info| {
            self.mutate("RotateDueKeys", info, |s, _| {
                let mut out = vec![];
                for k in s.keys.values_mut().filter(|k| due(k)) {
                    k.versions.push(Self::new_version(Some("AUTOMATIC")));
                    k.current = (k.versions.len() - 1) as u32;
                    let days = k.rotation_period_days.unwrap_or(365) as f64;
                    k.next_rotation = Some(at + days * 86400.0);
                    out.push(self.arn(&k.id));
                }
                Ok(out)
            })
        })
    }

    /// Destroys the material of every key whose deletion date has passed (any write does
    /// that too; this is for quiet keystores: the server and mounts call it on their
    /// maintenance tick, and `kmsfs key purge-due` from cron or a timer). Returns their ARNs.
    pub fn purge_due_keys(&self) -> KmsResult<Vec<String>> {
        let at = now();
        let gone: Vec<String> = self
            .snapshot()?
            .keys
            .values()
            .filter(|k| Store::is_destroyed(k, at))
            .map(|k| self.arn(&k.id))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        // mutate() purges before anything else
        self.run("PurgeDueKeys", |info| {
            self.mutate("PurgeDueKeys", info, |_, _| Ok(()))
        })?;
        Ok(gone)
    }

    /// Audits a request refused before it reached an operation (authentication failure,
    /// unknown operation, malformed body).
    pub fn record_refusal(&self, op: &str, key: Option<String>, e: &KmsError) -> KmsResult<()> {
        let info = OpInfo {
            key_arn: key,
            ..Default::default()
        };
        self.record(if op.is_empty() { "-" } else { op }, &info, Some(e))
    }

    /// One record standing for `count` refusals of unauthenticated requests from this
    /// caller's source that were not recorded one by one (rate limit of the server).
    pub fn record_refusals_suppressed(&self, count: u64, window_secs: u64) -> KmsResult<()> {
        let mut ctx = EncryptionContext::new();
        ctx.insert("count".into(), count.to_string());
        ctx.insert("window_seconds".into(), window_secs.to_string());
        let info = OpInfo {
            context: Some(ctx),
            ..Default::default()
        };
        let e = KmsError::new(
            ErrorCode::AccessDeniedException,
            "refusals beyond the per-source rate limit",
        );
        self.record("RefusalsSuppressed", &info, Some(&e))
    }

    /// The principal name and secret for an access key id, if it exists and is enabled.
    pub fn principal_secret(&self, access_key_id: &str) -> Option<(String, Secret)> {
        let s = self.snapshot().ok()?;
        s.principals
            .iter()
            .find(|(_, p)| p.enabled && p.access_key_id == access_key_id)
            .map(|(n, p)| (n.clone(), p.secret.clone()))
    }

    /// Creates a principal for remote callers; returns (access key id, secret). The secret
    /// is shown once by the CLI and otherwise only kept sealed in the keystore.
    pub fn create_principal(&self, name: &str) -> KmsResult<(String, Secret)> {
        self.run("CreatePrincipal", |info| {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_.@-".contains(&c))
            {
                return Err(KmsError::validation(format!(
                    "principal name {name:?} must be 1-64 characters of a-zA-Z0-9_.@-"
                )));
            }
            info.context = Some(
                [("principal".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
            );
            const AKID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
            let akid: String = "AKKF"
                .chars()
                .chain(
                    random_bytes::<16>()
                        .iter()
                        .map(|b| AKID_CHARS[(*b % 32) as usize] as char),
                )
                .collect();
            let secret = Secret(
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD_NO_PAD,
                    random_bytes::<30>(),
                )
                .into_bytes(),
            );
            self.mutate("CreatePrincipal", info, |s, _| {
                if s.principals.contains_key(name) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!("principal {name} already exists"),
                    ));
                }
                s.principals.insert(
                    name.to_string(),
                    PrincipalRecord {
                        access_key_id: akid.clone(),
                        secret: secret.clone(),
                        created: now(),
                        enabled: true,
                    },
                );
                Ok(())
            })?;
            Ok((akid, secret))
        })
    }

    pub fn list_principals(&self) -> KmsResult<Vec<PrincipalInfo>> {
        let s = self.snapshot()?;
        Ok(s.principals
            .iter()
            .map(|(n, p)| PrincipalInfo {
                name: n.clone(),
                access_key_id: p.access_key_id.clone(),
                created: p.created,
                enabled: p.enabled,
            })
            .collect())
    }

    /// Enables, disables (`Some(bool)`) or deletes (`None`) a principal.
    pub fn change_principal(&self, name: &str, enabled: Option<bool>) -> KmsResult<()> {
        let op = match enabled {
            Some(true) => "EnablePrincipal",
            Some(false) => "DisablePrincipal",
            None => "DeletePrincipal",
        };
        self.run(op, |info| {
            info.context = Some(
                [("principal".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
            );
            self.mutate(op, info, |s, _| {
                let p = s.principals.get_mut(name).ok_or_else(|| {
                    KmsError::not_found(format!("principal {name} does not exist"))
                })?;
                match enabled {
                    Some(e) => p.enabled = e,
                    None => {
                        s.principals.remove(name);
                    }
                }
                Ok(())
            })
        })
    }

    /// Test hook: moves a key's next automatic rotation to `at` (epoch seconds).
    #[doc(hidden)]
    pub fn set_next_rotation_for_test(&self, key: &str, at: f64) -> KmsResult<()> {
        let mut info = OpInfo::default();
        self.mutate("TestSetNextRotation", &mut info, |s, _| {
            let id = self.resolve(s, key)?;
            s.keys.get_mut(&id).unwrap().next_rotation = Some(at);
            Ok(())
        })
    }
}

fn blob_aad(prefix: &[u8], ctx: &Option<EncryptionContext>) -> Vec<u8> {
    let empty = EncryptionContext::new();
    let ctx = ctx.as_ref().unwrap_or(&empty);
    let mut aad = Vec::with_capacity(32 + prefix.len() + ctx.len() * 48);
    aad.extend_from_slice(b"kmsfs-kms blob v1");
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&encode_context(ctx));
    aad
}

fn check_alias_name(name: &str) -> KmsResult<()> {
    let rest = name.strip_prefix("alias/").ok_or_else(|| {
        KmsError::validation(format!(
            "Alias must start with the prefix \"alias/\": {name:?}"
        ))
    })?;
    if rest.is_empty()
        || rest.len() > 250
        || !rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_-".contains(&c))
    {
        return Err(KmsError::validation(format!(
            "Alias name {name:?} must be 1-256 characters of a-zA-Z0-9/_-"
        )));
    }
    if rest.starts_with("aws/") {
        return Err(KmsError::new(
            ErrorCode::InvalidAliasNameException,
            format!("{name} is reserved for AWS managed keys"),
        ));
    }
    Ok(())
}

fn paginate<T: Clone>(
    items: &[T],
    limit: Option<u32>,
    marker: &Option<String>,
) -> KmsResult<(Vec<T>, Option<String>)> {
    let limit = match limit {
        None => 100,
        Some(l) if (1..=1000).contains(&l) => l as usize,
        Some(l) => {
            return Err(KmsError::validation(format!(
                "Limit {l} is outside 1..1000"
            )))
        }
    };
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= items.len())
            .ok_or_else(|| KmsError::validation(format!("invalid Marker {m:?}")))?,
    };
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

impl Kms for LocalKms {
    fn create_key(&self, req: CreateKeyRequest) -> KmsResult<CreateKeyResponse> {
        self.run("CreateKey", |info| {
            if let Some(u) = req.key_usage.as_deref().filter(|u| *u != "ENCRYPT_DECRYPT") {
                return Err(KmsError::validation(format!(
                    "KeyUsage {u} is not supported (only ENCRYPT_DECRYPT)"
                )));
            }
            if let Some(s) = req.key_spec.as_deref().filter(|s| *s != SYMMETRIC_DEFAULT) {
                return Err(KmsError::validation(format!(
                    "KeySpec {s} is not supported (only SYMMETRIC_DEFAULT)"
                )));
            }
            let desc = req.description.clone().unwrap_or_default();
            if desc.len() > 8192 {
                return Err(KmsError::validation(
                    "Description is longer than 8192 characters",
                ));
            }
            let policy = match &req.policy {
                Some(p) => {
                    let parsed = Policy::parse(p)?;
                    if !req.bypass_policy_lockout_safety_check.unwrap_or(false) {
                        self.check_lockout(&parsed)?;
                    }
                    p.clone()
                }
                None => default_policy(&self.caller.principal),
            };
            let rec = KeyRecord {
                id: uuid::Uuid::new_v4().to_string(),
                description: desc,
                created: now(),
                state: KeyState::Enabled,
                deletion_date: None,
                pending_window_days: None,
                versions: vec![Self::new_version(None)],
                current: 0,
                rotation_enabled: false,
                rotation_period_days: None,
                next_rotation: None,
                tags: req.tags.clone().unwrap_or_default(),
                policy: Some(policy),
            };
            let md = self.metadata(&rec);
            info.key(self.arn(&rec.id), rec.versions.first());
            self.mutate("CreateKey", info, |s, _| {
                s.keys.insert(rec.id.clone(), rec);
                Ok(())
            })?;
            Ok(CreateKeyResponse { key_metadata: md })
        })
    }

    fn describe_key(&self, req: DescribeKeyRequest) -> KmsResult<DescribeKeyResponse> {
        self.run("DescribeKey", |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, "kms:DescribeKey", None, info)?;
            Ok(DescribeKeyResponse {
                key_metadata: self.metadata(k),
            })
        })
    }

    fn list_keys(&self, req: ListKeysRequest) -> KmsResult<ListKeysResponse> {
        self.run("ListKeys", |_| {
            let s = self.snapshot()?;
            let at = now();
            let all: Vec<KeyListEntry> = s
                .keys
                .values()
                .filter(|k| !Store::is_destroyed(k, at))
                .map(|k| KeyListEntry {
                    key_id: k.id.clone(),
                    key_arn: self.arn(&k.id),
                })
                .collect();
            let (keys, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListKeysResponse {
                keys,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    fn create_alias(&self, req: CreateAliasRequest) -> KmsResult<()> {
        self.run("CreateAlias", |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate("CreateAlias", info, |s, info| {
                if s.aliases.contains_key(&req.alias_name) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!(
                            "An alias with the name {} already exists",
                            self.alias_arn(&req.alias_name)
                        ),
                    ));
                }
                let id = self
                    .authorized(s, &req.target_key_id, "kms:CreateAlias", None, info)?
                    .id
                    .clone();
                s.aliases.insert(
                    req.alias_name.clone(),
                    AliasRecord {
                        target: id,
                        created: now(),
                    },
                );
                Ok(())
            })
        })
    }

    fn update_alias(&self, req: UpdateAliasRequest) -> KmsResult<()> {
        self.run("UpdateAlias", |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate("UpdateAlias", info, |s, info| {
                let current = self.alias_target(s, &req.alias_name)?;
                // Like AWS: the caller needs kms:UpdateAlias on the key the alias points
                // at now *and* on the new one, or anyone allowed on their own key could
                // repoint another principal's alias at it.
                if s.keys.contains_key(&current) {
                    self.authorized(s, &current, "kms:UpdateAlias", None, info)?;
                }
                let id = self
                    .authorized(s, &req.target_key_id, "kms:UpdateAlias", None, info)?
                    .id
                    .clone();
                if let Some(a) = s.aliases.get_mut(&req.alias_name) {
                    a.target = id;
                }
                Ok(())
            })
        })
    }

    fn delete_alias(&self, req: DeleteAliasRequest) -> KmsResult<()> {
        self.run("DeleteAlias", |info| {
            check_alias_name(&req.alias_name)?;
            self.mutate("DeleteAlias", info, |s, info| {
                let target = self.alias_target(s, &req.alias_name)?;
                if s.keys.contains_key(&target) {
                    self.authorized(s, &target, "kms:DeleteAlias", None, info)?;
                }
                s.aliases.remove(&req.alias_name);
                Ok(())
            })
        })
    }

    fn list_aliases(&self, req: ListAliasesRequest) -> KmsResult<ListAliasesResponse> {
        self.run("ListAliases", |_| {
            let s = self.snapshot()?;
            let filter = match &req.key_id {
                Some(k) => Some(self.resolve(&s, k)?),
                None => None,
            };
            let at = now();
            let all: Vec<AliasListEntry> = s
                .aliases
                .iter()
                .filter(|(_, a)| filter.as_ref().is_none_or(|f| *f == a.target))
                .filter(|(_, a)| {
                    s.keys
                        .get(&a.target)
                        .is_some_and(|k| !Store::is_destroyed(k, at))
                })
                .map(|(name, a)| AliasListEntry {
                    alias_name: name.clone(),
                    alias_arn: self.alias_arn(name),
                    target_key_id: a.target.clone(),
                    creation_date: a.created,
                })
                .collect();
            let (aliases, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    fn encrypt(&self, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.run("Encrypt", |info| {
            info.context = req.encryption_context.clone();
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                "kms:Encrypt",
                req.encryption_context.as_ref(),
                info,
            )?;
            check_algorithm(&req.encryption_algorithm)?;
            if req.plaintext.0.is_empty() || req.plaintext.0.len() > 4096 {
                return Err(KmsError::validation("Plaintext must be 1..4096 bytes"));
            }
            self.usable(k)?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_blob(k, &req.plaintext.0, &req.encryption_context),
                key_id: self.arn(&k.id),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }

    fn decrypt(&self, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.run("Decrypt", |info| {
            check_algorithm(&req.encryption_algorithm)?;
            let s = self.snapshot()?;
            let (id, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.encryption_context,
                req.key_id.as_deref(),
                "kms:Decrypt",
                info,
            )?;
            Ok(DecryptResponse {
                key_id: self.arn(&id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(s.keys[&id].versions[version as usize].material_id.clone()),
            })
        })
    }

    fn generate_data_key(&self, req: GenerateDataKeyRequest) -> KmsResult<GenerateDataKeyResponse> {
        self.generate("GenerateDataKey", "kms:GenerateDataKey", req)
    }

    fn generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyWithoutPlaintextResponse> {
        let r = self.generate(
            "GenerateDataKeyWithoutPlaintext",
            "kms:GenerateDataKeyWithoutPlaintext",
            req,
        )?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: r.ciphertext_blob.clone(),
            key_id: r.key_id.clone(),
            key_material_id: r.key_material_id.clone(),
        })
    }

    fn re_encrypt(&self, req: ReEncryptRequest) -> KmsResult<ReEncryptResponse> {
        self.run("ReEncrypt", |info| {
            let s = self.snapshot()?;
            let (src, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.source_encryption_context,
                req.source_key_id.as_deref(),
                "kms:ReEncryptFrom",
                info,
            )?;
            let mut dinfo = OpInfo::default();
            let dk = self.authorized(
                &s,
                &req.destination_key_id,
                "kms:ReEncryptTo",
                req.destination_encryption_context.as_ref(),
                &mut dinfo,
            )?;
            self.usable(dk)?;
            // the record names the destination (key and version the new blob is under)
            info.key_arn = dinfo.key_arn;
            info.key_version = dinfo.key_version;
            info.context = req.destination_encryption_context.clone();
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_blob(
                    dk,
                    &plaintext.0,
                    &req.destination_encryption_context,
                ),
                source_key_id: self.arn(&src),
                key_id: self.arn(&dk.id),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                source_key_material_id: Some(
                    s.keys[&src].versions[version as usize].material_id.clone(),
                ),
                destination_key_material_id: Some(
                    dk.versions[dk.current as usize].material_id.clone(),
                ),
            })
        })
    }

    fn enable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key("EnableKey", &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    fn disable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key("DisableKey", &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            k.state = KeyState::Disabled;
            Ok(())
        })
    }

    fn schedule_key_deletion(
        &self,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let days = req.pending_window_in_days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            let e = KmsError::validation(format!("PendingWindowInDays {days} is outside 7..30"));
            self.run("ScheduleKeyDeletion", |info| {
                info.key_arn = Some(req.key_id.clone());
                Err::<(), _>(e.clone())
            })?;
        }
        self.change_key("ScheduleKeyDeletion", &req.key_id, |me, k| {
            if k.state == KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidStateException,
                    format!("{} is already pending deletion.", me.arn(&k.id)),
                ));
            }
            let date = now() + days as f64 * 86400.0;
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(date);
            k.pending_window_days = Some(days);
            Ok(ScheduleKeyDeletionResponse {
                key_id: me.arn(&k.id),
                deletion_date: date,
                key_state: "PendingDeletion".into(),
                pending_window_in_days: days,
            })
        })
    }

    fn cancel_key_deletion(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key("CancelKeyDeletion", &req.key_id, |me, k| {
            if k.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidStateException,
                    format!("{} is not pending deletion.", me.arn(&k.id)),
                ));
            }
            // As in AWS: a cancelled deletion leaves the key Disabled.
            k.state = KeyState::Disabled;
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(KeyIdResponse {
                key_id: me.arn(&k.id),
            })
        })
    }

    fn rotate_key_on_demand(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key("RotateKeyOnDemand", &req.key_id, |me, k| {
            me.usable(k)?;
            k.versions.push(Self::new_version(Some("ON_DEMAND")));
            k.current = (k.versions.len() - 1) as u32;
            Ok(KeyIdResponse {
                key_id: me.arn(&k.id),
            })
        })
    }

    fn enable_key_rotation(&self, req: EnableKeyRotationRequest) -> KmsResult<()> {
        let days = req.rotation_period_in_days.unwrap_or(365);
        if !(90..=2560).contains(&days) {
            let e =
                KmsError::validation(format!("RotationPeriodInDays {days} is outside 90..2560"));
            return self.run("EnableKeyRotation", |info| {
                info.key_arn = Some(req.key_id.clone());
                Err(e.clone())
            });
        }
        self.change_key("EnableKeyRotation", &req.key_id, |me, k| {
            me.usable(k)?;
            k.rotation_enabled = true;
            k.rotation_period_days = Some(days);
            k.next_rotation = Some(now() + days as f64 * 86400.0);
            Ok(())
        })
    }

    fn disable_key_rotation(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key("DisableKeyRotation", &req.key_id, |me, k| {
            me.usable(k)?;
            k.rotation_enabled = false;
            k.next_rotation = None;
            Ok(())
        })
    }

    fn get_key_rotation_status(
        &self,
        req: KeyIdRequest,
    ) -> KmsResult<GetKeyRotationStatusResponse> {
        self.run("GetKeyRotationStatus", |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, "kms:GetKeyRotationStatus", None, info)?;
            Ok(GetKeyRotationStatusResponse {
                key_id: self.arn(&k.id),
                key_rotation_enabled: k.rotation_enabled,
                rotation_period_in_days: k.rotation_period_days.filter(|_| k.rotation_enabled),
                next_rotation_date: k.next_rotation,
            })
        })
    }

    fn list_key_rotations(
        &self,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
        self.run("ListKeyRotations", |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, "kms:ListKeyRotations", None, info)?;
            let all: Vec<RotationEntry> = k
                .versions
                .iter()
                .filter_map(|v| {
                    v.rotation_type.as_ref().map(|t| RotationEntry {
                        key_id: self.arn(&k.id),
                        key_material_id: v.material_id.clone(),
                        rotation_date: v.created,
                        rotation_type: t.clone(),
                    })
                })
                .collect();
            let (rotations, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    fn get_key_policy(&self, req: GetKeyPolicyRequest) -> KmsResult<GetKeyPolicyResponse> {
        self.run("GetKeyPolicy", |info| {
            check_policy_name(&req.policy_name)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, "kms:GetKeyPolicy", None, info)?;
            Ok(GetKeyPolicyResponse {
                policy: k
                    .policy
                    .clone()
                    .unwrap_or_else(|| default_policy(DEFAULT_PRINCIPAL)),
                policy_name: "default".into(),
            })
        })
    }

    fn put_key_policy(&self, req: PutKeyPolicyRequest) -> KmsResult<()> {
        self.run("PutKeyPolicy", |info| {
            check_policy_name(&req.policy_name)?;
            let parsed = Policy::parse(&req.policy)?;
            if !req.bypass_policy_lockout_safety_check.unwrap_or(false) {
                self.check_lockout(&parsed)?;
            }
            self.mutate("PutKeyPolicy", info, |s, info| {
                let id = self
                    .authorized(s, &req.key_id, "kms:PutKeyPolicy", None, info)?
                    .id
                    .clone();
                s.keys.get_mut(&id).unwrap().policy = Some(req.policy.clone());
                Ok(())
            })
        })
    }

    fn rotate_due(&self) -> KmsResult<Vec<String>> {
        self.rotate_due_keys()
    }

    fn flush_audit(&self) {
        if let Err(e) = self.audit().checkpoint() {
            tracing::warn!("audit checkpoint failed: {e}");
        }
    }
}

fn check_policy_name(name: &Option<String>) -> KmsResult<()> {
    match name.as_deref() {
        None | Some("default") => Ok(()),
        Some(n) => Err(KmsError::not_found(format!(
            "policy {n:?} does not exist (only \"default\")"
        ))),
    }
}

fn check_algorithm(alg: &Option<String>) -> KmsResult<()> {
    match alg.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) => Err(KmsError::validation(format!(
            "EncryptionAlgorithm {a} is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms() -> (tempfile::TempDir, LocalKms) {
        let d = tempfile::tempdir().unwrap();
        let k = LocalKms::open(&d.path().join("ks"), true).unwrap();
        (d, k)
    }

    fn ctx(pairs: &[(&str, &str)]) -> Option<EncryptionContext> {
        Some(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    /// On e663627 a key whose deletion date had passed kept its material in the sealed
    /// store until some other write happened: on a quiet keystore, forever.
    #[test]
    fn material_is_destroyed_when_the_deletion_date_passes() {
        let (_d, k) = kms();
        let doomed = k
            .create_key(CreateKeyRequest::default())
            .unwrap()
            .key_metadata;
        let kept = k
            .create_key(CreateKeyRequest::default())
            .unwrap()
            .key_metadata;
        k.schedule_key_deletion(ScheduleKeyDeletionRequest {
            key_id: doomed.key_id.clone(),
            pending_window_in_days: Some(7),
        })
        .unwrap();
        assert!(k.purge_due_keys().unwrap().is_empty(), "not due yet");
        // the deletion date passes (written through the store, as if a week went by)
        k.mutate("Test", &mut OpInfo::default(), |s, _| {
            s.keys.get_mut(&doomed.key_id).unwrap().deletion_date = Some(now() - 1.0);
            Ok(())
        })
        .unwrap();
        assert!(
            k.read_store().unwrap().keys.contains_key(&doomed.key_id),
            "still on disk"
        );
        // the maintenance tick (server, mounts, `key rotate-due`) destroys it
        assert!(k.rotate_due_keys().unwrap().is_empty());
        let on_disk = k.read_store().unwrap();
        assert!(
            !on_disk.keys.contains_key(&doomed.key_id),
            "material destroyed"
        );
        assert!(on_disk.keys.contains_key(&kept.key_id));
        assert!(k.purge_due_keys().unwrap().is_empty());
    }

    #[test]
    fn data_key_round_trip_with_context() {
        let (_d, k) = kms();
        let key = k
            .create_key(CreateKeyRequest::default())
            .unwrap()
            .key_metadata;
        k.create_alias(CreateAliasRequest {
            alias_name: "alias/a".into(),
            target_key_id: key.key_id.clone(),
        })
        .unwrap();
        let c = ctx(&[("kmsfs:fs", "x"), ("kmsfs:file", "y")]);
        let g = k
            .generate_data_key(GenerateDataKeyRequest {
                key_id: "alias/a".into(),
                key_spec: Some("AES_256".into()),
                encryption_context: c.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(g.plaintext.0.len(), 32);
        assert_eq!(g.key_id, key.arn);
        let d = k
            .decrypt(DecryptRequest {
                ciphertext_blob: g.ciphertext_blob.clone(),
                encryption_context: c,
                key_id: None,
                encryption_algorithm: None,
            })
            .unwrap();
        assert_eq!(d.plaintext, g.plaintext);
        // wrong context
        let e = k
            .decrypt(DecryptRequest {
                ciphertext_blob: g.ciphertext_blob.clone(),
                encryption_context: ctx(&[("kmsfs:fs", "x"), ("kmsfs:file", "z")]),
                key_id: None,
                encryption_algorithm: None,
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCiphertextException);
        // a second process sees the key (fresh open of the same dir)
        let k2 = LocalKms::open(k.dir(), false).unwrap();
        assert!(k2
            .describe_key(DescribeKeyRequest {
                key_id: "alias/a".into()
            })
            .is_ok());
    }

    #[test]
    fn states_rotation_and_validation() {
        let (_d, k) = kms();
        let id = k
            .create_key(CreateKeyRequest::default())
            .unwrap()
            .key_metadata
            .key_id;
        let enc = |k: &LocalKms| {
            k.encrypt(EncryptRequest {
                key_id: id.clone(),
                plaintext: Secret(b"hi".to_vec()),
                encryption_context: None,
                encryption_algorithm: None,
            })
        };
        let old = enc(&k).unwrap().ciphertext_blob;
        k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })
            .unwrap();
        let newer = enc(&k).unwrap();
        assert_ne!(newer.key_material_id, None);
        let dec = |blob: Vec<u8>| {
            k.decrypt(DecryptRequest {
                ciphertext_blob: blob,
                encryption_context: None,
                key_id: None,
                encryption_algorithm: None,
            })
        };
        assert_eq!(dec(old.clone()).unwrap().plaintext.0, b"hi");
        assert_eq!(
            k.list_key_rotations(ListKeyRotationsRequest {
                key_id: id.clone(),
                ..Default::default()
            })
            .unwrap()
            .rotations
            .len(),
            1
        );
        k.disable_key(KeyIdRequest { key_id: id.clone() }).unwrap();
        assert_eq!(
            dec(old.clone()).unwrap_err().code,
            ErrorCode::DisabledException
        );
        let e = k
            .schedule_key_deletion(ScheduleKeyDeletionRequest {
                key_id: id.clone(),
                pending_window_in_days: Some(3),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationException);
        k.schedule_key_deletion(ScheduleKeyDeletionRequest {
            key_id: id.clone(),
            pending_window_in_days: Some(7),
        })
        .unwrap();
        assert_eq!(
            dec(old.clone()).unwrap_err().code,
            ErrorCode::KMSInvalidStateException
        );
        k.cancel_key_deletion(KeyIdRequest { key_id: id.clone() })
            .unwrap();
        let md = k
            .describe_key(DescribeKeyRequest { key_id: id.clone() })
            .unwrap()
            .key_metadata;
        assert_eq!(md.key_state, "Disabled");
        k.enable_key(KeyIdRequest { key_id: id.clone() }).unwrap();
        assert!(dec(old).is_ok());
        let e = k
            .enable_key_rotation(EnableKeyRotationRequest {
                key_id: id.clone(),
                rotation_period_in_days: Some(30),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationException);
    }

    #[test]
    fn refuses_world_readable_keystore() {
        let (_d, k) = kms();
        fs::set_permissions(
            k.dir().join(ROOT_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = LocalKms::open(k.dir(), false).err().unwrap().to_string();
        assert!(e.contains("group/others"), "{e}");
    }

    #[test]
    fn list_keys_pages() {
        let (_d, k) = kms();
        for _ in 0..5 {
            k.create_key(CreateKeyRequest::default()).unwrap();
        }
        let p1 = k
            .list_keys(ListKeysRequest {
                limit: Some(2),
                marker: None,
            })
            .unwrap();
        assert!(p1.truncated);
        let p2 = k
            .list_keys(ListKeysRequest {
                limit: Some(10),
                marker: p1.next_marker,
            })
            .unwrap();
        assert!(!p2.truncated);
        assert_eq!(p1.keys.len() + p2.keys.len(), 5);
    }
}
