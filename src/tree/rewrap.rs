//! `rotate` and `keys add|remove`: every header re-wrapped through one descriptor.

use std::path::Path;

use super::{for_each_file, walk_files, FileResult, Summary, TreeRoot};
use crate::envelope::{public, unwrap_dek, wrap_context};
use crate::error::{err, fail, Result};
use crate::format::{Geometry, Header, TreeConfig, Wrap};
use crate::kms::{DescribeKeyRequest, Kms, ReEncryptRequest};
use crate::trust::TrustedTree;

/// Headers re-wrapped at once by default: each mostly waits on the KMS (the embedded
/// KMS's audit fsync, amortised over everything in flight by its group commit, or a
/// remote KMS's round trip), so many more than cores.
pub const REWRAP_JOBS: usize = 32;

/// Re-wraps every header so that it holds exactly one copy per key in `targets`, each
/// under that key's current version, using ReEncrypt (the DEK never leaves the KMS).
/// Only the header xattr is replaced (XATTR_REPLACE); no data byte is read or written.
/// Idempotent: files already in that state are skipped, so a killed run just resumes.
pub fn rewrap(
    backing: &Path,
    cfg: &TreeConfig,
    kms: &dyn Kms,
    targets: &[String],
    jobs: usize,
    show_progress: bool,
) -> Result<Summary> {
    // (ARN, current material id) of every target key, looked up once.
    let mut current = vec![];
    for t in targets {
        let md = kms
            .describe_key(DescribeKeyRequest { key_id: t.clone() })
            .map_err(|e| err!("key {t}: {e}"))?
            .key_metadata;
        if md.key_state != "Enabled" {
            fail!("key {} is {}: cannot wrap under it", md.arn, md.key_state);
        }
        // RSA keys have no versions: their wraps (made here) carry no material id.
        let material = if cfg.public_key_tree() {
            String::new()
        } else {
            md.current_key_material_id.unwrap_or_default()
        };
        current.push((md.arn, material));
    }
    // The whole walk first, sorted: measured faster at 1,000,000 files than re-wrapping
    // files as a walker thread finds them (35-40 s against 44-46 s, interleaved runs,
    // bench/results/2026-12-05-rotate-1m.md): the walker starved among the workers.
    let files = walk_files(backing, Some(&super::TreeNames::for_walk(cfg)))?;
    let root = TreeRoot::open(backing)?;
    Ok(for_each_file(
        files,
        jobs,
        "re-wrapping",
        show_progress,
        |p| match rewrap_file(&root, p, cfg, kms, &current) {
            Ok(true) => FileResult::Changed,
            Ok(false) => FileResult::Skipped,
            Err(e) => FileResult::Failed(e.to_string()),
        },
    ))
}

/// Re-wraps one file through one descriptor: the header read is the header replaced, so a
/// save-by-rename racing the rotation can never receive another file's header.
fn rewrap_file(
    root: &TreeRoot,
    path: &Path,
    cfg: &TreeConfig,
    kms: &dyn Kms,
    current: &[(String, String)],
) -> Result<bool> {
    let file = match root.open_file(path, rustix::fs::OFlags::RDONLY) {
        Ok(f) => f,
        // Gone since the walk (renamed over or deleted): nothing left to re-wrap.
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => fail!("cannot open: {e}"),
    };
    let h = crate::backing::read_header_checked(&file, Geometry::new(cfg.chunk_size))?;
    let ctx = wrap_context(&cfg.fs_id, &h.file_id);
    let mut wraps = Vec::with_capacity(current.len());
    for (arn, material) in current {
        if let Some(w) = h
            .wraps
            .iter()
            .find(|w| &w.key_arn == arn && &w.material_id == material)
        {
            wraps.push(w.clone());
            continue;
        }
        if cfg.public_key_tree() {
            wraps.push(public_wrap(cfg, kms, &h, arn)?);
            continue;
        }
        // Prefer the copy under the same key (a rotation), then any other copy.
        let mut sources: Vec<&Wrap> = h.wraps.iter().filter(|w| &w.key_arn == arn).collect();
        sources.extend(h.wraps.iter().filter(|w| &w.key_arn != arn));
        let mut errors = vec![];
        let mut made = None;
        for src in sources {
            match kms.re_encrypt(ReEncryptRequest {
                ciphertext_blob: src.blob.clone(),
                source_encryption_context: Some(ctx.clone()),
                source_key_id: Some(src.key_arn.clone()),
                destination_key_id: arn.clone(),
                destination_encryption_context: Some(ctx.clone()),
                ..Default::default()
            }) {
                Ok(r) => {
                    made = Some(Wrap {
                        key_arn: r.key_id,
                        material_id: r.destination_key_material_id.unwrap_or_default(),
                        blob: r.ciphertext_blob,
                    });
                    break;
                }
                Err(e) => errors.push(format!("from {}: {e}", src.key_arn)),
            }
        }
        wraps.push(made.ok_or_else(|| err!("cannot re-wrap under {arn}: {}", errors.join("; ")))?);
    }
    if wraps == h.wraps {
        return Ok(false);
    }
    let new = Header { wraps, ..h };
    crate::backing::replace_header(&file, &new)?;
    Ok(true)
}

/// A new wrap of `h`'s DEK under RSA key `arn` of an encrypt-only tree: the DEK
/// unwrapped (Decrypt) from any copy, sealed here under the pinned public key.
fn public_wrap(cfg: &TreeConfig, kms: &dyn Kms, h: &Header, arn: &str) -> Result<Wrap> {
    let fs_id = cfg.fs_id_bytes()?;
    let mut errors = vec![];
    for src in &h.wraps {
        match unwrap_dek(kms, cfg, &fs_id, &h.file_id, src) {
            Ok(dek) => {
                let pk = public::parse_b64(cfg.public_keys.get(arn).map_or("", String::as_str))
                    .map_err(|e| err!("public key of {arn}: {e}"))?;
                let blob =
                    public::seal(&pk, &fs_id, &h.file_id, &dek).map_err(|e| err!("{arn}: {e}"))?;
                return Ok(Wrap {
                    key_arn: arn.to_string(),
                    material_id: String::new(),
                    blob,
                });
            }
            Err(e) => errors.push(format!("from {}: {e}", src.key_arn)),
        }
    }
    fail!("cannot wrap under {arn}: {}", errors.join("; "))
}

/// `kmsfs rotate`: re-wraps every header under the current version of each of the tree's
/// keys, or first moves the tree to the key `to` (config first: new files use the new
/// key at once, and a killed run resumes with a plain rotate). A tree without a MAC
/// gets one (the daily rotation authenticates older trees).
pub fn rotate(
    t: &mut TrustedTree,
    backing: &Path,
    to: Option<&str>,
    jobs: usize,
    show_progress: bool,
) -> Result<Summary> {
    if let Some(k) = to {
        t.set_keys(&[k.to_string()])?;
    }
    if to.is_some() || !t.authenticated() {
        t.seal()?;
        t.save(backing)?;
    }
    rewrap(backing, &t.cfg, &*t.kms, &t.cfg.keys, jobs, show_progress)
}

/// A change of a tree's key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Add a (recovery) key.
    Add,
    /// Remove a key (not the last).
    Remove,
}

/// `kmsfs keys add|remove`: changes the key set in the authenticated config, then
/// re-wraps every header to it.
pub fn change_key(
    t: &mut TrustedTree,
    backing: &Path,
    change: KeyChange,
    key: &str,
    show_progress: bool,
) -> Result<Summary> {
    let arn = crate::trust::key_arns(&*t.kms, &[key.to_string()])?.remove(0);
    let mut keys = t.cfg.keys.clone();
    match change {
        KeyChange::Add => t.cfg.add_key(&arn, backing)?,
        KeyChange::Remove => t.cfg.remove_key(&arn, backing)?,
    }
    std::mem::swap(&mut keys, &mut t.cfg.keys);
    t.set_keys(&keys)?;
    t.save(backing)?;
    rewrap(
        backing,
        &t.cfg,
        &*t.kms,
        &t.cfg.keys,
        REWRAP_JOBS,
        show_progress,
    )
}
