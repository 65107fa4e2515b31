//! Large cold reads that bypass the backing file's page cache.
//!
//! A FUSE read is cached twice: the plaintext in the mount's page cache and, unless told
//! otherwise, the ciphertext in the backing file's. For a large read of data the backing
//! cache does not hold, the second copy is pure cost: a copy out of freshly filled pages
//! (the largest item of a cold sequential read's profile) and memory taken from the
//! cache that serves the plaintext. Such reads go to the disk with `O_DIRECT` instead,
//! on a second descriptor reopened from the first through `/proc/self/fd` (the same open
//! inode, never a name). Whatever the cache holds — a page just written, still dirty, or
//! read before — is read through the cache as before (`cachestat` tells, without reading
//! anything in), so a direct read never sees older bytes than a buffered one would.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};

/// Reads at least this long are candidates (one FUSE read-ahead request is 1 MiB).
pub const DIRECT_MIN: usize = 256 * 1024;

/// Offsets, lengths and buffer addresses of direct reads are multiples of this (the
/// largest logical block size in use; 512-byte devices accept it too).
const ALIGN: usize = 4096;

/// The lazily opened `O_DIRECT` twin of one backing file.
#[derive(Default)]
pub struct Direct {
    pub(super) fd: OnceLock<Option<File>>,
    /// Set when the backing filesystem refused a direct read: buffered from then on.
    refused: AtomicBool,
    /// Reads served directly (counted for the tests).
    taken: AtomicU64,
}

impl Direct {
    /// How many reads went to the disk directly.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    fn file(&self, buffered: &File) -> Option<&File> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        self.fd
            .get_or_init(|| {
                rustix::fs::open(
                    crate::backing::proc_path(buffered.as_fd()),
                    OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()
                .map(File::from)
            })
            .as_ref()
    }

    /// Reads exactly `len` bytes at `off` of `buffered`'s file into `buf` (scratch space,
    /// grown as needed) and answers where they are in it. Short files are
    /// `UnexpectedEof`, as with `read_exact_at`.
    pub fn read_exact(
        &self,
        buffered: &File,
        buf: &mut Vec<u8>,
        off: u64,
        len: usize,
    ) -> io::Result<Range<usize>> {
        // In this order: the twin is opened only for the first large uncached read.
        if len < DIRECT_MIN || any_cached(buffered, off, len as u64) {
            return buffered_read(buffered, buf, 0, off, len);
        }
        let Some(direct) = self.file(buffered) else {
            return buffered_read(buffered, buf, 0, off, len);
        };
        // Lay the range out so that its aligned start falls on an aligned address:
        // `base` is where byte `off` lands, with `off % ALIGN` bytes of slack before it.
        let need = len + 4 * ALIGN;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let (o, q) = (off as usize % ALIGN, buf.as_ptr() as usize % ALIGN);
        let base = ALIGN + (o + ALIGN - q) % ALIGN;
        let start = off - o as u64;
        let end = (off + len as u64).next_multiple_of(ALIGN as u64);
        let mut at = start;
        while at < off + len as u64 {
            let from = base - o + (at - start) as usize;
            let to = base - o + (end - start) as usize;
            match direct.read_at(&mut buf[from..to], at) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    at += n as u64;
                    // A short read that is not a whole number of blocks is the file's end.
                    if n % ALIGN != 0 && at < off + len as u64 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The filesystem or device wants other alignment: buffered from now on.
                    self.refused.store(true, Ordering::Relaxed);
                    return buffered_read(buffered, buf, base, off, len);
                }
                Err(e) => return Err(e),
            }
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(base..base + len)
    }
}

/// `read_exact_at` into `buf[base..]`.
pub fn buffered_read(
    file: &File,
    buf: &mut Vec<u8>,
    base: usize,
    off: u64,
    len: usize,
) -> io::Result<Range<usize>> {
    if buf.len() < base + len {
        buf.resize(base + len, 0);
    }
    file.read_exact_at(&mut buf[base..base + len], off)?;
    Ok(base..base + len)
}

/// Whether any page of the range is in the backing file's page cache (`cachestat(2)`,
/// Linux 6.5; where it is missing, answers yes: buffered reads as before).
fn any_cached(file: &File, off: u64, len: u64) -> bool {
    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// The same number on every architecture (the unified table of Linux 5.1+).
    const SYS_CACHESTAT: libc::c_long = 451;
    use std::os::fd::AsRawFd;
    let range = CachestatRange { off, len };
    let mut st = Cachestat::default();
    // SAFETY: both pointers refer to live, properly laid out structs for the call's
    // duration; the kernel writes only `st`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut st as *mut Cachestat,
            0u32,
        )
    };
    r != 0 || st.nr_cache != 0
}
