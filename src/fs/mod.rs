//! The FUSE filesystem: a passthrough of the backing tree in which regular file content is
//! encrypted chunk by chunk. FUSE plumbing (inodes, handles, replies) lives here; the
//! encryption lives in `content` and `envelope`.

mod dirs;
mod inode;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dirs::DirFds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::content::{Content, ContentError};
use crate::envelope::{Envelope, FileKeys};
use crate::format::{
    Geometry, Header, CONFIG_FILE, HEADER_XATTR, RESERVED_XATTR_PREFIX, TEMP_PREFIX,
};
pub use inode::{Inode, InodeTable, ROOT_INO};

/// Mount-time options of the filesystem itself.
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub backing: std::path::PathBuf,
    /// Let the kernel cache writes (FUSE_WRITEBACK_CACHE): it then owns the file size
    /// and O_APPEND offsets, and sends page-sized or larger writes in the background.
    pub writeback_cache: bool,
    /// Entry and attribute timeout handed to the kernel.
    pub attr_timeout: Duration,
    /// Where it is mounted (canonical).
    pub mountpoint: PathBuf,
}

/// The devices (`major:minor`, from /proc/self/mountinfo) of the mounts at `path`.
pub fn mount_devices(path: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let p = path.to_string_lossy();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[4].replace("\\040", " ") == p).then(|| f[2].to_string())
        })
        .collect()
}

/// Shared state of one open regular file (all handles of an inode, all its hard links).
struct OpenFile {
    file: File,
    writable: bool,
    keys: Arc<FileKeys>,
    file_id: [u8; 16],
    /// The per-inode lock: every size-changing path (write, truncate, fallocate) takes
    /// it exclusively; reads share it. Holds the plaintext size.
    size: RwLock<u64>,
    /// For log lines.
    path: String,
}

struct Handle {
    file: Arc<OpenFile>,
    ino: u64,
    append: bool,
}

struct DirHandle {
    entries: Vec<(u64, FileType, OsString)>,
}

pub struct KmsFs {
    inodes: InodeTable,
    /// O_PATH descriptors of backing directories (the root among them); every backing
    /// operation is `*at(directory descriptor, one name)`.
    dirs: DirFds,
    /// ino -> (open state, number of handles)
    open: Mutex<HashMap<u64, (Arc<OpenFile>, usize)>>,
    /// Serialises the opening of one inode (backing open, header, KMS unwrap) without
    /// holding `open`: a slow KMS then stalls only the opens of that file (and of the
    /// few that share its stripe), never every open and release in the mount.
    opening: Vec<Mutex<()>>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dir_handles: RwLock<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    env: Arc<Envelope>,
    geo: Geometry,
    /// Absolute backing root, for log lines only (never opened).
    backing: PathBuf,
    writeback_cache: bool,
    ttl: Duration,
    mountpoint: PathBuf,
    /// This mount's device in /proc/self/mountinfo (seen at INIT); it cannot be reused
    /// while this process holds the FUSE connection.
    mount_dev: Option<String>,
    /// Keys of files by backing (st_dev, st_ino): a re-open skips reading the header
    /// xattr (on ext4 a ~250-byte xattr lives in its own block: a disk read when cold).
    /// Valid while the mount owns the tree: `rotate` keeps file id and DEK, `rekey` needs
    /// an unmount; entries go when the last link is removed through the mount.
    known: Mutex<lru::LruCache<(u64, u64), Arc<Header>>>,
}

const OPENING_STRIPES: usize = 256;

/// A backing object to act on: the open file, or an O_PATH descriptor of it.
enum Obj {
    Open(Arc<OpenFile>),
    Path(Arc<OwnedFd>),
}

impl Obj {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Obj::Open(of) => of.file.as_fd(),
            Obj::Path(fd) => fd.as_fd(),
        }
    }
}

fn errno(e: impl Into<io::Error>) -> Errno {
    let e: io::Error = e.into();
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(st)) => {
            let (sec, nsec) = match st.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = d.subsec_nanos() as i64;
                    if nsec > 0 {
                        sec -= 1;
                        nsec = 1_000_000_000 - nsec;
                    }
                    (sec, nsec)
                }
            };
            rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

/// Runs a handler body; a panic becomes EIO for that request (the reply is dropped
/// unanswered, which fuser turns into EIO) and a log line, not a dead mount.
fn guarded<F: FnOnce()>(op: &str, f: F) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!("panic in {op} handler (answered EIO): {msg}");
    }
}

impl KmsFs {
    pub fn new(opts: &FsOptions, env: Arc<Envelope>, cache_entries: usize) -> io::Result<KmsFs> {
        let root = crate::backing::open_root(&opts.backing)?;
        let st = rustix::fs::fstat(&root)?;
        let geo = Geometry::new(env.config.chunk_size);
        Ok(KmsFs {
            inodes: InodeTable::new(&st),
            dirs: DirFds::new(root, dirs::capacity_for_limit()),
            open: Mutex::new(HashMap::new()),
            opening: (0..OPENING_STRIPES).map(|_| Mutex::new(())).collect(),
            handles: RwLock::new(HashMap::new()),
            dir_handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            env,
            geo,
            backing: std::fs::canonicalize(&opts.backing)?,
            writeback_cache: opts.writeback_cache,
            ttl: opts.attr_timeout,
            mountpoint: opts.mountpoint.clone(),
            mount_dev: None,
            known: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(cache_entries.max(1)).unwrap(),
            )),
        })
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// Absolute backing path of an inode, for log lines only.
    fn display(&self, ino: u64) -> String {
        match self.inodes.path(ino) {
            Some(p) => self.backing.join(p).display().to_string(),
            None => format!("{} (inode {ino})", self.backing.display()),
        }
    }

    fn display_child(&self, parent: u64, name: &OsStr) -> String {
        match self.inodes.child_path(parent, name) {
            Some(p) => self.backing.join(p).display().to_string(),
            None => format!("{}/…/{}", self.backing.display(), name.to_string_lossy()),
        }
    }

    /// The descriptor of directory inode `ino`.
    fn dir(&self, ino: u64) -> Result<Arc<OwnedFd>, Errno> {
        self.dirs.get(&self.inodes, ino)
    }

    /// The directory descriptor of `parent` for making or removing `name` in it,
    /// refusing kmsfs's own names.
    fn parent_for(&self, parent: u64, name: &OsStr) -> Result<Arc<OwnedFd>, Errno> {
        if self.is_hidden(parent, name.as_bytes()) {
            return Err(Errno::EPERM);
        }
        self.dir(parent)
    }

    /// Names kmsfs keeps for itself: the config at the root and rekey temp files.
    fn is_hidden(&self, parent: u64, name: &[u8]) -> bool {
        (parent == ROOT_INO && name == CONFIG_FILE.as_bytes())
            || name.starts_with(TEMP_PREFIX.as_bytes())
    }

    fn open_state(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.open.lock().get(&ino).map(|(of, _)| of.clone())
    }

    /// A live name of a non-directory inode: its directory, the name, and its attributes,
    /// checked to be the backing object the inode stands for.
    fn locate(&self, inode: &Inode) -> Result<(Arc<OwnedFd>, OsString, rustix::fs::Stat), Errno> {
        for (parent, name) in self.inodes.names(inode.ino) {
            let Ok(pfd) = self.dir(parent) else { continue };
            match rustix::fs::statat(&*pfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if (st.st_dev, st.st_ino) == inode.key => return Ok((pfd, name, st)),
                _ => continue,
            }
        }
        Err(Errno::ENOENT)
    }

    /// The backing object of an inode, to act on through its descriptor: the open file,
    /// the directory's descriptor, or a fresh O_PATH descriptor (never followed, checked
    /// to be the right object).
    fn obj(&self, ino: u64) -> Result<Obj, Errno> {
        if let Some(of) = self.open_state(ino) {
            return Ok(Obj::Open(of));
        }
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        if inode.is_dir() {
            return Ok(Obj::Path(self.dir(ino)?));
        }
        let (fd, _) =
            self.open_named(&inode, |dir, name| crate::backing::open_obj_at(dir, name))?;
        Ok(Obj::Path(Arc::new(fd)))
    }

    /// Opens a non-directory inode by one of its names with `open(directory, name)`,
    /// checked (by the fstat of what was opened) to be the object the inode stands for.
    fn open_named(
        &self,
        inode: &Inode,
        open: impl Fn(BorrowedFd, &OsStr) -> rustix::io::Result<OwnedFd>,
    ) -> Result<(OwnedFd, rustix::fs::Stat), Errno> {
        let mut err = Errno::ENOENT;
        for (parent, name) in self.inodes.names(inode.ino) {
            let Ok(pfd) = self.dir(parent) else { continue };
            match open(pfd.as_fd(), &name) {
                Ok(fd) => {
                    let st = rustix::fs::fstat(&fd).map_err(rerr)?;
                    if (st.st_dev, st.st_ino) == inode.key {
                        return Ok((fd, st));
                    }
                }
                // not there (any more): try the next name; anything else is the answer
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => err = rerr(e),
            }
        }
        Err(err)
    }

    fn attr_from_stat(&self, ino: u64, st: &rustix::fs::Stat) -> FileAttr {
        let kind = file_type(st.st_mode);
        let size = if kind == FileType::RegularFile {
            match self.open_state(ino) {
                Some(of) => *of.size.read(),
                None => self.geo.plain_size_lossy(st.st_size as u64),
            }
        } else {
            st.st_size as u64
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: st.st_blocks as u64,
            atime: systime(st.st_atime, st.st_atime_nsec as i64),
            mtime: systime(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: systime(st.st_ctime, st.st_ctime_nsec as i64),
            crtime: UNIX_EPOCH,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of an inode: through its open descriptor when it has one (that also
    /// covers files unlinked while open), the directory's descriptor, else by its name.
    fn stat_ino(&self, ino: u64) -> Result<FileAttr, Errno> {
        let st = match self.open_state(ino) {
            Some(of) => rustix::fs::fstat(&of.file).map_err(rerr)?,
            None => {
                let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
                if inode.is_dir() {
                    rustix::fs::fstat(&*self.dir(ino)?).map_err(rerr)?
                } else {
                    self.locate(&inode)?.2
                }
            }
        };
        Ok(self.attr_from_stat(ino, &st))
    }

    /// Looks up `name` in `parent`, registering the inode (one kernel lookup reference).
    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if self.is_hidden(parent, name.as_bytes()) {
            return Err(Errno::ENOENT);
        }
        let pfd = self.dir(parent)?;
        let st = rustix::fs::statat(&*pfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
        Ok(self.entered(parent, name, &st))
    }

    /// Registers `name` in `parent` as the object `st` (one kernel lookup reference).
    fn entered(&self, parent: u64, name: &OsStr, st: &rustix::fs::Stat) -> FileAttr {
        let inode = self.inodes.insert(parent, name, st);
        self.attr_from_stat(inode.ino, st)
    }

    /// Does a node made by this caller need to be given to them? (Made by a caller with
    /// our own ids, the kernel already gave it the owner and group chown would.)
    fn needs_chown(req: &Request) -> bool {
        rustix::process::geteuid().is_root()
            && !(req.uid() == rustix::process::geteuid().as_raw()
                && req.gid() == rustix::process::getegid().as_raw())
    }

    /// Gives the new node behind `obj` to the caller (uid, and gid unless the set-group-ID
    /// bit of its directory `pfd` decides it), through its descriptor.
    fn chown_new(&self, pfd: BorrowedFd, obj: BorrowedFd, req: &Request) -> Result<(), Errno> {
        let pst = rustix::fs::fstat(pfd).map_err(rerr)?;
        let gid = (pst.st_mode & libc::S_ISGID == 0).then(|| req.gid());
        rustix::fs::chownat(
            obj,
            "",
            Some(rustix::fs::Uid::from_raw(req.uid())),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::EMPTY_PATH,
        )
        .map_err(rerr)
    }

    fn log_content_error(&self, of: &OpenFile, op: &str, e: &ContentError) -> Errno {
        match e {
            ContentError::Corrupt { chunk, offset } => {
                tracing::error!(
                    "{}: chunk {chunk} at backing offset {offset} failed authentication during {op} (tampered or damaged); answering EIO",
                    of.path
                );
                Errno::EIO
            }
            ContentError::TooLarge => Errno::EFBIG,
            ContentError::Io(io) => {
                let errno = io.raw_os_error().unwrap_or(libc::EIO);
                if errno != libc::ENOSPC && errno != libc::EFBIG && errno != libc::EDQUOT {
                    tracing::warn!("{}: {op}: {io}", of.path);
                }
                Errno::from_i32(errno)
            }
        }
    }

    /// Reads and opens a file's header: its keys, or EIO with one log line naming the file.
    fn load_header(&self, file: &File, path: &str) -> Result<Header, Errno> {
        let h = crate::backing::read_header(file).map_err(|e| {
            tracing::error!("{path}: {e}; answering EIO");
            Errno::EIO
        })?;
        if h.chunk_shift as u32 != self.env.config.chunk_size.trailing_zeros() {
            tracing::error!(
                "{path}: header chunk size 2^{} differs from the tree's {}; answering EIO",
                h.chunk_shift,
                self.env.config.chunk_size
            );
            return Err(Errno::EIO);
        }
        Ok(h)
    }

    /// The keys of a header (cached, or unwrapped by the KMS), or EIO with one log line.
    fn open_keys(&self, h: &Header, path: &str) -> Result<Arc<FileKeys>, Errno> {
        self.env.open_header(h).map_err(|e| {
            tracing::error!("{path}: cannot open header: {e}; answering EIO");
            Errno::EIO
        })
    }

    /// The shared open state of a regular file, opening it if needed. Counts one user;
    /// pair with `release_open`.
    fn acquire_open(&self, inode: &Inode, want_write: bool) -> Result<Arc<OpenFile>, Errno> {
        self.acquire_open_with(inode, want_write, None)
    }

    /// One more user of the inode's open state, if it has one.
    fn share_open(&self, ino: u64, want_write: bool) -> Result<Option<Arc<OpenFile>>, Errno> {
        let mut open = self.open.lock();
        match open.get_mut(&ino) {
            Some((of, _)) if want_write && !of.writable => Err(Errno::EACCES),
            Some((of, n)) => {
                *n += 1;
                Ok(Some(of.clone()))
            }
            None => Ok(None),
        }
    }

    /// `acquire_open`, with the descriptor, header and attributes of a file just created
    /// (so a create opens nothing twice).
    fn acquire_open_with(
        &self,
        inode: &Inode,
        want_write: bool,
        created: Option<(File, Arc<Header>, rustix::fs::Stat)>,
    ) -> Result<Arc<OpenFile>, Errno> {
        if let Some(of) = self.share_open(inode.ino, want_write)? {
            return Ok(of);
        }
        // One opening per inode at a time, outside the table lock: the KMS call below
        // may take seconds when the KMS is away.
        let _one = self.opening[(inode.ino as usize) % OPENING_STRIPES].lock();
        if let Some(of) = self.share_open(inode.ino, want_write)? {
            return Ok(of);
        }
        let of = match created {
            Some((file, header, st)) => {
                self.open_file(file, true, header, &st, self.display(inode.ino))?
            }
            None => self.open_backing(inode, want_write)?,
        };
        self.open.lock().insert(inode.ino, (of.clone(), 1));
        Ok(of)
    }

    /// Opens the backing file of an inode (read-write if allowed, else read-only unless
    /// writing is wanted), its header and its keys.
    fn open_backing(&self, inode: &Inode, want_write: bool) -> Result<Arc<OpenFile>, Errno> {
        let open = |flags| {
            move |dir: BorrowedFd, name: &OsStr| {
                crate::backing::open_at(dir, name, flags, Mode::empty())
            }
        };
        let (fd, st, writable) = match self.open_named(inode, open(OFlags::RDWR)) {
            Ok((fd, st)) => (fd, st, true),
            Err(e) if !want_write && matches!(e, Errno::EACCES | Errno::EROFS | Errno::EPERM) => {
                let (fd, st) = self.open_named(inode, open(OFlags::RDONLY))?;
                (fd, st, false)
            }
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let bpath = self.display(inode.ino);
        let known = self.known.lock().get(&(st.st_dev, st.st_ino)).cloned();
        let header = match known {
            Some(h) => h,
            None => {
                let h = Arc::new(self.load_header(&file, &bpath)?);
                self.known.lock().put((st.st_dev, st.st_ino), h.clone());
                h
            }
        };
        self.open_file(file, writable, header, &st, bpath)
    }

    fn open_file(
        &self,
        file: File,
        writable: bool,
        header: Arc<Header>,
        st: &rustix::fs::Stat,
        bpath: String,
    ) -> Result<Arc<OpenFile>, Errno> {
        let keys = self.open_keys(&header, &bpath)?;
        let file_id = header.file_id;
        let bsize = st.st_size as u64;
        let size = match self.geo.plain_size(bsize) {
            Some(s) => s,
            None => {
                tracing::error!("{bpath}: backing size {bsize} is not a whole number of chunks (truncated?); the tail reads as EIO");
                self.geo.plain_size_lossy(bsize)
            }
        };
        Ok(Arc::new(OpenFile {
            file,
            writable,
            keys,
            file_id,
            size: RwLock::new(size),
            path: bpath,
        }))
    }

    fn release_open(&self, ino: u64) {
        let mut open = self.open.lock();
        if let Some((_, n)) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
            }
        }
    }

    fn content<'a>(&self, of: &'a OpenFile) -> Content<'a> {
        Content {
            file: &of.file,
            aead: &*of.keys.content,
            file_id: &of.file_id,
            geo: self.geo,
        }
    }

    fn new_handle(&self, of: Arc<OpenFile>, ino: u64, flags: i32) -> u64 {
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

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn truncate_open(&self, of: &OpenFile, new_size: u64) -> Result<(), Errno> {
        if !of.writable {
            return Err(Errno::EACCES);
        }
        let mut size = of.size.write();
        // On failure the content layer has put the backing file back to `*size`.
        self.content(of)
            .truncate(*size, new_size)
            .map_err(|e| self.log_content_error(of, "truncate", &e))?;
        *size = new_size;
        Ok(())
    }

    /// Creates a regular file with its header already in place before any data byte;
    /// returns its descriptor (read-write), header and attributes.
    fn create_file(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        req: &Request,
    ) -> Result<(File, Arc<Header>, rustix::fs::Stat), Errno> {
        let pfd = self.parent_for(parent, name)?;
        let mode = Mode::from_raw_mode(mode & 0o7777);
        // The name appears only once the header (and owner) are in place: an unnamed
        // O_TMPFILE is prepared, then linked in (EEXIST there is O_EXCL's answer). A
        // rotation, fsck or crash never meets a new file without its header.
        let tmp = rustix::fs::openat(
            &*pfd,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        );
        let (fd, h) = match tmp {
            Ok(fd) => {
                let h = self.prepare_new(&fd, &pfd, parent, name, req)?;
                crate::backing::link_fd(fd.as_fd(), pfd.as_fd(), name).map_err(rerr)?;
                (fd, h)
            }
            // No O_TMPFILE on this backing filesystem: create, then write the header.
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                let fd = crate::backing::open_at(
                    pfd.as_fd(),
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                    mode,
                )
                .map_err(rerr)?;
                let st = rustix::fs::fstat(&fd).map_err(rerr)?;
                match self.prepare_new(&fd, &pfd, parent, name, req) {
                    Ok(h) => (fd, h),
                    Err(e) => {
                        // Undo by name only while the name still holds what we made.
                        unlink_if_same(pfd.as_fd(), name, &st);
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(rerr(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(rerr)?;
        let h = Arc::new(h);
        self.known.lock().put((st.st_dev, st.st_ino), h.clone());
        Ok((File::from(fd), h, st))
    }

    /// Gives a new file (by its descriptor) its header and its owner.
    fn prepare_new(
        &self,
        fd: &OwnedFd,
        pfd: &OwnedFd,
        parent: u64,
        name: &OsStr,
        req: &Request,
    ) -> Result<Header, Errno> {
        let bpath = || self.display_child(parent, name);
        let (h, _keys) = self.env.take_header().map_err(|e| {
            tracing::error!(
                "{}: cannot create a data key for the new file: {e}",
                bpath()
            );
            Errno::EIO
        })?;
        let bytes = h.encode().map_err(|_| Errno::EIO)?;
        rustix::fs::fsetxattr(fd, HEADER_XATTR, &bytes, rustix::fs::XattrFlags::CREATE).map_err(
            |e| {
                tracing::error!("{}: cannot write the header of the new file: {e}", bpath());
                rerr(e)
            },
        )?;
        if Self::needs_chown(req) {
            self.chown_new(pfd.as_fd(), fd.as_fd(), req)?;
        }
        Ok(h)
    }

    /// Before `name` in `pfd` is unlinked or replaced: its key if this is a file's last link.
    fn last_link(pfd: BorrowedFd, name: &OsStr) -> Option<(u64, u64)> {
        let st = rustix::fs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1)
            .then_some((st.st_dev, st.st_ino))
    }

    fn reply_entry(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Makes a node of type `fmt` with `make(directory, name)`, hands it to the caller
    /// through its own descriptor, and answers with its entry.
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        fmt: u32,
        make: impl FnOnce(BorrowedFd, &OsStr) -> Result<(), Errno>,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let pfd = self.parent_for(parent.0, name)?;
            make(pfd.as_fd(), name)?;
            if !Self::needs_chown(req) {
                let st =
                    rustix::fs::statat(&*pfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
                return Ok(self.entered(parent.0, name, &st));
            }
            let fd = crate::backing::open_obj_at(pfd.as_fd(), name).map_err(rerr)?;
            let st = rustix::fs::fstat(&fd).map_err(rerr)?;
            // Only what we just made (of its type, still ours) is handed over: an object
            // swapped in under the name in between is left alone.
            if st.st_mode & libc::S_IFMT != fmt || st.st_uid != rustix::process::geteuid().as_raw()
            {
                tracing::warn!(
                    "{}: replaced while being created; not handing it to uid {}",
                    self.display_child(parent.0, name),
                    req.uid()
                );
                return Err(Errno::EAGAIN);
            }
            if let Err(e) = self.chown_new(pfd.as_fd(), fd.as_fd(), req) {
                unlink_if_same(pfd.as_fd(), name, &st);
                return Err(e);
            }
            let st = rustix::fs::fstat(&fd).map_err(rerr)?;
            Ok(self.entered(parent.0, name, &st))
        })();
        match r {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Opens a directory inode for reading (readdir, fsyncdir).
    fn dir_fd(&self, ino: u64) -> Result<OwnedFd, Errno> {
        let fd = self.dir(ino)?;
        rustix::fs::openat(
            &*fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rerr)
    }
}

/// Removes `name` from `dir` only if it is still the object `st` (undo of a create).
fn unlink_if_same(dir: BorrowedFd, name: &OsStr, st: &rustix::fs::Stat) {
    if let Ok(now) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
            let flags = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let _ = rustix::fs::unlinkat(dir, name, flags);
        }
    }
}

fn reply_xattr(size: u32, data: &[u8], reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// What a write by a caller without CAP_FSETID does to a file (the kernel tells us with
/// HANDLE_KILLPRIV_V2): set-user-ID goes, set-group-ID goes if group-executable, and
/// file capabilities go.
fn kill_suidgid(file: &File) -> Result<(), Errno> {
    let st = rustix::fs::fstat(file).map_err(rerr)?;
    let mut mode = st.st_mode & 0o7777;
    let old = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != old {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(rerr)?;
    }
    match rustix::fs::fremovexattr(file, "security.capability") {
        Ok(()) | Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(()),
        Err(e) => Err(rerr(e)),
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for KmsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.mount_dev = mount_devices(&self.mountpoint).pop();
        let _ = config.set_max_write(1 << 20);
        if self.writeback_cache
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!(
                "the kernel does not offer the writeback cache; writes go through synchronously"
            );
            self.writeback_cache = false;
        }
        // The kernel then skips asking for security.capability before every write (one
        // GETXATTR round trip per write(2) otherwise) and tells us when to kill privileges.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_err()
        {
            tracing::debug!("the kernel does not offer HANDLE_KILLPRIV_V2");
        }
        Ok(())
    }

    /// The session is over. If our mount is gone from the mountpoint (unmounted from
    /// outside: `kmsfs umount`, umount(8), `systemctl stop`), exit here: fuser 0.18 would
    /// next unmount the path once more (its "already unmounted?" test is inverted) and take
    /// down whatever is mounted there by then, such as the new mount of a restart.
    fn destroy(&mut self) {
        let gone = self
            .mount_dev
            .as_ref()
            .is_some_and(|d| !mount_devices(&self.mountpoint).contains(d));
        if gone {
            self.env.flush_audit();
            tracing::info!("unmounted {}", self.mountpoint.display());
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            std::process::exit(0);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || self.reply_entry(parent.0, name, reply))
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.inodes.forget(ino.0, nlookup) {
            self.dirs.remove(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.stat_ino(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(e),
        })
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let r = (|| -> Result<FileAttr, Errno> {
                let inode = self.inode(ino)?;
                if let Some(m) = mode {
                    if inode.is_symlink() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    let m = Mode::from_raw_mode(m & 0o7777);
                    match self.obj(ino.0)? {
                        Obj::Open(of) => rustix::fs::fchmod(&of.file, m),
                        o => crate::backing::chmod_fd(o.fd(), m),
                    }
                    .map_err(rerr)?;
                }
                if uid.is_some() || gid.is_some() {
                    let (u, g) = (
                        uid.map(rustix::fs::Uid::from_raw),
                        gid.map(rustix::fs::Gid::from_raw),
                    );
                    let o = self.obj(ino.0)?;
                    rustix::fs::chownat(o.fd(), "", u, g, AtFlags::EMPTY_PATH).map_err(rerr)?;
                }
                if let Some(new_size) = size {
                    if !inode.is_file() {
                        return Err(if inode.is_dir() {
                            Errno::EISDIR
                        } else {
                            Errno::EINVAL
                        });
                    }
                    // With HANDLE_KILLPRIV_V2 the kernel leaves the privilege kill of a
                    // truncate to us (its flag for it does not reach us through fuser):
                    // callers other than root lose set-user-ID like on any filesystem.
                    let kill = req.uid() != 0 && mode.is_none();
                    let truncate = |of: &OpenFile| {
                        self.truncate_open(of, new_size)?;
                        if kill {
                            kill_suidgid(&of.file)?;
                        }
                        Ok::<(), Errno>(())
                    };
                    match fh.and_then(|fh| self.handle(fh).ok()) {
                        Some(h) => truncate(&h.file)?,
                        None => {
                            let of = self.acquire_open(&inode, true)?;
                            let r = truncate(&of);
                            self.release_open(inode.ino);
                            r?;
                        }
                    }
                }
                if atime.is_some() || mtime.is_some() {
                    let ts = rustix::fs::Timestamps {
                        last_access: to_timespec(atime),
                        last_modification: to_timespec(mtime),
                    };
                    let o = self.obj(ino.0)?;
                    rustix::fs::utimensat(o.fd(), "", &ts, AtFlags::EMPTY_PATH).map_err(rerr)?;
                }
                self.stat_ino(ino.0)
            })();
            match r {
                Ok(a) => reply.attr(&self.ttl, &a),
                Err(e) => reply.error(e),
            }
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || {
            let r = self
                .obj(ino.0)
                .and_then(|o| rustix::fs::readlinkat(o.fd(), "", Vec::new()).map_err(rerr));
            match r {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(e),
            }
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
                match self.create_file(parent.0, name, mode, req) {
                    Ok((_, _, st)) => {
                        let attr = self.entered(parent.0, name, &st);
                        reply.entry(&self.ttl, &attr, Generation(0))
                    }
                    Err(e) => reply.error(e),
                }
                return;
            }
            self.make_node(
                req,
                parent,
                name,
                mode & libc::S_IFMT,
                |dir, name| {
                    let kind = rustix::fs::FileType::from_raw_mode(mode);
                    rustix::fs::mknodat(
                        dir,
                        name,
                        kind,
                        Mode::from_raw_mode(mode & 0o7777),
                        rdev as u64,
                    )
                    .map_err(rerr)
                },
                reply,
            )
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            self.make_node(
                req,
                parent,
                name,
                libc::S_IFDIR,
                |dir, name| {
                    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o7777)).map_err(rerr)
                },
                reply,
            )
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            self.make_node(
                req,
                parent,
                link_name,
                libc::S_IFLNK,
                |dir, name| rustix::fs::symlinkat(target, dir, name).map_err(rerr),
                reply,
            )
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            let mut last = None;
            let r = self.parent_for(parent.0, name).and_then(|pfd| {
                last = Self::last_link(pfd.as_fd(), name);
                rustix::fs::unlinkat(&*pfd, name, AtFlags::empty()).map_err(rerr)
            });
            if r.is_ok() {
                self.inodes.unlinked(parent.0, name);
                if let Some(k) = last {
                    self.known.lock().pop(&k);
                }
            }
            reply_empty(r, reply)
        })
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            let r = self.parent_for(parent.0, name).and_then(|pfd| {
                rustix::fs::unlinkat(&*pfd, name, AtFlags::REMOVEDIR).map_err(rerr)
            });
            if r.is_ok() {
                if let Some(gone) = self.inodes.child(parent.0, name) {
                    self.dirs.remove(gone);
                }
                self.inodes.unlinked(parent.0, name);
            }
            reply_empty(r, reply)
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            let mut replaced = None;
            let r = (|| {
                let from = self.parent_for(parent.0, name)?;
                let to = self.parent_for(newparent.0, newname)?;
                if !exchange {
                    replaced = Self::last_link(to.as_fd(), newname);
                }
                rustix::fs::renameat_with(
                    &*from,
                    name,
                    &*to,
                    newname,
                    rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
                )
                .map_err(rerr)
            })();
            if r.is_ok() {
                self.inodes
                    .renamed(parent.0, name, newparent.0, newname, exchange);
                if let Some(k) = replaced {
                    self.known.lock().pop(&k);
                }
            }
            reply_empty(r, reply)
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            let r = (|| {
                let from = self.obj(ino.0)?;
                let to = self.parent_for(newparent.0, newname)?;
                // exactly the object behind the descriptor, not whatever the name is now
                crate::backing::link_fd(from.fd(), to.as_fd(), newname).map_err(rerr)
            })();
            match r {
                Ok(()) => self.reply_entry(newparent.0, newname, reply),
                Err(e) => reply.error(e),
            }
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            let r = (|| -> Result<u64, Errno> {
                let inode = self.inode(ino)?;
                if !inode.is_file() {
                    return Err(Errno::EINVAL);
                }
                let want_write =
                    flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
                let of = self.acquire_open(&inode, want_write)?;
                if flags.0 & libc::O_TRUNC != 0 {
                    if let Err(e) = self.truncate_open(&of, 0) {
                        self.release_open(inode.ino);
                        return Err(e);
                    }
                }
                Ok(self.new_handle(of, inode.ino, flags.0))
            })();
            match r {
                // Content changes only through this mount: keep the page cache across opens.
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => reply.error(e),
            }
        })
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            crate::content::with_scratch(|buf| {
                let r = (|| -> Result<std::ops::Range<usize>, Errno> {
                    let h = self.handle(fh)?;
                    let of = &h.file;
                    let cur = of.size.read();
                    self.content(of)
                        .read_in(*cur, offset, size as u64, buf)
                        .map_err(|e| self.log_content_error(of, "read", &e))
                })();
                match r {
                    Ok(range) => reply.data(&buf[range]),
                    Err(e) => reply.error(e),
                }
            })
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || {
            let r = (|| -> Result<u32, Errno> {
                let h = self.handle(fh)?;
                let of = &h.file;
                if !of.writable {
                    return Err(Errno::EBADF);
                }
                if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                    kill_suidgid(&of.file)?;
                }
                if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                    // Page-cache writeback of whole chunks strictly inside the file changes
                    // no size and no other chunk: such writes share the lock, so scattered
                    // pages are sealed in parallel. (The kernel never writes one page twice
                    // at once, nor reads a page back while it is under writeback, so no
                    // read sees a half-written chunk. Direct writes take the exclusive path.)
                    let size = of.size.read();
                    if self.geo.in_place(*size, offset, data.len() as u64) {
                        self.content(of)
                            .write(*size, offset, data)
                            .map_err(|e| self.log_content_error(of, "write", &e))?;
                        return Ok(data.len() as u32);
                    }
                }
                let mut size = of.size.write();
                // O_APPEND: the offset is the end as we know it, under the lock (with the
                // writeback cache the kernel computes it and sends page writes).
                let off = if h.append && !self.writeback_cache {
                    *size
                } else {
                    offset
                };
                *size = self
                    .content(of)
                    .write(*size, off, data)
                    .map_err(|e| self.log_content_error(of, "write", &e))?;
                Ok(data.len() as u32)
            })();
            match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go to the backing file synchronously; nothing is buffered here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            if let Some(h) = self.handles.write().remove(&fh.0) {
                self.release_open(h.ino);
            }
            reply.ok();
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            let r = self.handle(fh).and_then(|h| {
                if datasync {
                    h.file.file.sync_data()
                } else {
                    h.file.file.sync_all()
                }
                .map_err(errno)
            });
            reply_empty(r, reply)
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || {
            let r = (|| -> Result<u64, Errno> {
                let fd = self.dir_fd(ino.0)?;
                let mut dir = rustix::fs::Dir::read_from(&fd).map_err(rerr)?;
                let mut entries = vec![];
                while let Some(ent) = dir.read() {
                    let ent = ent.map_err(rerr)?;
                    let name = ent.file_name().to_bytes();
                    if name == b"." || name == b".." || self.is_hidden(ino.0, name) {
                        continue;
                    }
                    let kind = match ent.file_type() {
                        rustix::fs::FileType::Directory => FileType::Directory,
                        rustix::fs::FileType::Symlink => FileType::Symlink,
                        rustix::fs::FileType::Fifo => FileType::NamedPipe,
                        rustix::fs::FileType::Socket => FileType::Socket,
                        rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                        rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                        _ => FileType::RegularFile,
                    };
                    entries.push((
                        self.inodes.peek_ino(ent.ino()),
                        kind,
                        OsStr::from_bytes(name).to_os_string(),
                    ));
                }
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dir_handles
                    .write()
                    .insert(fh, Arc::new(DirHandle { entries }));
                Ok(fh)
            })();
            match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let Some(d) = self.dir_handles.read().get(&fh.0).cloned() else {
                return reply.error(Errno::EBADF);
            };
            // offsets: 1 = ".", 2 = "..", 3.. = entries
            let mut off = offset;
            if off == 0 {
                if reply.add(ino, 1, FileType::Directory, ".") {
                    return reply.ok();
                }
                off = 1;
            }
            if off == 1 {
                if reply.add(INodeNo(ROOT_INO), 2, FileType::Directory, "..") {
                    return reply.ok();
                }
                off = 2;
            }
            for (i, (eino, kind, name)) in d.entries.iter().enumerate().skip((off - 2) as usize) {
                if reply.add(INodeNo(*eino), i as u64 + 3, *kind, name) {
                    break;
                }
            }
            reply.ok();
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dir_handles.write().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || {
            let r = self
                .dir_fd(ino.0)
                .and_then(|fd| rustix::fs::fsync(&fd).map_err(rerr));
            reply_empty(r, reply)
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match rustix::fs::fstatvfs(self.dirs.root()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rerr(e)),
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            if name
                .as_bytes()
                .starts_with(RESERVED_XATTR_PREFIX.as_bytes())
            {
                return reply.error(Errno::EPERM);
            }
            let r = self.obj(ino.0).and_then(|o| {
                crate::backing::setxattr_fd(
                    o.fd(),
                    name,
                    value,
                    rustix::fs::XattrFlags::from_bits_retain(flags as u32),
                )
                .map_err(rerr)
            });
            reply_empty(r, reply)
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            if name
                .as_bytes()
                .starts_with(RESERVED_XATTR_PREFIX.as_bytes())
            {
                return reply.error(Errno::NO_XATTR);
            }
            // size 0 asks for the length only (getfattr, cp -a, rsync -X and tar ask
            // that first); a buffer of exactly the caller's size otherwise.
            let r = self.obj(ino.0).and_then(|o| {
                crate::backing::getxattr_fd(o.fd(), name, size as usize).map_err(rerr)
            });
            match r {
                Ok((n, _)) if size == 0 => reply.size(n as u32),
                Ok((_, v)) => reply.data(&v),
                Err(e) => reply.error(e),
            }
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || {
            let r = self.obj(ino.0).and_then(|o| {
                let buf = crate::backing::listxattr_fd(o.fd()).map_err(rerr)?;
                let mut out = Vec::with_capacity(buf.len());
                for name in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
                    if !name.starts_with(RESERVED_XATTR_PREFIX.as_bytes()) {
                        out.extend_from_slice(name);
                        out.push(0);
                    }
                }
                Ok(out)
            });
            match r {
                Ok(v) => reply_xattr(size, &v, reply),
                Err(e) => reply.error(e),
            }
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            if name
                .as_bytes()
                .starts_with(RESERVED_XATTR_PREFIX.as_bytes())
            {
                return reply.error(Errno::EPERM);
            }
            let r = self
                .obj(ino.0)
                .and_then(|o| crate::backing::removexattr_fd(o.fd(), name).map_err(rerr));
            reply_empty(r, reply)
        })
    }

    /// No ioctls. Answered without the library's per-call warning: programs probe with
    /// TCGETS on every open (isatty), which filled the log and cost a write each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions with allow_other; else
        // only the mounting user gets in and the backing tree checks it).
        reply_empty(self.inode(ino).map(|_| ()), reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            let r = (|| -> Result<(FileAttr, u64), Errno> {
                let (inode, created) = match self.create_file(parent.0, name, mode, req) {
                    Ok((file, header, st)) => (
                        self.inodes.insert(parent.0, name, &st),
                        Some((file, header, st)),
                    ),
                    // Lost a race with another creator and O_EXCL was not asked: open it.
                    Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                        let attr = self.do_lookup(parent.0, name)?;
                        (self.inode(attr.ino)?, None)
                    }
                    Err(e) => return Err(e),
                };
                let st = created.as_ref().map(|c| c.2);
                let of = match self.acquire_open_with(&inode, true, created) {
                    Ok(of) => of,
                    Err(e) => {
                        self.inodes.forget(inode.ino, 1);
                        return Err(e);
                    }
                };
                if flags & libc::O_TRUNC != 0 {
                    let _ = self.truncate_open(&of, 0);
                }
                let fh = self.new_handle(of, inode.ino, flags);
                let attr = match st {
                    Some(st) => self.attr_from_stat(inode.ino, &st),
                    None => self.stat_ino(inode.ino)?,
                };
                Ok((attr, fh))
            })();
            match r {
                Ok((attr, fh)) => reply.created(
                    &self.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            }
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            let r = (|| -> Result<(), Errno> {
                let h = self.handle(fh)?;
                let of = &h.file;
                if !of.writable {
                    return Err(Errno::EBADF);
                }
                let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
                let mut size = of.size.write();
                match mode {
                    0 => {
                        if end > *size {
                            self.content(of)
                                .truncate(*size, end)
                                .map_err(|e| self.log_content_error(of, "fallocate", &e))?;
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
                        )
                        .map_err(rerr)
                    }
                    _ => Err(Errno::EOPNOTSUPP),
                }
            })();
            reply_empty(r, reply)
        })
    }
}
