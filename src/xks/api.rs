//! The XKS Proxy API v1: `POST {path}/health`, `POST {path}/keys/{id}/metadata|encrypt|
//! decrypt` (`{path}` = prefix + `/kms/xks/v1`), SigV4 for the service `kms-xks-proxy`,
//! and the spec's errors: a JSON body `{"errorName", "errorMessage"}` with its status.
//!
//! Order of checks: the path (404 `InvalidUriPathException`), the method (405), the
//! signature (401 `AuthenticationFailedException`), the body (400
//! `ValidationException`), sizes beyond what this proxy supports (501
//! `UnsupportedOperationException`), the key (404 `KeyNotFoundException`), its state
//! (400 `InvalidStateException`) and usage (400 `InvalidKeyUsageException`), then the
//! token (400 `InvalidCiphertextException`, 500 `InternalException`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::config::{valid_key_id, Config, KeyConfig};
use super::token::{Token, TokenError, HEALTH_KEY};
use crate::error::Result;
use crate::kms::http::sigv4;

/// The largest plaintext or ciphertext this proxy takes (the spec's minimum, 4300 bytes).
pub const MAX_DATA: usize = 4300;
/// The largest AAD (the spec's minimum, 8192 bytes).
pub const MAX_AAD: usize = 8192;
/// The largest `ciphertextMetadata` (the spec's limit, 20 bytes).
pub const MAX_METADATA: usize = 20;
/// The largest request body taken (base64 of the above, and the metadata).
const BODY_LIMIT: usize = 64 * 1024;

/// The proxy's state: the configuration, the token and the SigV4 secrets.
pub struct Proxy {
    /// `XksProxyUriPath`.
    pub base: String,
    /// The token.
    pub token: Token,
    keys: parking_lot::RwLock<BTreeMap<String, KeyConfig>>,
    /// SigV4 secrets by access key id (replaced whole on SIGHUP: credential rotation
    /// without a restart, as the spec asks).
    secrets: parking_lot::RwLock<BTreeMap<String, Zeroizing<String>>>,
}

impl Proxy {
    /// Opens the token and reads the secrets of `cfg`.
    pub fn new(cfg: Config) -> Result<Proxy> {
        let uri = crate::hsm::Uri::parse_token(&cfg.token)?;
        let secrets = cfg.secrets()?;
        Ok(Proxy {
            base: cfg.uri_path(),
            token: Token::open(&uri)?,
            secrets: parking_lot::RwLock::new(secrets),
            keys: parking_lot::RwLock::new(cfg.keys),
        })
    }

    /// Takes the credentials and keys of a re-read configuration (the token, the
    /// address and the path stay as they were started).
    pub fn reload(&self, cfg: Config) -> Result<()> {
        let secrets = cfg.secrets()?;
        *self.secrets.write() = secrets;
        *self.keys.write() = cfg.keys;
        Ok(())
    }
}

/// An error as the spec names it.
#[derive(Debug)]
pub struct XksError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

fn xerr(status: u16, name: &'static str, message: impl Into<String>) -> XksError {
    XksError {
        status: StatusCode::from_u16(status).expect("a status"),
        name,
        message: message.into(),
    }
}

fn validation(m: impl Into<String>) -> XksError {
    xerr(400, "ValidationException", m)
}

impl IntoResponse for XksError {
    fn into_response(self) -> Response {
        // The spec: fewer than 512 printable ASCII characters.
        let mut m: String = self
            .message
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .collect();
        m.truncate(500);
        (
            self.status,
            [("content-type", "application/json")],
            serde_json::json!({"errorName": self.name, "errorMessage": m}).to_string(),
        )
            .into_response()
    }
}

impl From<TokenError> for XksError {
    fn from(e: TokenError) -> XksError {
        match e {
            TokenError::NotFound => xerr(404, "KeyNotFoundException", "no such external key"),
            TokenError::BadCiphertext => xerr(
                400,
                "InvalidCiphertextException",
                "the ciphertext, initialization vector, additional authenticated data or authentication tag is invalid",
            ),
            TokenError::Failed(m) => {
                tracing::warn!("token: {m}");
                xerr(500, "InternalException", "the key manager failed")
            }
        }
    }
}

/// `requestMetadata`: logged with every request (never validated beyond its shape).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestMetadata {
    #[serde(default)]
    aws_principal_arn: Option<String>,
    #[serde(default)]
    aws_source_vpc: Option<String>,
    #[serde(default)]
    aws_source_vpce: Option<String>,
    #[serde(default)]
    kms_key_arn: Option<String>,
    #[serde(default)]
    kms_operation: Option<String>,
    #[serde(default)]
    kms_request_id: Option<String>,
    #[serde(default)]
    kms_via_service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    request_metadata: Option<RequestMetadata>,
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
    #[serde(default)]
    additional_authenticated_data: Option<String>,
    #[serde(default)]
    ciphertext_data_integrity_value_algorithm: Option<String>,
    #[serde(default)]
    ciphertext_metadata: Option<String>,
    #[serde(default)]
    initialization_vector: Option<String>,
    #[serde(default)]
    authentication_tag: Option<String>,
}

/// Which operation a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Metadata(String),
    Encrypt(String),
    Decrypt(String),
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Health => "GetHealthStatus",
            Route::Metadata(_) => "GetKeyMetadata",
            Route::Encrypt(_) => "Encrypt",
            Route::Decrypt(_) => "Decrypt",
        }
    }
}

fn route(base: &str, path: &str) -> Option<Route> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    if rest == "health" {
        return Some(Route::Health);
    }
    let rest = rest.strip_prefix("keys/")?;
    let (id, op) = rest.rsplit_once('/')?;
    if id.contains('/') || id.is_empty() {
        return None;
    }
    let id = id.to_string();
    Some(match op {
        "metadata" => Route::Metadata(id),
        "encrypt" => Route::Encrypt(id),
        "decrypt" => Route::Decrypt(id),
        _ => return None,
    })
}

/// The router: every path goes to `handle`, which answers the spec's errors itself.
pub fn router(p: Arc<Proxy>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(p)
}

async fn handle(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<crate::kms::http::server::Peer>>,
    body: axum::body::Body,
) -> Response {
    let t0 = Instant::now();
    let peer = peer
        .map(|axum::Extension(p)| p.0.to_string())
        .unwrap_or_default();
    let Some(r) = route(&p.base, uri.path()) else {
        // A load balancer's plain health check (GET /healthz) gets a 200 without
        // credentials; anything else unknown is the spec's 404.
        if method == Method::GET && uri.path() == "/healthz" {
            return (StatusCode::OK, "ok\n").into_response();
        }
        return xerr(404, "InvalidUriPathException", "the URI path is not valid").into_response();
    };
    if method != Method::POST {
        return xerr(405, "ValidationException", "only POST is allowed").into_response();
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return xerr(
                501,
                "UnsupportedOperationException",
                format!("the request body is larger than {BODY_LIMIT} bytes"),
            )
            .into_response()
        }
    };
    if let Err(e) = authenticate(&p, &uri, &headers, &body) {
        tracing::warn!(
            peer,
            operation = r.name(),
            "XKS request refused: {}",
            e.message
        );
        return e.into_response();
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return validation(format!("the request body is not valid: {e}")).into_response(),
    };
    let meta = serde_json::to_string(&body.request_metadata).unwrap_or_default();
    let name = r.name();
    let p2 = p.clone();
    let r2 = r.clone();
    let out = tokio::task::spawn_blocking(move || dispatch(&p2, &r2, body))
        .await
        .unwrap_or_else(|e| Err(xerr(500, "InternalException", format!("{e}"))));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let key = match &r {
        Route::Health => "",
        Route::Metadata(k) | Route::Encrypt(k) | Route::Decrypt(k) => k.as_str(),
    };
    match out {
        Ok(v) => {
            tracing::info!(peer, operation = name, key, request_metadata = %meta, ms, "ok");
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(peer, operation = name, key, request_metadata = %meta, ms, error = e.name, "{}", e.message);
            e.into_response()
        }
    }
}

/// SigV4 for `kms-xks-proxy` with one of the configured credentials.
fn authenticate(
    p: &Proxy,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> std::result::Result<(), XksError> {
    let fail = |m: String| xerr(401, "AuthenticationFailedException", m);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail("no Authorization header".into()))?;
    let a = sigv4::parse_authorization(auth).map_err(|e| fail(e.message))?;
    let secret = p
        .secrets
        .read()
        .get(&a.access_key_id)
        .cloned()
        .ok_or_else(|| fail("unknown access key id".into()))?;
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = sigv4::Request {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &hs,
        body,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let key = sigv4::signing_key(&secret, &a.date, &a.region, &a.service);
    sigv4::verify_with_key(&req, &a, &key, now, "kms-xks-proxy").map_err(|e| fail(e.message))
}

fn b64(
    field: &str,
    v: &Option<String>,
    required: bool,
) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, XksError> {
    match v {
        None if required => Err(validation(format!("{field} is required"))),
        None => Ok(None),
        Some(s) => B64
            .decode(s)
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| validation(format!("{field} is not valid base64"))),
    }
}

/// The AAD given to the token: 2-byte length ‖ AAD ‖ 1-byte length ‖ ciphertextMetadata,
/// as the spec asks, so that neither can pass for the other.
fn full_aad(aad: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 + aad.len() + metadata.len());
    v.extend_from_slice(&(aad.len() as u16).to_be_bytes());
    v.extend_from_slice(aad);
    v.push(metadata.len() as u8);
    v.extend_from_slice(metadata);
    v
}

/// The external key `id` as configured: (label, may encrypt, may decrypt, enabled).
fn key_config(p: &Proxy, id: &str) -> std::result::Result<(String, bool, bool, bool), XksError> {
    if !valid_key_id(id) {
        return Err(validation(
            "the external key id must have at most 128 characters: letters, digits, '-', '.', '_'",
        ));
    }
    if id == HEALTH_KEY {
        return Err(xerr(404, "KeyNotFoundException", "no such external key"));
    }
    let keys = p.keys.read();
    if keys.is_empty() {
        return Ok((id.to_string(), true, true, true));
    }
    let k = keys
        .get(id)
        .ok_or_else(|| xerr(404, "KeyNotFoundException", "no such external key"))?;
    let has = |u: &str| k.usage.as_ref().is_none_or(|us| us.iter().any(|x| x == u));
    Ok((
        k.label.clone().unwrap_or_else(|| id.to_string()),
        has("ENCRYPT"),
        has("DECRYPT"),
        k.enabled,
    ))
}

fn dispatch(p: &Proxy, r: &Route, body: Body) -> std::result::Result<serde_json::Value, XksError> {
    let meta = body
        .request_metadata
        .as_ref()
        .ok_or_else(|| validation("requestMetadata is required"))?;
    for (field, v) in [
        ("kmsRequestId", &meta.kms_request_id),
        ("kmsOperation", &meta.kms_operation),
    ] {
        if v.is_none() {
            return Err(validation(format!("requestMetadata.{field} is required")));
        }
    }
    if *r != Route::Health && meta.aws_principal_arn.is_none() {
        return Err(validation("requestMetadata.awsPrincipalArn is required"));
    }
    if matches!(r, Route::Encrypt(_) | Route::Decrypt(_)) && meta.kms_key_arn.is_none() {
        return Err(validation("requestMetadata.kmsKeyArn is required"));
    }
    for v in [&meta.aws_principal_arn, &meta.kms_key_arn]
        .into_iter()
        .flatten()
    {
        if v.len() > 2048 {
            return Err(validation(
                "an ARN in requestMetadata is longer than 2048 characters",
            ));
        }
    }
    match r {
        Route::Health => Ok(health(p)),
        Route::Metadata(id) => {
            let (label, enc, dec, enabled) = key_config(p, id)?;
            let k = p.token.key(&label)?;
            let mut usage = vec![];
            if enc && k.encrypt {
                usage.push("ENCRYPT");
            }
            if dec && k.decrypt {
                usage.push("DECRYPT");
            }
            Ok(serde_json::json!({
                "keySpec": format!("AES_{}", k.len * 8),
                "keyUsage": usage,
                "keyStatus": if enabled { "ENABLED" } else { "DISABLED" },
            }))
        }
        Route::Encrypt(id) => {
            algorithm(&body)?;
            let cdiv = match body.ciphertext_data_integrity_value_algorithm.as_deref() {
                None => false,
                Some("SHA_256") => true,
                Some(a) => {
                    return Err(validation(format!(
                        "ciphertextDataIntegrityValueAlgorithm {a:?} is not SHA_256"
                    )))
                }
            };
            let pt = b64("plaintext", &body.plaintext, true)?.expect("required");
            let aad = b64(
                "additionalAuthenticatedData",
                &body.additional_authenticated_data,
                false,
            )?
            .unwrap_or_default();
            sizes(pt.len(), aad.len())?;
            let (label, enc, _, enabled) = key_config(p, id)?;
            let k = p.token.key(&label)?;
            usable(enabled, enc && k.encrypt, "encrypt")?;
            let faad = full_aad(&aad, &[]);
            let (iv, ct, tag) = p.token.encrypt(&label, &pt, &faad)?;
            let mut out = serde_json::json!({
                "ciphertext": B64.encode(&ct),
                "initializationVector": B64.encode(&iv),
                "authenticationTag": B64.encode(&tag),
            });
            if cdiv {
                // Computed before the check decryption (the spec's Appendix C), so a bit
                // flipped after it would still be caught by KMS.
                let mut h = Sha256::new();
                for part in [&aad[..], &iv, &ct, &tag] {
                    h.update(part);
                }
                out["ciphertextDataIntegrityValue"] = B64.encode(h.finalize()).into();
                if k.decrypt {
                    let back = p.token.decrypt(&label, &iv, &ct, &tag, &faad)?;
                    if back.as_slice() != pt.as_slice() {
                        return Err(xerr(
                            500,
                            "InternalException",
                            "the key manager's ciphertext does not decrypt back",
                        ));
                    }
                }
            }
            Ok(out)
        }
        Route::Decrypt(id) => {
            algorithm(&body)?;
            let ct = b64("ciphertext", &body.ciphertext, true)?.expect("required");
            let iv =
                b64("initializationVector", &body.initialization_vector, true)?.expect("required");
            let tag = b64("authenticationTag", &body.authentication_tag, true)?.expect("required");
            let aad = b64(
                "additionalAuthenticatedData",
                &body.additional_authenticated_data,
                false,
            )?
            .unwrap_or_default();
            let md =
                b64("ciphertextMetadata", &body.ciphertext_metadata, false)?.unwrap_or_default();
            if iv.len() != 12 && iv.len() != 16 {
                return Err(validation("initializationVector must be 12 or 16 bytes"));
            }
            if tag.len() != 16 {
                return Err(validation("authenticationTag must be 16 bytes"));
            }
            if md.len() > MAX_METADATA {
                return Err(validation("ciphertextMetadata is longer than 20 bytes"));
            }
            sizes(ct.len(), aad.len())?;
            let (label, _, dec, enabled) = key_config(p, id)?;
            let k = p.token.key(&label)?;
            usable(enabled, dec && k.decrypt, "decrypt")?;
            let pt = p
                .token
                .decrypt(&label, &iv, &ct, &tag, &full_aad(&aad, &md))?;
            Ok(serde_json::json!({"plaintext": B64.encode(&*pt)}))
        }
    }
}

fn algorithm(b: &Body) -> std::result::Result<(), XksError> {
    match b.encryption_algorithm.as_deref() {
        Some("AES_GCM") => Ok(()),
        None => Err(validation("encryptionAlgorithm is required")),
        Some(a) => Err(validation(format!(
            "encryptionAlgorithm {a:?} is not AES_GCM"
        ))),
    }
}

fn sizes(data: usize, aad: usize) -> std::result::Result<(), XksError> {
    if data > MAX_DATA {
        return Err(xerr(
            501,
            "UnsupportedOperationException",
            format!("{data} bytes of data: this proxy takes at most {MAX_DATA}"),
        ));
    }
    if aad > MAX_AAD {
        return Err(xerr(
            501,
            "UnsupportedOperationException",
            format!(
                "{aad} bytes of additionalAuthenticatedData: this proxy takes at most {MAX_AAD}"
            ),
        ));
    }
    Ok(())
}

fn usable(enabled: bool, allowed: bool, what: &str) -> std::result::Result<(), XksError> {
    if !enabled {
        return Err(xerr(
            400,
            "InvalidStateException",
            "the external key is disabled",
        ));
    }
    if !allowed {
        return Err(xerr(
            400,
            "InvalidKeyUsageException",
            format!("the external key may not {what}"),
        ));
    }
    Ok(())
}

fn health(p: &Proxy) -> serde_json::Value {
    let (vendor, model, serial) = p.token.describe();
    let status = match p.token.check() {
        Ok(()) => "ACTIVE",
        Err(e) => {
            tracing::warn!(
                "XKS health check of token {:?} failed: {e}",
                p.token.label()
            );
            "UNAVAILABLE"
        }
    };
    serde_json::json!({
        "xksProxyFleetSize": 1,
        "xksProxyVendor": "kmsfs",
        "xksProxyModel": format!("kmsfs xks proxy {}", env!("CARGO_PKG_VERSION")),
        "ekmVendor": vendor,
        "ekmFleetDetails": [{"id": serial, "model": model, "healthStatus": status}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_aad() {
        let b = "/t/kms/xks/v1";
        assert_eq!(route(b, "/t/kms/xks/v1/health"), Some(Route::Health));
        assert_eq!(
            route(b, "/t/kms/xks/v1/keys/k1/encrypt"),
            Some(Route::Encrypt("k1".into()))
        );
        assert_eq!(route(b, "/t/kms/xks/v1/keys/k1/sign"), None);
        assert_eq!(route(b, "/t/kms/xks/v1/keys/a/b/decrypt"), None);
        assert_eq!(route(b, "/kms/xks/v1/health"), None);
        assert_eq!(route(b, "/t/kms/xks/v1/healthz"), None);
        // No AAD and 3 bytes of metadata never equal 3 bytes of AAD and no metadata.
        assert_ne!(full_aad(b"", b"abc"), full_aad(b"abc", b""));
        assert_eq!(full_aad(b"ab", b"c"), vec![0, 2, b'a', b'b', 1, b'c']);
    }

    /// The spec's Appendix C example: the CDIV of its encrypt response.
    #[test]
    fn cdiv_matches_the_specification_example() {
        let d = |s: &str| B64.decode(s).unwrap();
        let mut h = Sha256::new();
        for part in [
            b"project=nile,department=marketing".to_vec(),
            b"key_version=1".to_vec(),
            d("HMrlRw85cAJUd5Ax"),
            d("ghxkK1txeDNn3q8Y"),
            d("vBxN2ncH1oEkR8WVXpmyYQ=="),
        ] {
            h.update(part);
        }
        assert_eq!(
            B64.encode(h.finalize()),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
        );
    }
}
