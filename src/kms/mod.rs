//! The KMS interface: operations and request/response types named and shaped exactly like
//! the AWS KMS JSON API, so the embedded KMS, the HTTP server and remote clients share one
//! set of types and one error vocabulary.

pub mod audit;
pub mod local;
pub mod policy;
pub mod remote;
pub mod sigv4;
pub mod types;

use std::fmt;

pub use types::*;

/// AWS KMS error names. Faults (HTTP 500) are the last three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum ErrorCode {
    NotFoundException,
    DisabledException,
    KMSInvalidStateException,
    InvalidCiphertextException,
    IncorrectKeyException,
    AccessDeniedException,
    ValidationException,
    AlreadyExistsException,
    InvalidAliasNameException,
    InvalidKeyUsageException,
    UnsupportedOperationException,
    LimitExceededException,
    MalformedPolicyDocumentException,
    IncompleteSignatureException,
    InvalidSignatureException,
    UnrecognizedClientException,
    MissingAuthenticationTokenException,
    SerializationException,
    UnknownOperationException,
    ThrottlingException,
    KMSInternalException,
    DependencyTimeoutException,
    KeyUnavailableException,
}

impl ErrorCode {
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFoundException => "NotFoundException",
            ErrorCode::DisabledException => "DisabledException",
            ErrorCode::KMSInvalidStateException => "KMSInvalidStateException",
            ErrorCode::InvalidCiphertextException => "InvalidCiphertextException",
            ErrorCode::IncorrectKeyException => "IncorrectKeyException",
            ErrorCode::AccessDeniedException => "AccessDeniedException",
            ErrorCode::ValidationException => "ValidationException",
            ErrorCode::AlreadyExistsException => "AlreadyExistsException",
            ErrorCode::InvalidAliasNameException => "InvalidAliasNameException",
            ErrorCode::InvalidKeyUsageException => "InvalidKeyUsageException",
            ErrorCode::UnsupportedOperationException => "UnsupportedOperationException",
            ErrorCode::LimitExceededException => "LimitExceededException",
            ErrorCode::MalformedPolicyDocumentException => "MalformedPolicyDocumentException",
            ErrorCode::IncompleteSignatureException => "IncompleteSignatureException",
            ErrorCode::InvalidSignatureException => "InvalidSignatureException",
            ErrorCode::UnrecognizedClientException => "UnrecognizedClientException",
            ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            ErrorCode::SerializationException => "SerializationException",
            ErrorCode::UnknownOperationException => "UnknownOperationException",
            ErrorCode::ThrottlingException => "ThrottlingException",
            ErrorCode::KMSInternalException => "KMSInternalException",
            ErrorCode::DependencyTimeoutException => "DependencyTimeoutException",
            ErrorCode::KeyUnavailableException => "KeyUnavailableException",
        }
    }

    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::NotFoundException,
        ErrorCode::DisabledException,
        ErrorCode::KMSInvalidStateException,
        ErrorCode::InvalidCiphertextException,
        ErrorCode::IncorrectKeyException,
        ErrorCode::AccessDeniedException,
        ErrorCode::ValidationException,
        ErrorCode::AlreadyExistsException,
        ErrorCode::InvalidAliasNameException,
        ErrorCode::InvalidKeyUsageException,
        ErrorCode::UnsupportedOperationException,
        ErrorCode::LimitExceededException,
        ErrorCode::MalformedPolicyDocumentException,
        ErrorCode::IncompleteSignatureException,
        ErrorCode::InvalidSignatureException,
        ErrorCode::UnrecognizedClientException,
        ErrorCode::MissingAuthenticationTokenException,
        ErrorCode::SerializationException,
        ErrorCode::UnknownOperationException,
        ErrorCode::ThrottlingException,
        ErrorCode::KMSInternalException,
        ErrorCode::DependencyTimeoutException,
        ErrorCode::KeyUnavailableException,
    ];

    /// The code for an AWS error name (as in `X-Amzn-ErrorType` or `__type`).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        // "com.amazonaws.kms#NotFoundException" and "NotFoundException:http://..." forms
        let name = name.rsplit('#').next().unwrap_or(name);
        let name = name.split(':').next().unwrap_or(name);
        ErrorCode::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Server-side faults (HTTP 500); everything else is the caller's error (HTTP 400).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            ErrorCode::KMSInternalException
                | ErrorCode::DependencyTimeoutException
                | ErrorCode::KeyUnavailableException
        )
    }
}

/// An AWS-named error with a one-line message. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub code: ErrorCode,
    pub message: String,
}

impl KmsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> KmsError {
        KmsError {
            code,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::KMSInternalException, message)
    }
    pub fn validation(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::ValidationException, message)
    }
    pub fn not_found(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::NotFoundException, message)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for KmsError {}

pub type KmsResult<T> = Result<T, KmsError>;

/// The operations kmsfs needs from a KMS, with AWS KMS names and shapes.
pub trait Kms: Send + Sync {
    fn create_key(&self, req: CreateKeyRequest) -> KmsResult<CreateKeyResponse>;
    fn describe_key(&self, req: DescribeKeyRequest) -> KmsResult<DescribeKeyResponse>;
    fn list_keys(&self, req: ListKeysRequest) -> KmsResult<ListKeysResponse>;
    fn create_alias(&self, req: CreateAliasRequest) -> KmsResult<()>;
    fn update_alias(&self, req: UpdateAliasRequest) -> KmsResult<()>;
    fn delete_alias(&self, req: DeleteAliasRequest) -> KmsResult<()>;
    fn list_aliases(&self, req: ListAliasesRequest) -> KmsResult<ListAliasesResponse>;
    fn encrypt(&self, req: EncryptRequest) -> KmsResult<EncryptResponse>;
    fn decrypt(&self, req: DecryptRequest) -> KmsResult<DecryptResponse>;
    fn generate_data_key(&self, req: GenerateDataKeyRequest) -> KmsResult<GenerateDataKeyResponse>;
    fn generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyWithoutPlaintextResponse>;
    fn re_encrypt(&self, req: ReEncryptRequest) -> KmsResult<ReEncryptResponse>;
    fn enable_key(&self, req: KeyIdRequest) -> KmsResult<()>;
    fn disable_key(&self, req: KeyIdRequest) -> KmsResult<()>;
    fn schedule_key_deletion(
        &self,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse>;
    fn cancel_key_deletion(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse>;
    fn rotate_key_on_demand(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse>;
    fn enable_key_rotation(&self, req: EnableKeyRotationRequest) -> KmsResult<()>;
    fn disable_key_rotation(&self, req: KeyIdRequest) -> KmsResult<()>;
    fn get_key_rotation_status(&self, req: KeyIdRequest)
        -> KmsResult<GetKeyRotationStatusResponse>;
    fn list_key_rotations(
        &self,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse>;
    fn get_key_policy(&self, req: GetKeyPolicyRequest) -> KmsResult<GetKeyPolicyResponse>;
    fn put_key_policy(&self, req: PutKeyPolicyRequest) -> KmsResult<()>;

    /// Not an AWS operation: performs automatic rotations that are due. The embedded KMS
    /// needs whoever holds the keystore to call this; a remote KMS rotates by itself.
    fn rotate_due(&self) -> KmsResult<Vec<String>> {
        Ok(vec![])
    }

    /// Not an AWS operation: makes what this process recorded verifiable now (the
    /// embedded KMS writes an audit checkpoint; it also does at close).
    fn flush_audit(&self) {}
}

/// Checks every five minutes, while `kms` lives, for keys due for automatic rotation and
/// rotates them: the embedded KMS rotates only when someone holding the keystore checks.
pub fn spawn_rotation_ticker(kms: std::sync::Weak<dyn Kms>) {
    std::thread::spawn(move || loop {
        let Some(kms) = kms.upgrade() else { return };
        match kms.rotate_due() {
            Ok(rotated) => rotated
                .iter()
                .for_each(|k| tracing::info!("automatic rotation of {k}")),
            Err(e) => tracing::warn!("automatic rotation check failed: {e}"),
        }
        drop(kms);
        std::thread::sleep(std::time::Duration::from_secs(300));
    });
}

/// Where the KMS is: `local:DIR` (embedded, the default), an endpoint `https://HOST:PORT`
/// (our `kmsfs kms serve`, moto, ...), or `aws:REGION` (AWS KMS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsLocation {
    Local(std::path::PathBuf),
    Remote { endpoint: String, region: String },
}

fn env_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".into())
}

impl KmsLocation {
    pub fn parse(s: &str) -> crate::Result<KmsLocation> {
        if let Some(dir) = s.strip_prefix("local:") {
            if dir.is_empty() {
                crate::error::fail!("--kms local: needs a directory (local:/path/to/keystore)");
            }
            return Ok(KmsLocation::Local(dir.into()));
        }
        if s == "local" {
            return Ok(KmsLocation::Local(local::default_keystore_dir()?));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            return Ok(KmsLocation::Remote {
                endpoint: s.trim_end_matches('/').to_string() + "/",
                region: env_region(),
            });
        }
        if let Some(region) = s.strip_prefix("aws:") {
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                crate::error::fail!("--kms aws:REGION needs a region such as aws:eu-west-1");
            }
            return Ok(KmsLocation::Remote {
                endpoint: format!("https://kms.{region}.amazonaws.com/"),
                region: region.to_string(),
            });
        }
        crate::error::fail!(
            "unsupported KMS location {s:?}: use local:DIR, https://HOST:PORT or aws:REGION"
        )
    }

    /// `--kms` if given, else `KMSFS_KMS`, else the default keystore directory.
    pub fn resolve(arg: Option<&str>) -> crate::Result<KmsLocation> {
        match arg {
            Some(s) => KmsLocation::parse(s),
            None => match std::env::var("KMSFS_KMS") {
                Ok(s) if !s.is_empty() => KmsLocation::parse(&s),
                _ => Ok(KmsLocation::Local(local::default_keystore_dir()?)),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KmsLocation::Local(d) => format!("local:{}", d.display()),
            KmsLocation::Remote { endpoint, region }
                if endpoint == &format!("https://kms.{region}.amazonaws.com/") =>
            {
                format!("aws:{region}")
            }
            KmsLocation::Remote { endpoint, .. } => endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// Opens the KMS; `create` makes a missing embedded keystore (only `init` and
    /// `key create` do that). A remote KMS takes its credentials from the usual AWS
    /// sources (see `remote::Credentials::discover`), an extra CA from `KMSFS_KMS_CA` or
    /// `AWS_CA_BUNDLE`, and a per-request timeout from `KMSFS_KMS_TIMEOUT` (seconds, 5).
    pub fn open(&self, create: bool) -> crate::Result<std::sync::Arc<dyn Kms>> {
        match self {
            KmsLocation::Local(dir) => Ok(std::sync::Arc::new(local::LocalKms::open(dir, create)?)),
            KmsLocation::Remote { endpoint, region } => {
                let creds = remote::Credentials::discover()?;
                let ca =
                    std::env::var_os("KMSFS_KMS_CA").or_else(|| std::env::var_os("AWS_CA_BUNDLE"));
                let timeout = std::env::var("KMSFS_KMS_TIMEOUT")
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(5.0);
                Ok(std::sync::Arc::new(remote::RemoteKms::new(
                    endpoint,
                    region,
                    creds,
                    ca.as_deref().map(std::path::Path::new),
                    std::time::Duration::from_secs_f64(timeout),
                )?))
            }
        }
    }
}
