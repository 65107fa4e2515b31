//! The PKCS#11 seal: the root key encrypted (AES-256-GCM, inside the token) under a
//! non-extractable, sensitive AES key of a token — an HSM (YubiHSM 2, Nitrokey HSM,
//! CloudHSM), a TPM 2.0 through tpm2-pkcs11, or SoftHSM2. The key never leaves the token.
//!
//! Named by an RFC 7512 URI: `pkcs11:token=LABEL;object=LABEL?module-path=/path/to/module.so`.
//! The PIN comes from `KMSFS_PKCS11_PIN_FILE` or the systemd credential
//! `kmsfs-pkcs11-pin`, never from the command line.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;

use crate::crypto::SecretKey;
use crate::error::{err, Result};
pub use crate::hsm::Uri;
use crate::hsm::{find_key, session};

const AAD: &[u8] = b"kmsfs root seal pkcs11 v1";

/// Encrypts `root` in the token of `uri` under its key object, made there (AES-256,
/// sensitive, never extractable) if missing; answers (IV, ciphertext ‖ tag).
pub fn seal(uri: &Uri, root: &SecretKey) -> Result<(Vec<u8>, Vec<u8>)> {
    let (_p, s) = session(uri)?;
    let key = match find_key(&s, uri)? {
        Some(k) => k,
        None => crate::hsm::generate_aes_key(&s, &uri.object, true, true).map_err(|e| {
            err!(
                "token {:?}: cannot make the key {:?}: {e}",
                uri.token,
                uri.object
            )
        })?,
    };
    let mut iv: [u8; 12] = crate::crypto::random_bytes();
    let iv_out = iv;
    let params =
        GcmParams::new(&mut iv, AAD, 128.into()).map_err(|e| err!("GCM parameters: {e}"))?;
    let ct = s
        .encrypt(&Mechanism::AesGcm(params), key, root.as_bytes())
        .map_err(|e| {
            err!(
                "token {:?}: cannot encrypt with {:?}: {e}",
                uri.token,
                uri.object
            )
        })?;
    Ok((iv_out.to_vec(), ct))
}

/// Decrypts the root key in the token of `uri`.
pub fn unseal(uri: &Uri, iv: &[u8], ct: &[u8]) -> Result<SecretKey> {
    let (_p, s) = session(uri)?;
    let key = find_key(&s, uri)?.ok_or_else(|| {
        err!(
            "no key object {:?} in the PKCS#11 token {:?} (deleted?): the keystore cannot be unsealed",
            uri.object,
            uri.token
        )
    })?;
    let mut iv = iv.to_vec();
    let params =
        GcmParams::new(&mut iv, AAD, 128.into()).map_err(|e| err!("GCM parameters: {e}"))?;
    let pt = zeroize::Zeroizing::new(s.decrypt(&Mechanism::AesGcm(params), key, ct).map_err(
        |e| {
            err!(
                "token {:?}: the sealed root key does not open under {:?}: {e}",
                uri.token,
                uri.object
            )
        },
    )?);
    SecretKey::from_slice(&pt).ok_or_else(|| err!("token {:?}: not a 32-byte key", uri.token))
}

/// What `kmsfs kms seal show` says of the key object of `uri` (its size and whether the
/// token lets it out: it must be sensitive and never extractable).
pub fn describe_key(uri: &Uri) -> Result<String> {
    use cryptoki::object::AttributeType;
    let (_p, s) = session(uri)?;
    let key = find_key(&s, uri)?.ok_or_else(|| {
        err!(
            "no key object {:?} in the PKCS#11 token {:?}",
            uri.object,
            uri.token
        )
    })?;
    let attrs = s
        .get_attributes(
            key,
            &[
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(|e| err!("token {:?}: {e}", uri.token))?;
    let mut out = vec![];
    for a in attrs {
        match a {
            Attribute::ValueLen(n) => out.push(format!("AES-{}", u64::from(n) * 8)),
            Attribute::Sensitive(b) => {
                out.push(if b { "sensitive" } else { "NOT sensitive" }.into())
            }
            Attribute::Extractable(b) => {
                out.push(if b { "EXTRACTABLE" } else { "not extractable" }.into())
            }
            Attribute::NeverExtractable(b) if b => out.push("never extractable".into()),
            _ => {}
        }
    }
    Ok(format!(
        "key object {:?} in token {:?}: {}",
        uri.object,
        uri.token,
        out.join(", ")
    ))
}
