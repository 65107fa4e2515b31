//! RSA ENCRYPT_DECRYPT keys: Encrypt and Decrypt with RSAES_OAEP_SHA_1 and
//! RSAES_OAEP_SHA_256 (aws-lc-rs). The ciphertext is the bare RSA-OAEP output, as AWS's:
//! it names no key, so Decrypt needs the KeyId and the algorithm; no encryption context.

use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};

use super::*;

/// Is `spec` an RSA spec?
pub(super) fn is_rsa(spec: &str) -> bool {
    matches!(spec, "RSA_2048" | "RSA_3072" | "RSA_4096")
}

fn oaep(name: &str) -> Option<&'static OaepAlgorithm> {
    match name {
        "RSAES_OAEP_SHA_1" => Some(&OAEP_SHA1_MGF1SHA1),
        "RSAES_OAEP_SHA_256" => Some(&OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

/// The EncryptionAlgorithms of a key's metadata.
pub(super) fn encryption_algorithms(spec: &str, usage: &str) -> Vec<String> {
    match (spec, usage) {
        (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) => vec![SYMMETRIC_DEFAULT.into()],
        (s, ENCRYPT_DECRYPT) if is_rsa(s) => {
            vec!["RSAES_OAEP_SHA_1".into(), "RSAES_OAEP_SHA_256".into()]
        }
        _ => vec![],
    }
}

/// Is this an RSA key for encryption (as opposed to the symmetric default)?
pub(super) fn is_rsa_encryption(k: &KeyRecord) -> bool {
    is_rsa(&k.spec) && k.usage == ENCRYPT_DECRYPT
}

impl LocalKms {
    /// The OAEP algorithm of a request on RSA key `k`: required, one of the key's.
    fn oaep_for(&self, k: &KeyRecord, alg: Option<&str>) -> KmsResult<&'static OaepAlgorithm> {
        let name = alg.unwrap_or(SYMMETRIC_DEFAULT);
        oaep(name).ok_or_else(|| {
            KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!(
                    "EncryptionAlgorithm {name} is not compatible with {} ({}): use RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256",
                    self.arn(k),
                    k.spec
                ),
            )
        })
    }

    /// RSA-OAEP encryption under `k` (checked to be an enabled RSA ENCRYPT_DECRYPT key).
    pub(super) fn rsa_encrypt(
        &self,
        k: &KeyRecord,
        alg: Option<&str>,
        plaintext: &[u8],
        ctx: &Option<EncryptionContext>,
    ) -> KmsResult<Vec<u8>> {
        self.usable(k)?;
        let name = alg.unwrap_or_default().to_string();
        let alg = self.oaep_for(k, alg)?;
        if ctx.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(KmsError::validation(
                "EncryptionContext is not supported with asymmetric keys",
            ));
        }
        let private = self.rsa_private(k)?;
        let public = OaepPublicEncryptingKey::new(private.public_key())
            .map_err(|_| KmsError::internal("stored RSA key"))?;
        let max = public.max_plaintext_size(alg);
        if plaintext.len() > max {
            return Err(messages::too_large_for(&name, &k.spec, max));
        }
        if plaintext.is_empty() {
            return Err(messages::model_violations(&[Violation::maybe(
                "plaintext",
                None,
                length_rule(0, 1, 4096),
            )]));
        }
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(alg, plaintext, &mut out, None)
            .map_err(|_| KmsError::internal("RSA encryption failed"))?
            .len();
        out.truncate(n);
        Ok(out)
    }

    /// RSA-OAEP decryption under `k`; any failure is InvalidCiphertextException.
    pub(super) fn rsa_decrypt(
        &self,
        k: &KeyRecord,
        alg: Option<&str>,
        ciphertext: &[u8],
        ctx: &Option<EncryptionContext>,
    ) -> KmsResult<Secret> {
        self.usable(k)?;
        let alg = self.oaep_for(k, alg)?;
        if ctx.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(KmsError::validation(
                "EncryptionContext is not supported with asymmetric keys",
            ));
        }
        let key = OaepPrivateDecryptingKey::new(self.rsa_private(k)?)
            .map_err(|_| KmsError::internal("stored RSA key"))?;
        let mut out = Secret(vec![0u8; key.min_output_size()]);
        let n = key
            .decrypt(alg, ciphertext, &mut out.0, None)
            .map_err(|_| {
                KmsError::new(
                    ErrorCode::InvalidCiphertextException,
                    "The ciphertext is invalid for this key and algorithm.",
                )
            })?
            .len();
        out.0.truncate(n);
        Ok(out)
    }

    /// Decrypt with an RSA key: the KeyId is required (the ciphertext names no key).
    pub(super) fn decrypt_asymmetric(
        &self,
        req: &DecryptRequest,
        alg: &str,
        info: &mut OpInfo,
    ) -> KmsResult<DecryptResponse> {
        let key = req.key_id.as_deref().ok_or_else(|| {
            KmsError::validation("KeyId is required to decrypt with an asymmetric key")
        })?;
        info.context = req.encryption_context.clone();
        let s = self.snapshot()?;
        let k = self.authorized(
            &s,
            key,
            Op::Decrypt.action(),
            req.encryption_context.as_ref(),
            info,
        )?;
        self.ready_for(k, Op::Decrypt)?;
        if !is_rsa_encryption(k) {
            return Err(KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!(
                    "{} ({} {}) does not decrypt with {alg}",
                    self.arn(k),
                    k.spec,
                    k.usage
                ),
            ));
        }
        let plaintext =
            self.rsa_decrypt(k, Some(alg), &req.ciphertext_blob, &req.encryption_context)?;
        dry_run(req.dry_run)?;
        Ok(DecryptResponse {
            key_id: self.arn(k),
            plaintext,
            encryption_algorithm: alg.into(),
            key_material_id: None,
        })
    }

    fn rsa_private(&self, k: &KeyRecord) -> KmsResult<PrivateDecryptingKey> {
        PrivateDecryptingKey::from_pkcs8(&k.versions[k.current as usize].material.0)
            .map_err(|_| KmsError::internal("stored RSA key does not parse"))
    }
}
