//! Data operations under symmetric keys: Encrypt, Decrypt, GenerateDataKey[WithoutPlaintext],
//! ReEncrypt.

use super::*;

impl LocalKms {
    pub(super) fn do_encrypt(&self, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.run(Op::Encrypt.name(), |info| {
            info.context = req.encryption_context.clone();
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                Op::Encrypt.action(),
                req.encryption_context.as_ref(),
                info,
            )?;
            self.ready_for(k, Op::Encrypt)?;
            self.check_grant_tokens(&req.grant_tokens)?;
            if is_rsa_encryption(k) {
                let alg = req.encryption_algorithm.as_deref();
                let blob = self.rsa_encrypt(k, alg, &req.plaintext.0, &req.encryption_context)?;
                dry_run(req.dry_run)?;
                return Ok(EncryptResponse {
                    ciphertext_blob: blob,
                    key_id: self.arn(k),
                    encryption_algorithm: alg.unwrap_or_default().into(),
                    key_material_id: None,
                });
            }
            check_algorithm(&req.encryption_algorithm)?;
            if req.plaintext.0.is_empty() || req.plaintext.0.len() > 4096 {
                return Err(messages::model_violations(&[Violation::maybe(
                    "plaintext",
                    None,
                    length_rule(req.plaintext.0.len(), 1, 4096),
                )]));
            }
            self.check_symmetric(k, "Encrypt")?;
            self.usable(k)?;
            dry_run(req.dry_run)?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_blob(
                    k,
                    &req.plaintext.0,
                    &req.encryption_context,
                    Op::Encrypt.name(),
                )?,
                key_id: self.arn(k),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }

    pub(super) fn do_decrypt(&self, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.run(Op::Decrypt.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            if let Some(alg) = req
                .encryption_algorithm
                .as_deref()
                .filter(|a| a.starts_with("RSAES_"))
            {
                return self.decrypt_asymmetric(&req, alg, info);
            }
            check_algorithm(&req.encryption_algorithm)?;
            let s = self.snapshot()?;
            let (id, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.encryption_context,
                req.key_id.as_deref(),
                Op::Decrypt.action(),
                info,
            )?;
            dry_run(req.dry_run)?;
            Ok(DecryptResponse {
                key_id: self.arn_id(&s, &id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(s.keys[&id].versions[version as usize].material_id.clone()),
            })
        })
    }

    pub(super) fn do_generate_data_key(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.generate(
            Op::GenerateDataKey.name(),
            Op::GenerateDataKey.action(),
            req,
        )
    }

    pub(super) fn do_generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyWithoutPlaintextResponse> {
        let r = self.generate(
            Op::GenerateDataKeyWithoutPlaintext.name(),
            Op::GenerateDataKeyWithoutPlaintext.action(),
            req,
        )?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: r.ciphertext_blob.clone(),
            key_id: r.key_id.clone(),
            key_material_id: r.key_material_id.clone(),
        })
    }

    pub(super) fn do_re_encrypt(&self, req: ReEncryptRequest) -> KmsResult<ReEncryptResponse> {
        self.run(Op::ReEncrypt.name(), |info| {
            check_algorithm(&req.source_encryption_algorithm)?;
            check_algorithm(&req.destination_encryption_algorithm)?;
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let (src, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.source_encryption_context,
                req.source_key_id.as_deref(),
                "kms:ReEncryptFrom",
                info,
            )?;
            let mut dinfo = OpInfo::default();
            let dk = self.authorized(
                &s,
                &req.destination_key_id,
                "kms:ReEncryptTo",
                req.destination_encryption_context.as_ref(),
                &mut dinfo,
            )?;
            self.usable(dk)?;
            self.check_symmetric(dk, "ReEncrypt")?;
            dry_run(req.dry_run)?;
            // the record names the destination (key and version the new blob is under)
            info.key_arn = dinfo.key_arn;
            info.key_version = dinfo.key_version;
            info.context = req.destination_encryption_context.clone();
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_blob(
                    dk,
                    &plaintext.0,
                    &req.destination_encryption_context,
                    Op::ReEncrypt.name(),
                )?,
                source_key_id: self.arn_id(&s, &src),
                key_id: self.arn(dk),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                source_key_material_id: Some(
                    s.keys[&src].versions[version as usize].material_id.clone(),
                ),
                destination_key_material_id: Some(
                    dk.versions[dk.current as usize].material_id.clone(),
                ),
            })
        })
    }
}

pub(super) fn check_algorithm(alg: &Option<String>) -> KmsResult<()> {
    match alg.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) => Err(KmsError::validation(format!(
            "EncryptionAlgorithm {a} is not supported"
        ))),
    }
}
