//! What AWS KMS offers and aws-lc-rs does not expose — Ed25519ph (HashEdDSA, RFC 8032
//! §5.1), ML-DSA from an external μ (FIPS 204 §6.2, "ExternalMu") and an ML-KEM key pair
//! from its PKCS#8 seed (import) — through aws-lc's C API (`aws-lc-sys`, the library
//! aws-lc-rs wraps). Every return code is checked; a private key lives only for the
//! call, in memory wiped after it.
#![allow(unsafe_code)]

use std::ptr;

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

/// An `EVP_PKEY` freed on drop.
struct Pkey(*mut ffi::EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: a key from EVP_parse_*_key, freed once.
        unsafe { ffi::EVP_PKEY_free(self.0) }
    }
}

/// An `EVP_PKEY_CTX` freed on drop.
struct Ctx(*mut ffi::EVP_PKEY_CTX);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: a context from EVP_PKEY_CTX_new, freed once.
        unsafe { ffi::EVP_PKEY_CTX_free(self.0) }
    }
}

/// A PKCS#8 private key (`private`) or DER SubjectPublicKeyInfo.
fn parse(der: &[u8], private: bool) -> Option<Pkey> {
    let mut cbs = std::mem::MaybeUninit::<ffi::CBS>::uninit();
    // SAFETY: CBS_init fills the CBS, which borrows `der` for the parse below only.
    let key = unsafe {
        ffi::CBS_init(cbs.as_mut_ptr(), der.as_ptr(), der.len());
        if private {
            ffi::EVP_parse_private_key(cbs.as_mut_ptr())
        } else {
            ffi::EVP_parse_public_key(cbs.as_mut_ptr())
        }
    };
    (!key.is_null()).then_some(Pkey(key))
}

fn context(key: &Pkey) -> Option<Ctx> {
    // SAFETY: a live key; the context takes its own reference.
    let ctx = unsafe { ffi::EVP_PKEY_CTX_new(key.0, ptr::null_mut()) };
    (!ctx.is_null()).then_some(Ctx(ctx))
}

/// The Ed25519 key pair (seed ‖ public key, 64 bytes) of a PKCS#8 Ed25519 private key.
fn ed25519_pair(pkcs8: &[u8]) -> Option<Zeroizing<[u8; 64]>> {
    let key = parse(pkcs8, true)?;
    let mut pair = Zeroizing::new([0u8; 64]);
    let (mut n, mut m) = (32usize, 32usize);
    // SAFETY: 32-byte buffers for Ed25519's 32-byte seed and public key.
    let ok = unsafe {
        ffi::EVP_PKEY_get_raw_private_key(key.0, pair.as_mut_ptr(), &mut n) == 1
            && ffi::EVP_PKEY_get_raw_public_key(key.0, pair[32..].as_mut_ptr(), &mut m) == 1
    };
    (ok && n == 32 && m == 32).then_some(pair)
}

/// The Ed25519ph signature of `message` (empty context) by a PKCS#8 Ed25519 key.
pub(super) fn ed25519ph_sign(pkcs8: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    let pair = ed25519_pair(pkcs8)?;
    let mut sig = vec![0u8; 64];
    // SAFETY: a 64-byte signature buffer, the 64-byte key pair, no context.
    let ok = unsafe {
        ffi::ED25519ph_sign(
            sig.as_mut_ptr(),
            message.as_ptr(),
            message.len(),
            pair.as_ptr(),
            ptr::null(),
            0,
        )
    };
    (ok == 1).then_some(sig)
}

/// Does `sig` verify as Ed25519ph (empty context) of `message` under the 32-byte `public`?
pub(super) fn ed25519ph_verify(public: &[u8], message: &[u8], sig: &[u8]) -> bool {
    if public.len() != 32 || sig.len() != 64 {
        return false;
    }
    // SAFETY: lengths checked above.
    unsafe {
        ffi::ED25519ph_verify(
            message.as_ptr(),
            message.len(),
            sig.as_ptr(),
            public.as_ptr(),
            ptr::null(),
            0,
        ) == 1
    }
}

/// The ML-DSA signature of the 64-byte representative μ by a PKCS#8 ML-DSA key.
pub(super) fn ml_dsa_sign_mu(pkcs8: &[u8], mu: &[u8]) -> Option<Vec<u8>> {
    if mu.len() != 64 {
        return None;
    }
    let key = parse(pkcs8, true)?;
    let ctx = context(&key)?;
    let mut len = 0usize;
    // SAFETY: a live context; the first EVP_PKEY_sign asks the length only.
    unsafe {
        if ffi::EVP_PKEY_sign_init(ctx.0) != 1
            || ffi::EVP_PKEY_sign(ctx.0, ptr::null_mut(), &mut len, mu.as_ptr(), mu.len()) != 1
        {
            return None;
        }
    }
    let mut sig = vec![0u8; len];
    // SAFETY: `sig` holds `len` bytes, as EVP_PKEY_sign asked.
    let ok =
        unsafe { ffi::EVP_PKEY_sign(ctx.0, sig.as_mut_ptr(), &mut len, mu.as_ptr(), mu.len()) };
    if ok != 1 {
        return None;
    }
    sig.truncate(len);
    Some(sig)
}

/// Does `sig` verify as ML-DSA of the 64-byte μ under the DER SubjectPublicKeyInfo `spki`?
pub(super) fn ml_dsa_verify_mu(spki: &[u8], mu: &[u8], sig: &[u8]) -> bool {
    if mu.len() != 64 {
        return false;
    }
    let Some(key) = parse(spki, false) else {
        return false;
    };
    let Some(ctx) = context(&key) else {
        return false;
    };
    // SAFETY: a live context, the slices' own lengths.
    unsafe {
        ffi::EVP_PKEY_verify_init(ctx.0) == 1
            && ffi::EVP_PKEY_verify(ctx.0, sig.as_ptr(), sig.len(), mu.as_ptr(), mu.len()) == 1
    }
}

/// The ML-KEM key pair (expanded decapsulation key, encapsulation key) of a PKCS#8
/// ML-KEM private key of sizes (`dk`, `ek`), in any form aws-lc parses (RFC 9935's seed
/// or expandedKey).
pub(super) fn ml_kem_pair(
    pkcs8: &[u8],
    dk: usize,
    ek: usize,
) -> Option<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let key = parse(pkcs8, true)?;
    let mut private = Zeroizing::new(vec![0u8; dk]);
    let mut public = vec![0u8; ek];
    let (mut n, mut m) = (dk, ek);
    // SAFETY: buffers of the parameter set's sizes; aws-lc refuses a smaller one.
    let ok = unsafe {
        ffi::EVP_PKEY_get_raw_private_key(key.0, private.as_mut_ptr(), &mut n) == 1
            && ffi::EVP_PKEY_get_raw_public_key(key.0, public.as_mut_ptr(), &mut m) == 1
    };
    (ok && n == dk && m == ek).then_some((private, public))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, PqdsaKeyPair, ML_DSA_65_SIGNING};

    /// RFC 8032 §7.3, test "abc": Ed25519ph is deterministic, so the signature is fixed.
    #[test]
    fn ed25519ph_matches_rfc_8032() {
        let seed = hex::decode("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
            .unwrap();
        let kp = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let pkcs8 = kp.to_pkcs8().unwrap();
        assert_eq!(
            hex::encode(kp.public_key().as_ref()),
            "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf"
        );
        let sig = ed25519ph_sign(pkcs8.as_ref(), b"abc").unwrap();
        assert_eq!(
            hex::encode(&sig),
            "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae4131f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
        );
        assert!(ed25519ph_verify(kp.public_key().as_ref(), b"abc", &sig));
        assert!(!ed25519ph_verify(kp.public_key().as_ref(), b"abd", &sig));
    }

    /// A signature of μ verifies as the ordinary (pure) ML-DSA signature of the message μ
    /// was computed from (μ as FIPS 204 §6.2 computes it: `tests_pq::mu_of`).
    #[test]
    fn ml_dsa_from_mu_is_ml_dsa_of_the_message() {
        let kp = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING).unwrap();
        let pkcs8 = kp.to_pkcs8v1().unwrap();
        let spki = kp.public_key().as_der().unwrap();
        let raw_pk = kp.public_key().as_ref().to_vec();
        let msg = b"the message";
        let mu = super::super::tests_pq::mu_of(spki.as_ref(), msg);
        let sig = ml_dsa_sign_mu(pkcs8.as_ref(), &mu).unwrap();
        assert!(ml_dsa_verify_mu(spki.as_ref(), &mu, &sig));
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ML_DSA_65, &raw_pk)
            .verify(msg, &sig)
            .expect("a signature of mu is the message's ML-DSA signature");
        let mut other = mu;
        other[0] ^= 1;
        assert!(!ml_dsa_verify_mu(spki.as_ref(), &other, &sig));
        assert!(ml_dsa_sign_mu(pkcs8.as_ref(), &mu[..63]).is_none());
    }
}
