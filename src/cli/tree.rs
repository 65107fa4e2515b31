//! Tree commands: init, rotate, keys, rekey, fsck, cat, decrypt (library calls and
//! printing).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{exit, open_tree, KeysCmd};
use crate::envelope::Envelope;
use crate::format::TreeConfig;
use crate::kms::KmsLocation;
use crate::tree::{KeyChange, Summary};

pub(super) fn init(
    kms_arg: Option<&str>,
    backing: &Path,
    keys: Vec<String>,
    chunk_size: u32,
    encrypt_names: bool,
) -> Result<()> {
    let loc = KmsLocation::resolve(kms_arg)?;
    let done = crate::tree::init(&loc, backing, &keys, chunk_size, encrypt_names)?;
    if let Some(k) = &done.created_key {
        eprintln!("kmsfs: created key {k} ({})", crate::tree::DEFAULT_ALIAS);
    }
    let cfg = &done.config;
    println!(
        "initialised {} (fs id {}, chunk size {}, {} names)",
        backing.display(),
        cfg.fs_id,
        cfg.chunk_size,
        if cfg.encrypted_names() {
            "encrypted"
        } else {
            "plaintext"
        }
    );
    if encrypt_names && !cfg.encrypted_names() {
        eprintln!(
            "kmsfs: names stay plaintext: a tree of RSA keys has no tree key to seal them under"
        );
    }
    for k in &cfg.keys {
        println!("  wraps file keys under {k}");
    }
    Ok(())
}

fn print_summary(s: &Summary, verb: &str, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        println!("{}", s.line(verb));
    }
    if s.failed > 0 {
        bail!("{} file(s) failed (listed above)", s.failed);
    }
    Ok(())
}

pub(super) fn rotate(
    kms_arg: Option<&str>,
    backing: &Path,
    to: Option<String>,
    jobs: usize,
    json: bool,
) -> Result<()> {
    let mut t = open_tree(backing, kms_arg)?;
    let s = crate::tree::rotate(&mut t, backing, to.as_deref(), jobs, !json)?;
    print_summary(&s, "re-wrapped", json)?;
    if to.is_some() {
        // The old key's users could unwrap the tree key: it is replaced too.
        move_generation(&mut t, backing, json, "the key it left")?;
    }
    Ok(())
}

/// `kmsfs tree-key rotate`.
pub(super) fn tree_key_rotate(kms_arg: Option<&str>, backing: &Path, json: bool) -> Result<()> {
    let mut t = open_tree(backing, kms_arg)?;
    let r = crate::tree::move_generation(&mut t, backing, !json)?;
    print_generation(&r, json)
}

fn print_generation(r: &crate::tree::GenerationReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!(
            "tree key generation {} -> {}: {} entries, {} names, {} symlinks/special files, {} files moved in {:.2}s ({:.0} entries/s){}",
            r.from,
            r.to,
            r.entries,
            r.names,
            r.nodes,
            r.files,
            r.seconds,
            r.entries_per_second,
            if r.left.is_empty() {
                String::new()
            } else {
                format!("; {} entries left as they were (not the tree's, listed below)", r.left.len())
            }
        );
        for (p, why) in &r.left {
            eprintln!("kmsfs: {p}: {why}");
        }
    }
    for (p, why) in &r.failed {
        eprintln!("kmsfs: {p}: {why}");
    }
    if !r.finished {
        bail!(
            "{} entries could not be moved (listed above): the move is not finished and the tree will not mount until `kmsfs tree-key rotate` finishes it",
            r.failed.len()
        );
    }
    Ok(())
}

/// After a key or principal lost access: a new tree key, unless the tree is mounted (then
/// one line says what to run).
fn move_generation(
    t: &mut crate::trust::TrustedTree,
    backing: &Path,
    json: bool,
    who: &str,
) -> Result<()> {
    if t.cfg.public_key_tree() {
        return Ok(());
    }
    if crate::fs::is_mounted_backing(backing) {
        eprintln!(
            "kmsfs: warning: {} is mounted, so its tree key was not replaced: {who} may still read names written from now on; unmount it and run `kmsfs tree-key rotate {}`",
            backing.display(),
            backing.display()
        );
        return Ok(());
    }
    let r = crate::tree::move_generation(t, backing, !json)?;
    print_generation(&r, json)
}

pub(super) fn share(
    kms_arg: Option<&str>,
    backing: &Path,
    with: Option<String>,
    read_only: bool,
    list: bool,
    revoke: Option<String>,
    json: bool,
) -> Result<()> {
    let t = open_tree(backing, kms_arg)?;
    if let Some(p) = with {
        for (key, grant) in crate::tree::share(&t, &p, read_only)? {
            println!("shared with {p} on {key}: grant {grant}");
        }
    } else if let Some(p) = revoke {
        let n = crate::tree::unshare(&t, &p)?;
        if n == 0 {
            bail!("{} is not shared with {p}", backing.display());
        }
        println!("revoked {n} grant(s) of {p}");
        let mut t = t;
        if crate::fs::is_mounted_backing(backing) {
            bail!(
                "{} is mounted, so its tree key was not replaced: {p} can still read the names written from now on with the tree key it holds; unmount it and run `kmsfs tree-key rotate {}`",
                backing.display(),
                backing.display()
            );
        }
        let r = crate::tree::move_generation(&mut t, backing, !json)?;
        print_generation(&r, json)?;
    } else if list {
        let shares = crate::tree::shares(&t)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&shares)?);
        } else {
            for s in shares {
                println!("{}\t{}", s.principal, s.operations.join(","));
            }
        }
    }
    Ok(())
}

pub(super) fn keys(kms_arg: Option<&str>, cmd: KeysCmd) -> Result<()> {
    let (backing, change, key) = match &cmd {
        KeysCmd::Add { backing, key } => (backing, KeyChange::Add, key),
        KeysCmd::Remove { backing, key } => (backing, KeyChange::Remove, key),
        KeysCmd::List { backing } => {
            for k in &TreeConfig::load(backing)?.keys {
                println!("{k}");
            }
            return Ok(());
        }
    };
    let mut t = open_tree(backing, kms_arg)?;
    let s = crate::tree::change_key(&mut t, backing, change, key, true)?;
    print_summary(&s, "re-wrapped", false)?;
    if matches!(change, KeyChange::Remove) {
        move_generation(&mut t, backing, false, &format!("{key}'s users"))?;
    }
    Ok(())
}

pub(super) fn rekey(
    kms_arg: Option<&str>,
    backing: &Path,
    paths: Vec<PathBuf>,
    json: bool,
) -> Result<()> {
    let t = open_tree(backing, kms_arg)?;
    let cfg = t.cfg.clone();
    let files = if paths.is_empty() {
        crate::tree::walk_files(backing, Some(&crate::tree::TreeNames::for_walk(&cfg)))?
    } else {
        paths
            .into_iter()
            .map(|p| if p.is_absolute() { p } else { backing.join(p) })
            .collect()
    };
    let env = Arc::new(t.into_envelope().with_cache(64));
    let s = crate::tree::rekey(backing, &env, files, !json)?;
    print_summary(&s, "rekeyed", json)
}

/// The envelope of the tree `root` for the offline commands.
fn offline_env(kms_arg: Option<&str>, root: &Path) -> Result<(Envelope, crate::tree::TreeNames)> {
    let t = open_tree(root, kms_arg)?;
    t.check_settled()?;
    let names = crate::tree::TreeNames::new(&t);
    Ok((t.into_envelope(), names))
}

/// `kmsfs fsck`: exit FAILED on damage, FSCK_COULD_NOT_RUN when it could not check.
pub(super) fn fsck(
    kms_arg: Option<&str>,
    backing: &Path,
    no_kms: bool,
    salvage: Option<PathBuf>,
    json: bool,
) -> Result<i32> {
    let could_not_run = |e: anyhow::Error| {
        super::print_error(&e);
        Ok(exit::FSCK_COULD_NOT_RUN)
    };
    let cfg = match TreeConfig::load(backing) {
        Ok(c) => c,
        Err(e) => return could_not_run(e.into()),
    };
    let (env, names) = if no_kms {
        (None, None)
    } else {
        match open_tree(backing, kms_arg) {
            Ok(t) => {
                let names = crate::tree::TreeNames::new(&t);
                (Some(Arc::new(t.into_envelope())), Some(names))
            }
            Err(e) => return could_not_run(e.into()),
        }
    };
    if let Some(d) = &salvage {
        if let Err(e) = std::fs::create_dir_all(d) {
            return could_not_run(anyhow::anyhow!("cannot create {}: {e}", d.display()));
        }
    }
    let rep = match crate::tree::fsck(
        backing,
        &cfg,
        env.as_ref(),
        names.as_ref(),
        salvage.as_deref(),
        !json,
    ) {
        Ok(r) => r,
        Err(e) => return could_not_run(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for p in &rep.problems {
            let at = match (p.chunk, p.offset) {
                (Some(c), Some(o)) => format!(": chunk {c} at offset {o}"),
                (None, Some(o)) => format!(": at offset {o}"),
                _ => String::new(),
            };
            let plain = p
                .plain
                .as_ref()
                .map(|x| format!(" (in the tree: {x})"))
                .unwrap_or_default();
            println!("{}{at}: {}: {}{plain}", p.path, p.kind, p.detail);
        }
        for s in &rep.salvaged {
            println!(
                "salvaged {} -> {} (zero-filled chunks: {:?})",
                s.path, s.out, s.zero_filled_chunks
            );
        }
        println!(
            "{} files, {} bytes checked{}: {} damaged, {} problems",
            rep.files,
            rep.bytes,
            if no_kms { " (structure only)" } else { "" },
            rep.damaged_files,
            rep.problems.len()
        );
    }
    if !rep.problems.is_empty() {
        bail!("damage found in {}", backing.display());
    }
    Ok(exit::OK)
}

pub(super) fn cat(kms_arg: Option<&str>, file: &Path, plain: Option<&Path>) -> Result<()> {
    let root = crate::tree::find_root(file)?;
    let (env, names) = offline_env(kms_arg, &root)?;
    let file = match plain {
        Some(p) => names.backing_path(&root, p)?,
        None => file.to_path_buf(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    crate::tree::cat(&env, &file, &mut out)?;
    out.flush()?;
    Ok(())
}

pub(super) fn decrypt(
    kms_arg: Option<&str>,
    paths: &[PathBuf],
    out: &Path,
    preserve_special_bits: bool,
) -> Result<()> {
    let root = crate::tree::find_root(&paths[0])?;
    let (env, names) = offline_env(kms_arg, &root)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let rep =
        crate::tree::decrypt_tree(&env, &names, &root, paths, out, true, preserve_special_bits)?;
    println!(
        "restored {} files ({} bytes) into {}",
        rep.files,
        rep.bytes,
        out.display()
    );
    for (p, e) in &rep.failed {
        eprintln!("kmsfs: {p}: {e}");
    }
    if !rep.failed.is_empty() {
        bail!(
            "{} entr{} could not be restored (skipped, listed above); everything else was",
            rep.failed.len(),
            if rep.failed.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// `kmsfs path`: plaintext path -> backing path, or back with `reverse`.
pub(super) fn path(kms_arg: Option<&str>, backing: &Path, p: &Path, reverse: bool) -> Result<()> {
    let root = std::fs::canonicalize(backing).with_context(|| backing.display().to_string())?;
    let t = open_tree(&root, kms_arg)?;
    let names = crate::tree::TreeNames::new(&t);
    if reverse {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        // The directories canonically, the last component as given (it may be a node).
        let abs = match (abs.parent(), abs.file_name()) {
            (Some(d), Some(n)) => std::fs::canonicalize(d)
                .with_context(|| d.display().to_string())?
                .join(n),
            _ => abs,
        };
        println!("{}", names.plain_path(&root, &abs)?.display());
    } else {
        println!("{}", names.backing_path(&root, p)?.display());
    }
    Ok(())
}
