//! The file-authentication xattr (`user.kmsfs.auth`, trees of generation 1 and later;
//! docs/FORMAT.md "Tree-key generations").
//!
//! A header's own MAC is keyed from its DEK, so whoever obtained a DEK of the tree (a
//! grantee that called GenerateDataKey with the tree's context, or decrypted a file)
//! can make a header that passes it, and keep doing so after losing access. This MAC is
//! keyed from the tree key of the tree's current *generation* instead, which a revoke
//! replaces: it binds the header's fixed fields (file id), its DEK (through the header
//! MAC, which commits to it) and the tree's id to that generation. Re-wrapping a header
//! (`rotate`) keeps its DEK, so the value stays valid; a revoke recomputes it for every
//! file without unwrapping anything.
//!
//! Value: the generation (u32, big-endian) then HMAC-SHA256 (32 bytes).

use super::Header;
use crate::crypto::SecretKey;

/// The xattr holding a file's authentication under the tree key's generation.
pub const AUTH_XATTR: &str = "user.kmsfs.auth";
/// Its length.
pub const AUTH_LEN: usize = 4 + 32;

/// The key files are authenticated under, for one tree-key generation.
pub struct AuthKey {
    generation: u32,
    fs_id: [u8; 16],
    key: SecretKey,
}

/// Why a file's authentication does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `user.kmsfs.auth` xattr.
    #[error("no {AUTH_XATTR} (made outside kmsfs, or copied without its xattrs)")]
    Missing,
    /// The value is of another tree-key generation.
    #[error("authenticated under tree-key generation {0}, not the tree's {1} (made before a revoke, or by a revoked principal)")]
    Generation(u32, u32),
    /// The MAC does not verify.
    #[error("{AUTH_XATTR} does not verify (the header was replaced or forged)")]
    Mac,
}

impl AuthKey {
    /// The file-authentication key of generation `generation` of tree `fs_id` from its
    /// tree key.
    pub fn derive(tree_key: &SecretKey, fs_id: &str, generation: u32) -> AuthKey {
        let id = uuid::Uuid::parse_str(fs_id)
            .map(|u| *u.as_bytes())
            .unwrap_or_default();
        AuthKey {
            generation,
            fs_id: id,
            key: tree_key.derive(fs_id.as_bytes(), b"kmsfs file auth v1"),
        }
    }

    /// The generation it belongs to.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn mac(&self, h: &Header) -> [u8; 32] {
        self.key.hmac(&[
            b"kmsfs file auth v1",
            &self.generation.to_be_bytes(),
            &self.fs_id,
            &h.fixed_bytes(),
            &h.mac,
        ])
    }

    /// The xattr value for header `h`.
    pub fn seal(&self, h: &Header) -> [u8; AUTH_LEN] {
        let mut v = [0u8; AUTH_LEN];
        v[..4].copy_from_slice(&self.generation.to_be_bytes());
        v[4..].copy_from_slice(&self.mac(h));
        v
    }

    /// The xattr value of a node file (format 2) whose sealed record is `record`: only a
    /// writer makes symlinks and special files.
    pub fn seal_node(&self, record: &[u8]) -> [u8; AUTH_LEN] {
        let mut v = [0u8; AUTH_LEN];
        v[..4].copy_from_slice(&self.generation.to_be_bytes());
        v[4..].copy_from_slice(&self.node_mac(record));
        v
    }

    fn node_mac(&self, record: &[u8]) -> [u8; 32] {
        self.key.hmac(&[
            b"kmsfs node auth v1",
            &self.generation.to_be_bytes(),
            &self.fs_id,
            record,
        ])
    }

    /// Checks the stored value of a node file whose sealed record is `record`.
    pub fn verify_node(&self, record: &[u8], stored: Option<&[u8]>) -> Result<(), AuthError> {
        self.check(stored, &self.node_mac(record))
    }

    /// Checks the stored value (None: no xattr) for header `h`.
    pub fn verify(&self, h: &Header, stored: Option<&[u8]>) -> Result<(), AuthError> {
        self.check(stored, &self.mac(h))
    }

    fn check(&self, stored: Option<&[u8]>, want: &[u8; 32]) -> Result<(), AuthError> {
        let v = stored.ok_or(AuthError::Missing)?;
        if v.len() != AUTH_LEN {
            return Err(AuthError::Mac);
        }
        let g = u32::from_be_bytes(v[..4].try_into().expect("4 bytes"));
        if g != self.generation {
            return Err(AuthError::Generation(g, self.generation));
        }
        // constant time
        if want.iter().zip(&v[4..]).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
            return Err(AuthError::Mac);
        }
        Ok(())
    }
}

/// The xattr binding a format 2 directory to its place: the parent directory's id and
/// the backing name it is under (docs/FORMAT.md "Directory places").
pub const PLACE_XATTR: &str = "user.kmsfs.place";
/// Its longest value: the generation and two MACs (old and new place, mid-rename).
pub const PLACE_MAX: usize = 4 + 2 * 32;

/// The key directories are bound to their place under, for one tree-key generation. A
/// name is bound to its directory, not to the object behind it; without this, whoever
/// writes the backing tree could rename any directory of the tree over the backing entry
/// of another name (an upload directory over `~/.ssh`).
pub struct PlaceKey {
    generation: u32,
    key: SecretKey,
}

impl PlaceKey {
    /// The place key of generation `generation` of tree `fs_id` from its tree key.
    pub fn derive(tree_key: &SecretKey, fs_id: &str, generation: u32) -> PlaceKey {
        PlaceKey {
            generation,
            key: tree_key.derive(fs_id.as_bytes(), b"kmsfs dir place v1"),
        }
    }

    fn mac(&self, own_id: &[u8; 16], parent_id: &[u8; 16], name: &[u8]) -> [u8; 32] {
        self.key.hmac(&[
            b"kmsfs dir place v1",
            &self.generation.to_be_bytes(),
            own_id,
            parent_id,
            name,
        ])
    }

    /// The xattr value of directory `own_id` at each of `places` (parent id, backing
    /// name): one place, or two while a rename is under way (old and new).
    pub fn seal(&self, own_id: &[u8; 16], places: &[(&[u8; 16], &[u8])]) -> Vec<u8> {
        let mut v = self.generation.to_be_bytes().to_vec();
        for (parent, name) in places {
            v.extend_from_slice(&self.mac(own_id, parent, name));
        }
        v
    }

    /// Checks that directory `own_id` may be at (parent id, backing name).
    pub fn verify(
        &self,
        own_id: &[u8; 16],
        parent_id: &[u8; 16],
        name: &[u8],
        stored: Option<&[u8]>,
    ) -> Result<(), AuthError> {
        let v = stored.ok_or(AuthError::Missing)?;
        if v.len() < 4 + 32 || (v.len() - 4) % 32 != 0 || v.len() > PLACE_MAX {
            return Err(AuthError::Mac);
        }
        let g = u32::from_be_bytes(v[..4].try_into().expect("4 bytes"));
        if g != self.generation {
            return Err(AuthError::Generation(g, self.generation));
        }
        let want = self.mac(own_id, parent_id, name);
        let ok = v[4..]
            .chunks(32)
            .any(|m| want.iter().zip(m).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0);
        if ok {
            Ok(())
        } else {
            Err(AuthError::Mac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_header_tree_and_generation() {
        let fs = "00000000-0000-4000-8000-000000000001";
        let h = Header {
            suite: 1,
            chunk_shift: 12,
            file_id: [1; 16],
            mac: [2; 32],
            wraps: vec![],
        };
        let k = AuthKey::derive(&SecretKey([5; 32]), fs, 3);
        let v = k.seal(&h);
        assert_eq!(k.verify(&h, Some(&v)), Ok(()));
        assert_eq!(k.verify(&h, None), Err(AuthError::Missing));
        let n = k.seal_node(b"record");
        assert_eq!(k.verify_node(b"record", Some(&n)), Ok(()));
        assert_eq!(k.verify_node(b"recorD", Some(&n)), Err(AuthError::Mac));
        assert_eq!(k.verify(&h, Some(&n)), Err(AuthError::Mac));
        let mut other = h.clone();
        other.mac[0] ^= 1;
        assert_eq!(k.verify(&other, Some(&v)), Err(AuthError::Mac));
        other = h.clone();
        other.file_id[0] ^= 1;
        assert_eq!(k.verify(&other, Some(&v)), Err(AuthError::Mac));
        let next = AuthKey::derive(&SecretKey([6; 32]), fs, 4);
        assert_eq!(next.verify(&h, Some(&v)), Err(AuthError::Generation(3, 4)));
        // the same generation number under another tree key (a forged config)
        let forged = AuthKey::derive(&SecretKey([6; 32]), fs, 3);
        assert_eq!(forged.verify(&h, Some(&v)), Err(AuthError::Mac));
        let p = PlaceKey::derive(&SecretKey([5; 32]), fs, 3);
        let (own, parent, other) = ([1; 16], [2; 16], [3; 16]);
        let v = p.seal(&own, &[(&parent, b"name"), (&other, b"new")]);
        assert_eq!(p.verify(&own, &parent, b"name", Some(&v)), Ok(()));
        assert_eq!(p.verify(&own, &other, b"new", Some(&v)), Ok(()));
        assert_eq!(
            p.verify(&own, &other, b"name", Some(&v)),
            Err(AuthError::Mac)
        );
        assert_eq!(
            p.verify(&other, &parent, b"name", Some(&v)),
            Err(AuthError::Mac)
        );
        let next = PlaceKey::derive(&SecretKey([5; 32]), fs, 4);
        assert!(next.verify(&own, &parent, b"name", Some(&v)).is_err());
        let other_tree = AuthKey::derive(
            &SecretKey([5; 32]),
            "00000000-0000-4000-8000-000000000002",
            3,
        );
        assert_eq!(other_tree.verify(&h, Some(&v)), Err(AuthError::Mac));
    }
}
