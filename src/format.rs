//! On-disk format v1: the per-tree config file, the per-file header (an xattr), chunk
//! geometry and chunk AAD. docs/FORMAT.md is the byte-level description of this module.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::crypto::{SecretKey, NONCE_LEN, TAG_LEN};

pub const FORMAT_VERSION: u8 = 1;
pub const CONFIG_FILE: &str = "kmsfs.json";
pub const HEADER_XATTR: &str = "user.kmsfs.header";
/// Every xattr under this prefix belongs to kmsfs and is hidden from the mounted view.
pub const RESERVED_XATTR_PREFIX: &str = "user.kmsfs.";
/// Temp files of an interrupted rekey start with this; hidden from the mounted view.
pub const TEMP_PREFIX: &str = ".kmsfs-tmp-";
pub const SUITE_AES256GCM_HKDF_SHA256: u8 = 1;
pub const CHUNK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
pub const DEFAULT_CHUNK_SIZE: u32 = 4096;
pub const MIN_CHUNK_SHIFT: u8 = 12;
pub const MAX_CHUNK_SHIFT: u8 = 20;
pub const MAX_WRAPS: usize = 8;

/// `kmsfs.json` at the root of a backing tree. Contains no secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TreeConfig {
    /// Always "kmsfs".
    pub format: String,
    pub version: u8,
    /// Random UUID; bound into every wrap's encryption context and every header MAC.
    pub fs_id: String,
    pub chunk_size: u32,
    pub cipher: String,
    /// Key ARNs each new DEK is wrapped under, in unwrap-preference order.
    pub keys: Vec<String>,
    /// Where the KMS was when the tree was created (a hint; the mount's --kms wins).
    #[serde(default)]
    pub kms: Option<String>,
    /// "plaintext" in v1; a later version may encrypt names.
    pub filenames: String,
    /// The tree key, wrapped under each key of `keys` (see `crate::trust`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tree_key: Vec<TreeKeyWrap>,
    /// HMAC-SHA256 (hex) over every other field, keyed from the tree key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One wrapped copy of the tree key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeKeyWrap {
    /// Key ARN it is wrapped under.
    pub key: String,
    /// KMS ciphertext blob, base64.
    pub blob: String,
}

impl TreeConfig {
    pub fn new(chunk_size: u32, keys: Vec<String>, kms: Option<String>) -> TreeConfig {
        TreeConfig {
            format: "kmsfs".into(),
            version: FORMAT_VERSION,
            fs_id: uuid::Uuid::new_v4().to_string(),
            chunk_size,
            cipher: "AES-256-GCM".into(),
            keys,
            kms,
            filenames: "plaintext".into(),
            tree_key: vec![],
            mac: None,
        }
    }

    pub fn load(backing: &Path) -> anyhow::Result<TreeConfig> {
        let path = backing.join(CONFIG_FILE);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > 64 * 1024) {
            anyhow::bail!("{}: larger than 64 KiB; not a kmsfs config", path.display());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "{} is not a kmsfs tree ({} missing); run `kmsfs init` first",
                    backing.display(),
                    CONFIG_FILE
                )
            } else {
                anyhow::anyhow!("cannot read {}: {e}", path.display())
            }
        })?;
        TreeConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates the text of a `kmsfs.json` (hostile input: bounded, strict).
    pub fn parse(text: &str) -> Result<TreeConfig, String> {
        if text.len() > 64 * 1024 {
            return Err("larger than 64 KiB".into());
        }
        let cfg: TreeConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format != "kmsfs" {
            return Err(format!("format is {:?}, expected \"kmsfs\"", self.format));
        }
        if self.version != FORMAT_VERSION {
            return Err(format!("unsupported format version {}", self.version));
        }
        chunk_shift(self.chunk_size)?;
        if self.cipher != "AES-256-GCM" {
            return Err(format!("unsupported cipher {:?}", self.cipher));
        }
        if self.filenames != "plaintext" {
            return Err(format!("unsupported filename mode {:?}", self.filenames));
        }
        if self.tree_key.len() > MAX_WRAPS
            || self.keys.iter().any(|k| k.len() > 2048)
            || self
                .tree_key
                .iter()
                .any(|w| w.key.len() > 2048 || w.blob.len() > 16 * 1024)
        {
            return Err("oversized key or tree key entry".into());
        }
        if self.keys.is_empty() || self.keys.len() > MAX_WRAPS {
            return Err(format!(
                "needs 1..={MAX_WRAPS} keys, has {}",
                self.keys.len()
            ));
        }
        self.fs_id_bytes()?;
        Ok(())
    }

    pub fn fs_id_bytes(&self) -> Result<[u8; 16], String> {
        uuid::Uuid::parse_str(&self.fs_id)
            .map(|u| *u.as_bytes())
            .map_err(|_| format!("invalid fs_id {:?}", self.fs_id))
    }
}

/// log2 of a valid chunk size (power of two, 4 KiB..1 MiB).
pub fn chunk_shift(chunk_size: u32) -> Result<u8, String> {
    if !chunk_size.is_power_of_two() {
        return Err(format!("chunk size {chunk_size} is not a power of two"));
    }
    let shift = chunk_size.trailing_zeros() as u8;
    if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&shift) {
        return Err(format!("chunk size {chunk_size} outside 4096..=1048576"));
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
    pub fn new(chunk_size: u32) -> Geometry {
        Geometry {
            chunk: chunk_size as u64,
        }
    }

    /// Backing bytes per full chunk.
    pub fn cchunk(&self) -> u64 {
        self.chunk + CHUNK_OVERHEAD
    }

    pub fn n_chunks(&self, plain_size: u64) -> u64 {
        plain_size.div_ceil(self.chunk)
    }

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
    pub suite: u8,
    pub chunk_shift: u8,
    pub file_id: [u8; 16],
    /// HMAC-SHA256 over the fixed fields and the fs id, under a key derived from the DEK.
    pub mac: [u8; 32],
    pub wraps: Vec<Wrap>,
}

const MAGIC: &[u8; 4] = b"KMFS";
/// Bytes 0..24 are the fixed fields covered by the MAC; the MAC follows; wraps after.
const FIXED_LEN: usize = 24;
const WRAPS_OFF: usize = FIXED_LEN + 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header too short ({0} bytes)")]
    Short(usize),
    #[error("bad magic (not a kmsfs header)")]
    Magic,
    #[error("unsupported header version {0}")]
    Version(u8),
    #[error("unsupported cipher suite {0}")]
    Suite(u8),
    #[error("invalid chunk shift {0}")]
    ChunkShift(u8),
    #[error("reserved header byte 7 is {0}, not 0")]
    Reserved(u8),
    #[error("invalid number of wrapped keys {0}")]
    WrapCount(usize),
    #[error("truncated wrapped key entry")]
    Truncated,
    #[error("{0} trailing bytes after the last wrapped key")]
    Trailing(usize),
    #[error("wrapped key entry is not UTF-8")]
    Utf8,
    #[error("field too long to encode")]
    TooLong,
}

impl Header {
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

    pub fn file_id_hex(&self) -> String {
        hex::encode(self.file_id)
    }

    /// MAC input: the fixed header bytes and the tree's fs id, so a header moved to
    /// another tree, or with its chunk size/suite edited, fails to verify.
    pub fn compute_mac(&self, mac_key: &SecretKey, fs_id: &[u8; 16]) -> [u8; 32] {
        mac_key.hmac(&[b"kmsfs header v1", &self.fixed_bytes(), fs_id])
    }

    pub fn verify_mac(&self, mac_key: &SecretKey, fs_id: &[u8; 16]) -> bool {
        mac_key.verify_hmac(&[b"kmsfs header v1", &self.fixed_bytes(), fs_id], &self.mac)
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_header(n: usize) -> Header {
        Header {
            suite: 1,
            chunk_shift: 12,
            file_id: [7; 16],
            mac: [9; 32],
            wraps: (0..n)
                .map(|i| Wrap {
                    key_arn: format!(
                        "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890a{i}"
                    ),
                    material_id: "ab".repeat(32),
                    blob: vec![i as u8; 81],
                })
                .collect(),
        }
    }

    #[test]
    fn in_place_writes_are_whole_non_final_chunks() {
        let g = Geometry::new(4096);
        let size = 3 * 4096 + 10; // chunks 0, 1, 2 full; chunk 3 final
        assert!(g.in_place(size, 0, 4096));
        assert!(g.in_place(size, 4096, 2 * 4096));
        assert!(!g.in_place(size, 3 * 4096, 4096), "final chunk");
        assert!(
            !g.in_place(size, 2 * 4096, 2 * 4096),
            "reaches the final chunk"
        );
        assert!(!g.in_place(size, 100, 4096), "unaligned");
        assert!(!g.in_place(size, 0, 100), "partial chunk");
        assert!(!g.in_place(size, 0, 0));
        assert!(
            !g.in_place(4 * 4096, 3 * 4096, 4096),
            "final chunk of an aligned file"
        );
        assert!(g.in_place(4 * 4096, 2 * 4096, 4096));
        assert!(!g.in_place(0, 0, 4096), "empty file");
        assert!(!g.in_place(size, u64::MAX - 4095, 4096), "overflow");
    }

    #[test]
    fn header_round_trip_and_size() {
        for n in 1..=3 {
            let h = sample_header(n);
            let b = h.encode().unwrap();
            assert_eq!(Header::decode(&b).unwrap(), h);
            if n <= 2 {
                assert!(b.len() <= 512, "header with {n} wraps is {} bytes", b.len());
            }
        }
    }

    #[test]
    fn header_rejects_damage() {
        let b = sample_header(1).encode().unwrap();
        assert_eq!(Header::decode(&b[..10]), Err(HeaderError::Short(10)));
        let mut m = b.clone();
        m[0] = b'X';
        assert_eq!(Header::decode(&m), Err(HeaderError::Magic));
        let mut m = b.clone();
        m[6] = 30;
        assert_eq!(Header::decode(&m), Err(HeaderError::ChunkShift(30)));
        assert_eq!(
            Header::decode(&b[..b.len() - 1]),
            Err(HeaderError::Truncated)
        );
        let mut m = b.clone();
        m.push(0);
        assert_eq!(Header::decode(&m), Err(HeaderError::Trailing(1)));
    }

    #[test]
    fn mac_binds_fixed_fields_and_fs() {
        let key = SecretKey([3; 32]);
        let mut h = sample_header(1);
        h.mac = h.compute_mac(&key, &[1; 16]);
        assert!(h.verify_mac(&key, &[1; 16]));
        assert!(!h.verify_mac(&key, &[2; 16]));
        let mut h2 = h.clone();
        h2.chunk_shift = 16;
        assert!(!h2.verify_mac(&key, &[1; 16]));
        let mut h3 = h.clone();
        h3.file_id[0] ^= 1;
        assert!(!h3.verify_mac(&key, &[1; 16]));
        // the reserved byte: on e663627 any value decoded, and the MAC did not cover it
        let mut bytes = h.encode().unwrap();
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        bytes[7] = 1;
        assert!(matches!(
            Header::decode(&bytes),
            Err(HeaderError::Reserved(1))
        ));
    }

    #[test]
    fn geometry_examples() {
        let g = Geometry::new(4096);
        assert_eq!(g.backing_size(0), 0);
        assert_eq!(g.backing_size(1), 29);
        assert_eq!(g.backing_size(4096), 4124);
        assert_eq!(g.backing_size(4097), 4124 + 29);
        assert_eq!(g.plain_size(0), Some(0));
        assert_eq!(g.plain_size(29), Some(1));
        assert_eq!(g.plain_size(28), None);
        assert_eq!(g.plain_size(4124 + 5), None);
        assert_eq!(g.plain_size_lossy(4124 + 5), 4096);
        assert_eq!(g.chunk_range(0, 0), 0..0);
        assert_eq!(g.chunk_range(4095, 2), 0..2);
        assert_eq!(g.chunk_range(4096, 4096), 1..2);
        assert_eq!(g.chunk_len(1, 5000), 904);
        assert_eq!(g.chunk_len(2, 5000), 0);
    }

    #[test]
    fn chunk_shift_bounds() {
        assert!(chunk_shift(2048).is_err());
        assert!(chunk_shift(4096 + 1).is_err());
        assert_eq!(chunk_shift(4096), Ok(12));
        assert_eq!(chunk_shift(1 << 20), Ok(20));
        assert!(chunk_shift(1 << 21).is_err());
    }

    proptest! {
        #[test]
        fn geometry_round_trips(shift in 12u8..=20, size in 0u64..(1u64 << 40)) {
            let g = Geometry::new(1 << shift);
            prop_assert_eq!(g.plain_size(g.backing_size(size)), Some(size));
        }

        #[test]
        fn chunk_range_covers_exactly(shift in 12u8..=16, off in 0u64..(1 << 24), len in 1u64..(1 << 20)) {
            let g = Geometry::new(1 << shift);
            let r = g.chunk_range(off, len);
            prop_assert!(r.start * g.chunk <= off);
            prop_assert!(r.end * g.chunk >= off + len);
            prop_assert!((r.end - 1) * g.chunk < off + len);
            prop_assert!((r.start + 1) * g.chunk > off);
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::decode(&bytes);
        }
    }
}
