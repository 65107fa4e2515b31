//! The inode table: each inode the kernel knows holds an O_PATH descriptor of its backing
//! file, so renames and hard links never leave a stale path behind. FUSE inode numbers
//! come from the backing (st_dev, st_ino).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use parking_lot::RwLock;

pub const ROOT_INO: u64 = 1;
/// Inodes that cannot use their backing st_ino (another device, or st_ino 1) are numbered
/// from here.
const SYNTHETIC_BASE: u64 = 1 << 62;

pub struct Inode {
    pub ino: u64,
    /// O_PATH | O_NOFOLLOW descriptor of the backing file.
    pub fd: OwnedFd,
    pub key: (u64, u64),
    pub is_dir: bool,
    pub is_symlink: bool,
    pub is_file: bool,
}

impl Inode {
    /// `/proc/self/fd/N`: opens, xattrs and chmod through the O_PATH descriptor.
    pub fn proc_path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).unwrap()
    }

    /// The backing path, for log lines only.
    pub fn backing_path(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("<inode {}>", self.ino))
    }
}

struct Entry {
    inode: Arc<Inode>,
    nlookup: u64,
}

pub struct InodeTable {
    inner: RwLock<Tables>,
    root_dev: u64,
}

struct Tables {
    by_ino: HashMap<u64, Entry>,
    by_key: HashMap<(u64, u64), u64>,
    next_synthetic: u64,
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root_st: &rustix::fs::Stat) -> InodeTable {
        let key = (root_st.st_dev, root_st.st_ino);
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            fd: root_fd,
            key,
            is_dir: true,
            is_symlink: false,
            is_file: false,
        });
        let mut by_ino = HashMap::new();
        // The root is never forgotten: give it a lookup count that cannot reach zero.
        by_ino.insert(
            ROOT_INO,
            Entry {
                inode: root,
                nlookup: u64::MAX / 2,
            },
        );
        let mut by_key = HashMap::new();
        by_key.insert(key, ROOT_INO);
        InodeTable {
            inner: RwLock::new(Tables {
                by_ino,
                by_key,
                next_synthetic: SYNTHETIC_BASE,
            }),
            root_dev: root_st.st_dev,
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.inner.read().by_ino.get(&ino).map(|e| e.inode.clone())
    }

    /// The FUSE number a directory entry will get, without registering it (readdir).
    pub fn peek_ino(&self, dev: u64, st_ino: u64) -> u64 {
        if let Some(&ino) = self.inner.read().by_key.get(&(dev, st_ino)) {
            return ino;
        }
        if dev == self.root_dev && st_ino != ROOT_INO && st_ino < SYNTHETIC_BASE {
            st_ino
        } else {
            // unknown yet; any stable non-root number will do for readdir
            SYNTHETIC_BASE - 1
        }
    }

    /// Registers a looked-up backing file (or bumps its lookup count) and returns it.
    pub fn insert(&self, fd: OwnedFd, st: &rustix::fs::Stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        let mut t = self.inner.write();
        if let Some(&ino) = t.by_key.get(&key) {
            let e = t.by_ino.get_mut(&ino).expect("tables agree");
            e.nlookup += 1;
            return e.inode.clone(); // `fd` is closed: we already hold one for this inode
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
        let fmt = st.st_mode & libc::S_IFMT;
        let inode = Arc::new(Inode {
            ino,
            fd,
            key,
            is_dir: fmt == libc::S_IFDIR,
            is_symlink: fmt == libc::S_IFLNK,
            is_file: fmt == libc::S_IFREG,
        });
        t.by_ino.insert(
            ino,
            Entry {
                inode: inode.clone(),
                nlookup: 1,
            },
        );
        t.by_key.insert(key, ino);
        inode
    }

    pub fn forget(&self, ino: u64, n: u64) {
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
                t.by_key.remove(&e.inode.key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
