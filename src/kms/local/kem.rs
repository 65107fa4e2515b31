//! ML-KEM keys (FIPS 203; ML_KEM_512/768/1024, KeyUsage ENCAPSULATE_DECAPSULATE) with
//! aws-lc-rs: Encapsulate (a fresh 32-byte shared secret and its ciphertext under the
//! key's public key), Decapsulate (implicit rejection: any ciphertext of the right length
//! gives 32 bytes, a wrong one pseudo-random bytes, as AWS documents; only a wrong length
//! is InvalidCiphertextException) and GetPublicKey (DER SubjectPublicKeyInfo).
//!
//! The material is the decapsulation key followed by the encapsulation key (aws-lc-rs
//! cannot derive the second from the first once stored), sealed in the store like every
//! private key.

use aws_lc_rs::kem::{self, DecapsulationKey, EncapsulationKey};

use super::*;

pub(super) const ENCAPSULATE_DECAPSULATE: &str = "ENCAPSULATE_DECAPSULATE";
const ML_KEM: &str = "ML_KEM";

/// An ML-KEM parameter set: its aws-lc-rs algorithm, the last arc of its OID (under
/// 2.16.840.1.101.3.4.4), and its sizes (FIPS 203, table 3).
struct KemSpec {
    alg: &'static kem::Algorithm<kem::AlgorithmId>,
    arc: u8,
    dk: usize,
    ek: usize,
    ct: usize,
}

fn kem_spec(spec: &str) -> Option<KemSpec> {
    let (alg, arc, dk, ek, ct) = match spec {
        "ML_KEM_512" => (&kem::ML_KEM_512, 1, 1632, 800, 768),
        "ML_KEM_768" => (&kem::ML_KEM_768, 2, 2400, 1184, 1088),
        "ML_KEM_1024" => (&kem::ML_KEM_1024, 3, 3168, 1568, 1568),
        _ => return None,
    };
    Some(KemSpec {
        alg,
        arc,
        dk,
        ek,
        ct,
    })
}

/// The EncapsulationAlgorithms of a key's metadata.
pub(super) fn encapsulation_algorithms(usage: &str) -> Vec<String> {
    match usage {
        ENCAPSULATE_DECAPSULATE => vec![ML_KEM.into()],
        _ => vec![],
    }
}

/// Is `spec` an ML-KEM spec?
pub(super) fn is_kem_spec(spec: &str) -> bool {
    kem_spec(spec).is_some()
}

/// New material of an ML-KEM spec: decapsulation key ‖ encapsulation key.
pub(super) fn generate_kem_key(spec: &str) -> Secret {
    let p = kem_spec(spec).expect("an ML-KEM spec");
    let dk = DecapsulationKey::generate(p.alg).expect("ML-KEM key generation");
    let mut m = Secret(dk.key_bytes().expect("ML-KEM key bytes").as_ref().to_vec());
    let ek = dk.encapsulation_key().expect("ML-KEM public key");
    m.0.extend_from_slice(ek.key_bytes().expect("ML-KEM public key bytes").as_ref());
    m
}

/// One DER element at the start of `der`: (tag, contents, the rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (first as usize, rest),
        0x81 => (*rest.first()? as usize, &rest[1..]),
        0x82 => (
            (*rest.first()? as usize) << 8 | *rest.get(1)? as usize,
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The material (decapsulation key ‖ encapsulation key) of an imported PKCS#8 ML-KEM
/// private key of `spec`, in any of RFC 9935's three forms: the 64-byte seed, the
/// expanded key, or both (then the expanded key must be the seed's). The pair is checked
/// to work (an encapsulation to it decapsulates to the same secret). None: not a key of
/// this spec.
pub(super) fn kem_material_from_pkcs8(spec: &str, der: &[u8]) -> Option<Secret> {
    let p = kem_spec(spec)?;
    // OneAsymmetricKey: SEQUENCE { version, AlgorithmIdentifier, privateKey OCTET STRING }
    let (0x30, body, []) = der_element(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_element(body)? else {
        return None;
    };
    let (0x30, algid, rest) = der_element(rest)? else {
        return None;
    };
    let want_oid = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, p.arc,
    ];
    if algid != want_oid {
        return None;
    }
    let (0x04, private, _) = der_element(rest)? else {
        return None;
    };
    let (dk, ek) = match der_element(private)? {
        // both: SEQUENCE { seed OCTET STRING, expandedKey OCTET STRING } — aws-lc reads
        // the seed form; the expanded key given beside it must be what the seed makes.
        (0x30, both, []) => {
            let (0x04, seed, rest) = der_element(both)? else {
                return None;
            };
            let (0x04, expanded, []) = der_element(rest)? else {
                return None;
            };
            if seed.len() != 64 {
                return None;
            }
            // The seed form of the same key: SEQUENCE { version 0, algid, OCTET STRING {
            // [0] seed } } (84 bytes, short lengths), wiped after the parse.
            let mut seq = zeroize::Zeroizing::new(Vec::with_capacity(86));
            seq.extend_from_slice(&[0x30, 84, 0x02, 0x01, 0x00, 0x30, algid.len() as u8]);
            seq.extend_from_slice(algid);
            seq.extend_from_slice(&[0x04, 66, 0x80, 64]);
            seq.extend_from_slice(seed);
            let (dk, ek) = super::lc_sign::ml_kem_pair(&seq, p.dk, p.ek)?;
            if dk.as_slice() != expanded {
                return None;
            }
            (dk, ek)
        }
        // expandedKey: FIPS 203's dk is dk_PKE ‖ ek ‖ H(ek) ‖ z, so ek is inside it.
        (0x04, expanded, []) if expanded.len() == p.dk => {
            let at = p.dk - p.ek - 64;
            (
                zeroize::Zeroizing::new(expanded.to_vec()),
                expanded[at..at + p.ek].to_vec(),
            )
        }
        _ => super::lc_sign::ml_kem_pair(der, p.dk, p.ek)?,
    };
    // The pair must be one key: an encapsulation to `ek` decapsulates under `dk`.
    let d = DecapsulationKey::new(p.alg, &dk).ok()?;
    let (ct, ss) = EncapsulationKey::new(p.alg, &ek).ok()?.encapsulate().ok()?;
    if d.decapsulate(ct.as_ref().into()).ok()?.as_ref() != ss.as_ref() {
        return None;
    }
    let mut m = Secret(dk.to_vec());
    m.0.extend_from_slice(&ek);
    Some(m)
}

/// A DER length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
        _ => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
}

/// The DER SubjectPublicKeyInfo of an ML-KEM key: SEQUENCE { SEQUENCE { OID }, BIT STRING }
/// (RFC 9935's encoding, as OpenSSL and Python's `cryptography` write it).
pub(super) fn kem_public_key_der(spec: &str, material: &[u8]) -> KmsResult<Vec<u8>> {
    let p = kem_spec(spec).ok_or_else(|| KmsError::internal("not an ML-KEM key"))?;
    let ek = material
        .get(p.dk..)
        .filter(|e| e.len() == p.ek)
        .ok_or_else(|| KmsError::internal("stored ML-KEM key is damaged"))?;
    let algid = [
        0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, p.arc,
    ];
    let mut bits = vec![0x03];
    der_len(ek.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(ek);
    let mut out = vec![0x30];
    der_len(algid.len() + bits.len(), &mut out);
    out.extend_from_slice(&algid);
    out.extend_from_slice(&bits);
    Ok(out)
}

fn check_algorithm(a: &str) -> KmsResult<()> {
    if a != ML_KEM {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{a}' at 'encapsulationAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [ML_KEM]"
        )));
    }
    Ok(())
}

impl LocalKms {
    /// The key's ML-KEM algorithm and material, once the state and usage allow `op`.
    fn kem_key<'k>(&self, k: &'k KeyRecord, op: Op) -> KmsResult<(KemSpec, &'k [u8])> {
        self.ready_for(k, op)?;
        let p = kem_spec(&k.spec).ok_or_else(|| {
            KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!("{} is a {} key, not an ML-KEM key", self.arn(k), k.spec),
            )
        })?;
        let m = &k.versions[k.current as usize].material.0;
        if m.len() != p.dk + p.ek {
            return Err(KmsError::internal("stored ML-KEM key is damaged"));
        }
        Ok((p, m))
    }

    pub(super) fn do_encapsulate(&self, req: EncapsulateRequest) -> KmsResult<EncapsulateResponse> {
        let op = Op::Encapsulate;
        self.run(op.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, op.action(), None, info)?;
            let (p, material) = self.kem_key(k, op)?;
            check_algorithm(&req.encapsulation_algorithm)?;
            dry_run(req.dry_run)?;
            let ek = EncapsulationKey::new(p.alg, &material[p.dk..])
                .map_err(|_| KmsError::internal("stored ML-KEM key is damaged"))?;
            let (ct, ss) = ek
                .encapsulate()
                .map_err(|_| KmsError::internal("ML-KEM encapsulation failed"))?;
            Ok(EncapsulateResponse {
                key_id: self.arn(k),
                shared_secret: Secret(ss.as_ref().to_vec()),
                shared_secret_ciphertext_blob: ct.as_ref().to_vec(),
                encapsulation_algorithm: ML_KEM.into(),
            })
        })
    }

    pub(super) fn do_decapsulate(&self, req: DecapsulateRequest) -> KmsResult<DecapsulateResponse> {
        let op = Op::Decapsulate;
        self.run(op.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, op.action(), None, info)?;
            let (p, material) = self.kem_key(k, op)?;
            check_algorithm(&req.encapsulation_algorithm)?;
            let want = p.ct;
            if req.shared_secret_ciphertext_blob.len() != want {
                return Err(KmsError::new(
                    ErrorCode::InvalidCiphertextException,
                    format!(
                        "The ciphertext is {} bytes; {} takes {want}",
                        req.shared_secret_ciphertext_blob.len(),
                        k.spec
                    ),
                ));
            }
            dry_run(req.dry_run)?;
            let dk = DecapsulationKey::new(p.alg, &material[..p.dk])
                .map_err(|_| KmsError::internal("stored ML-KEM key is damaged"))?;
            // Implicit rejection (FIPS 203): a ciphertext of the right length always
            // decapsulates, to the shared secret or to pseudo-random bytes.
            let ss = dk
                .decapsulate(req.shared_secret_ciphertext_blob.as_slice().into())
                .map_err(|_| KmsError::internal("ML-KEM decapsulation failed"))?;
            Ok(DecapsulateResponse {
                key_id: self.arn(k),
                shared_secret: Secret(ss.as_ref().to_vec()),
                encapsulation_algorithm: ML_KEM.into(),
            })
        })
    }
}
