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

    /// Checks the stored value (None: no xattr) for header `h`.
    pub fn verify(&self, h: &Header, stored: Option<&[u8]>) -> Result<(), AuthError> {
        let v = stored.ok_or(AuthError::Missing)?;
        if v.len() != AUTH_LEN {
            return Err(AuthError::Mac);
        }
        let g = u32::from_be_bytes(v[..4].try_into().expect("4 bytes"));
        if g != self.generation {
            return Err(AuthError::Generation(g, self.generation));
        }
        let want = self.mac(h);
        // constant time
        if want.iter().zip(&v[4..]).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
            return Err(AuthError::Mac);
        }
        Ok(())
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
        let other_tree = AuthKey::derive(
            &SecretKey([5; 32]),
            "00000000-0000-4000-8000-000000000002",
            3,
        );
        assert_eq!(other_tree.verify(&h, Some(&v)), Err(AuthError::Mac));
    }
}
