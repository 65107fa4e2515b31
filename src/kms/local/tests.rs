use super::*;

fn kms() -> (tempfile::TempDir, LocalKms) {
    let d = tempfile::tempdir().unwrap();
    let k = LocalKms::open(&d.path().join("ks"), true).unwrap();
    (d, k)
}

fn ctx(pairs: &[(&str, &str)]) -> Option<EncryptionContext> {
    Some(
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

/// On e663627 a key whose deletion date had passed kept its material in the sealed
/// store until some other write happened: on a quiet keystore, forever.
#[test]
fn material_is_destroyed_when_the_deletion_date_passes() {
    let (_d, k) = kms();
    let doomed = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let kept = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    k.schedule_key_deletion(ScheduleKeyDeletionRequest {
        key_id: doomed.key_id.clone(),
        pending_window_in_days: Some(7),
    })
    .unwrap();
    assert!(k.purge_due_keys().unwrap().is_empty(), "not due yet");
    // the deletion date passes (written through the store, as if a week went by)
    k.mutate("Test", &mut OpInfo::default(), |s, _| {
        s.keys.get_mut(&doomed.key_id).unwrap().deletion_date = Some(now() - 1.0);
        Ok(())
    })
    .unwrap();
    assert!(
        k.read_store().unwrap().keys.contains_key(&doomed.key_id),
        "still on disk"
    );
    // the maintenance tick (server, mounts, `key rotate-due`) destroys it
    assert!(k.rotate_due_keys().unwrap().is_empty());
    let on_disk = k.read_store().unwrap();
    assert!(
        !on_disk.keys.contains_key(&doomed.key_id),
        "material destroyed"
    );
    assert!(on_disk.keys.contains_key(&kept.key_id));
    assert!(k.purge_due_keys().unwrap().is_empty());
}

#[test]
fn data_key_round_trip_with_context() {
    let (_d, k) = kms();
    let key = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    k.create_alias(CreateAliasRequest {
        alias_name: "alias/a".into(),
        target_key_id: key.key_id.clone(),
    })
    .unwrap();
    let c = ctx(&[("kmsfs:fs", "x"), ("kmsfs:file", "y")]);
    let g = k
        .generate_data_key(GenerateDataKeyRequest {
            key_id: "alias/a".into(),
            key_spec: Some("AES_256".into()),
            encryption_context: c.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(g.plaintext.0.len(), 32);
    assert_eq!(g.key_id, key.arn);
    let d = k
        .decrypt(DecryptRequest {
            ciphertext_blob: g.ciphertext_blob.clone(),
            encryption_context: c,
            key_id: None,
            encryption_algorithm: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.plaintext, g.plaintext);
    // wrong context
    let e = k
        .decrypt(DecryptRequest {
            ciphertext_blob: g.ciphertext_blob.clone(),
            encryption_context: ctx(&[("kmsfs:fs", "x"), ("kmsfs:file", "z")]),
            key_id: None,
            encryption_algorithm: None,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidCiphertextException);
    // a second process sees the key (fresh open of the same dir)
    let k2 = LocalKms::open(k.dir(), false).unwrap();
    assert!(k2
        .describe_key(DescribeKeyRequest {
            key_id: "alias/a".into()
        })
        .is_ok());
}

#[test]
fn states_rotation_and_validation() {
    let (_d, k) = kms();
    let id = k
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let enc = |k: &LocalKms| {
        k.encrypt(EncryptRequest {
            key_id: id.clone(),
            plaintext: Secret(b"hi".to_vec()),
            encryption_context: None,
            encryption_algorithm: None,
            ..Default::default()
        })
    };
    let old = enc(&k).unwrap().ciphertext_blob;
    k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })
        .unwrap();
    let newer = enc(&k).unwrap();
    assert_ne!(newer.key_material_id, None);
    let dec = |blob: Vec<u8>| {
        k.decrypt(DecryptRequest {
            ciphertext_blob: blob,
            encryption_context: None,
            key_id: None,
            encryption_algorithm: None,
            ..Default::default()
        })
    };
    assert_eq!(dec(old.clone()).unwrap().plaintext.0, b"hi");
    assert_eq!(
        k.list_key_rotations(ListKeyRotationsRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap()
        .rotations
        .len(),
        1
    );
    k.disable_key(KeyIdRequest { key_id: id.clone() }).unwrap();
    assert_eq!(
        dec(old.clone()).unwrap_err().code,
        ErrorCode::DisabledException
    );
    let e = k
        .schedule_key_deletion(ScheduleKeyDeletionRequest {
            key_id: id.clone(),
            pending_window_in_days: Some(3),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationException);
    k.schedule_key_deletion(ScheduleKeyDeletionRequest {
        key_id: id.clone(),
        pending_window_in_days: Some(7),
    })
    .unwrap();
    assert_eq!(
        dec(old.clone()).unwrap_err().code,
        ErrorCode::KMSInvalidStateException
    );
    k.cancel_key_deletion(KeyIdRequest { key_id: id.clone() })
        .unwrap();
    let md = k
        .describe_key(DescribeKeyRequest { key_id: id.clone() })
        .unwrap()
        .key_metadata;
    assert_eq!(md.key_state, "Disabled");
    k.enable_key(KeyIdRequest { key_id: id.clone() }).unwrap();
    assert!(dec(old).is_ok());
    let e = k
        .enable_key_rotation(EnableKeyRotationRequest {
            key_id: id.clone(),
            rotation_period_in_days: Some(30),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationException);
}

#[test]
fn refuses_world_readable_keystore() {
    let (_d, k) = kms();
    fs::set_permissions(
        k.dir().join(ROOT_KEY_FILE),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = LocalKms::open(k.dir(), false).err().unwrap().to_string();
    assert!(e.contains("group/others"), "{e}");
}

#[test]
fn list_keys_pages() {
    let (_d, k) = kms();
    for _ in 0..5 {
        k.create_key(CreateKeyRequest::default()).unwrap();
    }
    let p1 = k
        .list_keys(ListKeysRequest {
            limit: Some(2),
            marker: None,
        })
        .unwrap();
    assert!(p1.truncated);
    let p2 = k
        .list_keys(ListKeysRequest {
            limit: Some(10),
            marker: p1.next_marker,
        })
        .unwrap();
    assert!(!p2.truncated);
    assert_eq!(p1.keys.len() + p2.keys.len(), 5);
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
