//! What a filesystem operation answers on failure: an errno, and at most one log line.
//! Every mapping to errno (from the OS, the content layer, headers and the KMS) is here,
//! and the FUSE adapter is the one place that logs.

use fuser::Errno;

use crate::content::ContentError;

/// A failed filesystem operation: the errno the caller gets, and what to log (once, by
/// the adapter) when the failure says something about the tree or the KMS.
#[derive(Debug)]
pub struct FsError {
    /// The answer.
    pub errno: Errno,
    /// The log line, if any, and its level.
    pub log: Option<(tracing::Level, String)>,
}

/// The result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// EIO, logged as an error: `message; answering EIO`.
    pub fn eio(message: impl std::fmt::Display) -> FsError {
        FsError {
            errno: Errno::EIO,
            log: Some((tracing::Level::ERROR, format!("{message}; answering EIO"))),
        }
    }

    /// `errno`, with a log line at `level`.
    pub fn logged(errno: Errno, level: tracing::Level, message: String) -> FsError {
        FsError {
            errno,
            log: Some((level, message)),
        }
    }

    /// Logs the line, if any.
    pub fn emit(&self) {
        match &self.log {
            Some((tracing::Level::ERROR, m)) => tracing::error!("{m}"),
            Some((tracing::Level::WARN, m)) => tracing::warn!("{m}"),
            Some((_, m)) => tracing::info!("{m}"),
            None => {}
        }
    }
}

impl From<Errno> for FsError {
    fn from(errno: Errno) -> FsError {
        FsError { errno, log: None }
    }
}

impl From<rustix::io::Errno> for FsError {
    fn from(e: rustix::io::Errno) -> FsError {
        rerr(e).into()
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)).into()
    }
}

/// The errno of a rustix error.
pub(super) fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// The answer to a content failure of the file at `path` during `op`: EIO and an error
/// line for a chunk that fails authentication, EFBIG for a size beyond what the backing
/// file can hold, the errno of an I/O error (logged unless it is the caller's: full disk,
/// quota, file size).
pub(super) fn content_error(path: &str, op: &str, e: ContentError) -> FsError {
    match e {
        ContentError::Corrupt { chunk, offset } => FsError::eio(format_args!(
            "{path}: chunk {chunk} at backing offset {offset} failed authentication during {op} (tampered or damaged)"
        )),
        ContentError::TooLarge => Errno::EFBIG.into(),
        ContentError::Io(io) => {
            let errno = io.raw_os_error().unwrap_or(libc::EIO);
            let errno_ = Errno::from_i32(errno);
            if errno == libc::ENOSPC || errno == libc::EFBIG || errno == libc::EDQUOT {
                errno_.into()
            } else {
                FsError::logged(errno_, tracing::Level::WARN, format!("{path}: {op}: {io}"))
            }
        }
    }
}
