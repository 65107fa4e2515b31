//! A KMS reached over HTTPS with the AWS KMS JSON protocol: our own `kmsfs kms serve`,
//! real AWS KMS, or moto. Requests are SigV4-signed with the `aws-sigv4` crate; timeouts
//! and bounded retries with backoff keep a KMS outage from hanging the mount.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::kms::*;

/// Where credentials for a remote KMS come from, in order: `KMSFS_KMS_CREDENTIALS` (a
/// file), `$CREDENTIALS_DIRECTORY/kms-credentials` (systemd), the `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables, then `~/.aws/credentials`
/// (profile `AWS_PROFILE`, default `default`). Files use the AWS credentials INI format.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret (wiped on drop; never logged).
    pub secret_access_key: Zeroizing<String>,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret redacted>)", self.access_key_id)
    }
}

fn parse_ini(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = String::new();
    let (mut akid, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1]
                .trim()
                .trim_start_matches("profile ")
                .to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => akid = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                "aws_session_token" => token = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: akid?,
        secret_access_key: Zeroizing::new(secret?),
        session_token: token,
    })
}

impl Credentials {
    /// Reads an AWS credentials file (profile `AWS_PROFILE`, else `default`).
    pub fn from_file(path: &Path) -> crate::Result<Credentials> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::error::err!("cannot read KMS credentials {}: {e}", path.display())
        })?;
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        parse_ini(&text, &profile).ok_or_else(|| {
            crate::error::err!(
                "{} has no [{profile}] section with aws_access_key_id and aws_secret_access_key",
                path.display()
            )
        })
    }

    /// Finds credentials in the usual places (see the type's docs).
    pub fn discover() -> crate::Result<Credentials> {
        if let Some(f) = std::env::var_os("KMSFS_KMS_CREDENTIALS") {
            return Credentials::from_file(Path::new(&f));
        }
        if let Some(d) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let f = PathBuf::from(d).join("kms-credentials");
            if f.exists() {
                return Credentials::from_file(&f);
            }
        }
        if let (Ok(a), Ok(s)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(Credentials {
                access_key_id: a,
                secret_access_key: Zeroizing::new(s),
                session_token: std::env::var("AWS_SESSION_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            });
        }
        if let Some(home) = std::env::var_os("HOME") {
            let f = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(home).join(".aws/credentials"));
            if f.exists() {
                return Credentials::from_file(&f);
            }
        }
        crate::error::fail!(
            "no credentials for the remote KMS: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, KMSFS_KMS_CREDENTIALS=FILE or ~/.aws/credentials"
        )
    }
}

/// A response: status, `x-amzn-errortype`, body (wiped on drop: it may hold a data key).
type Reply = (u16, Option<String>, Zeroizing<Vec<u8>>);

/// The request did not get a response (signing, connection or transfer failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreachable(String);

/// A KMS reached over HTTP(S), at one or several endpoints (servers of one cluster).
pub struct RemoteKms {
    client: reqwest::blocking::Client,
    endpoints: Vec<reqwest::Url>,
    /// The endpoint that answered last: requests go there first.
    preferred: std::sync::atomic::AtomicUsize,
    region: String,
    creds: Credentials,
    retries: u32,
}

impl RemoteKms {
    /// `endpoint`: one URL, or several separated by `,` or `;` (servers sharing one store;
    /// a request that gets no answer, a fault or throttling from one goes to the next).
    /// `ca`: extra trusted root (PEM) for a server with a private CA or a self-signed cert.
    pub fn new(
        endpoint: &str,
        region: &str,
        creds: Credentials,
        ca: Option<&Path>,
        timeout: Duration,
    ) -> crate::Result<RemoteKms> {
        let endpoints = split_endpoints(endpoint)
            .map(|e| {
                reqwest::Url::parse(e)
                    .map_err(|err| crate::error::err!("invalid KMS endpoint {e:?}: {err}"))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            crate::error::fail!("no KMS endpoint in {endpoint:?}");
        }
        let mut b = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(60))
            .use_rustls_tls();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| crate::error::err!("cannot read CA file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| crate::error::err!("invalid CA file {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(RemoteKms {
            client: b
                .build()
                .map_err(|e| crate::error::err!("cannot build the HTTP client: {e}"))?,
            endpoints,
            preferred: Default::default(),
            region: region.to_string(),
            creds,
            retries: 3,
        })
    }

    fn send_once(&self, at: &reqwest::Url, op: &str, body: &[u8]) -> Result<Reply, Unreachable> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;
        let host = match at.port() {
            Some(p) => format!("{}:{p}", at.host_str().unwrap_or("")),
            None => at.host_str().unwrap_or("").to_string(),
        };
        let target = format!("{}{op}", super::TARGET_PREFIX);
        let headers = [
            ("content-type", super::CONTENT_TYPE),
            ("host", host.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        let identity = aws_credential_types::Credentials::new(
            self.creds.access_key_id.clone(),
            self.creds.secret_access_key.to_string(),
            self.creds.session_token.clone(),
            None,
            "kmsfs",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Unreachable(format!("cannot sign: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            at.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Unreachable(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Unreachable(format!("cannot sign: {e}")))?
            .into_parts();
        let mut req = self.client.post(at.clone()).body(body.to_vec());
        for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
            req = req.header(*k, *v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req.send().map_err(|e| Unreachable(format!("{e}")))?;
        let status = resp.status().as_u16();
        let etype = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read into a buffer that is wiped when dropped: it may hold a plaintext data key.
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, 1 << 20), &mut bytes)
            .map_err(|e| Unreachable(format!("{e}")))?;
        Ok((status, etype, bytes))
    }

    /// One operation with bounded retries: connection errors, throttling and faults are
    /// retried, on the next endpoint at once when there are several, with exponential
    /// backoff once every endpoint was tried; other errors return at once.
    pub(in crate::kms) fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: Op,
        req: &Req,
    ) -> KmsResult<Resp> {
        let op = op.name();
        let body =
            Zeroizing::new(serde_json::to_vec(req).map_err(|e| KmsError::internal(e.to_string()))?);
        // A multi-Region key named by its ARN in another Region: its replica here.
        let (body, back) = super::mrk::localize(op, body, &self.region);
        use std::sync::atomic::Ordering;
        let mut last = None;
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut backoff = 0;
        for attempt in 0..(self.retries as usize + n) {
            if attempt > 0 && attempt % n == 0 {
                // every endpoint failed this round: back off before the next
                std::thread::sleep(Duration::from_millis(100 << backoff.min(6)));
                backoff += 1;
            }
            let i = (first + attempt) % n;
            let at = &self.endpoints[i];
            match self.send_once(at, op, &body) {
                Err(e) => {
                    last = Some(KmsError::new(
                        ErrorCode::DependencyTimeoutException,
                        format!("KMS at {at} unreachable: {e}"),
                    ))
                }
                Ok((200, _, bytes)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    let bytes = super::mrk::restore(bytes, &back);
                    return super::parse_response(&bytes).map_err(|e| {
                        KmsError::internal(format!("cannot parse the KMS's {op} response: {e}"))
                    });
                }
                Ok((status, etype, bytes)) => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    let name = etype
                        .or_else(|| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
                        .or_else(|| v.get("__type").and_then(|c| c.as_str()).map(str::to_string))
                        .unwrap_or_default();
                    let message = v
                        .get("message")
                        .or_else(|| v.get("Message"))
                        .and_then(|m| m.as_str())
                        .unwrap_or("")
                        .to_string();
                    let code = ErrorCode::from_name(&name).unwrap_or(if status >= 500 {
                        ErrorCode::KMSInternalException
                    } else {
                        ErrorCode::ValidationException
                    });
                    let e = KmsError::new(
                        code,
                        if ErrorCode::from_name(&name).is_some() {
                            message
                        } else {
                            format!("HTTP {status} {name}: {message}")
                        },
                    );
                    if !(status >= 500 || code == ErrorCode::ThrottlingException) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// The endpoints of a `--kms` list (`https://a:8443,https://b:8443`; `;` also separates,
/// for fstab options, where `,` does).
pub fn split_endpoints(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', ';']).map(str::trim).filter(|e| !e.is_empty())
}
