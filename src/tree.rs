//! Whole-tree operations on a backing tree, mounted or not: re-wrapping headers under the
//! current key versions or another key set (`rotate`, `keys add/remove`) without touching
//! a data byte, and re-encrypting files under new DEKs (`rekey`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::content::Content;
use crate::envelope::{wrap_context, Envelope};
use crate::format::{Geometry, Header, TreeConfig, Wrap, CONFIG_FILE, HEADER_XATTR, TEMP_PREFIX};
use crate::kms::{DescribeKeyRequest, Kms, ReEncryptRequest};

/// Regular files, and stray temp files of an interrupted rekey, of a backing tree (the
/// config and symlinks are left out), each list sorted.
pub fn walk_tree(backing: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files = vec![];
    let mut temps = vec![];
    let mut stack = vec![backing.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let name = e.file_name();
            if name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                temps.push(e.path());
            } else if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !(dir == backing && name == CONFIG_FILE) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    temps.sort();
    Ok((files, temps))
}

/// Regular files of a backing tree (not the config, not temp files, no symlinks).
pub fn walk_files(backing: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(walk_tree(backing)?.0)
}

/// A backing tree's root, to open its files by descriptor: each file found by a walk is
/// opened one component at a time below the root, following no symlink, and everything
/// done to it (header read, check, replace) goes through that one descriptor. A file
/// renamed over, or a directory swapped for a symlink, between the walk and the open is
/// then never confused with another file.
pub struct TreeRoot {
    path: PathBuf,
    /// The same root spelled canonically: paths named by the user may use either.
    canonical: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl TreeRoot {
    pub fn open(backing: &Path) -> std::io::Result<TreeRoot> {
        Ok(TreeRoot {
            path: backing.to_path_buf(),
            canonical: std::fs::canonicalize(backing)?,
            fd: crate::backing::open_root(backing)?,
        })
    }

    /// `p` relative to this root (given as the root was, or canonically spelled).
    fn relative<'p>(&self, p: &'p Path) -> Result<&'p Path, rustix::io::Errno> {
        p.strip_prefix(&self.path)
            .or_else(|_| p.strip_prefix(&self.canonical))
            .map_err(|_| rustix::io::Errno::XDEV)
    }

    /// Removes the file `p` below this root (through its directory's descriptor: a
    /// directory swapped for a symlink in between is refused, not followed).
    pub fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        let rel = self.relative(p)?;
        let (dir, name) = crate::backing::parent_beneath(std::os::fd::AsFd::as_fd(&self.fd), rel)?;
        Ok(rustix::fs::unlinkat(
            &dir,
            name,
            rustix::fs::AtFlags::empty(),
        )?)
    }

    /// Opens the regular file `p` (below this root, as given or canonically spelled).
    pub fn open_file(
        &self,
        p: &Path,
        flags: rustix::fs::OFlags,
    ) -> Result<File, rustix::io::Errno> {
        let rel = self.relative(p)?;
        crate::backing::open_file_beneath(std::os::fd::AsFd::as_fd(&self.fd), rel, flags)
    }
}

/// The header of an open backing file, as a one-line error otherwise.
pub fn read_header(file: &File) -> Result<Header, String> {
    crate::backing::read_header(file).map_err(|e| e.to_string())
}

/// The header of the backing file at `path` (a symlink there is refused, not followed).
pub fn read_header_at(path: &Path) -> Result<Header, String> {
    let f = crate::offline::open_backing_file(path).map_err(|e| format!("{e:#}"))?;
    read_header(&f)
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub files: u64,
    pub changed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub seconds: f64,
    pub files_per_second: f64,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

impl Summary {
    pub fn line(&self, verb: &str) -> String {
        format!(
            "{} files, {} {verb}, {} skipped, {} failed in {:.2}s ({:.0} files/s)",
            self.files,
            self.changed,
            self.skipped,
            self.failed,
            self.seconds,
            self.files_per_second
        )
    }
}

fn progress(n: u64, what: &str, show: bool) -> indicatif::ProgressBar {
    if !show || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

enum FileResult {
    Changed,
    Skipped,
    Failed(String),
}

/// Runs `f` on every file in parallel (at most `jobs` at once) and tallies the results.
fn for_each_file(
    files: Vec<PathBuf>,
    jobs: usize,
    label: &str,
    show_progress: bool,
    f: impl Fn(&Path) -> FileResult + Sync,
) -> Summary {
    let start = Instant::now();
    let pb = progress(files.len() as u64, label, show_progress);
    let changed = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let failures = parking_lot::Mutex::new(vec![]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .expect("thread pool");
    pool.install(|| {
        files.par_iter().for_each(|p| {
            match f(p) {
                FileResult::Changed => {
                    changed.fetch_add(1, Ordering::Relaxed);
                }
                FileResult::Skipped => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                FileResult::Failed(e) => {
                    pb.suspend(|| eprintln!("kmsfs: {}: {e}", p.display()));
                    failures.lock().push(Failure {
                        path: p.display().to_string(),
                        error: e,
                    });
                }
            }
            pb.inc(1);
        })
    });
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let mut failures = failures.into_inner();
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    Summary {
        files: files.len() as u64,
        changed: changed.into_inner(),
        skipped: skipped.into_inner(),
        failed: failures.len() as u64,
        seconds,
        files_per_second: files.len() as f64 / seconds.max(1e-9),
        failures,
    }
}

/// Re-wraps every header so that it holds exactly one copy per key in `targets`, each
/// under that key's current version, using ReEncrypt (the DEK never leaves the KMS).
/// Only the header xattr is replaced (XATTR_REPLACE); no data byte is read or written.
/// Idempotent: files already in that state are skipped, so a killed run just resumes.
pub fn rewrap(
    backing: &Path,
    cfg: &TreeConfig,
    kms: &dyn Kms,
    targets: &[String],
    jobs: usize,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    // (ARN, current material id) of every target key, looked up once.
    let mut current = vec![];
    for t in targets {
        let md = kms
            .describe_key(DescribeKeyRequest { key_id: t.clone() })
            .map_err(|e| anyhow::anyhow!("key {t}: {e}"))?
            .key_metadata;
        if md.key_state != "Enabled" {
            anyhow::bail!("key {} is {}: cannot wrap under it", md.arn, md.key_state);
        }
        current.push((md.arn, md.current_key_material_id.unwrap_or_default()));
    }
    let files = walk_files(backing)?;
    let root = TreeRoot::open(backing)?;
    Ok(for_each_file(
        files,
        jobs,
        "re-wrapping",
        show_progress,
        |p| match rewrap_file(&root, p, cfg, kms, &current) {
            Ok(true) => FileResult::Changed,
            Ok(false) => FileResult::Skipped,
            Err(e) => FileResult::Failed(e),
        },
    ))
}

/// Re-wraps one file through one descriptor: the header read is the header replaced, so a
/// save-by-rename racing the rotation can never receive another file's header.
fn rewrap_file(
    root: &TreeRoot,
    path: &Path,
    cfg: &TreeConfig,
    kms: &dyn Kms,
    current: &[(String, String)],
) -> Result<bool, String> {
    let file = match root.open_file(path, rustix::fs::OFlags::RDONLY) {
        Ok(f) => f,
        // Gone since the walk (renamed over or deleted): nothing left to re-wrap.
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let h = read_header(&file)?;
    let ctx = wrap_context(&cfg.fs_id, &h.file_id);
    let mut wraps = Vec::with_capacity(current.len());
    for (arn, material) in current {
        if let Some(w) = h
            .wraps
            .iter()
            .find(|w| &w.key_arn == arn && &w.material_id == material)
        {
            wraps.push(w.clone());
            continue;
        }
        // Prefer the copy under the same key (a rotation), then any other copy.
        let mut sources: Vec<&Wrap> = h.wraps.iter().filter(|w| &w.key_arn == arn).collect();
        sources.extend(h.wraps.iter().filter(|w| &w.key_arn != arn));
        let mut errors = vec![];
        let mut made = None;
        for src in sources {
            match kms.re_encrypt(ReEncryptRequest {
                ciphertext_blob: src.blob.clone(),
                source_encryption_context: Some(ctx.clone()),
                source_key_id: Some(src.key_arn.clone()),
                destination_key_id: arn.clone(),
                destination_encryption_context: Some(ctx.clone()),
            }) {
                Ok(r) => {
                    made = Some(Wrap {
                        key_arn: r.key_id,
                        material_id: r.destination_key_material_id.unwrap_or_default(),
                        blob: r.ciphertext_blob,
                    });
                    break;
                }
                Err(e) => errors.push(format!("from {}: {e}", src.key_arn)),
            }
        }
        wraps.push(
            made.ok_or_else(|| format!("cannot re-wrap under {arn}: {}", errors.join("; ")))?,
        );
    }
    if wraps == h.wraps {
        return Ok(false);
    }
    let new = Header { wraps, ..h };
    crate::backing::replace_header(&file, &new)?;
    Ok(true)
}

/// Is `backing` currently mounted by kmsfs (its FUSE source is this path)?
pub fn is_mounted_backing(backing: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(backing) else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(" - ").nth(1))
        .any(|rest| {
            let mut it = rest.split(' ');
            let (fstype, source) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            fstype.starts_with("fuse") && source == want
        })
}

/// Removes temp files a killed rekey left behind; returns how many.
pub fn clean_temp_files(backing: &Path) -> std::io::Result<usize> {
    let (_, temps) = walk_tree(backing)?;
    let root = TreeRoot::open(backing)?;
    for t in &temps {
        root.remove_file(t)?;
    }
    Ok(temps.len())
}

/// Re-encrypts each file under a new DEK (new file id, new header): written to a temp
/// file beside it, fsynced, renamed over the original. Crash-safe per file; a rerun
/// finishes the rest (temp files of a killed run are removed first).
pub fn rekey(
    backing: &Path,
    env: &Arc<Envelope>,
    files: Vec<PathBuf>,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    if is_mounted_backing(backing) {
        anyhow::bail!(
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
            Err(e) => FileResult::Failed(e),
        },
    ))
}

fn rekey_file(root: &TreeRoot, path: &Path, env: &Envelope) -> Result<(), String> {
    use std::os::fd::AsFd;
    let geo = Geometry::new(env.config.chunk_size);
    let src = root
        .open_file(path, rustix::fs::OFlags::RDONLY)
        .map_err(|e| format!("cannot open: {e}"))?;
    let old_h = read_header(&src)?;
    let old_keys = env
        .open_header(&old_h)
        .map_err(|e| format!("cannot open header: {e}"))?;
    let md = src.metadata().map_err(|e| e.to_string())?;
    if md.nlink() > 1 {
        return Err(format!(
            "has {} hard links; rekeying would split them (skipped)",
            md.nlink()
        ));
    }
    let size = geo
        .plain_size(md.len())
        .ok_or_else(|| format!("backing size {} is not a whole number of chunks", md.len()))?;
    // The temp file is made in, and renamed within, the directory's descriptor.
    let rel = path.strip_prefix(&root.path).map_err(|e| e.to_string())?;
    let (dir, name) = crate::backing::parent_beneath(root.fd.as_fd(), rel)
        .map_err(|e| format!("cannot open its directory: {e}"))?;
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
        .map_err(|e| format!("cannot create {}: {e}", tmp.to_string_lossy()))?,
    );
    let result = (|| -> Result<(), String> {
        let (new_h, new_keys) = env
            .new_header()
            .map_err(|e| format!("cannot make a new data key: {e}"))?;
        let bytes = new_h.encode().map_err(|e| e.to_string())?;
        rustix::fs::fsetxattr(&dst, HEADER_XATTR, &bytes, rustix::fs::XattrFlags::CREATE)
            .map_err(|e| e.to_string())?;
        let from = Content {
            file: &src,
            aead: &*old_keys.content,
            file_id: &old_h.file_id,
            geo,
        };
        let to = Content {
            file: &dst,
            aead: &*new_keys.content,
            file_id: &new_h.file_id,
            geo,
        };
        let step = (1u64 << 20).max(geo.chunk);
        let mut off = 0;
        while off < size {
            let data = from
                .read(size, off, step)
                .map_err(|e| format!("read: {e}"))?;
            to.write(off, off, &data)
                .map_err(|e| format!("write: {e}"))?;
            off += data.len() as u64;
        }
        copy_metadata(&src, &dst, &md)?;
        dst.sync_all().map_err(|e| e.to_string())?;
        // Replace the name only if it still holds the file just re-encrypted.
        let now = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| e.to_string())?;
        if (now.st_dev, now.st_ino) != (md.dev(), md.ino()) {
            return Err("was replaced while being rekeyed (left as it is)".into());
        }
        rustix::fs::renameat(&dir, &tmp, &dir, name).map_err(|e| e.to_string())?;
        rustix::fs::openat(
            &dir,
            ".",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .and_then(|d| rustix::fs::fsync(&d))
        .map_err(|e| e.to_string())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
    }
    result
}

/// Owner, user xattrs (except ours) and times of `src` onto `dst`.
fn copy_metadata(src: &File, dst: &File, md: &std::fs::Metadata) -> Result<(), String> {
    let _ = rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
    );
    // After the chown (which clears set-user-ID): the mode as it was, special bits included.
    rustix::fs::fchmod(dst, rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777))
        .map_err(|e| e.to_string())?;
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::flistxattr(src, &mut names).map_err(|e| e.to_string())?;
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = std::str::from_utf8(name).map_err(|e| e.to_string())?;
        if name.starts_with(crate::format::RESERVED_XATTR_PREFIX) {
            continue;
        }
        let mut v = vec![0u8; 64 * 1024];
        let len = rustix::fs::fgetxattr(src, name, &mut v).map_err(|e| e.to_string())?;
        rustix::fs::fsetxattr(dst, name, &v[..len], rustix::fs::XattrFlags::empty())
            .map_err(|e| e.to_string())?;
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
    rustix::fs::futimens(dst, &ts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_root_opens_files_named_either_way_and_nothing_outside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("b");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        let given = root.join("..").join("b");
        let t = TreeRoot::open(&given).unwrap();
        let ro = rustix::fs::OFlags::RDONLY;
        assert!(t.open_file(&given.join("f"), ro).is_ok());
        assert!(t
            .open_file(&std::fs::canonicalize(&root).unwrap().join("f"), ro)
            .is_ok());
        assert_eq!(
            t.open_file(&d.path().join("elsewhere"), ro).unwrap_err(),
            rustix::io::Errno::XDEV
        );
    }
}
