//! The sealed store's schema: keys and their versions, aliases, principals; and what an
//! operation's audit record says about the key it touched.

use super::*;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
/// A key's state.
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Not usable until enabled.
    Disabled,
    /// Not usable; deleted at its deletion date unless cancelled.
    PendingDeletion,
    /// An EXTERNAL key without material (never imported, deleted, or expired).
    PendingImport,
    /// A multi-Region primary key scheduled for deletion while replicas remain: it waits
    /// for them, then is PendingDeletion for its window.
    PendingReplicaDeletion,
}

impl KeyState {
    pub(super) fn name(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
            KeyState::PendingReplicaDeletion => "PendingReplicaDeletion",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct KeyVersion {
    pub(super) material_id: String,
    pub(super) created: f64,
    /// None for the initial material, AUTOMATIC or ON_DEMAND after a rotation.
    pub(super) rotation_type: Option<String>,
    /// Empty when imported material was deleted or expired (until reimported).
    pub(super) material: Secret,
    /// Imported material only: SHA-256 of the material, so that a reimport can be checked
    /// to be the same material after it was deleted (inside the sealed store, like it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) digest: Option<String>,
    /// Imported material: the KeyMaterialDescription given at import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
}

impl KeyVersion {
    /// This version's description, without its material (a replica's mirror).
    pub(super) fn without_material(&self) -> KeyVersion {
        KeyVersion {
            material_id: self.material_id.clone(),
            created: self.created,
            rotation_type: self.rotation_type.clone(),
            material: Secret::default(),
            digest: self.digest.clone(),
            description: self.description.clone(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    pub(super) id: String,
    /// The account that owns the key, when it is not this KMS's own (`--account-id`):
    /// a key made by a principal of another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<String>,
    pub(super) description: String,
    pub(super) created: f64,
    pub(super) state: KeyState,
    pub(super) deletion_date: Option<f64>,
    pub(super) pending_window_days: Option<u32>,
    pub(super) versions: Vec<KeyVersion>,
    pub(super) current: u32,
    pub(super) rotation_enabled: bool,
    pub(super) rotation_period_days: Option<u32>,
    pub(super) next_rotation: Option<f64>,
    pub(super) tags: Vec<Tag>,
    pub(super) policy: Option<String>,
    /// KeySpec: SYMMETRIC_DEFAULT (stores written before key specs existed) or HMAC_*.
    #[serde(default = "symmetric_default")]
    pub(super) spec: String,
    /// KeyUsage: ENCRYPT_DECRYPT or GENERATE_VERIFY_MAC.
    #[serde(default = "encrypt_decrypt")]
    pub(super) usage: String,
    /// AWS_KMS (material made here) or EXTERNAL (imported).
    #[serde(default = "aws_kms")]
    pub(super) origin: String,
    /// Imported material: when it expires (None: it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) valid_to: Option<f64>,
    /// Imported material waiting for RotateKeyOnDemand to become current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pending_material: Option<KeyVersion>,
    /// An EXTERNAL_KEY_STORE key: its custom key store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) custom_key_store_id: Option<String>,
    /// An EXTERNAL_KEY_STORE key: its external key's id at the store's proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) xks_key_id: Option<String>,
    /// Who made it (per-principal quotas); None for keys made before quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) creator: Option<String>,
    /// A multi-Region key (`mrk-` id): the Region of its primary. This row is the
    /// primary when that is the view's Region, else a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) primary_region: Option<String>,
}

/// An external key store: where its XKS proxy is, how to sign for it (the secret sealed
/// with the store, like every secret), and whether it is connected.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct CustomKeyStoreRecord {
    pub(super) id: String,
    /// The account that owns the store, when it is not this KMS's own (`--account-id`):
    /// a store made by a principal of another account, which only that account sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<String>,
    pub(super) name: String,
    pub(super) created: f64,
    /// `https://host[:port]` (`http://` only for a loopback proxy).
    pub(super) endpoint: String,
    /// `[/prefix]/kms/xks/v1`.
    pub(super) path: String,
    pub(super) access_key_id: String,
    pub(super) secret: Secret,
    /// PUBLIC_ENDPOINT.
    pub(super) connectivity: String,
    /// CONNECTED, DISCONNECTED or FAILED.
    pub(super) state: String,
    /// Why the last connection failed (FAILED only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error_code: Option<String>,
}

fn aws_kms() -> String {
    "AWS_KMS".into()
}

/// What GetParametersForImport handed out: the RSA wrapping key (PKCS#8) an
/// ImportKeyMaterial with this token must be wrapped for, until `expires`.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct ImportRecord {
    pub(super) key_id: String,
    pub(super) algorithm: String,
    pub(super) private: Secret,
    pub(super) expires: f64,
}

fn symmetric_default() -> String {
    SYMMETRIC_DEFAULT.into()
}

fn encrypt_decrypt() -> String {
    ENCRYPT_DECRYPT.into()
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct AliasRecord {
    pub(super) target: String,
    pub(super) created: f64,
    /// Who made it (per-principal quotas); None for aliases made before quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) creator: Option<String>,
}

/// The KMS's state, as held in memory: one `Table` per kind of row (see `kms::store`).
/// Cloning it is O(1); a change marks the rows it touched, and a commit writes only those.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(super) struct Store {
    pub(super) keys: Table<KeyRecord>,
    pub(super) aliases: Table<AliasRecord>,
    /// remote callers of `kmsfs kms serve`, by name; secrets sealed with the store
    #[serde(default)]
    pub(super) principals: Table<PrincipalRecord>,
    /// (sequence number, record hash) of the newest audit checkpoint when the store was
    /// last written: the sealed store vouches that the log reaches at least that far, so
    /// a log cut back (with its checkpoints) or removed is an error, not a fresh start.
    #[serde(default)]
    pub(super) audit_checkpoint: Option<(u64, String)>,
    /// Grants, by grant id.
    #[serde(default)]
    pub(super) grants: Table<GrantRecord>,
    /// Outstanding import parameters, by import token (hex).
    #[serde(default)]
    pub(super) imports: Table<ImportRecord>,
    /// External key stores, by id (`cks-…`).
    #[serde(default)]
    pub(super) custom_key_stores: Table<CustomKeyStoreRecord>,
    /// The Region whose scope this view reads and writes (a server on a store shared by
    /// several Regions), or None: only rows of no Region.
    #[serde(skip)]
    pub(super) scope: Option<String>,
    /// Replicas of multi-Region keys in other Regions, by `REGION/ID`: what ReplicateKey,
    /// UpdatePrimaryRegion and the primary's changes of shared properties write.
    #[serde(skip)]
    pub(super) replicas: Table<KeyRecord>,
}

/// A grant: `grantee` may perform `operations` on `key_id` (within `constraints`).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct GrantRecord {
    pub(super) key_id: String,
    pub(super) token: String,
    pub(super) name: Option<String>,
    pub(super) grantee: String,
    pub(super) retiring: Option<String>,
    pub(super) operations: Vec<String>,
    pub(super) constraints: Option<GrantConstraints>,
    /// The principal that created it.
    pub(super) issuer: String,
    pub(super) created: f64,
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct PrincipalRecord {
    pub(super) access_key_id: String,
    pub(super) secret: Secret,
    pub(super) created: f64,
    pub(super) enabled: bool,
    /// Its account, when it is not this KMS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<String>,
}

/// A principal as listed (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct PrincipalInfo {
    /// Its name.
    pub name: String,
    /// Its access key id.
    pub access_key_id: String,
    /// When it was created (epoch seconds).
    pub created: f64,
    /// Whether it may call.
    pub enabled: bool,
    /// Its account.
    pub account: String,
}

impl Store {
    /// Keys whose deletion date has passed are gone, whether or not a writer purged them yet.
    pub(super) fn is_destroyed(k: &KeyRecord, at: f64) -> bool {
        k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= at)
    }

    /// An empty store as seen from Region `scope` (None: rows of no Region only).
    pub(super) fn scoped(scope: Option<String>) -> Store {
        let mut s = Store::default();
        let on = scope.is_some();
        s.keys.set_scoping(on);
        s.aliases.set_scoping(on);
        s.grants.set_scoping(on);
        s.imports.set_scoping(on);
        s.scope = scope;
        s
    }

    /// When `k` next needs a purge (its deletion date, or its imported material's ValidTo;
    /// at once for a primary waiting for its replicas' deletion).
    pub(super) fn due(k: &KeyRecord) -> Option<f64> {
        if k.state == KeyState::PendingReplicaDeletion {
            return Some(0.0);
        }
        let del = k
            .deletion_date
            .filter(|_| k.state == KeyState::PendingDeletion);
        match (del, k.valid_to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops what is due at `at`; returns when the next purge is due (a scan: O(keys)).
    pub(super) fn purge_due(&mut self, at: f64) -> f64 {
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
        self.grants.retain(|_, g| !gone.contains(&g.key_id));
        self.imports
            .retain(|_, i| i.expires > at && !gone.contains(&i.key_id));
        self.keys.update_where(
            |k| Store::material_expired(k, at),
            super::import::forget_material,
        );
        // A primary waiting for its replicas: once none is left, its own window starts.
        let waiting: Vec<String> = self
            .keys
            .values()
            .filter(|k| k.state == KeyState::PendingReplicaDeletion)
            .filter(|k| {
                !self
                    .replicas
                    .keys()
                    .any(|r| r.split_once('/').is_some_and(|(_, id)| id == k.id))
            })
            .map(|k| k.id.clone())
            .collect();
        for id in waiting {
            if let Some(k) = self.keys.get_mut(&id) {
                k.state = KeyState::PendingDeletion;
                k.deletion_date = Some(at + k.pending_window_days.unwrap_or(30) as f64 * 86400.0);
            }
        }
        self.keys
            .values()
            .filter_map(Store::due)
            .fold(f64::INFINITY, f64::min)
    }

    /// Imported material past its ValidTo is unusable, whether or not a writer removed it yet.
    pub(super) fn material_expired(k: &KeyRecord, at: f64) -> bool {
        k.valid_to.is_some_and(|t| t <= at)
    }
}

/// The store as this process last read it, and the generation it is at.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) store: Arc<Store>,
    pub(super) gen: u64,
}

/// Who is calling: the principal key policies match and the audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name.
    pub principal: String,
    /// e.g. `local:PID` or the client's address
    pub source: String,
    /// The region the request was signed for (None: a local caller, not regional).
    pub region: Option<String>,
    /// The principal's account (None: this KMS's own).
    pub account: Option<String>,
}

impl Caller {
    /// The local caller: `KMSFS_PRINCIPAL`, else `DEFAULT_PRINCIPAL`.
    pub fn local() -> Caller {
        Caller {
            principal: std::env::var("KMSFS_PRINCIPAL")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PRINCIPAL.to_string()),
            source: format!("local:{}", std::process::id()),
            region: None,
            account: None,
        }
    }
}

/// State shared by every caller's view of one keystore.
pub(super) struct Engine {
    pub(super) dir: PathBuf,
    /// Where the rows are (SQLite or PostgreSQL), and the key they are sealed under.
    pub(super) store: Box<dyn crate::kms::store::Engine>,
    pub(super) rows: crate::kms::store::RowSeal,
    /// When the next purge of a key past its deletion date or material ValidTo is due
    /// (they are refused from that time on either way; the purge drops their secrets):
    /// lowered by every key row this process writes or reads, so a write scans the keys
    /// only when something is due.
    pub(super) next_due: parking_lot::Mutex<f64>,
    pub(super) root: SecretKey,
    /// The region and account in ARNs: `local` and `DEFAULT_ACCOUNT` for the embedded KMS,
    /// which is not regional; a server's `--region`/`--account-id`, which are.
    pub(super) region: String,
    pub(super) account: String,
    /// A server answers for one region: keys are invisible to requests signed for another.
    pub(super) regional: bool,
    /// The Region scope of the store this view reads and writes: a server's Region on a
    /// store several Regions share (PostgreSQL); None otherwise.
    pub(super) scope: Option<String>,
    pub(super) cache: RwLock<Cached>,
    pub(super) audit: AuditLog,
    /// parsed key policies by key id, with the text they were parsed from
    pub(super) policies:
        parking_lot::Mutex<std::collections::HashMap<String, (String, Arc<Policy>)>>,
    /// GetKeyLastUsage's index of the audit log, read incrementally.
    pub(super) last_use: parking_lot::Mutex<crate::kms::audit::LastUseIndex>,
}

/// The embedded KMS over one keystore directory, as seen by one caller.
pub struct LocalKms {
    pub(super) e: Arc<Engine>,
    pub(super) caller: Caller,
}

/// What one operation's audit record says about the key it touched.
#[derive(Default)]
pub(super) struct OpInfo {
    pub(super) key_arn: Option<String>,
    pub(super) key_version: Option<String>,
    pub(super) context: Option<EncryptionContext>,
    /// set once a mutation's record was made durable ahead of the store write
    pub(super) recorded: bool,
}

impl OpInfo {
    pub(super) fn key(&mut self, arn: String, version: Option<&KeyVersion>) {
        self.key_arn = Some(arn);
        self.key_version = version.map(|v| v.material_id.clone());
    }
}
