//! Names and directories: lookup, creating nodes (files with their header in place
//! before their name, then everything handed to the caller through its descriptor),
//! removing and renaming, hard links, and reading directories.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType};
use rustix::fs::{AtFlags, Mode, OFlags};

use super::error::{rerr, FsError};
use super::names::stat_at;
use super::names::Place;
use super::{unlink_if_same, Caller, DirHandle, FsResult, KmsFs, NO_HANDLE, ROOT_INO};
use crate::format::names::{Node, NodeKind};
use crate::format::{Header, CONFIG_FILE, TEMP_PREFIX};

impl KmsFs {
    /// Looks up `name` in `parent`, registering the inode (one kernel lookup reference).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        if self.is_hidden(parent, name.as_bytes()) {
            return Err(Errno::ENOENT.into());
        }
        let pfd = self.dir(parent)?;
        let b = self.bname(pfd.as_fd(), name)?;
        let st = stat_at(pfd.as_fd(), &b.name)?;
        let st = self.shown(pfd.as_fd(), &b.name, st)?;
        Ok(self.entered(parent, &b.name, &st))
    }

    /// Registers `name` in `parent` as the object `st` (one kernel lookup reference).
    fn entered(&self, parent: u64, name: &OsStr, st: &rustix::fs::Stat) -> FileAttr {
        let inode = self.inodes.insert(parent, name, st);
        self.attr_from_stat(inode.ino, st)
    }

    /// Does a node made by this caller need to be given to them? (Made by a caller with
    /// our own ids, the kernel already gave it the owner and group chown would.)
    fn needs_chown(caller: Caller) -> bool {
        rustix::process::geteuid().is_root()
            && !(caller.uid == rustix::process::geteuid().as_raw()
                && caller.gid == rustix::process::getegid().as_raw())
    }

    /// Gives the new node behind `obj` to the caller (uid, and gid unless the set-group-ID
    /// bit of its directory `pfd` decides it), through its descriptor.
    fn chown_new(&self, pfd: BorrowedFd, obj: BorrowedFd, caller: Caller) -> FsResult<()> {
        let pst = rustix::fs::fstat(pfd).map_err(rerr)?;
        let gid = (pst.st_mode & libc::S_ISGID == 0).then_some(caller.gid);
        rustix::fs::chownat(
            obj,
            "",
            Some(rustix::fs::Uid::from_raw(caller.uid)),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::EMPTY_PATH,
        )?;
        Ok(())
    }

    /// Creates a regular file with its header already in place before any data byte;
    /// returns its descriptor (read-write), header, attributes and backing name.
    fn create_file(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> FsResult<(File, Arc<Header>, rustix::fs::Stat, OsString)> {
        let (pfd, b) = self.parent_for(parent, name)?;
        let mode = Mode::from_raw_mode(mode & 0o7777);
        let made = self.create_backing(parent, &pfd, &b, mode, caller);
        if made.is_ok() {
            self.premade.created(parent, &pfd);
        }
        made
    }

    /// `create_file`'s backing part: a file made ahead in the directory if there is one
    /// (see `premade`), else a new one.
    fn create_backing(
        &self,
        parent: u64,
        pfd: &Arc<OwnedFd>,
        b: &super::names::Bname,
        mode: Mode,
        caller: Caller,
    ) -> FsResult<(File, Arc<Header>, rustix::fs::Stat, OsString)> {
        let name = b.name.as_os_str();
        if let Some(r) = self.premade.take(parent, pfd.as_fd()) {
            match self.adopt(r, pfd, b, mode, caller) {
                Ok(made) => return Ok(made),
                Err(e) if e.errno == Errno::EEXIST => return Err(e),
                // Anything else (the directory removed meanwhile, say): the usual way.
                Err(_) => {}
            }
        }
        // The name appears only once the header (and owner) are in place: an unnamed
        // O_TMPFILE is prepared, then linked in (EEXIST there is O_EXCL's answer). A
        // rotation, fsck or crash never meets a new file without its header.
        let tmp = rustix::fs::openat(
            &**pfd,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        );
        let (fd, h) = match tmp {
            Ok(fd) => {
                let h = self.prepare_new(&fd, pfd, parent, name, caller)?;
                self.put_long(fd.as_fd(), b)?;
                crate::backing::link_fd(fd.as_fd(), pfd.as_fd(), name).map_err(rerr)?;
                (fd, h)
            }
            // No O_TMPFILE on this backing filesystem: create, then write the header.
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                let fd = crate::backing::open_at(
                    pfd.as_fd(),
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                    mode,
                )
                .map_err(rerr)?;
                let st = rustix::fs::fstat(&fd).map_err(rerr)?;
                match self
                    .prepare_new(&fd, pfd, parent, name, caller)
                    .and_then(|h| self.put_long(fd.as_fd(), b).map(|_| h))
                {
                    Ok(h) => (fd, h),
                    Err(e) => {
                        // Undo by name only while the name still holds what we made.
                        unlink_if_same(pfd.as_fd(), name, &st);
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.created_new(fd, h, b)
    }

    /// A new file, named: its key noted as this mount's own, and what a create answers.
    fn created_new(
        &self,
        fd: OwnedFd,
        h: Header,
        b: &super::names::Bname,
    ) -> FsResult<(File, Arc<Header>, rustix::fs::Stat, OsString)> {
        let st = rustix::fs::fstat(&fd).map_err(rerr)?;
        self.known.lock().put((st.st_dev, st.st_ino), h.file_id);
        Ok((File::from(fd), Arc::new(h), st, b.name.clone()))
    }

    /// Links in a file made ahead as a new one: the mode asked for, times of now, the
    /// caller as owner, then the name (as the usual way: the name comes last).
    fn adopt(
        &self,
        r: super::premade::Ready,
        pfd: &Arc<OwnedFd>,
        b: &super::names::Bname,
        mode: Mode,
        caller: Caller,
    ) -> FsResult<(File, Arc<Header>, rustix::fs::Stat, OsString)> {
        let (fd, h) = r.into_parts();
        rustix::fs::fchmod(&fd, mode).map_err(rerr)?;
        let now = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW as _,
        };
        rustix::fs::futimens(
            &fd,
            &rustix::fs::Timestamps {
                last_access: now,
                last_modification: now,
            },
        )
        .map_err(rerr)?;
        self.note_own_key(h.file_id);
        if Self::needs_chown(caller) {
            self.chown_new(pfd.as_fd(), fd.as_fd(), caller)?;
        }
        self.put_long(fd.as_fd(), b)?;
        crate::backing::link_fd(fd.as_fd(), pfd.as_fd(), b.name.as_os_str()).map_err(rerr)?;
        self.created_new(fd, h, b)
    }

    /// Gives a new file (by its descriptor) its header and its owner.
    fn prepare_new(
        &self,
        fd: &OwnedFd,
        pfd: &OwnedFd,
        parent: u64,
        name: &OsStr,
        caller: Caller,
    ) -> FsResult<Header> {
        let bpath = || self.display_child(parent, name);
        let (h, _keys) = self.env.take_header().map_err(|e| {
            FsError::eio(format_args!(
                "{}: cannot create a data key for the new file: {e}",
                bpath()
            ))
        })?;
        self.note_own_key(h.file_id);
        self.env
            .write_new_header(fd.as_fd(), &h)
            .map_err(|e| FsError {
                errno: Errno::from_i32(e.errno().unwrap_or(libc::EIO)),
                log: Some((tracing::Level::ERROR, format!("{}: new file: {e}", bpath()))),
            })?;
        if Self::needs_chown(caller) {
            self.chown_new(pfd.as_fd(), fd.as_fd(), caller)?;
        }
        Ok(h)
    }

    /// Makes a node of type `fmt` with `make(directory, name)`, hands it to the caller
    /// through its own descriptor, and answers with its entry.
    fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        fmt: u32,
        make: impl FnOnce(BorrowedFd, &OsStr) -> rustix::io::Result<()>,
    ) -> FsResult<FileAttr> {
        let (pfd, b) = self.parent_for(parent, name)?;
        let final_name = b.name.as_os_str();
        // A format 2 directory gets its id, long name and place through its descriptor,
        // under a hidden temp name, and is renamed in complete: a crash never leaves one
        // without them (its place could not be told from a planted one's).
        let v2_dir = self.names.is_some() && fmt == libc::S_IFDIR;
        let tmp = v2_dir.then(|| {
            OsString::from(format!(
                "{TEMP_PREFIX}dir.{}",
                hex::encode(crate::crypto::random_bytes::<8>())
            ))
        });
        let name = tmp.as_deref().unwrap_or(final_name);
        make(pfd.as_fd(), name)?;
        if !Self::needs_chown(caller) && !v2_dir {
            let st = rustix::fs::statat(&*pfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
            return Ok(self.entered(parent, name, &st));
        }
        let fd = crate::backing::open_obj_at(pfd.as_fd(), name).map_err(rerr)?;
        let st = rustix::fs::fstat(&fd).map_err(rerr)?;
        // Only what we just made (of its type, still ours) is handed over: an object
        // swapped in under the name in between is left alone.
        if st.st_mode & libc::S_IFMT != fmt || st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(FsError::logged(
                Errno::EAGAIN,
                tracing::Level::WARN,
                format!(
                    "{}: replaced while being created; not handing it to uid {}",
                    self.display_child(parent, name),
                    caller.uid
                ),
            ));
        }
        let setup = || -> FsResult<()> {
            if v2_dir {
                self.new_dir_id(fd.as_fd())?;
                self.put_long(fd.as_fd(), &b)?;
                let parent_id = self.dir_id(pfd.as_fd())?;
                self.put_place(fd.as_fd(), &[(&parent_id, final_name.as_bytes())])?;
            }
            if Self::needs_chown(caller) {
                self.chown_new(pfd.as_fd(), fd.as_fd(), caller)?;
            }
            if let Some(t) = &tmp {
                rustix::fs::renameat_with(
                    &*pfd,
                    t,
                    &*pfd,
                    final_name,
                    rustix::fs::RenameFlags::NOREPLACE,
                )?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            unlink_if_same(pfd.as_fd(), name, &st);
            return Err(e);
        }
        let st = rustix::fs::fstat(&fd).map_err(rerr)?;
        Ok(self.entered(parent, final_name, &st))
    }

    /// A symlink or special file of a format 2 tree: a node file, complete (record, long
    /// name, owner) before its name appears.
    fn make_node_file_named(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        node: Node,
        mode: u32,
    ) -> FsResult<FileAttr> {
        let (pfd, b) = self.parent_for(parent, name)?;
        let fd = self.make_node_file(pfd.as_fd(), &node, mode)?;
        self.put_long(fd.as_fd(), &b)?;
        if Self::needs_chown(caller) {
            self.chown_new(pfd.as_fd(), fd.as_fd(), caller)?;
        }
        crate::backing::link_fd(fd.as_fd(), pfd.as_fd(), &b.name).map_err(rerr)?;
        let st = rustix::fs::fstat(&fd).map_err(rerr)?;
        let st = self.shown(pfd.as_fd(), &b.name, st)?;
        Ok(self.entered(parent, &b.name, &st))
    }

    /// Opens a directory inode for reading (readdir, fsyncdir).
    fn dir_fd(&self, ino: u64) -> FsResult<OwnedFd> {
        let fd = self.dir(ino)?;
        Ok(rustix::fs::openat(
            &*fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rerr)?)
    }

    /// The kernel dropped `nlookup` references to `ino`. Files made ahead in a directory
    /// stay (each holds its directory open, `premade::Ready`): freeing them here put
    /// their disk reads (ext4 reads a file's xattr block to free it) in the way of the
    /// lookups that follow memory pressure — a cold stat of 5,000 files read the disk
    /// 272-402 times against 227-235 without files made ahead, 222-232 once kept.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        if self.inodes.forget(ino, nlookup) {
            self.dirs.remove(ino);
            self.let_go(ino);
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        if self.names.is_some() {
            let inode = self.inode(ino)?;
            if !inode.is_symlink() {
                return Err(Errno::EINVAL.into());
            }
            return self.read_link_node(&inode);
        }
        let o = self.obj(ino)?;
        Ok(rustix::fs::readlinkat(o.fd(), "", Vec::new())?.into_bytes())
    }

    /// mknod: a regular file (with its header), fifo, socket or device node.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<FileAttr> {
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            let (_, _, st, bname) = self.create_file(parent, name, mode, caller)?;
            return Ok(self.entered(parent, &bname, &st));
        }
        if self.names.is_some() {
            let kind = NodeKind::from_fmt(mode & libc::S_IFMT).ok_or(Errno::EINVAL)?;
            let node = Node {
                kind,
                rdev: rdev as u64,
                target: vec![],
            };
            return self.make_node_file_named(caller, parent, name, node, mode);
        }
        self.make_node(caller, parent, name, mode & libc::S_IFMT, |dir, name| {
            let kind = rustix::fs::FileType::from_raw_mode(mode);
            rustix::fs::mknodat(
                dir,
                name,
                kind,
                Mode::from_raw_mode(mode & 0o7777),
                rdev as u64,
            )
        })
    }

    /// mkdir.
    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> FsResult<FileAttr> {
        self.make_node(caller, parent, name, libc::S_IFDIR, |dir, name| {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o7777))
        })
    }

    /// symlink `name` -> `target` (any bytes, up to the backing filesystem's limit).
    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> FsResult<FileAttr> {
        if self.names.is_some() {
            let node = Node {
                kind: NodeKind::Symlink,
                rdev: 0,
                target: target.as_os_str().as_bytes().to_vec(),
            };
            return self.make_node_file_named(caller, parent, name, node, 0o600);
        }
        self.make_node(caller, parent, name, libc::S_IFLNK, |dir, name| {
            rustix::fs::symlinkat(target, dir, name)
        })
    }

    /// unlink (a file's cached header goes with its last link).
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let (pfd, b) = self.parent_for(parent, name)?;
        let name = b.name.as_os_str();
        // Held across the unlinkat: a last link's file is then freed by the reaper, after
        // the reply (see `reaper`); a hashed name's xattr goes with the link (other links
        // keep theirs).
        let held = crate::backing::open_obj_at(pfd.as_fd(), name).ok();
        let st = match &held {
            Some(fd) => rustix::fs::fstat(fd).ok(),
            None => rustix::fs::statat(&*pfd, name, AtFlags::SYMLINK_NOFOLLOW).ok(),
        };
        let file = st.filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        let last = file
            .filter(|st| st.st_nlink == 1)
            .map(|st| (st.st_dev, st.st_ino));
        // A last link: the kernel may still have the file open, and lazy opens then
        // reach it only through this (other links keep it reachable by name).
        let victim = last.and_then(|_| self.inodes.child(parent, name));
        rustix::fs::unlinkat(&*pfd, name, AtFlags::empty())?;
        if let Some(fd) = &held {
            if b.long.is_some() && rustix::fs::fstat(fd).is_ok_and(|st| st.st_nlink > 0) {
                self.drop_long(fd.as_fd(), &b);
            }
        }
        self.inodes.unlinked(parent, name);
        if let Some(k) = last {
            self.known.lock().pop(&k);
        }
        if let Some(fd) = held {
            self.park(victim, fd);
        }
        Ok(())
    }

    /// rmdir.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let (pfd, b) = self.parent_for(parent, name)?;
        let name = b.name.as_os_str();
        // Held across the unlinkat, as a file's last link (see `unlink`): its blocks and
        // xattr block are freed by the reaper, after the reply.
        let held = crate::backing::open_dir_at(pfd.as_fd(), name).ok();
        let gone = match &held {
            Some(fd) => rustix::fs::fstat(fd).ok(),
            None => stat_at(pfd.as_fd(), name).ok(),
        };
        rustix::fs::unlinkat(&*pfd, name, AtFlags::REMOVEDIR)?;
        if let Some(st) = gone {
            self.forget_dir_id(&st);
        }
        if let Some(gone) = self.inodes.child(parent, name) {
            self.dirs.remove(gone);
            self.premade.forget(gone);
        }
        self.inodes.unlinked(parent, name);
        if let Some(fd) = held {
            self.reaper.release(fd);
        }
        Ok(())
    }

    /// rename / renameat2 (`flags`: RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        let flags = rustix::fs::RenameFlags::from_bits_retain(flags);
        // RENAME_WHITEOUT leaves a 0:0 character device behind: a format 2 tree holds
        // only kmsfs's node files, so the mount would refuse that entry forever (EIO).
        // Refused as filesystems without whiteouts refuse it (overlayfs then falls back).
        if self.names.is_some() && flags.contains(rustix::fs::RenameFlags::WHITEOUT) {
            return Err(Errno::EINVAL.into());
        }
        let exchange = flags.contains(rustix::fs::RenameFlags::EXCHANGE);
        let (from, b1) = self.parent_for(parent, name)?;
        let (to, b2) = self.parent_for(newparent, newname)?;
        let (name, newname) = (b1.name.as_os_str(), b2.name.as_os_str());
        let src_st = stat_at(from.as_fd(), name)?;
        let dst_st = stat_at(to.as_fd(), newname).ok();
        // Two links of one file: rename(2) does nothing, and neither must we.
        if dst_st.is_some_and(|d| (d.st_dev, d.st_ino) == (src_st.st_dev, src_st.st_ino)) {
            return Ok(rustix::fs::renameat_with(
                &*from, name, &*to, newname, flags,
            )?);
        }
        // What the rename replaces: a file's last link (its cached header goes), or a
        // directory (its cached id goes: a new directory may get its inode number).
        let fmt = |st: &rustix::fs::Stat| st.st_mode & libc::S_IFMT;
        let replaced = dst_st
            .filter(|d| !exchange && fmt(d) == libc::S_IFREG && d.st_nlink == 1)
            .map(|d| (d.st_dev, d.st_ino));
        let replaced_dir = dst_st.filter(|d| !exchange && fmt(d) == libc::S_IFDIR);
        // The file replaced is freed by the reaper, after the reply (see `reaper`).
        let held = replaced.and_then(|_| crate::backing::open_obj_at(to.as_fd(), newname).ok());
        // Hashed names: the object gets its new name's xattr before the rename, and
        // loses the old one after (an exchange swaps them).
        let same = Arc::ptr_eq(&from, &to) && name == newname;
        let long = b1.long.is_some() || b2.long.is_some();
        let src = (long && !same)
            .then(|| crate::backing::open_obj_at(from.as_fd(), name))
            .transpose()?;
        let dst = (long && !same && exchange)
            .then(|| crate::backing::open_obj_at(to.as_fd(), newname))
            .transpose()?;
        let added_src = match &src {
            Some(fd) => self.put_long(fd.as_fd(), &b2)?,
            None => false,
        };
        let added_dst = match &dst {
            Some(fd) => self.put_long(fd.as_fd(), &b1),
            None => Ok(false),
        };
        let undo = |added_dst: bool| {
            if let (Some(fd), true) = (&src, added_src) {
                self.drop_long(fd.as_fd(), &b2);
            }
            if let (Some(fd), true) = (&dst, added_dst) {
                self.drop_long(fd.as_fd(), &b1);
            }
        };
        let added_dst = match added_dst {
            Ok(a) => a,
            Err(e) => {
                undo(false);
                return Err(e);
            }
        };
        // A directory is bound to its place: it takes its new place (keeping the old one
        // too until the rename is done, so a crash in between leaves it valid at either).
        let places = match self.moving_places(
            &from,
            name,
            &src_st,
            &to,
            newname,
            dst_st.as_ref(),
            exchange,
        ) {
            Ok(p) => p,
            Err(e) => {
                undo(added_dst);
                return Err(e);
            }
        };
        if let Err(e) = rustix::fs::renameat_with(&*from, name, &*to, newname, flags) {
            undo(added_dst);
            for (fd, old, _) in &places {
                let _ = self.put_place(fd.as_fd(), &[(&old.0, &old.1)]);
            }
            return Err(e.into());
        }
        for (fd, _, new) in &places {
            if let Err(e) = self.put_place(fd.as_fd(), &[(&new.0, &new.1)]) {
                tracing::warn!("a renamed directory keeps its old place too: {e:?}");
            }
        }
        if let Some(fd) = &src {
            self.drop_long(fd.as_fd(), &b1);
        }
        if let Some(fd) = &dst {
            self.drop_long(fd.as_fd(), &b2);
        }
        if let Some(st) = replaced_dir {
            self.forget_dir_id(&st);
        }
        // The kernel may still have the replaced file open (see `unlink`).
        let victim = held
            .as_ref()
            .and_then(|_| self.inodes.child(newparent, newname));
        self.inodes
            .renamed(parent, name, newparent, newname, exchange);
        if let Some(k) = replaced {
            self.known.lock().pop(&k);
        }
        if let Some(fd) = held {
            self.park(victim, fd);
        }
        Ok(())
    }

    /// Format 2: the directories a rename moves (the source, and with RENAME_EXCHANGE the
    /// target), each given both its old and its new place before the rename; answers
    /// (descriptor, old place, new place) of each.
    #[allow(clippy::too_many_arguments)]
    fn moving_places(
        &self,
        from: &OwnedFd,
        name: &OsStr,
        src_st: &rustix::fs::Stat,
        to: &OwnedFd,
        newname: &OsStr,
        dst_st: Option<&rustix::fs::Stat>,
        exchange: bool,
    ) -> FsResult<Vec<(OwnedFd, Place, Place)>> {
        let is_dir = |st: &rustix::fs::Stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let moves_dir = is_dir(src_st) || (exchange && dst_st.is_some_and(is_dir));
        if !self.binds_places() || !moves_dir {
            return Ok(vec![]);
        }
        let (from_id, to_id) = (self.dir_id(from.as_fd())?, self.dir_id(to.as_fd())?);
        let mut moves = vec![];
        if is_dir(src_st) {
            moves.push((from, name, (from_id, name), (to_id, newname)));
        }
        if exchange && dst_st.is_some_and(is_dir) {
            moves.push((to, newname, (to_id, newname), (from_id, name)));
        }
        let mut out = vec![];
        for (dir, n, old, new) in moves {
            let fd = crate::backing::open_dir_at(dir.as_fd(), n).map_err(rerr)?;
            let old = (old.0, old.1.as_bytes().to_vec());
            let new = (new.0, new.1.as_bytes().to_vec());
            self.put_place(fd.as_fd(), &[(&new.0, &new.1), (&old.0, &old.1)])?;
            out.push((fd, old, new));
        }
        Ok(out)
    }

    /// A hard link to `ino` (exactly the object behind its descriptor, not whatever one
    /// of its names holds now).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> FsResult<FileAttr> {
        let from = self.obj(ino)?;
        let (to, b) = self.parent_for(newparent, newname)?;
        let added = self.put_long(from.fd(), &b)?;
        if let Err(e) = crate::backing::link_fd(from.fd(), to.as_fd(), &b.name) {
            if added {
                self.drop_long(from.fd(), &b);
            }
            return Err(e.into());
        }
        self.lookup(newparent, newname)
    }

    /// create (O_CREAT): a new file, its header in place before its name; answers its
    /// attributes and a handle.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(FileAttr, u64)> {
        let (inode, created) = match self.create_file(parent, name, mode, caller) {
            Ok((file, header, st, bname)) => (
                self.inodes.insert(parent, &bname, &st),
                Some((file, header, st)),
            ),
            // Lost a race with another creator and O_EXCL was not asked: open it.
            Err(e) if e.errno == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                let attr = self.lookup(parent, name)?;
                (self.inode(attr.ino.0)?, None)
            }
            Err(e) => return Err(e),
        };
        let st = created.as_ref().map(|c| c.2);
        let of = match self.acquire_open_with(&inode, true, created, false) {
            Ok(of) => of,
            Err(e) => {
                self.inodes.forget(inode.ino, 1);
                return Err(e);
            }
        };
        if flags & libc::O_TRUNC != 0 {
            let _ = self.truncate_open(&of, 0);
        }
        let fh = if self.lazy_open {
            self.hold(inode.ino, of);
            NO_HANDLE
        } else {
            self.new_handle(of, inode.ino, flags)
        };
        let attr = match st {
            Some(st) => self.attr_from_stat(inode.ino, &st),
            None => self.getattr(inode.ino)?,
        };
        Ok((attr, fh))
    }

    /// Reads directory `ino` whole (kmsfs's own names left out); answers a handle.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let entries = self.list_dir(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dir_handles.write().insert(
            fh,
            Arc::new(DirHandle {
                entries,
                fresh: AtomicBool::new(true),
            }),
        );
        Ok(fh)
    }

    /// The entries of directory `ino` as the mount shows them. Entries whose names do
    /// not open are left out and logged as one line per listing, rate-limited
    /// (`names::RefusedLog`): whoever writes the backing tree must not flood the log.
    fn list_dir(&self, ino: u64) -> FsResult<Vec<(u64, FileType, OsString)>> {
        let fd = self.dir_fd(ino)?;
        let mut refused = 0u64;
        // a few examples for the log line
        let mut examples: Vec<(String, crate::format::names::NameError)> = vec![];
        let id = match self.names {
            Some(_) => Some(self.dir_id(fd.as_fd())?),
            None => None,
        };
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut entries = vec![];
        while let Some(ent) = dir.read() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." || self.is_hidden(ino, name) {
                continue;
            }
            let mut ftype = ent.file_type();
            let shown = match &id {
                None => OsStr::from_bytes(name).to_os_string(),
                Some(id) => {
                    if (ino == ROOT_INO && name == CONFIG_FILE.as_bytes())
                        || name.starts_with(TEMP_PREFIX.as_bytes())
                    {
                        continue;
                    }
                    match self.plain_name(fd.as_fd(), id, name) {
                        Ok(n) => n,
                        Err(e) => {
                            // Not the mount's to show: tampered, moved, or not kmsfs's.
                            refused += 1;
                            if examples.len() < 5 {
                                examples.push((String::from_utf8_lossy(name).into_owned(), e));
                            }
                            continue;
                        }
                    }
                }
            };
            if id.is_some()
                && matches!(
                    ftype,
                    rustix::fs::FileType::RegularFile | rustix::fs::FileType::Unknown
                )
            {
                // A node file shows as what it stands for (its size says which).
                if let Ok(st) = stat_at(fd.as_fd(), OsStr::from_bytes(name)) {
                    ftype = match self.node_kind(&st) {
                        Some(k) => rustix::fs::FileType::from_raw_mode(k.fmt()),
                        None => rustix::fs::FileType::from_raw_mode(st.st_mode),
                    };
                }
            }
            let kind = match ftype {
                rustix::fs::FileType::Directory => FileType::Directory,
                rustix::fs::FileType::Symlink => FileType::Symlink,
                rustix::fs::FileType::Fifo => FileType::NamedPipe,
                rustix::fs::FileType::Socket => FileType::Socket,
                rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                _ => FileType::RegularFile,
            };
            entries.push((self.inodes.peek_ino(ent.ino()), kind, shown));
        }
        if let (Some(n), false) = (&self.names, examples.is_empty()) {
            n.refused.report(ino, refused, &|| {
                let dir = self.display(ino);
                let shown: Vec<String> = examples
                    .iter()
                    .map(|(name, e)| format!("{dir}/{name}: {e}"))
                    .collect();
                let more = refused - examples.len() as u64;
                format!(
                    "{refused} entr{} of {dir} not listed (names that do not open here: tampered, moved, or not kmsfs's; `kmsfs fsck` lists each): {}{}",
                    if refused == 1 { "y" } else { "ies" },
                    shown.join("; "),
                    if more > 0 { format!("; and {more} more") } else { String::new() }
                )
            });
        }
        Ok(entries)
    }

    /// The entries of directory handle `fh` from `offset` on, handed to `add(ino, next
    /// offset, kind, name)` until it answers true (full). Offsets: 1 = ".", 2 = "..",
    /// 3.. = entries.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> FsResult<()> {
        let mut d = self
            .dir_handles
            .read()
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)?;
        // rewinddir(3): a read from the start after the first sees entries added since
        // (POSIX); the first read uses the listing opendir made.
        if offset == 0 && !d.fresh.swap(false, Ordering::Relaxed) {
            d = Arc::new(DirHandle {
                entries: self.list_dir(ino)?,
                fresh: AtomicBool::new(false),
            });
            self.dir_handles.write().insert(fh, d.clone());
        }
        let mut off = offset;
        if off == 0 {
            if add(ino, 1, FileType::Directory, OsStr::new(".")) {
                return Ok(());
            }
            off = 1;
        }
        if off == 1 {
            if add(ROOT_INO, 2, FileType::Directory, OsStr::new("..")) {
                return Ok(());
            }
            off = 2;
        }
        for (i, (eino, kind, name)) in d.entries.iter().enumerate().skip((off - 2) as usize) {
            if add(*eino, i as u64 + 3, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// Closes directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.dir_handles.write().remove(&fh);
    }

    /// fsync of directory `ino`.
    pub fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        Ok(rustix::fs::fsync(&self.dir_fd(ino)?)?)
    }

    /// statfs of the backing filesystem.
    pub fn statfs(&self) -> FsResult<rustix::fs::StatVfs> {
        Ok(rustix::fs::fstatvfs(self.dirs.root())?)
    }

    /// Permission checks are the kernel's (default_permissions with allow_other; else
    /// only the mounting user gets in and the backing tree checks it): `ino` must exist.
    pub fn access(&self, ino: u64) -> FsResult<()> {
        self.inode(ino).map(|_| ())
    }
}
