//! kmsfs: an encrypting FUSE filesystem whose per-file data keys are wrapped by a KMS.
//!
//! Modules, one concern each: `format` (on-disk layout), `crypto` (AEAD backends, keys),
//! `kms` (the AWS-shaped KMS interface and the embedded KMS), `envelope` (file keys
//! wrapped by the KMS), `content` (chunked encryption of one file), `backing`
//! (symlink-safe access to the backing tree, headers by descriptor), `fs` (the FUSE
//! filesystem), `tree` and `offline` (whole-tree commands), `cli` (commands).

pub mod backing;
pub mod error;
pub use error::{Error, ErrorKind, Result};
pub mod cli;
pub mod content;
pub mod crypto;
pub mod envelope;
pub mod format;
pub mod fs;
pub mod kms;
pub mod server;
pub mod tree;
pub mod trust;
