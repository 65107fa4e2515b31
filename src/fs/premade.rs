//! Backing files made ahead of need. When files are being created one after another in
//! a directory, a background thread makes the next few there as unnamed `O_TMPFILE`s with
//! their header already written, and a create links one in under its name (after giving
//! it the mode, times and owner asked for) instead of waiting for the backing filesystem
//! to allocate an inode and an xattr block. On this VM's journal-less ext4 an inode
//! allocation right after many removals costs hundreds of microseconds (see
//! bench/results/2026-12-06-create-ext4.md).
//!
//! How many ramp with the run of creates, as readahead does: one from a directory's second
//! create in a row, two from its `DEEP_AFTER`th. The last ones of a run are made for
//! nothing and freed, so a tree of small directories pays one per directory, not two (a
//! source tree of 5,001 directories: 6,414 files made for nothing with two throughout,
//! at most 3,291 now), while a burst in one directory keeps two (2,352-3,045 files/s
//! against 1,851-2,241 with one). Against none: a burst 2,808-2,903 files/s against
//! 1,877-1,939, fsbench's small-file creates 1.31-2.23x, the source tree's untar
//! 0.82-0.94x the time on a fresh tree but 0.83-0.92x the speed in fsbench's runs
//! (bench/results/2026-12-06-files-ahead-default.md, 2026-12-06-1600.md).
//!
//! On by default (`--no-files-ahead` turns them off). Dropped ones take their keys out
//! of the envelope's key cache (`Ready`'s drop): left there, they pushed real files' keys
//! out of it and a tree's readback called the KMS for a third of its files
//! (bench/results/2026-12-06-files-ahead-keys.md).
//!
//! Bounded: at most `MAX_PER_DIR` files for each of the `dirs()` directories last asked for,
//! each used within `envelope::POOL_MAX_AGE` of being made or dropped. Unnamed, they
//! vanish with their descriptor (a crash included); nothing in the backing tree names
//! them. A file made in a directory is only linked into that same directory, and only
//! while the directory's mode and owner are what they were (`DirKey`; an extended
//! attribute set on it, such as a default ACL, drops its files), so it inherited what a
//! direct create there inherits. Each holds its directory open, so the directory's inode
//! number cannot pass to another directory while the file waits; they stay when the
//! kernel forgets the directory, and go when it is removed through the mount.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags};

use crate::envelope::{Envelope, POOL_MAX_AGE};
use crate::format::Header;

/// Files kept ready in a directory: one in a run of creates, two in a long one.
const MAX_PER_DIR: usize = 2;
/// The create of a run from which a directory has two files kept ready.
const DEEP_AFTER: u32 = 32;

/// How many files to keep ready in a directory whose run of creates is `run` long.
fn depth(run: u32) -> usize {
    match run {
        0 | 1 => 0,
        r if r < DEEP_AFTER => 1,
        _ => MAX_PER_DIR,
    }
}

/// Directories with files kept ready (least recently asked for dropped first): one per
/// 32 of the descriptor limit (each file made ahead holds one, and its directory's one
/// more), within 1..=128.
fn dirs() -> usize {
    super::dirs::share_of_limit(32, 1, 128)
}
/// Creates in a directory are a run while each comes this soon after the one before (a
/// single create in a directory costs nothing more).
const STREAK: Duration = Duration::from_secs(1);

/// A directory's run of creates: when the last was, and how many in a row.
#[derive(Clone, Copy)]
struct Run {
    at: Instant,
    len: u32,
}

/// A file made ahead: its descriptor and header, and where and when it was made. One
/// dropped unused takes its keys out of the envelope's cache: they were put there when
/// its header was made, and thousands of them (a tree untarred, two per directory) pushed
/// real files' keys out of the 32,768-entry LRU, so reading the tree back called the KMS
/// for 10,274 files (readback 11.7-12.0 s against 8.6-8.8 s without files made ahead).
pub(super) struct Ready {
    /// Both `Some` until taken by `into_parts`.
    fd: Option<OwnedFd>,
    header: Option<Header>,
    dir: DirKey,
    made: Instant,
    env: Weak<Envelope>,
    /// The directory it was made in, held open: while it is, that directory's inode
    /// cannot be freed and its number given to another, so `dir` (device and inode)
    /// names this one directory even after the kernel forgot it or it was removed.
    _home: Arc<OwnedFd>,
}

impl Ready {
    /// The file's descriptor and header, for linking it in (its keys stay cached).
    pub(super) fn into_parts(mut self) -> (OwnedFd, Header) {
        let fd = self
            .fd
            .take()
            .expect("a file made ahead has its descriptor");
        let header = self
            .header
            .take()
            .expect("a file made ahead has its header");
        (fd, header)
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let (Some(h), Some(env)) = (&self.header, self.env.upgrade()) {
            env.forget_keys(&h.file_id);
        }
    }
}

/// A backing directory as a file made in it saw it: which one, and the mode and owner
/// its new files inherit from (a set-group-ID directory gives them its group). Files made
/// before any of these changed are not used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct DirKey {
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl DirKey {
    fn of(st: &rustix::fs::Stat) -> DirKey {
        DirKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

type Pools = Mutex<lru::LruCache<u64, Vec<Ready>>>;

/// The files made ahead, by directory inode, and the thread that makes them.
pub(super) struct Premade {
    /// Off: nothing is ever made ahead (no thread either).
    on: bool,
    pools: Arc<Pools>,
    tx: SyncSender<(u64, Arc<OwnedFd>, usize)>,
    /// Each directory's run of creates.
    runs: Mutex<lru::LruCache<u64, Run>>,
    taken: AtomicU64,
}

impl Premade {
    pub(super) fn new(env: Arc<Envelope>, on: bool) -> Premade {
        let dirs = std::num::NonZeroUsize::new(dirs()).unwrap();
        let pools: Arc<Pools> = Arc::new(Mutex::new(lru::LruCache::new(dirs)));
        let (tx, rx) = sync_channel::<(u64, Arc<OwnedFd>, usize)>(dirs.get());
        let p = Arc::downgrade(&pools);
        if on {
            let spawned = std::thread::Builder::new()
                .name("kmsfs-premade".into())
                .spawn(move || {
                    // Ends when the mount drops its sender.
                    while let Ok((dir, pfd, want)) = rx.recv() {
                        let Some(pools) = p.upgrade() else { return };
                        fill(&pools, &env, dir, &pfd, want);
                    }
                });
            if let Err(e) = spawned {
                tracing::debug!("cannot start the file pre-maker: {e}");
            }
        }
        Premade {
            on,
            pools,
            tx,
            runs: Mutex::new(lru::LruCache::new(dirs)),
            taken: AtomicU64::new(0),
        }
    }

    /// A file made ahead in directory `dir` (inode), whose backing directory is `pfd`.
    /// Costs nothing (no system call) where none was made.
    pub(super) fn take(&self, dir: u64, pfd: BorrowedFd) -> Option<Ready> {
        if self.pools.lock().peek(&dir).is_none_or(|v| v.is_empty()) {
            return None;
        }
        let key = DirKey::of(&rustix::fs::fstat(pfd).ok()?);
        // Stale ones are closed after the lock is let go: closing an unnamed file frees it.
        let mut stale = Vec::new();
        let mut pools = self.pools.lock();
        let v = pools.get_mut(&dir)?;
        while let Some(r) = v.pop() {
            if r.dir == key && r.made.elapsed() < POOL_MAX_AGE {
                self.taken.fetch_add(1, Ordering::Relaxed);
                return Some(r);
            }
            stale.push(r);
        }
        drop(pools);
        drop(stale);
        None
    }

    /// A file was just created in `dir`: if another was shortly before, files are made
    /// ahead there (in the background; never waits), as many as the run is long.
    pub(super) fn created(&self, dir: u64, pfd: &Arc<OwnedFd>) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        let len = {
            let mut runs = self.runs.lock();
            let len = match runs.get(&dir) {
                Some(r) if now.duration_since(r.at) < STREAK => r.len.saturating_add(1),
                _ => 1,
            };
            runs.put(dir, Run { at: now, len });
            len
        };
        let want = depth(len);
        if want > 0 {
            match self.tx.try_send((dir, pfd.clone(), want)) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Drops what was made in `dir` (removed, or its extended attributes changed; not
    /// when the kernel merely forgets it, see `KmsFs::forget`).
    pub(super) fn forget(&self, dir: u64) {
        let gone = self.pools.lock().pop(&dir);
        drop(gone); // closed (freed) outside the lock
    }

    /// Drops everything made ahead (space is short); true if anything was.
    pub(super) fn clear(&self) -> bool {
        let gone: Vec<Vec<Ready>> = {
            let mut pools = self.pools.lock();
            let mut gone = Vec::with_capacity(pools.len());
            while let Some((_, v)) = pools.pop_lru() {
                gone.push(v);
            }
            gone
        };
        // closed (freed) outside the lock
        gone.iter().any(|v| !v.is_empty())
    }

    /// Files taken so far (for the tests).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

/// Makes files in `dir` (backing directory `pfd`) until it has `want`; stops at the first
/// failure (no O_TMPFILE, no space, the KMS refusing): creates then go the usual way.
fn fill(pools: &Pools, env: &Arc<Envelope>, dir: u64, pfd: &Arc<OwnedFd>, want: usize) {
    let Ok(st) = rustix::fs::fstat(pfd) else {
        return;
    };
    let key = DirKey::of(&st);
    loop {
        let have = pools.lock().get(&dir).map_or(0, |v| v.len());
        if have >= want {
            return;
        }
        let Ok(fd) = rustix::fs::openat(
            pfd,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) else {
            return;
        };
        let Ok((header, _keys)) = env.take_header() else {
            return;
        };
        if let Err(e) = env.write_new_header(fd.as_fd(), &header) {
            tracing::debug!("making a file ahead: {e}");
            env.forget_keys(&header.file_id);
            return;
        }
        let r = Ready {
            fd: Some(fd),
            header: Some(header),
            dir: key,
            made: Instant::now(),
            env: Arc::downgrade(env),
            _home: pfd.clone(),
        };
        // A directory pushed out of the pools has its files closed (freed) outside the lock.
        let evicted = {
            let mut pools = pools.lock();
            match pools.get_mut(&dir) {
                Some(v) => {
                    v.push(r);
                    None
                }
                None => pools.push(dir, vec![r]),
            }
        };
        drop(evicted);
    }
}
