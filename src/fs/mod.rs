//! The FUSE filesystem: a passthrough of the backing tree in which regular file content is
//! encrypted chunk by chunk (`content`, `envelope`).
//!
//! The operations are methods of [`KmsFs`] returning [`FsResult`], split by kind like
//! gocryptfs's frontend: attributes (`attr`), open files (`open`), names and directories
//! (`dir_ops`), extended attributes (`xattr`). They can be driven without `/dev/fuse`
//! (`tests/fs_ops.rs`); [`fuse::Fuse`] is the thin adapter that turns them into FUSE
//! replies, and `mount` sets up a session.

mod attr;
mod dir_ops;
mod dirs;
mod error;
pub mod fuse;
mod inode;
mod mount;
mod names;
mod open;
mod premade;
mod reaper;
mod xattr;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use dirs::DirFds;
use fuser::Errno;
use parking_lot::{Mutex, RwLock};
use rustix::fs::AtFlags;

use crate::envelope::Envelope;
use crate::format::{Geometry, CONFIG_FILE, TEMP_PREFIX};
pub use attr::SetAttr;
use error::rerr;
pub use error::{FsError, FsResult};
pub use inode::{Inode, InodeTable, ROOT_INO};
pub use mount::{
    is_mounted, is_mounted_backing, mount, mount_devices, unmount, Mount, MountOptions,
};
use open::{DirHandle, Handle, OpenFile};
pub use xattr::Xattr;

/// Mount-time options of the filesystem itself.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// The backing tree's root.
    pub backing: std::path::PathBuf,
    /// Let the kernel cache writes (FUSE_WRITEBACK_CACHE): it then owns the file size
    /// and O_APPEND offsets, and sends page-sized or larger writes in the background.
    pub writeback_cache: bool,
    /// Entry and attribute timeout handed to the kernel.
    pub attr_timeout: Duration,
    /// Where it is mounted (canonical).
    pub mountpoint: PathBuf,
    /// Have the kernel send OPEN and RELEASE for every open of a file (one round trip
    /// more per open); otherwise only encrypt-only trees do (see `KmsFs::lazy_open`).
    pub open_requests: bool,
    /// Make files ahead of need when creates follow one another in a directory (see
    /// `premade`; the command line's default, `--no-files-ahead` turns it off).
    pub files_ahead: bool,
}

/// Who asks: new nodes are given to this user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's group id.
    pub gid: u32,
}

/// The filesystem: inodes, directory descriptors, open files, and the tree's keys.
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
    pub(crate) env: Arc<Envelope>,
    geo: Geometry,
    /// Absolute backing root, for log lines only (never opened).
    backing: PathBuf,
    pub(crate) writeback_cache: bool,
    pub(crate) ttl: Duration,
    pub(crate) mountpoint: PathBuf,
    /// This mount's device in /proc/self/mountinfo (seen at INIT); it cannot be reused
    /// while this process holds the FUSE connection.
    pub(crate) mount_dev: Option<String>,
    /// File ids by backing (st_dev, st_ino): a re-open whose keys the envelope still
    /// caches reads neither the header xattr (on ext4 a ~250-byte xattr lives in its own
    /// block: a disk read when cold) nor the KMS; 40 bytes an entry. Valid while the mount owns the tree: `rotate` keeps file id and DEK, `rekey` needs
    /// an unmount; entries go when the last link is removed through the mount.
    known: Mutex<lru::LruCache<(u64, u64), [u8; 16]>>,
    /// Format 2 trees: the name key and its caches (None: names are plaintext).
    names: Option<names::Names>,
    /// Encrypt-only trees: ids of the files whose key this mount drew itself (created,
    /// or emptied and re-keyed here). Anyone can wrap a key under the tree's public key,
    /// so a file whose key is not in here is written only whole, under a new key.
    own_keys: Mutex<lru::LruCache<[u8; 16], ()>>,
    /// Tells the kernel of changes it did not make (set once the session exists).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Frees removed files after their unlink is answered (see `reaper`).
    reaper: reaper::Reaper,
    /// Files are opened lazily: OPEN is answered ENOSYS, after which the kernel opens
    /// files without asking (no OPEN, no RELEASE: one round trip less per open) and
    /// sends reads and writes with handle `NO_HANDLE`; the inode's open state is opened
    /// on first use and held (`held`). Not for encrypt-only trees, whose opens for
    /// writing are decided at open (see `open`).
    lazy_open: bool,
    /// Open state of files used through `NO_HANDLE`, least recently used first; each
    /// holds one user in `open`.
    held: Mutex<lru::LruCache<u64, Arc<OpenFile>>>,
    /// Lazy opens: removed files the kernel may still have open, by inode, as the
    /// O_PATH descriptor their removal held (their only way back once nameless); handed
    /// to the reaper when the kernel forgets the inode, which for a file nobody has
    /// open follows the removal at once.
    parked: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// When a file last failed to open for a handle-less request and said so in the log.
    failed: Mutex<lru::LruCache<u64, std::time::Instant>>,
    /// Backing files made ahead of need, linked in by creates (see `premade`).
    premade: premade::Premade,
}

/// The handle of requests on lazily opened files (see `KmsFs::lazy_open`).
pub(super) const NO_HANDLE: u64 = 0;
/// Files whose open state is held for handle-less requests: an eighth of the
/// descriptor limit (each holds one, two with its O_DIRECT twin), within 8..=1024.
fn held_capacity() -> usize {
    dirs::share_of_limit(8, 8, 1024)
}

/// A failure to open a file for a handle-less request is logged once per file in
/// this long: the kernel retries a failed read (read-ahead, then the page itself).
const FAILURE_LOGGED_FOR: Duration = Duration::from_secs(5);

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

impl KmsFs {
    /// Opens the backing root and sets up empty tables.
    pub fn new(
        opts: &FsOptions,
        env: Arc<Envelope>,
        cache_entries: usize,
    ) -> std::io::Result<KmsFs> {
        let root = crate::backing::open_root(&opts.backing)?;
        let st = rustix::fs::fstat(&root)?;
        let geo = Geometry::new(env.config.chunk_size);
        let lazy_open = !opts.open_requests && !env.config.public_key_tree();
        let premade = premade::Premade::new(env.clone(), opts.files_ahead);
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
            names: None,
            notifier: Arc::default(),
            own_keys: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(1 << 16).unwrap(),
            )),
            reaper: reaper::Reaper::new(),
            lazy_open,
            held: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(held_capacity()).unwrap(),
            )),
            failed: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(1024).unwrap(),
            )),
            parked: Mutex::new(HashMap::new()),
            premade,
        })
    }

    /// Creates that linked in a file made ahead (for the tests).
    pub fn premade_taken(&self) -> u64 {
        self.premade.taken()
    }

    /// Files are opened without OPEN requests (see the field).
    pub fn lazy_open(&self) -> bool {
        self.lazy_open
    }

    /// The descriptor parked for removed file `ino`, if any.
    fn parked_fd(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.parked.lock().get(&ino).cloned()
    }

    /// A removed file's held descriptor (`fd`, of inode `ino` if the kernel knows one
    /// for it): parked for lazy opens, else handed to the reaper.
    fn park(&self, ino: Option<u64>, fd: OwnedFd) {
        match ino {
            Some(ino) if self.lazy_open => {
                let old = self.parked.lock().insert(ino, Arc::new(fd));
                if let Some(Ok(old)) = old.map(Arc::try_unwrap) {
                    self.reaper.release(old);
                }
            }
            _ => self.reaper.release(fd),
        }
    }

    /// Runs `op`; refused for want of space (ENOSPC, EDQUOT) while removed files still
    /// wait for the reaper, it waits for them to be freed and runs once more. For
    /// operations that fail whole (every space-taking one here reserves or undoes).
    pub fn with_space<T>(&self, op: impl Fn() -> FsResult<T>) -> FsResult<T> {
        match op() {
            Err(e)
                if matches!(e.errno, Errno::ENOSPC | Errno::EDQUOT)
                    && (self.premade.clear() | self.reaper.flush()) =>
            {
                op()
            }
            r => r,
        }
    }

    /// An encrypt-only tree (keys anyone can wrap under)?
    pub(super) fn public_key_tree(&self) -> bool {
        self.env.config.public_key_tree()
    }

    /// This mount drew the key of file `id` (encrypt-only trees).
    pub(super) fn note_own_key(&self, id: [u8; 16]) {
        if self.public_key_tree() {
            self.own_keys.lock().put(id, ());
        }
    }

    /// Did this mount draw the key of file `id`?
    pub(super) fn is_own_key(&self, id: &[u8; 16]) -> bool {
        self.own_keys.lock().get(id).is_some()
    }

    /// Where the session's notifier goes once it exists (see `mount`).
    pub(crate) fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Drops the kernel's cached attributes of `ino` (a change it did not see).
    pub(super) fn inval_attrs(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            // offset < 0: attributes only, no page cache (safe inside a write request)
            if let Err(e) = n.inval_inode(fuser::INodeNo(ino), -1, 0) {
                tracing::debug!("cannot invalidate inode {ino}: {e}");
            }
        }
    }

    /// Seals names under `key` (a format 2 tree; see `names`).
    pub fn with_names(
        mut self,
        key: crate::format::names::NameKey,
        place: Option<crate::format::auth::PlaceKey>,
    ) -> KmsFs {
        self.names = Some(names::Names::new(key, place));
        self
    }

    fn inode(&self, ino: u64) -> FsResult<Arc<Inode>> {
        Ok(self.inodes.get(ino).ok_or(Errno::ESTALE)?)
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
    fn dir(&self, ino: u64) -> FsResult<Arc<OwnedFd>> {
        Ok(self.dirs.get(&self.inodes, ino)?)
    }

    /// The directory descriptor of `parent` and the backing name of `name` in it, for
    /// making or removing it; kmsfs's own names are refused.
    fn parent_for(&self, parent: u64, name: &OsStr) -> FsResult<(Arc<OwnedFd>, names::Bname)> {
        if self.is_hidden(parent, name.as_bytes()) {
            return Err(Errno::EPERM.into());
        }
        let pfd = self.dir(parent)?;
        let b = self.bname(pfd.as_fd(), name)?;
        Ok((pfd, b))
    }

    /// Names kmsfs keeps for itself: the config at the root and rekey temp files (in a
    /// format 2 tree no sealed name can be one of them).
    fn is_hidden(&self, parent: u64, name: &[u8]) -> bool {
        self.names.is_none()
            && ((parent == ROOT_INO && name == CONFIG_FILE.as_bytes())
                || name.starts_with(TEMP_PREFIX.as_bytes()))
    }

    fn open_state(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.open.lock().get(&ino).map(|(of, _)| of.clone())
    }

    /// A live name of a non-directory inode: its directory, the name, and its attributes,
    /// checked to be the backing object the inode stands for.
    fn locate(&self, inode: &Inode) -> FsResult<(Arc<OwnedFd>, OsString, rustix::fs::Stat)> {
        for (parent, name) in self.inodes.names(inode.ino) {
            let Ok(pfd) = self.dir(parent) else { continue };
            match rustix::fs::statat(&*pfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if (st.st_dev, st.st_ino) == inode.key => return Ok((pfd, name, st)),
                _ => continue,
            }
        }
        Err(Errno::ENOENT.into())
    }

    /// The backing object of an inode, to act on through its descriptor: the open file,
    /// the directory's descriptor, or a fresh O_PATH descriptor (never followed, checked
    /// to be the right object).
    fn obj(&self, ino: u64) -> FsResult<Obj> {
        if let Some(of) = self.open_state(ino) {
            return Ok(Obj::Open(of));
        }
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        if inode.is_dir() {
            return Ok(Obj::Path(self.dir(ino)?));
        }
        match self.open_named(&inode, crate::backing::open_obj_at) {
            Ok((fd, _)) => Ok(Obj::Path(Arc::new(fd))),
            Err(e) => self.parked_fd(ino).map(Obj::Path).ok_or(e),
        }
    }

    /// Opens a non-directory inode by one of its names with `open(directory, name)`,
    /// checked (by the fstat of what was opened) to be the object the inode stands for.
    fn open_named(
        &self,
        inode: &Inode,
        open: impl Fn(BorrowedFd, &OsStr) -> rustix::io::Result<OwnedFd>,
    ) -> FsResult<(OwnedFd, rustix::fs::Stat)> {
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
        Err(err.into())
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
