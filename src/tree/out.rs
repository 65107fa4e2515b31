//! A directory the offline tools write plaintext into (`decrypt --out`, `fsck
//! --salvage`), reached only by descriptor.
//!
//! What is written there comes from a tree anyone may have written, so every path below
//! it is made one component at a time with `mkdirat`/`openat(O_NOFOLLOW)` from the
//! directory's own descriptor: a symlink found (or raced in) at any component is refused,
//! never followed, so nothing is created, truncated or written outside it ("zip slip").

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{err, Context, Result};

/// The target directory of a restore.
pub struct OutDir {
    fd: OwnedFd,
}

impl OutDir {
    /// Creates (if needed) and opens the directory the user named.
    pub fn create(path: &Path) -> Result<OutDir> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err!("cannot open {}: {e}", path.display()))?;
        Ok(OutDir { fd })
    }

    /// Its descriptor.
    #[cfg(test)]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory `rel` below it (plain names only), each missing component made
    /// (0700 until its files are in); a symlink or non-directory at any component is
    /// an error, not followed.
    pub fn dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let mut cur = rustix::io::dup(&self.fd)?;
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => return Err(Errno::XDEV),
            };
            cur = subdir(cur.as_fd(), name)?;
        }
        Ok(cur)
    }
}

/// The directory `name` in `dir`, made if missing (0700); never a symlink.
pub fn subdir(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    crate::backing::open_dir_at(dir, name)
}

/// Creates (or truncates) regular file `name` in `dir` for writing, mode 0600 until its
/// content is in. A symlink there is refused (`O_NOFOLLOW`), and so is anything but a
/// regular file (a FIFO would block: `O_NONBLOCK` makes it fail instead).
pub fn create_file(dir: BorrowedFd, name: &OsStr) -> Result<File, Errno> {
    let fd = crate::backing::open_at(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o600),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno::INVAL);
    }
    // Truncated only once it is known to be a regular file below the target.
    rustix::fs::ftruncate(&fd, 0)?;
    Ok(File::from(fd))
}

/// Removes whatever non-directory `name` in `dir` is (to recreate it), if anything.
pub fn remove_entry(dir: BorrowedFd, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_made_or_written_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let out = t.path().join("out");
        let o = OutDir::create(&out).unwrap();
        std::os::unix::fs::symlink(outside.path(), out.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), out.join("v")).unwrap();
        assert!(o.dir(Path::new("a/b")).is_err());
        assert!(o.dir(Path::new("a")).is_err());
        assert!(create_file(o.fd(), OsStr::new("v")).is_err());
        let d = o.dir(Path::new("x/y")).unwrap();
        create_file(d.as_fd(), OsStr::new("f")).unwrap();
        assert!(out.join("x/y/f").is_file());
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        assert_eq!(o.dir(Path::new("../z")).unwrap_err(), Errno::XDEV);
    }
}
