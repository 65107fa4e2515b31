//! The PKCS#11 seal: the root key encrypted (AES-256-GCM, inside the token) under a
//! non-extractable, sensitive AES key of a token — an HSM (YubiHSM 2, Nitrokey HSM,
//! CloudHSM), a TPM 2.0 through tpm2-pkcs11, or SoftHSM2. The key never leaves the token.
//!
//! Named by an RFC 7512 URI: `pkcs11:token=LABEL;object=LABEL?module-path=/path/to/module.so`.
//! The PIN comes from `KMSFS_PKCS11_PIN_FILE` or the systemd credential
//! `kmsfs-pkcs11-pin`, never from the command line.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::crypto::SecretKey;
use crate::error::{err, fail, Result};

/// A token and a key object in it, and the module that reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The token's label.
    pub token: String,
    /// The key object's label.
    pub object: String,
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
}

impl Uri {
    /// Parses `pkcs11:token=T;object=O?module-path=M` (percent-escapes undone).
    pub fn parse(s: &str) -> Result<Uri> {
        let body = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| err!("{s:?} is not a pkcs11: URI"))?;
        let (path, query) = body.split_once('?').unwrap_or((body, ""));
        let mut token = None;
        let mut object = None;
        let mut module = None;
        for (k, v) in path
            .split(';')
            .chain(query.split('&'))
            .filter(|a| !a.is_empty())
            .filter_map(|a| a.split_once('='))
        {
            let v = unescape(v)?;
            match k {
                "token" => token = Some(v),
                "object" => object = Some(v),
                "module-path" => module = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        let module = module
            .or_else(|| std::env::var_os("KMSFS_PKCS11_MODULE").map(PathBuf::from))
            .ok_or_else(|| {
                err!("{s}: no module-path (or KMSFS_PKCS11_MODULE) names the PKCS#11 module")
            })?;
        Ok(Uri {
            token: token.ok_or_else(|| err!("{s}: no token= in the URI"))?,
            object: object.ok_or_else(|| err!("{s}: no object= in the URI"))?,
            module,
        })
    }
}

fn unescape(v: &str) -> Result<String> {
    let b = v.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3).unwrap_or_default())
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err!("bad %-escape in {v:?}"))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err!("{v:?} is not UTF-8"))
}

/// The token's user PIN: `KMSFS_PKCS11_PIN_FILE`, else the systemd credential
/// `$CREDENTIALS_DIRECTORY/kmsfs-pkcs11-pin` (first line).
fn pin() -> Result<AuthPin> {
    let p = std::env::var_os("KMSFS_PKCS11_PIN_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let d = std::env::var_os("CREDENTIALS_DIRECTORY")?;
            Some(PathBuf::from(d).join("kmsfs-pkcs11-pin")).filter(|p| p.exists())
        })
        .ok_or_else(|| err!("the token's PIN is needed: set KMSFS_PKCS11_PIN_FILE=FILE (or a systemd credential kmsfs-pkcs11-pin)"))?;
    let s = zeroize::Zeroizing::new(
        std::fs::read_to_string(&p)
            .map_err(|e| err!("cannot read the PIN file {}: {e}", p.display()))?,
    );
    let line = s.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        fail!("the PIN file {} is empty", p.display());
    }
    Ok(AuthPin::new(line.into()))
}

/// A logged-in session with the token of `uri`.
fn session(uri: &Uri) -> Result<(Pkcs11, Session)> {
    let p = Pkcs11::new(&uri.module).map_err(|e| {
        err!(
            "cannot load the PKCS#11 module {}: {e}",
            uri.module.display()
        )
    })?;
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => fail!("PKCS#11 module {}: {e}", uri.module.display()),
    }
    let slot = p
        .get_slots_with_token()
        .map_err(|e| err!("PKCS#11 module {}: {e}", uri.module.display()))?
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == uri.token)
        })
        .ok_or_else(|| {
            err!(
                "no PKCS#11 token labelled {:?} (is the token present?)",
                uri.token
            )
        })?;
    let s = p
        .open_rw_session(slot)
        .map_err(|e| err!("token {:?}: cannot open a session: {e}", uri.token))?;
    match s.login(UserType::User, Some(&pin()?)) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            fail!("wrong PIN for the PKCS#11 token {:?}", uri.token)
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => fail!("token {:?}: login failed: {e}", uri.token),
    }
    Ok((p, s))
}

fn find_key(s: &Session, uri: &Uri) -> Result<Option<ObjectHandle>> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(uri.object.as_bytes().to_vec()),
        ])
        .map_err(|e| err!("token {:?}: {e}", uri.token))?;
    match found.as_slice() {
        [] => Ok(None),
        [k] => Ok(Some(*k)),
        _ => fail!(
            "token {:?} holds several AES keys labelled {:?}",
            uri.token,
            uri.object
        ),
    }
}

const AAD: &[u8] = b"kmsfs root seal pkcs11 v1";

/// Encrypts `root` in the token of `uri` under its key object, made there (AES-256,
/// sensitive, never extractable) if missing; answers (IV, ciphertext ‖ tag).
pub fn seal(uri: &Uri, root: &SecretKey) -> Result<(Vec<u8>, Vec<u8>)> {
    let (_p, s) = session(uri)?;
    let key = match find_key(&s, uri)? {
        Some(k) => k,
        None => s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(uri.object.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| {
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
