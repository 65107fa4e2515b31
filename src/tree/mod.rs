//! Whole-tree commands on a backing tree, mounted or not: `init`, re-wrapping headers
//! under the current key versions or another key set (`rotate`, `keys add/remove`)
//! without touching a data byte, re-encrypting files under new DEKs (`rekey`), checking
//! (`fsck`), restoring (`cat`, `decrypt`) and sharing by KMS grant (`share`). This module holds what they share: the
//! walk, the root every file is opened below, the summary and the progress bar.

mod fsck;
mod generation;
mod init;
mod names;
mod out;
mod rekey;
mod restore;
mod rewrap;
mod share;

pub use fsck::{fsck, FsckReport, Problem, Salvaged};
pub use generation::{move_generation, GenerationReport};
pub use init::{default_key, init, Initialised, DEFAULT_ALIAS};
pub use names::TreeNames;
pub use rekey::rekey;
pub use restore::{cat, decrypt_file, decrypt_tree, open_backing_file, RestoreReport};
pub use rewrap::{change_key, rewrap, rotate, KeyChange, REWRAP_JOBS};
pub use share::{share, shares, unshare, Share, READ_ONLY, READ_WRITE};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{fail, Context, Result};
use crate::format::{Header, CONFIG_FILE, TEMP_PREFIX};

/// Regular files, and stray temp files of an interrupted rekey, of a backing tree (the
/// config, symlinks and, in a format 2 tree (`names`), node files are left out), each
/// list sorted.
pub fn walk_tree(
    backing: &Path,
    names: Option<&TreeNames>,
) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
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
                let node = match names {
                    Some(n) if n.encrypted() => match e.metadata() {
                        Ok(m) => n.node_kind(m.len()).is_some(),
                        // gone since the listing (a save by rename): nothing to walk
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    },
                    _ => false,
                };
                if !node {
                    files.push(e.path());
                }
            }
        }
    }
    files.sort();
    temps.sort();
    Ok((files, temps))
}

/// Regular files of a backing tree (not the config, not temp files, no symlinks or
/// node files).
pub fn walk_files(backing: &Path, names: Option<&TreeNames>) -> std::io::Result<Vec<PathBuf>> {
    Ok(walk_tree(backing, names)?.0)
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
    pub(crate) fd: std::os::fd::OwnedFd,
}

impl TreeRoot {
    /// Opens the root `backing` (O_PATH).
    pub fn open(backing: &Path) -> std::io::Result<TreeRoot> {
        Ok(TreeRoot {
            path: backing.to_path_buf(),
            canonical: std::fs::canonicalize(backing)?,
            fd: crate::backing::open_root(backing)?,
        })
    }

    /// `p` relative to this root (given as the root was, or canonically spelled).
    pub(crate) fn relative<'p>(&self, p: &'p Path) -> Result<&'p Path, rustix::io::Errno> {
        p.strip_prefix(&self.path)
            .or_else(|_| p.strip_prefix(&self.canonical))
            .map_err(|_| rustix::io::Errno::XDEV)
    }

    /// Removes the file (or empty temp directory) `p` below this root (through its directory's descriptor: a
    /// directory swapped for a symlink in between is refused, not followed).
    pub fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        let rel = self.relative(p)?;
        let (dir, name) = crate::backing::parent_beneath(std::os::fd::AsFd::as_fd(&self.fd), rel)?;
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            // a temp directory an interrupted mkdir left (empty, or it stays)
            Err(rustix::io::Errno::ISDIR) => Ok(rustix::fs::unlinkat(
                &dir,
                name,
                rustix::fs::AtFlags::REMOVEDIR,
            )?),
            r => Ok(r?),
        }
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

/// The tree root above `path`: the nearest ancestor holding `kmsfs.json`.
pub fn find_root(path: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(path).context(path.display())?;
    let mut cur = if abs.is_dir() {
        Some(abs.as_path())
    } else {
        abs.parent()
    };
    while let Some(d) = cur {
        if d.join(CONFIG_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        cur = d.parent();
    }
    fail!(
        "{} is not inside a kmsfs tree (no {CONFIG_FILE} above it)",
        path.display()
    )
}

#[derive(Debug, Default, Serialize)]
/// What a whole-tree command did.
pub struct Summary {
    /// Files seen.
    pub files: u64,
    /// Files changed.
    pub changed: u64,
    /// Files already as wanted (or gone since the walk).
    pub skipped: u64,
    /// Files that failed (listed in `failures`).
    pub failed: u64,
    /// Wall time.
    pub seconds: f64,
    /// Files per second.
    pub files_per_second: f64,
    /// Each failure.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
/// A file a command could not handle.
pub struct Failure {
    /// The backing file.
    pub path: String,
    /// Why.
    pub error: String,
}

impl Summary {
    /// One line: "N files, N VERB, N skipped, N failed in S (R files/s)".
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

/// The header of the backing file at `path` (a symlink there is refused, not followed).
pub fn read_header_at(path: &Path) -> Result<Header> {
    let f = open_backing_file(path)?;
    crate::backing::read_header(&f).context(path.display())
}

/// Removes temp files a killed rekey left behind; returns how many.
pub fn clean_temp_files(backing: &Path) -> std::io::Result<usize> {
    let (_, temps) = walk_tree(backing, None)?;
    let root = TreeRoot::open(backing)?;
    for t in &temps {
        root.remove_file(t)?;
    }
    Ok(temps.len())
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
