//! The per-file header (the `user.kmsfs.header` xattr): encode, bounded decode, MAC.

use super::{
    FORMAT_VERSION, MAX_CHUNK_SHIFT, MAX_WRAPS, MIN_CHUNK_SHIFT, SUITE_AES256GCM_HKDF_SHA256,
};
use crate::crypto::SecretKey;

/// One wrapped copy of a file's DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrap {
    /// ARN of the KMS key that wrapped the DEK.
    pub key_arn: String,
    /// Key material id (version) the KMS reported for the wrap.
    pub material_id: String,
    /// Opaque ciphertext blob from the KMS.
    pub blob: Vec<u8>,
}

/// The file header, stored in the `user.kmsfs.header` xattr of each backing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Cipher suite (`SUITE_AES256GCM_HKDF_SHA256`).
    pub suite: u8,
    /// log2 of the chunk size.
    pub chunk_shift: u8,
    /// Random per-file id, bound into every chunk's AAD and the wraps' context.
    pub file_id: [u8; 16],
    /// HMAC-SHA256 over the fixed fields and the fs id, under a key derived from the DEK.
    pub mac: [u8; 32],
    /// The DEK, wrapped under each of the tree's keys.
    pub wraps: Vec<Wrap>,
}

const MAGIC: &[u8; 4] = b"KMFS";
/// Bytes 0..24 are the fixed fields covered by the MAC; the MAC follows; wraps after.
const FIXED_LEN: usize = 24;
const WRAPS_OFF: usize = FIXED_LEN + 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
/// Why a header does not decode (or encode).
pub enum HeaderError {
    #[error("header too short ({0} bytes)")]
    /// Shorter than the fixed part.
    Short(usize),
    #[error("bad magic (not a kmsfs header)")]
    /// Not "KMFS".
    Magic,
    #[error("unsupported header version {0}")]
    /// Unknown format version.
    Version(u8),
    #[error("unsupported cipher suite {0}")]
    /// Unknown cipher suite.
    Suite(u8),
    #[error("invalid chunk shift {0}")]
    /// Chunk size out of range.
    ChunkShift(u8),
    #[error("reserved header byte 7 is {0}, not 0")]
    /// A reserved byte is not zero.
    Reserved(u8),
    #[error("invalid number of wrapped keys {0}")]
    /// No wraps, or more than `MAX_WRAPS`.
    WrapCount(usize),
    #[error("truncated wrapped key entry")]
    /// A field runs past the end.
    Truncated,
    #[error("{0} trailing bytes after the last wrapped key")]
    /// Bytes after the last field.
    Trailing(usize),
    #[error("wrapped key entry is not UTF-8")]
    /// A key ARN or material id is not UTF-8.
    Utf8,
    #[error("field too long to encode")]
    /// A field is longer than its length prefix allows.
    TooLong,
}

impl Header {
    /// The fixed part (magic, version, suite, chunk shift, reserved, file id): what the MAC covers besides the wraps.
    pub fn fixed_bytes(&self) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = FORMAT_VERSION;
        b[5] = self.suite;
        b[6] = self.chunk_shift;
        b[7] = 0;
        b[8..24].copy_from_slice(&self.file_id);
        b
    }

    /// The file id in hex (the `kmsfs:file` encryption context).
    pub fn file_id_hex(&self) -> String {
        hex::encode(self.file_id)
    }

    /// MAC input: the fixed header bytes and the tree's fs id, so a header moved to
    /// another tree, or with its chunk size/suite edited, fails to verify.
    pub fn compute_mac(&self, mac_key: &SecretKey, fs_id: &[u8; 16]) -> [u8; 32] {
        mac_key.hmac(&[b"kmsfs header v1", &self.fixed_bytes(), fs_id])
    }

    /// Whether the MAC verifies under `mac_key` for the tree `fs_id`.
    pub fn verify_mac(&self, mac_key: &SecretKey, fs_id: &[u8; 16]) -> bool {
        mac_key.verify_hmac(&[b"kmsfs header v1", &self.fixed_bytes(), fs_id], &self.mac)
    }

    /// The header's bytes (docs/FORMAT.md).
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        if self.wraps.is_empty() || self.wraps.len() > MAX_WRAPS {
            return Err(HeaderError::WrapCount(self.wraps.len()));
        }
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(&self.fixed_bytes());
        out.extend_from_slice(&self.mac);
        out.push(self.wraps.len() as u8);
        for w in &self.wraps {
            put_u16_bytes(&mut out, w.key_arn.as_bytes())?;
            // Hex material ids (AWS uses 64 hex digits) are stored decoded to save space.
            match hex_lower_decode(&w.material_id) {
                Some(raw) if raw.len() <= 255 => {
                    out.push(1);
                    out.push(raw.len() as u8);
                    out.extend_from_slice(&raw);
                }
                _ => {
                    let b = w.material_id.as_bytes();
                    if b.len() > 255 {
                        return Err(HeaderError::TooLong);
                    }
                    out.push(0);
                    out.push(b.len() as u8);
                    out.extend_from_slice(b);
                }
            }
            put_u16_bytes(&mut out, &w.blob)?;
        }
        Ok(out)
    }

    /// Decodes a header read from a backing file (hostile input: bounded, never panics).
    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() < WRAPS_OFF + 1 {
            return Err(HeaderError::Short(b.len()));
        }
        if &b[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != FORMAT_VERSION {
            return Err(HeaderError::Version(b[4]));
        }
        if b[5] != SUITE_AES256GCM_HKDF_SHA256 {
            return Err(HeaderError::Suite(b[5]));
        }
        if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&b[6]) {
            return Err(HeaderError::ChunkShift(b[6]));
        }
        // Byte 7 is reserved: only 0 is accepted, and the MAC is computed over a 0 there
        // (`fixed_bytes`), so the byte is both checked and bound.
        if b[7] != 0 {
            return Err(HeaderError::Reserved(b[7]));
        }
        let file_id: [u8; 16] = b[8..24].try_into().unwrap();
        let mac: [u8; 32] = b[24..56].try_into().unwrap();
        let n = b[WRAPS_OFF] as usize;
        if n == 0 || n > MAX_WRAPS {
            return Err(HeaderError::WrapCount(n));
        }
        let mut r = Reader {
            b,
            pos: WRAPS_OFF + 1,
        };
        let mut wraps = Vec::with_capacity(n);
        for _ in 0..n {
            let arn = String::from_utf8(r.u16_bytes()?.to_vec()).map_err(|_| HeaderError::Utf8)?;
            let kind = r.take(1)?[0];
            let mlen = r.take(1)?[0] as usize;
            let raw = r.take(mlen)?;
            let material_id = match kind {
                1 => hex::encode(raw),
                0 => String::from_utf8(raw.to_vec()).map_err(|_| HeaderError::Utf8)?,
                _ => return Err(HeaderError::Truncated),
            };
            let blob = r.u16_bytes()?.to_vec();
            wraps.push(Wrap {
                key_arn: arn,
                material_id,
                blob,
            });
        }
        if r.pos != b.len() {
            return Err(HeaderError::Trailing(b.len() - r.pos));
        }
        Ok(Header {
            suite: b[5],
            chunk_shift: b[6],
            file_id,
            mac,
            wraps,
        })
    }
}

fn put_u16_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), HeaderError> {
    let len: u16 = b.len().try_into().map_err(|_| HeaderError::TooLong)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

fn hex_lower_decode(s: &str) -> Option<Vec<u8>> {
    if s.is_empty()
        || s.len() % 2 != 0
        || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    hex::decode(s).ok()
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.checked_add(n).ok_or(HeaderError::Truncated)?;
        if end > self.b.len() {
            return Err(HeaderError::Truncated);
        }
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16_bytes(&mut self) -> Result<&'a [u8], HeaderError> {
        let l = self.take(2)?;
        let n = u16::from_be_bytes([l[0], l[1]]) as usize;
        self.take(n)
    }
}
