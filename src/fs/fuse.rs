//! The thin FUSE adapter: each handler calls one operation of [`KmsFs`] and turns its
//! result into the reply (errors logged here, once). A panic in an operation becomes EIO
//! for that request and a log line, not a dead mount.

use std::ffi::OsStr;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::{mount_devices, Caller, FsError, FsResult, KmsFs, SetAttr, Xattr};

/// The FUSE face of a [`KmsFs`], and who waits for the mount to be settled.
pub struct Fuse(KmsFs, Option<std::sync::mpsc::SyncSender<()>>);

impl Fuse {
    /// Serves `fs` over FUSE; `settled` is told once INIT is answered and the mount's
    /// read-ahead raised (or that could not be done), so the mount is reported live only
    /// then: a reader that starts at once gets the read-ahead too.
    pub fn new(fs: KmsFs, settled: std::sync::mpsc::SyncSender<()>) -> Fuse {
        Fuse(fs, Some(settled))
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Runs a handler; a panic drops the reply unanswered (fuser answers EIO) and logs.
fn guarded<F: FnOnce()>(op: &str, f: F) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!("panic in {op} handler (answered EIO): {msg}");
    }
}

/// The errno of a failure, its log line written.
fn fail(e: FsError) -> Errno {
    e.emit();
    e.errno
}

impl Fuse {
    fn entry(&self, r: FsResult<fuser::FileAttr>, reply: ReplyEntry) {
        match r {
            Ok(attr) => reply.entry(&self.0.ttl, &attr, Generation(0)),
            Err(e) => reply.error(fail(e)),
        }
    }

    fn attr(&self, r: FsResult<fuser::FileAttr>, reply: ReplyAttr) {
        match r {
            Ok(attr) => reply.attr(&self.0.ttl, &attr),
            Err(e) => reply.error(fail(e)),
        }
    }
}

fn empty(r: FsResult<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fail(e)),
    }
}

fn xattr(r: FsResult<Xattr>, reply: ReplyXattr) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(v)) => reply.data(&v),
        Err(e) => reply.error(fail(e)),
    }
}

/// The mount's read-ahead, in KiB. The kernel offers FUSE its default (128 KiB) in INIT and
/// keeps the smaller of that and the answer, so a sequential reader's requests are 128 KiB
/// each, one or two in flight. At 1 MiB (the largest request, 256 pages) the kernel sends
/// 1 MiB reads ahead of the reader and the chunks of each are opened in parallel: cold
/// `fio` sequential 1 MiB reads of a 1 GiB file measured 1.2-1.7× faster here than at
/// 128 KiB (README, "Speed", second pass). Since large cold reads bypass the
/// backing page cache (`content::Direct`), the backing file's own read-ahead no longer
/// keeps the disk busy while a request is decrypted; 8 MiB here does, with up to eight
/// requests in flight. Direct reads at 1 MiB read-ahead were slower than buffered ones
/// (0.44-0.60 s against 0.34-0.40 s per cold 512 MiB), at 8 MiB level with them or faster
/// (bench/results/2026-12-05-direct-read.md).
const READ_AHEAD_KB: u32 = 8192;

/// Raises the mount's read-ahead once the kernel has taken INIT's answer (which would
/// otherwise lower it back): a stat of the mount root waits for INIT. Root only (sysfs);
/// elsewhere the kernel's default stays.
fn raise_read_ahead(mountpoint: &std::path::Path, dev: &str) {
    // stat waits for INIT, whose answer would otherwise set the read-ahead back
    let _ = std::fs::metadata(mountpoint);
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, format!("{READ_AHEAD_KB}\n")) {
        Ok(()) => tracing::debug!(
            "read-ahead of {} is {READ_AHEAD_KB} KiB",
            mountpoint.display()
        ),
        Err(e) => {
            tracing::debug!("cannot raise the read-ahead ({knob}: {e}); the kernel's default stays")
        }
    }
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let fs = &mut self.0;
        fs.mount_dev = mount_devices(&fs.mountpoint).pop();
        let settled = self.1.take();
        let (dev, mountpoint) = (fs.mount_dev.clone(), fs.mountpoint.clone());
        std::thread::spawn(move || {
            match dev {
                Some(dev) => raise_read_ahead(&mountpoint, &dev),
                // still wait for INIT's answer before the mount is called live
                None => drop(std::fs::metadata(&mountpoint)),
            }
            if let Some(s) = settled {
                let _ = s.send(());
            }
        });
        let _ = config.set_max_write(1 << 20);
        // Writeback sends WRITEs as background requests, 16 in flight by default: cold
        // random writes each wait on a backing page read, so more in flight is more
        // disk reads at once (19,700 against 18,600 IOPS with 16 threads).
        let _ = config.set_max_background(64);
        if fs.writeback_cache
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!(
                "the kernel does not offer the writeback cache; writes go through synchronously"
            );
            fs.writeback_cache = false;
        }
        // O_TRUNC reaches open (one round trip, not open + setattr), which lets an
        // encrypt-only mount replace a file it may not read (see `open::rekey_emptied`).
        // Not with lazy opens: a kernel that sends no OPEN would drop the truncate (it
        // then comes as a SETATTR of the size).
        if !fs.lazy_open()
            && config
                .add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC)
                .is_err()
        {
            tracing::debug!("the kernel does not offer ATOMIC_O_TRUNC");
        }
        // The kernel then skips asking for security.capability before every write (one
        // GETXATTR round trip per write(2) otherwise) and tells us when to kill privileges.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_err()
        {
            tracing::debug!("the kernel does not offer HANDLE_KILLPRIV_V2");
        }
        Ok(())
    }

    /// The session is over. If our mount is gone from the mountpoint (unmounted from
    /// outside: `kmsfs umount`, umount(8), `systemctl stop`), exit here: fuser 0.18 would
    /// next unmount the path once more (its "already unmounted?" test is inverted) and take
    /// down whatever is mounted there by then, such as the new mount of a restart.
    fn destroy(&mut self) {
        let fs = &self.0;
        let gone = fs
            .mount_dev
            .as_ref()
            .is_some_and(|d| !mount_devices(&fs.mountpoint).contains(d));
        if gone {
            fs.env.flush_audit();
            tracing::info!("unmounted {}", fs.mountpoint.display());
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            std::process::exit(0);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || {
            self.entry(self.0.lookup(parent.0, name), reply)
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino.0, nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || self.attr(self.0.getattr(ino.0), reply))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let a = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh: fh.map(|f| f.0),
            };
            self.attr(
                self.0
                    .with_space(|| self.0.setattr(req.uid(), ino.0, a.clone())),
                reply,
            )
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.0.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fail(e)),
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            self.entry(
                self.0
                    .with_space(|| self.0.mknod(caller(req), parent.0, name, mode, rdev)),
                reply,
            )
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            self.entry(
                self.0
                    .with_space(|| self.0.mkdir(caller(req), parent.0, name, mode)),
                reply,
            )
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            self.entry(
                self.0
                    .with_space(|| self.0.symlink(caller(req), parent.0, link_name, target)),
                reply,
            )
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || empty(self.0.unlink(parent.0, name), reply))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || empty(self.0.rmdir(parent.0, name), reply))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let r = self
                .0
                .rename(parent.0, name, newparent.0, newname, flags.bits());
            empty(r, reply)
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            self.entry(
                self.0
                    .with_space(|| self.0.link(ino.0, newparent.0, newname)),
                reply,
            )
        })
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.0.lazy_open() {
            // The kernel then opens files without asking, and keeps the page cache
            // across opens as FOPEN_KEEP_CACHE would (see `KmsFs::lazy_open`).
            return reply.error(Errno::ENOSYS);
        }
        guarded("open", || match self.0.open(ino.0, flags.0, req.uid()) {
            // Content changes only through this mount: keep the page cache across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(fail(e)),
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            crate::content::with_scratch(|buf| match self.0.read(ino.0, fh.0, offset, size, buf) {
                Ok(range) => reply.data(&buf[range]),
                Err(e) => reply.error(fail(e)),
            })
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || {
            let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
            let cached = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
            match self.0.with_space(|| {
                self.0
                    .write(ino.0, fh.0, flags.0, offset, data, kill, cached)
            }) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(fail(e)),
            }
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go to the backing file synchronously and locks are the kernel's, so
        // there is nothing to do. ENOSYS tells the kernel so once: it then never sends
        // FLUSH again (it still writes its cached pages back at close), which takes one
        // round trip off every close(2).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            self.0.release(fh.0);
            reply.ok();
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            empty(self.0.fsync(ino.0, fh.0, datasync), reply)
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || match self.0.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail(e)),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let r = self
                .0
                .readdir(ino.0, fh.0, offset, |eino, off, kind, name| {
                    reply.add(INodeNo(eino), off, kind, name)
                });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail(e)),
            }
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || empty(self.0.fsyncdir(ino.0), reply))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.0.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(fail(e)),
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            empty(
                self.0
                    .with_space(|| self.0.setxattr(ino.0, name, value, flags)),
                reply,
            )
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            xattr(self.0.getxattr(ino.0, name, size), reply)
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || xattr(self.0.listxattr(ino.0, size), reply))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            empty(self.0.removexattr(ino.0, name), reply)
        })
    }

    /// No ioctls. Answered without the library's per-call warning: programs probe with
    /// TCGETS on every open (isatty), which filled the log and cost a write each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        empty(self.0.access(ino.0), reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            match self
                .0
                .with_space(|| self.0.create(caller(req), parent.0, name, mode, flags))
            {
                Ok((attr, fh)) => reply.created(
                    &self.0.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(fail(e)),
            }
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            empty(
                self.0
                    .with_space(|| self.0.fallocate(ino.0, fh.0, offset, length, mode)),
                reply,
            )
        })
    }
}
