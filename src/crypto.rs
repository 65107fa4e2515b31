//! Cryptographic primitives: the AEAD backend trait (aws-lc-rs or RustCrypto's aes-gcm),
//! data keys that zeroize themselves, nonces, key derivation and the canonical
//! encoding of an encryption context.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// AES-256 key length.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// The authentication tag did not verify (or the input was malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

impl fmt::Display for AeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}
impl std::error::Error for AeadError {}

/// AES-256-GCM with a detached tag, in place. Both backends produce identical bytes.
pub trait Aead: Send + Sync {
    /// Encrypts `buf` in place and returns the tag.
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// `in_out` is ciphertext ‖ tag. Verifies and decrypts in place; on success the
    /// plaintext is `in_out[..len - TAG_LEN]`. On error the buffer holds garbage.
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8])
        -> Result<(), AeadError>;
}

/// Which implementation of AES-256-GCM to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// aws-lc-rs: assembly AES-GCM (VAES/AVX-512 here), ~2.7x the pure-Rust backend.
    #[default]
    AwsLc,
    /// RustCrypto aes-gcm: pure Rust, kept as a cross-check and fallback.
    RustCrypto,
}

impl Backend {
    /// Reads `KMSFS_AEAD` (`aws-lc` or `rustcrypto`); default aws-lc.
    pub fn from_env() -> Backend {
        match std::env::var("KMSFS_AEAD").as_deref() {
            Ok("rustcrypto") | Ok("aes-gcm") => Backend::RustCrypto,
            _ => Backend::AwsLc,
        }
    }

    /// An AEAD of this backend under `key`.
    pub fn key(self, key: &[u8; KEY_LEN]) -> Box<dyn Aead> {
        match self {
            Backend::AwsLc => Box::new(AwsLcAead::new(key)),
            Backend::RustCrypto => Box::new(RustCryptoAead::new(key)),
        }
    }
}

struct AwsLcAead(aws_lc_rs::aead::LessSafeKey);

impl AwsLcAead {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
            .expect("32-byte key is valid for AES-256-GCM");
        AwsLcAead(aws_lc_rs::aead::LessSafeKey::new(unbound))
    }
}

impl Aead for AwsLcAead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aws_lc_rs::aead::{Aad, Nonce};
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .expect("AES-GCM seal cannot fail for inputs below 64 GiB");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), AeadError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        if in_out.len() < TAG_LEN {
            return Err(AeadError);
        }
        self.0
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
            .map(|_| ())
            .map_err(|_| AeadError)
    }
}

struct RustCryptoAead(aes_gcm::Aes256Gcm);

impl RustCryptoAead {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        use aes_gcm::KeyInit;
        RustCryptoAead(aes_gcm::Aes256Gcm::new(key.into()))
    }
}

impl Aead for RustCryptoAead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aes_gcm::aead::AeadInOut;
        let tag = self
            .0
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .expect("AES-GCM seal cannot fail for inputs below 64 GiB");
        tag.into()
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), AeadError> {
        use aes_gcm::aead::AeadInOut;
        if in_out.len() < TAG_LEN {
            return Err(AeadError);
        }
        let (buf, tag) = in_out.split_at_mut(in_out.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| AeadError)?;
        self.0
            .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
            .map_err(|_| AeadError)
    }
}

/// 32 bytes of secret key material; wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey(pub [u8; KEY_LEN]);

impl SecretKey {
    /// A fresh random key.
    pub fn random() -> SecretKey {
        let mut k = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut k);
        SecretKey(k)
    }

    /// A key from exactly `KEY_LEN` bytes.
    pub fn from_slice(b: &[u8]) -> Option<SecretKey> {
        let arr: [u8; KEY_LEN] = b.try_into().ok()?;
        Some(SecretKey(arr))
    }

    /// The key's bytes (never log them).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// HKDF-SHA256(ikm = self, salt, info) -> 32 bytes.
    pub fn derive(&self, salt: &[u8], info: &[u8]) -> SecretKey {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), &self.0);
        let mut out = [0u8; KEY_LEN];
        hk.expand(info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        SecretKey(out)
    }

    /// HMAC-SHA256 under this key over `parts` concatenated.
    pub fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of an HMAC tag.
    pub fn verify_hmac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Fresh random 96-bit nonce from the thread-local ChaCha CSPRNG (seeded from the OS,
/// reseeded periodically): no syscall per chunk.
#[inline]
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

/// `N` bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut n = [0u8; N];
    rand::rng().fill_bytes(&mut n);
    n
}

/// Canonical, unambiguous encoding of an encryption context for use as AAD:
/// u32 count, then for each pair in byte order of the key: u32 len ‖ key ‖ u32 len ‖ value.
/// (moto concatenates keys and values without separators, so {"ab":"c"} == {"a":"bc"}.)
pub fn encode_context(ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + ctx.len() * 48);
    out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
    for (k, v) in ctx {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_agree_and_open_each_other() {
        let key = SecretKey::random();
        let a = Backend::AwsLc.key(key.as_bytes());
        let b = Backend::RustCrypto.key(key.as_bytes());
        for len in [0usize, 1, 15, 16, 17, 4096, 65536 + 3] {
            let nonce = random_nonce();
            let aad = b"some aad";
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut ca = plain.clone();
            let ta = a.seal(&nonce, aad, &mut ca);
            let mut cb = plain.clone();
            let tb = b.seal(&nonce, aad, &mut cb);
            assert_eq!(ca, cb, "ciphertexts differ at len {len}");
            assert_eq!(ta, tb, "tags differ at len {len}");
            // (A 1-byte ciphertext equals its plaintext once in 256 runs: only lengths
            // where that cannot happen by chance are compared.)
            if len >= 16 {
                assert_ne!(ca, plain);
            }
            // each opens the other's
            let sealed = [ca.as_slice(), ta.as_slice()].concat();
            let mut x = sealed.clone();
            b.open(&nonce, aad, &mut x).unwrap();
            assert_eq!(&x[..len], &plain[..]);
            let mut y = [cb.as_slice(), tb.as_slice()].concat();
            a.open(&nonce, aad, &mut y).unwrap();
            assert_eq!(&y[..len], &plain[..]);
            // wrong aad or a flipped bit fails on both
            for k in [&a, &b] {
                let mut z = sealed.clone();
                assert!(k.open(&nonce, b"other", &mut z).is_err());
                let mut z = sealed.clone();
                z[0] ^= 1;
                assert!(k.open(&nonce, aad, &mut z).is_err());
            }
        }
    }

    #[test]
    fn known_answer_aes256gcm() {
        // NIST GCM test vector (Test Case 16 of the original GCM spec, 256-bit key), tag + ct.
        let key = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .unwrap();
        let iv: [u8; 12] = hex::decode("cafebabefacedbaddecaf888")
            .unwrap()
            .try_into()
            .unwrap();
        let pt = hex::decode("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39").unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
        let tag = "76fc6ece0f4e1768cddf8853bb2d551b";
        for backend in [Backend::AwsLc, Backend::RustCrypto] {
            let k = backend.key(&key.clone().try_into().unwrap());
            let mut buf = pt.clone();
            let t = k.seal(&iv, &aad, &mut buf);
            assert_eq!(hex::encode(&buf), ct, "{backend:?}");
            assert_eq!(hex::encode(t), tag, "{backend:?}");
        }
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let mut a = BTreeMap::new();
        a.insert("ab".to_string(), "c".to_string());
        let mut b = BTreeMap::new();
        b.insert("a".to_string(), "bc".to_string());
        assert_ne!(encode_context(&a), encode_context(&b));
        assert_eq!(encode_context(&BTreeMap::new()), vec![0, 0, 0, 0]);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let k = SecretKey([0x41; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
    }
}
