//! `kmsfs init`: a new tree, its keys chosen (or the default key made), its config sealed.

use std::path::Path;
use std::sync::Arc;

use crate::error::{fail, Context, Result};
use crate::format::{chunk_shift, TreeConfig, CONFIG_FILE};
use crate::kms::{
    CreateAliasRequest, CreateKeyRequest, DescribeKeyRequest, ErrorCode, Kms, KmsLocation,
};
use crate::trust::TrustedTree;

/// The alias `kmsfs init` uses (and creates on first use) when no key is given.
pub const DEFAULT_ALIAS: &str = "alias/kmsfs-default";

/// What `init` made.
pub struct Initialised {
    /// The new tree's config.
    pub config: TreeConfig,
    /// The default key, if `init` had to create it.
    pub created_key: Option<String>,
}

/// Makes `backing` (new, or an empty directory) a tree whose file keys are wrapped under
/// `keys` (key ids, ARNs or aliases; the default key if none) in the KMS at `location`,
/// with names encrypted (format 2) if `encrypt_names` and the keys allow it.
/// The target is checked before the KMS is touched, so a failed init creates nothing.
pub fn init(
    location: &KmsLocation,
    backing: &Path,
    keys: &[String],
    chunk_size: u32,
    encrypt_names: bool,
) -> Result<Initialised> {
    chunk_shift(chunk_size).map_err(|e| e.context("--chunk-size"))?;
    if backing.join(CONFIG_FILE).exists() {
        fail!(
            "{} is already a kmsfs tree ({} exists)",
            backing.display(),
            CONFIG_FILE
        );
    }
    let existed = backing.exists();
    if existed {
        if !backing.is_dir() {
            fail!("{} exists and is not a directory", backing.display());
        }
        if std::fs::read_dir(backing)?.next().is_some() {
            fail!(
                "{} is not empty; kmsfs init needs a new or empty directory",
                backing.display()
            );
        }
    } else if let Some(parent) = backing.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            fail!("parent directory {} does not exist", parent.display());
        }
    }
    let kms = location.open(true)?;
    let (arns, public_keys, created_key) = if keys.is_empty() {
        let (arn, created) = default_key(&*kms)?;
        (
            vec![arn.clone()],
            Default::default(),
            created.then_some(arn),
        )
    } else {
        let (arns, public_keys) = crate::trust::tree_keys(&*kms, keys)?;
        TreeConfig::check_new_keys(&arns)?;
        (arns, public_keys, None)
    };
    let mut cfg = TreeConfig::new(chunk_size, arns, Some(location.describe()));
    cfg.public_keys = public_keys;
    // Names are sealed under the tree key, which a tree of RSA keys does not have.
    if encrypt_names && !cfg.public_key_tree() {
        cfg = cfg.with_encrypted_names();
    }
    // A tree with a tree key starts at generation 1: its tree key is wrapped under a
    // context shares may not Encrypt under, and every file carries its authentication.
    if !cfg.public_key_tree() {
        cfg.generation = 1;
    }
    let t = TrustedTree::create(cfg, Arc::clone(&kms), location.describe())?;
    if !existed {
        std::fs::create_dir(backing)
            .with_context(|| format!("cannot create {}", backing.display()))?;
    }
    let r = t.save(backing).and_then(|()| {
        if t.cfg.encrypted_names() {
            let id = crate::format::names::new_dir_id();
            rustix::fs::setxattr(
                backing,
                crate::format::names::DIR_ID_XATTR,
                &id,
                rustix::fs::XattrFlags::CREATE,
            )
            .with_context(|| format!("cannot give {} its directory id", backing.display()))?;
        }
        Ok(())
    });
    if r.is_err() && !existed {
        let _ = std::fs::remove_dir_all(backing);
    }
    r?;
    Ok(Initialised {
        config: t.cfg,
        created_key,
    })
}

/// The ARN of the default key (`DEFAULT_ALIAS`), created if missing; and whether it was.
pub fn default_key(kms: &dyn Kms) -> Result<(String, bool)> {
    match kms.describe_key(DescribeKeyRequest {
        key_id: DEFAULT_ALIAS.into(),
    }) {
        Ok(r) => Ok((r.key_metadata.arn, false)),
        Err(e) if e.code == ErrorCode::NotFoundException => {
            let md = kms
                .create_key(CreateKeyRequest {
                    description: Some("kmsfs default key".into()),
                    ..Default::default()
                })?
                .key_metadata;
            kms.create_alias(CreateAliasRequest {
                alias_name: DEFAULT_ALIAS.into(),
                target_key_id: md.key_id.clone(),
            })?;
            Ok((md.arn, true))
        }
        Err(e) => Err(e.into()),
    }
}
