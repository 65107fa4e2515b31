//! Open files: the table of open backing files shared by all handles (and hard links)
//! of an inode, the striped locks that serialise opening, header and key loading, and
//! the operations on handles (open, read, write, release, fsync, fallocate).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{Errno, FileType};
use parking_lot::RwLock;
use rustix::fs::{Mode, OFlags};

use super::attr::kill_suidgid;
use super::error::{content_error, rerr, FsError};
use super::{FsResult, Inode, KmsFs, NO_HANDLE, OPENING_STRIPES};
use crate::content::Content;
use crate::envelope::{EnvelopeError, FileKeys};
use crate::format::Header;

/// Shared state of one open regular file (all handles of an inode, all its hard links).
pub(super) struct OpenFile {
    pub(super) file: File,
    pub(super) writable: bool,
    pub(super) keys: Arc<FileKeys>,
    pub(super) file_id: [u8; 16],
    /// The per-inode lock: every size-changing path (write, truncate, fallocate) takes
    /// it exclusively; reads share it. Holds the plaintext size.
    pub(super) size: RwLock<u64>,
    /// For log lines.
    pub(super) path: String,
    /// Its `O_DIRECT` twin for large cold reads, opened on the first.
    pub(super) direct: crate::content::Direct,
}

pub(super) struct Handle {
    pub(super) file: Arc<OpenFile>,
    pub(super) ino: u64,
    pub(super) append: bool,
}

pub(super) struct DirHandle {
    pub(super) entries: Vec<(u64, FileType, OsString)>,
    /// Not read from yet: the first read from offset 0 uses `entries`, a later one
    /// (rewinddir) lists the directory again.
    pub(super) fresh: std::sync::atomic::AtomicBool,
}

impl KmsFs {
    fn open_keys(&self, h: &Header, path: &str) -> FsResult<Arc<FileKeys>> {
        self.env.open_header(h).map_err(|e| match e {
            // An encrypt-only host (or a revoked share): not damage, a permission.
            EnvelopeError::Denied(_) => FsError::logged(
                Errno::EACCES,
                tracing::Level::WARN,
                format!("{path}: {e}; answering EACCES (only a principal allowed Decrypt can read or change it; it can be replaced whole)"),
            ),
            e => FsError::eio(format_args!("{path}: cannot open header: {e}")),
        })
    }

    /// One more user of the inode's open state, if it has one.
    pub(super) fn share_open(&self, ino: u64, want_write: bool) -> FsResult<Option<Arc<OpenFile>>> {
        let mut open = self.open.lock();
        match open.get_mut(&ino) {
            Some((of, _)) if want_write && !of.writable => Err(Errno::EACCES.into()),
            Some((of, n)) => {
                *n += 1;
                Ok(Some(of.clone()))
            }
            None => Ok(None),
        }
    }

    /// The shared open state of a regular file, opening it if needed. Counts one user;
    /// pair with `release_open`. With the descriptor, header and attributes of a file just created
    /// (so a create opens nothing twice). `truncating`: the caller empties the file next
    /// (O_TRUNC), so a file whose key this host may not unwrap gets a new one instead.
    pub(super) fn acquire_open_with(
        &self,
        inode: &Inode,
        want_write: bool,
        created: Option<(File, Arc<Header>, rustix::fs::Stat)>,
        truncating: bool,
    ) -> FsResult<Arc<OpenFile>> {
        if let Some(of) = self.share_open(inode.ino, want_write)? {
            return Ok(of);
        }
        // One opening per inode at a time, outside the table lock: the KMS call below
        // may take seconds when the KMS is away.
        let _one = self.opening[(inode.ino as usize) % OPENING_STRIPES].lock();
        self.acquire_open_locked(inode, want_write, created, truncating)
    }

    /// `acquire_open_with`, its inode's opening stripe held by the caller.
    fn acquire_open_locked(
        &self,
        inode: &Inode,
        want_write: bool,
        created: Option<(File, Arc<Header>, rustix::fs::Stat)>,
        truncating: bool,
    ) -> FsResult<Arc<OpenFile>> {
        if let Some(of) = self.share_open(inode.ino, want_write)? {
            return Ok(of);
        }
        let of = match created {
            Some((file, header, st)) => {
                let bpath = self.display(inode.ino);
                let keys = self.open_keys(&header, &bpath)?;
                self.open_file(file, true, header.file_id, keys, &st, bpath)
            }
            None => self.open_backing(inode, want_write, truncating)?,
        };
        self.open.lock().insert(inode.ino, (of.clone(), 1));
        Ok(of)
    }

    /// The open state of regular file `ino` for a request without a handle (the kernel
    /// sends no OPEN on this mount, see `lazy_open`): opened on its first read or write
    /// and then held, like a handle, until the kernel forgets the inode or `held_capacity()`
    /// other files were used since (a later request opens it again).
    pub(super) fn inode_file(&self, ino: u64) -> FsResult<Arc<OpenFile>> {
        if let Some(of) = self.held.lock().get(&ino) {
            return Ok(of.clone());
        }
        let inode = self.inode(ino)?;
        if !inode.is_file() {
            return Err(Errno::EBADF.into());
        }
        let _one = self.opening[(ino as usize) % OPENING_STRIPES].lock();
        if let Some(of) = self.held.lock().get(&ino) {
            return Ok(of.clone());
        }
        let of = match self.acquire_open_locked(&inode, false, None, false) {
            Ok(of) => of,
            Err(mut e) => {
                let mut failed = self.failed.lock();
                if failed
                    .get(&ino)
                    .is_some_and(|t| t.elapsed() < super::FAILURE_LOGGED_FOR)
                {
                    e.log = None;
                } else if e.log.is_some() {
                    failed.put(ino, std::time::Instant::now());
                }
                return Err(e);
            }
        };
        self.hold(ino, of.clone());
        Ok(of)
    }

    /// Holds one user of `ino`'s open state (counted in `open`) for handle-less
    /// requests; the least recently used beyond `held_capacity()` is let go.
    pub(super) fn hold(&self, ino: u64, of: Arc<OpenFile>) {
        let out = self.held.lock().push(ino, of);
        if let Some((gone, _)) = out {
            self.release_open(gone);
        }
    }

    /// The kernel forgot `ino`: its held open state and its parked descriptor (a removed
    /// file) go; what was its last reference is freed by the reaper.
    pub(super) fn let_go(&self, ino: u64) {
        let held = self.held.lock().pop(&ino);
        if let Some(of) = held {
            self.release_open(ino);
            if let Ok(of) = Arc::try_unwrap(of) {
                self.reaper.release(of.file.into());
            }
        }
        let parked = self.parked.lock().remove(&ino);
        if let Some(Ok(fd)) = parked.map(Arc::try_unwrap) {
            self.reaper.release(fd);
        }
    }

    /// Opens the backing file of an inode (read-write if allowed, else read-only unless
    /// writing is wanted), its header and its keys.
    fn open_backing(
        &self,
        inode: &Inode,
        want_write: bool,
        truncating: bool,
    ) -> FsResult<Arc<OpenFile>> {
        let (fd, st, writable) = match self.open_inode(inode, OFlags::RDWR) {
            Ok((fd, st)) => (fd, st, true),
            Err(e)
                if !want_write
                    && matches!(e.errno, Errno::EACCES | Errno::EROFS | Errno::EPERM) =>
            {
                let (fd, st) = self.open_inode(inode, OFlags::RDONLY)?;
                (fd, st, false)
            }
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let bpath = self.display(inode.ino);
        // A file this process has opened (or made) before and whose keys are still
        // cached: neither its header nor the KMS is read again.
        let known = self.known.lock().get(&(st.st_dev, st.st_ino)).copied();
        let cached = known.and_then(|id| Some((id, self.env.cached_keys(&id)?)));
        let (file_id, header) = match &cached {
            Some((id, _)) => (*id, None),
            None => {
                let h = crate::backing::read_header_checked(&file, self.geo)
                    .map_err(|e| FsError::eio(format_args!("{bpath}: {e}")))?;
                self.env
                    .check_auth(std::os::fd::AsFd::as_fd(&file), &h)
                    .map_err(|e| FsError::eio(format_args!("{bpath}: {e}")))?;
                self.known.lock().put((st.st_dev, st.st_ino), h.file_id);
                (h.file_id, Some(h))
            }
        };
        // Encrypt-only trees: a key this mount did not draw may be anyone's (whoever
        // writes the backing tree can wrap one of their own under the public key), so
        // what is emptied (or is empty) and about to be written gets a new one first.
        let fresh = self.public_key_tree()
            && writable
            && want_write
            && !self.is_own_key(&file_id)
            && (truncating || self.geo.plain_size(st.st_size as u64) == Some(0));
        if fresh {
            let (header, keys) = self.rekey_emptied(&file, &st, &bpath)?;
            let st = rustix::fs::fstat(&file)?;
            return Ok(self.open_file(file, writable, header.file_id, keys, &st, bpath));
        }
        let keys = match (cached, &header) {
            (Some((_, keys)), _) => Ok(keys),
            (None, Some(h)) => self.open_keys(h, &bpath),
            (None, None) => unreachable!("a header is read whenever no keys are cached"),
        };
        match keys {
            Ok(keys) => Ok(self.open_file(file, writable, file_id, keys, &st, bpath)),
            Err(e) if truncating && writable && e.errno == Errno::EACCES => {
                let (header, keys) = self.rekey_emptied(&file, &st, &bpath)?;
                let st = rustix::fs::fstat(&file)?;
                Ok(self.open_file(file, writable, header.file_id, keys, &st, bpath))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens regular file `inode` with `flags`: by one of its names, else (removed while
    /// the kernel may still have it open) through its parked descriptor (see `parked`).
    fn open_inode(&self, inode: &Inode, flags: OFlags) -> FsResult<(OwnedFd, rustix::fs::Stat)> {
        let by_name = self.open_named(inode, |dir: BorrowedFd, name: &OsStr| {
            crate::backing::open_at(dir, name, flags, Mode::empty())
        });
        match by_name {
            Err(e) if e.errno == Errno::ENOENT => {
                let Some(p) = self.parked_fd(inode.ino) else {
                    return Err(e);
                };
                // procfs's link to our own descriptor: no name in the backing tree is
                // resolved, so nothing there can redirect it.
                let path = crate::backing::proc_path(p.as_fd());
                let fd =
                    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(rerr)?;
                let st = rustix::fs::fstat(&fd).map_err(rerr)?;
                if (st.st_dev, st.st_ino) != inode.key {
                    return Err(Errno::ESTALE.into());
                }
                Ok((fd, st))
            }
            r => r,
        }
    }

    /// A file this host may not read, about to be emptied by O_TRUNC (`tar`, `cp` or a
    /// shell's `>` on an encrypt-only mount): emptied now and given a new key, so that it
    /// can be written whole. Emptied first: a crash in between leaves an empty file under
    /// the old header, which is valid.
    fn rekey_emptied(
        &self,
        file: &File,
        st: &rustix::fs::Stat,
        bpath: &str,
    ) -> FsResult<(Arc<Header>, Arc<FileKeys>)> {
        rustix::fs::ftruncate(file, 0)?;
        let (h, keys) = self
            .env
            .take_header()
            .map_err(|e| FsError::eio(format_args!("{bpath}: cannot make a new file key: {e}")))?;
        crate::backing::replace_header(file, &h)
            .map_err(|e| FsError::eio(format_args!("{bpath}: {e}")))?;
        self.note_own_key(h.file_id);
        self.known.lock().put((st.st_dev, st.st_ino), h.file_id);
        let h = Arc::new(h);
        tracing::info!("{bpath}: emptied; it has a new key drawn here (its old one may be anyone's: an encrypt-only tree)");
        Ok((h, keys))
    }

    fn open_file(
        &self,
        file: File,
        writable: bool,
        file_id: [u8; 16],
        keys: Arc<FileKeys>,
        st: &rustix::fs::Stat,
        bpath: String,
    ) -> Arc<OpenFile> {
        let bsize = st.st_size as u64;
        let size = match self.geo.plain_size(bsize) {
            Some(s) => s,
            None => {
                tracing::error!("{bpath}: backing size {bsize} is not a whole number of chunks (truncated?); the tail reads as EIO");
                self.geo.plain_size_lossy(bsize)
            }
        };
        Arc::new(OpenFile {
            file,
            writable,
            keys,
            file_id,
            size: RwLock::new(size),
            path: bpath,
            direct: Default::default(),
        })
    }

    pub(super) fn release_open(&self, ino: u64) {
        let mut open = self.open.lock();
        if let Some((_, n)) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
            }
        }
    }

    fn content<'a>(&self, of: &'a OpenFile) -> Content<'a> {
        Content::new(&of.file, &of.keys, &of.file_id, self.geo).with_direct(&of.direct)
    }

    pub(super) fn new_handle(&self, of: Arc<OpenFile>, ino: u64, flags: i32) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().insert(
            fh,
            Arc::new(Handle {
                file: of,
                ino,
                append: flags & libc::O_APPEND != 0,
            }),
        );
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        Ok(self.handles.read().get(&fh).cloned().ok_or(Errno::EBADF)?)
    }

    /// The open state behind a request on `ino` with handle `fh` (`NO_HANDLE`: the
    /// inode's own, see `inode_file`), and whether the handle appends.
    fn file_of(&self, ino: u64, fh: u64) -> FsResult<(Arc<OpenFile>, bool)> {
        if fh == NO_HANDLE {
            return Ok((self.inode_file(ino)?, false));
        }
        let h = self.handle(fh)?;
        Ok((h.file.clone(), h.append))
    }

    pub(super) fn truncate_open(&self, of: &OpenFile, new_size: u64) -> FsResult<()> {
        if !of.writable {
            return Err(Errno::EACCES.into());
        }
        let mut size = of.size.write();
        // On failure the content layer has put the backing file back to `*size`.
        self.content(of)
            .truncate(*size, new_size)
            .map_err(|e| content_error(&of.path, "truncate", e))?;
        *size = new_size;
        Ok(())
    }

    /// Opens regular file `ino` (`flags` as open(2)) for caller `uid`; answers a handle.
    pub fn open(&self, ino: u64, flags: i32, uid: u32) -> FsResult<u64> {
        let inode = self.inode(ino)?;
        if !inode.is_file() {
            return Err(Errno::EINVAL.into());
        }
        let trunc = flags & libc::O_TRUNC != 0;
        let want_write = flags & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        let of = self.acquire_open_with(&inode, want_write, None, trunc)?;
        // Encrypt-only trees: nothing new is sealed under a key this mount did not draw
        // (it may be the key of whoever wrote the backing tree); such a file is written
        // whole (O_TRUNC gives it a new key).
        if want_write && self.public_key_tree() && !self.is_own_key(&of.file_id) {
            self.release_open(inode.ino);
            return Err(FsError::logged(
                Errno::EACCES,
                tracing::Level::WARN,
                format!("{}: not written in place: its key was not drawn by this mount (in an encrypt-only tree anyone can wrap a key); write it whole (O_TRUNC) and it gets a new one", of.path),
            ));
        }
        if trunc {
            // ATOMIC_O_TRUNC: the kernel leaves the truncate, and with it the privilege
            // kill of a truncate by someone other than root, to us.
            let r = self.truncate_open(&of, 0).and_then(|()| {
                if uid != 0 {
                    kill_suidgid(&of.file)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                self.release_open(inode.ino);
                return Err(e);
            }
        }
        Ok(self.new_handle(of, inode.ino, flags))
    }

    /// Reads up to `size` bytes at `offset` through handle `fh` into `buf` (scratch
    /// space, reused); answers where the data is in `buf`.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> FsResult<std::ops::Range<usize>> {
        let (of, _) = self.file_of(ino, fh)?;
        let of = &of;
        let cur = of.size.read();
        self.content(of)
            .read_in(*cur, offset, size as u64, buf)
            .map_err(|e| content_error(&of.path, "read", e))
    }

    /// Writes `data` at `offset` of `ino` through handle `fh` (`open_flags`: the file's,
    /// as the kernel sends them with the write). `kill_priv`: the kernel asks that
    /// set-user-ID and capabilities go (a write by a caller without CAP_FSETID);
    /// `cached`: a page-cache writeback (FUSE_WRITE_CACHE).
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        ino: u64,
        fh: u64,
        open_flags: i32,
        offset: u64,
        data: &[u8],
        kill_priv: bool,
        cached: bool,
    ) -> FsResult<u32> {
        let (of, append) = self.file_of(ino, fh)?;
        let append = append || open_flags & libc::O_APPEND != 0;
        let of = &of;
        if !of.writable {
            return Err(Errno::EBADF.into());
        }
        // The kernel's cached mode still shows the bits it asked us to kill: a stat
        // right after the write (by the owner too) must not see them.
        if kill_priv && kill_suidgid(&of.file)? {
            self.inval_attrs(ino);
        }
        if cached {
            // Page-cache writeback of whole chunks strictly inside the file changes
            // no size and no other chunk: such writes share the lock, so scattered
            // pages are sealed in parallel. (The kernel never writes one page twice
            // at once, nor reads a page back while it is under writeback, so no
            // read sees a half-written chunk. Direct writes take the exclusive path.)
            let size = of.size.read();
            if self.geo.in_place(*size, offset, data.len() as u64) {
                self.content(of)
                    .write(*size, offset, data)
                    .map_err(|e| content_error(&of.path, "write", e))?;
                return Ok(data.len() as u32);
            }
        }
        let mut size = of.size.write();
        // O_APPEND: the offset is the end as we know it, under the lock (with the
        // writeback cache the kernel computes it and sends page writes).
        let off = if append && !self.writeback_cache {
            *size
        } else {
            offset
        };
        *size = self
            .content(of)
            .write(*size, off, data)
            .map_err(|e| content_error(&of.path, "write", e))?;
        Ok(data.len() as u32)
    }

    /// Closes handle `fh` (the open state goes with the inode's last handle).
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.write().remove(&fh) {
            self.release_open(h.ino);
        }
    }

    /// fsync / fdatasync of the backing file of `ino` (handle `fh`).
    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> FsResult<()> {
        let (of, _) = self.file_of(ino, fh)?;
        if datasync {
            of.file.sync_data()?;
        } else {
            of.file.sync_all()?;
        }
        Ok(())
    }

    /// fallocate: mode 0 grows the file (zeros), KEEP_SIZE reserves backing space;
    /// nothing else (EOPNOTSUPP).
    pub fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
        let (of, _) = self.file_of(ino, fh)?;
        let of = &of;
        if !of.writable {
            return Err(Errno::EBADF.into());
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let mut size = of.size.write();
        match mode {
            0 => {
                if end > *size {
                    self.content(of)
                        .truncate(*size, end)
                        .map_err(|e| content_error(&of.path, "fallocate", e))?;
                    *size = end;
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => {
                // Reserve the backing range of the chunks involved; size unchanged.
                let r = self.geo.chunk_range(offset, length.max(1));
                let from = self.geo.chunk_offset(r.start);
                let to = self.geo.chunk_offset(r.end);
                rustix::fs::fallocate(
                    &of.file,
                    rustix::fs::FallocateFlags::KEEP_SIZE,
                    from,
                    to - from,
                )?;
                Ok(())
            }
            _ => Err(Errno::EOPNOTSUPP.into()),
        }
    }
}
