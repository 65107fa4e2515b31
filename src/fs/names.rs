//! Names as the backing tree holds them. In a format 1 tree a name is its own backing
//! name. In a format 2 tree (docs/FORMAT.md "Names") it is sealed per directory id;
//! symlinks and special files are node files; hashed long names keep their sealed bytes
//! in a per-link xattr of the entry. Everything above this module (the inode table, the
//! descriptor cache, log lines) works in backing names; only the FUSE-facing name of an
//! operation and of a readdir entry is plaintext.

use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use fuser::Errno;
use parking_lot::Mutex;
use rustix::fs::{AtFlags, Mode, OFlags, XattrFlags};

use super::error::{rerr, FsError};
use super::{FsResult, KmsFs};
use crate::format::names::{
    self, is_long, long_xattr, NameError, NameKey, Node, NodeKind, DIR_ID_LEN, DIR_ID_XATTR,
};

/// What a format 2 mount keeps: the name key and caches of directory ids and node records.
pub struct Names {
    key: NameKey,
    /// directory (st_dev, st_ino) -> id
    ids: Mutex<lru::LruCache<(u64, u64), [u8; DIR_ID_LEN]>>,
    /// node file (st_dev, st_ino, ctime) -> (rdev, target length); ctime changes with any
    /// change of the inode, so a reused inode number never meets an old record.
    nodes: Mutex<lru::LruCache<NodeStamp, (u64, u64)>>,
    /// Bounds the log lines about entries whose names do not open.
    pub(super) refused: RefusedLog,
    /// Generation 1 on: what directories are bound to their place under.
    place: Option<crate::format::auth::PlaceKey>,
    /// Places checked: (st_dev, st_ino, ctime s, ctime ns, parent st_ino) and the
    /// backing name. A rename or an xattr change moves ctime on.
    places: Mutex<lru::LruCache<PlaceStamp, ()>>,
}

/// A directory checked at a place: its stamp, its parent's st_ino, its backing name.
type PlaceStamp = (NodeStamp, u64, Vec<u8>);

/// A directory's place: its parent's id and its backing name.
pub(super) type Place = ([u8; DIR_ID_LEN], Vec<u8>);

/// A node file as of one state of its inode: (st_dev, st_ino, ctime s, ctime ns).
type NodeStamp = (u64, u64, i64, i64);

impl Names {
    /// The names of a format 2 tree sealed under `key`.
    pub fn new(key: NameKey, place: Option<crate::format::auth::PlaceKey>) -> Names {
        let n = NonZeroUsize::new(4096).unwrap();
        Names {
            place,
            places: Mutex::new(lru::LruCache::new(n)),
            key,
            ids: Mutex::new(lru::LruCache::new(n)),
            nodes: Mutex::new(lru::LruCache::new(n)),
            refused: RefusedLog::new(),
        }
    }
}

/// Log lines about entries a listing refuses, bounded: whoever writes the backing tree
/// can plant any number of names that do not open, and each listing (by any user of the
/// mount) would otherwise log each one, burying real alerts. One summary line per
/// directory listing, at most one per directory per `PER_DIR`, and at most
/// `LINES_PER_WINDOW` such lines per `PER_DIR` in all; what is held back is counted and
/// said on the next line. `kmsfs fsck` lists every entry.
pub(super) struct RefusedLog(Mutex<RefusedState>);

struct RefusedState {
    /// directory ino -> when its last line was written
    last: lru::LruCache<u64, std::time::Instant>,
    window: std::time::Instant,
    lines: u32,
    held_back: u64,
}

const PER_DIR: std::time::Duration = std::time::Duration::from_secs(60);
const LINES_PER_WINDOW: u32 = 20;

impl RefusedLog {
    fn new() -> RefusedLog {
        RefusedLog(Mutex::new(RefusedState {
            last: lru::LruCache::new(NonZeroUsize::new(4096).unwrap()),
            window: std::time::Instant::now(),
            lines: 0,
            held_back: 0,
        }))
    }

    /// `count` entries of directory `ino` were not listed; `line` says so.
    pub(super) fn report(&self, ino: u64, count: u64, line: &dyn Fn() -> String) {
        let now = std::time::Instant::now();
        let mut s = self.0.lock();
        if now.duration_since(s.window) >= PER_DIR {
            s.window = now;
            s.lines = 0;
        }
        let recent = s
            .last
            .get(&ino)
            .is_some_and(|t| now.duration_since(*t) < PER_DIR);
        if recent || s.lines >= LINES_PER_WINDOW {
            s.held_back += count;
            return;
        }
        s.lines += 1;
        s.last.put(ino, now);
        let held = std::mem::take(&mut s.held_back);
        drop(s);
        if held > 0 {
            tracing::warn!(
                "{} ({held} more refused entries not logged since the last such line)",
                line()
            );
        } else {
            tracing::warn!("{}", line());
        }
    }
}

/// A name as a backing directory holds it.
#[derive(Debug, Clone)]
pub struct Bname {
    /// The backing directory entry.
    pub name: OsString,
    /// For a hashed name: its xattr and the sealed bytes it holds.
    pub long: Option<(String, Vec<u8>)>,
}

fn name_errno(e: NameError) -> FsError {
    match e {
        NameError::TooLong => Errno::ENAMETOOLONG.into(),
        _ => Errno::EINVAL.into(),
    }
}

impl KmsFs {
    /// The backing name of `name` in directory `pfd`.
    pub(super) fn bname(&self, pfd: BorrowedFd, name: &OsStr) -> FsResult<Bname> {
        let Some(n) = &self.names else {
            return Ok(Bname {
                name: name.to_os_string(),
                long: None,
            });
        };
        let id = self.dir_id(pfd)?;
        let s = n.key.seal(&id, name.as_bytes()).map_err(name_errno)?;
        let long = s.long.map(|l| (long_xattr(&s.backing), l));
        Ok(Bname {
            name: OsString::from_vec(s.backing),
            long,
        })
    }

    /// The id of backing directory `pfd` (format 2). A directory without one gets one
    /// if it is empty (a crash between mkdir and its id, or the root of a new tree);
    /// holding entries, it is damaged: EIO.
    pub(super) fn dir_id(&self, pfd: BorrowedFd) -> FsResult<[u8; DIR_ID_LEN]> {
        let n = self.names.as_ref().expect("format 2");
        let st = rustix::fs::fstat(pfd).map_err(rerr)?;
        let key = (st.st_dev, st.st_ino);
        if let Some(id) = n.ids.lock().get(&key) {
            return Ok(*id);
        }
        let read = || -> FsResult<Option<[u8; DIR_ID_LEN]>> {
            match crate::backing::getxattr_fd(pfd, OsStr::new(DIR_ID_XATTR), DIR_ID_LEN + 1) {
                Ok((_, v)) => v.try_into().map(Some).map_err(|v: Vec<u8>| {
                    FsError::eio(format_args!(
                        "{}: directory id is {} bytes, not {DIR_ID_LEN}",
                        self.display_dir(pfd),
                        v.len()
                    ))
                }),
                Err(rustix::io::Errno::NODATA) => Ok(None),
                // (ERANGE: an oversized id, written by someone else)
                Err(e) => Err(FsError::eio(format_args!(
                    "{}: cannot read its directory id: {e}",
                    self.display_dir(pfd)
                ))),
            }
        };
        let id = match read()? {
            Some(id) => id,
            None if self.dir_is_empty(pfd)? => {
                let id = names::new_dir_id();
                match crate::backing::setxattr_fd(
                    pfd,
                    OsStr::new(DIR_ID_XATTR),
                    &id,
                    XattrFlags::CREATE,
                ) {
                    Ok(()) => id,
                    // another thread got there first
                    Err(rustix::io::Errno::EXIST) => read()?.ok_or(Errno::EIO)?,
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                return Err(FsError::eio(format_args!(
                    "{}: directory has entries but no id ({DIR_ID_XATTR} missing: copied without xattrs?)",
                    self.display_dir(pfd)
                )))
            }
        };
        n.ids.lock().put(key, id);
        Ok(id)
    }

    /// Are directories bound to their place (format 2, generation 1 on)?
    pub(super) fn binds_places(&self) -> bool {
        self.names.as_ref().is_some_and(|n| n.place.is_some())
    }

    /// Binds directory `fd` to `places` (its parent's id, its backing name): one, or its
    /// old and new place during a rename.
    pub(super) fn put_place(
        &self,
        fd: BorrowedFd,
        places: &[(&[u8; DIR_ID_LEN], &[u8])],
    ) -> FsResult<()> {
        let Some(p) = self.names.as_ref().and_then(|n| n.place.as_ref()) else {
            return Ok(());
        };
        let own = self.dir_id(fd)?;
        crate::backing::setxattr_fd(
            fd,
            OsStr::new(crate::format::auth::PLACE_XATTR),
            &p.seal(&own, places),
            XattrFlags::empty(),
        )?;
        Ok(())
    }

    /// Checks that directory `bname` of `pfd` (`st`) was made, or renamed, there by a
    /// holder of the tree key: a directory moved or swapped in from elsewhere in the
    /// backing tree is EIO with one log line.
    fn check_place(&self, pfd: BorrowedFd, bname: &OsStr, st: &rustix::fs::Stat) -> FsResult<()> {
        let n = self.names.as_ref().expect("format 2");
        let Some(p) = &n.place else {
            return Ok(());
        };
        let pst = rustix::fs::fstat(pfd).map_err(rerr)?;
        let k = (
            (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec as i64),
            pst.st_ino,
            bname.as_bytes().to_vec(),
        );
        if n.places.lock().get(&k).is_some() {
            return Ok(());
        }
        let fd = crate::backing::open_dir_at(pfd, bname).map_err(rerr)?;
        let now = rustix::fs::fstat(&fd).map_err(rerr)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(Errno::ESTALE.into());
        }
        let own =
            match crate::backing::getxattr_fd(fd.as_fd(), OsStr::new(DIR_ID_XATTR), DIR_ID_LEN + 1)
            {
                Ok((_, v)) => <[u8; DIR_ID_LEN]>::try_from(v).ok(),
                Err(_) => None,
            };
        let stored = crate::backing::read_place(fd.as_fd());
        let parent_id = self.dir_id(pfd)?;
        let r = match own {
            Some(own) => p.verify(&own, &parent_id, bname.as_bytes(), stored.as_deref()),
            None => Err(crate::format::auth::AuthError::Missing),
        };
        if let Err(e) = r {
            return Err(FsError::eio(format_args!(
                "{}/{}: directory not bound to this place ({e}): moved or swapped in from elsewhere by someone without the tree key; answering EIO",
                self.display_dir(pfd),
                bname.to_string_lossy()
            )));
        }
        n.places.lock().put(k, ());
        Ok(())
    }

    /// Gives new directory `fd` (format 2) a fresh id.
    pub(super) fn new_dir_id(&self, fd: BorrowedFd) -> FsResult<()> {
        let id = names::new_dir_id();
        crate::backing::setxattr_fd(fd, OsStr::new(DIR_ID_XATTR), &id, XattrFlags::CREATE)?;
        if let (Some(n), Ok(st)) = (&self.names, rustix::fs::fstat(fd)) {
            n.ids.lock().put((st.st_dev, st.st_ino), id);
        }
        Ok(())
    }

    /// Directory `st` was removed: a new directory may get its inode number.
    pub(super) fn forget_dir_id(&self, st: &rustix::fs::Stat) {
        if let Some(n) = &self.names {
            n.ids.lock().pop(&(st.st_dev, st.st_ino));
        }
    }

    fn display_dir(&self, pfd: BorrowedFd) -> String {
        rustix::fs::readlink(crate::backing::proc_path(pfd), vec![])
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| self.backing.display().to_string())
    }

    /// No entries but kmsfs's own?
    fn dir_is_empty(&self, pfd: BorrowedFd) -> FsResult<bool> {
        let fd = rustix::fs::openat(
            pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rerr)?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        while let Some(ent) = dir.read() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." && !self.is_reserved_backing(pfd, name) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// kmsfs's own backing names: the config at the root, rekey temp files.
    pub(super) fn is_reserved_backing(&self, pfd: BorrowedFd, name: &[u8]) -> bool {
        if name.starts_with(crate::format::TEMP_PREFIX.as_bytes()) {
            return true;
        }
        name == crate::format::CONFIG_FILE.as_bytes()
            && rustix::fs::fstat(pfd).is_ok_and(|st| {
                rustix::fs::fstat(self.dirs.root())
                    .is_ok_and(|r| (r.st_dev, r.st_ino) == (st.st_dev, st.st_ino))
            })
    }

    /// The plaintext name of backing entry `backing` of directory `pfd` (id `id`).
    pub(super) fn plain_name(
        &self,
        pfd: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        backing: &[u8],
    ) -> Result<OsString, NameError> {
        let n = self.names.as_ref().expect("format 2");
        let long = if is_long(backing) {
            let p = std::path::Path::new(&crate::backing::proc_path(pfd))
                .join(OsStr::from_bytes(backing));
            let mut buf = vec![0u8; 1024];
            match rustix::fs::lgetxattr(&p, long_xattr(backing).as_str(), &mut buf[..]) {
                Ok(len) => {
                    buf.truncate(len);
                    Some(buf)
                }
                Err(_) => return Err(NameError::LongName),
            }
        } else {
            None
        };
        n.key
            .open(id, backing, long.as_deref())
            .map(OsString::from_vec)
    }

    /// Writes the long-name xattr of `b` on the object `fd` (before its name appears).
    /// True if it was added (not already there: the object may already hold that name,
    /// as a hard link of it); undo only what was added.
    pub(super) fn put_long(&self, fd: BorrowedFd, b: &Bname) -> FsResult<bool> {
        let Some((x, v)) = &b.long else {
            return Ok(false);
        };
        match crate::backing::setxattr_fd(fd, OsStr::new(x), v, XattrFlags::CREATE) {
            Ok(()) => Ok(true),
            // The xattr's name is the hash of its value: one already there is this one.
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the long-name xattr of `b` from `fd` (a link gone; best effort).
    pub(super) fn drop_long(&self, fd: BorrowedFd, b: &Bname) {
        if let Some((x, _)) = &b.long {
            let _ = crate::backing::removexattr_fd(fd, OsStr::new(x));
        }
    }

    /// The node kind of a backing object, if it is a node file (format 2).
    pub(super) fn node_kind(&self, st: &rustix::fs::Stat) -> Option<NodeKind> {
        self.names.as_ref()?;
        (st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .then(|| names::node_kind(st.st_size as u64, self.geo.cchunk()))
            .flatten()
    }

    /// The attributes the mount shows for backing object `st`, named `bname` in `pfd`:
    /// a node file as the symlink or special file it stands for.
    pub(super) fn shown(
        &self,
        pfd: BorrowedFd,
        bname: &OsStr,
        mut st: rustix::fs::Stat,
    ) -> FsResult<rustix::fs::Stat> {
        let Some(kind) = self.node_kind(&st) else {
            // A format 2 tree holds only directories and regular files: a real symlink
            // or special file under a (stolen) sealed name was not made by kmsfs.
            let fmt = st.st_mode & libc::S_IFMT;
            if self.names.is_some() && fmt == libc::S_IFDIR {
                self.check_place(pfd, bname, &st)?;
            }
            if self.names.is_some() && fmt != libc::S_IFDIR && fmt != libc::S_IFREG {
                return Err(FsError::eio(format_args!(
                    "{}/{}: a {} in a format 2 tree was not made by kmsfs (its symlinks and special files are node files)",
                    self.display_dir(pfd),
                    bname.to_string_lossy(),
                    match fmt {
                        libc::S_IFLNK => "symlink",
                        libc::S_IFIFO => "FIFO",
                        libc::S_IFSOCK => "socket",
                        _ => "device",
                    }
                )));
            }
            return Ok(st);
        };
        // The record is checked for every kind (a regular file cut to a node's size
        // residue must not pass for a FIFO), once per state of the inode.
        let n = self.names.as_ref().expect("format 2");
        let k = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec as i64);
        let cached = n.nodes.lock().get(&k).copied();
        let (rdev, len) = match cached {
            Some(v) => v,
            // NONBLOCK, and checked to be the file just seen: a FIFO swapped in between
            // must not hang this thread.
            None => match crate::backing::open_at(
                pfd,
                bname,
                OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let now = rustix::fs::fstat(&fd).map_err(rerr)?;
                    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                        return Err(Errno::ESTALE.into());
                    }
                    let node = self.read_node(fd.as_fd(), kind, &|| {
                        format!("{}/{}", self.display_dir(pfd), bname.to_string_lossy())
                    })?;
                    let v = (node.rdev, node.target.len() as u64);
                    n.nodes.lock().put(k, v);
                    v
                }
                // A FIFO or socket its owner made unreadable, and a daemon not root:
                // its size is all there is to go by (it holds no device number).
                Err(rustix::io::Errno::ACCESS)
                    if matches!(kind, NodeKind::Fifo | NodeKind::Socket) =>
                {
                    (0, 0)
                }
                Err(e) => return Err(e.into()),
            },
        };
        st.st_mode = kind.fmt()
            | if kind == NodeKind::Symlink {
                0o777
            } else {
                st.st_mode & 0o7777
            };
        st.st_size = len as i64;
        st.st_rdev = rdev;
        Ok(st)
    }

    /// The record of node file `fd` (opened for reading).
    pub(super) fn read_node(
        &self,
        fd: BorrowedFd,
        kind: NodeKind,
        path: &dyn Fn() -> String,
    ) -> FsResult<Node> {
        let n = self.names.as_ref().expect("format 2");
        let mut buf = vec![0u8; 16 + 9 + names::TARGET_MAX + 1];
        let len = rustix::io::pread(fd, &mut buf[..], 0).map_err(rerr)?;
        let want = if kind == NodeKind::Symlink {
            buf.len()
        } else {
            16 + 9
        };
        if len < want {
            return Err(FsError::eio(format_args!(
                "{}: node record truncated",
                path()
            )));
        }
        // Only writers make symlinks and special files (a reader's tree key would seal
        // a record as well as open one).
        self.env
            .check_node_auth(fd, &buf[..want])
            .map_err(|e| FsError::eio(format_args!("{}: {kind:?}: {e}", path())))?;
        n.key
            .open_node(&buf[..want], kind)
            .map_err(|e| FsError::eio(format_args!("{}: {kind:?} record: {e}", path())))
    }

    /// A new, unnamed node file in `pfd` (O_TMPFILE) holding `node`; link it in.
    pub(super) fn make_node_file(
        &self,
        pfd: BorrowedFd,
        node: &Node,
        mode: u32,
    ) -> FsResult<OwnedFd> {
        let n = self.names.as_ref().expect("format 2");
        let sealed = n.key.seal_node(node).map_err(name_errno)?;
        let fd = rustix::fs::openat(
            pfd,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )
        .map_err(rerr)?;
        let size = names::node_size(node.kind, sealed.len() as u64, self.geo.cchunk());
        let mut off = 0;
        while off < sealed.len() {
            off += rustix::io::pwrite(&fd, &sealed[off..], off as u64).map_err(rerr)?;
        }
        self.env
            .write_node_auth(fd.as_fd(), &sealed)
            .map_err(|e| FsError::eio(format_args!("new node: {e}")))?;
        rustix::fs::ftruncate(&fd, size).map_err(rerr)?;
        Ok(fd)
    }

    /// The target of symlink `ino` in a format 2 tree.
    pub(super) fn read_link_node(&self, inode: &super::Inode) -> FsResult<Vec<u8>> {
        let open = |dir: BorrowedFd, name: &OsStr| {
            crate::backing::open_at(dir, name, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        };
        let (fd, _) = self.open_named(inode, open)?;
        let node = self.read_node(fd.as_fd(), NodeKind::Symlink, &|| self.display(inode.ino))?;
        Ok(node.target)
    }
}

/// The stat of `name` in `dir`, not following it.
pub(super) fn stat_at(dir: BorrowedFd, name: &OsStr) -> FsResult<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| rerr(e).into())
}
