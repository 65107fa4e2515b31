//! `cat` and `decrypt`: restore files from a tree or a restored backup.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::backing::SealedFile;
use crate::envelope::Envelope;
use crate::error::{err, fail, Context, Result};
use crate::format::names::NodeKind;
use crate::format::{Geometry, CONFIG_FILE, TEMP_PREFIX};

/// Opens a backing file named on the command line: a symlink there is refused, not
/// followed (the tree may come from anyone).
pub fn open_backing_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        // NONBLOCK: a FIFO swapped in must not hang the open (refused below).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .context(path.display())?;
    if !f.metadata()?.is_file() {
        fail!("{}: not a regular file", path.display());
    }
    Ok(f)
}

/// Writes the plaintext of one open backing file (`path` names it in messages) to `out`,
/// chunk range by chunk range; header and chunks come through the same descriptor.
pub fn decrypt_file(env: &Envelope, file: File, path: &Path, out: &mut dyn Write) -> Result<u64> {
    let geo = Geometry::new(env.config.chunk_size);
    let inner = || -> Result<u64> {
        let f = SealedFile::open(file, geo)?;
        let keys = env.open_header(&f.header)?;
        let size = f.plain_size(geo)?;
        Ok(f.content(&keys, geo)
            .copy_plaintext(size, |_, data| Ok(out.write_all(data)?))?)
    };
    inner().context(path.display())
}

/// `kmsfs cat`: the plaintext of the backing file `file` (of the tree at `root`) to `out`.
pub fn cat(env: &Envelope, file: &Path, out: &mut dyn Write) -> Result<u64> {
    let file = std::fs::canonicalize(file).context(file.display())?;
    let f = open_backing_file(&file)?;
    decrypt_file(env, f, &file, out)
}

#[derive(Debug, Default, Serialize)]
/// What a restore did.
pub struct RestoreReport {
    /// Files restored.
    pub files: u64,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Files that failed, with why.
    pub failed: Vec<(String, String)>,
}

/// Restores backing files or directories under `root` into `out` (same relative paths):
/// files decrypted, directories and symlinks recreated, permission bits kept. Set-user-ID,
/// set-group-ID and sticky bits come from a tree anyone may have written, so they are
/// dropped unless `preserve_special_bits` (like tar without --preserve-permissions for
/// untrusted archives). In parallel.
pub fn decrypt_tree(
    env: &Envelope,
    names: &super::TreeNames,
    root: &Path,
    paths: &[PathBuf],
    out: &Path,
    show_progress: bool,
    preserve_special_bits: bool,
) -> Result<RestoreReport> {
    let tree = super::TreeRoot::open(root)?;
    let mut files = vec![];
    let mut failed = vec![];
    for p in paths {
        let p = std::fs::canonicalize(p).context(p.display())?;
        if p.is_dir() {
            let (f, _) = super::walk_tree(&p, Some(names))?;
            files.extend(
                f.into_iter()
                    .filter(|f| !(f.parent() == Some(root) && f.ends_with(CONFIG_FILE))),
            );
            recreate_dirs_and_links(names, root, &p, out, &mut failed)?;
        } else {
            files.push(p);
        }
    }
    let pb = super::progress(files.len() as u64, "restoring", show_progress);
    let results: Vec<Result<u64, (String, String)>> = files
        .par_iter()
        .map(|f| {
            let r = (|| -> Result<u64> {
                if !f.starts_with(root) {
                    return Err(err!("{} is outside {}", f.display(), root.display()));
                }
                let dst = out.join(names.plain_path(root, f)?);
                if let Some(d) = dst.parent() {
                    std::fs::create_dir_all(d)?;
                }
                let src = tree
                    .open_file(f, rustix::fs::OFlags::RDONLY)
                    .map_err(|e| err!("{}: cannot open: {e}", f.display()))?;
                let dst_file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&dst)
                        .context(dst.display())?
                };
                let mut w = std::io::BufWriter::new(&dst_file);
                let mode = src.metadata()?.mode();
                let n = decrypt_file(env, src, f, &mut w)?;
                w.flush()?;
                drop(w);
                let keep = if preserve_special_bits { 0o7777 } else { 0o777 };
                let mode = mode & keep;
                rustix::fs::fchmod(&dst_file, rustix::fs::Mode::from_raw_mode(mode))?;
                Ok(n)
            })();
            pb.inc(1);
            r.map_err(|e| (f.display().to_string(), e.to_string()))
        })
        .collect();
    pb.finish_and_clear();
    let mut rep = RestoreReport {
        failed,
        ..Default::default()
    };
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

/// Recreates the directories, symlinks and named pipes below backing directory `dir`
/// under their plaintext names (in a format 2 tree, from node files). Entries whose
/// names do not open, and devices and sockets, are listed in `failed`.
fn recreate_dirs_and_links(
    names: &super::TreeNames,
    root: &Path,
    dir: &Path,
    out: &Path,
    failed: &mut Vec<(String, String)>,
) -> Result<()> {
    let here = out.join(names.plain_path(root, dir)?);
    std::fs::create_dir_all(&here)?;
    let id = if names.encrypted() {
        Some(names.dir_id(dir)?)
    } else {
        None
    };
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let bname = e.file_name();
        if bname.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
            || (dir == root && bname == CONFIG_FILE)
        {
            continue;
        }
        let plain = match &id {
            Some(id) => match names.plain_name(dir, id, &bname) {
                Ok(n) => n,
                Err(e) => {
                    failed.push((dir.join(&bname).display().to_string(), e.to_string()));
                    continue;
                }
            },
            None => bname.clone(),
        };
        let dst = here.join(&plain);
        if ft.is_dir() {
            recreate_dirs_and_links(names, root, &e.path(), out, failed)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path())?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, dst)?;
        } else if let Some(kind) = ft
            .is_file()
            .then(|| names.node_kind(e.metadata().map(|m| m.len()).unwrap_or(0)))
            .flatten()
        {
            let r = (|| -> Result<()> {
                let _ = std::fs::remove_file(&dst);
                match kind {
                    NodeKind::Symlink => {
                        let n = names.read_node(&e.path(), kind)?;
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&n.target), &dst)?;
                    }
                    NodeKind::Fifo => {
                        let mode = e.metadata()?.mode() & 0o777;
                        rustix::fs::mknodat(
                            rustix::fs::CWD,
                            &dst,
                            rustix::fs::FileType::Fifo,
                            rustix::fs::Mode::from_raw_mode(mode),
                            0,
                        )?;
                    }
                    k => crate::error::fail!("a {k:?} is not restored"),
                }
                Ok(())
            })();
            if let Err(err) = r {
                failed.push((dst.display().to_string(), err.to_string()));
            }
        }
    }
    Ok(())
}
