//! Key import (bring your own key) for EXTERNAL keys, with AWS's rules:
//! - `CreateKey Origin=EXTERNAL` makes a key without material, `PendingImport`
//!   (symmetric, HMAC, and RSA / ECC / Ed25519 / ML-DSA / ML-KEM private keys as PKCS#8).
//! - `GetParametersForImport` hands out a fresh RSA wrapping key (RSA_2048/3072/4096) and
//!   an import token, valid 24 hours, kept sealed in the store.
//! - `ImportKeyMaterial` unwraps the material: RSAES_OAEP_SHA_1/256 directly, or
//!   RSA_AES_KEY_WRAP_SHA_1/256 (an ephemeral AES-256 key under RSA-OAEP, then the
//!   material under AES key wrap with padding, RFC 5649). The first import enables the key.
//!   A reimport (`EXISTING_KEY_MATERIAL`) must be the same material; `NEW_KEY_MATERIAL` on
//!   a symmetric key waits for `RotateKeyOnDemand` to become current.
//! - Material can expire (`ValidTo`): the key is then PendingImport, and the material is
//!   removed at the next write of the store. `DeleteImportedKeyMaterial` removes it now.
//! - A multi-Region replica imports only its primary's material (regions.rs mirrors the
//!   versions without it): a version's, or the material the primary waits to rotate to.

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use sha2::Digest;

use super::*;

/// The origin of keys whose material is imported.
pub(super) const EXTERNAL: &str = "EXTERNAL";
/// The origin of a key in an external key store (`xks`).
pub(super) const EXTERNAL_KEY_STORE: &str = "EXTERNAL_KEY_STORE";
const TOKEN_VALID_SECS: f64 = 24.0 * 3600.0;
/// Import parameters kept per key (older ones are dropped).
const TOKENS_PER_KEY: usize = 10;

/// Empties a key's imported material (zeroized on drop): it is PendingImport until reimported.
pub(super) fn forget_material(k: &mut KeyRecord) {
    for v in &mut k.versions {
        v.material = Secret::default();
    }
    k.pending_material = None;
    k.valid_to = None;
    if matches!(k.state, KeyState::Enabled | KeyState::Disabled) {
        k.state = KeyState::PendingImport;
    }
}

/// Does the key have its current material (always, unless EXTERNAL and not imported)?
pub(super) fn has_material(k: &KeyRecord) -> bool {
    k.versions
        .get(k.current as usize)
        .is_some_and(|v| !v.material.0.is_empty())
}

/// The specs whose material can be imported, and the lengths AWS accepts for them.
pub(super) fn importable(spec: &str) -> Option<std::ops::RangeInclusive<usize>> {
    Some(match spec {
        SYMMETRIC_DEFAULT => 32..=32,
        "HMAC_224" => 28..=64,
        "HMAC_256" => 32..=64,
        "HMAC_384" => 48..=128,
        "HMAC_512" => 64..=128,
        // a private key as PKCS#8 DER, checked to be of the key's spec when imported
        s if is_importable_private_key(s) || is_kem_spec(s) => 1..=8192,
        _ => return None,
    })
}

/// (the RSA-OAEP algorithm, whether the material is under AES key wrap)
fn wrapping(name: &str) -> KmsResult<(&'static OaepAlgorithm, bool)> {
    Ok(match name {
        "RSAES_OAEP_SHA_1" => (&OAEP_SHA1_MGF1SHA1, false),
        "RSAES_OAEP_SHA_256" => (&OAEP_SHA256_MGF1SHA256, false),
        "RSA_AES_KEY_WRAP_SHA_1" => (&OAEP_SHA1_MGF1SHA1, true),
        "RSA_AES_KEY_WRAP_SHA_256" => (&OAEP_SHA256_MGF1SHA256, true),
        other => {
            return Err(KmsError::validation(format!(
                "WrappingAlgorithm {other:?} is not supported (RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1, RSA_AES_KEY_WRAP_SHA_256)"
            )))
        }
    })
}

fn digest(material: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(material))
}

/// The id of imported `material` in key `key_id`: as AWS's, a function of the key id and
/// the material (so the same material imported into two keys, or into a multi-Region
/// key's Regions, is recognised), 64 hex digits; it reveals nothing of random material.
pub(super) fn imported_material_id(key_id: &str, material: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"kmsfs imported key material id\0");
    h.update(key_id.as_bytes());
    h.update([0]);
    h.update(material);
    hex::encode(h.finalize())
}

/// Unwraps `wrapped` with the import's RSA key; any failure is InvalidCiphertextException.
fn unwrap_material(rec: &ImportRecord, wrapped: &[u8]) -> KmsResult<Secret> {
    let (oaep, kwp) = wrapping(&rec.algorithm)?;
    let broken = || KmsError::internal("stored wrapping key does not parse");
    let key = PrivateDecryptingKey::from_pkcs8(&rec.private.0).map_err(|_| broken())?;
    let key = OaepPrivateDecryptingKey::new(key).map_err(|_| broken())?;
    let bad = || {
        KmsError::new(
            ErrorCode::InvalidCiphertextException,
            format!(
                "EncryptedKeyMaterial does not unwrap with this import token's wrapping key ({})",
                rec.algorithm
            ),
        )
    };
    let modulus = key.key_size_bytes();
    let (head, tail) = if kwp {
        if wrapped.len() <= modulus {
            return Err(bad());
        }
        wrapped.split_at(modulus)
    } else {
        (wrapped, &[][..])
    };
    let mut first = Secret(vec![0u8; key.min_output_size()]);
    let n = key
        .decrypt(oaep, head, &mut first.0, None)
        .map_err(|_| bad())?
        .len();
    first.0.truncate(n);
    if !kwp {
        return Ok(first);
    }
    let kek = AesKek::new(&AES_256, &first.0).map_err(|_| bad())?;
    let mut out = Secret(vec![0u8; tail.len()]);
    let n = kek
        .unwrap_with_padding(tail, &mut out.0)
        .map_err(|_| bad())?
        .len();
    out.0.truncate(n);
    Ok(out)
}

impl LocalKms {
    /// An EXTERNAL key made by CreateKey: no material yet.
    pub(super) fn check_importable(spec: &str) -> KmsResult<()> {
        if importable(spec).is_none() {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                format!("Origin EXTERNAL is supported for symmetric, HMAC, RSA, ECC, Ed25519, ML-DSA and ML-KEM keys, not {spec}"),
            ));
        }
        Ok(())
    }

    pub(super) fn not_pending_import(&self, k: &KeyRecord) -> KmsResult<()> {
        if self.state_of(k) == KeyState::PendingImport {
            return Err(messages::pending_import(&self.arn(k)));
        }
        Ok(())
    }

    fn external<'a>(&self, k: &'a KeyRecord) -> KmsResult<&'a KeyRecord> {
        if k.origin != EXTERNAL {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                format!(
                    "{} has origin {}; key material can be imported only into EXTERNAL keys",
                    self.arn(k),
                    k.origin
                ),
            ));
        }
        self.not_pending_deletion(k)?;
        Ok(k)
    }

    pub(super) fn do_get_parameters_for_import(
        &self,
        req: GetParametersForImportRequest,
    ) -> KmsResult<GetParametersForImportResponse> {
        self.run(Op::GetParametersForImport.name(), |info| {
            wrapping(&req.wrapping_algorithm)?;
            let spec = match req.wrapping_key_spec.as_str() {
                s @ ("RSA_2048" | "RSA_3072" | "RSA_4096") => s,
                other => {
                    return Err(KmsError::validation(format!(
                        "WrappingKeySpec {other:?} is not supported (RSA_2048, RSA_3072, RSA_4096)"
                    )))
                }
            };
            // The RSA key is made outside the store lock (RSA-4096 takes a while).
            let private = generate_private_key(spec);
            let public_key = public_key_der(spec, &private.0)?;
            let token = random_bytes::<32>().to_vec();
            let expires = now() + TOKEN_VALID_SECS;
            let op = Op::GetParametersForImport;
            let arn = self.mutate(op.name(), info, |s, info| {
                let k = self.authorized(s, &req.key_id, op.action(), None, info)?;
                let id = self.external(k)?.id.clone();
                let mut mine: Vec<(f64, String)> = s
                    .imports
                    .iter()
                    .filter(|(_, i)| i.key_id == id)
                    .map(|(t, i)| (i.expires, t.clone()))
                    .collect();
                mine.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (_, t) in mine.iter().rev().skip(TOKENS_PER_KEY - 1) {
                    s.imports.remove(t);
                }
                s.imports.insert(
                    hex::encode(&token),
                    ImportRecord {
                        key_id: id.clone(),
                        algorithm: req.wrapping_algorithm.clone(),
                        private,
                        expires,
                    },
                );
                Ok(self.arn_id(s, &id))
            })?;
            Ok(GetParametersForImportResponse {
                key_id: arn,
                import_token: token,
                public_key,
                parameters_valid_to: expires,
            })
        })
    }

    pub(super) fn do_import_key_material(
        &self,
        req: ImportKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        let op = Op::ImportKeyMaterial;
        self.run(op.name(), |info| {
            let valid_to = match (req.expiration_model.as_deref(), req.valid_to) {
                (None | Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), None) => None,
                (None | Some("KEY_MATERIAL_EXPIRES"), Some(t)) => {
                    if t <= now() || t > now() + 365.0 * 86400.0 {
                        return Err(KmsError::validation(
                            "ValidTo must be in the future and at most 365 days away",
                        ));
                    }
                    Some(t)
                }
                (Some("KEY_MATERIAL_EXPIRES"), None) => {
                    return Err(KmsError::validation(
                        "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES",
                    ))
                }
                (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => {
                    return Err(KmsError::validation(
                        "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
                    ))
                }
                (Some(m), _) => {
                    return Err(KmsError::validation(format!(
                        "ExpirationModel {m:?} is not KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE"
                    )))
                }
            };
            let new_material = match req.import_type.as_deref() {
                None => None,
                Some("NEW_KEY_MATERIAL") => Some(true),
                Some("EXISTING_KEY_MATERIAL") => Some(false),
                Some(t) => {
                    return Err(KmsError::validation(format!(
                        "ImportType {t:?} is not NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL"
                    )))
                }
            };
            if let Some(d) = &req.key_material_description {
                if d.is_empty() || d.len() > 256 {
                    return Err(KmsError::validation(
                        "KeyMaterialDescription must be 1..256 characters",
                    ));
                }
            }
            if req.key_material_id.is_some() && new_material == Some(true) {
                return Err(KmsError::validation(
                    "KeyMaterialId names material to reimport: it is not valid with ImportType NEW_KEY_MATERIAL",
                ));
            }
            let token = hex::encode(&req.import_token);
            // The RSA decryption runs before the store lock is taken; its result is used
            // only after the checks below (a token's record never changes).
            let unwrapped = self
                .snapshot()?
                .imports
                .get(&token)
                .map(|rec| unwrap_material(rec, &req.encrypted_key_material));
            self.mutate(op.name(), info, |s, info| {
                let k = self.authorized(s, &req.key_id, op.action(), None, info)?;
                let id = self.external(k)?.id.clone();
                // AWS: an asymmetric or HMAC key has one material, so ImportType and
                // KeyMaterialId (symmetric keys' rotation) are refused for it.
                if k.spec != SYMMETRIC_DEFAULT
                    && (req.import_type.is_some() || req.key_material_id.is_some())
                {
                    return Err(KmsError::validation(format!(
                        "ImportType and KeyMaterialId are valid for symmetric encryption keys only; {} is {}",
                        self.arn(k),
                        k.spec
                    )));
                }
                s.imports
                    .get(&token)
                    .filter(|i| i.key_id == id && i.expires > now())
                    .ok_or_else(|| {
                        KmsError::new(
                            ErrorCode::InvalidImportTokenException,
                            format!(
                                "The import token is not valid for {} (unknown, expired, used, or for another key)",
                                self.arn_id(s, &id)
                            ),
                        )
                    })?;
                let material = match unwrapped {
                    Some(m) => m?,
                    // (issued after the snapshot was read: unwrap it now)
                    None => unwrap_material(&s.imports[&token], &req.encrypted_key_material)?,
                };
                // A multi-Region replica imports only what its primary has: one of its
                // versions, or the material the primary waits to rotate to.
                let primary_pending = match k.primary_region.as_ref().filter(|_| self.is_replica(k)) {
                    Some(primary) => {
                        if new_material == Some(true) {
                            return Err(KmsError::new(
                                ErrorCode::UnsupportedOperationException,
                                format!(
                                    "{} is a multi-Region replica key: import NEW_KEY_MATERIAL into its primary key in {primary}, then the same material here with EXISTING_KEY_MATERIAL",
                                    self.arn(k)
                                ),
                            ));
                        }
                        s.replicas
                            .get(&format!("{primary}/{id}"))
                            .and_then(|p| p.pending_material.as_ref())
                            .map(KeyVersion::without_material)
                    }
                    None => None,
                };
                let k = s.keys.get_mut(&id).expect("resolved");
                let lens = importable(&k.spec).expect("EXTERNAL keys are importable");
                if !lens.contains(&material.0.len()) {
                    return Err(KmsError::new(
                        ErrorCode::IncorrectKeyMaterialException,
                        format!(
                            "{} key material must be {}..{} bytes, not {}",
                            k.spec,
                            lens.start(),
                            lens.end(),
                            material.0.len()
                        ),
                    ));
                }
                // ML-KEM material is kept as the key pair (kem.rs), whichever of RFC
                // 9935's forms was imported, so a reimport in another form is the same.
                let material = if is_kem_spec(&k.spec) {
                    kem_material_from_pkcs8(&k.spec, &material.0).ok_or_else(|| {
                        KmsError::new(
                            ErrorCode::IncorrectKeyMaterialException,
                            format!("The key material is not a PKCS#8 {} private key", k.spec),
                        )
                    })?
                } else {
                    material
                };
                if is_importable_private_key(&k.spec) && !private_key_is_of(&k.spec, &material.0) {
                    return Err(KmsError::new(
                        ErrorCode::IncorrectKeyMaterialException,
                        format!(
                            "The key material is not a PKCS#8 {} private key",
                            k.spec
                        ),
                    ));
                }
                let d = digest(&material.0);
                let version = KeyVersion {
                    material_id: imported_material_id(&k.id, &material.0),
                    created: now(),
                    rotation_type: None,
                    material: Secret::default(),
                    digest: Some(d.clone()),
                    description: req.key_material_description.clone(),
                };
                let known = k.versions.iter().position(|v| v.digest.as_deref() == Some(&d));
                let for_rotation = primary_pending
                    .filter(|p| known.is_none() && p.digest.as_deref() == Some(&d));
                // A reimport naming its material: it must be that material.
                if let Some(want) = &req.key_material_id {
                    match k.versions.iter().position(|v| &v.material_id == want) {
                        None if for_rotation.as_ref().is_some_and(|p| &p.material_id == want) => {}
                        None => {
                            return Err(KmsError::not_found(format!(
                                "Key material {want} does not exist for {}",
                                self.arn_id(s, &id)
                            )))
                        }
                        Some(i) if Some(i) != known => {
                            return Err(KmsError::new(
                                ErrorCode::IncorrectKeyMaterialException,
                                format!("This is not key material {want} of {}", self.arn_id(s, &id)),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                let material_id = match (k.versions.is_empty(), known, new_material) {
                    // A replica given its primary's next material.
                    _ if for_rotation.is_some() => {
                        let v = KeyVersion {
                            material,
                            description: req
                                .key_material_description
                                .clone()
                                .or(for_rotation.as_ref().and_then(|p| p.description.clone())),
                            ..for_rotation.expect("checked")
                        };
                        let mid = v.material_id.clone();
                        k.pending_material = Some(v);
                        mid
                    }
                    // The first import.
                    (true, _, _) => {
                        k.versions.push(KeyVersion { material, ..version });
                        k.current = 0;
                        k.versions[0].material_id.clone()
                    }
                    // A reimport of material the key had (after deletion or expiry, or to
                    // change ValidTo).
                    (false, Some(i), None | Some(false)) => {
                        k.versions[i].material = material;
                        if req.key_material_description.is_some() {
                            k.versions[i].description = req.key_material_description.clone();
                        }
                        k.versions[i].material_id.clone()
                    }
                    (false, None, None | Some(false)) => {
                        return Err(KmsError::new(
                            ErrorCode::IncorrectKeyMaterialException,
                            format!(
                                "This is not the key material of {}; to rotate to new material use ImportType NEW_KEY_MATERIAL",
                                self.arn_id(s, &id)
                            ),
                        ))
                    }
                    (false, Some(_), Some(true)) => {
                        return Err(KmsError::new(
                            ErrorCode::IncorrectKeyMaterialException,
                            format!("{} already has this key material", self.arn_id(s, &id)),
                        ))
                    }
                    // New material while other new material waits for its rotation: AWS
                    // keeps one pending material; it must be rotated to or deleted first.
                    // The same pending material again is that material.
                    (false, None, Some(true))
                        if k.pending_material.as_ref().is_some_and(|p| p.digest.as_deref() == Some(&d)) =>
                    {
                        let p = k.pending_material.as_mut().expect("checked");
                        if req.key_material_description.is_some() {
                            p.description = req.key_material_description.clone();
                        }
                        p.material_id.clone()
                    }
                    (false, None, Some(true)) if k.pending_material.is_some() => {
                        return Err(KmsError::new(
                            ErrorCode::KMSInvalidStateException,
                            format!(
                                "{} already has key material {} pending rotation: rotate to it (RotateKeyOnDemand) or delete it (DeleteImportedKeyMaterial) before importing other new key material",
                                self.arn(k),
                                k.pending_material.as_ref().map_or("", |p| p.material_id.as_str())
                            ),
                        ))
                    }
                    (false, None, Some(true)) => {
                        if k.spec != SYMMETRIC_DEFAULT {
                            return Err(KmsError::new(
                                ErrorCode::UnsupportedOperationException,
                                format!("{} keys cannot be rotated to new material", k.spec),
                            ));
                        }
                        if !has_material(k) {
                            return Err(KmsError::new(
                                ErrorCode::KMSInvalidStateException,
                                format!(
                                    "{} is pending import: reimport its current material first",
                                    self.arn_id(s, &id)
                                ),
                            ));
                        }
                        let v = KeyVersion {
                            material,
                            rotation_type: Some("ON_DEMAND".into()),
                            ..version
                        };
                        let mid = v.material_id.clone();
                        k.pending_material = Some(v);
                        mid
                    }
                };
                k.valid_to = valid_to;
                if k.state == KeyState::PendingImport && has_material(k) {
                    k.state = KeyState::Enabled;
                }
                s.imports.remove(&token);
                info.key(self.arn_id(s, &id), None);
                Ok(ImportKeyMaterialResponse {
                    key_id: Some(self.arn_id(s, &id)),
                    key_material_id: Some(material_id),
                })
            })
        })
    }

    pub(super) fn do_delete_imported_key_material(
        &self,
        req: DeleteImportedKeyMaterialRequest,
    ) -> KmsResult<DeleteImportedKeyMaterialResponse> {
        // AWS: KeyMaterialId names the material to delete (any version, or material
        // pending rotation); without it, the current material. Deleting the current
        // material makes the key PendingImport; any other only stops its ciphertexts.
        self.change_key(
            Op::DeleteImportedKeyMaterial.name(),
            &req.key_id,
            |me, k| {
                me.external(k)?;
                let current = k
                    .versions
                    .get(k.current as usize)
                    .map(|v| v.material_id.clone());
                let target = req.key_material_id.clone().or(current.clone());
                let arn = me.arn(k);
                let Some(target) = target else {
                    return Err(KmsError::new(
                        ErrorCode::KMSInvalidStateException,
                        format!("{arn} has no imported key material"),
                    ));
                };
                if k.pending_material
                    .as_ref()
                    .is_some_and(|p| p.material_id == target)
                {
                    k.pending_material = None;
                } else {
                    let v = k
                        .versions
                        .iter_mut()
                        .find(|v| v.material_id == target)
                        .ok_or_else(|| {
                            KmsError::not_found(format!(
                                "Key material {target} does not exist for {arn}"
                            ))
                        })?;
                    v.material = Secret::default();
                    if Some(&target) == current.as_ref() {
                        k.valid_to = None;
                        if matches!(k.state, KeyState::Enabled | KeyState::Disabled) {
                            k.state = KeyState::PendingImport;
                        }
                    }
                }
                Ok(DeleteImportedKeyMaterialResponse {
                    key_id: Some(arn),
                    key_material_id: Some(target),
                })
            },
        )
    }

    /// RotateKeyOnDemand of an EXTERNAL key: the imported NEW_KEY_MATERIAL becomes current.
    pub(super) fn rotate_to_imported(&self, k: &mut KeyRecord) -> KmsResult<()> {
        let v = k.pending_material.take().ok_or_else(|| {
            KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!(
                    "{} has no new key material to rotate to: import it with ImportType NEW_KEY_MATERIAL first",
                    self.arn(k)
                ),
            )
        })?;
        k.versions.push(v);
        k.current = (k.versions.len() - 1) as u32;
        Ok(())
    }
}
