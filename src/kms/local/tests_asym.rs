//! Asymmetric keys of the embedded KMS: signing, RSA encryption, data key pairs.

use super::tests::{code, create_with, kms};
use super::*;
use sha2::Digest as _;

#[test]
fn asymmetric_signing_keys_sign_verify_and_show_only_their_public_key() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let mk = |spec: &str, usage: Option<&str>| create_with(&k, spec, usage);
    assert_eq!(
        code(mk("RSA_2048", None)),
        ValidationException,
        "usage is required"
    );
    assert_eq!(
        code(mk("ECC_NIST_P256", Some("ENCRYPT_DECRYPT"))),
        ValidationException
    );
    assert_eq!(
        code(mk("ECC_NIST_P256", Some("GENERATE_VERIFY_MAC"))),
        ValidationException
    );
    let msg = b"sign this".to_vec();
    for (spec, algs) in [
        ("ECC_NIST_P256", &["ECDSA_SHA_256"][..]),
        ("ECC_NIST_P384", &["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", &["ECDSA_SHA_512"]),
        ("ECC_SECG_P256K1", &["ECDSA_SHA_256"]),
        (
            "RSA_2048",
            &[
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
            ],
        ),
    ] {
        let md = mk(spec, Some("SIGN_VERIFY")).unwrap().key_metadata;
        assert_eq!(md.signing_algorithms, algs, "{spec}");
        assert!(md.encryption_algorithms.is_empty());
        let id = md.key_id;
        let pk = k
            .get_public_key(GetPublicKeyRequest {
                key_id: id.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (pk.key_spec.as_str(), pk.key_usage.as_str()),
            (spec, "SIGN_VERIFY")
        );
        let private = k.snapshot().unwrap().keys[&id].versions[0]
            .material
            .0
            .clone();
        // The public key is an SPKI, shorter than the stored PKCS#8 and not containing it.
        assert!(pk.public_key.len() < private.len(), "{spec}");
        assert!(!pk.public_key.windows(private.len()).any(|w| w == private));
        assert_eq!(pk.public_key[0], 0x30, "DER SEQUENCE");
        for alg in algs {
            let sign = |m: &[u8], t: &str| {
                k.sign(SignRequest {
                    key_id: id.clone(),
                    message: Secret(m.to_vec()),
                    message_type: Some(t.into()),
                    signing_algorithm: alg.to_string(),
                    ..Default::default()
                })
            };
            let verify = |m: &[u8], t: &str, s: &[u8]| {
                k.verify(VerifyRequest {
                    key_id: id.clone(),
                    message: Secret(m.to_vec()),
                    message_type: Some(t.into()),
                    signature: s.to_vec(),
                    signing_algorithm: alg.to_string(),
                    ..Default::default()
                })
            };
            let s = sign(&msg, "RAW").unwrap().signature;
            assert!(
                verify(&msg, "RAW", &s).unwrap().signature_valid,
                "{spec} {alg}"
            );
            assert_eq!(
                code(verify(b"sign that", "RAW", &s)),
                KMSInvalidSignatureException
            );
            let mut bad = s.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(
                code(verify(&msg, "RAW", &bad)),
                KMSInvalidSignatureException
            );
            // A signature of the digest is a signature of the message, both ways.
            let digest: Vec<u8> = match &alg[alg.len() - 3..] {
                "256" => sha2::Sha256::digest(&msg).to_vec(),
                "384" => sha2::Sha384::digest(&msg).to_vec(),
                _ => sha2::Sha512::digest(&msg).to_vec(),
            };
            let ds = sign(&digest, "DIGEST").unwrap().signature;
            assert!(
                verify(&msg, "RAW", &ds).unwrap().signature_valid,
                "{spec} {alg}"
            );
            assert!(verify(&digest, "DIGEST", &s).unwrap().signature_valid);
            assert_eq!(code(sign(&digest[1..], "DIGEST")), ValidationException);
            assert_eq!(code(sign(&msg, "TEXT")), ValidationException);
        }
        let other = if spec.starts_with("RSA") {
            "ECDSA_SHA_256"
        } else {
            "RSASSA_PSS_SHA_256"
        };
        let r = k.sign(SignRequest {
            key_id: id.clone(),
            message: Secret(msg.clone()),
            signing_algorithm: other.into(),
            ..Default::default()
        });
        assert_eq!(code(r), InvalidKeyUsageException);
        let enc = k.encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(b"x".to_vec()),
            ..Default::default()
        });
        assert_eq!(code(enc), InvalidKeyUsageException);
        assert_eq!(
            code(k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })),
            UnsupportedOperationException
        );
    }
    let sym = mk("SYMMETRIC_DEFAULT", None).unwrap().key_metadata.key_id;
    let r = k.get_public_key(GetPublicKeyRequest {
        key_id: sym.clone(),
        ..Default::default()
    });
    assert_eq!(code(r), UnsupportedOperationException);
    let r = k.sign(SignRequest {
        key_id: sym,
        message: Secret(msg),
        signing_algorithm: "ECDSA_SHA_256".into(),
        ..Default::default()
    });
    assert_eq!(code(r), InvalidKeyUsageException);
}

#[test]
fn error_messages_in_aws_wording() {
    let (_d, k) = kms();
    let e = k
        .describe_key(DescribeKeyRequest {
            key_id: "fake-key-id".into(),
        })
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::NotFoundException, "Invalid keyId 'fake-key-id'")
    );
    let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let e = k
        .describe_key(DescribeKeyRequest { key_id: id.into() })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFoundException);
    assert_eq!(
        e.message,
        format!("Key 'arn:aws:kms:local:000000000000:key/{id}' does not exist")
    );
}

#[test]
fn rsa_encryption_keys_encrypt_and_decrypt_with_oaep() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let md = k
        .create_key(CreateKeyRequest {
            key_spec: Some("RSA_2048".into()),
            key_usage: Some("ENCRYPT_DECRYPT".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    assert_eq!(
        md.encryption_algorithms,
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(md.signing_algorithms.is_empty());
    let id = md.key_id;
    let enc = |alg: Option<&str>, pt: &[u8], ctx| {
        k.encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(pt.to_vec()),
            encryption_algorithm: alg.map(str::to_string),
            encryption_context: ctx,
            ..Default::default()
        })
    };
    let dec = |key: Option<&str>, alg: Option<&str>, ct: &[u8]| {
        k.decrypt(DecryptRequest {
            ciphertext_blob: ct.to_vec(),
            key_id: key.map(str::to_string),
            encryption_algorithm: alg.map(str::to_string),
            ..Default::default()
        })
    };
    for (alg, max) in [("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)] {
        let r = enc(Some(alg), b"a data key", None).unwrap();
        assert_eq!(r.ciphertext_blob.len(), 256);
        assert_eq!(r.encryption_algorithm, alg);
        let ct = r.ciphertext_blob;
        let p = dec(Some(&id), Some(alg), &ct).unwrap();
        assert_eq!(
            (p.plaintext.0.as_slice(), p.encryption_algorithm.as_str()),
            (&b"a data key"[..], alg)
        );
        assert_eq!(
            code(dec(None, Some(alg), &ct)),
            ValidationException,
            "KeyId required"
        );
        let other = if alg.ends_with('1') {
            "RSAES_OAEP_SHA_256"
        } else {
            "RSAES_OAEP_SHA_1"
        };
        assert_eq!(
            code(dec(Some(&id), Some(other), &ct)),
            InvalidCiphertextException
        );
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert_eq!(
            code(dec(Some(&id), Some(alg), &bad)),
            InvalidCiphertextException
        );
        enc(Some(alg), &vec![7u8; max], None).unwrap();
        assert_eq!(
            code(enc(Some(alg), &vec![7u8; max + 1], None)),
            ValidationException
        );
    }
    assert_eq!(
        code(enc(None, b"x", None)),
        InvalidKeyUsageException,
        "algorithm required"
    );
    assert_eq!(
        code(enc(Some("SYMMETRIC_DEFAULT"), b"x", None)),
        InvalidKeyUsageException
    );
    let ctx = Some([("a".to_string(), "b".to_string())].into_iter().collect());
    assert_eq!(
        code(enc(Some("RSAES_OAEP_SHA_256"), b"x", ctx)),
        ValidationException
    );
    let sign = k.sign(SignRequest {
        key_id: id.clone(),
        message: Secret(b"m".to_vec()),
        signing_algorithm: "RSASSA_PSS_SHA_256".into(),
        ..Default::default()
    });
    assert_eq!(code(sign), InvalidKeyUsageException);
    // A symmetric key does not decrypt RSA ciphertext.
    let sym = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let ct = enc(Some("RSAES_OAEP_SHA_256"), b"x", None)
        .unwrap()
        .ciphertext_blob;
    assert_eq!(
        code(dec(Some(&sym), Some("RSAES_OAEP_SHA_256"), &ct)),
        InvalidKeyUsageException
    );
    let pk = k
        .get_public_key(GetPublicKeyRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        pk.encryption_algorithms,
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(pk.signing_algorithms.is_empty());
}

#[test]
fn data_key_pairs_come_with_their_private_key_wrapped() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let ctx: Option<EncryptionContext> = Some(
        [("purpose".to_string(), "test".to_string())]
            .into_iter()
            .collect(),
    );
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048"] {
        let r = k
            .generate_data_key_pair(GenerateDataKeyPairRequest {
                key_id: id.clone(),
                key_pair_spec: spec.into(),
                encryption_context: ctx.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.key_pair_spec, spec);
        // The wrapped private key decrypts (with the context) to the plaintext one.
        let p = k
            .decrypt(DecryptRequest {
                ciphertext_blob: r.private_key_ciphertext_blob.clone(),
                encryption_context: ctx.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.plaintext.0, r.private_key_plaintext.0);
        // The public key is the private key's.
        assert_eq!(
            public_key_der(spec, &r.private_key_plaintext.0).unwrap(),
            r.public_key
        );
        let w = k
            .generate_data_key_pair_without_plaintext(GenerateDataKeyPairRequest {
                key_id: id.clone(),
                key_pair_spec: spec.into(),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(w.public_key, r.public_key, "a new pair each time");
    }
    let bad = k.generate_data_key_pair(GenerateDataKeyPairRequest {
        key_id: id.clone(),
        key_pair_spec: "RSA_1024".into(),
        ..Default::default()
    });
    assert_eq!(code(bad), ValidationException);
    let signer = k
        .create_key(CreateKeyRequest {
            key_spec: Some("ECC_NIST_P256".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    let r = k.generate_data_key_pair(GenerateDataKeyPairRequest {
        key_id: signer,
        key_pair_spec: "ECC_NIST_P256".into(),
        ..Default::default()
    });
    assert_eq!(
        code(r),
        InvalidKeyUsageException,
        "wrapped only under symmetric keys"
    );
}

#[test]
fn key_agreement_keys_derive_the_same_secret_on_both_sides() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let mk = |spec: &str, usage: &str| {
        k.create_key(CreateKeyRequest {
            key_spec: Some(spec.into()),
            key_usage: Some(usage.into()),
            ..Default::default()
        })
    };
    assert_eq!(
        code(mk("ECC_SECG_P256K1", "KEY_AGREEMENT")),
        ValidationException
    );
    assert_eq!(code(mk("RSA_2048", "KEY_AGREEMENT")), ValidationException);
    let pubkey = |id: &str| {
        k.get_public_key(GetPublicKeyRequest {
            key_id: id.into(),
            ..Default::default()
        })
        .unwrap()
    };
    let derive = |id: &str, peer: &[u8]| {
        k.derive_shared_secret(DeriveSharedSecretRequest {
            key_id: id.into(),
            key_agreement_algorithm: "ECDH".into(),
            public_key: peer.to_vec(),
            ..Default::default()
        })
    };
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] {
        let a = mk(spec, "KEY_AGREEMENT").unwrap().key_metadata;
        assert_eq!(a.key_agreement_algorithms, ["ECDH"]);
        assert!(a.signing_algorithms.is_empty());
        let b = mk(spec, "KEY_AGREEMENT").unwrap().key_metadata.key_id;
        let (pa, pb) = (pubkey(&a.key_id), pubkey(&b));
        assert_eq!(pa.key_agreement_algorithms, ["ECDH"]);
        let ab = derive(&a.key_id, &pb.public_key).unwrap().shared_secret;
        let ba = derive(&b, &pa.public_key).unwrap().shared_secret;
        assert_eq!(ab.0, ba.0, "{spec}");
        // An outside party's ephemeral key (aws-lc-rs directly) agrees on the same secret.
        let alg = match spec {
            "ECC_NIST_P256" => &aws_lc_rs::agreement::ECDH_P256,
            "ECC_NIST_P384" => &aws_lc_rs::agreement::ECDH_P384,
            _ => &aws_lc_rs::agreement::ECDH_P521,
        };
        let mine = aws_lc_rs::agreement::PrivateKey::generate(alg).unwrap();
        let my_pub: aws_lc_rs::encoding::PublicKeyX509Der =
            aws_lc_rs::encoding::AsDer::as_der(&mine.compute_public_key().unwrap()).unwrap();
        let theirs = derive(&a.key_id, my_pub.as_ref()).unwrap().shared_secret;
        let local = aws_lc_rs::agreement::agree(
            &mine,
            aws_lc_rs::agreement::UnparsedPublicKey::new(alg, &pa.public_key),
            (),
            |z| Ok(z.to_vec()),
        )
        .unwrap();
        assert_eq!(theirs.0, local);
        assert_eq!(code(derive(&a.key_id, b"not der")), ValidationException);
        let sign = k.sign(SignRequest {
            key_id: a.key_id.clone(),
            message: Secret(b"m".to_vec()),
            signing_algorithm: "ECDSA_SHA_256".into(),
            ..Default::default()
        });
        assert_eq!(code(sign), InvalidKeyUsageException);
    }
    // A key on another curve is not a peer.
    let p256 = mk("ECC_NIST_P256", "KEY_AGREEMENT")
        .unwrap()
        .key_metadata
        .key_id;
    let p384 = mk("ECC_NIST_P384", "KEY_AGREEMENT")
        .unwrap()
        .key_metadata
        .key_id;
    assert_eq!(
        code(derive(&p256, &pubkey(&p384).public_key)),
        ValidationException
    );
    let signer = mk("ECC_NIST_P256", "SIGN_VERIFY")
        .unwrap()
        .key_metadata
        .key_id;
    assert_eq!(
        code(derive(&signer, &pubkey(&p256).public_key)),
        InvalidKeyUsageException
    );
}
