//! `kmsfs tree-key rotate` (and the end of `share --revoke`, `keys remove`, `rotate
//! --to`): moves a tree to a new tree-key generation, so that whoever held the old tree
//! key (a revoked grantee, a removed key's users) learns nothing written afterwards and
//! can plant nothing the mount accepts (docs/THREAT-MODEL.md "Revocation").
//!
//! A new tree key is drawn and written into `kmsfs.json` beside the old one (`previous`)
//! first; then, directory by directory, every name is re-sealed under the new key
//! (renamed in place), every node record re-sealed, and every file's authentication
//! (`format::auth`) recomputed for the new generation; then the old tree key goes. No
//! data byte is read or written and no KMS call is made per file. Each step is atomic
//! (a rename, an xattr write, a node file renamed over), and what is already under the
//! new key is recognised, so a killed run is finished by running it again; until then a
//! mount refuses the tree. The tree must not be mounted (its names change under it).
//!
//! Only what opens under the old generation is moved: a name, record or file
//! authentication that opened under neither was already refused by the mount, and is
//! left as it is and reported (`fsck` lists it).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, XattrFlags};
use serde::Serialize;

use crate::backing::{getxattr_fd, listxattr_fd, open_at, open_obj_at, setxattr_fd};
use crate::error::{err, fail, Result};
use crate::format::auth::{AuthKey, PlaceKey, AUTH_XATTR, PLACE_XATTR};
use crate::format::names::{
    is_long, long_xattr, node_kind, node_size, NameKey, NodeKind, DIR_ID_LEN, DIR_ID_XATTR,
    LONG_NAME_XATTR_PREFIX, TARGET_MAX,
};
use crate::format::{Geometry, CONFIG_FILE, TEMP_PREFIX};
use crate::trust::TrustedTree;

/// What a move to a new generation did.
#[derive(Debug, Default, Serialize)]
pub struct GenerationReport {
    /// The generation left.
    pub from: u32,
    /// The generation the tree is at now.
    pub to: u32,
    /// Whether the move finished (else: run it again).
    pub finished: bool,
    /// Entries visited.
    pub entries: u64,
    /// Names re-sealed.
    pub names: u64,
    /// Node records (symlinks, special files) re-sealed.
    pub nodes: u64,
    /// Files whose authentication was moved on.
    pub files: u64,
    /// Entries that opened under neither generation: left as they are (the mount
    /// refuses them), each with why.
    pub left: Vec<(String, String)>,
    /// Entries that could not be moved (an I/O error): the move is not finished.
    pub failed: Vec<(String, String)>,
    /// Wall time.
    pub seconds: f64,
    /// Entries per second.
    pub entries_per_second: f64,
}

/// Moves tree `t` at `backing` to a new tree-key generation, or finishes a move under
/// way. The tree must not be mounted.
pub fn move_generation(
    t: &mut TrustedTree,
    backing: &Path,
    show_progress: bool,
) -> Result<GenerationReport> {
    if crate::fs::is_mounted_backing(backing) {
        fail!(
            "{} is mounted: unmount it first (every name in it is re-sealed)",
            backing.display()
        );
    }
    let start = Instant::now();
    t.begin_generation()?;
    // From here the config names both generations: a kill leaves a tree this resumes.
    t.save(backing)?;
    let previous = t
        .cfg
        .previous
        .clone()
        .ok_or_else(|| err!("no previous generation in kmsfs.json"))?;
    let from = previous.generation;
    // A format 1 tree made before configs were authenticated had no tree key at all.
    let old_tk = match previous.tree_key.is_empty() {
        true => None,
        false => t.previous_tree_key()?,
    };
    // What only writers make was authenticated under the old write key (generation 1
    // on; trees of generation 0 had none, and what they hold is adopted).
    let old_wk = t.previous_write_key()?;
    if from > 0 && old_wk.is_none() && !previous.write_key.is_empty() {
        fail!("this host may not unwrap the tree's write key: only a writer can move the tree");
    }
    let fs_id = t.cfg.fs_id.clone();
    let m = Mover {
        new_names: t.name_key(),
        old_names: old_tk.as_ref().and_then(|k| t.name_key_of(k)),
        new_auth: t
            .auth_key()
            .ok_or_else(|| err!("no file authentication key"))?,
        // Trees of generation 0 had no file authentication: what is there is adopted.
        old_auth: old_wk
            .as_ref()
            .filter(|_| from > 0)
            .map(|k| AuthKey::derive(k, &fs_id, from)),
        new_place: t.place_key(),
        // Likewise directory places (format 2 from generation 1).
        old_place: old_wk
            .as_ref()
            .filter(|_| from > 0 && t.cfg.encrypted_names())
            .map(|k| PlaceKey::derive(k, &fs_id, from)),
        geo: Geometry::new(t.cfg.chunk_size),
        entries: AtomicU64::new(0),
        names: AtomicU64::new(0),
        nodes: AtomicU64::new(0),
        files: AtomicU64::new(0),
        left: parking_lot::Mutex::new(vec![]),
        failed: parking_lot::Mutex::new(vec![]),
        pb: super::progress(0, "moving to the new tree key", show_progress),
    };
    drop(old_tk);
    let root = crate::backing::open_root(backing)?;
    m.dir(root, backing.to_path_buf(), true);
    m.pb.finish_and_clear();
    let failed = m.failed.into_inner();
    let finished = failed.is_empty();
    if finished {
        t.finish_generation()?;
        t.save(backing)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let entries = m.entries.into_inner();
    let mut left = m.left.into_inner();
    left.sort();
    Ok(GenerationReport {
        from,
        to: t.cfg.generation,
        finished,
        entries,
        names: m.names.into_inner(),
        nodes: m.nodes.into_inner(),
        files: m.files.into_inner(),
        left,
        failed,
        seconds,
        entries_per_second: entries as f64 / seconds.max(1e-9),
    })
}

struct Mover {
    /// Format 2: the name keys of the new and the old generation.
    new_names: Option<NameKey>,
    old_names: Option<NameKey>,
    new_auth: AuthKey,
    old_auth: Option<AuthKey>,
    new_place: Option<PlaceKey>,
    old_place: Option<PlaceKey>,
    geo: Geometry,
    entries: AtomicU64,
    names: AtomicU64,
    nodes: AtomicU64,
    files: AtomicU64,
    left: parking_lot::Mutex<Vec<(String, String)>>,
    failed: parking_lot::Mutex<Vec<(String, String)>>,
    pb: indicatif::ProgressBar,
}

/// What one entry turned out to be.
enum Seen {
    Dir(OsString),
    Other,
}

impl Mover {
    fn left(&self, p: &Path, why: impl std::fmt::Display) {
        self.left
            .lock()
            .push((p.display().to_string(), why.to_string()));
    }

    fn failed(&self, p: &Path, why: impl std::fmt::Display) {
        self.failed
            .lock()
            .push((p.display().to_string(), why.to_string()));
    }

    /// Moves every entry of directory `dir` (`path`), then its subdirectories.
    fn dir(&self, dir: OwnedFd, path: PathBuf, at_root: bool) {
        let id = match &self.new_names {
            None => [0; DIR_ID_LEN],
            Some(_) => match getxattr_fd(dir.as_fd(), OsStr::new(DIR_ID_XATTR), DIR_ID_LEN + 1) {
                Ok((_, v)) if v.len() == DIR_ID_LEN => v.try_into().expect("16 bytes"),
                Ok(_) | Err(_) if super::restore::list(dir.as_fd()).is_ok_and(|l| l.is_empty()) => {
                    return
                }
                _ => {
                    return self.left(
                        &path,
                        format!("no valid directory id ({DIR_ID_XATTR}); its entries are left"),
                    )
                }
            },
        };
        let names = match super::restore::list(dir.as_fd()) {
            Ok(n) => n,
            Err(e) => return self.failed(&path, format!("cannot list: {e}")),
        };
        // What an interrupted move (or mkdir) left here is removed: a node file linked
        // under a temp name but not yet renamed over its entry, an empty directory not
        // yet renamed in.
        for n in names
            .iter()
            .filter(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
        {
            let b = &n.as_bytes()[TEMP_PREFIX.len()..];
            let flags = match b {
                _ if b.starts_with(b"node.") => AtFlags::empty(),
                _ if b.starts_with(b"dir.") => AtFlags::REMOVEDIR,
                _ => continue,
            };
            let _ = rustix::fs::unlinkat(dir.as_fd(), n, flags);
        }
        let subdirs: Vec<OsString> = names
            .par_iter()
            .filter(|n| {
                let b = n.as_bytes();
                !(b.starts_with(TEMP_PREFIX.as_bytes()) || (at_root && b == CONFIG_FILE.as_bytes()))
            })
            .filter_map(|n| {
                self.entries.fetch_add(1, Ordering::Relaxed);
                self.pb.inc(1);
                let p = path.join(n);
                match self.entry(dir.as_fd(), &id, n, &p) {
                    Ok(Seen::Dir(now)) => Some(now),
                    Ok(Seen::Other) => None,
                    Err(e) => {
                        self.failed(&p, format!("{e:#}"));
                        None
                    }
                }
            })
            .collect();
        for s in subdirs {
            match crate::backing::open_dir_at(dir.as_fd(), &s) {
                Ok(fd) => self.dir(fd, path.join(&s), false),
                Err(e) => self.failed(&path.join(&s), format!("cannot open: {e}")),
            }
        }
    }

    /// Moves one entry: its name, then its node record or file authentication.
    fn entry(
        &self,
        dir: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        name: &OsStr,
        p: &Path,
    ) -> Result<Seen> {
        let was = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let was_name = name;
        let name = match (&self.new_names, &self.old_names) {
            (Some(new), Some(old)) => {
                let long = long_value(dir, name);
                let (plain, moved) = match new.open(id, name.as_bytes(), long.as_deref()) {
                    Ok(plain) => (plain, true),
                    Err(_) => match old.open(id, name.as_bytes(), long.as_deref()) {
                        Ok(plain) => (plain, false),
                        Err(e) => {
                            self.left(p, format!("its name opens under neither generation: {e}"));
                            return Ok(Seen::Other);
                        }
                    },
                };
                // A directory takes its place under the new key before its new name.
                if was.st_mode & libc::S_IFMT == libc::S_IFDIR
                    && !self.place(dir, id, name, &plain, new, old, p)?
                {
                    return Ok(Seen::Other);
                }
                match moved {
                    true => name.to_os_string(),
                    false => self.rename(dir, id, name, &plain, new)?,
                }
            }
            _ => name.to_os_string(),
        };
        let st = match name == was_name {
            true => was,
            false => rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?,
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => return Ok(Seen::Dir(name)),
            libc::S_IFREG => {}
            _ => return Ok(Seen::Other),
        }
        let node = self
            .new_names
            .as_ref()
            .and_then(|_| node_kind(st.st_size as u64, self.geo.cchunk()));
        match node {
            Some(kind) => self.node(dir, &name, &st, kind, p)?,
            None => self.file(dir, &name, &st, p)?,
        }
        Ok(Seen::Other)
    }

    /// Binds directory `name` (plaintext `plain`) of `dir` (id `id`) to its place under
    /// the new key, if it was bound there under the old one (or the old generation bound
    /// none); false if it was not (left, not descended into: the mount refuses it).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        dir: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        name: &OsStr,
        plain: &[u8],
        new: &NameKey,
        old: &NameKey,
        p: &Path,
    ) -> Result<bool> {
        let Some(np) = &self.new_place else {
            return Ok(true);
        };
        let fd = crate::backing::open_dir_at(dir, name)?;
        let own: [u8; DIR_ID_LEN] =
            match getxattr_fd(fd.as_fd(), OsStr::new(DIR_ID_XATTR), DIR_ID_LEN + 1) {
                Ok((_, v)) if v.len() == DIR_ID_LEN => v.try_into().expect("16 bytes"),
                _ => {
                    self.left(p, "directory without a valid id");
                    return Ok(false);
                }
            };
        let stored = crate::backing::read_place(fd.as_fd());
        let seal = |k: &NameKey| {
            k.seal(id, plain)
                .map(|s| s.backing)
                .map_err(|e| err!("{e}"))
        };
        let (new_b, old_b) = (seal(new)?, seal(old)?);
        if np.verify(&own, id, &new_b, stored.as_deref()).is_ok() {
            return Ok(true);
        }
        if let Some(op) = &self.old_place {
            if let Err(e) = op.verify(&own, id, &old_b, stored.as_deref()) {
                self.left(
                    p,
                    format!(
                        "directory not bound to this place under the old generation either: {e}"
                    ),
                );
                return Ok(false);
            }
        }
        setxattr_fd(
            fd.as_fd(),
            OsStr::new(PLACE_XATTR),
            &np.seal(&own, &[(id, &new_b)]),
            XattrFlags::empty(),
        )?;
        Ok(true)
    }

    /// Renames entry `name` (plaintext `plain`) to its name under the new key; the new
    /// hashed name's xattr goes on the object first, the old one's after.
    fn rename(
        &self,
        dir: BorrowedFd,
        id: &[u8; DIR_ID_LEN],
        name: &OsStr,
        plain: &[u8],
        new: &NameKey,
    ) -> Result<OsString> {
        let s = new.seal(id, plain).map_err(|e| err!("{e}"))?;
        let to = OsString::from_vec(s.backing.clone());
        let obj = open_obj_at(dir, name)?;
        if let Some(l) = &s.long {
            setxattr_fd(
                obj.as_fd(),
                OsStr::new(&long_xattr(&s.backing)),
                l,
                XattrFlags::empty(),
            )?;
        }
        rustix::fs::renameat_with(dir, name, dir, &to, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| err!("cannot rename to its new name: {e}"))?;
        if is_long(name.as_bytes()) {
            let _ = crate::backing::removexattr_fd(
                obj.as_fd(),
                OsStr::new(&long_xattr(name.as_bytes())),
            );
        }
        self.names.fetch_add(1, Ordering::Relaxed);
        Ok(to)
    }

    /// Re-seals node file `name` under the new key (if it is still under the old).
    fn node(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        st: &rustix::fs::Stat,
        kind: NodeKind,
        p: &Path,
    ) -> Result<()> {
        let (Some(new), Some(old)) = (&self.new_names, &self.old_names) else {
            return Ok(());
        };
        let fd = open_at(dir, name, OFlags::RDWR | OFlags::NONBLOCK, Mode::empty())?;
        let now = rustix::fs::fstat(&fd)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            fail!("changed while being moved");
        }
        let len = if kind == NodeKind::Symlink {
            16 + 9 + TARGET_MAX + 1
        } else {
            16 + 9
        };
        let mut buf = vec![0u8; len];
        let n = rustix::io::pread(&fd, &mut buf[..], 0)?;
        if n < len {
            self.left(p, "node record truncated");
            return Ok(());
        }
        let stored = crate::envelope::stored_auth(fd.as_fd()).ok().flatten();
        if new.open_node(&buf, kind).is_ok() {
            // Re-sealed by an earlier run; its authentication may not have followed (a
            // node with several links is rewritten in place, record first).
            if self.new_auth.verify_node(&buf, stored.as_deref()).is_err() {
                let v = self.new_auth.seal_node(&buf);
                rustix::fs::fsetxattr(&fd, AUTH_XATTR, &v, XattrFlags::empty())?;
            }
            return Ok(());
        }
        let node = match old.open_node(&buf, kind) {
            Ok(n) => n,
            Err(e) => {
                self.left(
                    p,
                    format!("node record opens under neither generation: {e}"),
                );
                return Ok(());
            }
        };
        if let Some(a) = &self.old_auth {
            if let Err(e) = a.verify_node(&buf, stored.as_deref()) {
                self.left(
                    p,
                    format!("node not made by a writer of the old generation: {e}"),
                );
                return Ok(());
            }
        }
        let sealed = new.seal_node(&node).map_err(|e| err!("{e}"))?;
        let auth = self.new_auth.seal_node(&sealed);
        if st.st_nlink > 1 {
            // Other links share the inode: rewritten in place (not crash-atomic; see
            // docs/FORMAT.md). The record's length does not change.
            let mut off = 0;
            while off < sealed.len() {
                off += rustix::io::pwrite(&fd, &sealed[off..], off as u64)?;
            }
            rustix::fs::fsync(&fd)?;
            rustix::fs::fsetxattr(&fd, AUTH_XATTR, &auth, XattrFlags::empty())?;
        } else {
            // A new node file with the new record, its owner, mode, times and long-name
            // xattrs, renamed over the old one: the entry is old or new, never torn.
            let tmp = rustix::fs::openat(
                dir,
                ".",
                OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(st.st_mode & 0o7777),
            )?;
            let mut off = 0;
            while off < sealed.len() {
                off += rustix::io::pwrite(&tmp, &sealed[off..], off as u64)?;
            }
            rustix::fs::ftruncate(
                &tmp,
                node_size(kind, sealed.len() as u64, self.geo.cchunk()),
            )?;
            rustix::fs::fsetxattr(&tmp, AUTH_XATTR, &auth, XattrFlags::empty())?;
            let _ = rustix::fs::fchown(
                &tmp,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            );
            rustix::fs::fchmod(&tmp, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            let list = listxattr_fd(fd.as_fd())?;
            for x in list
                .split(|&b| b == 0)
                .filter(|x| x.starts_with(LONG_NAME_XATTR_PREFIX.as_bytes()))
            {
                let x = OsStr::from_bytes(x);
                let (_, v) = getxattr_fd(fd.as_fd(), x, 1024)?;
                rustix::fs::fsetxattr(&tmp, x, &v, XattrFlags::empty())?;
            }
            rustix::fs::futimens(
                &tmp,
                &rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: st.st_atime,
                        tv_nsec: st.st_atime_nsec as _,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: st.st_mtime,
                        tv_nsec: st.st_mtime_nsec as _,
                    },
                },
            )?;
            rustix::fs::fsync(&tmp)?;
            let t = OsString::from(format!(
                "{TEMP_PREFIX}node.{}",
                hex::encode(crate::crypto::random_bytes::<6>())
            ));
            crate::backing::link_fd(tmp.as_fd(), dir, &t)?;
            if let Err(e) = rustix::fs::renameat(dir, &t, dir, name) {
                let _ = rustix::fs::unlinkat(dir, &t, AtFlags::empty());
                return Err(e.into());
            }
        }
        self.nodes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the authentication of file `name` to the new generation, if it checks out
    /// under the old one.
    fn file(&self, dir: BorrowedFd, name: &OsStr, st: &rustix::fs::Stat, p: &Path) -> Result<()> {
        let fd = open_at(dir, name, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let now = rustix::fs::fstat(&fd)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            fail!("changed while being moved");
        }
        let file = std::fs::File::from(fd);
        let h = match crate::backing::read_header_checked(&file, self.geo) {
            Ok(h) => h,
            Err(e) => {
                self.left(p, format!("header: {e}"));
                return Ok(());
            }
        };
        let stored = crate::envelope::stored_auth(file.as_fd()).ok().flatten();
        if self.new_auth.verify(&h, stored.as_deref()).is_ok() {
            return Ok(());
        }
        if let Some(old) = &self.old_auth {
            if let Err(e) = old.verify(&h, stored.as_deref()) {
                self.left(
                    p,
                    format!("not authenticated under the old generation either: {e}"),
                );
                return Ok(());
            }
        }
        rustix::fs::fsetxattr(
            &file,
            AUTH_XATTR,
            &self.new_auth.seal(&h),
            XattrFlags::empty(),
        )?;
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The long-name xattr of entry `name` of `dir`, if it is a hashed name and has one.
fn long_value(dir: BorrowedFd, name: &OsStr) -> Option<Vec<u8>> {
    if !is_long(name.as_bytes()) {
        return None;
    }
    let obj = open_obj_at(dir, name).ok()?;
    getxattr_fd(obj.as_fd(), OsStr::new(&long_xattr(name.as_bytes())), 1024)
        .ok()
        .map(|(_, v)| v)
}
