//! `kmsfs kms serve`: the embedded KMS engine behind the AWS KMS JSON protocol
//! (`POST /`, `X-Amz-Target: TrentService.<Op>`, SigV4), over HTTP or TLS (rustls).
//! No key operation is implemented here: every request goes to the same `LocalKms`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{fail as bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::sigv4;
use crate::kms::local::{Caller, LocalKms};
use crate::kms::{ErrorCode, KmsError, KmsResult, Op};

/// Largest request body accepted (AWS's own limits keep real requests far below this).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How to serve.
pub struct ServeOpts {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plain HTTP (refused unless on loopback).
    pub insecure_http: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, or its body, or sit
    /// idle between requests, before it is closed: a slow or idle client holds a
    /// connection slot for at most this long.
    pub idle_timeout: std::time::Duration,
    /// Connections one source address may hold at once, so one host cannot take every slot.
    pub max_per_source: usize,
    /// What one principal may cost per second.
    pub limits: super::limits::Limits,
}

/// Refusals of unauthenticated requests recorded per source and window; beyond that they
/// are counted and summed up in one `RefusalsSuppressed` record (they cost an fsync'd
/// audit line each, so they must not be unbounded).
const REFUSALS_PER_WINDOW: u32 = 20;
const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// At most `max` characters of something a client sent, for a log line or an audit record.
fn bounded(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match clean.char_indices().nth(max) {
        Some((at, _)) => format!("{}…({} bytes)", &clean[..at], s.len()),
        None => clean,
    }
}

/// (access key id, secret fingerprint, date, region, service): what a SigV4 signing key
/// depends on
type SigningKeyId = (String, [u8; 32], String, String, String);

struct AppState {
    /// The first Region's view: principals, refusals, and requests of no served Region.
    kms: LocalKms,
    /// The other Regions this server answers as (`--region A,B,…`), by name.
    regions: std::collections::HashMap<String, LocalKms>,
    /// Per-principal request and byte budgets.
    buckets: super::limits::Buckets,
    /// (access key id, secret fingerprint, date, region, service) -> SigV4 signing key
    keys: parking_lot::Mutex<std::collections::HashMap<SigningKeyId, Vec<u8>>>,
    idle_timeout: std::time::Duration,
    /// source address -> (window start, refusals recorded in it, refusals suppressed)
    refusals: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32, u64)>>,
}

impl AppState {
    /// The view that answers a request signed for `region` (a Region not served: the
    /// first view, which answers as its own Region and so finds nothing).
    fn view(&self, region: &str) -> &LocalKms {
        self.regions.get(region).unwrap_or(&self.kms)
    }

    /// Audits the refusal of a request that never reached an operation (bad or missing
    /// signature, unknown access key), at most `REFUSALS_PER_WINDOW` per source and
    /// window; the rest are summed up in one record when the source's next window opens.
    fn audit_refusal(&self, principal: &str, peer: SocketAddr, op: &str, e: &KmsError) {
        let (record, summary) = {
            let mut m = self.refusals.lock();
            if m.len() > 10_000 {
                m.retain(|_, (start, _, _)| start.elapsed() < REFUSAL_WINDOW);
            }
            let w = m.entry(peer.ip()).or_insert((Instant::now(), 0, 0));
            let mut summary = 0;
            if w.0.elapsed() >= REFUSAL_WINDOW {
                summary = std::mem::take(&mut w.2);
                *w = (Instant::now(), 0, 0);
            }
            w.1 += 1;
            let record = w.1 <= REFUSALS_PER_WINDOW;
            if !record {
                w.2 += 1;
            }
            (record, summary)
        };
        let kms = self.kms.with_caller(Caller {
            principal: principal.to_string(),
            source: peer.to_string(),
            region: None,
            account: None,
        });
        if summary > 0 {
            let _ = kms.record_refusals_suppressed(summary, REFUSAL_WINDOW.as_secs());
        }
        if record {
            let _ = kms.record_refusal(op, None, e);
        }
    }
}

/// The remote address of a connection, attached to each request.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

fn error_status(e: &KmsError) -> StatusCode {
    if e.code.is_fault() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn error_response(e: &KmsError) -> Response {
    let status = error_status(e);
    let body = serde_json::json!({"__type": e.code.name(), "message": e.message}).to_string();
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(super::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(e.code.name()) {
        h.insert("x-amzn-errortype", v);
    }
    r
}

/// A response body that may hold plaintext data keys: wiped when hyper drops it.
struct SecretBody(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn request_key(body: &[u8]) -> Option<String> {
    // Only these members are read; the rest (a plaintext) is skipped, never copied.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Keys {
        key_id: Option<String>,
        destination_key_id: Option<String>,
        target_key_id: Option<String>,
        alias_name: Option<String>,
    }
    let k: Keys = serde_json::from_slice(body).ok()?;
    [
        k.key_id,
        k.destination_key_id,
        k.target_key_id,
        k.alias_name,
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|s| bounded(&s, 2048))
}

async fn handle(
    State(st): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    req_ext: axum::Extension<Peer>,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let peer = req_ext.0 .0;
    // The body too must arrive within the idle timeout (a slow body holds a slot).
    let body: Bytes =
        match tokio::time::timeout(st.idle_timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
            }
            Err(_) => {
                return (StatusCode::REQUEST_TIMEOUT, "request body too slow\n").into_response()
            }
        };
    // Operation names are short words; anything else is refused as unknown, and never
    // copied whole into a log line or an audit record.
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(super::TARGET_PREFIX))
        .unwrap_or("");
    let op = if op.len() <= 64 && op.bytes().all(|b| b.is_ascii_alphanumeric()) {
        op.to_string()
    } else {
        format!("(invalid:{})", bounded(op, 32))
    };
    // STS's query protocol (GetCallerIdentity): no target, a form body, XML answers.
    let sts = op.is_empty()
        && headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with(super::sts::FORM_CONTENT_TYPE));
    let op = if sts {
        "sts:GetCallerIdentity".to_string()
    } else {
        op
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let st2 = st.clone();
    let op2 = op.clone();
    let rid = request_id.clone();
    let result = tokio::task::spawn_blocking(
        move || -> (String, KmsResult<zeroize::Zeroizing<Vec<u8>>>) {
            let op = op2;
            // Authenticate: SigV4 against the principal's secret from the sealed keystore.
            let auth = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                Some(a) => match sigv4::parse_authorization(a) {
                    Ok(a) => a,
                    Err(e) => return ("-".into(), Err(e)),
                },
                None => {
                    return (
                        "-".into(),
                        Err(KmsError::new(
                            ErrorCode::MissingAuthenticationTokenException,
                            "Missing Authentication Token",
                        )),
                    )
                }
            };
            let found = match st2.kms.principal_secret(&auth.access_key_id) {
                Ok(found) => found,
                Err(e) => return ("-".into(), Err(e)),
            };
            let Some((who, secret)) = found else {
                return (
                    format!("akid:{}", bounded(&auth.access_key_id, 128)),
                    Err(KmsError::new(
                        ErrorCode::UnrecognizedClientException,
                        "The security token included in the request is invalid.",
                    )),
                );
            };
            let principal = who.principal.clone();
            let hdrs: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let sreq = sigv4::Request {
                method: method.as_str(),
                path: uri.path(),
                query: uri.query().unwrap_or(""),
                headers: &hdrs,
                body: &body,
            };
            let fp: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&secret.0).into();
            let ck = (
                auth.access_key_id.clone(),
                fp,
                auth.date.clone(),
                auth.region.clone(),
                auth.service.clone(),
            );
            let cached = st2.keys.lock().get(&ck).cloned();
            let key = cached.unwrap_or_else(|| {
                let secret =
                    zeroize::Zeroizing::new(String::from_utf8_lossy(&secret.0).into_owned());
                let k = sigv4::signing_key(&secret, &auth.date, &auth.region, &auth.service);
                let mut keys = st2.keys.lock();
                if keys.len() > 10_000 {
                    keys.clear();
                }
                keys.insert(ck, k.clone());
                k
            });
            let service = if sts { "sts" } else { "kms" };
            if let Err(e) = sigv4::verify_with_key(&sreq, &auth, &key, now, service) {
                return (principal, Err(e));
            }
            // A signed principal's budget: checked before the operation (and its fsync'd
            // record), so a throttled flood costs no disk.
            let weight = super::limits::weight(Op::from_name(&op));
            if let Err(e) = st2.buckets.admit(&principal, weight, body.len()) {
                return (principal, Err(e));
            }
            let kms = st2.view(&auth.region).with_caller(Caller {
                source: peer.to_string(),
                region: Some(auth.region.clone()),
                ..who
            });
            let r = if sts {
                let (_, home) = st2.kms.region_and_account();
                let account = kms.caller().account.as_deref().unwrap_or(home);
                let who = super::sts::Identity {
                    name: &principal,
                    account,
                    akid: &auth.access_key_id,
                };
                super::sts::answer(&body, &who, &rid).map(zeroize::Zeroizing::new)
            } else if op.is_empty() {
                Err(KmsError::new(
                    ErrorCode::UnknownOperationException,
                    "missing X-Amz-Target",
                ))
            } else {
                match Op::from_name(&op) {
                    // AWS's model check first (refused in AWS's words), then the operation.
                    Some(o) => match crate::kms::model::check(o, &body) {
                        Err(e) => {
                            // refused before the operation: audited here
                            let _ = kms.record_refusal(&op, request_key(&body), &e);
                            Err(e)
                        }
                        Ok(()) => crate::kms::dispatch(&kms, o, &body),
                    },
                    None => Err(KmsError::new(
                        ErrorCode::UnknownOperationException,
                        format!("operation {op:?} is not supported"),
                    )),
                }
            };
            // Other requests refused before they reached an operation are audited here.
            if let Err(e) = &r {
                if matches!(
                    e.code,
                    ErrorCode::UnknownOperationException | ErrorCode::SerializationException
                ) {
                    let _ = kms.record_refusal(&op, request_key(&body), e);
                }
            }
            (principal, r)
        },
    )
    .await;
    let (principal, result) = match result {
        Ok(x) => x,
        Err(e) => (
            "-".into(),
            Err(KmsError::internal(format!("request handler failed: {e}"))),
        ),
    };
    if let Err(e) = &result {
        if matches!(
            e.code,
            ErrorCode::UnrecognizedClientException
                | ErrorCode::InvalidSignatureException
                | ErrorCode::IncompleteSignatureException
                | ErrorCode::MissingAuthenticationTokenException
        ) {
            let st = st.clone();
            let (principal, op, e) = (principal.clone(), op.clone(), e.clone());
            // an fsync'd audit record: off the async workers
            let _ =
                tokio::task::spawn_blocking(move || st.audit_refusal(&principal, peer, &op, &e))
                    .await;
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(_) => tracing::info!("{op} principal={principal} from={peer} outcome=ok {ms:.1}ms"),
        Err(e) => tracing::info!(
            "{op} principal={principal} from={peer} outcome={} {ms:.1}ms",
            e.code.name()
        ),
    }
    let mut r = match result {
        Ok(v) => {
            let body = Bytes::from_owner(SecretBody(v));
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(if sts {
                    super::sts::XML_CONTENT_TYPE
                } else {
                    super::CONTENT_TYPE
                }),
            );
            r
        }
        Err(e) if sts => {
            let mut r = (error_status(&e), super::sts::error_body(&e, &request_id)).into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(super::sts::XML_CONTENT_TYPE),
            );
            r
        }
        Err(e) => error_response(&e),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn router(
    kms: LocalKms,
    regions: std::collections::HashMap<String, LocalKms>,
    idle_timeout: std::time::Duration,
    limits: super::limits::Limits,
) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(AppState {
            kms,
            regions,
            buckets: super::limits::Buckets::new(limits),
            keys: Default::default(),
            idle_timeout,
            refusals: Default::default(),
        }))
}

/// A TLS acceptor for `cert` and `key` (PEM); with `client_ca`, clients must present a
/// certificate chained to one of its roots (mutual TLS).
pub(crate) fn load_tls(
    cert: &PathBuf,
    key: &PathBuf,
    client_ca: Option<&PathBuf>,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| crate::error::err!("cannot read TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| crate::error::err!("invalid TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| crate::error::err!("cannot read TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::error::err!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| crate::error::err!("cannot read client CA {}: {e}", ca.display()))?
            {
                let c =
                    c.map_err(|e| crate::error::err!("invalid client CA {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| crate::error::err!("invalid client CA {}: {e}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| crate::error::err!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| crate::error::err!("TLS certificate and key do not match: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A connection's share of its source address's slots, given back when it closes.
struct SourceSlot(
    Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    std::net::IpAddr,
);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.0.lock();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves `views` (one per Region this server answers as, the first for requests of no
/// served Region) until SIGTERM/SIGINT. `ready` is called with the bound address once the
/// listener accepts connections (for `Type=notify` and tests).
pub fn serve(views: Vec<LocalKms>, opts: ServeOpts, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let mut views = views.into_iter();
    let Some(kms) = views.next() else {
        bail!("a server needs a Region");
    };
    let others: Vec<LocalKms> = views.collect();
    if opts.tls.is_none() && !opts.listen.ip().is_loopback() && !opts.insecure_http {
        bail!(
            "refusing to listen on {} without TLS: give --tls-cert and --tls-key, or --insecure-http",
            opts.listen
        );
    }
    let tls = match &opts.tls {
        Some((c, k)) => Some(load_tls(c, k, None)?),
        None => None,
    };
    let app_kms = kms.with_caller(kms.caller().clone());
    let dir = app_kms.dir().to_path_buf();
    let regions = others
        .iter()
        .map(|k| {
            (
                k.region_and_account().0.to_string(),
                k.with_caller(k.caller().clone()),
            )
        })
        .collect();
    let app = router(app_kms, regions, opts.idle_timeout, opts.limits);
    serve_app(
        app,
        &opts,
        tls,
        None,
        "kmsfs KMS",
        &dir.display().to_string(),
        ready,
    )?;
    for k in std::iter::once(&kms).chain(&others) {
        k.audit().checkpoint().ok();
    }
    Ok(())
}

/// Serves `app` on `opts.listen` (HTTP/1.1, over `tls` if given, with the connection
/// limits of `opts`) until SIGTERM/SIGINT; every handler sees the peer as
/// `Extension<Peer>`. With `client_subject` (mutual TLS), a client certificate whose
/// subject common name differs ends the connection after the handshake. Shared by the
/// KMS server and the XKS proxy.
pub(crate) fn serve_app(
    app: Router,
    opts: &ServeOpts,
    tls: Option<tokio_rustls::TlsAcceptor>,
    client_subject: Option<String>,
    what: &str,
    detail: &str,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let limit = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
        let per_source: Arc<
            parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
        > = Default::default();
        tracing::info!(
            "{what} listening on {}://{addr} ({detail})",
            if tls.is_some() { "https" } else { "http" },
        );
        ready(addr);
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => p.expect("semaphore"),
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
                },
            };
            // One host may hold at most max_per_source of the slots.
            let slot = {
                let mut m = per_source.lock();
                let n = m.entry(peer.ip()).or_insert(0);
                if *n >= opts.max_per_source {
                    None
                } else {
                    *n += 1;
                    Some(SourceSlot(per_source.clone(), peer.ip()))
                }
            };
            let Some(slot) = slot else {
                tracing::debug!("{peer}: too many connections from that address; closed");
                continue;
            };
            let app = app.clone().layer(axum::Extension(Peer(peer)));
            let tls = tls.clone();
            let subject = client_subject.clone();
            let idle = opts.idle_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                let svc = hyper_util::service::TowerToHyperService::new(app);
                // HTTP/1.1 only (what AWS clients speak): its header-read timeout also
                // covers a connection idle between requests, which HTTP/2 would not.
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .http1_only();
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle)
                    .max_buf_size(64 * 1024);
                let r = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                if let Some(want) = &subject {
                                    let cn = s
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .and_then(|c| common_name(c.as_ref()));
                                    if cn.as_deref() != Some(want.as_str()) {
                                        tracing::warn!(
                                            "{peer}: client certificate subject CN {cn:?} is not {want:?}; connection closed"
                                        );
                                        return;
                                    }
                                }
                                builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake with {peer} failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    None => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                };
                if let Err(e) = r {
                    tracing::debug!("connection from {peer}: {e}");
                }
            });
        }
        tracing::info!("shutting down");
        Ok::<(), crate::Error>(())
    })?;
    Ok(())
}
