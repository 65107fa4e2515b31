//! PKCS#11 tokens (HSMs, a TPM through tpm2-pkcs11, SoftHSM2): naming a token and a key
//! object (RFC 7512 URIs), logging in with a PIN that never comes from the command line,
//! and finding AES key objects. Used by the PKCS#11 seal (`seal::pkcs11`) and the XKS
//! proxy (`xks`); each keeps its own cryptography here in the token.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

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
        Self::parse_with(s, true)
    }

    /// Parses a URI that names a token only (`pkcs11:token=T?module-path=M`); `object` is
    /// then empty.
    pub fn parse_token(s: &str) -> Result<Uri> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &str, need_object: bool) -> Result<Uri> {
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
            object: match object {
                Some(o) => o,
                None if !need_object => String::new(),
                None => fail!("{s}: no object= in the URI"),
            },
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
pub(crate) fn pin() -> Result<AuthPin> {
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
pub(crate) fn session(uri: &Uri) -> Result<(Pkcs11, Session)> {
    let (p, slot) = open(uri)?;
    let s = login(&p, slot, &uri.token)?;
    Ok((p, s))
}

/// The module of `uri`, initialised, and the slot holding its token.
pub(crate) fn open(uri: &Uri) -> Result<(Pkcs11, Slot)> {
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
    Ok((p, slot))
}

/// A new read-write session with the token in `slot`, logged in as its user (a session
/// of an application already logged in shares that login).
pub(crate) fn login(p: &Pkcs11, slot: Slot, token: &str) -> Result<Session> {
    let s = p
        .open_rw_session(slot)
        .map_err(|e| err!("token {token:?}: cannot open a session: {e}"))?;
    match s.login(UserType::User, Some(&pin()?)) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            fail!("wrong PIN for the PKCS#11 token {token:?}")
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => fail!("token {token:?}: login failed: {e}"),
    }
    Ok(s)
}

pub(crate) fn find_key(s: &Session, uri: &Uri) -> Result<Option<ObjectHandle>> {
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

/// Makes an AES-256 key object labelled `label` in the session's token: a token object,
/// private, sensitive and never extractable, allowed to encrypt and/or decrypt. The one
/// template of the seal's key and the XKS proxy's keys.
pub(crate) fn generate_aes_key(
    s: &Session,
    label: &str,
    encrypt: bool,
    decrypt: bool,
) -> cryptoki::error::Result<ObjectHandle> {
    use cryptoki::mechanism::Mechanism;
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(encrypt),
            Attribute::Decrypt(decrypt),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
}
