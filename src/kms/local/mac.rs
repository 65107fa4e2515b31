//! Key specs and usages, and the HMAC keys (HMAC_224/256/384/512, GENERATE_VERIFY_MAC):
//! GenerateMac and VerifyMac with aws-lc-rs's HMAC (constant-time verification).

use aws_lc_rs::hmac;

use super::*;

/// A key spec this KMS makes, with the length of its material in bytes.
pub(super) fn material_len(spec: &str) -> Option<usize> {
    Some(match spec {
        SYMMETRIC_DEFAULT => 32,
        "HMAC_224" => 28,
        "HMAC_256" => 32,
        "HMAC_384" => 48,
        "HMAC_512" => 64,
        _ => return None,
    })
}

/// The one MAC algorithm of an HMAC key spec.
fn mac_algorithm(spec: &str) -> Option<(&'static str, hmac::Algorithm)> {
    Some(match spec {
        "HMAC_224" => ("HMAC_SHA_224", hmac::HMAC_SHA224),
        "HMAC_256" => ("HMAC_SHA_256", hmac::HMAC_SHA256),
        "HMAC_384" => ("HMAC_SHA_384", hmac::HMAC_SHA384),
        "HMAC_512" => ("HMAC_SHA_512", hmac::HMAC_SHA512),
        _ => return None,
    })
}

/// The MacAlgorithms of a key's metadata (none for other keys).
pub(super) fn mac_algorithms(spec: &str) -> Vec<String> {
    mac_algorithm(spec)
        .map(|(n, _)| vec![n.to_string()])
        .unwrap_or_default()
}

/// The (KeySpec, KeyUsage) of a CreateKey request, checked: AWS's pairs that this KMS
/// makes; anything else is refused, never replaced by a default.
pub(super) fn spec_and_usage(req: &CreateKeyRequest) -> KmsResult<(String, String)> {
    let spec = req
        .key_spec
        .as_deref()
        .or(req.customer_master_key_spec.as_deref())
        .unwrap_or(SYMMETRIC_DEFAULT);
    // The usage each spec allows here, and the one AWS makes the default (if any).
    let (allowed, default): (&[&str], Option<&str>) = if spec == SYMMETRIC_DEFAULT {
        (&[ENCRYPT_DECRYPT], Some(ENCRYPT_DECRYPT))
    } else if material_len(spec).is_some() {
        (&[GENERATE_VERIFY_MAC], None)
    } else if is_kem_spec(spec) {
        (&[ENCAPSULATE_DECAPSULATE], None)
    } else if is_signing_spec(spec) {
        if is_rsa(spec) {
            (&[SIGN_VERIFY, ENCRYPT_DECRYPT], None)
        } else if is_agreement_spec(spec) {
            (&[SIGN_VERIFY, KEY_AGREEMENT], None)
        } else {
            (&[SIGN_VERIFY], None)
        }
    } else {
        return Err(KmsError::validation(format!(
            "KeySpec {spec} is not supported (SYMMETRIC_DEFAULT, HMAC_224..HMAC_512, RSA_2048/3072/4096, ECC_NIST_P256/P384/P521, ECC_SECG_P256K1, ECC_NIST_EDWARDS25519, ML_DSA_44/65/87, ML_KEM_512/768/1024)"
        )));
    };
    let usage = match req.key_usage.as_deref().or(default) {
        Some(u) if allowed.contains(&u) => u,
        Some(u) => {
            return Err(KmsError::validation(format!(
                "KeyUsage {u} is not supported for KeySpec {spec} (supported: {})",
                allowed.join(", ")
            )))
        }
        None => {
            return Err(KmsError::validation(format!(
                "KeySpec {spec} needs KeyUsage {}",
                allowed.join(" or ")
            )))
        }
    };
    Ok((spec.to_string(), usage.to_string()))
}

impl LocalKms {
    /// AWS's order of checks once the key is found and the caller allowed: the key's
    /// state (DisabledException, KMSInvalidStateException), then whether its usage
    /// allows `op` (InvalidKeyUsageException), and only then the request's parameters.
    pub(super) fn ready_for(&self, k: &KeyRecord, op: Op) -> KmsResult<()> {
        self.usable(k)?;
        let valid: &[&str] = match op {
            Op::Encrypt
            | Op::Decrypt
            | Op::ReEncrypt
            | Op::GenerateDataKey
            | Op::GenerateDataKeyWithoutPlaintext
            | Op::GenerateDataKeyPair
            | Op::GenerateDataKeyPairWithoutPlaintext => &[ENCRYPT_DECRYPT],
            Op::GenerateMac | Op::VerifyMac => &[GENERATE_VERIFY_MAC],
            Op::Sign | Op::Verify => &[SIGN_VERIFY],
            Op::DeriveSharedSecret => &[KEY_AGREEMENT],
            Op::Encapsulate | Op::Decapsulate => &[ENCAPSULATE_DECAPSULATE],
            _ => return Ok(()),
        };
        if !valid.contains(&k.usage.as_str()) {
            return Err(messages::key_usage(&self.arn(k), &k.usage, op.name()));
        }
        Ok(())
    }

    /// The key may be used for `usage` in `op` (InvalidKeyUsageException otherwise).
    pub(super) fn check_usage(&self, k: &KeyRecord, usage: &str, op: &str) -> KmsResult<()> {
        if k.usage != usage {
            return Err(messages::key_usage(&self.arn(k), &k.usage, op));
        }
        Ok(())
    }

    /// A symmetric encryption key: the only kind that makes and opens ciphertext blobs
    /// (its material is an AES-256 key; no other key's material is used as one).
    pub(super) fn check_symmetric(&self, k: &KeyRecord, op: &str) -> KmsResult<()> {
        self.check_usage(k, ENCRYPT_DECRYPT, op)?;
        if k.spec != SYMMETRIC_DEFAULT {
            return Err(KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!("{} is a {} key, not SYMMETRIC_DEFAULT", self.arn(k), k.spec),
            ));
        }
        Ok(())
    }

    /// HMAC keys cannot be rotated (AWS refuses it for every key but symmetric ones).
    pub(super) fn check_rotatable(&self, k: &KeyRecord) -> KmsResult<()> {
        if k.origin == EXTERNAL_KEY_STORE {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                format!(
                    "{} is in an external key store: its external key is rotated in the external key manager",
                    self.arn(k)
                ),
            ));
        }
        if k.spec != SYMMETRIC_DEFAULT {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                format!(
                    "{} is a {} key; only symmetric encryption keys can be rotated",
                    self.arn(k),
                    k.spec
                ),
            ));
        }
        Ok(())
    }

    /// The HMAC key and algorithm for a MAC request: usage, the algorithm matching the
    /// key's spec, the message's length (1..4096 bytes).
    fn mac_key(
        &self,
        k: &KeyRecord,
        algorithm: &str,
        message: &[u8],
    ) -> KmsResult<(hmac::Key, &'static str)> {
        self.check_usage(k, GENERATE_VERIFY_MAC, "GenerateMac")?;
        self.usable(k)?;
        let (name, alg) = mac_algorithm(&k.spec).expect("GENERATE_VERIFY_MAC keys are HMAC");
        if algorithm != name {
            return Err(KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!(
                    "MacAlgorithm {algorithm} is not compatible with {} ({})",
                    self.arn(k),
                    k.spec
                ),
            ));
        }
        check_message_len(message)?;
        let material = &k.versions[k.current as usize].material.0;
        Ok((hmac::Key::new(alg, material), name))
    }

    pub(super) fn do_generate_mac(
        &self,
        req: GenerateMacRequest,
    ) -> KmsResult<GenerateMacResponse> {
        self.run(Op::GenerateMac.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::GenerateMac.action(), None, info)?;
            self.ready_for(k, Op::GenerateMac)?;
            let (key, name) = self.mac_key(k, &req.mac_algorithm, &req.message.0)?;
            dry_run(req.dry_run)?;
            Ok(GenerateMacResponse {
                mac: hmac::sign(&key, &req.message.0).as_ref().to_vec(),
                mac_algorithm: name.into(),
                key_id: self.arn(k),
            })
        })
    }

    pub(super) fn do_verify_mac(&self, req: VerifyMacRequest) -> KmsResult<VerifyMacResponse> {
        self.run(Op::VerifyMac.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::VerifyMac.action(), None, info)?;
            self.ready_for(k, Op::VerifyMac)?;
            let (key, name) = self.mac_key(k, &req.mac_algorithm, &req.message.0)?;
            dry_run(req.dry_run)?;
            if hmac::verify(&key, &req.message.0, &req.mac).is_err() {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidMacException,
                    "The MAC does not match the message under this key and algorithm",
                ));
            }
            Ok(VerifyMacResponse {
                key_id: self.arn(k),
                mac_valid: true,
                mac_algorithm: name.into(),
            })
        })
    }
}
