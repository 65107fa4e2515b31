//! `cat` and `decrypt`: restore files from a tree or a restored backup.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::out::OutDir;
use crate::backing::SealedFile;
use crate::envelope::Envelope;
use crate::error::{err, fail, Context, Result};
use crate::format::names::{NodeKind, DIR_ID_LEN};
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
        env.check_auth(std::os::fd::AsFd::as_fd(&f.file), &f.header)?;
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
    /// Entries not restored (skipped), each with why: the rest was restored.
    pub failed: Vec<(String, String)>,
}

/// Restores backing files or directories under `root` into `out` (same relative paths,
/// plaintext names): files decrypted, directories, symlinks and named pipes recreated,
/// permission bits kept. Set-user-ID, set-group-ID and sticky bits come from a tree anyone
/// may have written, so they are dropped unless `preserve_special_bits` (like tar without
/// --preserve-permissions for untrusted archives).
///
/// The tree is hostile input: it is read by descriptor from its root and everything is
/// written below `out` by descriptor (`OutDir`), so no entry of the tree, however named
/// or typed, makes anything appear outside `out`. What the mount refuses (a name that
/// does not open, a real symlink or device in a format 2 tree, a directory without its
/// id) is not restored: it is listed in the report and skipped, and the rest restored.
/// The files of each directory are decrypted in parallel.
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
    let outd = OutDir::create(out)?;
    let mut total = 0;
    for p in paths {
        total += match super::walk_files(p, Some(names)) {
            Ok(f) => f.len() as u64,
            Err(_) => 1,
        };
    }
    let r = Restore {
        env,
        names,
        root,
        root_stat: rustix::fs::fstat(&tree.fd)?,
        keep: if preserve_special_bits { 0o7777 } else { 0o777 },
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failed: parking_lot::Mutex::new(vec![]),
        pb: super::progress(total, "restoring", show_progress),
    };
    for p in paths {
        if let Err(e) = r.restore_path(&tree, &outd, p) {
            r.skip(p, e);
        }
    }
    r.pb.finish_and_clear();
    let mut failed = r.failed.into_inner();
    failed.sort();
    Ok(RestoreReport {
        files: r.files.into_inner(),
        bytes: r.bytes.into_inner(),
        failed,
    })
}

/// One restore in progress.
struct Restore<'a> {
    env: &'a Envelope,
    names: &'a super::TreeNames,
    root: &'a Path,
    /// The tree root's (dev, ino): its `kmsfs.json` is not a file of the tree.
    root_stat: rustix::fs::Stat,
    /// The mode bits kept.
    keep: u32,
    files: AtomicU64,
    bytes: AtomicU64,
    failed: parking_lot::Mutex<Vec<(String, String)>>,
    pb: indicatif::ProgressBar,
}

impl Restore<'_> {
    fn skip(&self, what: &Path, why: impl std::fmt::Display) {
        self.failed
            .lock()
            .push((what.display().to_string(), why.to_string()));
    }

    /// A path named on the command line: resolved below the tree root one component at
    /// a time (no symlink followed), each name opened to its plaintext.
    fn restore_path(&self, tree: &super::TreeRoot, outd: &OutDir, p: &Path) -> Result<()> {
        let abs = match (p.parent(), p.file_name()) {
            (Some(d), Some(n)) if !d.as_os_str().is_empty() => {
                std::fs::canonicalize(d).context(d.display())?.join(n)
            }
            _ => std::fs::canonicalize(p).context(p.display())?,
        };
        let rel = tree
            .relative(&abs)
            .map_err(|_| err!("{} is outside {}", abs.display(), self.root.display()))?
            .to_path_buf();
        let mut dir = rustix::io::dup(&tree.fd)?;
        let mut plain = PathBuf::new();
        let comps: Vec<_> = rel.iter().collect();
        for (i, c) in comps.iter().enumerate() {
            let id = self.dir_id(dir.as_fd())?;
            plain.push(self.names.plain_name_at(dir.as_fd(), &id, c)?);
            if i + 1 < comps.len() {
                dir = crate::backing::open_dir_at(dir.as_fd(), c)?;
            }
        }
        let bpath = self.root.join(&rel);
        match comps.last() {
            // the root itself
            None => self.restore_dir(dir, &bpath, outd.dir(Path::new(""))?, &plain),
            Some(name) => {
                let dst = outd
                    .dir(plain.parent().unwrap_or(Path::new("")))
                    .map_err(|e| err!("{}: {e}", plain.display()))?;
                let last = plain.file_name().expect("a name").to_os_string();
                let id = self.dir_id(dir.as_fd())?;
                let id = self.names.encrypted().then_some(&id);
                let files = self.entry(dir.as_fd(), id, name, &bpath, dst.as_fd(), &last, &plain);
                let files: Vec<_> = files.into_iter().collect();
                self.restore_files(dir.as_fd(), dst.as_fd(), &files);
            }
        }
        Ok(())
    }

    /// Format 2: the directory's id (a format 1 tree has none).
    fn dir_id(&self, dir: BorrowedFd) -> Result<[u8; DIR_ID_LEN]> {
        match self.names.encrypted() {
            true => self.names.dir_id_at(dir),
            false => Ok([0; DIR_ID_LEN]),
        }
    }

    /// Restores backing directory `src` (`bpath`) into `dst` (`plain` below the target).
    fn restore_dir(&self, src: OwnedFd, bpath: &Path, dst: OwnedFd, plain: &Path) {
        let (id, names) = match self
            .dir_id(src.as_fd())
            .and_then(|id| Ok((id, list(src.as_fd())?)))
        {
            Ok(v) => v,
            Err(e) => return self.skip(bpath, format!("{e}; its entries are not restored")),
        };
        let at_root = rustix::fs::fstat(&src).is_ok_and(|st| {
            (st.st_dev, st.st_ino) == (self.root_stat.st_dev, self.root_stat.st_ino)
        });
        let mut files = vec![];
        for name in names {
            let b = name.as_bytes();
            if b.starts_with(TEMP_PREFIX.as_bytes()) || (at_root && b == CONFIG_FILE.as_bytes()) {
                continue;
            }
            let bp = bpath.join(&name);
            let pname = match self.names.plain_name_at(src.as_fd(), &id, &name) {
                Ok(n) => n,
                Err(e) => {
                    self.skip(&bp, format!("{e:#}; the mount does not list it"));
                    continue;
                }
            };
            let pp = plain.join(&pname);
            let id = self.names.encrypted().then_some(&id);
            files.extend(self.entry(src.as_fd(), id, &name, &bp, dst.as_fd(), &pname, &pp));
        }
        self.restore_files(src.as_fd(), dst.as_fd(), &files);
        // Its own mode once its entries are in (a read-only directory would refuse them).
        if let Ok(st) = rustix::fs::fstat(&src) {
            let _ = crate::backing::chmod_fd(
                dst.as_fd(),
                rustix::fs::Mode::from_raw_mode(st.st_mode & self.keep),
            );
        }
    }

    /// Restores entry `name` of `src` (not a regular file: those are returned, to be
    /// decrypted together) as `pname` in `dst`.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        src: BorrowedFd,
        id: Option<&[u8; DIR_ID_LEN]>,
        name: &OsStr,
        bpath: &Path,
        dst: BorrowedFd,
        pname: &OsStr,
        plain: &Path,
    ) -> Option<Restorable> {
        let r = (|| -> Result<Option<Restorable>> {
            let st = rustix::fs::statat(src, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
            let v2 = self.names.encrypted();
            let mode = rustix::fs::Mode::from_raw_mode(st.st_mode & self.keep);
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    if let Some(id) = id {
                        self.names.check_place_at(src, id, name)?;
                    }
                    let s = crate::backing::open_dir_at(src, name)?;
                    let d = super::out::subdir(dst, pname)
                        .map_err(|e| err!("{}: {e} (not a directory there)", plain.display()))?;
                    self.restore_dir(s, bpath, d, plain);
                }
                libc::S_IFREG => match self.names.node_kind(st.st_size as u64) {
                    None => {
                        return Ok(Some(Restorable {
                            name: name.to_os_string(),
                            bpath: bpath.to_path_buf(),
                            pname: pname.to_os_string(),
                        }))
                    }
                    Some(kind) => {
                        let f = open_entry(src, name, &st)?;
                        let n = self.names.read_node_from(&f, kind)?;
                        match kind {
                            NodeKind::Symlink => make_symlink(dst, pname, &n.target)?,
                            NodeKind::Fifo => make_fifo(dst, pname, mode)?,
                            k => fail!("a {k:?} is not restored"),
                        }
                    }
                },
                // A format 2 tree's symlinks and special files are node files: a real
                // one was not made by kmsfs (the mount answers EIO for it).
                _ if v2 => fail!(
                    "a real {} in a format 2 tree was not made by kmsfs; not restored",
                    kind_name(st.st_mode)
                ),
                libc::S_IFLNK => {
                    let target = rustix::fs::readlinkat(src, name, vec![])?;
                    make_symlink(dst, pname, target.as_bytes())?;
                }
                libc::S_IFIFO => make_fifo(dst, pname, mode)?,
                _ => fail!("a {} is not restored", kind_name(st.st_mode)),
            }
            Ok(None)
        })();
        r.unwrap_or_else(|e| {
            self.skip(bpath, format!("{e:#}"));
            None
        })
    }

    /// Decrypts `files` of `src` into `dst`, in parallel.
    fn restore_files(&self, src: BorrowedFd, dst: BorrowedFd, files: &[Restorable]) {
        files.par_iter().for_each(|f| {
            let r = (|| -> Result<u64> {
                let st = rustix::fs::statat(src, &f.name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                let file = open_entry(src, &f.name, &st)?;
                let out = super::out::create_file(dst, &f.pname)
                    .map_err(|e| err!("cannot create {}: {e}", f.pname.to_string_lossy()))?;
                let mut w = std::io::BufWriter::new(&out);
                let n = decrypt_file(self.env, file, &f.bpath, &mut w)?;
                w.flush()?;
                drop(w);
                rustix::fs::fchmod(
                    &out,
                    rustix::fs::Mode::from_raw_mode(st.st_mode & self.keep),
                )?;
                Ok(n)
            })();
            match r {
                Ok(n) => {
                    self.files.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => self.skip(&f.bpath, format!("{e:#}")),
            }
            self.pb.inc(1);
        });
    }
}

/// A regular file found by the walk, to decrypt.
struct Restorable {
    name: OsString,
    bpath: PathBuf,
    pname: OsString,
}

/// The names in directory `dir` (but `.` and `..`).
pub(super) fn list(dir: BorrowedFd) -> Result<Vec<OsString>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut d = rustix::fs::Dir::read_from(&fd)?;
    let mut v = vec![];
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    v.sort();
    Ok(v)
}

/// Opens regular file `name` of `dir` for reading, checked to be the file `st` just
/// seen (NONBLOCK: a FIFO swapped in fails instead of hanging).
fn open_entry(dir: BorrowedFd, name: &OsStr, st: &rustix::fs::Stat) -> Result<File> {
    let fd = crate::backing::open_at(
        dir,
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )?;
    let now = rustix::fs::fstat(&fd)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
        || now.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        fail!("changed while being restored");
    }
    Ok(File::from(fd))
}

fn make_symlink(dst: BorrowedFd, name: &OsStr, target: &[u8]) -> Result<()> {
    super::out::remove_entry(dst, name)?;
    rustix::fs::symlinkat(OsStr::from_bytes(target), dst, name)?;
    Ok(())
}

fn make_fifo(dst: BorrowedFd, name: &OsStr, mode: rustix::fs::Mode) -> Result<()> {
    super::out::remove_entry(dst, name)?;
    rustix::fs::mknodat(dst, name, rustix::fs::FileType::Fifo, mode, 0)?;
    Ok(())
}

fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "special file",
    }
}
