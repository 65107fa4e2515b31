//! AWS fidelity of the embedded KMS: refusals, tags, DryRun, limits, HMAC and asymmetric keys.

use super::*;
use sha2::Digest as _;

fn kms() -> (tempfile::TempDir, LocalKms) {
    let d = tempfile::tempdir().unwrap();
    let k = LocalKms::open(&d.path().join("ks"), true).unwrap();
    (d, k)
}

fn code<T: std::fmt::Debug>(r: KmsResult<T>) -> ErrorCode {
    r.unwrap_err().code
}

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    }
}

/// Options this KMS does not have are refused with AWS's errors; before, CreateKey
/// returned an enabled key with our own material for Origin EXTERNAL, and a
/// single-region key for MultiRegion.
#[test]
fn create_key_refuses_what_it_does_not_do() {
    let (_d, k) = kms();
    let with = |f: fn(&mut CreateKeyRequest)| {
        let mut r = CreateKeyRequest::default();
        f(&mut r);
        k.create_key(r)
    };
    use ErrorCode::*;
    assert_eq!(
        code(with(|r| r.origin = Some("EXTERNAL".into()))),
        UnsupportedOperationException
    );
    assert_eq!(
        code(with(|r| r.origin = Some("AWS_CLOUDHSM".into()))),
        UnsupportedOperationException
    );
    assert_eq!(
        code(with(|r| r.origin = Some("NOPE".into()))),
        ValidationException
    );
    assert_eq!(
        code(with(|r| r.multi_region = Some(true))),
        UnsupportedOperationException
    );
    assert_eq!(
        code(with(|r| r.custom_key_store_id = Some("cks-1".into()))),
        CustomKeyStoreNotFoundException
    );
    assert_eq!(
        code(with(|r| r.xks_key_id = Some("x".into()))),
        ValidationException
    );
    assert_eq!(
        code(with(
            |r| r.customer_master_key_spec = Some("RSA_2048".into())
        )),
        ValidationException
    );
    with(|r| r.origin = Some("AWS_KMS".into())).unwrap();
    with(|r| r.multi_region = Some(false)).unwrap();
    let keys = k.list_keys(ListKeysRequest::default()).unwrap().keys;
    assert_eq!(keys.len(), 2, "no refused request made a key");
}

#[test]
fn tags_are_validated_stored_merged_listed_and_removed() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let create = |tags: Vec<Tag>| {
        k.create_key(CreateKeyRequest {
            tags: Some(tags),
            ..Default::default()
        })
    };
    assert_eq!(code(create(vec![tag("aws:x", "1")])), TagException);
    assert_eq!(code(create(vec![tag("AWS:x", "1")])), TagException);
    assert_eq!(
        code(create(vec![tag("a", "1"), tag("a", "2")])),
        TagException
    );
    assert_eq!(code(create(vec![tag("", "1")])), TagException);
    assert_eq!(code(create(vec![tag(&"k".repeat(129), "1")])), TagException);
    assert_eq!(code(create(vec![tag("k", &"v".repeat(257))])), TagException);
    let many: Vec<Tag> = (0..51).map(|i| tag(&format!("t{i}"), "")).collect();
    assert_eq!(code(create(many)), TagException);
    let id = create(vec![tag("team", "storage"), tag("env", "")])
        .unwrap()
        .key_metadata
        .key_id;
    let list = |limit, marker| {
        k.list_resource_tags(ListResourceTagsRequest {
            key_id: id.clone(),
            limit,
            marker,
        })
        .unwrap()
    };
    assert_eq!(
        list(None, None).tags,
        [tag("team", "storage"), tag("env", "")]
    );
    k.tag_resource(TagResourceRequest {
        key_id: id.clone(),
        tags: vec![tag("env", "prod"), tag("owner", "ops")],
    })
    .unwrap();
    let all = list(None, None);
    assert_eq!(
        all.tags,
        [
            tag("team", "storage"),
            tag("env", "prod"),
            tag("owner", "ops")
        ]
    );
    assert!(!all.truncated);
    let p1 = list(Some(2), None);
    assert!(p1.truncated);
    let p2 = list(Some(2), p1.next_marker.clone());
    assert_eq!(p2.tags, [tag("owner", "ops")]);
    assert_eq!(
        code(k.list_resource_tags(ListResourceTagsRequest {
            key_id: id.clone(),
            limit: Some(51),
            marker: None,
        })),
        ValidationException
    );
    k.untag_resource(UntagResourceRequest {
        key_id: id.clone(),
        tag_keys: vec!["team".into(), "absent".into()],
    })
    .unwrap();
    assert_eq!(
        list(None, None).tags,
        [tag("env", "prod"), tag("owner", "ops")]
    );
    let full: Vec<Tag> = (0..49).map(|i| tag(&format!("t{i}"), "")).collect();
    assert_eq!(
        code(k.tag_resource(TagResourceRequest {
            key_id: id.clone(),
            tags: full,
        })),
        LimitExceededException,
        "51 tags after the merge"
    );
}

/// DryRun used to be ignored: the operation ran and answered. Now it is checked and
/// answered DryRunOperationException; grant tokens (no grants exist) are refused.
#[test]
fn dry_run_and_grant_tokens() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let enc = |dry: Option<bool>, tokens: Option<Vec<String>>| {
        k.encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(b"x".to_vec()),
            grant_tokens: tokens,
            dry_run: dry,
            ..Default::default()
        })
    };
    assert_eq!(code(enc(Some(true), None)), DryRunOperationException);
    assert_eq!(
        code(enc(None, Some(vec!["t".into()]))),
        InvalidGrantTokenException
    );
    let blob = enc(Some(false), Some(vec![])).unwrap().ciphertext_blob;
    let dec = |dry| {
        k.decrypt(DecryptRequest {
            ciphertext_blob: blob.clone(),
            dry_run: dry,
            ..Default::default()
        })
    };
    assert_eq!(code(dec(Some(true))), DryRunOperationException);
    assert_eq!(dec(None).unwrap().plaintext.0, b"x");
    let gdk = |dry| {
        k.generate_data_key(GenerateDataKeyRequest {
            key_id: id.clone(),
            number_of_bytes: Some(32),
            dry_run: dry,
            ..Default::default()
        })
    };
    assert_eq!(code(gdk(Some(true))), DryRunOperationException);
    gdk(None).unwrap();
    let re = k.re_encrypt(ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        destination_key_id: id.clone(),
        dry_run: Some(true),
        ..Default::default()
    });
    assert_eq!(code(re), DryRunOperationException);
    // A dry run that would fail fails for its own reason.
    k.disable_key(KeyIdRequest { key_id: id.clone() }).unwrap();
    assert_eq!(code(enc(Some(true), None)), DisabledException);
}

#[test]
fn on_demand_rotations_are_limited_to_ten() {
    let (_d, k) = kms();
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let rotate = || k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() });
    for _ in 0..10 {
        rotate().unwrap();
    }
    assert_eq!(code(rotate()), ErrorCode::LimitExceededException);
}

#[test]
fn description_policy_names_and_random_bytes() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    k.update_key_description(UpdateKeyDescriptionRequest {
        key_id: id.clone(),
        description: "renamed".into(),
    })
    .unwrap();
    let md = k
        .describe_key(DescribeKeyRequest { key_id: id.clone() })
        .unwrap()
        .key_metadata;
    assert_eq!(md.description, "renamed");
    assert_eq!(
        code(k.update_key_description(UpdateKeyDescriptionRequest {
            key_id: id.clone(),
            description: "d".repeat(8193),
        })),
        ValidationException
    );
    let names = k
        .list_key_policies(ListKeyPoliciesRequest {
            key_id: id.clone(),
            limit: None,
            marker: None,
        })
        .unwrap();
    assert_eq!(names.policy_names, ["default"]);
    let r = |n| {
        k.generate_random(GenerateRandomRequest {
            number_of_bytes: n,
            ..Default::default()
        })
    };
    let a = r(Some(32)).unwrap().plaintext.0.clone();
    let b = r(Some(32)).unwrap().plaintext.0.clone();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    assert_eq!(r(Some(1024)).unwrap().plaintext.0.len(), 1024);
    for n in [Some(0), Some(1025), None] {
        assert_eq!(code(r(n)), ValidationException, "{n:?}");
    }
    assert_eq!(
        code(k.generate_random(GenerateRandomRequest {
            number_of_bytes: Some(8),
            custom_key_store_id: Some("cks-1".into()),
            ..Default::default()
        })),
        CustomKeyStoreNotFoundException
    );
}

/// HMAC by the RustCrypto crates, to cross-check aws-lc-rs's.
macro_rules! rc_hmac {
    ($digest:ty, $key:expr, $msg:expr) => {{
        use hmac::Mac;
        let mut m = hmac::Hmac::<$digest>::new_from_slice($key).unwrap();
        m.update($msg);
        m.finalize().into_bytes().to_vec()
    }};
}

#[test]
fn hmac_keys_generate_and_verify_macs_and_nothing_else() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let mk = |spec: &str, usage: Option<&str>| {
        k.create_key(CreateKeyRequest {
            key_spec: Some(spec.into()),
            key_usage: usage.map(str::to_string),
            ..Default::default()
        })
    };
    assert_eq!(
        code(mk("HMAC_256", None)),
        ValidationException,
        "usage is required"
    );
    assert_eq!(
        code(mk("HMAC_256", Some("ENCRYPT_DECRYPT"))),
        ValidationException
    );
    assert_eq!(
        code(mk("SYMMETRIC_DEFAULT", Some("GENERATE_VERIFY_MAC"))),
        ValidationException
    );
    assert_eq!(code(mk("SM2", Some("SIGN_VERIFY"))), ValidationException);
    for (spec, alg, len) in [
        ("HMAC_224", "HMAC_SHA_224", 28),
        ("HMAC_256", "HMAC_SHA_256", 32),
        ("HMAC_384", "HMAC_SHA_384", 48),
        ("HMAC_512", "HMAC_SHA_512", 64),
    ] {
        let md = mk(spec, Some("GENERATE_VERIFY_MAC")).unwrap().key_metadata;
        assert_eq!(
            (md.key_spec.as_str(), md.key_usage.as_str()),
            (spec, "GENERATE_VERIFY_MAC")
        );
        assert_eq!(md.mac_algorithms, [alg]);
        assert!(md.encryption_algorithms.is_empty());
        let id = md.key_id;
        let msg = Secret(b"the message".to_vec());
        let mac = k
            .generate_mac(GenerateMacRequest {
                key_id: id.clone(),
                message: msg.clone(),
                mac_algorithm: alg.into(),
                ..Default::default()
            })
            .unwrap()
            .mac;
        // Cross-checked with the RustCrypto hmac crate over the stored material.
        let material = k.snapshot().unwrap().keys[&id].versions[0]
            .material
            .0
            .clone();
        assert_eq!(material.len(), len);
        let want = match spec {
            "HMAC_224" => rc_hmac!(sha2::Sha224, &material, &msg.0),
            "HMAC_256" => rc_hmac!(sha2::Sha256, &material, &msg.0),
            "HMAC_384" => rc_hmac!(sha2::Sha384, &material, &msg.0),
            _ => rc_hmac!(sha2::Sha512, &material, &msg.0),
        };
        assert_eq!(mac, want, "{spec}");
        let verify = |mac: Vec<u8>, alg: &str| {
            k.verify_mac(VerifyMacRequest {
                key_id: id.clone(),
                message: msg.clone(),
                mac_algorithm: alg.into(),
                mac,
                ..Default::default()
            })
        };
        assert!(verify(mac.clone(), alg).unwrap().mac_valid);
        let mut bad = mac.clone();
        bad[0] ^= 1;
        assert_eq!(code(verify(bad, alg)), KMSInvalidMacException);
        assert_eq!(
            code(verify(mac[..mac.len() - 1].to_vec(), alg)),
            KMSInvalidMacException
        );
        let other = if alg == "HMAC_SHA_256" {
            "HMAC_SHA_512"
        } else {
            "HMAC_SHA_256"
        };
        assert_eq!(code(verify(mac.clone(), other)), InvalidKeyUsageException);
        // An HMAC key encrypts nothing and rotates never.
        let enc = k.encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(b"x".to_vec()),
            ..Default::default()
        });
        assert_eq!(code(enc), InvalidKeyUsageException);
        let gdk = k.generate_data_key(GenerateDataKeyRequest {
            key_id: id.clone(),
            number_of_bytes: Some(32),
            ..Default::default()
        });
        assert_eq!(code(gdk), InvalidKeyUsageException);
        assert_eq!(
            code(k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })),
            UnsupportedOperationException
        );
        assert_eq!(
            code(k.enable_key_rotation(EnableKeyRotationRequest {
                key_id: id.clone(),
                rotation_period_in_days: None,
            })),
            UnsupportedOperationException
        );
        // A forged blob naming the HMAC key: refused, never opened with its material.
        let mut blob = vec![BLOB_FORMAT];
        blob.extend_from_slice(uuid::Uuid::parse_str(&id).unwrap().as_bytes());
        blob.extend_from_slice(&0u32.to_be_bytes());
        blob.extend_from_slice(&[0u8; NONCE_LEN + 8 + TAG_LEN]);
        let dec = k.decrypt(DecryptRequest {
            ciphertext_blob: blob,
            ..Default::default()
        });
        assert_eq!(code(dec), InvalidKeyUsageException);
    }
    // A symmetric key makes no MAC.
    let sym = mk("SYMMETRIC_DEFAULT", None).unwrap().key_metadata.key_id;
    let r = k.generate_mac(GenerateMacRequest {
        key_id: sym,
        message: Secret(b"m".to_vec()),
        mac_algorithm: "HMAC_SHA_256".into(),
        ..Default::default()
    });
    assert_eq!(code(r), InvalidKeyUsageException);
}

#[test]
fn asymmetric_signing_keys_sign_verify_and_show_only_their_public_key() {
    let (_d, k) = kms();
    use ErrorCode::*;
    let mk = |spec: &str, usage: Option<&str>| {
        k.create_key(CreateKeyRequest {
            key_spec: Some(spec.into()),
            key_usage: usage.map(str::to_string),
            ..Default::default()
        })
    };
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
        code(mk("ECC_NIST_P256", Some("KEY_AGREEMENT"))),
        ValidationException,
        "not built yet"
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
