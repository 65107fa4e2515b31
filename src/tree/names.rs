//! A tree's names for the offline commands: which backing entries are node files, the
//! plaintext name of a backing name and the backing path of a plaintext path (`kmsfs
//! path`), in format 1 (names as they are) and format 2 (sealed; docs/FORMAT.md "Names").

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{err, fail, Result};
use crate::format::names::{
    self, is_long, long_xattr, NameKey, Node, NodeKind, DIR_ID_LEN, DIR_ID_XATTR,
};
use crate::format::Geometry;
use crate::trust::TrustedTree;

/// The names of one tree.
pub struct TreeNames {
    key: Option<NameKey>,
    /// Generation 1 on: directories are bound to their place under it.
    place: Option<crate::format::auth::PlaceKey>,
    /// Generation 1 on: node files are authenticated under it (None: a reader, or
    /// generation 0).
    auth: Option<crate::format::auth::AuthKey>,
    v2: bool,
    cchunk: u64,
}

impl TreeNames {
    /// The names of tree `t` (sealed if it is format 2).
    pub fn new(t: &TrustedTree) -> TreeNames {
        TreeNames {
            key: t.name_key(),
            place: t.place_key(),
            auth: t.auth_key(),
            ..TreeNames::for_walk(&t.cfg)
        }
    }

    /// Enough of a tree's names to tell node files from regular files (no key).
    pub fn for_walk(cfg: &crate::format::TreeConfig) -> TreeNames {
        TreeNames {
            key: None,
            place: None,
            auth: None,
            v2: cfg.encrypted_names(),
            cchunk: Geometry::new(cfg.chunk_size).cchunk(),
        }
    }

    /// Are names sealed (format 2)?
    pub fn encrypted(&self) -> bool {
        self.v2
    }

    /// The node kind of a backing regular file of `size` bytes (format 2 only).
    pub fn node_kind(&self, size: u64) -> Option<NodeKind> {
        if !self.v2 {
            return None;
        }
        names::node_kind(size, self.cchunk)
    }

    fn key(&self) -> Result<&NameKey> {
        self.key
            .as_ref()
            .ok_or_else(|| err!("the tree's name key is not at hand (format 2 needs the tree key)"))
    }

    /// The id of backing directory `dir`.
    pub fn dir_id(&self, dir: &Path) -> Result<[u8; DIR_ID_LEN]> {
        let fd = crate::backing::open_root(dir).map_err(|e| err!("{}: {e}", dir.display()))?;
        self.dir_id_at(fd.as_fd())
            .map_err(|e| err!("{}: {e}", dir.display()))
    }

    /// The id of the backing directory behind `fd`; the error does not name it.
    pub fn dir_id_at(&self, fd: BorrowedFd) -> Result<[u8; DIR_ID_LEN]> {
        let (n, v) = crate::backing::getxattr_fd(fd, OsStr::new(DIR_ID_XATTR), DIR_ID_LEN + 1)
            .map_err(|e| err!("no directory id ({DIR_ID_XATTR}): {e}"))?;
        v.try_into().map_err(|_| err!("directory id of {n} bytes"))
    }

    /// The plaintext name of entry `name` of backing directory `dir` (id `id`); the error
    /// does not repeat the path.
    pub fn plain_name(&self, dir: &Path, id: &[u8; DIR_ID_LEN], name: &OsStr) -> Result<OsString> {
        if !self.v2 {
            return Ok(name.to_os_string());
        }
        let fd = crate::backing::open_root(dir)?;
        self.plain_name_at(fd.as_fd(), id, name)
    }

    /// The plaintext name of entry `name` of the backing directory behind `dir` (id
    /// `id`), its long-name xattr read from the entry itself (not followed).
    pub fn plain_name_at(
        &self,
        dir: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        name: &OsStr,
    ) -> Result<OsString> {
        if !self.v2 {
            return Ok(name.to_os_string());
        }
        let key = self.key()?;
        let b = name.as_bytes();
        let long = if is_long(b) {
            let obj = crate::backing::open_obj_at(dir, name)?;
            let (_, v) = crate::backing::getxattr_fd(obj.as_fd(), OsStr::new(&long_xattr(b)), 1024)
                .map_err(|e| err!("long name xattr: {e}"))?;
            Some(v)
        } else {
            None
        };
        key.open(id, b, long.as_deref())
            .map(OsString::from_vec)
            .map_err(|e| err!("{e}"))
    }

    /// The backing path (below `root`) of plaintext path `plain` (relative to the tree).
    pub fn backing_path(&self, root: &Path, plain: &Path) -> Result<PathBuf> {
        let mut cur = root.to_path_buf();
        for c in plain.components() {
            let Component::Normal(n) = c else {
                if matches!(c, Component::CurDir) {
                    continue;
                }
                fail!(
                    "{}: give a path inside the tree, without `..`",
                    plain.display()
                );
            };
            cur = match self.v2 {
                false => cur.join(n),
                true => {
                    let key = self.key()?;
                    let id = self.dir_id(&cur)?;
                    let s = key
                        .seal(&id, n.as_bytes())
                        .map_err(|e| err!("{}: {e}", n.to_string_lossy()))?;
                    cur.join(OsStr::from_bytes(&s.backing))
                }
            };
        }
        Ok(cur)
    }

    /// The plaintext path (relative to the tree) of backing path `bpath` below `root`.
    pub fn plain_path(&self, root: &Path, bpath: &Path) -> Result<PathBuf> {
        let rel = bpath
            .strip_prefix(root)
            .map_err(|_| err!("{} is not below {}", bpath.display(), root.display()))?;
        let mut dir = root.to_path_buf();
        let mut out = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(n) = c else {
                fail!("{}: not a plain path below the tree", bpath.display());
            };
            let id = match self.v2 {
                true => self.dir_id(&dir)?,
                false => [0; DIR_ID_LEN],
            };
            out.push(
                self.plain_name(&dir, &id, n)
                    .map_err(|e| err!("{}: {e}", dir.join(n).display()))?,
            );
            dir.push(n);
        }
        Ok(out)
    }

    /// Checks that directory `name` of the backing directory `dir` (id `id`) is bound to
    /// that place, as the mount does (generation 1 on); the error does not name it.
    pub fn check_place_at(
        &self,
        dir: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        name: &OsStr,
    ) -> Result<()> {
        let Some(p) = &self.place else {
            return Ok(());
        };
        let fd = crate::backing::open_dir_at(dir, name)?;
        let own = self.dir_id_at(fd.as_fd())?;
        let stored = crate::backing::read_place(fd.as_fd());
        p.verify(&own, id, name.as_bytes(), stored.as_deref())
            .map_err(|e| err!("directory not bound to this place ({e}): moved or swapped in from elsewhere; the mount refuses it"))
    }

    /// The record of node file `path` of kind `kind`.
    pub fn read_node(&self, path: &Path, kind: NodeKind) -> Result<Node> {
        let f = crate::tree::restore::open_backing_file(path)?;
        self.read_node_from(&f, kind)
            .map_err(|e| err!("{}: {e}", path.display()))
    }

    /// The record of the node file open as `f` (of kind `kind`); the error does not name it.
    pub fn read_node_from(&self, f: &std::fs::File, kind: NodeKind) -> Result<Node> {
        let key = self.key()?;
        let mut buf = vec![0u8; 16 + 9 + names::TARGET_MAX + 1];
        let n = rustix::io::pread(f, &mut buf[..], 0)?;
        let want = if kind == NodeKind::Symlink {
            buf.len()
        } else {
            16 + 9
        };
        if n < want {
            fail!("node record truncated");
        }
        if let Some(a) = &self.auth {
            let stored = crate::envelope::stored_auth(f.as_fd()).ok().flatten();
            a.verify_node(&buf[..want], stored.as_deref())
                .map_err(|e| err!("{kind:?} not made by a writer of this tree: {e}"))?;
        }
        key.open_node(&buf[..want], kind)
            .map_err(|e| err!("{kind:?} record: {e}"))
    }
}
