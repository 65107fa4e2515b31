//! The KMS interface: operations and request/response types named and shaped exactly like
//! the AWS KMS JSON API, so the embedded KMS, the HTTP server and remote clients share one
//! set of types and one error vocabulary.

pub mod audit;
pub mod http;
pub mod local;
mod location;
pub mod messages;
pub mod model;
mod ops;
pub mod policy;
pub mod store;
pub mod types;

pub use http::client as remote;
pub use http::sigv4;
pub use location::{env_region, KmsLocation};
pub use ops::{dispatch, Kms, Op};

use std::fmt;

pub use types::*;

macro_rules! error_codes {
    ($($name:ident),* $(,)?) => {
        /// AWS KMS error names. Faults (HTTP 500) are the last three.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(clippy::enum_variant_names, missing_docs)]
        pub enum ErrorCode {
            $($name,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// AWS's name (`X-Amzn-ErrorType`, `__type`).
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_codes! {
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
    TagException,
    DryRunOperationException,
    InvalidGrantTokenException,
    CustomKeyStoreNotFoundException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    InvalidGrantIdException,
    KMSInternalException,
    DependencyTimeoutException,
    KeyUnavailableException,
    InvalidImportTokenException,
    IncorrectKeyMaterialException,
    ExpiredImportTokenException,
    CustomKeyStoreInvalidStateException,
    CustomKeyStoreNameInUseException,
    CustomKeyStoreHasCMKsException,
    XksProxyUriUnreachableException,
    XksProxyIncorrectAuthenticationCredentialException,
    XksProxyInvalidConfigurationException,
    XksProxyInvalidResponseException,
    XksProxyUriEndpointInUseException,
    XksProxyUriInUseException,
    XksKeyNotFoundException,
    XksKeyInvalidConfigurationException,
    XksKeyAlreadyInUseException,
}

impl ErrorCode {
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
    /// AWS's error name.
    pub code: ErrorCode,
    /// One line, never key material.
    pub message: String,
}

impl KmsError {
    /// An error `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> KmsError {
        KmsError {
            code,
            message: message.into(),
        }
    }
    /// KMSInternalException.
    pub fn internal(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::KMSInternalException, message)
    }
    /// ValidationException.
    pub fn validation(message: impl Into<String>) -> KmsError {
        KmsError::new(ErrorCode::ValidationException, message)
    }
    /// NotFoundException.
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

/// The result of a KMS operation.
pub type KmsResult<T> = Result<T, KmsError>;

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
