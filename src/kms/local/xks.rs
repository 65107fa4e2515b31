//! External key stores (XKS), as AWS KMS has them: a custom key store names an XKS proxy
//! (endpoint, path, SigV4 credential — the secret sealed with the store like every
//! secret) and is CONNECTED, DISCONNECTED or FAILED; an `EXTERNAL_KEY_STORE` key has its
//! own material here *and* an external key behind the proxy, and every ciphertext under
//! it is encrypted twice (AWS's "double encryption"): first with the key's own material
//! (the format 1 blob), then by the proxy under the external key. Both are needed to
//! decrypt, so stopping the proxy, disconnecting the store or removing the key from the
//! HSM cuts every use of the key.
//!
//! Format 2 blob: `2 ‖ key uuid (16) ‖ iv length (1) ‖ iv ‖ tag (16) ‖ metadata length (1)
//! ‖ ciphertextMetadata ‖ ciphertext of the format 1 blob`; the proxy's AAD is
//! "kmsfs-kms xks blob v1" ‖ the first 17 bytes.
//!
//! Who may manage stores: creating or updating one makes this server connect to a URL
//! the caller names, so only the local caller (the command line, a mount) and the server
//! principals named by `kms serve --xks-admin` (or `KMSFS_XKS_ADMINS`, comma-separated)
//! may.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::*;
use crate::xks::client::{CallError, Metadata, XksClient};
use zeroize::Zeroizing;

/// The blob format of a key in an external key store.
pub(super) const BLOB_FORMAT_XKS: u8 = 2;
const XKS_AAD: &[u8] = b"kmsfs-kms xks blob v1";
const CONNECTED: &str = "CONNECTED";
const DISCONNECTED: &str = "DISCONNECTED";
const FAILED: &str = "FAILED";

/// The messages AWS KMS gives cryptographic operations when the proxy fails (the spec's
/// "KMS Considerations" table).
fn crypto_error(e: &CallError) -> KmsError {
    let m = match e {
        CallError::Unreachable(_) => "AWS KMS cannot communicate with the external key store proxy. This might be a transient network issue. If you see this error repeatedly, verify that your external key store proxy is active and is connected to the network, and that its endpoint URI is correct in your external keystore.",
        CallError::TimedOut => "AWS KMS rejected the request because the external key store proxy did not respond in time. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.",
        CallError::Malformed(_) => "AWS KMS cannot interpret the response from the external key store proxy. If you see this error repeatedly, report it to your external key store proxy administrator.",
        CallError::Proxy { name } => match name.as_str() {
            "InvalidStateException" => "The external key associated with this KMS key in an external key store is not enabled in the external key manager. Enable the external key in the external key manager and retry the request.",
            "InvalidCiphertextException" => "The external key store proxy rejected the request because the specified ciphertext or encryption context is corrupted, missing, or otherwise invalid.",
            "InvalidKeyUsageException" => "The external key associated with this KMS key in an external key store does not support the requested operation. Enable the operation on the key in your external key manager, and try the request again.",
            "AuthenticationFailedException" => "The external key store proxy rejected the request because it could not authenticate AWS KMS. Verify the XKS proxy authentication credentials for your external key store and update if necessary.",
            "AccessDeniedException" => "The external key store proxy denied access to the operation. Verify that the user and the external key are both authorized for this operation, and try the request again.",
            "KeyNotFoundException" => "The external key associated with this KMS key in an external key store was not found in its external key manager. If the external key ID associated with this KMS key is incorrect, create a new KMS key with the correct external key ID.",
            "InvalidUriPathException" => "The external key store proxy rejected the request because of an invalid URI path. Verify the URI path for your external key store and update if necessary.",
            "UnsupportedOperationException" => "The external key store proxy rejected the request because it does not support the requested operation. If you see this error repeatedly, report it to your external key store proxy administrator.",
            "DependencyTimeoutException" => "The external key store proxy did not respond to the request in the time allotted. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.",
            "ThrottlingException" => "The external key store proxy rejected the request due to a very high request rate. Reduce the frequency of your calls using KMS keys in this external key store.",
            _ => "The external key store proxy rejected the request because it cannot communicate with the external key manager. Verify that the external key store proxy configuration is correct and that the external key manager is available.",
        },
    };
    KmsError::new(ErrorCode::KMSInvalidStateException, m)
}

/// The error of a store-level operation (Create/Update/ConnectCustomKeyStore) and the
/// ConnectionErrorCode a failed connection shows.
fn store_error(e: &CallError) -> (ErrorCode, &'static str) {
    match e {
        CallError::Unreachable(_) => (
            ErrorCode::XksProxyUriUnreachableException,
            "XKS_PROXY_NOT_REACHABLE",
        ),
        CallError::TimedOut => (
            ErrorCode::XksProxyUriUnreachableException,
            "XKS_PROXY_TIMED_OUT",
        ),
        CallError::Malformed(_) => (
            ErrorCode::XksProxyInvalidResponseException,
            "XKS_PROXY_INVALID_RESPONSE",
        ),
        CallError::Proxy { name } => match name.as_str() {
            "AuthenticationFailedException" => (
                ErrorCode::XksProxyIncorrectAuthenticationCredentialException,
                "INVALID_CREDENTIALS",
            ),
            "InvalidUriPathException" => (
                ErrorCode::XksProxyInvalidConfigurationException,
                "XKS_PROXY_INVALID_CONFIGURATION",
            ),
            "ThrottlingException" | "DependencyTimeoutException" => (
                ErrorCode::XksProxyUriUnreachableException,
                "XKS_PROXY_TIMED_OUT",
            ),
            _ => (
                ErrorCode::XksProxyInvalidResponseException,
                "XKS_PROXY_INVALID_RESPONSE",
            ),
        },
    }
}

fn not_connected(store: &str) -> KmsError {
    KmsError::new(
        ErrorCode::KMSInvalidStateException,
        format!("This KMS key is in a custom key store that is not connected to its external key store proxy. Connect the external key store and try the request again. (custom key store {store})"),
    )
}

/// `crypto_error`, naming the store (so that a mount's log line says which).
fn crypto_error_in(e: &CallError, store: &str) -> KmsError {
    let mut k = crypto_error(e);
    k.message = format!("{} (custom key store {store})", k.message);
    k
}

fn store_not_found(id: &str) -> KmsError {
    KmsError::new(
        ErrorCode::CustomKeyStoreNotFoundException,
        format!("Custom key store {id} does not exist."),
    )
}

/// The caller's account's custom key store `id` in `s` (another account's is not found).
fn store_of<'s>(me: &LocalKms, s: &'s Store, id: &str) -> KmsResult<&'s CustomKeyStoreRecord> {
    s.custom_key_stores
        .get(id)
        .filter(|c| me.is_callers(c))
        .ok_or_else(|| store_not_found(id))
}

/// Clients by (store id, endpoint, path, access key id, secret digest): connections are
/// kept.
fn clients() -> &'static parking_lot::Mutex<HashMap<String, Arc<XksClient>>> {
    static C: OnceLock<parking_lot::Mutex<HashMap<String, Arc<XksClient>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn check_endpoint(endpoint: &str) -> KmsResult<()> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| {
        KmsError::validation(format!("XksProxyUriEndpoint {endpoint:?} is not a URL"))
    })?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    let ok = (url.scheme() == "https" || (url.scheme() == "http" && loopback))
        && url.path() == "/"
        && url.query().is_none()
        && endpoint.len() <= 128;
    if !ok {
        return Err(KmsError::validation(format!(
            "XksProxyUriEndpoint {endpoint:?} must be https://HOST[:PORT] (http:// only for a proxy on loopback), at most 128 characters, without a path"
        )));
    }
    Ok(())
}

fn check_path(path: &str) -> KmsResult<()> {
    if path.len() > 128
        || !path.ends_with("/kms/xks/v1")
        || !path.starts_with('/')
        || !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
    {
        return Err(KmsError::validation(format!(
            "XksProxyUriPath {path:?} must be [/prefix]/kms/xks/v1: at most 128 characters of a-z, A-Z, 0-9, /, - and _"
        )));
    }
    Ok(())
}

fn check_credential(c: &XksProxyAuthenticationCredential) -> KmsResult<()> {
    let akid_ok = (20..=30).contains(&c.access_key_id.len())
        && c.access_key_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    let secret_ok = (43..=64).contains(&c.raw_secret_access_key.len())
        && c.raw_secret_access_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !akid_ok || !secret_ok {
        return Err(KmsError::validation(
            "XksProxyAuthenticationCredential: AccessKeyId is 20-30 characters of A-Z and 2-7, RawSecretAccessKey 43-64 characters of A-Z, a-z, 0-9, +, / and =",
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> KmsResult<()> {
    if name.is_empty() || name.len() > 256 {
        return Err(KmsError::validation(
            "CustomKeyStoreName must be 1-256 characters",
        ));
    }
    Ok(())
}

static ADMINS: OnceLock<Vec<String>> = OnceLock::new();

/// The server principals that may manage custom key stores (`kms serve --xks-admin`).
pub fn set_xks_admins(admins: Vec<String>) {
    let _ = ADMINS.set(admins);
}

impl LocalKms {
    /// Is custom key store `c` the caller's account's?
    pub(super) fn is_callers(&self, c: &CustomKeyStoreRecord) -> bool {
        c.account.as_deref().unwrap_or(&self.e.account) == self.caller_account()
    }

    fn check_xks_admin(&self) -> KmsResult<()> {
        if self.caller.source.starts_with("local:") {
            return Ok(());
        }
        let env = std::env::var("KMSFS_XKS_ADMINS").unwrap_or_default();
        if ADMINS
            .get()
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(env.split(','))
            .any(|a| !a.is_empty() && a == self.caller.principal)
        {
            return Ok(());
        }
        Err(KmsError::new(
            ErrorCode::AccessDeniedException,
            format!(
                "{} may not manage custom key stores (they make this server connect where they say): only the keystore's host and the principals given by kms serve --xks-admin",
                self.caller.principal
            ),
        ))
    }

    /// The caller as an ARN, for the proxy's `awsPrincipalArn`.
    fn caller_arn(&self) -> String {
        if self.caller.principal.starts_with("arn:") {
            self.caller.principal.clone()
        } else {
            format!(
                "arn:aws:iam::{}:user/{}",
                self.e.account, self.caller.principal
            )
        }
    }

    fn region_for_xks(&self) -> String {
        if self.e.region == "local" {
            crate::kms::env_region()
        } else {
            self.e.region.clone()
        }
    }

    fn client_for(&self, c: &CustomKeyStoreRecord) -> KmsResult<Arc<XksClient>> {
        // The secret's digest is part of the key: an updated credential gets a new client.
        let fp = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&c.secret.0));
        let k = format!(
            "{}\n{}\n{}\n{}\n{fp}",
            c.id, c.endpoint, c.path, c.access_key_id
        );
        if let Some(cl) = clients().lock().get(&k) {
            return Ok(cl.clone());
        }
        let secret = String::from_utf8(c.secret.0.clone())
            .map_err(|_| KmsError::internal("the XKS secret is not UTF-8"))?;
        let cl = Arc::new(
            XksClient::new(
                &c.endpoint,
                &c.path,
                &self.region_for_xks(),
                &c.access_key_id,
                &secret,
            )
            .map_err(|e| crypto_error(&e))?,
        );
        clients().lock().insert(k, cl.clone());
        Ok(cl)
    }

    fn probe(&self, c: &CustomKeyStoreRecord, op: &str) -> Result<(), CallError> {
        let cl = self
            .client_for(c)
            .map_err(|e| CallError::Malformed(e.message))?;
        let arn = self.caller_arn();
        cl.health(&Metadata {
            principal: &arn,
            key_arn: None,
            operation: op,
        })
    }

    pub(super) fn do_create_custom_key_store(
        &self,
        req: CreateCustomKeyStoreRequest,
    ) -> KmsResult<CreateCustomKeyStoreResponse> {
        self.run(Op::CreateCustomKeyStore.name(), |info| {
            self.check_xks_admin()?;
            check_name(&req.custom_key_store_name)?;
            match req.custom_key_store_type.as_deref() {
                Some("EXTERNAL_KEY_STORE") => {}
                None | Some("AWS_CLOUDHSM") => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        "CloudHSM key stores are not supported: CustomKeyStoreType EXTERNAL_KEY_STORE",
                    ))
                }
                Some(t) => {
                    return Err(KmsError::validation(format!(
                        "1 validation error detected: Value '{t}' at 'customKeyStoreType' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM]"
                    )))
                }
            }
            match req.xks_proxy_connectivity.as_deref() {
                Some("PUBLIC_ENDPOINT") => {}
                Some("VPC_ENDPOINT_SERVICE") => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        "XksProxyConnectivity VPC_ENDPOINT_SERVICE needs an Amazon VPC: use PUBLIC_ENDPOINT",
                    ))
                }
                _ => {
                    return Err(KmsError::validation(
                        "XksProxyConnectivity is required: PUBLIC_ENDPOINT",
                    ))
                }
            }
            let endpoint = req
                .xks_proxy_uri_endpoint
                .clone()
                .ok_or_else(|| KmsError::validation("XksProxyUriEndpoint is required"))?;
            let path = req
                .xks_proxy_uri_path
                .clone()
                .ok_or_else(|| KmsError::validation("XksProxyUriPath is required"))?;
            let cred = req
                .xks_proxy_authentication_credential
                .clone()
                .ok_or_else(|| {
                    KmsError::validation("XksProxyAuthenticationCredential is required")
                })?;
            check_endpoint(&endpoint)?;
            check_path(&path)?;
            check_credential(&cred)?;
            let account = self.caller_account().to_string();
            let rec = CustomKeyStoreRecord {
                id: format!("cks-{}", &hex::encode(random_bytes::<9>())[..17]),
                account: (account != self.e.account).then_some(account),
                name: req.custom_key_store_name.clone(),
                created: now(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
                path,
                access_key_id: cred.access_key_id.clone(),
                secret: Secret(cred.raw_secret_access_key.clone().into_bytes()),
                connectivity: "PUBLIC_ENDPOINT".into(),
                state: DISCONNECTED.into(),
                error_code: None,
            };
            let s = self.snapshot()?;
            self.check_unique(&s, &rec, None)?;
            // AWS checks the proxy (GetHealthStatus) before it creates the store.
            self.probe(&rec, Op::CreateCustomKeyStore.name()).map_err(|e| {
                let (code, _) = store_error(&e);
                KmsError::new(code, format!("the XKS proxy at {}{}: {e}", rec.endpoint, rec.path))
            })?;
            let id = rec.id.clone();
            self.mutate(Op::CreateCustomKeyStore.name(), info, |s, _| {
                self.check_unique(s, &rec, None)?;
                s.custom_key_stores.insert(rec.id.clone(), rec);
                Ok(())
            })?;
            Ok(CreateCustomKeyStoreResponse {
                custom_key_store_id: id,
            })
        })
    }

    fn check_unique(
        &self,
        s: &Store,
        rec: &CustomKeyStoreRecord,
        except: Option<&str>,
    ) -> KmsResult<()> {
        // (names and proxy URIs are unique within an account, as AWS's)
        for c in s
            .custom_key_stores
            .values()
            .filter(|c| Some(c.id.as_str()) != except && self.is_callers(c))
        {
            if c.name == rec.name {
                return Err(KmsError::new(
                    ErrorCode::CustomKeyStoreNameInUseException,
                    format!("The custom key store name {} is already in use.", rec.name),
                ));
            }
            if c.endpoint == rec.endpoint && c.path == rec.path {
                return Err(KmsError::new(
                    ErrorCode::XksProxyUriInUseException,
                    format!(
                        "{}{} is already used by custom key store {}",
                        rec.endpoint, rec.path, c.id
                    ),
                ));
            }
        }
        Ok(())
    }

    fn entry(c: &CustomKeyStoreRecord) -> CustomKeyStoreEntry {
        CustomKeyStoreEntry {
            custom_key_store_id: c.id.clone(),
            custom_key_store_name: c.name.clone(),
            custom_key_store_type: "EXTERNAL_KEY_STORE".into(),
            connection_state: c.state.clone(),
            connection_error_code: c.error_code.clone(),
            creation_date: c.created,
            xks_proxy_configuration: Some(XksProxyConfiguration {
                connectivity: c.connectivity.clone(),
                access_key_id: c.access_key_id.clone(),
                uri_endpoint: c.endpoint.clone(),
                uri_path: c.path.clone(),
            }),
        }
    }

    pub(super) fn do_describe_custom_key_stores(
        &self,
        req: DescribeCustomKeyStoresRequest,
    ) -> KmsResult<DescribeCustomKeyStoresResponse> {
        self.run(Op::DescribeCustomKeyStores.name(), |_| {
            let s = self.snapshot()?;
            let all: Vec<CustomKeyStoreEntry> =
                match (&req.custom_key_store_id, &req.custom_key_store_name) {
                    (Some(_), Some(_)) => {
                        return Err(KmsError::validation(
                            "specify CustomKeyStoreId or CustomKeyStoreName, not both",
                        ))
                    }
                    (Some(id), None) => vec![Self::entry(store_of(self, &s, id)?)],
                    (None, Some(n)) => vec![Self::entry(
                        s.custom_key_stores
                            .values()
                            .find(|c| &c.name == n && self.is_callers(c))
                            .ok_or_else(|| store_not_found(n))?,
                    )],
                    (None, None) => s
                        .custom_key_stores
                        .values()
                        .filter(|c| self.is_callers(c))
                        .map(Self::entry)
                        .collect(),
                };
            let (page, next) = super::operations::paginate(&all, req.limit, &req.marker)?;
            Ok(DescribeCustomKeyStoresResponse {
                custom_key_stores: page,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_connect_custom_key_store(
        &self,
        req: CustomKeyStoreIdRequest,
    ) -> KmsResult<()> {
        self.run(Op::ConnectCustomKeyStore.name(), |info| {
            self.check_xks_admin()?;
            let s = self.snapshot()?;
            let c = store_of(self, &s, &req.custom_key_store_id)?.clone();
            // As AWS: valid from every state but FAILED (disconnect first); connecting a
            // connected store does nothing.
            if c.state == FAILED {
                return Err(KmsError::new(
                    ErrorCode::CustomKeyStoreInvalidStateException,
                    format!(
                        "Custom key store {} is FAILED ({}): disconnect it, then connect it again.",
                        c.id,
                        c.error_code.as_deref().unwrap_or("no code")
                    ),
                ));
            }
            if c.state == CONNECTED {
                return Ok(());
            }
            // As AWS: the call succeeds; a proxy that does not answer leaves the store
            // FAILED with a ConnectionErrorCode (DescribeCustomKeyStores shows it).
            let outcome = self.probe(&c, Op::ConnectCustomKeyStore.name());
            if let Err(e) = &outcome {
                tracing::warn!(
                    "custom key store {}: connection to {}{} failed: {e}",
                    c.id,
                    c.endpoint,
                    c.path
                );
            }
            self.mutate(Op::ConnectCustomKeyStore.name(), info, |s, _| {
                let c = s
                    .custom_key_stores
                    .get_mut(&req.custom_key_store_id)
                    .ok_or_else(|| store_not_found(&req.custom_key_store_id))?;
                match &outcome {
                    Ok(()) => {
                        c.state = CONNECTED.into();
                        c.error_code = None;
                    }
                    Err(e) => {
                        c.state = FAILED.into();
                        c.error_code = Some(store_error(e).1.into());
                    }
                }
                Ok(())
            })
        })
    }

    pub(super) fn do_disconnect_custom_key_store(
        &self,
        req: CustomKeyStoreIdRequest,
    ) -> KmsResult<()> {
        self.run(Op::DisconnectCustomKeyStore.name(), |info| {
            self.check_xks_admin()?;
            self.mutate(Op::DisconnectCustomKeyStore.name(), info, |s, _| {
                store_of(self, s, &req.custom_key_store_id)?;
                let c = s
                    .custom_key_stores
                    .get_mut(&req.custom_key_store_id)
                    .ok_or_else(|| store_not_found(&req.custom_key_store_id))?;
                c.state = DISCONNECTED.into();
                c.error_code = None;
                Ok(())
            })
        })
    }

    pub(super) fn do_update_custom_key_store(
        &self,
        req: UpdateCustomKeyStoreRequest,
    ) -> KmsResult<()> {
        self.run(Op::UpdateCustomKeyStore.name(), |info| {
            self.check_xks_admin()?;
            if req.cloud_hsm_cluster_id.is_some() || req.key_store_password.is_some() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "CloudHSM key stores are not supported",
                ));
            }
            let s = self.snapshot()?;
            let mut c = store_of(self, &s, &req.custom_key_store_id)?.clone();
            let moves = req.xks_proxy_uri_endpoint.is_some()
                || req.xks_proxy_uri_path.is_some()
                || req.xks_proxy_connectivity.is_some()
                || req.xks_proxy_vpc_endpoint_service_name.is_some();
            // As AWS: the proxy's location changes only while disconnected; the name and
            // the credential may change while connected.
            if moves && c.state != DISCONNECTED {
                return Err(KmsError::new(
                    ErrorCode::CustomKeyStoreInvalidStateException,
                    format!("Custom key store {} must be disconnected to change its proxy's URI or connectivity.", c.id),
                ));
            }
            if let Some(n) = &req.new_custom_key_store_name {
                check_name(n)?;
                c.name = n.clone();
            }
            if let Some(e) = &req.xks_proxy_uri_endpoint {
                check_endpoint(e)?;
                c.endpoint = e.trim_end_matches('/').to_string();
            }
            if let Some(p) = &req.xks_proxy_uri_path {
                check_path(p)?;
                c.path = p.clone();
            }
            match req.xks_proxy_connectivity.as_deref() {
                None | Some("PUBLIC_ENDPOINT") => {}
                Some(_) => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        "XksProxyConnectivity: PUBLIC_ENDPOINT only",
                    ))
                }
            }
            if let Some(cred) = &req.xks_proxy_authentication_credential {
                check_credential(cred)?;
                c.access_key_id = cred.access_key_id.clone();
                c.secret = Secret(cred.raw_secret_access_key.clone().into_bytes());
            }
            self.check_unique(&s, &c, Some(&c.id))?;
            if moves || req.xks_proxy_authentication_credential.is_some() {
                self.probe(&c, Op::UpdateCustomKeyStore.name()).map_err(|e| {
                    let (code, _) = store_error(&e);
                    KmsError::new(code, format!("the XKS proxy at {}{}: {e}", c.endpoint, c.path))
                })?;
            }
            self.mutate(Op::UpdateCustomKeyStore.name(), info, |s, _| {
                self.check_unique(s, &c, Some(&c.id))?;
                let cur = s
                    .custom_key_stores
                    .get_mut(&c.id)
                    .ok_or_else(|| store_not_found(&c.id))?;
                let state = cur.state.clone();
                *cur = CustomKeyStoreRecord { state, ..c.clone() };
                Ok(())
            })
        })
    }

    pub(super) fn do_delete_custom_key_store(&self, req: CustomKeyStoreIdRequest) -> KmsResult<()> {
        self.run(Op::DeleteCustomKeyStore.name(), |info| {
            self.check_xks_admin()?;
            self.mutate(Op::DeleteCustomKeyStore.name(), info, |s, _| {
                let c = store_of(self, s, &req.custom_key_store_id)?;
                if c.state != DISCONNECTED {
                    return Err(KmsError::new(
                        ErrorCode::CustomKeyStoreInvalidStateException,
                        format!(
                            "Custom key store {} is {}: only a DISCONNECTED store can be deleted.",
                            c.id, c.state
                        ),
                    ));
                }
                if s.keys
                    .values()
                    .any(|k| k.custom_key_store_id.as_deref() == Some(c.id.as_str()))
                {
                    return Err(KmsError::new(
                        ErrorCode::CustomKeyStoreHasCMKsException,
                        format!(
                            "Custom key store {} still holds KMS keys: delete them first.",
                            c.id
                        ),
                    ));
                }
                s.custom_key_stores.remove(&req.custom_key_store_id);
                Ok(())
            })
        })
    }

    /// CreateKey with Origin EXTERNAL_KEY_STORE: the store must be connected and the
    /// external key an enabled AES-256 key that may encrypt and decrypt, used by no other
    /// key of the store. Answers (store id, external key id).
    pub(super) fn check_new_xks_key(&self, req: &CreateKeyRequest) -> KmsResult<(String, String)> {
        let id = req.custom_key_store_id.clone().ok_or_else(|| {
            KmsError::validation("Origin EXTERNAL_KEY_STORE needs a CustomKeyStoreId")
        })?;
        let xks = req
            .xks_key_id
            .clone()
            .ok_or_else(|| KmsError::validation("Origin EXTERNAL_KEY_STORE needs an XksKeyId"))?;
        if !crate::xks::config::valid_key_id(&xks) {
            return Err(KmsError::validation(
                "XksKeyId must have 1-128 characters of A-Z, a-z, 0-9, '-', '.' and '_'",
            ));
        }
        let s = self.snapshot()?;
        let c = store_of(self, &s, &id)?;
        if c.state != CONNECTED {
            return Err(KmsError::new(
                ErrorCode::CustomKeyStoreInvalidStateException,
                format!("Custom key store {id} is not connected ({}).", c.state),
            ));
        }
        if s.keys.values().any(|k| {
            k.custom_key_store_id.as_deref() == Some(id.as_str())
                && k.xks_key_id.as_deref() == Some(xks.as_str())
        }) {
            return Err(KmsError::new(
                ErrorCode::XksKeyAlreadyInUseException,
                format!("The external key {xks} is already associated with a KMS key in custom key store {id}."),
            ));
        }
        let arn = self.caller_arn();
        let cl = self.client_for(c)?;
        let (spec, usage, status) = cl
            .metadata(
                &xks,
                &Metadata {
                    principal: &arn,
                    key_arn: None,
                    operation: Op::CreateKey.name(),
                },
            )
            .map_err(|e| match &e {
                CallError::Proxy { name } if name == "KeyNotFoundException" => KmsError::new(
                    ErrorCode::XksKeyNotFoundException,
                    format!(
                        "The external key {xks} was not found by the external key store proxy."
                    ),
                ),
                CallError::Proxy { name }
                    if name == "InvalidStateException" || name == "InvalidKeyUsageException" =>
                {
                    KmsError::new(
                        ErrorCode::XksKeyInvalidConfigurationException,
                        crypto_error(&e).message,
                    )
                }
                _ => KmsError::new(
                    ErrorCode::CustomKeyStoreInvalidStateException,
                    crypto_error(&e).message,
                ),
            })?;
        if spec != "AES_256"
            || !usage.iter().any(|u| u == "ENCRYPT")
            || !usage.iter().any(|u| u == "DECRYPT")
            || status != "ENABLED"
        {
            return Err(KmsError::new(
                ErrorCode::XksKeyInvalidConfigurationException,
                format!("The external key {xks} must be an enabled AES_256 key that may ENCRYPT and DECRYPT (it is {spec}, {usage:?}, {status})."),
            ));
        }
        Ok((id, xks))
    }

    /// The store of an EXTERNAL_KEY_STORE key, connected, and its client.
    fn xks_of(&self, s: &Store, k: &KeyRecord) -> KmsResult<(Arc<XksClient>, String)> {
        let id = k.custom_key_store_id.as_deref().unwrap_or_default();
        let c = s
            .custom_key_stores
            .get(id)
            .ok_or_else(|| not_connected(id))?;
        if c.state != CONNECTED {
            return Err(not_connected(id));
        }
        Ok((self.client_for(c)?, id.to_string()))
    }

    /// The second layer of a blob under an EXTERNAL_KEY_STORE key: the format 1 blob
    /// `inner`, encrypted by the proxy.
    pub(super) fn xks_wrap(&self, k: &KeyRecord, inner: &[u8], op: &str) -> KmsResult<Vec<u8>> {
        let s = self.snapshot()?;
        let (cl, store) = self.xks_of(&s, k)?;
        let mut head = vec![BLOB_FORMAT_XKS];
        head.extend_from_slice(
            uuid::Uuid::parse_str(&k.id)
                .expect("key ids are UUIDs")
                .as_bytes(),
        );
        let aad = [XKS_AAD, &head].concat();
        let (arn, key_arn) = (self.caller_arn(), self.arn(k));
        let (iv, ct, tag, md) = cl
            .encrypt(
                k.xks_key_id.as_deref().unwrap_or_default(),
                &Metadata {
                    principal: &arn,
                    key_arn: Some(&key_arn),
                    operation: op,
                },
                inner,
                &aad,
            )
            .map_err(|e| {
                tracing::warn!("external key store {store}: encrypt under {key_arn}: {e}");
                crypto_error_in(&e, &store)
            })?;
        let mut blob = head;
        blob.push(iv.len() as u8);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&tag);
        blob.push(md.len() as u8);
        blob.extend_from_slice(&md);
        blob.extend_from_slice(&ct);
        Ok(blob)
    }

    /// The format 1 blob inside a format 2 blob, decrypted by the proxy; None if `blob`
    /// is not a well-formed format 2 blob.
    pub(super) fn xks_unwrap(
        &self,
        s: &Store,
        k: &KeyRecord,
        blob: &[u8],
        op: &str,
    ) -> KmsResult<Option<Zeroizing<Vec<u8>>>> {
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let v = blob.get(*at..*at + n)?;
            *at += n;
            Some(v)
        };
        let mut at = 17;
        let Some(parts) = (|| {
            let ivl = *take(&mut at, 1)?.first()? as usize;
            let iv = take(&mut at, ivl)?;
            let tag = take(&mut at, 16)?;
            let mdl = *take(&mut at, 1)?.first()? as usize;
            let md = take(&mut at, mdl)?;
            Some((iv, tag, md, &blob[at..]))
        })() else {
            return Ok(None);
        };
        let (iv, tag, md, ct) = parts;
        let (cl, store) = self.xks_of(s, k)?;
        let aad = [XKS_AAD, &blob[..17]].concat();
        let (arn, key_arn) = (self.caller_arn(), self.arn(k));
        match cl.decrypt(
            k.xks_key_id.as_deref().unwrap_or_default(),
            &Metadata {
                principal: &arn,
                key_arn: Some(&key_arn),
                operation: op,
            },
            iv,
            ct,
            tag,
            md,
            &aad,
        ) {
            Ok(inner) => Ok(Some(inner)),
            Err(e) => {
                tracing::warn!("external key store {store}: decrypt under {key_arn}: {e}");
                Err(crypto_error_in(&e, &store))
            }
        }
    }
}
