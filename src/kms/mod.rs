//! The KMS interface: operations and request/response types named and shaped exactly like
//! the AWS KMS JSON API, so the embedded KMS, the HTTP server and remote clients share one
//! set of types and one error vocabulary.

pub mod audit;
pub mod local;
pub mod policy;
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
            ErrorCode::KMSInternalException => "KMSInternalException",
            ErrorCode::DependencyTimeoutException => "DependencyTimeoutException",
            ErrorCode::KeyUnavailableException => "KeyUnavailableException",
        }
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
}

/// Where the KMS is: `local:DIR` (embedded, the default) — later also `https://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsLocation {
    Local(std::path::PathBuf),
}

impl KmsLocation {
    pub fn parse(s: &str) -> anyhow::Result<KmsLocation> {
        if let Some(dir) = s.strip_prefix("local:") {
            if dir.is_empty() {
                anyhow::bail!("--kms local: needs a directory (local:/path/to/keystore)");
            }
            return Ok(KmsLocation::Local(dir.into()));
        }
        if s == "local" {
            return Ok(KmsLocation::Local(local::default_keystore_dir()?));
        }
        anyhow::bail!(
            "unsupported KMS location {s:?}: use local:DIR (remote endpoints are not built yet)"
        )
    }

    /// `--kms` if given, else `KMSFS_KMS`, else the default keystore directory.
    pub fn resolve(arg: Option<&str>) -> anyhow::Result<KmsLocation> {
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
        }
    }

    /// Opens the KMS; `create` makes a missing embedded keystore (only `init` and
    /// `key create` do that).
    pub fn open(&self, create: bool) -> anyhow::Result<std::sync::Arc<dyn Kms>> {
        match self {
            KmsLocation::Local(dir) => Ok(std::sync::Arc::new(local::LocalKms::open(dir, create)?)),
        }
    }
}
