//! Encrypted, authenticated file names (format v2; see docs/FORMAT.md "Names").
//!
//! A name is sealed with AES-256-SIV (RFC 5297), deterministic so that a lookup can
//! compute the backing name, with the directory's own random id as associated data: a
//! backing entry renamed, or moved into another backing directory, no longer opens.
//! Names are NUL-padded to a multiple of 16 bytes first (a name never holds NUL), so the
//! backing tree shows a name's length only to within 16 bytes. The backing name is the
//! sealed bytes in unpadded base64url; past 255 bytes it is `~` and the base64url of their
//! SHA-256, with the sealed bytes kept in the entry's `user.kmsfs.ln.<hash>` xattr.

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::SecretKey;

/// The xattr of each backing directory holding its 16-byte random id.
pub const DIR_ID_XATTR: &str = "user.kmsfs.dirid";
/// Prefix of the xattr holding the sealed name of an entry whose backing name is
/// hashed: `user.kmsfs.ln.` and the hash part of the backing name (one per hard link).
pub const LONG_NAME_XATTR_PREFIX: &str = "user.kmsfs.ln.";
/// The first byte of a hashed backing name (not in the base64url alphabet).
pub const LONG_PREFIX: u8 = b'~';
/// Bytes of a directory id.
pub const DIR_ID_LEN: usize = 16;
/// The longest name (bytes), as on ext4.
pub const NAME_MAX: usize = 255;
const PAD: usize = 16;
const LABEL: &[u8] = b"kmsfs name v2";

/// Why a name cannot be sealed or a backing name does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Longer than 255 bytes (ENAMETOOLONG).
    #[error("name longer than 255 bytes")]
    TooLong,
    /// Empty, `.`, `..`, or holding `/` or NUL (EINVAL).
    #[error("not a valid name")]
    Invalid,
    /// The backing name is not one this directory's key made: altered, moved from
    /// another directory, or not kmsfs's.
    #[error(
        "name does not authenticate in this directory (altered, or moved from another directory)"
    )]
    Forged,
    /// A hashed name without (or with the wrong) long-name xattr.
    #[error("long name: its user.kmsfs.ln.* xattr is missing or does not match")]
    LongName,
    /// A hashed name whose sealed bytes fit a short name: not the one encoding kmsfs
    /// writes, so a second entry for a name another entry may already hold.
    #[error("hashed name for a name that fits unhashed: not kmsfs's encoding (a second entry for one name)")]
    NotCanonical,
}

/// A name as it is stored in a backing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The backing directory entry's name.
    pub backing: Vec<u8>,
    /// For a hashed (long) name, the sealed bytes for its long-name xattr.
    pub long: Option<Vec<u8>>,
}

/// The tree's name key: two AES-256 keys (S2V and CTR), derived from the tree key.
pub struct NameKey(Zeroizing<[u8; 64]>);

impl NameKey {
    /// The name key of tree `fs_id` from its tree key.
    pub fn derive(tree_key: &SecretKey, fs_id: &str) -> NameKey {
        let mut k = Zeroizing::new([0u8; 64]);
        k[..32].copy_from_slice(
            tree_key
                .derive(fs_id.as_bytes(), b"kmsfs v2 names s2v")
                .as_bytes(),
        );
        k[32..].copy_from_slice(
            tree_key
                .derive(fs_id.as_bytes(), b"kmsfs v2 names ctr")
                .as_bytes(),
        );
        NameKey(k)
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.0.as_slice().try_into().expect("64-byte key"))
    }

    /// Seals `name` for directory `dir_id`.
    pub fn seal(&self, dir_id: &[u8; DIR_ID_LEN], name: &[u8]) -> Result<Sealed, NameError> {
        check(name)?;
        let mut padded = Zeroizing::new(name.to_vec());
        padded.resize(name.len().div_ceil(PAD) * PAD, 0);
        let sealed = self
            .siv()
            .encrypt([LABEL, dir_id.as_slice()], &padded)
            .expect("SIV encryption of a short name cannot fail");
        let b64 = URL_SAFE_NO_PAD.encode(&sealed);
        Ok(if b64.len() <= NAME_MAX {
            Sealed {
                backing: b64.into_bytes(),
                long: None,
            }
        } else {
            Sealed {
                backing: long_name(&sealed),
                long: Some(sealed),
            }
        })
    }

    /// The name of backing entry `backing` of directory `dir_id`; `long` is its
    /// long-name xattr (`long_xattr`) when the backing name is hashed.
    pub fn open(
        &self,
        dir_id: &[u8; DIR_ID_LEN],
        backing: &[u8],
        long: Option<&[u8]>,
    ) -> Result<Vec<u8>, NameError> {
        let sealed = if is_long(backing) {
            let l = long.ok_or(NameError::LongName)?;
            if long_name(l) != backing {
                return Err(NameError::LongName);
            }
            // One encoding per name: the writer hashes only what would not fit.
            if base64::encoded_len(l.len(), false).is_some_and(|n| n <= NAME_MAX) {
                return Err(NameError::NotCanonical);
            }
            l.to_vec()
        } else {
            URL_SAFE_NO_PAD
                .decode(backing)
                .map_err(|_| NameError::Forged)?
        };
        if sealed.len() < 16 + PAD || (sealed.len() - 16) % PAD != 0 {
            return Err(NameError::Forged);
        }
        let mut name = self
            .siv()
            .decrypt([LABEL, dir_id.as_slice()], &sealed)
            .map_err(|_| NameError::Forged)?;
        let padded = name.len();
        while name.last() == Some(&0) {
            name.pop();
        }
        // One encoding per name: at most 15 bytes of padding, and a valid name inside.
        if padded - name.len() >= PAD || check(&name).is_err() {
            return Err(NameError::Forged);
        }
        Ok(name)
    }
}

/// What a node file holds: symlinks and special files of a v2 tree are backing regular
/// files (see docs/FORMAT.md "Node files"), marked by a backing size no sealed content
/// can have: `size % (chunk + 28)` is the kind's code (1..=5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A symbolic link.
    Symlink = 1,
    /// A named pipe.
    Fifo = 2,
    /// A socket.
    Socket = 3,
    /// A character device.
    Char = 4,
    /// A block device.
    Block = 5,
}

impl NodeKind {
    /// The kind of code `c` (the size residue).
    pub fn from_code(c: u64) -> Option<NodeKind> {
        Some(match c {
            1 => NodeKind::Symlink,
            2 => NodeKind::Fifo,
            3 => NodeKind::Socket,
            4 => NodeKind::Char,
            5 => NodeKind::Block,
            _ => return None,
        })
    }

    /// The kind of file type bits `fmt` (S_IFLNK, ...), if a node.
    pub fn from_fmt(fmt: u32) -> Option<NodeKind> {
        Some(match fmt {
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::Char,
            libc::S_IFBLK => NodeKind::Block,
            _ => return None,
        })
    }

    /// Its file type bits.
    pub fn fmt(self) -> u32 {
        match self {
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
            NodeKind::Char => libc::S_IFCHR,
            NodeKind::Block => libc::S_IFBLK,
        }
    }
}

/// A symlink or special file: its kind, device number, and (symlinks) target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// The device number (devices; 0 otherwise).
    pub rdev: u64,
    /// The target (symlinks; empty otherwise).
    pub target: Vec<u8>,
}

/// The longest symlink target (bytes), as on Linux.
pub const TARGET_MAX: usize = 4095;
const NODE_LABEL: &[u8] = b"kmsfs node v2";

impl NameKey {
    /// The sealed record of a node file. Symlink targets are NUL-padded to 4096 bytes,
    /// so their length does not show.
    pub fn seal_node(&self, n: &Node) -> Result<Vec<u8>, NameError> {
        if n.target.len() > TARGET_MAX || n.target.contains(&0) {
            return Err(NameError::TooLong);
        }
        let mut rec = Zeroizing::new(vec![n.kind as u8]);
        rec.extend_from_slice(&n.rdev.to_be_bytes());
        if n.kind == NodeKind::Symlink {
            if n.target.is_empty() {
                return Err(NameError::Invalid);
            }
            rec.extend_from_slice(&n.target);
            rec.resize(9 + TARGET_MAX + 1, 0);
        }
        Ok(self
            .siv()
            .encrypt([NODE_LABEL], &rec)
            .expect("SIV encryption of a node record cannot fail"))
    }

    /// The node in a sealed record, checked to be of `kind`.
    pub fn open_node(&self, sealed: &[u8], kind: NodeKind) -> Result<Node, NameError> {
        let rec = self
            .siv()
            .decrypt([NODE_LABEL], sealed)
            .map_err(|_| NameError::Forged)?;
        let want = if kind == NodeKind::Symlink {
            9 + TARGET_MAX + 1
        } else {
            9
        };
        if rec.len() != want || rec[0] != kind as u8 {
            return Err(NameError::Forged);
        }
        let rdev = u64::from_be_bytes(rec[1..9].try_into().expect("8 bytes"));
        let mut target = rec[9..].to_vec();
        while target.last() == Some(&0) {
            target.pop();
        }
        if kind == NodeKind::Symlink && (target.is_empty() || target.contains(&0)) {
            return Err(NameError::Forged);
        }
        Ok(Node { kind, rdev, target })
    }
}

/// The backing size of a node file of `kind` whose sealed record is `sealed_len` bytes,
/// in a tree of `cchunk` backing bytes per chunk: the smallest size at least
/// `sealed_len` with `size % cchunk == code` (the rest is a hole).
pub fn node_size(kind: NodeKind, sealed_len: u64, cchunk: u64) -> u64 {
    let code = kind as u64;
    let base = sealed_len.div_ceil(cchunk) * cchunk + code;
    if base - cchunk >= sealed_len && base >= cchunk {
        base - cchunk
    } else {
        base
    }
}

/// The node kind a backing regular file of `size` bytes is, if any.
pub fn node_kind(size: u64, cchunk: u64) -> Option<NodeKind> {
    NodeKind::from_code(size % cchunk)
}

/// The xattr (on the entry itself) holding the sealed name behind hashed name `backing`.
pub fn long_xattr(backing: &[u8]) -> String {
    format!(
        "{LONG_NAME_XATTR_PREFIX}{}",
        String::from_utf8_lossy(backing.get(1..).unwrap_or_default())
    )
}

/// Is `backing` a hashed (long) backing name?
pub fn is_long(backing: &[u8]) -> bool {
    backing.first() == Some(&LONG_PREFIX)
}

fn long_name(sealed: &[u8]) -> Vec<u8> {
    let mut n = vec![LONG_PREFIX];
    n.extend_from_slice(URL_SAFE_NO_PAD.encode(Sha256::digest(sealed)).as_bytes());
    n
}

/// A name a directory may hold: 1..=255 bytes, no `/` or NUL, not `.` or `..`.
pub fn check(name: &[u8]) -> Result<(), NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// A fresh random directory id.
pub fn new_dir_id() -> [u8; DIR_ID_LEN] {
    crate::crypto::random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> NameKey {
        NameKey::derive(&SecretKey([7; 32]), "00000000-0000-4000-8000-000000000000")
    }

    #[test]
    fn short_names_are_base64url_and_lengths_show_only_to_16_bytes() {
        let k = key();
        let d = [1; 16];
        let a = k.seal(&d, b"a").unwrap();
        let p = k.seal(&d, b"sixteen-bytes-xx").unwrap();
        assert_eq!(
            a.backing.len(),
            p.backing.len(),
            "1 and 16 bytes look alike"
        );
        assert!(a.long.is_none());
        assert!(a
            .backing
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_eq!(k.seal(&d, b"a").unwrap(), a, "deterministic");
        assert_ne!(k.seal(&[2; 16], b"a").unwrap(), a, "per directory");
        // 160 bytes is the longest that stays short (16 + 160 sealed -> 235 chars).
        assert!(k.seal(&d, &[b'x'; 160]).unwrap().long.is_none());
        let l = k.seal(&d, &[b'x'; 161]).unwrap();
        assert_eq!(l.backing.len(), 44);
        assert_eq!(
            k.open(&d, &l.backing, l.long.as_deref()).unwrap(),
            [b'x'; 161]
        );
    }

    #[test]
    fn tampered_moved_and_malformed_names_do_not_open() {
        let k = key();
        let d = [1; 16];
        let s = k.seal(&d, b"divorce-settlement.pdf").unwrap();
        assert_eq!(
            k.open(&[2; 16], &s.backing, None),
            Err(NameError::Forged),
            "moved"
        );
        let mut t = s.backing.clone();
        t[3] = if t[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open(&d, &t, None), Err(NameError::Forged), "altered");
        assert_eq!(k.open(&d, b"kmsfs.json", None), Err(NameError::Forged));
        assert_eq!(k.open(&d, b"", None), Err(NameError::Forged));
        let l = k.seal(&d, &[b'y'; 255]).unwrap();
        assert_eq!(k.open(&d, &l.backing, None), Err(NameError::LongName));
        let other = k.seal(&d, &[b'z'; 255]).unwrap();
        assert_eq!(
            k.open(&d, &l.backing, other.long.as_deref()),
            Err(NameError::LongName)
        );
        let other_key =
            NameKey::derive(&SecretKey([8; 32]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(other_key.open(&d, &s.backing, None), Err(NameError::Forged));
    }

    #[test]
    fn sealed_names_that_open_to_impossible_names_are_refused() {
        // Sealed with the right key and directory, but not through `seal`'s checks:
        // `.`, `..`, `/`, NUL inside, empty, 16 bytes of padding, over 255 bytes.
        let k = key();
        let d = [3; 16];
        let raw = |padded: &[u8]| {
            URL_SAFE_NO_PAD
                .encode(k.siv().encrypt([LABEL, d.as_slice()], padded).unwrap())
                .into_bytes()
        };
        let pad = |n: &[u8]| {
            let mut v = n.to_vec();
            v.resize(n.len().div_ceil(16).max(1) * 16, 0);
            v
        };
        for bad in [
            pad(b"."),
            pad(b".."),
            pad(b"a/b"),
            pad(b"a\0b"),
            vec![0; 16],
        ] {
            assert_eq!(
                k.open(&d, &raw(&bad), None),
                Err(NameError::Forged),
                "{bad:?}"
            );
        }
        let mut over = b"x".to_vec();
        over.resize(32, 0); // 31 bytes of padding
        assert_eq!(k.open(&d, &raw(&over), None), Err(NameError::Forged));
        assert_eq!(k.open(&d, &raw(&pad(b"ok")), None).unwrap(), b"ok");
    }

    #[test]
    fn every_name_has_one_encoding() {
        let k = key();
        let d = [4; 16];
        // The short name's sealed bytes under a hashed name (with its xattr): a second
        // entry for "a" beside the real one.
        let s = k.seal(&d, b"a").unwrap();
        let sealed = URL_SAFE_NO_PAD.decode(&s.backing).unwrap();
        assert_eq!(
            k.open(&d, &long_name(&sealed), Some(&sealed)),
            Err(NameError::NotCanonical)
        );
        // The longest short name too; the shortest hashed one opens.
        let s = k.seal(&d, &[b'x'; 160]).unwrap();
        let sealed = URL_SAFE_NO_PAD.decode(&s.backing).unwrap();
        assert_eq!(
            k.open(&d, &long_name(&sealed), Some(&sealed)),
            Err(NameError::NotCanonical)
        );
        let l = k.seal(&d, &[b'x'; 161]).unwrap();
        assert!(k.open(&d, &l.backing, l.long.as_deref()).is_ok());
        // Base64 with non-zero trailing bits decodes to the same bytes elsewhere; refused.
        let s = k.seal(&d, b"b").unwrap();
        let mut t = s.backing.clone();
        let last = t.last_mut().unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let i = alphabet.iter().position(|c| c == last).unwrap();
        *last = alphabet[i ^ 1];
        assert_ne!(t, s.backing);
        assert_eq!(k.open(&d, &t, None), Err(NameError::Forged));
    }

    #[test]
    fn names_that_cannot_be_are_refused() {
        let k = key();
        let d = [0; 16];
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(k.seal(&d, bad), Err(NameError::Invalid), "{bad:?}");
        }
        assert_eq!(k.seal(&d, &[b'a'; 256]), Err(NameError::TooLong));
    }

    #[test]
    fn node_records_round_trip_and_their_sizes_mark_them() {
        let k = key();
        let cchunk = 4096 + 28;
        for (kind, rdev, target) in [
            (NodeKind::Symlink, 0, vec![b'a'; TARGET_MAX]),
            (NodeKind::Symlink, 0, b"../x".to_vec()),
            (NodeKind::Fifo, 0, vec![]),
            (NodeKind::Char, 0x0103, vec![]),
        ] {
            let n = Node { kind, rdev, target };
            let sealed = k.seal_node(&n).unwrap();
            assert_eq!(k.open_node(&sealed, kind).unwrap(), n);
            let size = node_size(kind, sealed.len() as u64, cchunk);
            assert!(size >= sealed.len() as u64);
            assert_eq!(node_kind(size, cchunk), Some(kind));
            // Every size a sealed regular file can have is not a node.
            let g = crate::format::Geometry::new(4096);
            for plain in [0, 1, 4095, 4096, 4097, 100_000] {
                assert_eq!(node_kind(g.backing_size(plain), cchunk), None);
            }
            let wrong = if kind == NodeKind::Fifo {
                NodeKind::Socket
            } else {
                NodeKind::Fifo
            };
            assert!(k.open_node(&sealed, wrong).is_err());
        }
        let n = Node {
            kind: NodeKind::Symlink,
            rdev: 0,
            target: vec![b'a'; 4096],
        };
        assert_eq!(k.seal_node(&n), Err(NameError::TooLong));
        assert_eq!(node_size(NodeKind::Fifo, 25, cchunk), cchunk + 2);
        assert_eq!(node_size(NodeKind::Symlink, 4121, cchunk), cchunk + 1);
    }

    proptest! {
        #[test]
        fn every_name_round_trips(name in proptest::collection::vec(1u8..=255, 1..=255), dir in any::<[u8; 16]>()) {
            prop_assume!(check(&name).is_ok());
            let k = key();
            let s = k.seal(&dir, &name).unwrap();
            prop_assert!(s.backing.len() <= NAME_MAX);
            prop_assert!(!s.backing.contains(&b'/') && !s.backing.contains(&0));
            prop_assert_eq!(k.open(&dir, &s.backing, s.long.as_deref()).unwrap(), name);
        }
    }
}
