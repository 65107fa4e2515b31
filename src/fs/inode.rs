//! The inode table. Each inode the kernel knows is remembered by the names it was seen
//! under, (parent inode, name), and by the backing (st_dev, st_ino) it stands for, so a
//! directory can be reopened one component at a time from the nearest directory whose
//! descriptor is cached (see `super::dirs`), each step checked against that key. No
//! descriptor is held per inode: trees with more inodes than the process may open
//! descriptors must work (an O_PATH fd per inode ran out at 20,000 here). FUSE inode
//! numbers come from the backing (st_dev, st_ino).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// Inodes that cannot use their backing st_ino (another device, or st_ino 1) are numbered
/// from here.
const SYNTHETIC_BASE: u64 = 1 << 62;

/// One kernel inode: a backing object, known by its (st_dev, st_ino).
pub struct Inode {
    /// The number the kernel knows it by.
    pub ino: u64,
    /// The backing object's (st_dev, st_ino).
    pub key: (u64, u64),
    /// S_IFMT bits of the backing file
    pub fmt: u32,
}

impl Inode {
    /// A directory?
    pub fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }
    /// A regular file?
    pub fn is_file(&self) -> bool {
        self.fmt == libc::S_IFREG
    }
    /// A symlink?
    pub fn is_symlink(&self) -> bool {
        self.fmt == libc::S_IFLNK
    }
}

struct Entry {
    inode: Arc<Inode>,
    nlookup: u64,
    /// names this inode is known under (several for hard links)
    names: Vec<(u64, OsString)>,
}

/// The inodes the kernel holds references to, with the names they were seen under.
pub struct InodeTable {
    inner: RwLock<Tables>,
    root_dev: u64,
}

struct Tables {
    by_ino: HashMap<u64, Entry>,
    by_key: HashMap<(u64, u64), u64>,
    /// (parent, name) -> inode, the reverse of `Entry::names`
    dentries: HashMap<(u64, OsString), u64>,
    next_synthetic: u64,
}

/// One step of the way from an inode up to the root: the inode, the backing object it
/// must be, and its name in its parent (the next step up, or the root).
pub struct Step {
    pub ino: u64,
    pub key: (u64, u64),
    pub name: OsString,
}

impl Tables {
    fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts: Vec<&OsStr> = vec![];
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                if parts.is_empty() {
                    return Some(PathBuf::from("."));
                }
                return Some(parts.iter().rev().collect());
            }
            let e = self.by_ino.get(&cur)?;
            // the first name whose parent is still known
            let (parent, name) = e.names.iter().find(|(p, _)| self.by_ino.contains_key(p))?;
            parts.push(name);
            cur = *parent;
        }
        None
    }
}

impl InodeTable {
    /// A table holding only the root, the backing directory `root_st`.
    pub fn new(root_st: &rustix::fs::Stat) -> InodeTable {
        let key = (root_st.st_dev, root_st.st_ino);
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            key,
            fmt: libc::S_IFDIR,
        });
        let mut by_ino = HashMap::new();
        // The root is never forgotten: give it a lookup count that cannot reach zero.
        by_ino.insert(
            ROOT_INO,
            Entry {
                inode: root,
                nlookup: u64::MAX / 2,
                names: vec![],
            },
        );
        let mut by_key = HashMap::new();
        by_key.insert(key, ROOT_INO);
        InodeTable {
            inner: RwLock::new(Tables {
                by_ino,
                by_key,
                dentries: HashMap::new(),
                next_synthetic: SYNTHETIC_BASE,
            }),
            root_dev: root_st.st_dev,
        }
    }

    /// The inode `ino`, if the kernel still holds it.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.inner.read().by_ino.get(&ino).map(|e| e.inode.clone())
    }

    /// Backing path of an inode relative to the backing root ("." for the root).
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        self.inner.read().path(ino)
    }

    /// Backing path of `name` in directory `parent` (for log lines only: never opened).
    pub fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        if parent == ROOT_INO {
            return Some(PathBuf::from(name));
        }
        let mut p = self.path(parent)?;
        p.push(name);
        Some(p)
    }

    /// The way from `ino` up to (not including) the root, `ino` first; None if some
    /// ancestor is no longer known.
    pub fn ancestry(&self, ino: u64) -> Option<Vec<Step>> {
        let t = self.inner.read();
        let mut steps = vec![];
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                return Some(steps);
            }
            let e = t.by_ino.get(&cur)?;
            let (parent, name) = e.names.iter().find(|(p, _)| t.by_ino.contains_key(p))?;
            steps.push(Step {
                ino: cur,
                key: e.inode.key,
                name: name.clone(),
            });
            cur = *parent;
        }
        None
    }

    /// The names `ino` is known under (parent, name), most recently used first.
    pub fn names(&self, ino: u64) -> Vec<(u64, OsString)> {
        self.inner
            .read()
            .by_ino
            .get(&ino)
            .map(|e| e.names.clone())
            .unwrap_or_default()
    }

    /// The inode `name` in `parent` was last seen as, if the kernel still holds it.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.inner
            .read()
            .dentries
            .get(&(parent, name.to_os_string()))
            .copied()
    }

    /// The FUSE number a directory entry will get, without registering it (readdir).
    pub fn peek_ino(&self, st_ino: u64) -> u64 {
        if let Some(&ino) = self.inner.read().by_key.get(&(self.root_dev, st_ino)) {
            return ino;
        }
        if st_ino != ROOT_INO && st_ino < SYNTHETIC_BASE {
            st_ino
        } else {
            SYNTHETIC_BASE - 1
        }
    }

    /// Registers `name` in `parent` as a name of the backing file `st` and counts one
    /// kernel lookup reference.
    pub fn insert(&self, parent: u64, name: &OsStr, st: &rustix::fs::Stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        let dentry = (parent, name.to_os_string());
        let fmt = st.st_mode & libc::S_IFMT;
        let mut t = self.inner.write();
        // Without a descriptor held per inode, the backing filesystem may reuse the inode
        // number of a file unlinked while the kernel still remembers it: an entry with no
        // names left, or of another type, is that dead file, not this one.
        let live = t.by_key.get(&key).copied().filter(|ino| {
            t.by_ino
                .get(ino)
                .is_some_and(|e| !e.names.is_empty() && e.inode.fmt == fmt)
        });
        if let Some(ino) = live {
            // the name may have pointed at another (replaced) inode before
            if let Some(prev) = t.dentries.insert(dentry.clone(), ino).filter(|&p| p != ino) {
                if let Some(pe) = t.by_ino.get_mut(&prev) {
                    pe.names.retain(|n| *n != dentry);
                }
            }
            let e = t.by_ino.get_mut(&ino).expect("tables agree");
            e.nlookup += 1;
            if !e.names.contains(&dentry) {
                // most recent first: the name just used is the one most likely to exist
                e.names.insert(0, dentry);
            }
            return e.inode.clone();
        }
        let ino = if st.st_dev == self.root_dev
            && st.st_ino != ROOT_INO
            && st.st_ino < SYNTHETIC_BASE
            && !t.by_ino.contains_key(&st.st_ino)
        {
            st.st_ino
        } else {
            t.next_synthetic += 1;
            t.next_synthetic
        };
        let inode = Arc::new(Inode { ino, key, fmt });
        if let Some(prev) = t.dentries.insert(dentry.clone(), ino) {
            if let Some(pe) = t.by_ino.get_mut(&prev) {
                pe.names.retain(|n| *n != dentry);
            }
        }
        t.by_ino.insert(
            ino,
            Entry {
                inode: inode.clone(),
                nlookup: 1,
                names: vec![dentry],
            },
        );
        t.by_key.insert(key, ino);
        inode
    }

    /// Drops `n` kernel references; true when the inode is gone from the table.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let mut t = self.inner.write();
        let gone = match t.by_ino.get_mut(&ino) {
            Some(e) => {
                e.nlookup = e.nlookup.saturating_sub(n);
                e.nlookup == 0
            }
            None => false,
        };
        if gone {
            if let Some(e) = t.by_ino.remove(&ino) {
                if t.by_key.get(&e.inode.key) == Some(&ino) {
                    t.by_key.remove(&e.inode.key);
                }
                for n in e.names {
                    if t.dentries.get(&n) == Some(&ino) {
                        t.dentries.remove(&n);
                    }
                }
            }
        }
        gone
    }

    /// `name` in `parent` no longer exists (unlink, rmdir).
    pub fn unlinked(&self, parent: u64, name: &OsStr) {
        let mut t = self.inner.write();
        let d = (parent, name.to_os_string());
        if let Some(ino) = t.dentries.remove(&d) {
            if let Some(e) = t.by_ino.get_mut(&ino) {
                e.names.retain(|n| *n != d);
            }
        }
    }

    /// A rename succeeded on the backing tree; `exchange` for RENAME_EXCHANGE.
    pub fn renamed(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        exchange: bool,
    ) {
        let mut t = self.inner.write();
        let old = (parent, name.to_os_string());
        let new = (newparent, newname.to_os_string());
        let moved = t.dentries.remove(&old);
        let target = t.dentries.remove(&new);
        if let Some(ino) = target {
            if let Some(e) = t.by_ino.get_mut(&ino) {
                e.names.retain(|n| *n != new);
                if exchange {
                    e.names.insert(0, old.clone());
                }
            }
            if exchange {
                t.dentries.insert(old.clone(), ino);
            }
        }
        if let Some(ino) = moved {
            if let Some(e) = t.by_ino.get_mut(&ino) {
                e.names.retain(|n| *n != old);
                e.names.insert(0, new.clone());
            }
            t.dentries.insert(new, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ino: u64, fmt: u32) -> rustix::fs::Stat {
        // SAFETY: `Stat` is a plain C struct; all-zero is a valid value.
        let mut s: rustix::fs::Stat = unsafe { std::mem::zeroed() };
        s.st_dev = 7;
        s.st_ino = ino;
        s.st_mode = fmt | 0o644;
        s
    }

    #[test]
    fn a_reused_inode_number_is_a_new_inode() {
        let t = InodeTable::new(&st(2, libc::S_IFDIR));
        let a = t.insert(ROOT_INO, OsStr::new("x"), &st(100, libc::S_IFREG));
        assert_eq!(
            t.insert(ROOT_INO, OsStr::new("x"), &st(100, libc::S_IFREG))
                .ino,
            a.ino,
            "same file, same inode"
        );
        // unlinked while the kernel still holds it; the backing fs reuses the number
        t.unlinked(ROOT_INO, OsStr::new("x"));
        let b = t.insert(ROOT_INO, OsStr::new("x"), &st(100, libc::S_IFIFO));
        assert_ne!(b.ino, a.ino);
        assert_eq!(b.fmt, libc::S_IFIFO);
        assert_eq!(t.path(b.ino).unwrap(), PathBuf::from("x"));
        // forgetting the dead one leaves the new one reachable by its key
        t.forget(a.ino, 2);
        assert_eq!(
            t.insert(ROOT_INO, OsStr::new("x"), &st(100, libc::S_IFIFO))
                .ino,
            b.ino
        );
        // a rename keeps paths right for everything below a directory
        let d = t.insert(ROOT_INO, OsStr::new("d"), &st(200, libc::S_IFDIR));
        let f = t.insert(d.ino, OsStr::new("f"), &st(201, libc::S_IFREG));
        t.renamed(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("e"), false);
        assert_eq!(t.path(f.ino).unwrap(), PathBuf::from("e/f"));
    }
}
