//! Post-quantum keys: ML-DSA (SIGN_VERIFY) and ML-KEM (ENCAPSULATE_DECAPSULATE). Outside
//! cross-checks (Python's `cryptography`) are in tests/compat/pq_keys.py.

use super::tests::{code, create_with, kms};
use super::*;

/// FIPS 204 §6.2's mu of `message` (empty context) under the DER public key `spki`:
/// SHAKE256(SHAKE256(pk, 64) ‖ 0 ‖ 0 ‖ M, 64); the raw key is the SPKI's last bytes.
pub(super) fn mu_of(spki: &[u8], message: &[u8]) -> [u8; 64] {
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    let n = match spki.len() {
        l if l > 2592 => 2592,
        l if l > 1952 => 1952,
        _ => 1312,
    };
    let pk = &spki[spki.len() - n..];
    let shake = |parts: &[&[u8]]| {
        let mut h = sha3::Shake256::default();
        parts.iter().for_each(|p| h.update(p));
        let mut out = [0u8; 64];
        h.finalize_xof().read(&mut out);
        out
    };
    shake(&[&shake(&[pk]), &[0, 0], message])
}

#[test]
fn ml_dsa_keys_sign_and_verify_raw_messages_and_external_mu() {
    let (_d, k) = kms();
    for (spec, sig_len) in [
        ("ML_DSA_44", 2420),
        ("ML_DSA_65", 3309),
        ("ML_DSA_87", 4627),
    ] {
        assert_eq!(
            code(create_with(&k, spec, Some("ENCRYPT_DECRYPT"))),
            ErrorCode::ValidationException,
            "{spec} is SIGN_VERIFY only"
        );
        let md = create_with(&k, spec, Some("SIGN_VERIFY"))
            .unwrap()
            .key_metadata;
        assert_eq!(md.signing_algorithms, ["ML_DSA_SHAKE_256"]);
        let sign = |m: &[u8], t: Option<&str>| {
            k.sign(SignRequest {
                key_id: md.key_id.clone(),
                message: Secret(m.to_vec()),
                message_type: t.map(str::to_string),
                signing_algorithm: "ML_DSA_SHAKE_256".into(),
                ..Default::default()
            })
        };
        let s = sign(b"post-quantum", None).unwrap();
        assert_eq!(s.signature.len(), sig_len, "{spec}");
        let verify = |m: &[u8], sig: &[u8]| {
            k.verify(VerifyRequest {
                key_id: md.key_id.clone(),
                message: Secret(m.to_vec()),
                signature: sig.to_vec(),
                signing_algorithm: "ML_DSA_SHAKE_256".into(),
                ..Default::default()
            })
        };
        assert!(
            verify(b"post-quantum", &s.signature)
                .unwrap()
                .signature_valid
        );
        assert_eq!(
            code(verify(b"post-quantun", &s.signature)),
            ErrorCode::KMSInvalidSignatureException
        );
        // DIGEST is not ML-DSA's; EXTERNAL_MU takes FIPS 204's 64-byte mu of the
        // message, and that signature is the message's (the mu is computed here as
        // FIPS 204 §6.2 says, with the RustCrypto sha3 crate).
        assert_eq!(
            code(sign(&[1; 64], Some("DIGEST"))),
            ErrorCode::ValidationException
        );
        assert_eq!(
            code(sign(&[1; 63], Some("EXTERNAL_MU"))),
            ErrorCode::ValidationException
        );
        let pk = k
            .get_public_key(GetPublicKeyRequest {
                key_id: md.key_id.clone(),
                ..Default::default()
            })
            .unwrap();
        let raw = aws_lc_rs::signature::ParsedPublicKey::new(
            match spec {
                "ML_DSA_44" => &aws_lc_rs::signature::ML_DSA_44,
                "ML_DSA_65" => &aws_lc_rs::signature::ML_DSA_65,
                _ => &aws_lc_rs::signature::ML_DSA_87,
            },
            &pk.public_key,
        )
        .unwrap();
        let mu = mu_of(&pk.public_key, b"post-quantum");
        let by_mu = sign(&mu, Some("EXTERNAL_MU")).unwrap();
        raw.verify_sig(b"post-quantum", &by_mu.signature)
            .expect("a signature of mu is the message's");
        let v = |m: &[u8], t: &str, sig: &[u8]| {
            k.verify(VerifyRequest {
                key_id: md.key_id.clone(),
                message: Secret(m.to_vec()),
                message_type: Some(t.into()),
                signature: sig.to_vec(),
                signing_algorithm: "ML_DSA_SHAKE_256".into(),
                ..Default::default()
            })
        };
        assert!(v(&mu, "EXTERNAL_MU", &s.signature).unwrap().signature_valid);
        assert_eq!(
            code(v(
                &mu_of(&pk.public_key, b"other"),
                "EXTERNAL_MU",
                &s.signature
            )),
            ErrorCode::KMSInvalidSignatureException
        );
        let pk = k
            .get_public_key(GetPublicKeyRequest {
                key_id: md.key_id.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(pk.signing_algorithms, ["ML_DSA_SHAKE_256"]);
        assert_eq!(pk.public_key[0], 0x30, "DER SubjectPublicKeyInfo");
        // ML-DSA keys are not data key pairs
        let sym = k.create_key(Default::default()).unwrap().key_metadata;
        assert_eq!(
            code(k.generate_data_key_pair(GenerateDataKeyPairRequest {
                key_id: sym.key_id.clone(),
                key_pair_spec: spec.into(),
                ..Default::default()
            })),
            ErrorCode::ValidationException
        );
    }
}

#[test]
fn ml_kem_keys_encapsulate_and_decapsulate_with_implicit_rejection() {
    let (_d, k) = kms();
    for (spec, ct_len) in [
        ("ML_KEM_512", 768),
        ("ML_KEM_768", 1088),
        ("ML_KEM_1024", 1568),
    ] {
        assert_eq!(
            code(create_with(&k, spec, Some("SIGN_VERIFY"))),
            ErrorCode::ValidationException
        );
        assert_eq!(
            code(create_with(&k, spec, None)),
            ErrorCode::ValidationException
        );
        let md = create_with(&k, spec, Some("ENCAPSULATE_DECAPSULATE"))
            .unwrap()
            .key_metadata;
        assert_eq!(md.encapsulation_algorithms, ["ML_KEM"]);
        assert!(md.encryption_algorithms.is_empty() && md.signing_algorithms.is_empty());
        let enc = k
            .encapsulate(EncapsulateRequest {
                key_id: md.key_id.clone(),
                encapsulation_algorithm: "ML_KEM".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(enc.shared_secret.0.len(), 32);
        assert_eq!(enc.shared_secret_ciphertext_blob.len(), ct_len, "{spec}");
        let dec = |ct: &[u8]| {
            k.decapsulate(DecapsulateRequest {
                key_id: md.key_id.clone(),
                shared_secret_ciphertext_blob: ct.to_vec(),
                encapsulation_algorithm: "ML_KEM".into(),
                ..Default::default()
            })
        };
        assert_eq!(
            dec(&enc.shared_secret_ciphertext_blob)
                .unwrap()
                .shared_secret,
            enc.shared_secret
        );
        // implicit rejection: an altered ciphertext gives 32 other bytes, not an error
        let mut bad = enc.shared_secret_ciphertext_blob.clone();
        bad[10] ^= 1;
        let other = dec(&bad).unwrap().shared_secret;
        assert_eq!(other.0.len(), 32);
        assert_ne!(other, enc.shared_secret);
        // only a wrong length is refused
        assert_eq!(
            code(dec(&enc.shared_secret_ciphertext_blob[1..])),
            ErrorCode::InvalidCiphertextException
        );
        assert_eq!(
            code(k.encapsulate(EncapsulateRequest {
                key_id: md.key_id.clone(),
                encapsulation_algorithm: "RSA".into(),
                ..Default::default()
            })),
            ErrorCode::ValidationException
        );
        let pk = k
            .get_public_key(GetPublicKeyRequest {
                key_id: md.key_id.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(pk.encapsulation_algorithms, ["ML_KEM"]);
        assert_eq!(pk.key_usage, "ENCAPSULATE_DECAPSULATE");
        // usage before parameters, with AWS's words
        assert_eq!(
            code(k.encrypt(EncryptRequest {
                key_id: md.key_id.clone(),
                plaintext: Secret(b"x".to_vec()),
                ..Default::default()
            })),
            ErrorCode::InvalidKeyUsageException
        );
    }
    // and a symmetric key does not encapsulate
    let sym = k.create_key(Default::default()).unwrap().key_metadata;
    assert_eq!(
        code(k.encapsulate(EncapsulateRequest {
            key_id: sym.key_id,
            encapsulation_algorithm: "ML_KEM".into(),
            ..Default::default()
        })),
        ErrorCode::InvalidKeyUsageException
    );
}
