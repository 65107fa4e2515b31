use super::*;

pub(super) fn kms() -> (tempfile::TempDir, LocalKms) {
    let d = tempfile::tempdir().unwrap();
    on_test_store();
    let k = LocalKms::open(&d.path().join("ks"), true).unwrap();
    (d, k)
}

/// With `KMSFS_TEST_PG` (a PostgreSQL URL; tests/it/cluster.rs sets it), this test's
/// keystores keep their rows and audit chain in a fresh database of that server: the
/// same suite, run against the other engine.
pub(super) fn on_test_store() {
    let Ok(base) = std::env::var("KMSFS_TEST_PG") else {
        return;
    };
    let name = format!("t_{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let mut cfg: postgres::Config = base.parse().unwrap();
    if let Ok(f) = std::env::var("KMSFS_STORE_PASSWORD_FILE") {
        cfg.password(std::fs::read_to_string(f).unwrap().trim());
    }
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    super::super::store::set_test_store(Some(Location::Postgres(format!("{prefix}/{name}"))));
}

/// CreateKey with a KeySpec and (optionally) a KeyUsage.
pub(super) fn create_with(
    k: &LocalKms,
    spec: &str,
    usage: Option<&str>,
) -> KmsResult<CreateKeyResponse> {
    k.create_key(CreateKeyRequest {
        key_spec: Some(spec.into()),
        key_usage: usage.map(str::to_string),
        ..Default::default()
    })
}

/// The error code of a failed call.
pub(super) fn code<T: std::fmt::Debug>(r: KmsResult<T>) -> ErrorCode {
    r.unwrap_err().code
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
        k.stored().keys.contains_key(&doomed.key_id),
        "still on disk"
    );
    // the maintenance tick (server, mounts, `key rotate-due`) destroys it
    assert!(k.rotate_due_keys().unwrap().is_empty());
    let on_disk = k.stored();
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

/// #21, the stolen disk: a copy of a passphrase-sealed keystore directory holds neither
/// the root key nor any key's material in the clear, and opens only with the passphrase
/// (one line when it is wrong).
#[test]
fn a_sealed_keystore_copy_holds_no_key_in_the_clear() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ks");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let kdf = crate::seal::Kdf::with(8 * 1024, 1, 1);
    crate::seal::create_with_passphrase(&dir, b"correct horse battery", &kdf).unwrap();
    assert!(!dir.join(ROOT_KEY_FILE).exists());
    let k = LocalKms::open(&dir, false).unwrap();
    k.create_key(CreateKeyRequest::default()).unwrap();
    k.create_key(CreateKeyRequest {
        key_spec: Some("HMAC_256".into()),
        key_usage: Some("GENERATE_VERIFY_MAC".into()),
        ..Default::default()
    })
    .unwrap();
    let root = k.e.root.0;
    let materials: Vec<Vec<u8>> = k
        .snapshot()
        .unwrap()
        .keys
        .values()
        .flat_map(|r| r.versions.iter().map(|v| v.material.0.clone()))
        .collect();
    assert!(materials.len() >= 2 && materials.iter().all(|m| m.len() >= 16));
    drop(k);
    // The thief's copy.
    let copy = d.path().join("copy");
    fs::create_dir(&copy).unwrap();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    for e in fs::read_dir(&copy).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        let has = |n: &[u8]| bytes.windows(n.len()).any(|w| w == n);
        assert!(!has(&root), "the root key is in the copy");
        for m in &materials {
            assert!(!has(&m[..16]), "a key's material is in the copy");
        }
    }
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o700)).unwrap();
    let e = crate::seal::unlock(&copy, b"wrong guess")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong passphrase") && !e.contains('\n'), "{e}");
    crate::seal::unlock(&copy, b"correct horse battery").unwrap();
    let k2 = LocalKms::open(&copy, false).unwrap();
    assert_eq!(
        k2.list_keys(ListKeysRequest::default()).unwrap().keys.len(),
        2
    );
}

/// A store is bound to its root key: a keystore with another root key pointed at it is
/// refused before anything is written; a row moved to another key's id in the database
/// (what its writer could do) is refused at the next open, naming the row.
#[test]
fn a_store_opens_only_under_its_root_key_and_rows_cannot_be_moved() {
    if std::env::var_os("KMSFS_TEST_PG").is_some() {
        return; // the SQLite file is edited below; the PostgreSQL run covers the rest
    }
    let (d, k) = kms();
    let a = k
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    let b = k
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    let db = d.path().join("ks").join(super::super::store::SQLITE_FILE);
    drop(k);
    super::super::store::set_test_store(Some(Location::Sqlite(db.clone())));
    let other = LocalKms::open(&d.path().join("other"), true)
        .err()
        .unwrap()
        .to_string();
    assert!(other.contains("another root key"), "{other}");
    super::super::store::set_test_store(None);
    // b's sealed row put in a's place
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "DELETE FROM kmsfs_rows WHERE kind = 'key' AND id = ?1",
        [&a],
    )
    .unwrap();
    c.execute(
        "UPDATE kmsfs_rows SET id = ?1 WHERE kind = 'key' AND id = ?2",
        [&a, &b],
    )
    .unwrap();
    drop(c);
    let e = LocalKms::open(&d.path().join("ks"), false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("row key/{a} does not authenticate")),
        "{e}"
    );
}
