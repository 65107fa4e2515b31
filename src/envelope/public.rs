//! File keys wrapped locally under a public key (encrypt-only trees): RSA, or ML-KEM
//! (post-quantum).
//!
//! A host that may only call GetPublicKey can still make new files: it draws the DEK
//! itself and seals it with the key's public half; only a principal allowed `Decrypt`
//! (RSA) or `Decapsulate` (ML-KEM) on the key can open it again. KMS gives these wraps no
//! encryption context, so the binding the context gives symmetric wraps (tree and file)
//! is carried inside the wrap, and checked when it is opened:
//!
//! - RSA: `RSAES-OAEP-SHA-256( "kmsfs-rsa1" ‖ purpose ‖ fs id (16) ‖ file id (16) ‖ DEK (32) )`,
//!   purpose `F` (a file key); 75 bytes, within the 190 that RSA-2048 takes.
//! - ML-KEM (FIPS 203): `ct ‖ AES-KW(K, DEK)` (RFC 3394, 40 bytes), where `(ct, ss)` is a
//!   fresh encapsulation to the pinned public key and `K = HKDF-SHA256(ikm = ss, salt =
//!   "kmsfs-mlkem1", info = "F" ‖ fs id ‖ file id)`: the DEK unwraps only under the same
//!   tree and file, and a recorded wrap stays confidential against a future quantum
//!   computer ("harvest now, decrypt later"), which RSA's does not.

use aws_lc_rs::kem::{self, EncapsulationKey};
use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, AES_256};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::kms::{DecapsulateRequest, DecryptRequest, Kms, KmsError};

/// The algorithm KMS Decrypt is asked for (RSA).
pub const ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// The algorithm KMS Decapsulate is asked for (ML-KEM).
pub const KEM_ALGORITHM: &str = "ML_KEM";
const MAGIC: &[u8] = b"kmsfs-rsa1";
const KEM_SALT: &[u8] = b"kmsfs-mlkem1";
const FILE_KEY: u8 = b'F';
const BOUND_LEN: usize = MAGIC.len() + 1 + 16 + 16 + 32;
/// AES key wrap of a 32-byte DEK.
const WRAPPED_LEN: usize = 40;

/// Why a public key or a wrap under it is not usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublicKeyError {
    /// The tree config's public key is not base64.
    #[error("public key is not base64")]
    NotBase64,
    /// Neither an RSA nor an ML-KEM public key (DER SubjectPublicKeyInfo).
    #[error("not an RSA or ML-KEM public key: {0}")]
    NotAKey(String),
    /// An RSA key outside 2048..4096 bits.
    #[error("RSA key of {0} bits (2048 to 4096)")]
    RsaSize(usize),
    /// The key parses but cannot seal (RSA-OAEP or ML-KEM failed).
    #[error("sealing under the public key failed")]
    Seal,
    /// The KMS refused or failed to open the wrap.
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The wrap opened, but not to a key bound to this tree and file.
    #[error("the wrap is not bound to this file (copied from another file or tree)")]
    Binding,
}

/// A pinned public key of an encrypt-only tree.
pub enum PublicKey {
    /// RSA (2048 to 4096 bits), RSA-OAEP with SHA-256.
    Rsa(OaepPublicEncryptingKey),
    /// ML-KEM-512/768/1024.
    MlKem(EncapsulationKey<kem::AlgorithmId>, usize),
}

/// The OID prefix of ML-KEM (2.16.840.1.101.3.4.4.N) in a SubjectPublicKeyInfo.
const ML_KEM_OID: [u8; 10] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04];

/// The ML-KEM parameter set named in a SubjectPublicKeyInfo, and its raw public key: the
/// DER is checked byte for byte (SEQUENCE { SEQUENCE { OID }, BIT STRING }).
fn ml_kem_spki(der: &[u8]) -> Option<(&'static kem::Algorithm<kem::AlgorithmId>, &[u8], usize)> {
    let (alg, ek_len, ct_len) = match der.get(16)? {
        1 => (&kem::ML_KEM_512, 800, 768),
        2 => (&kem::ML_KEM_768, 1184, 1088),
        3 => (&kem::ML_KEM_1024, 1568, 1568),
        _ => return None,
    };
    let total = 4 + 13 + 4 + 1 + ek_len;
    let mut head = vec![
        0x30,
        0x82,
        ((total - 4) >> 8) as u8,
        (total - 4) as u8,
        0x30,
        0x0b,
    ];
    head.extend_from_slice(&ML_KEM_OID);
    head.push(der[16]);
    head.extend_from_slice(&[
        0x03,
        0x82,
        ((ek_len + 1) >> 8) as u8,
        (ek_len + 1) as u8,
        0x00,
    ]);
    (der.len() == total && der.starts_with(&head)).then(|| (alg, &der[head.len()..], ct_len))
}

/// A public key (DER SubjectPublicKeyInfo): RSA of 2048 to 4096 bits, or ML-KEM.
pub fn parse(der: &[u8]) -> Result<PublicKey, PublicKeyError> {
    if let Some((alg, ek, ct_len)) = ml_kem_spki(der) {
        let k = EncapsulationKey::new(alg, ek)
            .map_err(|e| PublicKeyError::NotAKey(format!("ML-KEM: {e}")))?;
        return Ok(PublicKey::MlKem(k, ct_len));
    }
    let k =
        PublicEncryptingKey::from_der(der).map_err(|e| PublicKeyError::NotAKey(e.to_string()))?;
    if !(2048..=4096).contains(&k.key_size_bits()) {
        return Err(PublicKeyError::RsaSize(k.key_size_bits()));
    }
    OaepPublicEncryptingKey::new(k)
        .map(PublicKey::Rsa)
        .map_err(|_| PublicKeyError::NotAKey("not usable for RSA-OAEP".into()))
}

/// Parses the base64 DER of a tree config's `public_keys`.
pub fn parse_b64(b64: &str) -> Result<PublicKey, PublicKeyError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| PublicKeyError::NotBase64)?;
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

/// The key-wrapping key of an ML-KEM shared secret, bound to one tree and file.
fn kem_kek(ss: &[u8], fs_id: &[u8; 16], file_id: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut info = vec![FILE_KEY];
    info.extend_from_slice(fs_id);
    info.extend_from_slice(file_id);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(KEM_SALT), ss);
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(&info, &mut *k)
        .expect("32 bytes is a valid HKDF length");
    k
}

/// The DEK of file `file_id` of tree `fs_id`, sealed under `key`.
pub fn seal(
    key: &PublicKey,
    fs_id: &[u8; 16],
    file_id: &[u8; 16],
    dek: &SecretKey,
) -> Result<Vec<u8>, PublicKeyError> {
    match key {
        PublicKey::Rsa(key) => {
            let mut out = vec![0u8; key.ciphertext_size()];
            let n = key
                .encrypt(
                    &OAEP_SHA256_MGF1SHA256,
                    &bound(fs_id, file_id, dek.as_bytes()),
                    &mut out,
                    None,
                )
                .map_err(|_| PublicKeyError::Seal)?
                .len();
            out.truncate(n);
            Ok(out)
        }
        PublicKey::MlKem(ek, _) => {
            let (ct, ss) = ek.encapsulate().map_err(|_| PublicKeyError::Seal)?;
            let kek = kem_kek(ss.as_ref(), fs_id, file_id);
            let mut out = ct.as_ref().to_vec();
            let mut wrapped = [0u8; WRAPPED_LEN];
            KeyEncryptionKey::new(&AES_256, &*kek)
                .and_then(|k| k.wrap(dek.as_bytes(), &mut wrapped).map(|w| w.len()))
                .map_err(|_| PublicKeyError::Seal)?;
            out.extend_from_slice(&wrapped);
            Ok(out)
        }
    }
}

/// Opens the wrap `blob` of file `file_id` of tree `fs_id` under `key_arn`, whose pinned
/// public key is `pinned` (base64): KMS Decrypt (RSA) or Decapsulate (ML-KEM), then the
/// binding to this tree and file is checked.
pub fn open(
    kms: &dyn Kms,
    pinned: &str,
    key_arn: &str,
    blob: &[u8],
    fs_id: &[u8; 16],
    file_id: &[u8; 16],
) -> Result<SecretKey, PublicKeyError> {
    match parse_b64(pinned)? {
        PublicKey::Rsa(_) => {
            let r = kms.decrypt(decrypt_request(key_arn, blob))?;
            unbind(&r.plaintext.0, fs_id, file_id).ok_or(PublicKeyError::Binding)
        }
        PublicKey::MlKem(_, ct_len) => {
            if blob.len() != ct_len + WRAPPED_LEN {
                return Err(PublicKeyError::Binding);
            }
            let r = kms.decapsulate(DecapsulateRequest {
                key_id: key_arn.to_string(),
                shared_secret_ciphertext_blob: blob[..ct_len].to_vec(),
                encapsulation_algorithm: KEM_ALGORITHM.into(),
                ..Default::default()
            })?;
            let kek = kem_kek(&r.shared_secret.0, fs_id, file_id);
            let mut dek = Zeroizing::new([0u8; 32]);
            // AES-KW's integrity check fails for another tree, file or secret.
            KeyEncryptionKey::new(&AES_256, &*kek)
                .and_then(|k| k.unwrap(&blob[ct_len..], &mut *dek).map(|d| d.len()))
                .map_err(|_| PublicKeyError::Binding)?;
            SecretKey::from_slice(&*dek).ok_or(PublicKeyError::Binding)
        }
    }
}

/// The DEK in what KMS Decrypt answered, if it is bound to this tree and file (RSA).
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
        assert!(matches!(parse(b"not der"), Err(PublicKeyError::NotAKey(_))));
        assert!(matches!(parse_b64("!!"), Err(PublicKeyError::NotBase64)));
    }
}
