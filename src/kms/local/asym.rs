//! Asymmetric SIGN_VERIFY keys (RSA_2048/3072/4096; ECC_NIST_P256/P384/P521,
//! ECC_SECG_P256K1; ECC_NIST_EDWARDS25519; ML_DSA_44/65/87, FIPS 204, post-quantum) with
//! aws-lc-rs: Sign and Verify of a message (RAW) or of its digest (DIGEST), Ed25519ph
//! (`ED25519_PH_SHA_512`, DIGEST) and ML-DSA from an external μ (EXTERNAL_MU) through
//! aws-lc's C API (`lc_sign`), and GetPublicKey. The private key is kept as PKCS#8 DER in
//! the sealed store and never leaves it.

use aws_lc_rs::digest;

use super::lc_sign;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{self, KeySize};
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, PqdsaKeyPair,
};

use super::*;

pub(super) const SIGN_VERIFY: &str = "SIGN_VERIFY";

/// A signing algorithm: its AWS name, digest, and how aws-lc-rs signs and verifies it.
struct SigningAlgorithm {
    name: &'static str,
    digest: &'static digest::Algorithm,
    kind: Kind,
}

/// What a Sign/Verify message is.
enum Input {
    /// The message itself (the algorithm hashes it).
    Raw,
    /// Its digest, of the algorithm's hash.
    Digest(digest::Digest),
    /// A 64-byte SHA-512 digest that Ed25519ph prehashes again (AWS's ED25519_PH_SHA_512).
    Prehashed,
    /// ML-DSA's 64-byte representative μ (FIPS 204 §6.2).
    Mu,
}

enum Kind {
    Rsa {
        sign: &'static sig::RsaSignatureEncoding,
        verify: &'static sig::RsaParameters,
    },
    Ecdsa {
        sign: &'static sig::EcdsaSigningAlgorithm,
        verify: &'static sig::EcdsaVerificationAlgorithm,
    },
    /// Pure Ed25519 (RFC 8032): the message itself, SHA-512 inside.
    Ed25519,
    /// Ed25519ph (HashEdDSA): AWS takes a 64-byte SHA-512 digest and prehashes it again
    /// (FIPS 186-5 §7.8.1 step 1), i.e. Ed25519ph of the digest as the message.
    Ed25519ph,
    /// ML-DSA (FIPS 204), pure, empty context: the message itself, SHAKE256 inside.
    MlDsa {
        sign: &'static sig::PqdsaSigningAlgorithm,
        verify: &'static sig::PqdsaVerificationAlgorithm,
    },
}

const RSA_ALGS: [SigningAlgorithm; 6] = [
    rsa_alg(
        "RSASSA_PSS_SHA_256",
        &digest::SHA256,
        &sig::RSA_PSS_SHA256,
        &sig::RSA_PSS_2048_8192_SHA256,
    ),
    rsa_alg(
        "RSASSA_PSS_SHA_384",
        &digest::SHA384,
        &sig::RSA_PSS_SHA384,
        &sig::RSA_PSS_2048_8192_SHA384,
    ),
    rsa_alg(
        "RSASSA_PSS_SHA_512",
        &digest::SHA512,
        &sig::RSA_PSS_SHA512,
        &sig::RSA_PSS_2048_8192_SHA512,
    ),
    rsa_alg(
        "RSASSA_PKCS1_V1_5_SHA_256",
        &digest::SHA256,
        &sig::RSA_PKCS1_SHA256,
        &sig::RSA_PKCS1_2048_8192_SHA256,
    ),
    rsa_alg(
        "RSASSA_PKCS1_V1_5_SHA_384",
        &digest::SHA384,
        &sig::RSA_PKCS1_SHA384,
        &sig::RSA_PKCS1_2048_8192_SHA384,
    ),
    rsa_alg(
        "RSASSA_PKCS1_V1_5_SHA_512",
        &digest::SHA512,
        &sig::RSA_PKCS1_SHA512,
        &sig::RSA_PKCS1_2048_8192_SHA512,
    ),
];

const fn rsa_alg(
    name: &'static str,
    digest: &'static digest::Algorithm,
    sign: &'static sig::RsaSignatureEncoding,
    verify: &'static sig::RsaParameters,
) -> SigningAlgorithm {
    SigningAlgorithm {
        name,
        digest,
        kind: Kind::Rsa { sign, verify },
    }
}

const fn ecdsa_alg(
    name: &'static str,
    digest: &'static digest::Algorithm,
    sign: &'static sig::EcdsaSigningAlgorithm,
    verify: &'static sig::EcdsaVerificationAlgorithm,
) -> SigningAlgorithm {
    SigningAlgorithm {
        name,
        digest,
        kind: Kind::Ecdsa { sign, verify },
    }
}

const P256: SigningAlgorithm = ecdsa_alg(
    "ECDSA_SHA_256",
    &digest::SHA256,
    &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
    &sig::ECDSA_P256_SHA256_ASN1,
);
const P384: SigningAlgorithm = ecdsa_alg(
    "ECDSA_SHA_384",
    &digest::SHA384,
    &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
    &sig::ECDSA_P384_SHA384_ASN1,
);
const P521: SigningAlgorithm = ecdsa_alg(
    "ECDSA_SHA_512",
    &digest::SHA512,
    &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
    &sig::ECDSA_P521_SHA512_ASN1,
);
const K256: SigningAlgorithm = ecdsa_alg(
    "ECDSA_SHA_256",
    &digest::SHA256,
    &sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
    &sig::ECDSA_P256K1_SHA256_ASN1,
);

const EDWARDS: [SigningAlgorithm; 2] = [
    SigningAlgorithm {
        name: "ED25519_SHA_512",
        digest: &digest::SHA512,
        kind: Kind::Ed25519,
    },
    SigningAlgorithm {
        name: "ED25519_PH_SHA_512",
        digest: &digest::SHA512,
        kind: Kind::Ed25519ph,
    },
];

const fn ml_dsa(
    sign: &'static sig::PqdsaSigningAlgorithm,
    verify: &'static sig::PqdsaVerificationAlgorithm,
) -> SigningAlgorithm {
    SigningAlgorithm {
        name: "ML_DSA_SHAKE_256",
        // not used: ML-DSA signs the message (RAW) or its mu (EXTERNAL_MU), no digest
        digest: &digest::SHA512,
        kind: Kind::MlDsa { sign, verify },
    }
}

const ML_DSA_44: SigningAlgorithm = ml_dsa(&sig::ML_DSA_44_SIGNING, &sig::ML_DSA_44);
const ML_DSA_65: SigningAlgorithm = ml_dsa(&sig::ML_DSA_65_SIGNING, &sig::ML_DSA_65);
const ML_DSA_87: SigningAlgorithm = ml_dsa(&sig::ML_DSA_87_SIGNING, &sig::ML_DSA_87);

/// The signing algorithms of a key spec (empty: not an asymmetric signing spec).
fn algorithms(spec: &str) -> &'static [SigningAlgorithm] {
    match spec {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => &RSA_ALGS,
        "ECC_NIST_P256" => std::slice::from_ref(&P256),
        "ECC_NIST_P384" => std::slice::from_ref(&P384),
        "ECC_NIST_P521" => std::slice::from_ref(&P521),
        "ECC_SECG_P256K1" => std::slice::from_ref(&K256),
        "ECC_NIST_EDWARDS25519" => &EDWARDS,
        "ML_DSA_44" => std::slice::from_ref(&ML_DSA_44),
        "ML_DSA_65" => std::slice::from_ref(&ML_DSA_65),
        "ML_DSA_87" => std::slice::from_ref(&ML_DSA_87),
        _ => &[],
    }
}

/// Asymmetric signing specs whose private key may be imported (PKCS#8): RSA and ECC as
/// AWS allows, Ed25519 and ML-DSA as "asymmetric signing KMS keys" too (ImportKeyMaterial's
/// reference: any asymmetric signing key). Key agreement uses the ECC specs' keys.
pub(super) fn is_importable_private_key(spec: &str) -> bool {
    matches!(
        spec,
        "RSA_2048"
            | "RSA_3072"
            | "RSA_4096"
            | "ECC_NIST_P256"
            | "ECC_NIST_P384"
            | "ECC_NIST_P521"
            | "ECC_SECG_P256K1"
            | "ECC_NIST_EDWARDS25519"
            | "ML_DSA_44"
            | "ML_DSA_65"
            | "ML_DSA_87"
    )
}

/// Whether `der` is a PKCS#8 private key of `spec` (RSA of that size, ECC on that curve,
/// Ed25519, ML-DSA of that parameter set).
pub(super) fn private_key_is_of(spec: &str, der: &[u8]) -> bool {
    match &algorithms(spec).first().map(|a| &a.kind) {
        Some(Kind::Rsa { .. }) => rsa::KeyPair::from_pkcs8(der).is_ok_and(|kp| {
            let bits = kp.public_modulus_len() * 8;
            spec.strip_prefix("RSA_").and_then(|b| b.parse().ok()) == Some(bits)
        }),
        Some(Kind::Ecdsa { sign, .. }) => EcdsaKeyPair::from_pkcs8(sign, der).is_ok(),
        Some(Kind::Ed25519 | Kind::Ed25519ph) => Ed25519KeyPair::from_pkcs8(der).is_ok(),
        Some(Kind::MlDsa { sign, .. }) => PqdsaKeyPair::from_pkcs8(sign, der).is_ok(),
        None => false,
    }
}

/// Is `spec` an ML-DSA spec (SIGN_VERIFY only; not a data key pair spec)?
pub(super) fn is_ml_dsa(spec: &str) -> bool {
    matches!(spec, "ML_DSA_44" | "ML_DSA_65" | "ML_DSA_87")
}

/// Is `spec` an asymmetric spec this KMS makes SIGN_VERIFY keys of?
pub(super) fn is_signing_spec(spec: &str) -> bool {
    !algorithms(spec).is_empty()
}

/// The SigningAlgorithms of a key's metadata.
pub(super) fn signing_algorithms(spec: &str, usage: &str) -> Vec<String> {
    if usage != SIGN_VERIFY {
        return vec![];
    }
    algorithms(spec)
        .iter()
        .map(|a| a.name.to_string())
        .collect()
}

/// A new private key of `spec`, as PKCS#8 DER.
pub(super) fn generate_private_key(spec: &str) -> Secret {
    let der = |d: &[u8]| Secret(d.to_vec());
    match spec {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => {
            let size = match spec {
                "RSA_2048" => KeySize::Rsa2048,
                "RSA_3072" => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            // One RSA generation at a time in this process (up to 1.5 s of CPU each for
            // RSA_4096): callers asking for many queue up instead of taking every core.
            static RSA_GEN: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
            let _one = RSA_GEN.lock();
            let kp = rsa::KeyPair::generate(size).expect("RSA key generation");
            der(AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                .expect("RSA PKCS#8")
                .as_ref())
        }
        "ECC_NIST_EDWARDS25519" => der(Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("Ed25519 key generation")
        .as_ref()),
        _ => {
            let alg = match &algorithms(spec)[0].kind {
                Kind::Ecdsa { sign, .. } => *sign,
                Kind::MlDsa { sign, .. } => {
                    let kp = PqdsaKeyPair::generate(sign).expect("ML-DSA key generation");
                    return der(kp.to_pkcs8v1().expect("ML-DSA PKCS#8").as_ref());
                }
                Kind::Rsa { .. } | Kind::Ed25519 | Kind::Ed25519ph => {
                    unreachable!("handled above")
                }
            };
            let kp = EcdsaKeyPair::generate(alg).expect("EC key generation");
            der(kp.to_pkcs8v1().expect("EC PKCS#8").as_ref())
        }
    }
}

/// The DER SubjectPublicKeyInfo of a private key (PKCS#8) of `spec`.
pub(super) fn public_key_der(spec: &str, private: &[u8]) -> KmsResult<Vec<u8>> {
    let broken = || KmsError::internal("stored private key does not parse");
    match &algorithms(spec).first().ok_or_else(broken)?.kind {
        Kind::Rsa { .. } => {
            let kp = rsa::KeyPair::from_pkcs8(private).map_err(|_| broken())?;
            let d: aws_lc_rs::encoding::PublicKeyX509Der =
                kp.public_key().as_der().map_err(|_| broken())?;
            Ok(d.as_ref().to_vec())
        }
        Kind::Ecdsa { sign, .. } => {
            let kp = EcdsaKeyPair::from_pkcs8(sign, private).map_err(|_| broken())?;
            let d: aws_lc_rs::encoding::PublicKeyX509Der =
                kp.public_key().as_der().map_err(|_| broken())?;
            Ok(d.as_ref().to_vec())
        }
        Kind::Ed25519 | Kind::Ed25519ph => {
            let kp = Ed25519KeyPair::from_pkcs8(private).map_err(|_| broken())?;
            let d: aws_lc_rs::encoding::PublicKeyX509Der =
                kp.public_key().as_der().map_err(|_| broken())?;
            Ok(d.as_ref().to_vec())
        }
        Kind::MlDsa { sign, .. } => {
            let kp = PqdsaKeyPair::from_pkcs8(sign, private).map_err(|_| broken())?;
            let d: aws_lc_rs::encoding::PublicKeyX509Der =
                kp.public_key().as_der().map_err(|_| broken())?;
            Ok(d.as_ref().to_vec())
        }
    }
}

impl LocalKms {
    /// The signing key and algorithm of a Sign/Verify request, and what its message is
    /// (MessageType RAW, DIGEST of exactly the algorithm's digest length, or an ML-DSA
    /// EXTERNAL_MU of 64 bytes).
    fn signing<'a>(
        &self,
        k: &'a KeyRecord,
        algorithm: &str,
        message: &[u8],
        message_type: Option<&str>,
    ) -> KmsResult<(&'static SigningAlgorithm, Input, &'a [u8])> {
        self.check_usage(k, SIGN_VERIFY, "Sign")?;
        self.usable(k)?;
        let alg = algorithms(&k.spec)
            .iter()
            .find(|a| a.name == algorithm)
            .ok_or_else(|| {
                KmsError::new(
                    ErrorCode::InvalidKeyUsageException,
                    format!(
                        "SigningAlgorithm {algorithm} is not compatible with {} ({})",
                        self.arn(k),
                        k.spec
                    ),
                )
            })?;
        check_message_len(message)?;
        let need = |t: &str, want: usize| {
            if message.len() == want {
                Ok(())
            } else {
                Err(KmsError::validation(format!(
                    "Digest is {} bytes; {algorithm} with MessageType {t} takes {want} bytes",
                    message.len()
                )))
            }
        };
        let input = match (message_type.unwrap_or("RAW"), &alg.kind) {
            ("RAW", Kind::Ed25519ph) => {
                return Err(KmsError::validation(
                    "ED25519_PH_SHA_512 signing algorithm requires MessageType:DIGEST",
                ))
            }
            ("RAW", _) => Input::Raw,
            ("DIGEST", Kind::Ed25519) => {
                return Err(KmsError::validation(
                    "ED25519_SHA_512 signing algorithm requires MessageType:RAW",
                ))
            }
            ("DIGEST", Kind::Ed25519ph) => need("DIGEST", 64).map(|()| Input::Prehashed)?,
            ("DIGEST", Kind::MlDsa { .. }) => {
                return Err(KmsError::validation(format!(
                    "MessageType DIGEST is not valid for {algorithm} (RAW or EXTERNAL_MU)"
                )))
            }
            ("DIGEST", _) => Input::Digest(
                digest::Digest::import_less_safe(message, alg.digest).map_err(|_| {
                    KmsError::validation(format!(
                        "Digest is {} bytes; {algorithm} takes a {}-byte digest",
                        message.len(),
                        alg.digest.output_len()
                    ))
                })?,
            ),
            ("EXTERNAL_MU", Kind::MlDsa { .. }) => need("EXTERNAL_MU", 64).map(|()| Input::Mu)?,
            ("EXTERNAL_MU", _) => {
                return Err(KmsError::validation(format!(
                    "MessageType EXTERNAL_MU is valid for ML-DSA keys only, not {algorithm}"
                )))
            }
            (t, _) => {
                return Err(KmsError::validation(format!(
                    "MessageType {t} is not valid (RAW, DIGEST, EXTERNAL_MU)"
                )))
            }
        };
        Ok((alg, input, &k.versions[k.current as usize].material.0))
    }

    pub(super) fn do_sign(&self, req: SignRequest) -> KmsResult<SignResponse> {
        self.run(Op::Sign.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::Sign.action(), None, info)?;
            self.ready_for(k, Op::Sign)?;
            let (alg, input, private) = self.signing(
                k,
                &req.signing_algorithm,
                &req.message.0,
                req.message_type.as_deref(),
            )?;
            dry_run(req.dry_run)?;
            let failed = |_| KmsError::internal("signing failed");
            let digest = match input {
                Input::Digest(d) => Some(d),
                _ => None,
            };
            let signature = match &alg.kind {
                Kind::Rsa { sign, .. } => {
                    let kp = rsa::KeyPair::from_pkcs8(private)
                        .map_err(|_| KmsError::internal("stored key"))?;
                    let mut out = vec![0u8; kp.public_modulus_len()];
                    match &digest {
                        Some(d) => kp.sign_digest(*sign, d, &mut out).map_err(failed)?,
                        None => kp
                            .sign(
                                *sign,
                                &aws_lc_rs::rand::SystemRandom::new(),
                                &req.message.0,
                                &mut out,
                            )
                            .map_err(failed)?,
                    }
                    out
                }
                Kind::Ecdsa { sign, .. } => {
                    let kp = EcdsaKeyPair::from_pkcs8(sign, private)
                        .map_err(|_| KmsError::internal("stored key"))?;
                    let s = match &digest {
                        Some(d) => kp.sign_digest(d).map_err(failed)?,
                        None => kp
                            .sign(&aws_lc_rs::rand::SystemRandom::new(), &req.message.0)
                            .map_err(failed)?,
                    };
                    s.as_ref().to_vec()
                }
                Kind::Ed25519 => Ed25519KeyPair::from_pkcs8(private)
                    .map_err(|_| KmsError::internal("stored key"))?
                    .sign(&req.message.0)
                    .as_ref()
                    .to_vec(),
                Kind::Ed25519ph => lc_sign::ed25519ph_sign(private, &req.message.0)
                    .ok_or_else(|| KmsError::internal("signing failed"))?,
                Kind::MlDsa { .. } if matches!(input, Input::Mu) => {
                    lc_sign::ml_dsa_sign_mu(private, &req.message.0)
                        .ok_or_else(|| KmsError::internal("signing failed"))?
                }
                Kind::MlDsa { sign, .. } => {
                    let kp = PqdsaKeyPair::from_pkcs8(sign, private)
                        .map_err(|_| KmsError::internal("stored key"))?;
                    let mut out = vec![0u8; sign.signature_len()];
                    let n = kp.sign(&req.message.0, &mut out).map_err(failed)?;
                    out.truncate(n);
                    out
                }
            };
            Ok(SignResponse {
                key_id: self.arn(k),
                signature,
                signing_algorithm: alg.name.into(),
            })
        })
    }

    pub(super) fn do_verify(&self, req: VerifyRequest) -> KmsResult<VerifyResponse> {
        self.run(Op::Verify.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::Verify.action(), None, info)?;
            self.ready_for(k, Op::Verify)?;
            let (alg, input, private) = self.signing(
                k,
                &req.signing_algorithm,
                &req.message.0,
                req.message_type.as_deref(),
            )?;
            dry_run(req.dry_run)?;
            let digest = match &input {
                Input::Digest(d) => Some(d),
                _ => None,
            };
            let ok = if let Kind::Ed25519 | Kind::Ed25519ph = alg.kind {
                let kp = Ed25519KeyPair::from_pkcs8(private)
                    .map_err(|_| KmsError::internal("stored key"))?;
                let public = kp.public_key().as_ref();
                if matches!(alg.kind, Kind::Ed25519ph) {
                    lc_sign::ed25519ph_verify(public, &req.message.0, &req.signature)
                        .then_some(())
                        .ok_or(aws_lc_rs::error::Unspecified)
                } else {
                    sig::UnparsedPublicKey::new(&sig::ED25519, public)
                        .verify(&req.message.0, &req.signature)
                }
            } else if matches!(input, Input::Mu) {
                let spki = public_key_der(&k.spec, private)?;
                lc_sign::ml_dsa_verify_mu(&spki, &req.message.0, &req.signature)
                    .then_some(())
                    .ok_or(aws_lc_rs::error::Unspecified)
            } else {
                let spki = public_key_der(&k.spec, private)?;
                let verify: &'static dyn sig::VerificationAlgorithm = match &alg.kind {
                    Kind::Rsa { verify, .. } => *verify,
                    Kind::Ecdsa { verify, .. } => *verify,
                    Kind::MlDsa { verify, .. } => *verify,
                    Kind::Ed25519 | Kind::Ed25519ph => unreachable!("verified above"),
                };
                let key = ParsedPublicKey::new(verify, &spki)
                    .map_err(|_| KmsError::internal("stored public key does not parse"))?;
                match digest {
                    Some(d) => key.verify_digest_sig(d, &req.signature),
                    None => key.verify_sig(&req.message.0, &req.signature),
                }
            };
            if ok.is_err() {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidSignatureException,
                    "The signature does not verify under this key, algorithm and message",
                ));
            }
            Ok(VerifyResponse {
                key_id: self.arn(k),
                signature_valid: true,
                signing_algorithm: alg.name.into(),
            })
        })
    }

    pub(super) fn do_get_public_key(
        &self,
        req: GetPublicKeyRequest,
    ) -> KmsResult<GetPublicKeyResponse> {
        self.run(Op::GetPublicKey.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::GetPublicKey.action(), None, info)?;
            if !is_signing_spec(&k.spec) && !is_kem_spec(&k.spec) {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!("{} is a {} key, not an asymmetric key", self.arn(k), k.spec),
                ));
            }
            self.usable(k)?;
            Ok(GetPublicKeyResponse {
                key_id: self.arn(k),
                public_key: match is_kem_spec(&k.spec) {
                    true => {
                        kem_public_key_der(&k.spec, &k.versions[k.current as usize].material.0)?
                    }
                    false => public_key_der(&k.spec, &k.versions[k.current as usize].material.0)?,
                },
                customer_master_key_spec: k.spec.clone(),
                key_spec: k.spec.clone(),
                key_usage: k.usage.clone(),
                encryption_algorithms: encryption_algorithms(&k.spec, &k.usage),
                signing_algorithms: signing_algorithms(&k.spec, &k.usage),
                key_agreement_algorithms: key_agreement_algorithms(&k.usage),
                encapsulation_algorithms: encapsulation_algorithms(&k.usage),
            })
        })
    }
}

impl LocalKms {
    /// GenerateDataKeyPair(WithoutPlaintext): a new pair of `KeyPairSpec` (any asymmetric
    /// spec), the private key (PKCS#8 DER) sealed under the symmetric key `KeyId` with the
    /// request's encryption context, and the public key (DER SPKI).
    pub(super) fn do_generate_data_key_pair(
        &self,
        op: Op,
        req: GenerateDataKeyPairRequest,
    ) -> KmsResult<GenerateDataKeyPairResponse> {
        self.run(op.name(), |info| {
            info.context = req.encryption_context.clone();
            self.check_grant_tokens(&req.grant_tokens)?;
            if req.recipient.is_some() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "Recipient (Nitro Enclaves attestation) is not supported",
                ));
            }
            if !is_signing_spec(&req.key_pair_spec) || is_ml_dsa(&req.key_pair_spec) {
                return Err(KmsError::validation(format!(
                    "KeyPairSpec {} is not valid (RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1, ECC_NIST_EDWARDS25519)",
                    req.key_pair_spec
                )));
            }
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                op.action(),
                req.encryption_context.as_ref(),
                info,
            )?;
            self.ready_for(k, op)?;
            self.check_symmetric(k, op.name())?;
            dry_run(req.dry_run)?;
            let private = generate_private_key(&req.key_pair_spec);
            Ok(GenerateDataKeyPairResponse {
                private_key_ciphertext_blob: self.seal_blob(
                    k,
                    &private.0,
                    &req.encryption_context,
                    Op::GenerateDataKeyPair.name(),
                )?,
                public_key: public_key_der(&req.key_pair_spec, &private.0)?,
                private_key_plaintext: private,
                key_id: self.arn(k),
                key_pair_spec: req.key_pair_spec.clone(),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }
}
