//! kmsfs: an encrypting FUSE filesystem whose per-file data keys are wrapped by a KMS.
//!
//! The rooms, one concern each (docs/FORMAT.md and docs/THREAT-MODEL.md describe the
//! format and the threats; README "How it works" has the same map):
//!
//! | module | what lives there |
//! |---|---|
//! | [`error`] | the library's error type; errno and AWS-name mappings each in one place |
//! | [`format`] | on-disk formats 1 and 2: config (`kmsfs.json`), file header, chunk geometry, sealed names and node records |
//! | [`crypto`] | AEAD backends (aws-lc-rs, RustCrypto), secret keys |
//! | [`content`] | one file's content, sealed chunk by chunk |
//! | [`envelope`] | file keys wrapped by the KMS (or sealed under an RSA public key): unwrap, key cache, header pool |
//! | [`backing`] | symlink-safe access to the backing tree; the one way to read a sealed file |
//! | [`trust`] | whether this host trusts a tree's config (pins, tree key, MAC) |
//! | [`fs`] | the filesystem's operations, the thin FUSE adapter, mounting |
//! | [`tree`] | whole-tree commands: init, rotate, keys, rekey, fsck, cat, decrypt, path, share |
//! | [`kms`] | the AWS-shaped KMS: one operation table, the embedded KMS, HTTP both ends, audit |
//! | [`cli`] | the command line: parsing and printing only |
#![deny(missing_docs)]

pub mod backing;
pub mod cli;
pub mod content;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod format;
pub mod fs;
pub mod hsm;
pub mod kms;
pub mod seal;
pub mod tree;
pub mod trust;
pub mod xks;

pub use envelope::Envelope;
pub use error::{Error, ErrorKind, Result};
pub use fs::{mount, unmount, KmsFs, MountOptions};
pub use kms::{Kms, KmsError, KmsLocation, Op};
pub use trust::{open_tree, TrustedTree};
