//! Key import: the AWS flow end to end, with material wrapped here as a client would.

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};

use super::blob::blob_aad;
use super::tests::{code, kms};
use super::*;

/// Wraps `material` for the import parameters as AWS's documentation tells clients to.
pub(super) fn wrap(params: &GetParametersForImportResponse, alg: &str, material: &[u8]) -> Vec<u8> {
    let public = PublicEncryptingKey::from_der(&params.public_key).unwrap();
    let public = OaepPublicEncryptingKey::new(public).unwrap();
    let oaep = if alg.ends_with("SHA_1") {
        &OAEP_SHA1_MGF1SHA1
    } else {
        &OAEP_SHA256_MGF1SHA256
    };
    let rsa = |pt: &[u8]| {
        let mut out = vec![0u8; public.ciphertext_size()];
        public.encrypt(oaep, pt, &mut out, None).unwrap().to_vec()
    };
    if alg.starts_with("RSAES_OAEP") {
        return rsa(material);
    }
    let aes = random_bytes::<32>();
    let mut wrapped = vec![0u8; material.len() + 16];
    let n = AesKek::new(&AES_256, &aes)
        .unwrap()
        .wrap_with_padding(material, &mut wrapped)
        .unwrap()
        .len();
    wrapped.truncate(n);
    [rsa(&aes), wrapped].concat()
}

fn params(k: &LocalKms, id: &str, alg: &str, spec: &str) -> GetParametersForImportResponse {
    k.get_parameters_for_import(GetParametersForImportRequest {
        key_id: id.into(),
        wrapping_algorithm: alg.into(),
        wrapping_key_spec: spec.into(),
    })
    .unwrap()
}

fn import(
    k: &LocalKms,
    id: &str,
    p: &GetParametersForImportResponse,
    wrapped: Vec<u8>,
    import_type: Option<&str>,
) -> KmsResult<ImportKeyMaterialResponse> {
    k.import_key_material(ImportKeyMaterialRequest {
        key_id: id.into(),
        import_token: p.import_token.clone(),
        encrypted_key_material: wrapped,
        import_type: import_type.map(Into::into),
        ..Default::default()
    })
}

fn external(k: &LocalKms, spec: Option<&str>) -> KeyMetadata {
    k.create_key(CreateKeyRequest {
        origin: Some("EXTERNAL".into()),
        key_spec: spec.map(Into::into),
        key_usage: spec.map(|_| "GENERATE_VERIFY_MAC".into()),
        ..Default::default()
    })
    .unwrap()
    .key_metadata
}

fn state(k: &LocalKms, id: &str) -> KeyMetadata {
    k.describe_key(DescribeKeyRequest { key_id: id.into() })
        .unwrap()
        .key_metadata
}

fn encrypt(k: &LocalKms, id: &str) -> KmsResult<Vec<u8>> {
    k.encrypt(EncryptRequest {
        key_id: id.into(),
        plaintext: Secret(b"imported".to_vec()),
        ..Default::default()
    })
    .map(|r| r.ciphertext_blob)
}

fn decrypt(k: &LocalKms, blob: &[u8]) -> KmsResult<Vec<u8>> {
    k.decrypt(DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        ..Default::default()
    })
    .map(|r| r.plaintext.0.clone())
}

#[test]
fn import_every_wrapping_algorithm_then_use_delete_and_reimport() {
    let (_d, k) = kms();
    for alg in [
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_AES_KEY_WRAP_SHA_256",
    ] {
        let md = external(&k, None);
        assert_eq!(md.origin, "EXTERNAL");
        assert_eq!(md.key_state, "PendingImport");
        assert!(!md.enabled && md.current_key_material_id.is_none());
        let id = md.key_id;
        assert_eq!(code(encrypt(&k, &id)), ErrorCode::KMSInvalidStateException);
        let material = random_bytes::<32>();
        let p = params(&k, &id, alg, "RSA_2048");
        assert!(p.parameters_valid_to > now() + 23.0 * 3600.0);
        import(&k, &id, &p, wrap(&p, alg, &material), None).unwrap();
        let md = state(&k, &id);
        assert_eq!(md.key_state, "Enabled", "{alg}");
        assert_eq!(
            md.expiration_model.as_deref(),
            Some("KEY_MATERIAL_DOES_NOT_EXPIRE")
        );
        let blob = encrypt(&k, &id).unwrap();
        assert_eq!(decrypt(&k, &blob).unwrap(), b"imported");
        // The material really is what was imported: the blob opens with it here.
        let key: &[u8; 32] = &material;
        let nonce: [u8; NONCE_LEN] = blob[BLOB_PREFIX..BLOB_PREFIX + NONCE_LEN]
            .try_into()
            .unwrap();
        let mut body = blob[BLOB_PREFIX + NONCE_LEN..].to_vec();
        Backend::AwsLc
            .key(key)
            .open(&nonce, &blob_aad(&blob[..BLOB_PREFIX], &None), &mut body)
            .unwrap();
        // A token is used once.
        assert_eq!(
            code(import(&k, &id, &p, wrap(&p, alg, &material), None)),
            ErrorCode::InvalidImportTokenException
        );
        // Delete: PendingImport, nothing decrypts, enable is refused.
        k.delete_imported_key_material(DeleteImportedKeyMaterialRequest {
            key_id: id.clone(),
            key_material_id: None,
        })
        .unwrap();
        assert_eq!(state(&k, &id).key_state, "PendingImport");
        assert_eq!(
            code(decrypt(&k, &blob)),
            ErrorCode::KMSInvalidStateException
        );
        assert_eq!(
            code(k.enable_key(KeyIdRequest { key_id: id.clone() })),
            ErrorCode::KMSInvalidStateException
        );
        // Other material is refused; the same material brings the key back.
        let p = params(&k, &id, alg, "RSA_3072");
        assert_eq!(
            code(import(
                &k,
                &id,
                &p,
                wrap(&p, alg, &random_bytes::<32>()),
                None
            )),
            ErrorCode::IncorrectKeyMaterialException
        );
        import(&k, &id, &p, wrap(&p, alg, &material), None).unwrap();
        assert_eq!(decrypt(&k, &blob).unwrap(), b"imported");
    }
}

#[test]
fn import_refusals() {
    let (_d, k) = kms();
    let own = k
        .create_key(Default::default())
        .unwrap()
        .key_metadata
        .key_id;
    assert_eq!(
        code(k.get_parameters_for_import(GetParametersForImportRequest {
            key_id: own,
            wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
            wrapping_key_spec: "RSA_2048".into(),
        })),
        ErrorCode::UnsupportedOperationException
    );
    let id = external(&k, None).key_id;
    for (alg, spec) in [
        ("RSAES_PKCS1_V1_5", "RSA_2048"),
        ("RSAES_OAEP_SHA_256", "RSA_1024"),
    ] {
        assert_eq!(
            code(k.get_parameters_for_import(GetParametersForImportRequest {
                key_id: id.clone(),
                wrapping_algorithm: alg.into(),
                wrapping_key_spec: spec.into(),
            })),
            ErrorCode::ValidationException
        );
    }
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    // wrong length, wrong wrapping, wrong key, tampered, token of another key
    assert_eq!(
        code(import(
            &k,
            &id,
            &p,
            wrap(&p, "RSAES_OAEP_SHA_256", &[7; 16]),
            None
        )),
        ErrorCode::IncorrectKeyMaterialException
    );
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    assert_eq!(
        code(import(
            &k,
            &id,
            &p,
            wrap(&p, "RSAES_OAEP_SHA_1", &[7; 32]),
            None
        )),
        ErrorCode::InvalidCiphertextException
    );
    let mut bad = wrap(&p, "RSAES_OAEP_SHA_256", &[7; 32]);
    bad[10] ^= 1;
    assert_eq!(
        code(import(&k, &id, &p, bad, None)),
        ErrorCode::InvalidCiphertextException
    );
    let other = external(&k, None).key_id;
    assert_eq!(
        code(import(
            &k,
            &other,
            &p,
            wrap(&p, "RSAES_OAEP_SHA_256", &[7; 32]),
            None
        )),
        ErrorCode::InvalidImportTokenException
    );
    // expiry: ValidTo in the past or missing for KEY_MATERIAL_EXPIRES
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    for (model, to) in [
        (Some("KEY_MATERIAL_EXPIRES"), None),
        (None, Some(now() - 10.0)),
        (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(now() + 100.0)),
    ] {
        let r = k.import_key_material(ImportKeyMaterialRequest {
            key_id: id.clone(),
            import_token: p.import_token.clone(),
            encrypted_key_material: wrap(&p, "RSAES_OAEP_SHA_256", &[7; 32]),
            expiration_model: model.map(Into::into),
            valid_to: to,
            ..Default::default()
        });
        assert_eq!(code(r), ErrorCode::ValidationException);
    }
    // automatic rotation is refused for imported keys
    import(&k, &id, &p, wrap(&p, "RSAES_OAEP_SHA_256", &[7; 32]), None).unwrap();
    assert_eq!(
        code(k.enable_key_rotation(EnableKeyRotationRequest {
            key_id: id.clone(),
            rotation_period_in_days: None,
        })),
        ErrorCode::UnsupportedOperationException
    );
}

/// Material with a ValidTo stops working at that time, without any writer running.
#[test]
fn imported_material_expires() {
    let (_d, k) = kms();
    let id = external(&k, None).key_id;
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    k.import_key_material(ImportKeyMaterialRequest {
        key_id: id.clone(),
        import_token: p.import_token.clone(),
        encrypted_key_material: wrap(&p, "RSAES_OAEP_SHA_256", &[9; 32]),
        expiration_model: Some("KEY_MATERIAL_EXPIRES".into()),
        valid_to: Some(now() + 2.0),
        ..Default::default()
    })
    .unwrap();
    let md = state(&k, &id);
    assert_eq!(md.expiration_model.as_deref(), Some("KEY_MATERIAL_EXPIRES"));
    let blob = encrypt(&k, &id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(state(&k, &id).key_state, "PendingImport");
    assert_eq!(
        code(decrypt(&k, &blob)),
        ErrorCode::KMSInvalidStateException
    );
    // the next write removes the material for good; the same material restores the key
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    assert!(k.snapshot().unwrap().keys[&id].versions[0]
        .material
        .0
        .is_empty());
    import(&k, &id, &p, wrap(&p, "RSAES_OAEP_SHA_256", &[9; 32]), None).unwrap();
    assert_eq!(decrypt(&k, &blob).unwrap(), b"imported");
}

/// New imported material becomes current at RotateKeyOnDemand; the old still decrypts.
#[test]
fn rotation_with_new_imported_material() {
    let (_d, k) = kms();
    let id = external(&k, None).key_id;
    let alg = "RSA_AES_KEY_WRAP_SHA_256";
    let p = params(&k, &id, alg, "RSA_4096");
    import(&k, &id, &p, wrap(&p, alg, &[1; 32]), None).unwrap();
    let old = encrypt(&k, &id).unwrap();
    assert_eq!(
        code(k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })),
        ErrorCode::KMSInvalidStateException
    );
    let p = params(&k, &id, alg, "RSA_2048");
    assert_eq!(
        code(import(
            &k,
            &id,
            &p,
            wrap(&p, alg, &[1; 32]),
            Some("NEW_KEY_MATERIAL")
        )),
        ErrorCode::IncorrectKeyMaterialException
    );
    let p = params(&k, &id, alg, "RSA_2048");
    let r = import(
        &k,
        &id,
        &p,
        wrap(&p, alg, &[2; 32]),
        Some("NEW_KEY_MATERIAL"),
    )
    .unwrap();
    let before = state(&k, &id).current_key_material_id;
    assert_ne!(
        before, r.key_material_id,
        "new material is pending, not current"
    );
    let list = |include: Option<&str>| {
        k.list_key_rotations(ListKeyRotationsRequest {
            key_id: id.clone(),
            include_key_material: include.map(str::to_string),
            ..Default::default()
        })
        .map(|r| r.rotations)
    };
    // ALL_KEY_MATERIAL: the first material (current, imported) and the pending one.
    let all = list(Some("ALL_KEY_MATERIAL")).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].key_material_state.as_deref(), Some("CURRENT"));
    assert_eq!(all[0].import_state.as_deref(), Some("IMPORTED"));
    assert_eq!(all[0].rotation_type, None);
    assert_eq!(
        all[1].key_material_state.as_deref(),
        Some("PENDING_ROTATION")
    );
    assert_eq!(all[1].key_material_id, r.key_material_id.clone().unwrap());
    assert_eq!(all[1].rotation_date, None);
    assert!(list(None).unwrap().is_empty(), "no rotation yet");
    assert_eq!(code(list(Some("SOME"))), ErrorCode::ValidationException);
    k.rotate_key_on_demand(KeyIdRequest { key_id: id.clone() })
        .unwrap();
    assert_eq!(state(&k, &id).current_key_material_id, r.key_material_id);
    let new = encrypt(&k, &id).unwrap();
    assert_eq!(decrypt(&k, &old).unwrap(), b"imported");
    assert_eq!(decrypt(&k, &new).unwrap(), b"imported");
    let rotations = k
        .list_key_rotations(ListKeyRotationsRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap()
        .rotations;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0].key_material_state.as_deref(), Some("CURRENT"));
    assert_eq!(rotations[0].rotation_type.as_deref(), Some("ON_DEMAND"));
    let all = list(Some("ALL_KEY_MATERIAL")).unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.key_material_state.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["NON_CURRENT", "CURRENT"]
    );
    // DeleteImportedKeyMaterial with a KeyMaterialId deletes that material only: the key
    // stays usable, ciphertexts under the old material do not open until it is reimported.
    let first = all[0].key_material_id.clone();
    let del = |m: Option<&str>| {
        k.delete_imported_key_material(DeleteImportedKeyMaterialRequest {
            key_id: id.clone(),
            key_material_id: m.map(str::to_string),
        })
    };
    assert_eq!(
        del(Some(&first)).unwrap().key_material_id.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(state(&k, &id).key_state, "Enabled");
    assert_eq!(code(decrypt(&k, &old)), ErrorCode::KMSInvalidStateException);
    assert_eq!(decrypt(&k, &new).unwrap(), b"imported");
    let all = list(Some("ALL_KEY_MATERIAL")).unwrap();
    assert_eq!(all[0].import_state.as_deref(), Some("PENDING_IMPORT"));
    assert_eq!(all[1].import_state.as_deref(), Some("IMPORTED"));
    assert_eq!(
        code(del(Some("no-such-material"))),
        ErrorCode::NotFoundException
    );
    let p = params(&k, &id, alg, "RSA_2048");
    import(
        &k,
        &id,
        &p,
        wrap(&p, alg, &[1; 32]),
        Some("EXISTING_KEY_MATERIAL"),
    )
    .unwrap();
    assert_eq!(decrypt(&k, &old).unwrap(), b"imported");
    // A reimport naming its material (KeyMaterialId) must be that material; a description
    // given at import is listed with it.
    let named = |material: &[u8], mid: &str, t: Option<&str>| {
        let p = params(&k, &id, alg, "RSA_2048");
        k.import_key_material(ImportKeyMaterialRequest {
            key_id: id.clone(),
            import_token: p.import_token.clone(),
            encrypted_key_material: wrap(&p, alg, material),
            import_type: t.map(Into::into),
            key_material_id: Some(mid.into()),
            key_material_description: Some("the first material".into()),
            ..Default::default()
        })
    };
    assert_eq!(
        code(named(&[2; 32], &first, Some("EXISTING_KEY_MATERIAL"))),
        ErrorCode::IncorrectKeyMaterialException
    );
    assert_eq!(
        code(named(&[1; 32], "no-such-material", None)),
        ErrorCode::NotFoundException
    );
    assert_eq!(
        code(named(&[3; 32], &first, Some("NEW_KEY_MATERIAL"))),
        ErrorCode::ValidationException
    );
    named(&[1; 32], &first, Some("EXISTING_KEY_MATERIAL")).unwrap();
    let all = list(Some("ALL_KEY_MATERIAL")).unwrap();
    assert_eq!(
        all[0].key_material_description.as_deref(),
        Some("the first material")
    );
    assert_eq!(all[1].key_material_description, None);
    // Without one, the current material: the key is PendingImport.
    assert_eq!(del(None).unwrap().key_material_id, r.key_material_id);
    assert_eq!(state(&k, &id).key_state, "PendingImport");
}

/// HMAC keys take imported material of AWS's lengths, and MACs are over that material.
#[test]
fn hmac_import() {
    let (_d, k) = kms();
    let id = external(&k, Some("HMAC_256")).key_id;
    let p = params(&k, &id, "RSAES_OAEP_SHA_256", "RSA_2048");
    import(&k, &id, &p, wrap(&p, "RSAES_OAEP_SHA_256", &[5; 40]), None).unwrap();
    let mac = k
        .generate_mac(GenerateMacRequest {
            key_id: id.clone(),
            mac_algorithm: "HMAC_SHA_256".into(),
            message: Secret(b"m".to_vec()),
            ..Default::default()
        })
        .unwrap()
        .mac;
    let want = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[5; 40]),
        b"m",
    );
    assert_eq!(mac, want.as_ref());
}

/// RSA and ECC private keys (PKCS#8 DER, under RSA_AES_KEY_WRAP) import into EXTERNAL keys
/// of their spec and sign what their public key verifies; a key of another size or curve,
/// or a symmetric key's bytes, is IncorrectKeyMaterialException.
#[test]
fn asymmetric_import() {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, PqdsaKeyPair};
    let (_d, k) = kms();
    let alg = "RSA_AES_KEY_WRAP_SHA_256";
    let spki = |d: PublicKeyX509Der| d.as_ref().to_vec();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa2048 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa)
        .unwrap()
        .as_ref()
        .to_vec();
    let ecdsa = |a| EcdsaKeyPair::generate(a).unwrap();
    let p256 = ecdsa(&sig::ECDSA_P256_SHA256_ASN1_SIGNING);
    let p384 = ecdsa(&sig::ECDSA_P384_SHA384_ASN1_SIGNING);
    let der = |kp: &EcdsaKeyPair| kp.to_pkcs8v1().unwrap().as_ref().to_vec();
    let ed = Ed25519KeyPair::generate().unwrap();
    let ml65 = PqdsaKeyPair::generate(&sig::ML_DSA_65_SIGNING).unwrap();
    let ml44 = PqdsaKeyPair::generate(&sig::ML_DSA_44_SIGNING).unwrap();
    // (spec, the key to import, another kind's key, signing algorithm, how to verify,
    // the imported key's public key)
    type Case = (
        &'static str,
        Vec<u8>,
        Vec<u8>,
        &'static str,
        &'static dyn sig::VerificationAlgorithm,
        Vec<u8>,
    );
    let cases: Vec<Case> = vec![
        (
            "RSA_2048",
            rsa2048.clone(),
            der(&p256),
            "RSASSA_PSS_SHA_256",
            &sig::RSA_PSS_2048_8192_SHA256,
            spki(rsa.public_key().as_der().unwrap()),
        ),
        (
            "ECC_NIST_P256",
            der(&p256),
            der(&p384),
            "ECDSA_SHA_256",
            &sig::ECDSA_P256_SHA256_ASN1,
            spki(p256.public_key().as_der().unwrap()),
        ),
        (
            "ECC_NIST_EDWARDS25519",
            ed.to_pkcs8().unwrap().as_ref().to_vec(),
            der(&p256),
            "ED25519_SHA_512",
            &sig::ED25519,
            spki(ed.public_key().as_der().unwrap()),
        ),
        (
            "ML_DSA_65",
            ml65.to_pkcs8v1().unwrap().as_ref().to_vec(),
            // another parameter set's key is not this key's material
            ml44.to_pkcs8v1().unwrap().as_ref().to_vec(),
            "ML_DSA_SHAKE_256",
            &sig::ML_DSA_65,
            spki(ml65.public_key().as_der().unwrap()),
        ),
    ];
    for (spec, good, bad, sign_alg, verify, expected) in cases {
        let id = k
            .create_key(CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                key_spec: Some(spec.into()),
                key_usage: Some("SIGN_VERIFY".into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .key_id;
        for wrong in [bad.as_slice(), &[7u8; 32]] {
            let p = params(&k, &id, alg, "RSA_3072");
            assert_eq!(
                code(import(&k, &id, &p, wrap(&p, alg, wrong), None)),
                ErrorCode::IncorrectKeyMaterialException,
                "{spec}"
            );
        }
        let p = params(&k, &id, alg, "RSA_3072");
        import(&k, &id, &p, wrap(&p, alg, &good), None).unwrap();
        assert_eq!(state(&k, &id).key_state, "Enabled");
        let s = k
            .sign(SignRequest {
                key_id: id.clone(),
                message: Secret(b"imported signer".to_vec()),
                signing_algorithm: sign_alg.into(),
                ..Default::default()
            })
            .unwrap();
        // the public key KMS shows is the imported key's, and it verifies the signature
        let shown = k
            .get_public_key(GetPublicKeyRequest {
                key_id: id.clone(),
                ..Default::default()
            })
            .unwrap()
            .public_key;
        assert_eq!(shown, expected, "{spec}");
        sig::ParsedPublicKey::new(verify, &shown)
            .unwrap()
            .verify_sig(b"imported signer", &s.signature)
            .unwrap_or_else(|_| panic!("{spec}: the imported key's signature"));
    }
}

/// AWS derives an imported material's id from the key id and the material: the same
/// material has one id in a key (import, delete, reimport) and another in another key.
#[test]
fn imported_material_ids_are_the_key_and_materials() {
    let (_d, k) = kms();
    let alg = "RSAES_OAEP_SHA_256";
    let material = [42u8; 32];
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = external(&k, None).key_id;
        let p = params(&k, &id, alg, "RSA_2048");
        let first = import(&k, &id, &p, wrap(&p, alg, &material), None)
            .unwrap()
            .key_material_id
            .unwrap();
        assert_eq!(first, super::import::imported_material_id(&id, &material));
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        k.delete_imported_key_material(DeleteImportedKeyMaterialRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap();
        let p = params(&k, &id, alg, "RSA_2048");
        let again = import(&k, &id, &p, wrap(&p, alg, &material), None)
            .unwrap()
            .key_material_id
            .unwrap();
        assert_eq!(again, first, "a reimport keeps the material's id");
        ids.push(first);
    }
    assert_ne!(ids[0], ids[1], "the id depends on the key");
}

/// One material waits for rotation at a time (AWS: pending material "is not permanently
/// associated with the KMS key. You can delete this key material and import different key
/// material in its place"); the same pending material again is that material. An HMAC or
/// asymmetric key has one material: ImportType and KeyMaterialId are refused for it.
#[test]
fn one_pending_material_and_no_import_type_for_single_material_keys() {
    let (_d, k) = kms();
    let alg = "RSAES_OAEP_SHA_256";
    let id = external(&k, None).key_id;
    let go = |m: &[u8], t: Option<&str>| {
        let p = params(&k, &id, alg, "RSA_2048");
        import(&k, &id, &p, wrap(&p, alg, m), t)
    };
    go(&[1; 32], None).unwrap();
    let pending = go(&[2; 32], Some("NEW_KEY_MATERIAL"))
        .unwrap()
        .key_material_id
        .unwrap();
    let again = go(&[2; 32], Some("NEW_KEY_MATERIAL"))
        .unwrap()
        .key_material_id
        .unwrap();
    assert_eq!(again, pending);
    let e = go(&[3; 32], Some("NEW_KEY_MATERIAL")).unwrap_err();
    assert_eq!(e.code, ErrorCode::KMSInvalidStateException, "{e}");
    assert!(e.message.contains(&pending), "{e}");
    k.delete_imported_key_material(DeleteImportedKeyMaterialRequest {
        key_id: id.clone(),
        key_material_id: Some(pending.clone()),
    })
    .unwrap();
    let other = go(&[3; 32], Some("NEW_KEY_MATERIAL"))
        .unwrap()
        .key_material_id
        .unwrap();
    assert_ne!(other, pending);

    let hmac = external(&k, Some("HMAC_256")).key_id;
    let p = params(&k, &hmac, alg, "RSA_2048");
    assert_eq!(
        code(import(
            &k,
            &hmac,
            &p,
            wrap(&p, alg, &[5; 40]),
            Some("EXISTING_KEY_MATERIAL")
        )),
        ErrorCode::ValidationException
    );
    import(&k, &hmac, &p, wrap(&p, alg, &[5; 40]), None).unwrap();
}

/// ML-KEM private keys import in each of RFC 9935's PKCS#8 forms (seed, expanded key,
/// both): the key shows the imported public key, decapsulates what is encapsulated to it
/// outside kmsfs, and the same key in another form is the same material (one id). A key
/// of another parameter set, a damaged key, or "both" whose halves disagree are refused.
#[test]
fn ml_kem_import_in_every_form() {
    use aws_lc_rs::kem::{DecapsulationKey, EncapsulationKey, ML_KEM_512, ML_KEM_768};
    let (_d, k) = kms();
    let alg = "RSA_AES_KEY_WRAP_SHA_256";
    let oid = |arc: u8| {
        vec![
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, arc,
        ]
    };
    // DER of a tag and contents (lengths below 65,536)
    let tlv = |tag: u8, body: &[u8]| {
        let mut v = vec![tag];
        match body.len() {
            n @ 0..=0x7f => v.push(n as u8),
            n @ 0x80..=0xff => v.extend_from_slice(&[0x81, n as u8]),
            n => v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(body);
        v
    };
    let pkcs8 = |arc: u8, private: Vec<u8>| {
        let algid = tlv(0x30, &oid(arc));
        tlv(
            0x30,
            &[vec![0x02, 0x01, 0x00], algid, tlv(0x04, &private)].concat(),
        )
    };
    let seed = random_bytes::<64>().to_vec();
    let seed_form = pkcs8(2, tlv(0x80, &seed));
    let (dk, ek) = super::lc_sign::ml_kem_pair(&seed_form, 2400, 1184).unwrap();
    let both = pkcs8(2, tlv(0x30, &[tlv(0x04, &seed), tlv(0x04, &dk)].concat()));
    let mut wrong_dk = dk.to_vec();
    wrong_dk[0] ^= 1;
    let both_disagree = pkcs8(
        2,
        tlv(0x30, &[tlv(0x04, &seed), tlv(0x04, &wrong_dk)].concat()),
    );
    // An expanded key made by aws-lc-rs's own generator.
    let other = DecapsulationKey::generate(&ML_KEM_768).unwrap();
    let other_ek = other
        .encapsulation_key()
        .unwrap()
        .key_bytes()
        .unwrap()
        .as_ref()
        .to_vec();
    let expanded = pkcs8(2, tlv(0x04, other.key_bytes().unwrap().as_ref()));
    let small = DecapsulationKey::generate(&ML_KEM_512).unwrap();
    let small_form = pkcs8(1, tlv(0x04, small.key_bytes().unwrap().as_ref()));
    let mut damaged = expanded.clone();
    let n = damaged.len();
    damaged[n - 40] ^= 1; // inside H(ek): FIPS 203's check of the expanded key fails

    let new_key = || {
        k.create_key(CreateKeyRequest {
            origin: Some("EXTERNAL".into()),
            key_spec: Some("ML_KEM_768".into()),
            key_usage: Some("ENCAPSULATE_DECAPSULATE".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id
    };
    let import_der = |id: &str, der: &[u8]| {
        let p = params(&k, id, alg, "RSA_3072");
        import(&k, id, &p, wrap(&p, alg, der), None)
    };
    let public = |id: &str| {
        k.get_public_key(GetPublicKeyRequest {
            key_id: id.into(),
            ..Default::default()
        })
        .unwrap()
        .public_key
    };
    let decaps = |id: &str, ct: &[u8]| {
        k.decapsulate(DecapsulateRequest {
            key_id: id.into(),
            shared_secret_ciphertext_blob: ct.to_vec(),
            encapsulation_algorithm: "ML_KEM".into(),
            ..Default::default()
        })
        .unwrap()
        .shared_secret
    };

    let id = new_key();
    for bad in [&small_form, &damaged, &both_disagree, &seed[..]] {
        assert_eq!(
            code(import_der(&id, bad)),
            ErrorCode::IncorrectKeyMaterialException
        );
    }
    let first = import_der(&id, &seed_form).unwrap().key_material_id;
    assert_eq!(state(&k, &id).key_state, "Enabled");
    assert!(public(&id).ends_with(&ek), "the seed's public key");
    let (ct, ss) = EncapsulationKey::new(&ML_KEM_768, &ek)
        .unwrap()
        .encapsulate()
        .unwrap();
    assert_eq!(decaps(&id, ct.as_ref()).0, ss.as_ref());
    // the same key in the "both" form is the same material
    assert_eq!(import_der(&id, &both).unwrap().key_material_id, first);

    let id2 = new_key();
    import_der(&id2, &expanded).unwrap();
    assert!(
        public(&id2).ends_with(&other_ek),
        "the expanded key's public key"
    );
    let (ct, ss) = EncapsulationKey::new(&ML_KEM_768, &other_ek)
        .unwrap()
        .encapsulate()
        .unwrap();
    assert_eq!(decaps(&id2, ct.as_ref()).0, ss.as_ref());
    // another key's material is not this key's
    assert_eq!(
        code(import_der(&id2, &seed_form)),
        ErrorCode::IncorrectKeyMaterialException
    );
}
