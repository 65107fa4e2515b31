//! ECC KEY_AGREEMENT keys (ECC_NIST_P256/P384/P521): DeriveSharedSecret, ECDH with a
//! peer's public key (DER SubjectPublicKeyInfo), by aws-lc-rs.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};

use super::*;

pub(super) const KEY_AGREEMENT: &str = "KEY_AGREEMENT";

/// The ECDH curve of a KEY_AGREEMENT spec.
fn curve(spec: &str) -> Option<&'static agreement::Algorithm> {
    match spec {
        "ECC_NIST_P256" => Some(&agreement::ECDH_P256),
        "ECC_NIST_P384" => Some(&agreement::ECDH_P384),
        "ECC_NIST_P521" => Some(&agreement::ECDH_P521),
        _ => None,
    }
}

/// Can keys of `spec` be KEY_AGREEMENT keys?
pub(super) fn is_agreement_spec(spec: &str) -> bool {
    curve(spec).is_some()
}

/// The KeyAgreementAlgorithms of a key's metadata.
pub(super) fn key_agreement_algorithms(usage: &str) -> Vec<String> {
    if usage == KEY_AGREEMENT {
        vec!["ECDH".into()]
    } else {
        vec![]
    }
}

impl LocalKms {
    pub(super) fn do_derive_shared_secret(
        &self,
        req: DeriveSharedSecretRequest,
    ) -> KmsResult<DeriveSharedSecretResponse> {
        self.check_grant_tokens(&req.grant_tokens)?;
        self.run(Op::DeriveSharedSecret.name(), |info| {
            if req.recipient.is_some() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "Recipient (Nitro Enclaves attestation) is not supported",
                ));
            }
            let s = self.snapshot()?;
            let k =
                self.authorized(&s, &req.key_id, Op::DeriveSharedSecret.action(), None, info)?;
            self.ready_for(k, Op::DeriveSharedSecret)?;
            if req.key_agreement_algorithm != "ECDH" {
                return Err(KmsError::validation(format!(
                    "KeyAgreementAlgorithm {} is not valid (ECDH)",
                    req.key_agreement_algorithm
                )));
            }
            if req.public_key.is_empty() || req.public_key.len() > 8192 {
                return Err(KmsError::validation(
                    "PublicKey must be 1..8192 bytes of DER",
                ));
            }
            let alg = curve(&k.spec).expect("KEY_AGREEMENT keys are on an ECDH curve");
            let private =
                PrivateKey::from_private_key_der(alg, &k.versions[k.current as usize].material.0)
                    .map_err(|_| KmsError::internal("stored EC key does not parse"))?;
            let peer = UnparsedPublicKey::new(alg, &req.public_key);
            dry_run(req.dry_run)?;
            let secret = agreement::agree(
                &private,
                peer,
                KmsError::validation(format!(
                    "PublicKey is not a valid {} public key (DER SubjectPublicKeyInfo)",
                    k.spec
                )),
                |z| Ok(Secret(z.to_vec())),
            )?;
            Ok(DeriveSharedSecretResponse {
                key_id: self.arn(k),
                shared_secret: secret,
                key_agreement_algorithm: "ECDH".into(),
                key_origin: "AWS_KMS".into(),
            })
        })
    }
}
