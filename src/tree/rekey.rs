//! `rekey`: each file re-encrypted under a new DEK, crash-safe per file.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{clean_temp_files, for_each_file, FileResult, Summary, TreeRoot};
use crate::backing::SealedFile;
use crate::envelope::Envelope;
use crate::error::{err, fail, Context, Result};
use crate::format::{Geometry, TEMP_PREFIX};
use crate::fs::is_mounted_backing;

/// Re-encrypts each file under a new DEK (new file id, new header): written to a temp
/// file beside it, fsynced, renamed over the original. Crash-safe per file; a rerun
/// finishes the rest (temp files of a killed run are removed first).
pub fn rekey(
    backing: &Path,
    env: &Arc<Envelope>,
    files: Vec<PathBuf>,
    show_progress: bool,
) -> Result<Summary> {
    if is_mounted_backing(backing) {
        fail!(
            "{} is mounted; unmount it before rekeying (the mount holds the old files open)",
            backing.display()
        );
    }
    let cleaned = clean_temp_files(backing)?;
    if cleaned > 0 {
        eprintln!("kmsfs: removed {cleaned} temp file(s) left by an interrupted rekey");
    }
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let root = TreeRoot::open(backing)?;
    Ok(for_each_file(
        files,
        jobs,
        "rekeying",
        show_progress,
        |p| match rekey_file(&root, p, env) {
            Ok(()) => FileResult::Changed,
            Err(e) => FileResult::Failed(e.to_string()),
        },
    ))
}

fn rekey_file(root: &TreeRoot, path: &Path, env: &Envelope) -> Result<()> {
    use std::os::fd::AsFd;
    let geo = Geometry::new(env.config.chunk_size);
    let src = root
        .open_file(path, rustix::fs::OFlags::RDONLY)
        .map_err(|e| err!("cannot open: {e}"))?;
    let src = SealedFile::open(src, geo)?;
    // A file the mount refuses is not laundered into one it accepts.
    env.check_auth(src.file.as_fd(), &src.header)?;
    let old_keys = env
        .open_header(&src.header)
        .map_err(|e| err!("cannot open header: {e}"))?;
    let md = src.file.metadata()?;
    if md.nlink() > 1 {
        fail!(
            "has {} hard links; rekeying would split them (skipped)",
            md.nlink()
        );
    }
    let size = src.plain_size(geo)?;
    // The temp file is made in, and renamed within, the directory's descriptor.
    let rel = path.strip_prefix(&root.path).map_err(|e| err!("{e}"))?;
    let (dir, name) = crate::backing::parent_beneath(root.fd.as_fd(), rel)
        .context("cannot open its directory")?;
    let tmp = std::ffi::OsString::from(format!(
        "{TEMP_PREFIX}{}.{}",
        name.to_string_lossy(),
        hex::encode(crate::crypto::random_bytes::<6>())
    ));
    let dst = File::from(
        crate::backing::open_at(
            dir.as_fd(),
            &tmp,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL,
            rustix::fs::Mode::from_raw_mode(md.mode() & 0o777),
        )
        .with_context(|| format!("cannot create {}", tmp.to_string_lossy()))?,
    );
    let result = (|| -> Result<()> {
        let (new_h, new_keys) = env
            .new_header()
            .map_err(|e| err!("cannot make a new data key: {e}"))?;
        env.write_new_header(dst.as_fd(), &new_h)?;
        let to = crate::content::Content::new(&dst, &new_keys, &new_h.file_id, geo);
        src.content(&old_keys, geo)
            .copy_plaintext(size, |off, data| to.write(off, off, data).map(|_| ()))?;
        copy_metadata(&src.file, &dst, &md)?;
        dst.sync_all()?;
        // Replace the name only if it still holds the file just re-encrypted.
        let now = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        if (now.st_dev, now.st_ino) != (md.dev(), md.ino()) {
            fail!("was replaced while being rekeyed (left as it is)");
        }
        rustix::fs::renameat(&dir, &tmp, &dir, name)?;
        let d = rustix::fs::openat(
            &dir,
            ".",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(rustix::fs::fsync(&d)?)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
    }
    result
}

/// Owner, user xattrs (except ours) and times of `src` onto `dst`.
fn copy_metadata(src: &File, dst: &File, md: &std::fs::Metadata) -> Result<()> {
    let _ = rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
    );
    // After the chown (which clears set-user-ID): the mode as it was, special bits included.
    rustix::fs::fchmod(dst, rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777))?;
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::flistxattr(src, &mut names)?;
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = std::str::from_utf8(name).map_err(|e| err!("xattr name: {e}"))?;
        // The new file has its own header; a long name's xattr (format 2) must follow.
        if name == crate::format::HEADER_XATTR || name == crate::format::auth::AUTH_XATTR {
            continue;
        }
        let mut v = vec![0u8; 64 * 1024];
        let len = rustix::fs::fgetxattr(src, name, &mut v)?;
        rustix::fs::fsetxattr(dst, name, &v[..len], rustix::fs::XattrFlags::empty())?;
    }
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    Ok(rustix::fs::futimens(dst, &ts)?)
}
