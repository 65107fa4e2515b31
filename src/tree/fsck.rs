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
    /// What kind: io, header, size, unwrap, chunk, stray-temp-file.
    pub kind: &'static str,
    /// One line.
    pub detail: String,
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
    }
}

/// Checks a tree: config, every header (parse; with a KMS also unwrap and MAC), sizes,
/// every chunk's tag, stray temp files. With `salvage`, damaged files are written there
/// with unreadable chunks zero-filled.
pub fn fsck(
    backing: &Path,
    cfg: &TreeConfig,
    env: Option<&Arc<Envelope>>,
    salvage: Option<&Path>,
    show_progress: bool,
) -> crate::Result<FsckReport> {
    let (files, temps) = super::walk_tree(backing)?;
    let root = super::TreeRoot::open(backing)?;
    let geo = Geometry::new(cfg.chunk_size);
    let pb = super::progress(files.len() as u64, "checking", show_progress);
    let results: Vec<(u64, Vec<Problem>, Option<Salvaged>)> = files
        .par_iter()
        .map(|p| {
            let r = check_file(&root, backing, p, geo, env, salvage);
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
            "left by an interrupted rekey (`kmsfs rekey` removes it)",
        ));
    }
    Ok(report)
}

fn check_file(
    root: &super::TreeRoot,
    backing: &Path,
    path: &Path,
    geo: Geometry,
    env: Option<&Arc<Envelope>>,
    salvage: Option<&Path>,
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
    salvage: Option<&Path>,
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
        Some(dir) if !bad.is_empty() || already_damaged => {
            let rel = path.strip_prefix(backing).unwrap_or(path);
            let out = dir.join(rel);
            let written = out
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&out, &plain));
            written.ok().map(|_| Salvaged {
                path: path.display().to_string(),
                out: out.display().to_string(),
                zero_filled_chunks: bad.clone(),
            })
        }
        _ => None,
    };
    (Ok(bad), salvaged)
}
