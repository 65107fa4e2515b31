//! Extended attributes, passed through to the backing object by descriptor; kmsfs's own
//! (`user.kmsfs.*`: the header) are neither shown nor writable.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;

use super::{FsResult, KmsFs};
use crate::format::RESERVED_XATTR_PREFIX;

/// The answer to getxattr / listxattr: the size asked for, or the value.
#[derive(Debug, PartialEq, Eq)]
pub enum Xattr {
    /// The caller passed size 0: the length only.
    Size(u32),
    /// The value (or the list of names, NUL-terminated).
    Data(Vec<u8>),
}

fn reserved(name: &[u8]) -> bool {
    name.starts_with(RESERVED_XATTR_PREFIX.as_bytes())
}

impl KmsFs {
    /// Linux keeps `user.*` xattrs to regular files and directories; a format 2 node
    /// file (a backing regular file standing for a symlink or special file) must too.
    fn user_refused(&self, ino: u64, name: &[u8]) -> FsResult<bool> {
        if self.names.is_none() || !name.starts_with(b"user.") {
            return Ok(false);
        }
        let i = self.inode(ino)?;
        Ok(!i.is_file() && !i.is_dir())
    }

    /// setxattr (`flags`: XATTR_CREATE, XATTR_REPLACE).
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        if reserved(name.as_bytes()) || self.user_refused(ino, name.as_bytes())? {
            return Err(Errno::EPERM.into());
        }
        // a default ACL, say: files made ahead there were made without it
        self.premade.forget(ino);
        let o = self.obj(ino)?;
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        Ok(crate::backing::setxattr_fd(o.fd(), name, value, flags)?)
    }

    /// getxattr: size 0 asks for the length only (getfattr, cp -a, rsync -X and tar ask
    /// that first); a buffer of exactly the caller's size otherwise (ERANGE if short).
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> FsResult<Xattr> {
        if reserved(name.as_bytes()) || self.user_refused(ino, name.as_bytes())? {
            return Err(Errno::NO_XATTR.into());
        }
        let o = self.obj(ino)?;
        let (n, v) = crate::backing::getxattr_fd(o.fd(), name, size as usize)?;
        Ok(if size == 0 {
            Xattr::Size(n as u32)
        } else {
            Xattr::Data(v)
        })
    }

    /// listxattr, without kmsfs's own names.
    pub fn listxattr(&self, ino: u64, size: u32) -> FsResult<Xattr> {
        let o = self.obj(ino)?;
        let buf = crate::backing::listxattr_fd(o.fd())?;
        let mut out = Vec::with_capacity(buf.len());
        for name in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            if !reserved(name) && !self.user_refused(ino, name)? {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        if size == 0 {
            Ok(Xattr::Size(out.len() as u32))
        } else if out.len() > size as usize {
            Err(Errno::ERANGE.into())
        } else {
            Ok(Xattr::Data(out))
        }
    }

    /// removexattr.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        if reserved(name.as_bytes()) || self.user_refused(ino, name.as_bytes())? {
            return Err(Errno::EPERM.into());
        }
        self.premade.forget(ino);
        let o = self.obj(ino)?;
        Ok(crate::backing::removexattr_fd(o.fd(), name)?)
    }
}
