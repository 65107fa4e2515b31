//! File keys wrapped locally under an RSA public key (encrypt-only trees).
//!
//! A host that may only call GetPublicKey can still make new files: it draws the DEK
//! itself and seals it with the key's public half; only a principal allowed `Decrypt`
//! on the key can open it again. KMS gives asymmetric wraps no encryption context, so
//! the binding the context gives symmetric wraps (tree and file) is inside the
//! plaintext, checked after every Decrypt:
//!
//! `RSAES-OAEP-SHA-256( "kmsfs-rsa1" ‖ purpose ‖ fs id (16) ‖ file id (16) ‖ DEK (32) )`
//!
//! with purpose `F` (a file key); 75 bytes, within the 190 that RSA-2048 takes.

use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::kms::DecryptRequest;

/// The algorithm KMS Decrypt is asked for.
pub const ALGORITHM: &str = "RSAES_OAEP_SHA_256";
const MAGIC: &[u8] = b"kmsfs-rsa1";
const FILE_KEY: u8 = b'F';
const BOUND_LEN: usize = MAGIC.len() + 1 + 16 + 16 + 32;

/// An RSA public key (DER SubjectPublicKeyInfo) of 2048 to 4096 bits, checked.
pub fn parse(der: &[u8]) -> Result<OaepPublicEncryptingKey, String> {
    let k =
        PublicEncryptingKey::from_der(der).map_err(|e| format!("not an RSA public key: {e}"))?;
    if !(2048..=4096).contains(&k.key_size_bits()) {
        return Err(format!("RSA key of {} bits", k.key_size_bits()));
    }
    OaepPublicEncryptingKey::new(k).map_err(|_| "not usable for RSA-OAEP".to_string())
}

/// Parses the base64 DER of a tree config's `public_keys`.
pub fn parse_b64(b64: &str) -> Result<OaepPublicEncryptingKey, String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "public key is not base64".to_string())?;
    parse(&der)
}

fn bound(fs_id: &[u8; 16], file_id: &[u8; 16], dek: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(BOUND_LEN));
    p.extend_from_slice(MAGIC);
    p.push(FILE_KEY);
    p.extend_from_slice(fs_id);
    p.extend_from_slice(file_id);
    p.extend_from_slice(dek);
    p
}

/// The DEK of file `file_id` of tree `fs_id`, sealed under `key`.
pub fn seal(
    key: &OaepPublicEncryptingKey,
    fs_id: &[u8; 16],
    file_id: &[u8; 16],
    dek: &SecretKey,
) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &bound(fs_id, file_id, dek.as_bytes()),
            &mut out,
            None,
        )
        .map_err(|_| "RSA-OAEP encryption failed".to_string())?
        .len();
    out.truncate(n);
    Ok(out)
}

/// The DEK in what KMS Decrypt answered, if it is bound to this tree and file.
pub fn unbind(plain: &[u8], fs_id: &[u8; 16], file_id: &[u8; 16]) -> Option<SecretKey> {
    if plain.len() != BOUND_LEN {
        return None;
    }
    let want = bound(fs_id, file_id, &[0; 32]);
    let head = BOUND_LEN - 32;
    if plain[..head] != want[..head] {
        return None;
    }
    SecretKey::from_slice(&plain[head..])
}

/// The Decrypt request of an RSA wrap under `key_arn`.
pub fn decrypt_request(key_arn: &str, blob: &[u8]) -> DecryptRequest {
    DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: None,
        key_id: Some(key_arn.to_string()),
        encryption_algorithm: Some(ALGORITHM.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};

    #[test]
    fn sealed_key_opens_only_for_its_tree_and_file() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let der = private.public_key();
        let public = parse(
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(&der)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let dek = SecretKey::random();
        let (fs, file) = ([1u8; 16], [2u8; 16]);
        let blob = seal(&public, &fs, &file, &dek).unwrap();
        assert_eq!(blob.len(), 256);
        let private = OaepPrivateDecryptingKey::new(private).unwrap();
        let mut out = vec![0u8; private.min_output_size()];
        let plain = private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &blob, &mut out, None)
            .unwrap();
        assert_eq!(
            unbind(plain, &fs, &file).unwrap().as_bytes(),
            dek.as_bytes()
        );
        assert!(unbind(plain, &[9; 16], &file).is_none(), "another tree");
        assert!(unbind(plain, &fs, &[9; 16]).is_none(), "another file");
        assert!(unbind(&plain[1..], &fs, &file).is_none(), "truncated");
        assert!(unbind(dek.as_bytes(), &fs, &file).is_none(), "a bare key");
    }

    #[test]
    fn small_or_malformed_public_keys_are_refused() {
        assert!(parse(b"not der").is_err());
        assert!(parse_b64("!!").is_err());
    }
}
