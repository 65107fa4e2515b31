//! Chunked content encryption over one backing file: read, write (read-modify-write of
//! partial chunks), truncate. Callers hold the file's per-inode lock and pass the current
//! plaintext size; these functions do one pread and one pwrite per request.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use rayon::prelude::*;

mod direct;
pub use direct::Direct;

use crate::crypto::{random_nonce, Aead, NONCE_LEN};
use crate::format::{chunk_aad, Geometry, CHUNK_OVERHEAD};

/// Requests at least this large are sealed/opened on the rayon pool; below it the
/// fixed cost of a parallel call (~10-25 µs here) outweighs the gain.
pub const PARALLEL_MIN: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
/// Why reading or writing a file's content failed.
pub enum ContentError {
    #[error("{0}")]
    /// The backing file's I/O failed.
    Io(#[from] io::Error),
    /// A chunk failed authentication or is missing: tampering or damage.
    #[error("chunk {chunk} (backing offset {offset}) failed authentication")]
    Corrupt {
        /// The chunk's index.
        chunk: u64,
        /// Where it starts in the backing file.
        offset: u64,
    },
    /// The size asked for is beyond what a backing file can hold (EFBIG).
    #[error("file too large")]
    TooLarge,
}

/// A gap up to this size (between the end of a file and a write past it) is sealed in
/// the write's own buffer; a larger one is filled first in `GROW_STEP` pieces, so the
/// memory a request needs is bounded whatever its offset.
const GAP_INLINE: u64 = 1 << 20;
/// Zeros materialised per step when a file grows by truncate, fallocate or a far write.
/// Small enough that the sealed step fits a scratch buffer the pool keeps (`with_scratch`):
/// at 4 MiB every step mapped and faulted in a new buffer (1 GiB fallocate 0.82-0.92 s,
/// 13 % of it page faults; see bench/results/2026-12-06-pieces.md).
const GROW_STEP: u64 = 1 << 20;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kmsfs-crypto-{i}"))
            .build()
            .expect("crypto thread pool")
    })
}

/// One file's content as seen through its keys.
pub struct Content<'a> {
    /// The backing file.
    pub file: &'a File,
    /// The file's content key.
    pub aead: &'a dyn Aead,
    /// The file id its chunks are bound to (AAD).
    pub file_id: &'a [u8; 16],
    /// The tree's chunk geometry.
    pub geo: Geometry,
    /// Large cold reads go around the backing page cache through it, when given.
    pub direct: Option<&'a Direct>,
}

/// One chunk's place in a buffer of consecutive sealed chunks.
struct Slot {
    index: u64,
    /// plaintext length
    len: usize,
    is_final: bool,
}

impl<'a> Content<'a> {
    /// The content of the open backing `file` whose header says `file_id`, under `keys`.
    pub fn new(
        file: &'a File,
        keys: &'a crate::envelope::FileKeys,
        file_id: &'a [u8; 16],
        geo: Geometry,
    ) -> Content<'a> {
        Content {
            file,
            aead: &*keys.content,
            file_id,
            geo,
            direct: None,
        }
    }

    /// The same, with large cold reads going around the backing page cache (`direct`).
    pub fn with_direct(self, direct: &'a Direct) -> Content<'a> {
        Content {
            direct: Some(direct),
            ..self
        }
    }

    /// Hands the plaintext of a file of `size` bytes to `sink` in pieces of at least a
    /// chunk (1 MiB, or a chunk if larger), each with its offset; returns `size`.
    pub fn copy_plaintext(
        &self,
        size: u64,
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), ContentError>,
    ) -> Result<u64, ContentError> {
        let step = (1u64 << 20).max(self.geo.chunk);
        let mut off = 0;
        while off < size {
            let data = self.read(size, off, step)?;
            sink(off, &data)?;
            off += data.len() as u64;
        }
        Ok(size)
    }
}

impl Content<'_> {
    fn slots(&self, first: u64, end: u64, plain_size: u64) -> Vec<Slot> {
        let n = self.geo.n_chunks(plain_size);
        (first..end)
            .map(|i| Slot {
                index: i,
                len: self.geo.chunk_len(i, plain_size) as usize,
                is_final: i + 1 == n,
            })
            .collect()
    }

    fn open_chunk(&self, s: &Slot, sealed: &mut [u8]) -> Result<(), ContentError> {
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = (&*nonce).try_into().unwrap();
        self.aead
            .open(nonce, &chunk_aad(self.file_id, s.index, s.is_final), rest)
            .map_err(|_| ContentError::Corrupt {
                chunk: s.index,
                offset: self.geo.chunk_offset(s.index),
            })
    }

    fn seal_chunk(&self, s: &Slot, sealed: &mut [u8]) {
        let nonce = random_nonce();
        sealed[..NONCE_LEN].copy_from_slice(&nonce);
        let (body, tag) = sealed[NONCE_LEN..].split_at_mut(s.len);
        let t = self
            .aead
            .seal(&nonce, &chunk_aad(self.file_id, s.index, s.is_final), body);
        tag.copy_from_slice(&t);
    }

    /// Reads the `len` sealed bytes of the chunks from `chunk` on into `buf` (directly from
    /// the disk when large and not cached, see `direct`) and answers where they are; a
    /// short read means the file is shorter than its chunks claim, reported as
    /// corruption of `chunk`.
    fn read_sealed(
        &self,
        buf: &mut Vec<u8>,
        chunk: u64,
        len: usize,
    ) -> Result<std::ops::Range<usize>, ContentError> {
        let off = self.geo.chunk_offset(chunk);
        let r = match self.direct {
            Some(d) => d.read_exact(self.file, buf, off, len),
            None => direct::buffered_read(self.file, buf, 0, off, len),
        };
        r.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ContentError::Corrupt { chunk, offset: off },
            _ => e.into(),
        })
    }

    /// Decrypts the chunks `first..end` of a file of `plain_size` bytes. `buf` is scratch
    /// space (grown as needed, never shrunk or zeroed here); on return the plaintext is
    /// `buf[..n]` with `n` returned.
    fn read_chunks_in(
        &self,
        first: u64,
        end: u64,
        plain_size: u64,
        buf: &mut Vec<u8>,
    ) -> Result<usize, ContentError> {
        let slots = self.slots(first, end, plain_size);
        let total: usize = slots.iter().map(|s| s.len + CHUNK_OVERHEAD as usize).sum();
        let at = self.read_sealed(buf, first, total)?;
        let sealed = &mut buf[at.clone()];
        // Split the buffer into per-chunk pieces so they can be opened in parallel.
        let mut pieces: Vec<(&Slot, &mut [u8])> = Vec::with_capacity(slots.len());
        let mut rest = sealed;
        for s in &slots {
            let (a, b) = rest.split_at_mut(s.len + CHUNK_OVERHEAD as usize);
            pieces.push((s, a));
            rest = b;
        }
        if total >= PARALLEL_MIN {
            pool().install(|| {
                pieces
                    .par_iter_mut()
                    .try_for_each(|(s, p)| self.open_chunk(s, p))
            })?;
        } else {
            for (s, p) in pieces.iter_mut() {
                self.open_chunk(s, p)?;
            }
        }
        // Close up the nonces and tags so the plaintext is contiguous at the front.
        let (mut from, mut to) = (at.start, 0);
        for s in &slots {
            buf.copy_within(from + NONCE_LEN..from + NONCE_LEN + s.len, to);
            from += s.len + CHUNK_OVERHEAD as usize;
            to += s.len;
        }
        Ok(to)
    }

    /// One chunk's plaintext (for the edges of a partial write and for truncate).
    fn read_chunk(&self, index: u64, plain_size: u64) -> Result<Vec<u8>, ContentError> {
        let mut buf = Vec::new();
        let n = self.read_chunks_in(index, index + 1, plain_size, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Opens every chunk of a file of `plain_size` bytes one by one (for fsck and salvage):
    /// `on_chunk(index, Some(plaintext))` for a good chunk, `(index, None)` for one that
    /// fails authentication or is missing. Reads 256 chunks per pread.
    pub fn scan(
        &self,
        plain_size: u64,
        mut on_chunk: impl FnMut(u64, Option<&[u8]>),
    ) -> io::Result<()> {
        let n = self.geo.n_chunks(plain_size);
        let len = self.file.metadata()?.len();
        let mut first = 0;
        while first < n {
            let end = (first + 256).min(n);
            let slots = self.slots(first, end, plain_size);
            let total: usize = slots.iter().map(|s| s.len + CHUNK_OVERHEAD as usize).sum();
            let off = self.geo.chunk_offset(first);
            let mut sealed = vec![0u8; total];
            let have = (len.saturating_sub(off) as usize).min(total);
            self.file.read_exact_at(&mut sealed[..have], off)?;
            let mut at = 0;
            for s in &slots {
                let sz = s.len + CHUNK_OVERHEAD as usize;
                let piece = &mut sealed[at..at + sz];
                let ok = at + sz <= have && self.open_chunk(s, piece).is_ok();
                on_chunk(s.index, ok.then(|| &piece[NONCE_LEN..NONCE_LEN + s.len]));
                at += sz;
            }
            first = end;
        }
        Ok(())
    }

    /// Plaintext bytes [off, off+len) clipped to `plain_size`.
    pub fn read(&self, plain_size: u64, off: u64, len: u64) -> Result<Vec<u8>, ContentError> {
        let mut buf = Vec::new();
        let r = self.read_in(plain_size, off, len, &mut buf)?;
        buf.truncate(r.end);
        buf.drain(..r.start);
        Ok(buf)
    }

    /// `read` into reusable scratch space: the plaintext is `buf[returned range]`.
    pub fn read_in(
        &self,
        plain_size: u64,
        off: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>, ContentError> {
        let end = (off.saturating_add(len)).min(plain_size);
        if off >= end {
            return Ok(0..0);
        }
        let r = self.geo.chunk_range(off, end - off);
        self.read_chunks_in(r.start, r.end, plain_size, buf)?;
        let skip = (off - r.start * self.geo.chunk) as usize;
        Ok(skip..skip + (end - off) as usize)
    }

    /// Writes `data` at `off` into a file of `plain_size` bytes; returns the new size.
    /// A gap between the old end and `off` is filled with encrypted zeros (no holes: see
    /// docs/THREAT-MODEL.md), in bounded pieces after reserving the whole growth, so a
    /// write far past the end costs bounded memory and fails at once with EFBIG or ENOSPC
    /// when the backing filesystem cannot hold it. On failure the file is as it was.
    pub fn write(&self, plain_size: u64, off: u64, data: &[u8]) -> Result<u64, ContentError> {
        if data.is_empty() {
            return Ok(plain_size);
        }
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.geo.max_plain_size())
            .ok_or(ContentError::TooLarge)?;
        if off <= plain_size.saturating_add(GAP_INLINE) {
            return self.undo_growth_on_error(plain_size, end, || {
                with_scratch(|buf| self.write_in(plain_size, off, data, buf, true))
            });
        }
        self.reserve(plain_size, end)?;
        self.undo_growth_on_error(plain_size, end, || {
            let size = self.fill_zeros(plain_size, off)?;
            with_scratch(|buf| self.write_in(size, off, data, buf, true))
        })
    }

    /// Runs a change that may grow the file from `plain_size` to `new_size`; if it fails,
    /// puts the backing file back to `plain_size` (a growth is all or nothing, so the
    /// mount's idea of the size and the backing file never disagree).
    fn undo_growth_on_error(
        &self,
        plain_size: u64,
        new_size: u64,
        f: impl FnOnce() -> Result<u64, ContentError>,
    ) -> Result<u64, ContentError> {
        let r = f();
        if r.is_err() && new_size > plain_size {
            if let Err(e) = self.restore(plain_size) {
                tracing::error!(
                    "cannot undo a failed growth of a file back to {plain_size} bytes: {e}"
                );
            }
        }
        r
    }

    /// Reserves the backing space a growth from `plain_size` to `new_size` needs, in one
    /// call: EFBIG or ENOSPC (or EDQUOT) now, before any byte is written.
    fn reserve(&self, plain_size: u64, new_size: u64) -> Result<(), ContentError> {
        if new_size > self.geo.max_plain_size() {
            return Err(ContentError::TooLarge);
        }
        let (cur, want) = (
            self.geo.backing_size(plain_size),
            self.geo.backing_size(new_size),
        );
        if want <= cur {
            return Ok(());
        }
        match rustix::fs::fallocate(
            self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            cur,
            want - cur,
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
                // No preallocation here: compare with the free space instead.
                let st = rustix::fs::fstatvfs(self.file).map_err(io::Error::from)?;
                if (want - cur) / st.f_frsize.max(1) > st.f_bavail {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC).into());
                }
                Ok(())
            }
            Err(e) => Err(io::Error::from(e).into()),
        }
    }

    /// Grows a file of `plain_size` bytes to `new_size` with encrypted zeros, a bounded
    /// piece at a time; returns the new size. No early writeback: zeros made by a growing
    /// truncate or fallocate are usually overwritten soon (fio and databases preallocate,
    /// then write), and should then reach the disk once, with their final content.
    fn fill_zeros(&self, plain_size: u64, new_size: u64) -> Result<u64, ContentError> {
        let zeros = vec![0u8; GROW_STEP.min(new_size.saturating_sub(plain_size)) as usize];
        let mut size = plain_size;
        while size < new_size {
            let n = GROW_STEP.min(new_size - size) as usize;
            size = with_scratch(|buf| self.write_in(size, size, &zeros[..n], buf, false))?;
        }
        Ok(size)
    }

    /// Puts the backing file back to a file of `plain_size` bytes after a failed growth:
    /// cuts what was added, and seals the old final chunk as final again if the growth had
    /// already re-sealed it as an inner (full, non-final) chunk.
    pub fn restore(&self, plain_size: u64) -> Result<(), ContentError> {
        let n = self.geo.n_chunks(plain_size);
        let mut reseal = None;
        if n > 0 {
            let i = n - 1;
            let old_len = self.geo.chunk_len(i, plain_size) as usize;
            let oh = CHUNK_OVERHEAD as usize;
            let at = self.geo.chunk_offset(i);
            let mut sealed = vec![0u8; self.geo.chunk as usize + oh];
            let mut have = 0;
            while have < sealed.len() {
                match self.file.read_at(&mut sealed[have..], at + have as u64)? {
                    0 => break,
                    k => have += k,
                }
            }
            let as_was = Slot {
                index: i,
                len: old_len,
                is_final: true,
            };
            let as_inner = Slot {
                index: i,
                len: self.geo.chunk as usize,
                is_final: false,
            };
            let try_open = |s: &Slot| {
                let mut p = sealed[..s.len + oh].to_vec();
                (have >= s.len + oh && self.open_chunk(s, &mut p).is_ok())
                    .then(|| p[NONCE_LEN..NONCE_LEN + old_len].to_vec())
            };
            if try_open(&as_was).is_none() {
                match try_open(&as_inner) {
                    Some(plain) => reseal = Some((as_was, plain)),
                    None => {
                        return Err(ContentError::Corrupt {
                            chunk: i,
                            offset: at,
                        })
                    }
                }
            }
        }
        let end = self.geo.backing_size(plain_size);
        self.file.set_len(end)?;
        // Blocks reserved past the end for the growth (fallocate KEEP_SIZE) are not all
        // freed by a truncate to the same size: give them back. Best effort.
        let _ = rustix::fs::fallocate(
            self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            end,
            (i64::MAX as u64) - end,
        );
        if let Some((slot, plain)) = reseal {
            let mut sealed = vec![0u8; slot.len + CHUNK_OVERHEAD as usize];
            sealed[NONCE_LEN..NONCE_LEN + slot.len].copy_from_slice(&plain);
            self.seal_chunk(&slot, &mut sealed);
            self.file
                .write_all_at(&sealed, self.geo.chunk_offset(slot.index))?;
        }
        Ok(())
    }

    fn write_in(
        &self,
        plain_size: u64,
        off: u64,
        data: &[u8],
        buf: &mut Vec<u8>,
        kick_writeback: bool,
    ) -> Result<u64, ContentError> {
        if data.is_empty() {
            return Ok(plain_size);
        }
        let c = self.geo.chunk;
        let end = off + data.len() as u64;
        let new_size = plain_size.max(end);
        let old_n = self.geo.n_chunks(plain_size);
        let new_n = self.geo.n_chunks(new_size);
        let mut first = off.min(plain_size) / c;
        if new_n > old_n && old_n > 0 {
            // the old final chunk stops being final: it must be re-sealed
            first = first.min(old_n - 1);
        }
        let last_end = (end - 1) / c + 1; // exclusive
        let slots = self.slots(first, last_end, new_size);
        let total: usize = slots.iter().map(|s| s.len + CHUNK_OVERHEAD as usize).sum();
        if buf.len() < total {
            buf.resize(total, 0);
        }
        // Lay the new plaintext of each chunk straight into its place in the sealed
        // buffer: old bytes outside [off, end) for the chunks at the edges, zeros in a
        // gap, `data` everywhere else. One copy of `data`, no zeroing of whole buffers.
        let mut pieces: Vec<(&Slot, &mut [u8])> = Vec::with_capacity(slots.len());
        let mut rest = &mut buf[..total];
        for s in &slots {
            let (piece, b) = rest.split_at_mut(s.len + CHUNK_OVERHEAD as usize);
            rest = b;
            let body = &mut piece[NONCE_LEN..NONCE_LEN + s.len];
            let cs = s.index * c;
            let ce = cs + s.len as u64;
            let (ds, de) = (off.max(cs), end.min(ce));
            if !(ds == cs && de == ce) {
                body.fill(0);
                let old_len = self.geo.chunk_len(s.index, plain_size) as usize;
                if old_len > 0 {
                    let old = self.read_chunk(s.index, plain_size)?;
                    body[..old_len].copy_from_slice(&old[..old_len]);
                }
            }
            if ds < de {
                body[(ds - cs) as usize..(de - cs) as usize]
                    .copy_from_slice(&data[(ds - off) as usize..(de - off) as usize]);
            }
            pieces.push((s, piece));
        }
        if total >= PARALLEL_MIN {
            pool().install(|| {
                pieces
                    .par_iter_mut()
                    .for_each(|(s, p)| self.seal_chunk(s, p))
            });
        } else {
            for (s, p) in pieces.iter_mut() {
                self.seal_chunk(s, p);
            }
        }
        let at = self.geo.chunk_offset(first);
        touch_edge_pages(self.file, at, total as u64);
        preallocate(
            self.file,
            self.geo.backing_size(plain_size),
            at,
            total as u64,
        )?;
        write_in_pieces(self.file, &buf[..total], at)?;
        if kick_writeback && total >= WRITEBACK_KICK {
            start_writeback(self.file, at, total as u64);
        }
        Ok(new_size)
    }

    /// Changes the plaintext size from `plain_size` to `new_size`. A growth reserves
    /// its space first (EFBIG/ENOSPC at once) and is undone whole if it fails.
    pub fn truncate(&self, plain_size: u64, new_size: u64) -> Result<(), ContentError> {
        if new_size == plain_size {
            return Ok(());
        }
        if new_size > plain_size {
            self.reserve(plain_size, new_size)?;
            self.undo_growth_on_error(plain_size, new_size, || {
                self.fill_zeros(plain_size, new_size)
            })?;
            return Ok(());
        }
        if new_size > 0 {
            // The chunk holding the new end becomes final (and maybe shorter): re-seal it.
            let i = (new_size - 1) / self.geo.chunk;
            let old = self.read_chunk(i, plain_size)?;
            let keep = self.geo.chunk_len(i, new_size) as usize;
            debug_assert!(keep <= old.len());
            let slot = &self.slots(i, i + 1, new_size)[0];
            let mut sealed = vec![0u8; keep + CHUNK_OVERHEAD as usize];
            sealed[NONCE_LEN..NONCE_LEN + keep].copy_from_slice(&old[..keep]);
            self.seal_chunk(slot, &mut sealed);
            self.file.write_all_at(&sealed, self.geo.chunk_offset(i))?;
        }
        self.file.set_len(self.geo.backing_size(new_size))?;
        Ok(())
    }
}

/// Runs `f` with a scratch buffer from a small process-wide pool, so requests reuse a
/// few buffers instead of allocating and zeroing a megabyte each. At most
/// `SCRATCH_KEPT` are kept (any thread takes any of them); a buffer beyond that, or one
/// grown past 4 MiB (a large truncate), is freed after use. Per-thread buffers cost a
/// megabyte for every one of the 16 request threads that ever served a large request
/// (19 MiB of a 116 MiB peak); the daemon also has glibc map such buffers on their own
/// (`tune_allocator`), so one freed here goes back to the system at once.
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.lock().pop().unwrap_or_default();
    let r = f(&mut buf);
    if buf.capacity() <= 4 << 20 {
        let mut pool = SCRATCH.lock();
        if pool.len() < SCRATCH_KEPT {
            pool.push(buf);
        }
    }
    r
}

static SCRATCH: parking_lot::Mutex<Vec<Vec<u8>>> = parking_lot::const_mutex(Vec::new());

/// Scratch buffers kept. The mount's 8 MiB read-ahead keeps eight 1 MiB reads in flight,
/// and writeback a few writes beside them. Keeping 4 cost a cold sequential read 45 %
/// more daemon CPU (each buffer past the pool mapped and faulted in anew), 8 cost 20 %,
/// 12 none; peak memory was the same for all three (69-70 MiB against 96 with a buffer
/// per thread; `bench/results/2026-12-06-memory.md`).
const SCRATCH_KEPT: usize = 12;

/// Has glibc map allocations of 256 KiB and more on their own (and unmap them when freed)
/// instead of raising that threshold on the first free, after which freed megabytes stay
/// in the heap of whichever thread freed them. For the mount daemon: its large buffers
/// (request scratch beyond the pool) then give their memory back when dropped.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before the request threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Writes at least this large (the kernel's writeback of a sequentially written file
/// arrives in 1 MiB requests) start the backing file's own writeback at once.
const WRITEBACK_KICK: usize = 512 * 1024;

/// The largest piece one backing `pwrite` carries.
const WRITE_PIECE: u64 = 32 * 1024;

/// Writes `data` at `at` in pieces of at most `WRITE_PIECE` bytes, cut on multiples of it.
/// The backing filesystem sizes the page-cache folios it allocates by the length of one
/// write, and on a VM whose free memory goes back to the hypervisor (free page reporting)
/// a large folio comes from memory the host has to fault in again. Folios up to 32 KiB
/// (order 3, the kernel's PAGE_ALLOC_COSTLY_ORDER) are recycled through per-CPU lists;
/// larger ones come from the buddy allocator's big free blocks, the ones reported.
/// Written through the mount, 1 GiB and an fsync in pieces of 32 KiB: 465-505 MiB/s in
/// each of 22 rounds of one spell; of 128 KiB: 183-521; of 16 KiB: 130-494; of 64 KiB:
/// 247-494 (mounted side by side, bench/results/2026-12-06-pieces.md). In the two runs
/// after it 32 KiB pieces made 189-585 in 16 rounds, 128 KiB 156-564. Elsewhere it costs
/// a system call per 32 KiB.
fn write_in_pieces(file: &File, data: &[u8], at: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        let off = at + done as u64;
        let room = (WRITE_PIECE - off % WRITE_PIECE) as usize;
        let n = room.min(data.len() - done);
        file.write_all_at(&data[done..done + n], off)?;
        done += n;
    }
    Ok(())
}

/// Starts (does not wait for) writeback of a range just written to the backing file.
/// Otherwise the backing page cache holds the data until the final fsync, and the disk
/// only starts writing after kmsfs has encrypted the whole file; this way encryption and
/// disk writes overlap. (The same as RocksDB's bytes_per_sync or PostgreSQL's
/// backend_flush_after.) Best effort: an error here only loses the overlap.
fn start_writeback(file: &File, at: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Sealed chunks (4 KiB + 28 bytes) seldom start or end on a page of the backing file. A
/// write into a page that is not cached makes the backing filesystem read it while holding
/// the file's write lock, so concurrent requests would wait on each other's disk reads one
/// at a time. Reading the two edge pages first (reads take no such lock) lets requests
/// fetch them in parallel; a cached page costs a microsecond.
fn touch_edge_pages(file: &File, at: u64, len: u64) {
    const PAGE: u64 = 4096;
    let end = at + len;
    let (first, last) = (at / PAGE, (end - 1) / PAGE);
    let head = at % PAGE != 0;
    let tail = end % PAGE != 0 && last != first;
    if head && tail && last - first <= 2 {
        // One read from the head page's last byte to the tail page's first: the kernel
        // fetches the (at most three) pages in one disk request, where two one-byte reads
        // would wait for two (a small random read brings in only the page it touches).
        let mut span = [0u8; 2 * PAGE as usize + 2];
        let from = (first + 1) * PAGE - 1;
        let n = (last * PAGE + 1 - from) as usize;
        let _ = file.read_at(&mut span[..n], from);
        return;
    }
    let mut one = [0u8; 1];
    if head {
        let _ = file.read_at(&mut one, at);
    }
    if tail {
        let _ = file.read_at(&mut one, end - 1);
    }
}

/// Reserves disk blocks before a write that grows the file, so a full disk fails the
/// request up front instead of leaving half a chunk behind. Best effort where the backing
/// filesystem cannot preallocate.
fn preallocate(file: &File, cur: u64, off: u64, len: u64) -> io::Result<()> {
    if off + len <= cur {
        return Ok(());
    }
    let from = off.max(cur);
    match rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::KEEP_SIZE,
        from,
        off + len - from,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
