//! AWS fidelity of the embedded KMS: refusals, tags, DryRun, limits, HMAC and asymmetric keys.

use super::tests::{code, create_with, kms};
use super::*;

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    }
}

/// Options this KMS does not have are refused with AWS's errors; before, CreateKey
/// returned an enabled key with our own material for Origin EXTERNAL (now a key pending
/// import, tests_import.rs), and a single-region key for MultiRegion.
#[test]
fn create_key_refuses_what_it_does_not_do() {
    let (_d, k) = kms();
    let with = |f: fn(&mut CreateKeyRequest)| {
        let mut r = CreateKeyRequest::default();
        f(&mut r);
        k.create_key(r)
    };
    use ErrorCode::*;
    let md = with(|r| r.origin = Some("EXTERNAL".into()))
        .unwrap()
        .key_metadata;
    assert_eq!(
        (md.key_state.as_str(), md.enabled),
        ("PendingImport", false)
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
    assert_eq!(
        keys.len(),
        3,
        "no refused request made a key (2 + the EXTERNAL one)"
    );
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
    // Lengths are the model's ValidationException, in AWS's words; the rest TagException.
    assert_eq!(code(create(vec![tag("", "1")])), ValidationException);
    let e = create(vec![tag("ok", "1"), tag(&"k".repeat(129), "1")]).unwrap_err();
    assert_eq!(e.code, ValidationException);
    assert!(e.message.starts_with("1 validation error detected: Value 'kkk") && e.message.ends_with("at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128"), "{e}");
    assert_eq!(
        code(create(vec![tag("k", &"v".repeat(257))])),
        ValidationException
    );
    assert_eq!(
        create(vec![tag("aws:x", "1")]).unwrap_err().message,
        "Tags beginning with aws: are reserved"
    );
    assert_eq!(
        create(vec![tag("a", "1"), tag("a", "2")])
            .unwrap_err()
            .message,
        "Duplicate tag keys"
    );
    let many: Vec<Tag> = (0..51).map(|i| tag(&format!("t{i}"), "")).collect();
    assert_eq!(create(many).unwrap_err().message, "Too many tags");
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
fn on_demand_rotations_are_limited_to_twenty_five() {
    let (_d, k) = kms();
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let rotate = || k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() });
    for _ in 0..super::keys::MAX_ON_DEMAND_ROTATIONS {
        rotate().unwrap();
    }
    assert_eq!(super::keys::MAX_ON_DEMAND_ROTATIONS, 25);
    let e = rotate().unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceededException);
    assert!(e.message.contains("(25)"), "{e}");
    // The refusal changed nothing: 26 versions (the first and 25 rotations).
    let r = k
        .list_key_rotations(ListKeyRotationsRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.rotations.len(), 25);
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
    let mk = |spec: &str, usage: Option<&str>| create_with(&k, spec, usage);
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

/// A server answers for one region and account: ARNs carry them, other regions and
/// accounts see nothing, and `local` ARNs (written by the embedded KMS into trees of the
/// same keystore) still name its keys. Before, every ARN said `local` and any region saw
/// every key.
#[test]
fn a_server_is_one_region_and_account() {
    let (d, _) = kms();
    let k = LocalKms::open(&d.path().join("ks"), false)
        .unwrap()
        .serving("eu-west-3", "111122223333")
        .unwrap();
    let as_ = |region: &str| {
        k.with_caller(Caller {
            principal: DEFAULT_PRINCIPAL.into(),
            source: "test".into(),
            region: Some(region.into()),
            account: None,
        })
    };
    let home = as_("eu-west-3");
    let md = home.create_key(Default::default()).unwrap().key_metadata;
    assert_eq!(
        md.arn,
        format!("arn:aws:kms:eu-west-3:111122223333:key/{}", md.key_id)
    );
    assert_eq!(md.aws_account_id, "111122223333");
    let describe =
        |kms: &LocalKms, id: &str| kms.describe_key(DescribeKeyRequest { key_id: id.into() });
    describe(&home, &md.arn).unwrap();
    describe(&home, &md.key_id).unwrap();
    let local = format!("arn:aws:kms:local:000000000000:key/{}", md.key_id);
    describe(&home, &local).unwrap();
    for other in [
        format!("arn:aws:kms:us-east-1:111122223333:key/{}", md.key_id),
        format!("arn:aws:kms:eu-west-3:999999999999:key/{}", md.key_id),
    ] {
        assert_eq!(code(describe(&home, &other)), ErrorCode::NotFoundException);
    }
    home.create_alias(CreateAliasRequest {
        alias_name: "alias/a".into(),
        target_key_id: md.key_id.clone(),
    })
    .unwrap();
    // Signed for another region: no key, no alias, no listing, no creation.
    let away = as_("us-east-1");
    let e = describe(&away, &md.key_id).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFoundException);
    assert!(
        e.message.contains("arn:aws:kms:us-east-1:"),
        "{}",
        e.message
    );
    assert_eq!(
        code(describe(&away, "alias/a")),
        ErrorCode::NotFoundException
    );
    assert!(away.list_keys(Default::default()).unwrap().keys.is_empty());
    assert!(away
        .list_aliases(Default::default())
        .unwrap()
        .aliases
        .is_empty());
    assert_eq!(
        code(away.create_key(Default::default())),
        ErrorCode::UnsupportedOperationException
    );
    assert_eq!(home.list_keys(Default::default()).unwrap().keys.len(), 1);
    let g = home
        .create_grant(CreateGrantRequest {
            key_id: md.key_id.clone(),
            grantee_principal: "bob".into(),
            operations: vec!["Decrypt".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        code(away.retire_grant(RetireGrantRequest {
            grant_token: Some(g.grant_token.clone()),
            ..Default::default()
        })),
        ErrorCode::InvalidGrantTokenException
    );
    assert_eq!(home.list_keys(Default::default()).unwrap().keys.len(), 1);
    let plain = LocalKms::open(&d.path().join("ks"), false).unwrap();
    if plain.e.store.shared() {
        // A store several Regions share: what a Region's server made lives in that
        // Region's scope, out of the Region-less embedded view.
        assert_eq!(
            code(describe(&plain, &md.arn)),
            ErrorCode::NotFoundException
        );
    } else {
        // The embedded KMS is not regional: any region's ARN names its keys.
        describe(&plain, &md.arn).unwrap();
    }
    assert!(LocalKms::open(&d.path().join("ks"), false)
        .unwrap()
        .serving("EU", "111122223333")
        .is_err());
    assert!(LocalKms::open(&d.path().join("ks"), false)
        .unwrap()
        .serving("eu-west-3", "1234")
        .is_err());
}

/// AWS's default key policy names the account root; it passes the lockout check and
/// lets every principal of the account in.
#[test]
fn the_account_root_in_a_key_policy() {
    let (_d, k) = kms();
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
        "Action": "kms:*", "Resource": "*"}]})
    .to_string();
    let md = k
        .create_key(CreateKeyRequest {
            policy: Some(policy),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    let bob = k.with_caller(Caller {
        principal: "bob".into(),
        source: "test".into(),
        region: None,
        account: None,
    });
    bob.encrypt(EncryptRequest {
        key_id: md.key_id.clone(),
        plaintext: Secret(b"x".to_vec()),
        ..Default::default()
    })
    .unwrap();
    // Another account's root lets nobody in, and fails the lockout check.
    let foreign = serde_json::json!({"Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
        "Action": "kms:*", "Resource": "*"}]})
    .to_string();
    assert_eq!(
        code(k.create_key(CreateKeyRequest {
            policy: Some(foreign),
            ..Default::default()
        })),
        ErrorCode::MalformedPolicyDocumentException
    );
}

/// GetKeyLastUsage comes from the audit log: successful cryptographic operations only.
#[test]
fn key_last_usage() {
    let (_d, k) = kms();
    let id = k
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    let other = k
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    let last = |key: &str| k.get_key_last_usage(GetKeyLastUsageRequest { key_id: key.into() });
    let r = last(&id).unwrap();
    assert!(r.key_last_usage.operation.is_none());
    assert!(r.tracking_start_date.unwrap() >= r.key_creation_date.unwrap());
    let blob = k
        .encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(b"x".to_vec()),
            ..Default::default()
        })
        .unwrap()
        .ciphertext_blob;
    k.describe_key(DescribeKeyRequest { key_id: id.clone() })
        .unwrap();
    // a failed decrypt (wrong context) is not a use
    let _ = k.decrypt(DecryptRequest {
        ciphertext_blob: blob.clone(),
        encryption_context: Some([("a".to_string(), "b".to_string())].into()),
        ..Default::default()
    });
    let r = last(&id).unwrap();
    assert_eq!(r.key_last_usage.operation.as_deref(), Some("Encrypt"));
    assert!((now() - r.key_last_usage.timestamp.unwrap()).abs() < 60.0);
    assert!(r.key_last_usage.kms_request_id.is_some());
    k.decrypt(DecryptRequest {
        ciphertext_blob: blob,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        last(&id).unwrap().key_last_usage.operation.as_deref(),
        Some("Decrypt")
    );
    assert!(last(&other).unwrap().key_last_usage.operation.is_none());
    k.create_alias(CreateAliasRequest {
        alias_name: "alias/u".into(),
        target_key_id: id.clone(),
    })
    .unwrap();
    assert_eq!(code(last("alias/u")), ErrorCode::ValidationException);
}

/// GetKeyLastUsage's index reads what any process appended since its last look: a use by
/// another process (another engine over the same keystore) is seen, and an older use
/// of another key does not hide it.
#[test]
fn key_last_usage_sees_other_processes() {
    let (d, a) = kms();
    let id = a
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    let last = |k: &LocalKms| {
        k.get_key_last_usage(GetKeyLastUsageRequest { key_id: id.clone() })
            .unwrap()
            .key_last_usage
            .operation
    };
    assert_eq!(last(&a), None);
    let b = LocalKms::open_unchecked(&d.path().join("ks"), false).unwrap();
    assert!(
        !Arc::ptr_eq(&a.e, &b.e),
        "a second engine, as another process would have"
    );
    b.generate_data_key(GenerateDataKeyRequest {
        key_id: id.clone(),
        key_spec: Some("AES_256".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(last(&a).as_deref(), Some("GenerateDataKey"));
    a.encrypt(EncryptRequest {
        key_id: id.clone(),
        plaintext: Secret(b"x".to_vec()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(last(&b).as_deref(), Some("Encrypt"));
    assert_eq!(last(&a).as_deref(), Some("Encrypt"));
}

/// A temp file of the legacy store file, left by a writer killed mid-write, is removed
/// when the keystore is next opened.
#[test]
fn stray_store_temp_files_are_cleaned_up() {
    let (d, k) = kms();
    let ks = d.path().join("ks");
    let stray = ks.join(format!(".{STORE_FILE}.tmp.4242"));
    std::fs::write(&stray, b"half a store").unwrap();
    drop(k);
    let k = LocalKms::open(&ks, false).unwrap();
    k.create_key(Default::default()).unwrap();
    assert!(!stray.exists());
}

/// AWS's order of checks: the key exists, the caller is allowed, the key's state, its
/// usage for the operation (with AWS's message), and only then the parameters.
#[test]
fn state_then_usage_then_parameters() {
    use ErrorCode::*;
    let (_d, k) = kms();
    let make = |spec: &str, usage: &str| {
        k.create_key(CreateKeyRequest {
            key_spec: Some(spec.into()),
            key_usage: Some(usage.into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
    };
    let signer = make("RSA_2048", "SIGN_VERIFY");
    let e = k
        .encrypt(EncryptRequest {
            key_id: signer.key_id.clone(),
            plaintext: Secret(b"x".to_vec()),
            encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.code, InvalidKeyUsageException, "{e}");
    assert_eq!(
        e.message,
        format!(
            "{} key usage is SIGN_VERIFY which is not valid for Encrypt.",
            signer.arn
        )
    );
    let sym = make("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
    let e = k
        .generate_mac(GenerateMacRequest {
            key_id: sym.key_id.clone(),
            message: Secret(b"m".to_vec()),
            mac_algorithm: "NOT_AN_ALGORITHM".into(),
            grant_tokens: None,
            dry_run: None,
        })
        .unwrap_err();
    assert_eq!(e.code, InvalidKeyUsageException, "{e}");
    assert!(
        e.message
            .ends_with("key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac."),
        "{e}"
    );
    // A disabled key: its state is reported before its kind or usage.
    let mac = make("HMAC_256", "GENERATE_VERIFY_MAC");
    k.disable_key(KeyIdRequest {
        key_id: mac.key_id.clone(),
    })
    .unwrap();
    assert_eq!(
        code(k.rotate_key_on_demand(KeyIdRequest {
            key_id: mac.key_id.clone()
        })),
        DisabledException
    );
    assert_eq!(
        code(k.encrypt(EncryptRequest {
            key_id: mac.key_id.clone(),
            plaintext: Secret(b"x".to_vec()),
            ..Default::default()
        })),
        DisabledException
    );
}
