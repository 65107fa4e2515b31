//! The external key manager behind the proxy: AES-256 key objects in a PKCS#11 token,
//! used through AES-GCM inside the token. Sessions are pooled (the application logs in
//! once; every session shares that login); a session that failed is dropped, not reused.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::error::{err, Result};
use crate::hsm::Uri;

/// The label of the proxy's own test key, used by the deep health check (never a KMS key).
pub const HEALTH_KEY: &str = "kmsfs-xks-health";

/// What the token says of one key object.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    handle: ObjectHandle,
    /// Key length in bytes.
    pub len: u64,
    /// CKA_ENCRYPT.
    pub encrypt: bool,
    /// CKA_DECRYPT.
    pub decrypt: bool,
}

/// Why a token operation failed, in the terms the XKS API answers with.
#[derive(Debug)]
pub enum TokenError {
    /// No such key object.
    NotFound,
    /// The ciphertext, IV, tag or AAD does not authenticate.
    BadCiphertext,
    /// The token refused or failed (absent, logged out, broken): the message says which.
    Failed(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NotFound => f.write_str("no such key in the token"),
            TokenError::BadCiphertext => f.write_str("the ciphertext does not authenticate"),
            TokenError::Failed(m) => f.write_str(m),
        }
    }
}

/// A token, logged in, with a pool of sessions.
pub struct Token {
    uri: Uri,
    ctx: Pkcs11,
    slot: Slot,
    pool: Mutex<Vec<Session>>,
}

/// (IV, ciphertext, tag) of one AES-GCM encryption.
pub type Sealed = (Vec<u8>, Vec<u8>, Vec<u8>);

impl Token {
    /// Opens the token named by `uri` (`pkcs11:token=T?module-path=M`) and logs in (PIN
    /// from `KMSFS_PKCS11_PIN_FILE` or the credential `kmsfs-pkcs11-pin`).
    pub fn open(uri: &Uri) -> Result<Token> {
        let (ctx, slot) = crate::hsm::open(uri)?;
        let first = crate::hsm::login(&ctx, slot, &uri.token)?;
        Ok(Token {
            uri: uri.clone(),
            ctx,
            slot,
            pool: Mutex::new(vec![first]),
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.uri.token
    }

    /// Runs `f` on a pooled session; the session goes back to the pool only if `f`
    /// succeeded or failed for a reason of the request (not of the session).
    fn with<R>(
        &self,
        f: impl FnOnce(&Session) -> std::result::Result<R, TokenError>,
    ) -> std::result::Result<R, TokenError> {
        let s = match self.pool.lock().pop() {
            Some(s) => s,
            None => crate::hsm::login(&self.ctx, self.slot, &self.uri.token)
                .map_err(|e| TokenError::Failed(format!("{e:#}")))?,
        };
        let r = f(&s);
        if !matches!(r, Err(TokenError::Failed(_))) {
            let mut p = self.pool.lock();
            if p.len() < 16 {
                p.push(s);
            }
        }
        r
    }

    fn find(s: &Session, label: &str) -> std::result::Result<KeyInfo, TokenError> {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(failed)?;
        let handle = match found.as_slice() {
            [] => return Err(TokenError::NotFound),
            [k] => *k,
            _ => {
                return Err(TokenError::Failed(format!(
                    "the token holds several AES keys labelled {label:?}"
                )))
            }
        };
        let mut info = KeyInfo {
            handle,
            len: 0,
            encrypt: false,
            decrypt: false,
        };
        for a in s
            .get_attributes(
                handle,
                &[
                    AttributeType::ValueLen,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(failed)?
        {
            match a {
                Attribute::ValueLen(n) => info.len = n.into(),
                Attribute::Encrypt(b) => info.encrypt = b,
                Attribute::Decrypt(b) => info.decrypt = b,
                _ => {}
            }
        }
        Ok(info)
    }

    /// The key object labelled `label`.
    pub fn key(&self, label: &str) -> std::result::Result<KeyInfo, TokenError> {
        self.with(|s| Self::find(s, label))
    }

    /// AES-GCM encryption of `pt` with `aad` inside the token under `label` (a fresh
    /// 96-bit IV, a 128-bit tag).
    pub fn encrypt(
        &self,
        label: &str,
        pt: &[u8],
        aad: &[u8],
    ) -> std::result::Result<Sealed, TokenError> {
        self.with(|s| {
            let k = Self::find(s, label)?;
            let mut iv: [u8; 12] = crate::crypto::random_bytes();
            let iv_out = iv.to_vec();
            let params = GcmParams::new(&mut iv, aad, 128.into())
                .map_err(|e| TokenError::Failed(format!("GCM parameters: {e}")))?;
            let mut out = s
                .encrypt(&Mechanism::AesGcm(params), k.handle, pt)
                .map_err(failed)?;
            if out.len() != pt.len() + 16 {
                return Err(TokenError::Failed(format!(
                    "the token answered {} bytes for {} bytes of plaintext",
                    out.len(),
                    pt.len()
                )));
            }
            let tag = out.split_off(pt.len());
            Ok((iv_out, out, tag))
        })
    }

    /// AES-GCM decryption inside the token under `label`.
    pub fn decrypt(
        &self,
        label: &str,
        iv: &[u8],
        ct: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, TokenError> {
        self.with(|s| {
            let k = Self::find(s, label)?;
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, aad, 128.into())
                .map_err(|e| TokenError::Failed(format!("GCM parameters: {e}")))?;
            let input = [ct, tag].concat();
            match s.decrypt(&Mechanism::AesGcm(params), k.handle, &input) {
                Ok(pt) => Ok(Zeroizing::new(pt)),
                // A tag that does not verify: CKR_ENCRYPTED_DATA_INVALID by the
                // standard; SoftHSM2 answers CKR_GENERAL_ERROR (and others
                // CKR_FUNCTION_FAILED). The key was just found, so the token works.
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::DataInvalid
                    | RvError::GeneralError
                    | RvError::FunctionFailed,
                    _,
                )) => Err(TokenError::BadCiphertext),
                Err(e) => Err(failed(e)),
            }
        })
    }

    /// A deep check: an encryption and a decryption with the proxy's own test key (made
    /// on first use: AES-256, sensitive, never extractable).
    pub fn check(&self) -> std::result::Result<(), TokenError> {
        if let Err(TokenError::NotFound) = self.key(HEALTH_KEY) {
            self.with(|s| create(s, HEALTH_KEY, true, true).map_err(failed_any))?;
        }
        let probe = b"kmsfs xks health";
        let (iv, ct, tag) = self.encrypt(HEALTH_KEY, probe, b"health")?;
        match self.decrypt(HEALTH_KEY, &iv, &ct, &tag, b"health") {
            Ok(pt) if pt.as_slice() == probe => Ok(()),
            Ok(_) => Err(TokenError::Failed(
                "the token decrypted its probe wrong".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// (manufacturer, model and firmware, serial) of the token, for the health answer.
    pub fn describe(&self) -> (String, String, String) {
        match self.ctx.get_token_info(self.slot) {
            Ok(t) => (
                t.manufacturer_id().trim().to_string(),
                format!(
                    "{} (firmware {}.{})",
                    t.model().trim(),
                    t.firmware_version().major(),
                    t.firmware_version().minor()
                ),
                t.serial_number().trim().to_string(),
            ),
            Err(_) => ("unknown".into(), "unknown".into(), self.uri.token.clone()),
        }
    }
}

fn create(s: &Session, label: &str, encrypt: bool, decrypt: bool) -> cryptoki::error::Result<()> {
    crate::hsm::generate_aes_key(s, label, encrypt, decrypt).map(|_| ())
}

/// `kmsfs xks key create`: a new AES-256 key object in the token of `uri`.
pub fn create_key(uri: &Uri, label: &str, encrypt: bool, decrypt: bool) -> Result<()> {
    let t = Token::open(uri)?;
    match t.key(label) {
        Ok(_) => {
            return Err(err!(
                "the token {:?} already holds an AES key labelled {label:?}",
                uri.token
            ))
        }
        Err(TokenError::NotFound) => {}
        Err(e) => return Err(err!("token {:?}: {e}", uri.token)),
    }
    t.with(|s| create(s, label, encrypt, decrypt).map_err(failed_any))
        .map_err(|e| err!("token {:?}: cannot make the key {label:?}: {e}", uri.token))
}

fn failed(e: CkError) -> TokenError {
    TokenError::Failed(format!("PKCS#11: {e}"))
}

fn failed_any(e: CkError) -> TokenError {
    failed(e)
}
