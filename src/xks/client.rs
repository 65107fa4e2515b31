//! The KMS's side of the XKS Proxy API: requests signed with SigV4 for the service
//! `kms-xks-proxy`, with a deadline (AWS KMS gives a proxy 250 ms; `KMSFS_XKS_TIMEOUT_MS`,
//! default 1000, since a debug build or a loaded test host is slower), and the answers
//! checked as AWS KMS checks them (sizes, the ciphertext data integrity value). TLS
//! trusts the system's roots and `KMSFS_XKS_CA`; mutual TLS presents
//! `KMSFS_XKS_CLIENT_CERT` and `KMSFS_XKS_CLIENT_KEY`.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why a call to the proxy failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// No TCP connection (or no TLS session) to the proxy.
    Unreachable(String),
    /// No answer in time.
    TimedOut,
    /// The proxy answered with the spec's error `name`.
    Proxy {
        /// The spec's errorName (`AuthenticationFailedException`, ...).
        name: String,
    },
    /// An answer that is not the spec's.
    Malformed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
            CallError::TimedOut => f.write_str("timed out"),
            CallError::Proxy { name } => write!(f, "the proxy answered {name}"),
            CallError::Malformed(m) => write!(f, "malformed answer: {m}"),
        }
    }
}

/// Who is asking and why, for the proxy's log and its authorization (`requestMetadata`).
pub struct Metadata<'a> {
    /// The caller's ARN.
    pub principal: &'a str,
    /// The KMS key's ARN (absent for a CreateKey's metadata call and for health).
    pub key_arn: Option<&'a str>,
    /// The KMS operation that led to this call.
    pub operation: &'a str,
}

/// A proxy: its base URL (endpoint + path), the region we sign for, one credential.
pub struct XksClient {
    http: reqwest::blocking::Client,
    base: String,
    host: String,
    region: String,
    access_key_id: String,
    secret: Zeroizing<String>,
}

/// What a successful encryption gives: (IV, ciphertext, tag, ciphertextMetadata).
pub type Wrapped = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn timeout() -> Duration {
    Duration::from_millis(
        std::env::var("KMSFS_XKS_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    )
}

impl XksClient {
    /// A client for the proxy at `endpoint` + `path`. Trusts the system's roots and
    /// `KMSFS_XKS_CA` (PEM), and presents `KMSFS_XKS_CLIENT_CERT` + `KMSFS_XKS_CLIENT_KEY`
    /// (PEM) to a proxy that asks for a client certificate (mutual TLS).
    pub fn new(
        endpoint: &str,
        path: &str,
        region: &str,
        access_key_id: &str,
        secret: &str,
    ) -> Result<XksClient, CallError> {
        let read = |var: &str| -> Result<Option<Vec<u8>>, CallError> {
            match std::env::var_os(var) {
                None => Ok(None),
                Some(p) => std::fs::read(&p)
                    .map(Some)
                    .map_err(|e| CallError::Unreachable(format!("{var}: {e}"))),
            }
        };
        let identity = match (
            read("KMSFS_XKS_CLIENT_CERT")?,
            read("KMSFS_XKS_CLIENT_KEY")?,
        ) {
            (Some(c), Some(k)) => Some([c, k].concat()),
            _ => None,
        };
        Self::with_tls(
            endpoint,
            path,
            region,
            access_key_id,
            secret,
            read("KMSFS_XKS_CA")?.as_deref(),
            identity.as_deref(),
        )
    }

    /// `new` with the extra trusted roots and the client identity (certificate chain and
    /// private key, PEM) given here.
    pub fn with_tls(
        endpoint: &str,
        path: &str,
        region: &str,
        access_key_id: &str,
        secret: &str,
        ca: Option<&[u8]>,
        identity: Option<&[u8]>,
    ) -> Result<XksClient, CallError> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| CallError::Malformed(format!("endpoint {endpoint:?}: {e}")))?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        let mut b = reqwest::blocking::Client::builder()
            .timeout(timeout())
            .connect_timeout(timeout())
            .use_rustls_tls();
        if let Some(pem) = ca {
            for c in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| CallError::Unreachable(format!("XKS CA: {e}")))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(pem) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(pem)
                    .map_err(|e| CallError::Unreachable(format!("XKS client certificate: {e}")))?,
            );
        }
        Ok(XksClient {
            http: b
                .build()
                .map_err(|e| CallError::Unreachable(format!("HTTP client: {e}")))?,
            base: format!("{}{}", endpoint.trim_end_matches('/'), path),
            host,
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret: Zeroizing::new(secret.to_string()),
        })
    }

    fn post(&self, sub: &str, body: &serde_json::Value) -> Result<serde_json::Value, CallError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;
        let url = format!("{}{sub}", self.base);
        let body = Zeroizing::new(serde_json::to_vec(body).expect("JSON"));
        let identity = aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret.to_string(),
            None,
            None,
            "kmsfs-xks",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms-xks-proxy")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CallError::Malformed(format!("cannot sign: {e}")))?
            .into();
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| CallError::Malformed(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| CallError::Malformed(format!("cannot sign: {e}")))?
            .into_parts();
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req.send().map_err(|e| {
            if e.is_timeout() {
                CallError::TimedOut
            } else {
                CallError::Unreachable(format!("{e}"))
            }
        })?;
        let status = resp.status().as_u16();
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, 1 << 16), &mut bytes).map_err(
            |e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    CallError::TimedOut
                } else {
                    CallError::Unreachable(format!("{e}"))
                }
            },
        )?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| CallError::Malformed(format!("HTTP {status}, not JSON")))?;
        if status != 200 {
            return Err(match v.get("errorName").and_then(|n| n.as_str()) {
                Some(n) => CallError::Proxy {
                    name: n.to_string(),
                },
                None => CallError::Malformed(format!("HTTP {status} without errorName")),
            });
        }
        Ok(v)
    }

    fn meta(m: &Metadata<'_>, with_principal: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "kmsOperation": m.operation,
            "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        });
        if with_principal {
            v["awsPrincipalArn"] = m.principal.into();
        }
        if let Some(k) = m.key_arn {
            v["kmsKeyArn"] = k.into();
        }
        v
    }

    /// GetHealthStatus: whether the proxy answers and its key manager is ACTIVE or
    /// DEGRADED (Err(Malformed) when it says UNAVAILABLE everywhere).
    pub fn health(&self, m: &Metadata<'_>) -> Result<(), CallError> {
        let v = self.post(
            "/health",
            &serde_json::json!({"requestMetadata": Self::meta(m, false)}),
        )?;
        let fleet = v
            .get("ekmFleetDetails")
            .and_then(|f| f.as_array())
            .filter(|f| !f.is_empty() && f.len() <= 10)
            .ok_or_else(|| CallError::Malformed("no ekmFleetDetails".into()))?;
        if fleet
            .iter()
            .all(|e| e.get("healthStatus").and_then(|s| s.as_str()) == Some("UNAVAILABLE"))
        {
            return Err(CallError::Proxy {
                name: "InternalException".into(),
            });
        }
        Ok(())
    }

    /// GetKeyMetadata: (keySpec, keyUsage, keyStatus).
    pub fn metadata(
        &self,
        key: &str,
        m: &Metadata<'_>,
    ) -> Result<(String, Vec<String>, String), CallError> {
        let v = self.post(
            &format!("/keys/{key}/metadata"),
            &serde_json::json!({"requestMetadata": Self::meta(m, true)}),
        )?;
        let s = |f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_string);
        let usage = v
            .get("keyUsage")
            .and_then(|u| u.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .ok_or_else(|| CallError::Malformed("no keyUsage".into()))?;
        Ok((
            s("keySpec").ok_or_else(|| CallError::Malformed("no keySpec".into()))?,
            usage,
            s("keyStatus").ok_or_else(|| CallError::Malformed("no keyStatus".into()))?,
        ))
    }

    /// Encrypt, with the ciphertext data integrity value asked for and checked.
    pub fn encrypt(
        &self,
        key: &str,
        m: &Metadata<'_>,
        pt: &[u8],
        aad: &[u8],
    ) -> Result<Wrapped, CallError> {
        let v = self.post(
            &format!("/keys/{key}/encrypt"),
            &serde_json::json!({
                "requestMetadata": Self::meta(m, true),
                "plaintext": B64.encode(pt),
                "encryptionAlgorithm": "AES_GCM",
                "additionalAuthenticatedData": B64.encode(aad),
                "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
            }),
        )?;
        let field = |f: &str, required: bool| -> Result<Vec<u8>, CallError> {
            match v.get(f).and_then(|x| x.as_str()) {
                Some(s) => B64
                    .decode(s)
                    .map_err(|_| CallError::Malformed(format!("{f} is not base64"))),
                None if required => Err(CallError::Malformed(format!("no {f}"))),
                None => Ok(vec![]),
            }
        };
        let (iv, ct, tag, md) = (
            field("initializationVector", true)?,
            field("ciphertext", true)?,
            field("authenticationTag", true)?,
            field("ciphertextMetadata", false)?,
        );
        let cdiv = field("ciphertextDataIntegrityValue", true)?;
        if ct.len() != pt.len()
            || tag.len() != 16
            || !(iv.len() == 12 || iv.len() == 16)
            || md.len() > 20
        {
            return Err(CallError::Malformed("field sizes".into()));
        }
        let mut h = Sha256::new();
        for part in [aad, &md, &iv, &ct, &tag] {
            h.update(part);
        }
        if h.finalize().as_slice() != cdiv.as_slice() {
            return Err(CallError::Malformed(
                "the ciphertext data integrity value does not match".into(),
            ));
        }
        Ok((iv, ct, tag, md))
    }

    /// Decrypt.
    #[allow(clippy::too_many_arguments)]
    pub fn decrypt(
        &self,
        key: &str,
        m: &Metadata<'_>,
        iv: &[u8],
        ct: &[u8],
        tag: &[u8],
        md: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let mut body = serde_json::json!({
            "requestMetadata": Self::meta(m, true),
            "ciphertext": B64.encode(ct),
            "encryptionAlgorithm": "AES_GCM",
            "additionalAuthenticatedData": B64.encode(aad),
            "initializationVector": B64.encode(iv),
            "authenticationTag": B64.encode(tag),
        });
        if !md.is_empty() {
            body["ciphertextMetadata"] = B64.encode(md).into();
        }
        let v = self.post(&format!("/keys/{key}/decrypt"), &body)?;
        let pt = v
            .get("plaintext")
            .and_then(|x| x.as_str())
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| CallError::Malformed("no plaintext".into()))?;
        if pt.len() != ct.len() {
            return Err(CallError::Malformed("plaintext size".into()));
        }
        Ok(Zeroizing::new(pt))
    }
}
