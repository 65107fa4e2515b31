//! On-disk formats 1 and 2: the per-tree config file, the per-file header (an xattr),
//! chunk geometry and chunk AAD, and (format 2) sealed names and node records (`names`).
//! docs/FORMAT.md is the byte-level description of this module.

pub mod auth;
mod config;
mod geometry;
mod header;
pub mod names;

pub use config::{OldGeneration, TreeConfig, TreeKeyWrap};
pub use geometry::{chunk_aad, chunk_shift, Geometry};
pub use header::{Header, HeaderError, Wrap};

use crate::crypto::{NONCE_LEN, TAG_LEN};

/// The header format version (file headers are the same in tree formats 1 and 2).
pub const FORMAT_VERSION: u8 = 1;
/// Tree format 1: plaintext names.
pub const TREE_V1: u8 = 1;
/// Tree format 2: encrypted, authenticated names (`names`), node files.
pub const TREE_V2: u8 = 2;
/// The `filenames` of a format 2 tree.
pub const NAMES_AES_SIV: &str = "aes-siv";
/// The tree's config file, at the backing root.
pub const CONFIG_FILE: &str = "kmsfs.json";
/// The xattr holding a file's header.
pub const HEADER_XATTR: &str = "user.kmsfs.header";
/// Every xattr under this prefix belongs to kmsfs and is hidden from the mounted view.
pub const RESERVED_XATTR_PREFIX: &str = "user.kmsfs.";
/// Temp entries (of a rekey, a tree-key move, a mkdir) start with this; hidden from the
/// mounted view, and what an interrupted one left is removed by the next.
pub const TEMP_PREFIX: &str = ".kmsfs-tmp-";
/// AES-256-GCM chunks under keys derived from the DEK with HKDF-SHA256.
pub const SUITE_AES256GCM_HKDF_SHA256: u8 = 1;
/// Bytes a chunk takes beyond its plaintext (nonce and tag).
pub const CHUNK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Chunk size of new trees.
pub const DEFAULT_CHUNK_SIZE: u32 = 4096;
/// Smallest chunk size: 4 KiB.
pub const MIN_CHUNK_SHIFT: u8 = 12;
/// Largest chunk size: 1 MiB.
pub const MAX_CHUNK_SHIFT: u8 = 20;
/// Most keys a tree (and a header) can have.
pub const MAX_WRAPS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
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
        assert_eq!(chunk_shift(4096).unwrap(), 12);
        assert_eq!(chunk_shift(1 << 20).unwrap(), 20);
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
