//! Descriptors of backing directories, by FUSE inode: every backing operation is
//! `*at(directory descriptor, one name)`, so the daemon never resolves a multi-component
//! path that a user of the mount could redirect with a symlink (see `crate::backing`).
//!
//! A directory's descriptor follows the directory itself, not its name: a rename of it or
//! of any ancestor, racing or not, cannot make an operation land elsewhere. The cache is
//! bounded (descriptors are a limited resource and trees may hold more directories than
//! the process may open); a miss reopens the directory one component at a time from its
//! nearest cached ancestor (or the root), `O_NOFOLLOW | O_DIRECTORY` at each step, and
//! checks each step against the backing (st_dev, st_ino) the inode stands for.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fuser::Errno;
use parking_lot::Mutex;

use super::inode::{InodeTable, ROOT_INO};
use crate::backing;

pub struct DirFds {
    root: Arc<OwnedFd>,
    cache: Mutex<lru::LruCache<u64, Arc<OwnedFd>>>,
}

/// How many directory descriptors to keep: a quarter of the descriptor limit, within
/// 16..=4096 (the rest is for open files, the KMS and the FUSE channels).
pub fn capacity_for_limit() -> usize {
    share_of_limit(4, 16, 4096)
}

/// One `per`-th of this process's (soft) descriptor limit, within `min..=max`: what a
/// cache of descriptors may hold.
pub fn share_of_limit(per: u64, min: usize, max: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(per * max as u64);
    ((soft / per) as usize).clamp(min, max)
}

impl DirFds {
    pub fn new(root: OwnedFd, capacity: usize) -> DirFds {
        DirFds {
            root: Arc::new(root),
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).unwrap(),
            )),
        }
    }

    pub fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// The `O_PATH` descriptor of directory inode `ino`.
    pub fn get(&self, inodes: &InodeTable, ino: u64) -> Result<Arc<OwnedFd>, Errno> {
        if ino == ROOT_INO {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.lock().get(&ino) {
            return Ok(fd.clone());
        }
        let steps = inodes.ancestry(ino).ok_or(Errno::ESTALE)?;
        // Start below the nearest ancestor whose descriptor is cached.
        let (mut fd, start) = {
            let mut c = self.cache.lock();
            steps
                .iter()
                .enumerate()
                .skip(1)
                .find_map(|(i, s)| c.get(&s.ino).map(|fd| (fd.clone(), i)))
                .unwrap_or((self.root.clone(), steps.len()))
        };
        for s in steps[..start].iter().rev() {
            let next = backing::open_dir_at(fd.as_fd(), &s.name).map_err(super::rerr)?;
            let st = rustix::fs::fstat(&next).map_err(super::rerr)?;
            if (st.st_dev, st.st_ino) != s.key {
                // The name now holds another directory (changed behind the mount's back).
                return Err(Errno::ENOENT);
            }
            let next = Arc::new(next);
            self.cache.lock().put(s.ino, next.clone());
            fd = next;
        }
        Ok(fd)
    }

    /// The inode is gone (forgotten or removed): drop its descriptor.
    pub fn remove(&self, ino: u64) {
        self.cache.lock().pop(&ino);
    }
}
