//! The proxy's configuration: one JSON file (`kmsfs xks serve --config FILE`). Secrets are
//! never in it: each SigV4 secret is read from its own file (mode 0600) or a systemd
//! credential, the token's PIN from `KMSFS_PKCS11_PIN_FILE` / the credential
//! `kmsfs-pkcs11-pin`.
//!
//! ```json
//! {
//!   "listen": "0.0.0.0:8444",
//!   "path_prefix": "/tenant-a",
//!   "token": "pkcs11:token=xks?module-path=/usr/lib/softhsm/libsofthsm2.so",
//!   "credentials": [
//!     {"access_key_id": "BETWEEN20AND30CHARSA2Z7", "secret_file": "credential:kmsfs-xks-secret"}
//!   ],
//!   "keys": {"backup-key": {"label": "backup-key", "usage": ["ENCRYPT", "DECRYPT"]}},
//!   "tls": {"cert": "/etc/kmsfs/xks/cert.pem", "key": "/etc/kmsfs/xks/key.pem",
//!           "client_ca": "/etc/kmsfs/xks/kms-ca.pem",
//!           "client_subject": "cks.kms.eu-west-1.amazonaws.com"}
//! }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{err, fail, Result};

/// The proxy's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The optional prefix before `/kms/xks/v1` (`XksProxyUriPath` is prefix +
    /// `/kms/xks/v1`): letters, digits, `/`, `-`, `_`; 128 characters with the rest.
    #[serde(default)]
    pub path_prefix: String,
    /// The token: `pkcs11:token=LABEL?module-path=MODULE`.
    pub token: String,
    /// SigV4 credentials (at least one; two during a rotation).
    pub credentials: Vec<CredentialConfig>,
    /// The external keys by id. Empty: any AES key object of the token, its label being
    /// the id, with the usages its attributes allow.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// TLS (required unless the proxy listens on loopback or `insecure_http`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP on a non-loopback address (for a TLS-terminating load balancer).
    #[serde(default)]
    pub insecure_http: bool,
    /// The file it was read from (for a reload on SIGHUP).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8444".parse().expect("an address")
}

/// One SigV4 credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// 20 to 30 characters, `A`–`Z` and `2`–`7` (the spec's rule).
    pub access_key_id: String,
    /// A file holding the secret (first line; mode 0600), or `credential:NAME` for
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    pub secret_file: String,
}

/// One external key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key object's label in the token (default: the key id).
    #[serde(default)]
    pub label: Option<String>,
    /// What the key may do: a subset of `["ENCRYPT", "DECRYPT"]` (default both; the key
    /// object's own CKA_ENCRYPT / CKA_DECRYPT still apply).
    #[serde(default)]
    pub usage: Option<Vec<String>>,
    /// A disabled key answers `InvalidStateException` (and `keyStatus: DISABLED`).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// TLS, and optionally mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Clients must present a certificate chained to these roots (PEM).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// ... whose subject common name is this (AWS KMS: `cks.kms.<region>.amazonaws.com`).
    #[serde(default)]
    pub client_subject: Option<String>,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read(path).map_err(|e| {
            err!(
                "cannot read the XKS proxy configuration {}: {e}",
                path.display()
            )
        })?;
        let c: Config = serde_json::from_slice(&text).map_err(|e| {
            err!(
                "{}: not a valid XKS proxy configuration: {e}",
                path.display()
            )
        })?;
        c.check().map_err(|e| err!("{}: {e:#}", path.display()))?;
        let mut c = c;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        let path = self.uri_path();
        if path.len() > 128
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
            || (!self.path_prefix.is_empty() && !self.path_prefix.starts_with('/'))
            || self.path_prefix.ends_with('/')
        {
            fail!("path_prefix {:?}: the URI path {path:?} must start with /, have at most 128 characters, letters, digits, /, - and _ only, and no trailing /", self.path_prefix);
        }
        if self.credentials.is_empty() {
            fail!("no credentials: give at least one access_key_id and secret_file");
        }
        for c in &self.credentials {
            if !(20..=30).contains(&c.access_key_id.len())
                || !c
                    .access_key_id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            {
                fail!(
                    "access_key_id {:?}: 20 to 30 characters, A-Z and 2-7 only",
                    c.access_key_id
                );
            }
        }
        for (id, k) in &self.keys {
            if !valid_key_id(id) {
                fail!(
                    "key id {id:?}: at most 128 characters, letters, digits, '-', '.' and '_' only"
                );
            }
            for u in k.usage.iter().flatten() {
                if u != "ENCRYPT" && u != "DECRYPT" {
                    fail!("key {id:?}: usage {u:?} is not ENCRYPT or DECRYPT");
                }
            }
        }
        crate::hsm::Uri::parse_token(&self.token)?;
        Ok(())
    }

    /// `XksProxyUriPath`: the prefix and `/kms/xks/v1`.
    pub fn uri_path(&self) -> String {
        format!("{}/kms/xks/v1", self.path_prefix)
    }

    /// The SigV4 secrets by access key id, read from their files.
    pub fn secrets(&self) -> Result<BTreeMap<String, Zeroizing<String>>> {
        let mut out = BTreeMap::new();
        for c in &self.credentials {
            let p = match c.secret_file.strip_prefix("credential:") {
                Some(name) => PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(
                    || err!("secret_file {:?}: no $CREDENTIALS_DIRECTORY (not run by systemd with LoadCredential=)", c.secret_file),
                )?)
                .join(name),
                None => {
                    let p = PathBuf::from(&c.secret_file);
                    crate::kms::local::check_private(&p, "XKS secret file")?;
                    p
                }
            };
            let s = Zeroizing::new(
                std::fs::read_to_string(&p)
                    .map_err(|e| err!("cannot read the XKS secret file {}: {e}", p.display()))?,
            );
            let line = s.lines().next().unwrap_or_default().trim().to_string();
            if line.len() < 43
                || line.len() > 64
                || !line
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            {
                fail!("the XKS secret in {} must be 43 to 64 characters of A-Z, a-z, 0-9, +, / and = (e.g. base64 of 32 random bytes)", p.display());
            }
            out.insert(c.access_key_id.clone(), Zeroizing::new(line));
        }
        Ok(out)
    }
}

/// The spec's external key id: at most 128 characters, letters, digits, `-`, `.`, `_`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// A new SigV4 credential for a proxy: an access key id (24 characters of A–Z, 2–7) and a
/// secret (base64 of 32 random bytes).
pub fn new_credential() -> (String, Zeroizing<String>) {
    use base64::Engine as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let r: [u8; 24] = crate::crypto::random_bytes();
    let akid = r
        .iter()
        .map(|b| ALPHABET[(*b & 31) as usize] as char)
        .collect();
    let s: Zeroizing<[u8; 32]> = Zeroizing::new(crate::crypto::random_bytes());
    (
        akid,
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*s)),
    )
}
