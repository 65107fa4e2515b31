//! The integration tests, one binary (like ripgrep's `tests/tests.rs`; cargo finds it as `tests/it/main.rs`): the shared helpers
//! and the library are compiled and linked once, not once per file.

#[macro_use]
mod common;

mod backup;
mod cluster;
mod fs_ops;
mod hardening;
mod hostile;
mod keys;
mod model;
mod mount;
mod names;
mod parsers;
mod remote;
mod revoke;
mod seal;
mod services;
mod third_party;
mod trust;
mod xks;
