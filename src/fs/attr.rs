//! Attributes: conversion from the backing file's stat (plaintext size for regular
//! files), getattr, setattr (mode, owner, size, times) and the privilege kill of writes.

use std::fs::File;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::fd::AsFd;

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use rustix::fs::{AtFlags, Mode};

use super::error::rerr;
use super::{FsResult, KmsFs, Obj, OpenFile};

/// What a setattr changes (each `None` is left alone).
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    /// Permission bits (and set-id, sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeOrNow>,
    /// New modification time.
    pub mtime: Option<TimeOrNow>,
    /// The handle the caller used, if any (ftruncate).
    pub fh: Option<u64>,
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

pub(super) fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(st)) => {
            let (sec, nsec) = match st.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = d.subsec_nanos() as i64;
                    if nsec > 0 {
                        sec -= 1;
                        nsec = 1_000_000_000 - nsec;
                    }
                    (sec, nsec)
                }
            };
            rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

impl KmsFs {
    pub(super) fn attr_from_stat(&self, ino: u64, st: &rustix::fs::Stat) -> FileAttr {
        let kind = file_type(st.st_mode);
        let size = if kind == FileType::RegularFile {
            match self.open_state(ino) {
                Some(of) => *of.size.read(),
                None => self.geo.plain_size_lossy(st.st_size as u64),
            }
        } else {
            st.st_size as u64
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: st.st_blocks as u64,
            atime: systime(st.st_atime, st.st_atime_nsec as i64),
            mtime: systime(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: systime(st.st_ctime, st.st_ctime_nsec as i64),
            crtime: UNIX_EPOCH,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of an inode: through its open descriptor when it has one (that also
    /// covers files unlinked while open), the directory's descriptor, else by its name.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        let st = match self.open_state(ino) {
            Some(of) => rustix::fs::fstat(&of.file).map_err(rerr)?,
            None => {
                let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
                if inode.is_dir() {
                    rustix::fs::fstat(&*self.dir(ino)?).map_err(rerr)?
                } else {
                    match self.locate(&inode) {
                        Ok((pfd, name, st)) => self.shown(pfd.as_fd(), &name, st)?,
                        // removed, still open (lazy opens)
                        Err(e) => match self.parked_fd(ino) {
                            Some(fd) => rustix::fs::fstat(&*fd).map_err(rerr)?,
                            None => return Err(e),
                        },
                    }
                }
            }
        };
        Ok(self.attr_from_stat(ino, &st))
    }

    /// Changes attributes of `ino` for `caller_uid`; answers the new attributes.
    pub fn setattr(&self, caller_uid: u32, ino: u64, a: SetAttr) -> FsResult<FileAttr> {
        let inode = self.inode(ino)?;
        if let Some(m) = a.mode {
            if inode.is_symlink() {
                return Err(Errno::EOPNOTSUPP.into());
            }
            let m = Mode::from_raw_mode(m & 0o7777);
            match self.obj(ino)? {
                Obj::Open(of) => rustix::fs::fchmod(&of.file, m),
                o => crate::backing::chmod_fd(o.fd(), m),
            }
            .map_err(rerr)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            let (u, g) = (
                a.uid.map(rustix::fs::Uid::from_raw),
                a.gid.map(rustix::fs::Gid::from_raw),
            );
            let o = self.obj(ino)?;
            rustix::fs::chownat(o.fd(), "", u, g, AtFlags::EMPTY_PATH).map_err(rerr)?;
        }
        if let Some(new_size) = a.size {
            if !inode.is_file() {
                return Err(if inode.is_dir() {
                    Errno::EISDIR
                } else {
                    Errno::EINVAL
                }
                .into());
            }
            // With HANDLE_KILLPRIV_V2 the kernel leaves the privilege kill of a
            // truncate to us (its flag for it does not reach us through fuser):
            // callers other than root lose set-user-ID like on any filesystem.
            let kill = caller_uid != 0 && a.mode.is_none();
            let truncate = |of: &OpenFile| -> FsResult<()> {
                self.truncate_open(of, new_size)?;
                if kill {
                    kill_suidgid(&of.file)?;
                }
                Ok(())
            };
            match a.fh.and_then(|fh| self.handle(fh).ok()) {
                Some(h) => truncate(&h.file)?,
                None => {
                    let of = self.acquire_open_with(&inode, true, None, new_size == 0)?;
                    let r = truncate(&of);
                    self.release_open(inode.ino);
                    r?;
                }
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let ts = rustix::fs::Timestamps {
                last_access: to_timespec(a.atime),
                last_modification: to_timespec(a.mtime),
            };
            let o = self.obj(ino)?;
            rustix::fs::utimensat(o.fd(), "", &ts, AtFlags::EMPTY_PATH).map_err(rerr)?;
        }
        self.getattr(ino)
    }
}

/// What a write by a caller without CAP_FSETID does to a file (the kernel tells us with
/// HANDLE_KILLPRIV_V2): set-user-ID goes, set-group-ID goes if group-executable, and
/// file capabilities go. True if the mode changed.
pub(super) fn kill_suidgid(file: &File) -> FsResult<bool> {
    let st = rustix::fs::fstat(file).map_err(rerr)?;
    let mut mode = st.st_mode & 0o7777;
    let old = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != old {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(rerr)?;
    }
    match rustix::fs::fremovexattr(file, "security.capability") {
        Ok(()) | Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(mode != old),
        Err(e) => Err(rerr(e).into()),
    }
}
