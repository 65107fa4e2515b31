//! `kmsfs.json`: the per-tree config (load, validate, save), and the rules of a tree's
//! key set.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{chunk_shift, CONFIG_FILE, MAX_WRAPS, NAMES_AES_SIV, TREE_V1, TREE_V2};
use crate::error::{err, fail, Result};

/// `kmsfs.json` at the root of a backing tree. Contains no secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TreeConfig {
    /// Always "kmsfs".
    pub format: String,
    /// Tree format: 1 (plaintext names) or 2 (encrypted names).
    pub version: u8,
    /// Random UUID; bound into every wrap's encryption context and every header MAC.
    pub fs_id: String,
    /// Plaintext bytes per chunk (a power of two, 4 KiB..1 MiB).
    pub chunk_size: u32,
    /// Always "AES-256-GCM".
    pub cipher: String,
    /// Key ARNs each new DEK is wrapped under, in unwrap-preference order.
    pub keys: Vec<String>,
    /// Where the KMS was when the tree was created (a hint; the mount's --kms wins).
    #[serde(default)]
    pub kms: Option<String>,
    /// "plaintext" (format 1) or "aes-siv" (format 2: names sealed under the tree key).
    pub filenames: String,
    /// For a tree of RSA keys (an encrypt-only tree): each key's public key, DER
    /// SubjectPublicKeyInfo in base64, fetched once with GetPublicKey. New file keys are
    /// wrapped with it locally; every host checks it against the KMS before use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public_keys: BTreeMap<String, String>,
    /// The tree key, wrapped under each key of `keys` (see `crate::trust`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tree_key: Vec<TreeKeyWrap>,
    /// The tree key's generation: a revoke (`kmsfs tree-key rotate`) draws a new tree
    /// key and moves every name, node record and file authentication to it. 0: a tree
    /// made before generations (its tree-key wraps carry the old context, and files have
    /// no `user.kmsfs.auth`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Generation 1 on: the tree's *write key* of this generation, wrapped like the tree
    /// key but in a context only writers may Decrypt under (`kmsfs:tree-w`). It
    /// authenticates what only writers make: files, node records, directory places. A
    /// read-only grantee holds the tree key (names) but never this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_key: Vec<TreeKeyWrap>,
    /// While a move to a new generation is under way (interrupted, to be finished by
    /// running it again): the previous generation's tree key. A mount refuses the tree
    /// until it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<OldGeneration>,
    /// HMAC-SHA256 (hex) over every other field, keyed from the tree key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The tree key of the generation a move is leaving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldGeneration {
    /// Its number.
    pub generation: u32,
    /// Its wraps.
    pub tree_key: Vec<TreeKeyWrap>,
    /// Its write key's wraps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_key: Vec<TreeKeyWrap>,
}

/// One wrapped copy of the tree key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeKeyWrap {
    /// Key ARN it is wrapped under.
    pub key: String,
    /// KMS ciphertext blob, base64.
    pub blob: String,
}

impl TreeConfig {
    /// A new tree's config: fresh id, plaintext names, not yet authenticated.
    pub fn new(chunk_size: u32, keys: Vec<String>, kms: Option<String>) -> TreeConfig {
        TreeConfig {
            format: "kmsfs".into(),
            version: TREE_V1,
            fs_id: uuid::Uuid::new_v4().to_string(),
            chunk_size,
            cipher: "AES-256-GCM".into(),
            keys,
            kms,
            filenames: "plaintext".into(),
            public_keys: BTreeMap::new(),
            tree_key: vec![],
            generation: 0,
            write_key: vec![],
            previous: None,
            mac: None,
        }
    }

    /// Reads and validates `BACKING/kmsfs.json` (bounded to 64 KiB).
    pub fn load(backing: &Path) -> crate::Result<TreeConfig> {
        let path = backing.join(CONFIG_FILE);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > 64 * 1024) {
            fail!("{}: larger than 64 KiB; not a kmsfs config", path.display());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err!(
                    "{} is not a kmsfs tree ({} missing); run `kmsfs init` first",
                    backing.display(),
                    CONFIG_FILE
                )
            } else {
                err!("cannot read {}: {e}", path.display())
            }
        })?;
        TreeConfig::parse(&text).map_err(|e| e.context(path.display()))
    }

    /// Parses and validates the text of a `kmsfs.json` (hostile input: bounded, strict).
    pub fn parse(text: &str) -> Result<TreeConfig> {
        if text.len() > 64 * 1024 {
            fail!("larger than 64 KiB");
        }
        let cfg: TreeConfig =
            serde_json::from_str(text).map_err(|e| err!("invalid config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field (a config is hostile input until authenticated).
    pub fn validate(&self) -> Result<()> {
        if self.format != "kmsfs" {
            fail!("format is {:?}, expected \"kmsfs\"", self.format);
        }
        match (self.version, self.filenames.as_str()) {
            (TREE_V1, "plaintext") => {}
            // Names are sealed under a key from the tree key: a MAC'd symmetric tree.
            (TREE_V2, NAMES_AES_SIV) if self.mac.is_none() => {
                fail!("kmsfs.json lost its MAC (a format 2 tree always has one): someone stripped it; refusing")
            }
            (TREE_V2, NAMES_AES_SIV) if !self.public_key_tree() => {}
            (TREE_V1 | TREE_V2, f) => fail!(
                "format version {} with filename mode {f:?} (and {} MAC) is not a valid combination",
                self.version,
                if self.mac.is_some() { "a" } else { "no" }
            ),
            (v, _) => fail!("unsupported format version {v}"),
        }
        chunk_shift(self.chunk_size)?;
        if self.cipher != "AES-256-GCM" {
            fail!("unsupported cipher {:?}", self.cipher);
        }
        if let Some(p) = &self.previous {
            if p.generation >= self.generation
                || p.tree_key.len() > MAX_WRAPS
                || p.write_key.len() > MAX_WRAPS
            {
                fail!(
                    "previous tree-key generation {} is not below {}",
                    p.generation,
                    self.generation
                );
            }
        }
        let wraps = self.tree_key.iter().chain(&self.write_key).chain(
            self.previous
                .iter()
                .flat_map(|p| p.tree_key.iter().chain(&p.write_key)),
        );
        if self.tree_key.len() > MAX_WRAPS
            || self.write_key.len() > MAX_WRAPS
            || wraps
                .clone()
                .any(|w| w.key.len() > 2048 || w.blob.len() > 16 * 1024)
            || self.keys.iter().any(|k| k.len() > 2048)
            || self
                .tree_key
                .iter()
                .any(|w| w.key.len() > 2048 || w.blob.len() > 16 * 1024)
        {
            fail!("oversized key or tree key entry");
        }
        if self.keys.is_empty() || self.keys.len() > MAX_WRAPS {
            fail!("needs 1..={MAX_WRAPS} keys, has {}", self.keys.len());
        }
        // All keys RSA (public_keys names each) or none: see `crate::trust`.
        if !self.public_keys.is_empty() {
            if self.public_keys.len() != self.keys.len()
                || self.keys.iter().any(|k| !self.public_keys.contains_key(k))
            {
                fail!("public_keys must name exactly the tree's keys");
            }
            if self.public_keys.values().any(|v| v.len() > 4096) {
                fail!("oversized public key");
            }
            if !self.tree_key.is_empty()
                || !self.write_key.is_empty()
                || self.mac.is_some()
                || self.generation != 0
                || self.previous.is_some()
            {
                fail!("a tree of RSA keys has no tree key and no MAC");
            }
        }
        self.fs_id_bytes()?;
        Ok(())
    }

    /// Writes the config as `BACKING/kmsfs.json` (temp file, fsync, rename, fsync of the
    /// directory), after checking that the backing filesystem holds user xattrs.
    pub fn save(&self, backing: &Path) -> Result<()> {
        let tmp = backing.join(format!(".{CONFIG_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| err!("cannot write in {}: {e}", backing.display()))?;
        // Headers live in user xattrs: refuse a backing filesystem that cannot hold them.
        if let Err(e) = rustix::fs::fsetxattr(
            &f,
            "user.kmsfs.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        ) {
            let _ = std::fs::remove_file(&tmp);
            fail!(
                "{} does not support user extended attributes ({e}); kmsfs stores file headers in them",
                backing.display()
            );
        }
        let _ = rustix::fs::fremovexattr(&f, "user.kmsfs.probe");
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, backing.join(CONFIG_FILE))?;
        std::fs::File::open(backing)?.sync_all()?;
        Ok(())
    }

    /// Adds `arn` to the tree's keys (a recovery key); `tree` names the tree in errors.
    pub fn add_key(&mut self, arn: &str, tree: &Path) -> Result<()> {
        if self.keys.iter().any(|k| k == arn) {
            fail!("{arn} is already one of {}'s keys", tree.display());
        }
        if self.keys.len() >= MAX_WRAPS {
            fail!("a tree can have at most {MAX_WRAPS} keys");
        }
        self.keys.push(arn.to_string());
        Ok(())
    }

    /// Removes `arn` from the tree's keys; the last key cannot go.
    pub fn remove_key(&mut self, arn: &str, tree: &Path) -> Result<()> {
        if !self.keys.iter().any(|k| k == arn) {
            fail!("{arn} is not one of {}'s keys", tree.display());
        }
        if self.keys.len() == 1 {
            fail!(
                "{arn} is {}'s only key; add another first (or use `kmsfs rotate --to`)",
                tree.display()
            );
        }
        self.keys.retain(|k| k != arn);
        Ok(())
    }

    /// Checks the key set of a new tree: 1..=MAX_WRAPS keys, none twice.
    pub fn check_new_keys(keys: &[String]) -> Result<()> {
        if keys.len() > MAX_WRAPS {
            fail!("a tree can have at most {MAX_WRAPS} keys");
        }
        if (1..keys.len()).any(|i| keys[..i].contains(&keys[i])) {
            fail!("the same key is given twice");
        }
        Ok(())
    }

    /// Makes a new tree's config format 2: names encrypted.
    pub fn with_encrypted_names(mut self) -> TreeConfig {
        self.version = TREE_V2;
        self.filenames = NAMES_AES_SIV.into();
        self
    }

    /// Are names encrypted (format 2)?
    pub fn encrypted_names(&self) -> bool {
        self.version == TREE_V2
    }

    /// Are the tree's keys RSA keys whose public keys wrap file keys here (an
    /// encrypt-only tree)?
    pub fn public_key_tree(&self) -> bool {
        !self.public_keys.is_empty()
    }

    /// The tree id as 16 bytes.
    pub fn fs_id_bytes(&self) -> Result<[u8; 16]> {
        uuid::Uuid::parse_str(&self.fs_id)
            .map(|u| *u.as_bytes())
            .map_err(|_| err!("invalid fs_id {:?}", self.fs_id))
    }
}
