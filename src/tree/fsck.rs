//! `fsck`: find and report damage, salvage what is readable.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::backing::SealedFile;
use crate::envelope::{Envelope, FileKeys};
use crate::format::{Geometry, TreeConfig};

#[derive(Debug, Clone, Serialize)]
/// One problem fsck found.
pub struct Problem {
    /// The backing file.
    pub path: String,
    /// byte offset in the backing file, when the problem is at one place
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The chunk, when the problem is one chunk.
    pub chunk: Option<u64>,
    /// What kind: io, header, size, unwrap, chunk, stray-temp-file, name, node.
    pub kind: &'static str,
    /// One line.
    pub detail: String,
    /// Its plaintext path in the tree, when its names open (format 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
}

#[derive(Debug, Default, Serialize)]
/// What fsck found.
pub struct FsckReport {
    /// Files checked.
    pub files: u64,
    /// Backing bytes checked.
    pub bytes: u64,
    /// Files with at least one problem.
    pub damaged_files: u64,
    /// Every problem.
    pub problems: Vec<Problem>,
    /// files written to the salvage directory, with the chunks zero-filled in them
    pub salvaged: Vec<Salvaged>,
}

#[derive(Debug, Serialize)]
/// A damaged file written to the salvage directory.
pub struct Salvaged {
    /// The backing file.
    pub path: String,
    /// Where its readable plaintext went.
    pub out: String,
    /// The chunks written as zeros.
    pub zero_filled_chunks: Vec<u64>,
}

fn problem(path: &Path, kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        path: path.display().to_string(),
        offset: None,
        chunk: None,
        kind,
        detail: detail.into(),
        plain: None,
    }
}

/// Checks a tree: config, every header (parse; with a KMS also unwrap and MAC), sizes,
/// every chunk's tag, stray temp files. With `salvage`, damaged files are written there
/// with unreadable chunks zero-filled.
pub fn fsck(
    backing: &Path,
    cfg: &TreeConfig,
    env: Option<&Arc<Envelope>>,
    names: Option<&super::TreeNames>,
    salvage: Option<&Path>,
    show_progress: bool,
) -> crate::Result<FsckReport> {
    let salvage_dir_path = salvage;
    let walk_names = super::TreeNames::for_walk(cfg);
    let (files, temps) = super::walk_tree(backing, Some(names.unwrap_or(&walk_names)))?;
    let root = super::TreeRoot::open(backing)?;
    let geo = Geometry::new(cfg.chunk_size);
    // Salvaged plaintext is written below the salvage directory by descriptor only.
    let salvage = salvage.map(super::out::OutDir::create).transpose()?;
    let salvage = salvage
        .as_ref()
        .map(|o| (o, salvage_dir_path.unwrap_or(Path::new(""))));
    let pb = super::progress(files.len() as u64, "checking", show_progress);
    let results: Vec<(u64, Vec<Problem>, Option<Salvaged>)> = files
        .par_iter()
        .map(|p| {
            let r = check_file(&root, backing, p, geo, env, names, salvage);
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
    let mut report = FsckReport {
        files: files.len() as u64,
        ..Default::default()
    };
    for (bytes, probs, salv) in results {
        report.bytes += bytes;
        if !probs.is_empty() {
            report.damaged_files += 1;
        }
        report.problems.extend(probs);
        report.salvaged.extend(salv);
    }
    for t in temps {
        report.problems.push(problem(
            &t,
            "stray-temp-file",
            "left by an interrupted rekey, tree-key move or mkdir (`kmsfs rekey` or `kmsfs tree-key rotate` removes it)",
        ));
    }
    if let Some(n) = names.filter(|n| n.encrypted()) {
        check_names(n, backing, backing, &mut report.problems);
        for p in &mut report.problems {
            p.plain = n
                .plain_path(backing, Path::new(&p.path))
                .ok()
                .map(|x| x.display().to_string());
        }
    }
    Ok(report)
}

/// Format 2: every directory's id, every entry's name, every node file's record.
fn check_names(n: &super::TreeNames, root: &Path, dir: &Path, probs: &mut Vec<Problem>) {
    let id = match n.dir_id(dir) {
        Ok(id) => id,
        Err(e) => return probs.push(problem(dir, "name", e.to_string())),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return probs.push(problem(dir, "io", "cannot list"));
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let path = e.path();
        if (dir == root && name == crate::format::CONFIG_FILE)
            || name
                .as_encoded_bytes()
                .starts_with(crate::format::TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        if let Err(err) = n.plain_name(dir, &id, &name) {
            probs.push(problem(
                &path,
                "name",
                format!("{err:#}; the mount does not list it"),
            ));
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                let placed = crate::backing::open_root(dir)
                    .map_err(crate::Error::from)
                    .and_then(|d| n.check_place_at(std::os::fd::AsFd::as_fd(&d), &id, &name));
                match placed {
                    Ok(()) => check_names(n, root, &path, probs),
                    Err(err) => probs.push(problem(&path, "place", format!("{err:#}"))),
                }
            }
            Ok(t) if t.is_file() => {
                let kind = e.metadata().ok().and_then(|m| n.node_kind(m.len()));
                if let Some(k) = kind {
                    if let Err(err) = n.read_node(&path, k) {
                        probs.push(problem(&path, "node", format!("{err:#}")));
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_file(
    root: &super::TreeRoot,
    backing: &Path,
    path: &Path,
    geo: Geometry,
    env: Option<&Arc<Envelope>>,
    names: Option<&super::TreeNames>,
    salvage: Option<(&super::out::OutDir, &Path)>,
) -> (u64, Vec<Problem>, Option<Salvaged>) {
    let mut probs = vec![];
    // One descriptor for the header and every chunk, opened without following symlinks.
    let file = match root.open_file(path, rustix::fs::OFlags::RDONLY) {
        Ok(f) => f,
        Err(e) => {
            probs.push(problem(path, "io", format!("cannot open: {e}")));
            return (0, probs, None);
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sealed = match SealedFile::open(file, geo) {
        Ok(f) => f,
        Err(e) => {
            probs.push(problem(path, "header", e.to_string()));
            return (len, probs, None);
        }
    };
    let size = match geo.plain_size(len) {
        Some(s) => s,
        None => {
            let full = len / geo.cchunk();
            probs.push(Problem {
                offset: Some(full * geo.cchunk()),
                chunk: Some(full),
                ..problem(
                    path,
                    "size",
                    format!(
                        "backing size {len} ends in a fragment shorter than a chunk's overhead"
                    ),
                )
            });
            geo.plain_size_lossy(len)
        }
    };
    let Some(env) = env else {
        return (len, probs, None);
    };
    if let Err(e) = env.check_auth(std::os::fd::AsFd::as_fd(&sealed.file), &sealed.header) {
        // Not the tree's: the mount answers EIO for it; its content is not salvaged.
        probs.push(problem(path, "auth", e.to_string()));
        return (len, probs, None);
    }
    let keys = match env.open_header(&sealed.header) {
        Ok(k) => k,
        Err(e) => {
            probs.push(problem(path, "unwrap", e.to_string()));
            return (len, probs, None);
        }
    };
    let (bad, salvaged) = scan_file(
        backing,
        &sealed,
        path,
        &keys,
        geo,
        size,
        names,
        salvage,
        !probs.is_empty(),
    );
    match bad {
        Ok(bad) => {
            for i in &bad {
                probs.push(Problem {
                    offset: Some(geo.chunk_offset(*i)),
                    chunk: Some(*i),
                    ..problem(
                        path,
                        "chunk",
                        "fails authentication (tampered, damaged or truncated)",
                    )
                });
            }
        }
        Err(e) => probs.push(problem(path, "io", e.to_string())),
    }
    (len, probs, salvaged)
}

#[allow(clippy::too_many_arguments)]
fn scan_file(
    backing: &Path,
    sealed: &SealedFile,
    path: &Path,
    keys: &FileKeys,
    geo: Geometry,
    size: u64,
    names: Option<&super::TreeNames>,
    salvage: Option<(&super::out::OutDir, &Path)>,
    already_damaged: bool,
) -> (std::io::Result<Vec<u64>>, Option<Salvaged>) {
    let c = sealed.content(keys, geo);
    let mut bad = vec![];
    let mut plain: Vec<u8> = Vec::new();
    let keep = salvage.is_some();
    let r = c.scan(size, |i, data| match data {
        Some(d) if keep => plain.extend_from_slice(d),
        Some(_) => {}
        None => {
            bad.push(i);
            if keep {
                plain.resize(plain.len() + geo.chunk_len(i, size) as usize, 0);
            }
        }
    });
    if let Err(e) = r {
        return (Err(e), None);
    }
    let salvaged = match salvage {
        Some((outd, dir)) if !bad.is_empty() || already_damaged => {
            // Under its plaintext path when its names open.
            let rel = names
                .and_then(|n| n.plain_path(backing, path).ok())
                .unwrap_or_else(|| path.strip_prefix(backing).unwrap_or(path).to_path_buf());
            let written = (|| -> Result<(), rustix::io::Errno> {
                let name = rel.file_name().ok_or(rustix::io::Errno::INVAL)?;
                let d = outd.dir(rel.parent().unwrap_or(Path::new("")))?;
                let mut f = super::out::create_file(std::os::fd::AsFd::as_fd(&d), name)?;
                std::io::Write::write_all(&mut f, &plain).map_err(|e| {
                    rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)
                })
            })();
            written.ok().map(|_| Salvaged {
                path: path.display().to_string(),
                out: dir.join(&rel).display().to_string(),
                zero_filled_chunks: bad.clone(),
            })
        }
        _ => None,
    };
    (Ok(bad), salvaged)
}
