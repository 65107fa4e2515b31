//! Chunk geometry: pure offset arithmetic between plaintext and backing files, and the
//! chunk AAD.

use super::{CHUNK_OVERHEAD, MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT};

/// log2 of a valid chunk size (power of two, 4 KiB..1 MiB).
pub fn chunk_shift(chunk_size: u32) -> crate::Result<u8> {
    if !chunk_size.is_power_of_two() {
        crate::error::fail!("chunk size {chunk_size} is not a power of two");
    }
    let shift = chunk_size.trailing_zeros() as u8;
    if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&shift) {
        crate::error::fail!("chunk size {chunk_size} outside 4096..=1048576");
    }
    Ok(shift)
}

/// Pure offset arithmetic between plaintext and backing (ciphertext) files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Plaintext bytes per chunk.
    pub chunk: u64,
}

impl Geometry {
    /// The geometry of `chunk_size` (a valid chunk size).
    pub fn new(chunk_size: u32) -> Geometry {
        Geometry {
            chunk: chunk_size as u64,
        }
    }

    /// Backing bytes per full chunk.
    pub fn cchunk(&self) -> u64 {
        self.chunk + CHUNK_OVERHEAD
    }

    /// Chunks of a file of `plain_size` bytes (the empty file has none).
    pub fn n_chunks(&self, plain_size: u64) -> u64 {
        plain_size.div_ceil(self.chunk)
    }

    /// Backing size of a file of `plain_size` bytes.
    pub fn backing_size(&self, plain_size: u64) -> u64 {
        plain_size + self.n_chunks(plain_size) * CHUNK_OVERHEAD
    }

    /// The largest plaintext size whose backing size is a valid file offset (i64): larger
    /// sizes are EFBIG before any arithmetic on them can overflow.
    pub fn max_plain_size(&self) -> u64 {
        (i64::MAX as u64 / self.cchunk()) * self.chunk
    }

    /// Plaintext size of a backing file, or None when the size cannot come from whole
    /// chunks (a trailing fragment of at most the overhead: damage). Callers that must
    /// show *some* size use `plain_size_lossy`.
    pub fn plain_size(&self, backing: u64) -> Option<u64> {
        let full = backing / self.cchunk();
        let rem = backing % self.cchunk();
        match rem {
            0 => Some(full * self.chunk),
            r if r <= CHUNK_OVERHEAD => None,
            r => Some(full * self.chunk + r - CHUNK_OVERHEAD),
        }
    }

    /// Like `plain_size`, but a damaged trailing fragment counts as zero bytes
    /// (reads of that region then fail with EIO when the previous chunk is not final).
    pub fn plain_size_lossy(&self, backing: u64) -> u64 {
        self.plain_size(backing)
            .unwrap_or((backing / self.cchunk()) * self.chunk)
    }

    /// Offset of chunk `i` in the backing file.
    pub fn chunk_offset(&self, i: u64) -> u64 {
        i * self.cchunk()
    }

    /// Plaintext length of chunk `i` in a file of `plain_size` bytes.
    pub fn chunk_len(&self, i: u64, plain_size: u64) -> u64 {
        let start = i * self.chunk;
        plain_size.saturating_sub(start).min(self.chunk)
    }

    /// Chunks touched by the plaintext range [off, off+len); empty when len == 0.
    /// A write of `len` bytes at `off` covers whole chunks only, none of them the final
    /// one, inside a file of `plain_size` bytes: it changes nothing but those chunks.
    pub fn in_place(&self, plain_size: u64, off: u64, len: u64) -> bool {
        let c = self.chunk;
        len > 0
            && off % c == 0
            && len % c == 0
            && off
                .checked_add(len)
                .is_some_and(|end| end / c < self.n_chunks(plain_size))
    }

    /// The chunks that `len` bytes at `off` touch.
    pub fn chunk_range(&self, off: u64, len: u64) -> std::ops::Range<u64> {
        if len == 0 {
            return off / self.chunk..off / self.chunk;
        }
        off / self.chunk..(off + len - 1) / self.chunk + 1
    }
}

/// AAD of a chunk: file id ‖ chunk index (u64 BE) ‖ final flag. Binding the flag makes a
/// truncation at a chunk boundary, or foreign chunks appended, fail authentication.
#[inline]
pub fn chunk_aad(file_id: &[u8; 16], index: u64, is_final: bool) -> [u8; 25] {
    let mut aad = [0u8; 25];
    aad[..16].copy_from_slice(file_id);
    aad[16..24].copy_from_slice(&index.to_be_bytes());
    aad[24] = is_final as u8;
    aad
}
