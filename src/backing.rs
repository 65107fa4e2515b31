//! Symlink-safe access to the backing tree.
//!
//! Whoever uses an `--allow-other` mount controls directory entries inside it and can
//! swap a directory for a symlink between two of the daemon's system calls; whoever
//! writes the backing tree can do the same to the tree commands. So an object is only
//! ever reached as (directory descriptor, one name) with `O_NOFOLLOW`, the directory
//! descriptor itself having been opened the same way, one component at a time from the
//! backing root. No multi-component path is handed to the kernel, and no symlink is
//! followed in any component. Once an object is created or opened, it is acted on
//! through its descriptor (`fchown`, `/proc/self/fd/N` for calls that have no
//! descriptor form), never through its name again.
//!
//! Every sealed backing file is read here too: `SealedFile` and `read_header_checked` are
//! the one way the mount, the tree commands and the offline tools get a header.
//!
//! Resolving one component at a time also means no path string is ever longer than one
//! name, so trees deeper than `PATH_MAX` work like on the backing filesystem itself.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::content::Content;
use crate::envelope::FileKeys;
use crate::format::{Geometry, Header, HEADER_XATTR};

/// Opens one name in `dir` without following a symlink there.
pub fn open_at(dir: BorrowedFd, name: &OsStr, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    check_name(name)?;
    rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode)
}

/// An `O_PATH` descriptor of the directory `name` in `dir` (a symlink there is refused
/// with `ELOOP`/`ENOTDIR`, never followed).
pub fn open_dir_at(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_at(dir, name, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
}

/// An `O_PATH` descriptor of whatever `name` in `dir` is (a symlink itself, not its target).
pub fn open_obj_at(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_at(dir, name, OFlags::PATH, Mode::empty())
}

/// A single path component: not empty, no `/`, not `.` or `..`.
fn check_name(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// The components of a path relative to a backing root: only plain names (`.` skipped);
/// an absolute path or `..` is refused, so nothing resolves outside the root.
fn components(rel: &Path) -> Result<Vec<&OsStr>, Errno> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(Errno::XDEV),
        })
        .collect()
}

/// The directory holding `rel` (opened component by component, `O_NOFOLLOW`) and the
/// final name. `rel` must name something below `root`.
pub fn parent_beneath<'a>(root: BorrowedFd, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr), Errno> {
    let comps = components(rel)?;
    let (last, dirs) = comps.split_last().ok_or(Errno::INVAL)?;
    let mut dir = rustix::io::dup(root)?;
    for c in dirs {
        dir = open_dir_at(dir.as_fd(), c)?;
    }
    Ok((dir, last))
}

/// Opens `rel` below `root` with `flags`, following no symlink in any component.
pub fn open_beneath(root: BorrowedFd, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    if components(rel)?.is_empty() {
        return rustix::fs::openat(root, ".", flags | OFlags::CLOEXEC, Mode::empty());
    }
    let (dir, name) = parent_beneath(root, rel)?;
    open_at(dir.as_fd(), name, flags, Mode::empty())
}

/// `/proc/self/fd/N`: path-based calls on it act on exactly the object behind the
/// descriptor (an `O_PATH` descriptor of a symlink included: the symlink itself).
pub fn proc_path(fd: BorrowedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Links exactly the object behind `fd` (an `O_PATH` or open descriptor, even of an
/// unnamed `O_TMPFILE`) as `name` in `dir`. `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH
/// (ENOENT without it); `/proc/self/fd/N` works for everyone else.
pub fn link_fd(fd: BorrowedFd, dir: BorrowedFd, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::linkat(fd, "", dir, name, rustix::fs::AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path(fd),
            dir,
            name,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        ),
        r => r,
    }
}

/// chmod of the object behind any descriptor (`O_PATH` included).
pub fn chmod_fd(fd: BorrowedFd, mode: Mode) -> Result<(), Errno> {
    rustix::fs::chmod(proc_path(fd), mode)
}

/// The value of xattr `name` of the object behind any descriptor; `size` 0 asks only for
/// its length (returned with an empty value).
pub fn getxattr_fd(fd: BorrowedFd, name: &OsStr, size: usize) -> Result<(usize, Vec<u8>), Errno> {
    let p = proc_path(fd);
    if size == 0 {
        return Ok((rustix::fs::getxattr_query(&p, name)?, vec![]));
    }
    let mut buf = vec![0u8; size];
    let n = rustix::fs::getxattr(&p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok((n, buf))
}

/// The NUL-separated xattr names of the object behind any descriptor.
pub fn listxattr_fd(fd: BorrowedFd) -> Result<Vec<u8>, Errno> {
    let p = proc_path(fd);
    // The list can grow between the query and the read: retry on ERANGE.
    for _ in 0..8 {
        let n = rustix::fs::listxattr_query(&p)?;
        let mut buf = vec![0u8; n.max(1)];
        match rustix::fs::listxattr(&p, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

/// Sets an xattr of the object behind `fd` (O_PATH descriptors go through /proc).
pub fn setxattr_fd(
    fd: BorrowedFd,
    name: &OsStr,
    value: &[u8],
    flags: rustix::fs::XattrFlags,
) -> Result<(), Errno> {
    rustix::fs::setxattr(proc_path(fd), name, value, flags)
}

/// Removes an xattr of the object behind `fd`.
pub fn removexattr_fd(fd: BorrowedFd, name: &OsStr) -> Result<(), Errno> {
    rustix::fs::removexattr(proc_path(fd), name)
}

/// The stored place of the directory behind `fd` (`format::auth::PLACE_XATTR`), if any;
/// an oversized one is cut to one byte more than a valid value (and then fails).
pub fn read_place(fd: BorrowedFd) -> Option<Vec<u8>> {
    let name = OsStr::new(crate::format::auth::PLACE_XATTR);
    getxattr_fd(fd, name, crate::format::auth::PLACE_MAX + 1)
        .ok()
        .map(|(_, v)| v)
}

/// The largest header xattr we read: a header with several wraps is ~250 B each.
pub const MAX_HEADER_LEN: usize = 8192;

/// Why a header could not be read from a backing file.
#[derive(Debug, thiserror::Error)]
pub enum HeaderReadError {
    #[error("no kmsfs header ({HEADER_XATTR} missing); was it copied without xattrs?")]
    /// The file has no header xattr.
    Missing,
    #[error("cannot read header: {0}")]
    /// The xattr could not be read.
    Io(Errno),
    #[error("invalid header: {0}")]
    /// The header does not decode.
    Invalid(#[from] crate::format::HeaderError),
    #[error("header chunk size 2^{header_shift} differs from the tree's {tree}")]
    /// The header's chunk size is not the tree's.
    ChunkSize {
        /// log2 of the header's chunk size.
        header_shift: u8,
        /// The tree's chunk size.
        tree: u64,
    },
}

/// Reads and decodes the header of an open backing file (bounded to `MAX_HEADER_LEN`).
pub fn read_header(file: &File) -> Result<Header, HeaderReadError> {
    let mut buf = vec![0u8; MAX_HEADER_LEN];
    let n = match rustix::fs::fgetxattr(file, HEADER_XATTR, &mut buf[..]) {
        Ok(n) => n,
        Err(Errno::NODATA) => return Err(HeaderReadError::Missing),
        Err(e) => return Err(HeaderReadError::Io(e)),
    };
    Ok(Header::decode(&buf[..n])?)
}

/// Reads the header of an open backing file and checks it against the tree's geometry:
/// the one way every reader of backing files (mount, tree commands, offline tools) gets
/// a header.
pub fn read_header_checked(file: &File, geo: Geometry) -> Result<Header, HeaderReadError> {
    let h = read_header(file)?;
    if 1u64 << h.chunk_shift != geo.chunk {
        return Err(HeaderReadError::ChunkSize {
            header_shift: h.chunk_shift,
            tree: geo.chunk,
        });
    }
    Ok(h)
}

/// Writes the header of a new backing file (by descriptor; fails if it has one).
pub fn create_header(fd: BorrowedFd, h: &Header) -> crate::Result<()> {
    let bytes = h.encode()?;
    rustix::fs::fsetxattr(fd, HEADER_XATTR, &bytes, rustix::fs::XattrFlags::CREATE)
        .map_err(|e| crate::Error::from(e).context("cannot write the header"))
}

/// Replaces the header of an open backing file in one atomic `fsetxattr(XATTR_REPLACE)`.
pub fn replace_header(file: &File, h: &Header) -> crate::Result<()> {
    let bytes = h.encode()?;
    rustix::fs::fsetxattr(file, HEADER_XATTR, &bytes, rustix::fs::XattrFlags::REPLACE)
        .map_err(|e| crate::Error::from(e).context("cannot replace header"))
}

/// A sealed backing file opened by descriptor, with its checked header and its length.
pub struct SealedFile {
    /// The backing file.
    pub file: File,
    /// Its header, checked against the tree's chunk size.
    pub header: Header,
    /// Its length in the backing tree (ciphertext).
    pub backing_len: u64,
}

impl SealedFile {
    /// Reads the header of the open backing `file` (checked against `geo`) and its length.
    pub fn open(file: File, geo: Geometry) -> crate::Result<SealedFile> {
        let backing_len = file.metadata()?.len();
        let header = read_header_checked(&file, geo)?;
        Ok(SealedFile {
            file,
            header,
            backing_len,
        })
    }

    /// Its plaintext size, or an error if the backing length ends in a fragment.
    pub fn plain_size(&self, geo: Geometry) -> crate::Result<u64> {
        geo.plain_size(self.backing_len).ok_or_else(|| {
            crate::Error::damaged(format!(
                "backing size {} is not a whole number of chunks",
                self.backing_len
            ))
        })
    }

    /// Its content under `keys` (the keys its header opens to).
    pub fn content<'a>(&'a self, keys: &'a FileKeys, geo: Geometry) -> Content<'a> {
        Content::new(&self.file, keys, &self.header.file_id, geo)
    }
}

/// Opens a regular backing file below `root` (no symlink followed anywhere) for reading.
pub fn open_file_beneath(root: BorrowedFd, rel: &Path, flags: OFlags) -> Result<File, Errno> {
    let fd = open_beneath(root, rel, flags)?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno::INVAL);
    }
    Ok(File::from(fd))
}

/// An `O_PATH` descriptor of a backing root directory.
pub fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn never_follows_a_symlink_in_any_component() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root_dir = t.path().join("root");
        std::fs::create_dir_all(root_dir.join("a/b")).unwrap();
        std::fs::write(root_dir.join("a/b/f"), b"x").unwrap();
        symlink(outside.path(), root_dir.join("a/link")).unwrap();
        symlink(root_dir.join("a/b/f"), root_dir.join("a/flink")).unwrap();
        let root = open_root(&root_dir).unwrap();
        let r = root.as_fd();
        assert!(open_file_beneath(r, Path::new("a/b/f"), OFlags::RDONLY).is_ok());
        for bad in [
            "a/link/secret",
            "a/flink",
            "../root/a/b/f",
            "/etc/passwd",
            "a/../a/b/f",
        ] {
            let e = open_file_beneath(r, Path::new(bad), OFlags::RDONLY).unwrap_err();
            assert!(
                matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::XDEV),
                "{bad}: {e:?}"
            );
        }
        // a path longer than PATH_MAX resolves, one component at a time
        let mut deep = root_dir.clone();
        let mut rel = std::path::PathBuf::new();
        let name = "n".repeat(250);
        for _ in 0..20 {
            let fd = open_beneath(r, &rel, OFlags::PATH | OFlags::DIRECTORY).unwrap();
            rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            deep.push(&name);
            rel.push(&name);
        }
        assert!(rel.as_os_str().len() > 4096);
        let (dir, last) = parent_beneath(r, &rel).unwrap();
        assert_eq!(last, OsStr::new(&name));
        assert!(open_dir_at(dir.as_fd(), last).is_ok());
    }

    #[test]
    fn xattr_length_query_and_value_through_a_path_descriptor() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let root = open_root(t.path()).unwrap();
        let fd = open_obj_at(root.as_fd(), OsStr::new("f")).unwrap();
        setxattr_fd(
            fd.as_fd(),
            OsStr::new("user.test"),
            b"hello",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let (n, v) = getxattr_fd(fd.as_fd(), OsStr::new("user.test"), 0).unwrap();
        assert_eq!((n, v.len()), (5, 0), "size 0 asks for the length");
        let (n, v) = getxattr_fd(fd.as_fd(), OsStr::new("user.test"), 64).unwrap();
        assert_eq!((n, &v[..]), (5, &b"hello"[..]));
        assert_eq!(listxattr_fd(fd.as_fd()).unwrap(), b"user.test\0");
        removexattr_fd(fd.as_fd(), OsStr::new("user.test")).unwrap();
        assert_eq!(
            getxattr_fd(fd.as_fd(), OsStr::new("user.test"), 0).unwrap_err(),
            Errno::NODATA
        );
    }
}
