//! The ciphertext blob format (format ‖ key id ‖ version ‖ nonce ‖ sealed ‖ tag) and
//! data-key generation.

use super::*;

/// The blob format of a multi-Region key: its id's 16 bytes are the hex digits after `mrk-`.
pub(super) const BLOB_FORMAT_MRK: u8 = 3;

/// (format byte, the 16 bytes of key id `id`).
fn id_bytes(id: &str) -> (u8, [u8; 16]) {
    match id.strip_prefix(MRK_PREFIX) {
        Some(h) => {
            let mut b = [0u8; 16];
            hex::decode_to_slice(h, &mut b).expect("multi-Region key ids are 32 hex digits");
            (BLOB_FORMAT_MRK, b)
        }
        None => (
            BLOB_FORMAT,
            *uuid::Uuid::parse_str(id)
                .expect("key ids are UUIDs")
                .as_bytes(),
        ),
    }
}

impl LocalKms {
    /// The blob of `plaintext` under `k`'s current version; a key in an external key
    /// store adds its second layer (`xks`), which may fail.
    pub(super) fn seal_blob(
        &self,
        k: &KeyRecord,
        plaintext: &[u8],
        ctx: &Option<EncryptionContext>,
        op: &str,
    ) -> KmsResult<Vec<u8>> {
        let version = k.current;
        let material = &k.versions[version as usize].material;
        let mut blob = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
        let (format, id) = id_bytes(&k.id);
        blob.push(format);
        blob.extend_from_slice(&id);
        blob.extend_from_slice(&version.to_be_bytes());
        let nonce = random_nonce();
        blob.extend_from_slice(&nonce);
        let aad = blob_aad(&blob[..BLOB_PREFIX], ctx);
        let start = blob.len();
        blob.extend_from_slice(plaintext);
        let key: [u8; 32] = material.0.as_slice().try_into().expect("32-byte material");
        let tag = Backend::AwsLc
            .key(&key)
            .seal(&nonce, &aad, &mut blob[start..]);
        blob.extend_from_slice(&tag);
        if k.xks_key_id.is_some() {
            return self.xks_wrap(k, &blob, op);
        }
        Ok(blob)
    }

    /// Opens a blob after checking the caller may `action` on its key:
    /// (key id, version index, plaintext). Any mismatch is InvalidCiphertext.
    pub(super) fn open_blob(
        &self,
        store: &Store,
        blob: &[u8],
        ctx: &Option<EncryptionContext>,
        key_hint: Option<&str>,
        action: &str,
        info: &mut OpInfo,
    ) -> KmsResult<(String, u32, Secret)> {
        let invalid = || {
            KmsError::new(
                ErrorCode::InvalidCiphertextException,
                "The ciphertext is invalid or was encrypted under another encryption context.",
            )
        };
        info.context = ctx.clone();
        if blob.len() < BLOB_OVERHEAD {
            return Err(invalid());
        }
        let id = match blob[0] {
            BLOB_FORMAT | BLOB_FORMAT_XKS => uuid::Uuid::from_slice(&blob[1..17])
                .map_err(|_| invalid())?
                .to_string(),
            BLOB_FORMAT_MRK => format!("{MRK_PREFIX}{}", hex::encode(&blob[1..17])),
            _ => return Err(invalid()),
        };
        if let Some(hint) = key_hint {
            let want = self.resolve(store, hint)?;
            if want != id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKeyException,
                    format!(
                        "The ciphertext was not encrypted under {}",
                        self.arn_id(store, &want)
                    ),
                ));
            }
        }
        // The blob names the key: one of another account is reached when the operation
        // and the key's policy allow it.
        let k = self.authorized_blob_key(store, &id, action, ctx.as_ref(), info)?;
        self.usable(k)?;
        let op = if action == "kms:Decrypt" {
            "Decrypt"
        } else {
            "ReEncrypt"
        };
        self.check_symmetric(k, op)?;
        // A key in an external key store: its proxy opens the outer layer first; the
        // inner blob must be a format 1 blob of the same key.
        let inner;
        let blob = match (blob[0] == BLOB_FORMAT_XKS, k.xks_key_id.is_some()) {
            (false, false) => blob,
            (true, true) => {
                let op = action.trim_start_matches("kms:").trim_end_matches("From");
                inner = self.xks_unwrap(store, k, blob, op)?.ok_or_else(invalid)?;
                if inner.len() < BLOB_OVERHEAD
                    || inner[0] != BLOB_FORMAT
                    || inner[1..17] != blob[1..17]
                {
                    return Err(invalid());
                }
                &inner[..]
            }
            _ => return Err(invalid()),
        };
        let version = u32::from_be_bytes(blob[17..21].try_into().unwrap());
        let v = k.versions.get(version as usize).ok_or_else(invalid)?;
        info.key_version = Some(v.material_id.clone());
        let nonce: [u8; NONCE_LEN] = blob[BLOB_PREFIX..BLOB_PREFIX + NONCE_LEN]
            .try_into()
            .unwrap();
        let aad = blob_aad(&blob[..BLOB_PREFIX], ctx);
        let mut buf = Secret(blob[BLOB_PREFIX + NONCE_LEN..].to_vec());
        // Imported material of an older version may have been deleted and not reimported.
        let key: [u8; 32] = v.material.0.as_slice().try_into().map_err(|_| {
            KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!(
                    "the key material {} of {} was deleted; reimport it to decrypt this",
                    v.material_id,
                    self.arn(k)
                ),
            )
        })?;
        Backend::AwsLc
            .key(&key)
            .open(&nonce, &aad, &mut buf.0)
            .map_err(|_| invalid())?;
        let n = buf.0.len() - TAG_LEN;
        buf.0.truncate(n);
        Ok((k.id.clone(), version, buf))
    }

    pub(super) fn data_key_len(req: &GenerateDataKeyRequest) -> KmsResult<usize> {
        match (req.key_spec.as_deref(), req.number_of_bytes) {
            (Some(_), Some(_)) => Err(KmsError::validation(
                "specify either KeySpec or NumberOfBytes, not both",
            )),
            (Some("AES_256"), None) => Ok(32),
            (Some("AES_128"), None) => Ok(16),
            (Some(s), None) => Err(KmsError::validation(format!(
                "KeySpec {s:?} is not AES_256 or AES_128"
            ))),
            (None, Some(n)) if (1..=1024).contains(&n) => Ok(n as usize),
            (None, Some(n)) => Err(number_of_bytes(n as i64)),
            (None, None) => Err(KmsError::validation("KeySpec or NumberOfBytes is required")),
        }
    }

    /// New key material for a key of `spec` (a spec `spec_and_usage` accepted).
    pub(super) fn new_version(spec: &str, rotation_type: Option<&str>) -> KeyVersion {
        let material = match material_len(spec) {
            Some(n) => {
                let mut m = Secret(vec![0u8; n]);
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut m.0);
                m
            }
            None if is_kem_spec(spec) => generate_kem_key(spec),
            None => generate_private_key(spec),
        };
        KeyVersion {
            material_id: hex::encode(random_bytes::<32>()),
            created: now(),
            rotation_type: rotation_type.map(str::to_string),
            material,
            digest: None,
            description: None,
        }
    }

    pub(super) fn generate(
        &self,
        op: &str,
        action: &str,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.run(op, |info| {
            info.context = req.encryption_context.clone();
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                action,
                req.encryption_context.as_ref(),
                info,
            )?;
            if let Some(o) = Op::from_name(op) {
                self.ready_for(k, o)?;
            }
            let n = Self::data_key_len(&req)?;
            self.check_grant_tokens(&req.grant_tokens)?;
            self.check_symmetric(k, op)?;
            self.usable(k)?;
            dry_run(req.dry_run)?;
            let mut plaintext = Secret(vec![0u8; n]);
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut plaintext.0);
            Ok(GenerateDataKeyResponse {
                ciphertext_blob: self.seal_blob(k, &plaintext.0, &req.encryption_context, op)?,
                plaintext,
                key_id: self.arn(k),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }
}

/// AWS's model validation of `NumberOfBytes` outside 1..1024.
pub(super) fn number_of_bytes(n: i64) -> KmsError {
    messages::model_violation("numberOfBytes", n.to_string(), value_rule(n, 1, 1024))
}

pub(super) fn blob_aad(prefix: &[u8], ctx: &Option<EncryptionContext>) -> Vec<u8> {
    let empty = EncryptionContext::new();
    let ctx = ctx.as_ref().unwrap_or(&empty);
    let mut aad = Vec::with_capacity(32 + prefix.len() + ctx.len() * 48);
    aad.extend_from_slice(b"kmsfs-kms blob v1");
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&encode_context(ctx));
    aad
}
