//! Working on a backing tree without mounting it: `fsck` (find and report damage, salvage
//! what is readable) and `cat`/`decrypt` (restore files from a tree or a restored backup).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::content::Content;
use crate::envelope::{Envelope, FileKeys};
use crate::format::{Geometry, Header, TreeConfig, CONFIG_FILE, TEMP_PREFIX};
use crate::tree::read_header;

/// The tree root above `path`: the nearest ancestor holding `kmsfs.json`.
pub fn find_root(path: &Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::fs::canonicalize(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut cur = if abs.is_dir() {
        Some(abs.as_path())
    } else {
        abs.parent()
    };
    while let Some(d) = cur {
        if d.join(CONFIG_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        cur = d.parent();
    }
    anyhow::bail!(
        "{} is not inside a kmsfs tree (no {CONFIG_FILE} above it)",
        path.display()
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: String,
    /// byte offset in the backing file, when the problem is at one place
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub files: u64,
    pub bytes: u64,
    pub damaged_files: u64,
    pub problems: Vec<Problem>,
    /// files written to the salvage directory, with the chunks zero-filled in them
    pub salvaged: Vec<Salvaged>,
}

#[derive(Debug, Serialize)]
pub struct Salvaged {
    pub path: String,
    pub out: String,
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
) -> anyhow::Result<FsckReport> {
    let (files, temps) = crate::tree::walk_tree(backing)?;
    let root = crate::tree::TreeRoot::open(backing)?;
    let geo = Geometry::new(cfg.chunk_size);
    let pb = if show_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results: Vec<(u64, Vec<Problem>, Option<Salvaged>)> = files
        .par_iter()
        .map(|p| {
            let r = check_file(&root, backing, p, cfg, geo, env, salvage);
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
    root: &crate::tree::TreeRoot,
    backing: &Path,
    path: &Path,
    cfg: &TreeConfig,
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
    let h = match read_header(&file) {
        Ok(h) => h,
        Err(e) => {
            probs.push(problem(path, "header", e));
            return (len, probs, None);
        }
    };
    if h.chunk_shift as u32 != cfg.chunk_size.trailing_zeros() {
        probs.push(problem(
            path,
            "header",
            format!(
                "chunk size 2^{} differs from the tree's {}",
                h.chunk_shift, cfg.chunk_size
            ),
        ));
        return (len, probs, None);
    }
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
    let keys = match env.open_header(&h) {
        Ok(k) => k,
        Err(e) => {
            probs.push(problem(path, "unwrap", e.to_string()));
            return (len, probs, None);
        }
    };
    let (bad, salvaged) = scan_file(
        backing,
        &file,
        path,
        &h,
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
    file: &File,
    path: &Path,
    h: &Header,
    keys: &FileKeys,
    geo: Geometry,
    size: u64,
    salvage: Option<&Path>,
    already_damaged: bool,
) -> (std::io::Result<Vec<u64>>, Option<Salvaged>) {
    let c = Content {
        file,
        aead: &*keys.content,
        file_id: &h.file_id,
        geo,
    };
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

/// Opens a backing file named on the command line: a symlink there is refused, not
/// followed (the tree may come from anyone).
pub fn open_backing_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !f.metadata()?.is_file() {
        anyhow::bail!("{}: not a regular file", path.display());
    }
    Ok(f)
}

/// Writes the plaintext of one open backing file (`path` names it in messages) to `out`,
/// chunk range by chunk range; header and chunks come through the same descriptor.
pub fn decrypt_file(
    env: &Envelope,
    file: &File,
    path: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let geo = Geometry::new(env.config.chunk_size);
    let h = read_header(file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let keys = env
        .open_header(&h)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let len = file.metadata()?.len();
    let size = geo.plain_size(len).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: backing size {len} is not a whole number of chunks",
            path.display()
        )
    })?;
    let c = Content {
        file,
        aead: &*keys.content,
        file_id: &h.file_id,
        geo,
    };
    let mut off = 0;
    while off < size {
        let data = c
            .read(size, off, 1 << 20)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        out.write_all(&data)?;
        off += data.len() as u64;
    }
    Ok(size)
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub bytes: u64,
    pub failed: Vec<(String, String)>,
}

/// Restores backing files or directories under `root` into `out` (same relative paths):
/// files decrypted, directories and symlinks recreated, permission bits kept. Set-user-ID,
/// set-group-ID and sticky bits come from a tree anyone may have written, so they are
/// dropped unless `preserve_special_bits` (like tar without --preserve-permissions for
/// untrusted archives). In parallel.
pub fn decrypt_tree(
    env: &Envelope,
    root: &Path,
    paths: &[PathBuf],
    out: &Path,
    show_progress: bool,
    preserve_special_bits: bool,
) -> anyhow::Result<RestoreReport> {
    let tree = crate::tree::TreeRoot::open(root)?;
    let mut files = vec![];
    for p in paths {
        let p = std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        if p.is_dir() {
            let (f, _) = crate::tree::walk_tree(&p)?;
            files.extend(
                f.into_iter()
                    .filter(|f| !(f.parent() == Some(root) && f.ends_with(CONFIG_FILE))),
            );
            recreate_dirs_and_links(root, &p, out)?;
        } else {
            files.push(p);
        }
    }
    let pb = if show_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results: Vec<Result<u64, (String, String)>> = files
        .par_iter()
        .map(|f| {
            let r = (|| -> anyhow::Result<u64> {
                let rel = f.strip_prefix(root).map_err(|_| {
                    anyhow::anyhow!("{} is outside {}", f.display(), root.display())
                })?;
                let dst = out.join(rel);
                if let Some(d) = dst.parent() {
                    std::fs::create_dir_all(d)?;
                }
                let src = tree
                    .open_file(f, rustix::fs::OFlags::RDONLY)
                    .map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", f.display()))?;
                let dst_file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&dst)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", dst.display()))?
                };
                let mut w = std::io::BufWriter::new(&dst_file);
                let n = decrypt_file(env, &src, f, &mut w)?;
                w.flush()?;
                drop(w);
                let keep = if preserve_special_bits { 0o7777 } else { 0o777 };
                let mode = src.metadata()?.mode() & keep;
                rustix::fs::fchmod(&dst_file, rustix::fs::Mode::from_raw_mode(mode))?;
                Ok(n)
            })();
            pb.inc(1);
            r.map_err(|e| (f.display().to_string(), format!("{e:#}")))
        })
        .collect();
    pb.finish_and_clear();
    let mut rep = RestoreReport::default();
    for r in results {
        match r {
            Ok(n) => {
                rep.files += 1;
                rep.bytes += n;
            }
            Err(e) => rep.failed.push(e),
        }
    }
    Ok(rep)
}

fn recreate_dirs_and_links(root: &Path, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    std::fs::create_dir_all(out.join(rel))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir()
            && !e
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
        {
            recreate_dirs_and_links(root, &e.path(), out)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path())?;
            let dst = out.join(rel).join(e.file_name());
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, dst)?;
        }
    }
    Ok(())
}
