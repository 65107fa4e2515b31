//! Removed backing files and directories are freed off the request path.
//!
//! A kmsfs backing file carries its header in extended attributes; on ext4 they do not
//! fit in a 256-byte inode and get a block of their own. Freeing the last link frees the
//! inode, its data and that block inside unlink(2) itself, and on a filesystem mounted
//! `-o discard` ext4 discards each freed range before the call returns (measured here:
//! 68-116 µs per file, bench/results/2026-12-06-unlink-xattr.md). So an unlink through
//! the mount holds a descriptor of the file across the unlinkat: the name is gone when
//! the reply leaves, as POSIX asks, and the inode is freed when this thread closes the
//! descriptor — the same as when any process still has a removed file open (ext4's
//! orphan list frees it after a crash). The queue is bounded: when it is full the caller
//! closes the descriptor itself, so the files waiting to be freed (and the descriptors
//! held) never exceed `DEPTH`. And no operation answers ENOSPC while removed files wait:
//! it waits for them (`flush`) and runs again (`KmsFs::with_space`).

use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Removed files waiting to be freed, at most.
pub const DEPTH: usize = 64;

/// How long `flush` waits at most (a close that frees a huge file on a slow disk).
const FLUSH_WAIT: Duration = Duration::from_secs(30);

pub struct Reaper {
    tx: Option<SyncSender<OwnedFd>>,
    thread: Option<JoinHandle<()>>,
    /// Descriptors handed over and not yet closed, and the condition told when that
    /// count reaches 0.
    pending: Arc<(Mutex<usize>, Condvar)>,
}

impl Reaper {
    /// Starts the releasing thread (without one, every release is the caller's).
    pub fn new() -> Reaper {
        let (tx, rx) = sync_channel::<OwnedFd>(DEPTH);
        let pending = Arc::new((Mutex::new(0usize), Condvar::new()));
        let counts = pending.clone();
        let thread = std::thread::Builder::new()
            .name("kmsfs-reaper".into())
            .spawn(move || {
                for fd in rx {
                    // The close that frees a removed file.
                    drop(fd);
                    closed(&counts);
                }
            });
        match thread {
            Ok(t) => Reaper {
                tx: Some(tx),
                thread: Some(t),
                pending,
            },
            Err(e) => {
                tracing::debug!(
                    "cannot start the reaper thread: {e}; removed files are freed at once"
                );
                Reaper {
                    tx: None,
                    thread: None,
                    pending,
                }
            }
        }
    }

    /// Frees the removed file `fd` holds: later on the reaper thread, or now when it is
    /// behind (or gone).
    pub fn release(&self, fd: OwnedFd) {
        let Some(tx) = &self.tx else {
            return drop(fd);
        };
        *self.pending.0.lock() += 1;
        if let Err(TrySendError::Full(fd) | TrySendError::Disconnected(fd)) = tx.try_send(fd) {
            drop(fd);
            // (the thread may have closed all the others meanwhile: a `flush` may wait on it)
            closed(&self.pending);
        }
    }

    /// Waits until every file handed over so far is freed; answers whether any was
    /// still waiting (so that an operation refused for want of space may run again).
    pub fn flush(&self) -> bool {
        let mut n = self.pending.0.lock();
        if *n == 0 {
            return false;
        }
        let waited = self
            .pending
            .1
            .wait_while_for(&mut n, |n| *n > 0, FLUSH_WAIT);
        if waited.timed_out() {
            tracing::warn!("removed files are still being freed after {FLUSH_WAIT:?}");
        }
        true
    }
}

/// One descriptor handed over is closed; the last one wakes whoever waits in `flush`.
fn closed(pending: &(Mutex<usize>, Condvar)) {
    let mut n = pending.0.lock();
    *n -= 1;
    if *n == 0 {
        pending.1.notify_all();
    }
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper::new()
    }
}

impl Drop for Reaper {
    /// Frees everything still queued before the filesystem goes.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Every descriptor handed over is closed, at the latest when the reaper goes (seen
    /// through pipes: a reader gets end-of-file once the writer is closed), and no more
    /// than the queue's depth wait at any time.
    #[test]
    fn every_released_descriptor_is_closed() {
        let reaper = Reaper::new();
        let mut readers = Vec::new();
        for _ in 0..(DEPTH * 3) {
            let (r, w) = rustix::pipe::pipe().unwrap();
            reaper.release(w);
            readers.push(std::fs::File::from(r));
            // Held at most: the queue, and the one the thread is closing.
            assert!(*reaper.pending.0.lock() <= DEPTH + 1);
        }
        drop(reaper);
        for mut r in readers {
            let mut b = [0u8; 1];
            assert_eq!(r.read(&mut b).unwrap(), 0, "a writer is still open");
        }
    }

    /// `flush` returns once everything handed over is closed, and says whether it waited.
    #[test]
    fn flush_waits_until_every_descriptor_is_closed() {
        let reaper = Reaper::new();
        assert!(!reaper.flush(), "nothing was pending");
        for _ in 0..5 {
            let mut readers = Vec::new();
            for _ in 0..DEPTH {
                let (r, w) = rustix::pipe::pipe().unwrap();
                reaper.release(w);
                readers.push(std::fs::File::from(r));
            }
            reaper.flush();
            for mut r in readers {
                let mut b = [0u8; 1];
                assert_eq!(r.read(&mut b).unwrap(), 0, "flush returned before a close");
            }
            assert_eq!(*reaper.pending.0.lock(), 0);
            assert!(!reaper.flush());
        }
    }
}
