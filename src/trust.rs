//! Trust in a backing tree's configuration (`kmsfs.json`).
//!
//! Whoever can write the backing tree can edit the config: add their own KMS key to
//! `keys` (every new file would then also be wrapped under it), point `kms` at an
//! endpoint they run, or replace the whole tree. Three things stop that:
//!
//! - **A MAC over the config** keyed from a random *tree key*, which exists on disk only
//!   wrapped by the tree's KMS keys (`tree_key`, encryption context `kmsfs:fs` +
//!   `kmsfs:purpose=tree-config`). Editing any field without the tree key is detected.
//! - **Pinning** (like ssh's `known_hosts`): the first time this host uses a tree it
//!   records the tree's fs id, keys and KMS location in `known_trees.json`; later the tree
//!   key is unwrapped only through *pinned* keys (never through a key the tree itself
//!   names), and a tree whose keys differ from the pin is refused with a message saying
//!   what changed. `--expect-key` gives the expected keys explicitly (units, fstab).
//! - **The KMS location** comes from `--kms`/`KMSFS_KMS`, else the pin; a location written
//!   in the tree is never contacted unless this host named it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{fail as bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::crypto::SecretKey;
use crate::envelope::public;
use crate::format::{TreeConfig, TreeKeyWrap};
use crate::kms::{
    DecryptRequest, DescribeKeyRequest, EncryptRequest, EncryptionContext, ErrorCode,
    GetPublicKeyRequest, Kms, KmsLocation, Secret,
};

static KNOWN_TREES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes this process keep its pins in `path` (an embedding program, or tests, that must
/// not touch the host's own pins), whatever the environment says. First call wins.
pub fn set_known_trees_path(path: PathBuf) {
    let _ = KNOWN_TREES.set(path);
}

/// Where this host keeps the trees it trusts: the path set by `set_known_trees_path`,
/// else `KMSFS_KNOWN_TREES`, else `known_trees.json` beside the default keystore
/// (`/var/lib/kmsfs` for root, `$XDG_DATA_HOME/kmsfs`).
pub fn known_trees_path() -> Result<PathBuf> {
    if let Some(p) = KNOWN_TREES.get() {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("KMSFS_KNOWN_TREES").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(crate::kms::local::default_keystore_dir()?.join("known_trees.json"))
}

/// What this host has seen of one tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Known {
    /// Key ARNs the tree wraps under (sorted).
    pub keys: Vec<String>,
    /// The KMS location this host uses for it.
    pub kms: String,
    /// When this host first saw the tree.
    pub first_seen: String,
    /// Backing directories (canonical) this host has used the tree at: a directory holds
    /// one tree, so another fs id showing up there is a replaced tree.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The config carried a MAC: one without it later is a downgrade, refused.
    #[serde(default)]
    pub authenticated: bool,
    /// The highest tree format version seen (2: encrypted names); lower is refused.
    #[serde(default)]
    pub version: u8,
    /// The highest tree-key generation seen; lower is refused (an old `kmsfs.json` put
    /// back, whose tree key a revoked principal may hold).
    #[serde(default)]
    pub generation: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KnownTrees {
    trees: BTreeMap<String, Known>,
}

fn load_known(path: &Path) -> Result<KnownTrees> {
    match std::fs::read(path) {
        Ok(b) if b.len() > 16 << 20 => bail!("{} is larger than 16 MiB", path.display()),
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: invalid known-trees file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownTrees::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records (or replaces) the pin of `fs_id`, under a lock, written atomically.
fn write_pin(cfg: &TreeConfig, kms: &str, at: Option<&Path>, authenticated: bool) -> Result<()> {
    let (fs_id, keys) = (cfg.fs_id.as_str(), cfg.keys.as_slice());
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = known_trees_path()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Often the default keystore directory, which must stay private.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path.with_extension("lock"))
        .with_context(|| format!("cannot lock {}", path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let mut known = load_known(&path)?;
    let first_seen = known
        .trees
        .get(fs_id)
        .map(|k| k.first_seen.clone())
        .unwrap_or_else(|| {
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
        });
    let mut keys = keys.to_vec();
    keys.sort();
    let mut paths = known
        .trees
        .get(fs_id)
        .map(|k| k.paths.clone())
        .unwrap_or_default();
    if let Some(p) = at.map(|p| p.display().to_string()) {
        // this directory now holds this tree (init, or a restore the user mounted here)
        for k in known.trees.values_mut() {
            k.paths.retain(|x| *x != p);
        }
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    // What must never go backwards only goes forwards.
    let (version, generation) = known
        .trees
        .get(fs_id)
        .map(|k| (k.version.max(cfg.version), k.generation.max(cfg.generation)))
        .unwrap_or((cfg.version, cfg.generation));
    known.trees.insert(
        fs_id.to_string(),
        Known {
            keys,
            kms: kms.to_string(),
            first_seen,
            paths,
            authenticated,
            version,
            generation,
        },
    );
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&known)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The pin of a tree, if this host has one.
pub fn pinned(fs_id: &str) -> Result<Option<Known>> {
    Ok(load_known(&known_trees_path()?)?.trees.remove(fs_id))
}

/// A tree whose config has been authenticated, with its KMS and tree key.
pub struct TrustedTree {
    /// The tree's config, authenticated.
    pub cfg: TreeConfig,
    /// Its KMS.
    pub kms: Arc<dyn Kms>,
    /// Where that KMS is (`KmsLocation::describe`), as pinned.
    pub location: String,
    tree_key: Option<SecretKey>,
    /// Generation 1 on: the write key, if this host may unwrap it (None: a reader).
    write_key: Option<SecretKey>,
}

/// The encryption context of the tree key's wraps. Generation 0 (trees made before
/// generations) used the file keys' `kmsfs:fs` pair, which a read-write share may
/// Encrypt under: such a grantee could wrap a tree key of its own choosing. From
/// generation 1 the pair is `kmsfs:tree`, which shares may only Decrypt under (see
/// `crate::tree::share`), and the generation is bound in.
pub fn tree_context(fs_id: &str, generation: u32) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    if generation == 0 {
        c.insert("kmsfs:fs".into(), fs_id.into());
        c.insert("kmsfs:purpose".into(), "tree-config".into());
    } else {
        c.insert("kmsfs:tree".into(), fs_id.into());
        c.insert("kmsfs:purpose".into(), "tree-key".into());
        c.insert("kmsfs:generation".into(), generation.to_string());
    }
    c
}

/// The MAC of a config (all fields but `mac`) under a tree key.
fn config_mac(cfg: &TreeConfig, tree_key: &SecretKey) -> Result<String> {
    let mut c = cfg.clone();
    c.mac = None;
    let body = serde_json::to_vec(&c)?;
    let k = tree_key.derive(cfg.fs_id.as_bytes(), b"kmsfs config mac v1");
    Ok(hex::encode(k.hmac(&[b"kmsfs config v1", &body])))
}

/// Key ARNs for key ids, ARNs or aliases, as the KMS names them.
pub fn key_arns(kms: &dyn Kms, keys: &[String]) -> Result<Vec<String>> {
    Ok(tree_keys(kms, keys)?.0)
}

/// What a tree needs to know of one key: ARN, spec, usage.
fn describe(kms: &dyn Kms, k: &str) -> Result<(String, String, String)> {
    match kms.describe_key(DescribeKeyRequest { key_id: k.into() }) {
        Ok(r) => {
            let m = r.key_metadata;
            // Some KMSs (moto) leave fields out; only a symmetric key may go unnamed.
            let spec = [m.key_spec, m.customer_master_key_spec]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
            let usage = Some(m.key_usage)
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
            Ok((m.arn, spec, usage))
        }
        // A backup host may be allowed GetPublicKey and nothing else.
        Err(e) if e.code == ErrorCode::AccessDeniedException => {
            match kms.get_public_key(GetPublicKeyRequest {
                key_id: k.into(),
                ..Default::default()
            }) {
                Ok(r) => Ok((r.key_id, r.key_spec, r.key_usage)),
                Err(_) => Err(e).with_context(|| format!("key {k}")),
            }
        }
        Err(e) => Err(e).with_context(|| format!("key {k}")),
    }
}

/// The ARNs of a tree's keys (ids, ARNs or aliases), and, when they are RSA
/// ENCRYPT_DECRYPT or ML-KEM ENCAPSULATE_DECAPSULATE keys (an encrypt-only tree), each
/// one's public key (base64 DER). A tree's keys are all symmetric or all public-key: a
/// symmetric tree's guarantees (only a principal allowed Encrypt can make a file) would
/// not survive a public-key key beside them, whose public key anyone can wrap under.
pub fn tree_keys(
    kms: &dyn Kms,
    keys: &[String],
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let mut arns = vec![];
    let mut public = BTreeMap::new();
    for k in keys {
        let (arn, spec, usage) = describe(kms, k)?;
        match (spec.as_str(), usage.as_str()) {
            ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT") => {}
            ("RSA_2048" | "RSA_3072" | "RSA_4096", "ENCRYPT_DECRYPT")
            | ("ML_KEM_512" | "ML_KEM_768" | "ML_KEM_1024", "ENCAPSULATE_DECAPSULATE") => {
                let der = fetch_public_key(kms, &arn)?;
                public.insert(
                    arn.clone(),
                    base64::engine::general_purpose::STANDARD.encode(der),
                );
            }
            _ => bail!(
                "key {arn} is a {spec} {usage} key; a tree needs symmetric (SYMMETRIC_DEFAULT), RSA ENCRYPT_DECRYPT or ML-KEM ENCAPSULATE_DECAPSULATE keys"
            ),
        }
        arns.push(arn);
    }
    if !public.is_empty() && public.len() != arns.len() {
        bail!("a tree's keys must be all symmetric or all public-key (RSA, ML-KEM): a public key lets anyone add files a symmetric tree would trust");
    }
    Ok((arns, public))
}

/// The DER public key of RSA or ML-KEM key `arn` as its KMS gives it, checked to be usable.
fn fetch_public_key(kms: &dyn Kms, arn: &str) -> Result<Vec<u8>> {
    let r = kms
        .get_public_key(GetPublicKeyRequest {
            key_id: arn.into(),
            ..Default::default()
        })
        .with_context(|| format!("key {arn}: cannot get its public key"))?;
    let rsa = r.key_usage == "ENCRYPT_DECRYPT"
        && r.encryption_algorithms
            .iter()
            .any(|a| a == public::ALGORITHM);
    let kem = r.key_usage == "ENCAPSULATE_DECAPSULATE"
        && r.encapsulation_algorithms
            .iter()
            .any(|a| a == public::KEM_ALGORITHM);
    if !rsa && !kem {
        bail!(
            "key {arn} can neither encrypt with {} nor encapsulate with {}",
            public::ALGORITHM,
            public::KEM_ALGORITHM
        );
    }
    public::parse(&r.public_key).map_err(|e| crate::error::err!("key {arn}: {e}"))?;
    Ok(r.public_key)
}

/// An encrypt-only tree's pinned public keys, each checked against its KMS: whoever
/// writes the tree could otherwise swap in a public key of their own and read every new
/// file. (There is no MAC to check instead: anyone can wrap a key under a public key.)
fn check_public_keys(kms: &dyn Kms, cfg: &TreeConfig, name: &str) -> Result<()> {
    for (arn, b64) in &cfg.public_keys {
        let have = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| crate::error::err!("{name}: the public key of {arn} is not base64"))?;
        let want = fetch_public_key(kms, arn).map_err(|e| e.context(name))?;
        if have != want {
            bail!(
                "{name}: kmsfs.json holds a public key for {arn} that is not the KMS's: someone swapped it (new files would be readable by them); refusing"
            );
        }
    }
    Ok(())
}

fn same_keys(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// Loads a tree's config and decides whether to trust it (see the module doc). `expect`
/// are the keys the caller requires (`--expect-key`; empty: the pin, or first use).
pub fn open_tree(backing: &Path, kms_arg: Option<&str>, expect: &[String]) -> Result<TrustedTree> {
    let cfg = TreeConfig::load(backing)?;
    let here = std::fs::canonicalize(backing)?;
    let h = here.display().to_string();
    let known = load_known(&known_trees_path()?)?;
    if expect.is_empty() {
        if let Some((id, k)) = known
            .trees
            .iter()
            .find(|(id, k)| **id != cfg.fs_id && k.paths.contains(&h))
        {
            bail!(
                "{h}: this directory held the tree {id} (keys [{}]) when this host last used it; it now holds {} (keys [{}]): the tree was replaced; refusing. If that is expected, mount it once with --expect-key, or run `kmsfs init` again",
                k.keys.join(", "),
                cfg.fs_id,
                cfg.keys.join(", ")
            );
        }
    }
    let pin = known.trees.get(&cfg.fs_id).cloned();
    if let Some(p) = &pin {
        let name = format!("{} (fs id {})", backing.display(), cfg.fs_id);
        if cfg.version < p.version {
            bail!(
                "{name}: kmsfs.json says format {}, but this host has seen format {} for it: a downgrade (names would be stored in the clear); refusing",
                cfg.version,
                p.version
            );
        }
        if cfg.generation < p.generation {
            bail!(
                "{name}: kmsfs.json is of tree-key generation {}, but this host has seen generation {}: an older config was put back (a revoked principal may hold its tree key); refusing",
                cfg.generation,
                p.generation
            );
        }
    }
    let explicit = KmsLocation::named(kms_arg);
    let default = KmsLocation::resolve(None).ok().map(|l| l.describe());
    let location = match (&explicit, &pin, &cfg.kms) {
        (Some(e), _, _) => KmsLocation::parse(e)?,
        (None, Some(p), _) => KmsLocation::parse(&p.kms)?,
        (None, None, Some(h)) if Some(h) != default.as_ref() => bail!(
            "{}: the tree names the KMS {h}, which this host has not used for it; to use it, name it yourself with --kms {h} (or KMSFS_KMS)",
            backing.display()
        ),
        _ => KmsLocation::resolve(None)?,
    };
    let loc_name = location.describe();
    let kms = location.open(false)?;
    let name = || format!("{} (fs id {})", backing.display(), cfg.fs_id);
    let trusted: Vec<String> = if !expect.is_empty() {
        let want = key_arns(&*kms, expect)?;
        if let Some(k) = cfg.keys.iter().find(|k| !want.contains(k)) {
            bail!(
                "{}: the tree wraps under {k}, which is not one of the expected keys ({}); refusing",
                name(),
                want.join(", ")
            );
        }
        want
    } else if let Some(p) = &pin {
        if !same_keys(&p.keys, &cfg.keys) {
            bail!(
                "{}: the tree now names the keys [{}], but this host pinned [{}] for it on {}: kmsfs.json was changed (or the tree replaced) without this host; refusing. If the change is yours, run the key change on this host (kmsfs keys / rotate --to), or remove the entry from {}",
                name(),
                cfg.keys.join(", "),
                p.keys.join(", "),
                p.first_seen,
                known_trees_path()?.display()
            );
        }
        p.keys.clone()
    } else {
        cfg.keys.clone()
    };
    let tree_key = match &cfg.mac {
        // An encrypt-only tree: its keys are checked by the pin (or --expect-key), its
        // public keys against the KMS.
        None if cfg.public_key_tree() => {
            check_public_keys(&*kms, &cfg, &name())?;
            None
        }
        None if pin.as_ref().is_some_and(|p| p.authenticated) => bail!(
            "{}: kmsfs.json lost its MAC (this host has seen it authenticated): someone stripped it; refusing",
            name()
        ),
        None => {
            tracing::warn!(
                "{}: kmsfs.json has no MAC (made before configs were authenticated); the next `kmsfs rotate` or key change adds one",
                name()
            );
            None
        }
        Some(mac) => {
            let tk = unwrap_tree_key(&*kms, &cfg.fs_id, cfg.generation, &cfg.tree_key, &trusted)
                .map_err(|e| e.context(name()))?;
            let want = config_mac(&cfg, &tk)?;
            if !subtle_eq(want.as_bytes(), mac.as_bytes()) {
                bail!(
                    "{}: kmsfs.json was changed by someone without the tree key (MAC mismatch); refusing",
                    name()
                );
            }
            Some(tk)
        }
    };
    // New, moved, (only with --expect-key, which wins) re-keyed, or moved on to a newer
    // format or tree-key generation: the pin follows.
    if pin.as_ref().is_none_or(|p| {
        p.kms != loc_name
            || !p.paths.contains(&h)
            || !same_keys(&p.keys, &cfg.keys)
            || p.version < cfg.version
            || p.generation < cfg.generation
    }) {
        if let Err(e) = write_pin(&cfg, &loc_name, Some(&here), tree_key.is_some()) {
            tracing::warn!(
                "cannot pin {} in {:?}: {e:#}",
                name(),
                known_trees_path().ok()
            );
        }
    }
    // Writers (the keys' users, read-write shares) unwrap the write key; a read-only
    // share may not (AccessDenied), and is a reader.
    let write_key = match (&tree_key, cfg.generation, cfg.write_key.is_empty()) {
        (Some(_), g, false) if g > 0 => {
            unwrap_write_key(&*kms, &cfg.fs_id, g, &cfg.write_key, &trusted)
                .map_err(|e| e.context(name()))?
        }
        _ => None,
    };
    Ok(TrustedTree {
        cfg,
        kms,
        location: loc_name,
        tree_key,
        write_key,
    })
}

/// The encryption context of the write key's wraps (generation 1 on): a pair no file
/// key or tree key carries, so that a share may Decrypt under it only if it is a
/// read-write share (`crate::tree::share`).
pub fn write_context(fs_id: &str, generation: u32) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("kmsfs:tree-w".into(), fs_id.into());
    c.insert("kmsfs:purpose".into(), "tree-write-key".into());
    c.insert("kmsfs:generation".into(), generation.to_string());
    c
}

/// The write key of generation `generation`, or None if every trusted key refused this
/// principal (AccessDenied: a read-only share).
fn unwrap_write_key(
    kms: &dyn Kms,
    fs_id: &str,
    generation: u32,
    wraps: &[TreeKeyWrap],
    trusted: &[String],
) -> Result<Option<SecretKey>> {
    match unwrap_with(kms, &write_context(fs_id, generation), wraps, trusted)? {
        Ok(k) => Ok(Some(k)),
        Err((true, _)) => Ok(None),
        Err((false, errors)) => {
            bail!("cannot unwrap the tree's write key (generation {generation}): {errors}")
        }
    }
}

/// The tree key of generation `generation` from `wraps`, unwrapped only through the
/// `trusted` keys.
fn unwrap_tree_key(
    kms: &dyn Kms,
    fs_id: &str,
    generation: u32,
    wraps: &[TreeKeyWrap],
    trusted: &[String],
) -> Result<SecretKey> {
    match unwrap_with(kms, &tree_context(fs_id, generation), wraps, trusted)? {
        Ok(k) => Ok(k),
        Err((_, errors)) => bail!(
            "cannot unwrap the tree key (generation {generation}) under a trusted key ({}){}",
            trusted.join(", "),
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors}")
            }
        ),
    }
}

/// A 32-byte key from the first of `wraps` (under a `trusted` key only) that decrypts
/// with context `ctx`; else whether every refusal was AccessDenied, and the errors.
fn unwrap_with(
    kms: &dyn Kms,
    ctx: &EncryptionContext,
    wraps: &[TreeKeyWrap],
    trusted: &[String],
) -> Result<std::result::Result<SecretKey, (bool, String)>> {
    let mut errors = vec![];
    let mut denied = true;
    for w in wraps.iter().filter(|w| trusted.contains(&w.key)) {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&w.blob)
            .map_err(|_| crate::error::err!("a key wrap in kmsfs.json is not base64"))?;
        match kms.decrypt(DecryptRequest {
            ciphertext_blob: blob,
            encryption_context: Some(ctx.clone()),
            key_id: Some(w.key.clone()),
            ..Default::default()
        }) {
            Ok(r) => match SecretKey::from_slice(&r.plaintext.0) {
                Some(k) => return Ok(Ok(k)),
                None => {
                    denied = false;
                    errors.push(format!("{}: not a 32-byte key", w.key));
                }
            },
            Err(e) => {
                denied &= e.code == ErrorCode::AccessDeniedException;
                errors.push(format!("{}: {e}", w.key));
            }
        }
    }
    Ok(Err((denied, errors.join("; "))))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TrustedTree {
    /// A new tree's config, sealed: a fresh tree key wrapped under every key, the MAC,
    /// and the pin.
    pub fn create(cfg: TreeConfig, kms: Arc<dyn Kms>, location: String) -> Result<TrustedTree> {
        let mut t = TrustedTree {
            cfg,
            kms,
            location,
            tree_key: None,
            write_key: None,
        };
        t.seal()?;
        Ok(t)
    }

    /// Re-authenticates the config after a change of its fields (keys): the tree key (made
    /// if the tree had none) is wrapped under every current key, the MAC recomputed, and
    /// this host's pin follows. Call `save` to write it.
    pub fn seal(&mut self) -> Result<()> {
        if self.cfg.public_key_tree() {
            // No tree key: anyone could wrap one under a public key, so a MAC from it
            // would prove nothing (see `open_tree`).
            self.cfg.tree_key.clear();
            self.cfg.mac = None;
            self.tree_key = None;
            return Ok(());
        }
        let tk = self.tree_key.take().unwrap_or_else(SecretKey::random);
        let wraps = self.wrap_all(
            &tk,
            &tree_context(&self.cfg.fs_id, self.cfg.generation),
            "tree key",
        )?;
        self.cfg.tree_key = wraps;
        if self.cfg.generation > 0 {
            let wk = match self.write_key.take() {
                Some(k) => k,
                None if self.cfg.write_key.is_empty() => SecretKey::random(),
                None => bail!(
                    "this host may not unwrap the tree's write key (a read-only share): it cannot change the tree's config"
                ),
            };
            self.cfg.write_key = self.wrap_all(
                &wk,
                &write_context(&self.cfg.fs_id, self.cfg.generation),
                "write key",
            )?;
            self.write_key = Some(wk);
        }
        self.cfg.mac = Some(config_mac(&self.cfg, &tk)?);
        self.tree_key = Some(tk);
        Ok(())
    }

    /// `key` wrapped under every key of the tree, with context `ctx`.
    fn wrap_all(
        &self,
        key: &SecretKey,
        ctx: &EncryptionContext,
        what: &str,
    ) -> Result<Vec<TreeKeyWrap>> {
        let mut wraps = vec![];
        for k in &self.cfg.keys {
            let r = self
                .kms
                .encrypt(EncryptRequest {
                    key_id: k.clone(),
                    plaintext: Secret(key.as_bytes().to_vec()),
                    encryption_context: Some(ctx.clone()),
                    ..Default::default()
                })
                .map_err(|e| crate::error::err!("cannot wrap the {what} under {k}: {e}"))?;
            wraps.push(TreeKeyWrap {
                key: k.clone(),
                blob: base64::engine::general_purpose::STANDARD.encode(&r.ciphertext_blob),
            });
        }
        Ok(wraps)
    }

    /// Writes the (sealed) config and pins it on this host.
    pub fn save(&self, backing: &Path) -> Result<()> {
        self.cfg.save(backing)?;
        let here = std::fs::canonicalize(backing).ok();
        // The tree is written either way; without a pin this host trusts it on next use.
        if let Err(e) = write_pin(
            &self.cfg,
            &self.location,
            here.as_deref(),
            self.cfg.mac.is_some(),
        ) {
            eprintln!(
                "kmsfs: warning: cannot record the tree in {:?}: {e:#}",
                known_trees_path().ok()
            );
        }
        Ok(())
    }

    /// Whether the config was authenticated: by its MAC, or for an encrypt-only tree by
    /// the KMS's public keys (older trees have no MAC until their next change).
    pub fn authenticated(&self) -> bool {
        self.tree_key.is_some() || self.cfg.public_key_tree()
    }

    /// The key names are sealed under (format 2 trees), from the tree key.
    pub fn name_key(&self) -> Option<crate::format::names::NameKey> {
        let tk = self
            .tree_key
            .as_ref()
            .filter(|_| self.cfg.encrypted_names())?;
        Some(crate::format::names::NameKey::derive(tk, &self.cfg.fs_id))
    }

    /// Refuses a tree whose move to a new tree-key generation is unfinished: some of its
    /// names are still under the old key.
    pub fn check_settled(&self) -> Result<()> {
        if let Some(p) = &self.cfg.previous {
            bail!(
                "{}: its move from tree-key generation {} to {} did not finish (interrupted?); run `kmsfs tree-key rotate` on it again to finish it",
                self.cfg.fs_id,
                p.generation,
                self.cfg.generation
            );
        }
        Ok(())
    }

    /// The envelope of this tree's files (with their authentication key).
    pub fn into_envelope(self) -> crate::envelope::Envelope {
        let auth = self.auth_key();
        let reader = self.is_reader();
        crate::envelope::Envelope::new(self.kms, self.cfg).with_auth(auth, reader)
    }

    /// The key files are authenticated under (trees of generation 1 on; not
    /// encrypt-only trees, which have no tree key).
    pub fn auth_key(&self) -> Option<crate::format::auth::AuthKey> {
        let tk = self
            .write_key
            .as_ref()
            .filter(|_| self.cfg.generation > 0)?;
        Some(crate::format::auth::AuthKey::derive(
            tk,
            &self.cfg.fs_id,
            self.cfg.generation,
        ))
    }

    /// The key directories are bound to their place under (format 2, generation 1 on).
    pub fn place_key(&self) -> Option<crate::format::auth::PlaceKey> {
        let tk = self
            .write_key
            .as_ref()
            .filter(|_| self.cfg.generation > 0 && self.cfg.encrypted_names())?;
        Some(crate::format::auth::PlaceKey::derive(
            tk,
            &self.cfg.fs_id,
            self.cfg.generation,
        ))
    }

    /// Starts the move to a new tree-key generation: a fresh tree key, wrapped under
    /// every key, the old one kept in `previous` until `finish_generation`. Call `save`
    /// to write it. A move already under way is continued instead (nothing drawn).
    pub fn begin_generation(&mut self) -> Result<()> {
        if self.cfg.public_key_tree() {
            bail!("an encrypt-only tree has no tree key (its files are wrapped under public keys)");
        }
        if self.cfg.previous.is_some() {
            return Ok(());
        }
        self.cfg.previous = Some(crate::format::OldGeneration {
            generation: self.cfg.generation,
            tree_key: std::mem::take(&mut self.cfg.tree_key),
            write_key: std::mem::take(&mut self.cfg.write_key),
        });
        self.cfg.generation += 1;
        self.tree_key = None;
        self.write_key = None;
        self.seal()
    }

    /// A host that may read the tree but not write it (a read-only share, generation 1
    /// on): it cannot check what only writers authenticate (see docs/THREAT-MODEL.md).
    pub fn is_reader(&self) -> bool {
        self.cfg.generation > 0 && self.tree_key.is_some() && self.write_key.is_none()
    }

    /// The write key of the generation being left (during a move), if it had one.
    pub fn previous_write_key(&self) -> Result<Option<SecretKey>> {
        match &self.cfg.previous {
            Some(p) if !p.write_key.is_empty() => unwrap_write_key(
                &*self.kms,
                &self.cfg.fs_id,
                p.generation,
                &p.write_key,
                &self.cfg.keys,
            ),
            _ => Ok(None),
        }
    }

    /// The tree key of the generation being left (during a move).
    pub fn previous_tree_key(&self) -> Result<Option<SecretKey>> {
        let Some(p) = &self.cfg.previous else {
            return Ok(None);
        };
        unwrap_tree_key(
            &*self.kms,
            &self.cfg.fs_id,
            p.generation,
            &p.tree_key,
            &self.cfg.keys,
        )
        .map(Some)
    }

    /// The name key of a tree key of this tree (format 2).
    pub fn name_key_of(&self, tk: &SecretKey) -> Option<crate::format::names::NameKey> {
        self.cfg
            .encrypted_names()
            .then(|| crate::format::names::NameKey::derive(tk, &self.cfg.fs_id))
    }

    /// The move to the new generation is done: the old tree key goes. Call `save`.
    pub fn finish_generation(&mut self) -> Result<()> {
        self.cfg.previous = None;
        self.seal()
    }

    /// Makes `keys` (ids, ARNs or aliases) the tree's keys, with their public keys if
    /// RSA, and re-seals. Call `save` to write it.
    pub fn set_keys(&mut self, keys: &[String]) -> Result<()> {
        let (arns, public) = tree_keys(&*self.kms, keys)?;
        if public.is_empty() != self.cfg.public_keys.is_empty() && !self.cfg.keys.is_empty() {
            bail!(
                "a tree's keys must stay all symmetric or all RSA (this tree's are {})",
                if self.cfg.public_key_tree() {
                    "RSA"
                } else {
                    "symmetric"
                }
            );
        }
        self.cfg.keys = arns;
        self.cfg.public_keys = public;
        self.seal()
    }
}
