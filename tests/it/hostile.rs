//! Hostile backing trees (#20): what whoever writes a sync folder or a backup store can
//! plant, tried against the mount and the offline tools. Each test is the attack as it
//! was reproduced on e418955 (run it there with `KMSFS_TEST_BIN=old/kmsfs` to watch it
//! succeed), and what must happen instead.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::common::*;

/// The hashed form of backing entry `short`'s sealed name (`~HASH`), and its long-name
/// xattr's name and value: a second encoding of the same name.
fn hashed(short: &Path) -> (std::path::PathBuf, String, Vec<u8>) {
    let sealed = URL_SAFE_NO_PAD
        .decode(short.file_name().unwrap().as_bytes())
        .unwrap();
    let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(&sealed));
    (
        short.with_file_name(format!("~{hash}")),
        format!("user.kmsfs.ln.{hash}"),
        sealed,
    )
}

/// Renames backing entry `short` to the hashed form of its name.
fn rehash(short: &Path) -> std::path::PathBuf {
    let (long, x, v) = hashed(short);
    fs::rename(short, &long).unwrap();
    rustix::fs::lsetxattr(&long, x.as_str(), &v, rustix::fs::XattrFlags::empty()).unwrap();
    long
}

fn everything_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let c = fs::read(&p).unwrap_or_default();
            (p.display().to_string(), c)
        })
        .collect();
    v.sort();
    v
}

/// A tree with `docs/{authorized_keys,notes}`, `top` and an empty directory `empty`,
/// then attacked: `docs` renamed to the hashed form of its own name, and a real symlink
/// to `outside` (holding a file of the victim's) put under its short name, so both open
/// to `docs`. Answers the tree, the symlink's backing path and `outside`.
fn symlink_planted() -> (Tree, std::path::PathBuf, std::path::PathBuf) {
    let mut t = Tree::new(&[]);
    t.mount();
    fs::create_dir(t.p("docs")).unwrap();
    fs::write(t.p("docs/authorized_keys"), b"the owner's key").unwrap();
    fs::write(t.p("docs/notes"), b"notes").unwrap();
    fs::write(t.p("top"), b"top file").unwrap();
    fs::create_dir(t.p("empty")).unwrap();
    t.umount();
    let outside = t.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("authorized_keys"), b"victim's own file").unwrap();
    let docs = t.b("docs");
    rehash(&docs);
    std::os::unix::fs::symlink(&outside, &docs).unwrap();
    (t, docs, outside)
}

fn restore(t: &Tree) -> (std::path::PathBuf, std::process::Output) {
    let out = t.dir.path().join("restored");
    let r = t.kmsfs(&[
        "decrypt",
        &t.backing.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    (out, r)
}

/// e418955's `decrypt` recreated the planted symlink, then wrote the directory's files
/// through it: the victim's file outside the target was overwritten. (It did so when it
/// met the symlink before the directory, which depends on the backing filesystem's
/// listing order: the attack is made on several fresh trees, so both orders are met.)
#[test]
fn a_restore_of_a_hostile_tree_writes_nothing_outside_its_target() {
    require_fuse!();
    let mut last = None;
    for _ in 0..8 {
        let (t, docs, outside) = symlink_planted();
        let before = everything_below(&outside);
        let (out, r) = restore(&t);
        assert_eq!(
            everything_below(&outside),
            before,
            "the restore wrote outside its target"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // The planted entries are skipped and reported; the rest is restored; the exit
        // status says so.
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success(),
            "a skipped entry must show in the exit status"
        );
        assert!(err.contains(&docs.display().to_string()), "{err}");
        assert!(err.contains("symlink"), "{err}");
        assert!(err.contains("hashed name"), "{err}");
        assert_eq!(fs::read(out.join("top")).unwrap(), b"top file");
        assert!(out.join("empty").is_dir());
        assert!(!fs::symlink_metadata(out.join("docs"))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false));
        last = Some(t);
    }
    let mut t = last.unwrap();

    // The mount lists `docs` once (the hashed entry is not listed) and refuses the
    // real symlink.
    t.mount();
    let names: Vec<_> = fs::read_dir(t.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == OsStr::new("docs")).count(),
        1,
        "{names:?}"
    );
    assert!(
        is_eio(fs::symlink_metadata(t.p("docs"))),
        "a real symlink is not kmsfs's"
    );
    t.umount();
    // fsck reports the hashed entry.
    let f = t.kmsfs(&["fsck", &t.backing.display().to_string()]);
    assert!(!f.status.success());
    let o = String::from_utf8_lossy(&f.stdout).to_string() + &String::from_utf8_lossy(&f.stderr);
    assert!(o.contains("hashed name"), "{o}");
}

/// One bad entry (here an empty directory whose id was stripped, beside the planted
/// symlink) aborted e418955's whole restore: 0 of 3 files restored.
#[test]
fn a_restore_skips_bad_entries_and_restores_the_rest() {
    require_fuse!();
    let (t, _docs, outside) = symlink_planted();
    rustix::fs::lremovexattr(t.b("empty"), "user.kmsfs.dirid").unwrap();
    let (out, r) = restore(&t);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(err.contains("directory id"), "{err}");
    assert!(err.contains("could not be restored"), "{err}");
    assert_eq!(fs::read(out.join("top")).unwrap(), b"top file");
    assert_eq!(
        fs::read(outside.join("authorized_keys")).unwrap(),
        b"victim's own file"
    );
    // Restoring one directory of the tree by its backing path works the same way.
    let sub = t.dir.path().join("sub");
    let r = t.kmsfs(&[
        "decrypt",
        &t.b("empty").display().to_string(),
        "--out",
        &sub.display().to_string(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("directory id"));
}

/// A file or directory given the hashed encoding of a name that fits unhashed opens to
/// the same plaintext name as the genuine entry beside it: one name listed twice.
#[test]
fn one_name_has_one_entry() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    fs::write(t.p("passwd"), b"genuine").unwrap();
    t.umount();
    let genuine = t.b("passwd");
    // The attacker's copy of the entry (content and header) under the hashed form,
    // beside the genuine one.
    let (long, x, v) = hashed(&genuine);
    fs::copy(&genuine, &long).unwrap();
    let mut h = vec![0u8; 8192];
    let n = rustix::fs::lgetxattr(&genuine, "user.kmsfs.header", &mut h[..]).unwrap();
    let set = |name: &str, val: &[u8]| {
        rustix::fs::lsetxattr(&long, name, val, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set("user.kmsfs.header", &h[..n]);
    set(&x, &v);
    assert!(genuine.exists() && long.exists());
    t.mount();
    let names: Vec<_> = fs::read_dir(t.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("passwd")], "{names:?}");
    assert!(t.log().contains("hashed name"), "{}", t.log());
    t.umount();
    let f = t.kmsfs(&["fsck", &t.backing.display().to_string()]);
    assert!(!f.status.success());
    assert!(
        String::from_utf8_lossy(&f.stdout).contains(&long.display().to_string()),
        "{}",
        String::from_utf8_lossy(&f.stdout)
    );
}

/// 20,000 names that do not open, planted in one backing directory: e418955 logged one
/// WARN line per name per listing (five `ls` by an unprivileged user wrote 100,000
/// lines). One summary line per directory now, rate-limited; `fsck` lists every entry.
#[test]
fn planted_names_cannot_flood_the_log() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount_with(&["--allow-other"]);
    fs::create_dir(t.p("inbox")).unwrap();
    fs::write(t.p("inbox/real"), b"real").unwrap();
    std::fs::set_permissions(
        t.p("inbox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let inbox = t.b("inbox");
    for i in 0..20_000 {
        fs::write(
            inbox.join(format!("planted{i:05}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            b"",
        )
        .unwrap();
    }
    let lines_before = t.log().lines().count();
    for _ in 0..5 {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
            .arg(t.p("inbox"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "real");
    }
    let log = t.log();
    let new: Vec<_> = log.lines().skip(lines_before).collect();
    let warns: Vec<_> = new.iter().filter(|l| l.contains("not listed")).collect();
    assert_eq!(warns.len(), 1, "{:?}", &new[..new.len().min(5)]);
    assert!(
        warns[0].contains("20000 entries of") && warns[0].ends_with("; and 19995 more"),
        "{}",
        warns[0]
    );
    assert!(new.len() < 10, "{} new log lines", new.len());
    t.umount();
    let f = t.kmsfs(&["fsck", &t.backing.display().to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    let named = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "name" && p["path"].as_str().unwrap().contains("/planted"))
        .count();
    assert_eq!(named, 20_000, "fsck lists every entry");
}

/// A world-writable upload directory renamed (in the backing tree) over the backing entry
/// of `~/.ssh`: e418955 served it as `~/.ssh`, with the uploader's `authorized_keys`, no
/// log line, `fsck` clean. Directories are bound to their place (parent, name) now;
/// renames and exchanges through the mount move that binding with them.
#[test]
fn a_directory_moved_in_the_backing_tree_does_not_open_in_its_new_place() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    fs::create_dir_all(t.p("home/.ssh")).unwrap();
    fs::write(t.p("home/.ssh/authorized_keys"), b"the owner's key").unwrap();
    fs::create_dir(t.p("upload")).unwrap();
    fs::write(t.p("upload/authorized_keys"), b"the uploader's key").unwrap();
    // Renames and exchanges through the mount keep every directory reachable.
    fs::create_dir_all(t.p("a/x")).unwrap();
    fs::create_dir_all(t.p("b/y")).unwrap();
    fs::write(t.p("a/x/f"), b"in x").unwrap();
    fs::rename(t.p("a/x"), t.p("b/x2")).unwrap();
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        t.p("b/x2"),
        rustix::fs::CWD,
        t.p("b/y"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
    t.umount();
    let ssh = t.b("home/.ssh");
    let upload = t.b("upload");
    fs::rename(&ssh, t.backing.join("moved-away")).unwrap();
    fs::rename(&upload, &ssh).unwrap();
    t.mount();
    assert_eq!(fs::read(t.p("b/y/f")).unwrap(), b"in x");
    assert!(t.p("b/x2").is_dir());
    let r = fs::read(t.p("home/.ssh/authorized_keys"));
    assert!(
        r.is_err(),
        "served the uploader's directory as ~/.ssh: {r:?}"
    );
    assert!(is_eio(fs::symlink_metadata(t.p("home/.ssh"))));
    t.umount();
    assert!(t.log().contains("not bound to this place"), "{}", t.log());
    let f = t.kmsfs(&["fsck", &t.backing.display().to_string()]);
    assert!(!f.status.success());
    let o = String::from_utf8_lossy(&f.stdout);
    assert!(
        o.contains("place") && o.contains(&ssh.display().to_string()),
        "{o}"
    );
    let (out, r) = restore(&t);
    assert!(!r.status.success());
    assert!(!out.join("home/.ssh/authorized_keys").exists());
    assert_eq!(fs::read(out.join("b/y/f")).unwrap(), b"in x");
    // A move to a new tree key leaves it where it is, refused, and moves the rest.
    let m = t.kmsfs(&["tree-key", "rotate", &t.backing.display().to_string()]);
    assert!(String::from_utf8_lossy(&m.stderr).contains("not bound to this place"));
    t.mount();
    assert_eq!(fs::read(t.p("b/y/f")).unwrap(), b"in x");
    assert!(fs::read(t.p("home/.ssh/authorized_keys")).is_err());
}
