//! The unlock cache: an unsealed root key kept in the kernel's user keyring for a while
//! (`kmsfs kms unlock --for DURATION`, `kmsfs kms lock`), so that commands between a
//! `kmsfs init` and a `mount` need no passphrase each.
//!
//! Why the kernel keyring (as fscrypt's and eCryptfs's tools use it) rather than an
//! agent socket: the key never touches a file or a socket path, the kernel drops it at
//! the timeout without a process to do so, it is never swapped out, and it is scoped to
//! the user id like an ssh-agent; `keyctl` shows it is there, never its value to other
//! users. A "user" key named `kmsfs:root:<keystore directory>` in the user keyring (`@u`),
//! readable by its owner's processes only, with the kernel's timeout.

use std::path::Path;

use crate::crypto::SecretKey;
use crate::error::{err, Result};

const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
const KEYCTL_INVALIDATE: libc::c_long = 21;
/// possessor: view, read, write, search, link, setattr; user (same uid): view, read, search.
const PERM: libc::c_long = 0x3f0b_0000;

fn description(dir: &Path) -> std::ffi::CString {
    let d = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::ffi::CString::new(format!("kmsfs:root:{}", d.display())).unwrap_or_default()
}

fn find(dir: &Path) -> Option<libc::c_long> {
    let desc = description(dir);
    // SAFETY: keyctl(KEYCTL_SEARCH, keyring, type, description, dest) reads two
    // NUL-terminated strings that outlive the call.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING,
            c"user".as_ptr(),
            desc.as_ptr(),
            0 as libc::c_long,
        )
    };
    (id > 0).then_some(id)
}

/// The root key of the keystore in `dir`, if it was unlocked and has not timed out.
pub(super) fn get(dir: &Path) -> Option<SecretKey> {
    let id = find(dir)?;
    let mut buf = zeroize::Zeroizing::new([0u8; 33]);
    // SAFETY: KEYCTL_READ writes at most `len` bytes into the buffer it is given.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            id,
            buf.as_mut_ptr(),
            buf.len() as libc::c_long,
        )
    };
    (n == 32)
        .then(|| SecretKey::from_slice(&buf[..32]))
        .flatten()
}

/// Keeps the root key of the keystore in `dir` for `secs` seconds.
pub(super) fn put(dir: &Path, key: &SecretKey, secs: u32) -> Result<()> {
    let desc = description(dir);
    // SAFETY: add_key reads the type, the description and `plen` payload bytes, all
    // alive for the call.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            desc.as_ptr(),
            key.as_bytes().as_ptr(),
            key.as_bytes().len(),
            KEY_SPEC_USER_KEYRING,
        )
    };
    if id < 0 {
        return Err(err!(
            "cannot keep the key in the kernel keyring: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: keyctl with integer arguments only.
    let r = unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, PERM)
            | libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_SET_TIMEOUT,
                id,
                secs as libc::c_long,
            )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        drop_key(id);
        return Err(err!(
            "cannot set the key's timeout in the kernel keyring: {e}"
        ));
    }
    Ok(())
}

/// Forgets the root key of the keystore in `dir`; whether there was one.
pub(super) fn remove(dir: &Path) -> bool {
    match find(dir) {
        Some(id) => {
            drop_key(id);
            true
        }
        None => false,
    }
}

fn drop_key(id: libc::c_long) {
    // SAFETY: keyctl with integer arguments only.
    unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, id);
    }
}
