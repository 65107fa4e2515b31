//! The library's error type.
//!
//! Every library operation that can fail for more than one reason returns [`Result`]: one
//! line of text naming the file, key or request, plus a [`ErrorKind`] a caller can act on
//! (the CLI turns kinds into exit statuses, the mount turns errnos into FUSE answers). The
//! cause's text is folded into the message when the error is made, so `Display` is the
//! whole story and no `source()` chain repeats it.
//!
//! Where errors map to other vocabularies, the mapping is in one place: errno for the
//! mount in `fs::error`, AWS error names in `kms::ErrorCode`.

use std::fmt;

use crate::kms::{ErrorCode, KmsError};

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input: arguments, a config, a tree or keystore that is not what was asked for.
    Invalid,
    /// The operating system refused; [`Error::errno`] has the errno when there is one.
    Io,
    /// The KMS refused or failed; [`Error::kms_code`] has AWS's error name.
    Kms,
    /// The tree is not trusted on this host (unknown pin, bad MAC, unexpected keys).
    Untrusted,
    /// Data read from the backing tree is damaged or was tampered with.
    Damaged,
}

/// A library error: a kind and one line of text.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
    kms_code: Option<ErrorCode>,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            errno: None,
            kms_code: None,
        }
    }

    /// Bad input (`ErrorKind::Invalid`).
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    /// A tree this host does not trust (`ErrorKind::Untrusted`).
    pub fn untrusted(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Untrusted, message)
    }

    /// Damaged or tampered data (`ErrorKind::Damaged`).
    pub fn damaged(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Damaged, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno of an operating-system failure.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// AWS's error name of a KMS failure.
    pub fn kms_code(&self) -> Option<ErrorCode> {
        self.kms_code
    }

    /// The same error, its message prefixed with `what` (`what: message`).
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            message: format!("{what}: {}", self.message),
            ..self
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error {
            errno: e.raw_os_error(),
            ..Error::new(ErrorKind::Io, e.to_string())
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        std::io::Error::from(e).into()
    }
}

impl From<KmsError> for Error {
    fn from(e: KmsError) -> Error {
        Error {
            kms_code: Some(e.code),
            ..Error::new(ErrorKind::Kms, e.to_string())
        }
    }
}

impl From<crate::kms::store::StoreError> for Error {
    fn from(e: crate::kms::store::StoreError) -> Error {
        Error::new(ErrorKind::Io, e.0)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::invalid(e.to_string())
    }
}

impl From<crate::format::HeaderError> for Error {
    fn from(e: crate::format::HeaderError) -> Error {
        Error::damaged(format!("invalid header: {e}"))
    }
}

impl From<crate::content::ContentError> for Error {
    fn from(e: crate::content::ContentError) -> Error {
        use crate::content::ContentError;
        match e {
            ContentError::Io(io) => io.into(),
            ContentError::TooLarge => std::io::Error::from_raw_os_error(libc::EFBIG).into(),
            c @ ContentError::Corrupt { .. } => Error::damaged(c.to_string()),
        }
    }
}

impl From<crate::backing::HeaderReadError> for Error {
    fn from(e: crate::backing::HeaderReadError) -> Error {
        use crate::backing::HeaderReadError;
        match e {
            HeaderReadError::Io(errno) => Error {
                errno: Some(errno.raw_os_error()),
                ..Error::new(ErrorKind::Io, e.to_string())
            },
            _ => Error::damaged(e.to_string()),
        }
    }
}

impl From<crate::envelope::EnvelopeError> for Error {
    fn from(e: crate::envelope::EnvelopeError) -> Error {
        Error::new(ErrorKind::Kms, e.to_string())
    }
}

/// Adds what was being done to an error, like `anyhow::Context` but typed.
pub trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Prefixes the error with `what()`, computed only on failure.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// `return Err(Error::invalid(format!(..)))`.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::invalid(format!($($arg)*)).into())
    };
}

/// `Error::invalid(format!(..))`.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::error::Error::invalid(format!($($arg)*))
    };
}

pub(crate) use {err, fail};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_and_keeps_kind_and_errno() {
        let e: Error = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        let e = e.context("/b/x");
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.errno(), Some(libc::ENOSPC));
        assert!(e.to_string().starts_with("/b/x: "), "{e}");
        let k: Error = KmsError::not_found("Invalid keyId 'k'").into();
        assert_eq!(k.kms_code(), Some(ErrorCode::NotFoundException));
        assert_eq!(k.kind(), ErrorKind::Kms);
    }
}
