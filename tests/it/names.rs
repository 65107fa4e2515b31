//! Encrypted, authenticated names (#14, format 2): nothing of a name or a symlink target
//! reaches the backing tree; every name a directory may hold round-trips; tampering with
//! backing names, moving entries between backing directories and swapping directory ids
//! are detected; the tree commands speak plaintext paths.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::common::*;

fn names_in(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Every byte string the backing tree shows: entry names, xattr names and values, file
/// contents, symlink targets.
fn backing_bytes(root: &Path) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        out.push(p.as_os_str().as_bytes().to_vec());
        let mut list = vec![0u8; 65536];
        if let Ok(n) = rustix::fs::llistxattr(&p, &mut list[..]) {
            for x in list[..n].split(|&b| b == 0).filter(|x| !x.is_empty()) {
                out.push(x.to_vec());
                let mut v = vec![0u8; 65536];
                if let Ok(m) = rustix::fs::lgetxattr(&p, x, &mut v[..]) {
                    out.push(v[..m].to_vec());
                }
            }
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if md.file_type().is_symlink() {
            out.push(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec());
        } else if md.is_file() {
            out.push(fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Names of every shape: lengths 1..=255, UTF-8, arbitrary bytes (no `/`, no NUL).
fn odd_names() -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "a".into(),
        "settlement-draft.pdf".into(),
        "résumé – 日本語のファイル名 🗂".into(),
        ".hidden".into(),
        "...".into(),
        "name with spaces and \n newline".into(),
    ];
    v.push(OsString::from_vec(
        (1u8..=255).filter(|&b| b != b'/').take(200).collect(),
    ));
    for len in [15, 16, 17, 160, 161, 200, 254, 255] {
        v.push(OsString::from_vec(
            (0..len).map(|i| b'a' + (i % 26) as u8).collect(),
        ));
    }
    v
}

#[test]
fn no_name_or_target_reaches_the_backing_tree_and_every_name_round_trips() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let names = odd_names();
    let long_target: Vec<u8> = (0..4095).map(|i| b"target-path/"[i % 12]).collect();
    fs::create_dir(t.p("tax-2025")).unwrap();
    fs::write(t.p("tax-2025/divorce-settlement.pdf"), b"the content").unwrap();
    let d = t.p("tax-2025");
    for (i, n) in names.iter().enumerate() {
        fs::write(d.join(n), format!("file {i}")).unwrap();
        fs::create_dir(t.p("").join(n)).unwrap();
        std::os::unix::fs::symlink(format!("secret-target-{i}"), t.p("").join(n).join(n)).unwrap();
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(&long_target), t.p("long-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.p("secret-pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // A long name hard-linked into another directory, then renamed across directories.
    let long = &names[names.len() - 1];
    fs::hard_link(d.join(long), t.p("").join(&names[1]).join(long)).unwrap();
    fs::rename(
        d.join(&names[0]),
        t.p("").join(&names[2]).join("moved-here"),
    )
    .unwrap();
    fs::rename(
        t.p("").join(&names[2]).join("moved-here"),
        d.join(&names[0]),
    )
    .unwrap();
    let check = |t: &Tree| {
        let d = t.p("tax-2025");
        let mut want: BTreeSet<OsString> = names.iter().cloned().collect();
        want.insert("divorce-settlement.pdf".into());
        assert_eq!(names_in(&d), want);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(fs::read(d.join(n)).unwrap(), format!("file {i}").as_bytes());
            let l = t.p("").join(n).join(n);
            assert_eq!(
                fs::read_link(&l).unwrap(),
                Path::new(&format!("secret-target-{i}"))
            );
            assert!(fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
        }
        assert_eq!(
            fs::read_link(t.p("long-link"))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            &long_target[..]
        );
        assert_eq!(
            fs::symlink_metadata(t.p("long-link")).unwrap().len(),
            4095,
            "a symlink's size is its target's length"
        );
        let pipe = fs::symlink_metadata(t.p("secret-pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&pipe.permissions()) & 0o777,
            0o640
        );
        assert_eq!(
            fs::read(t.p("").join(&names[1]).join(long)).unwrap(),
            format!("file {}", names.len() - 1).as_bytes()
        );
        // readdir's types match lstat's
        for e in fs::read_dir(t.p("")).unwrap() {
            let e = e.unwrap();
            assert_eq!(
                e.file_type().unwrap(),
                fs::symlink_metadata(e.path()).unwrap().file_type()
            );
        }
    };
    check(&t);
    t.umount();
    // Nothing of a name (4 bytes or more) or a target is in the backing tree.
    let all = backing_bytes(&t.backing);
    let mut secrets: Vec<Vec<u8>> = names
        .iter()
        .map(|n| n.as_bytes().to_vec())
        .filter(|n| n.len() >= 4)
        .collect();
    secrets.extend([
        b"tax-2025".to_vec(),
        b"divorce-settlement".to_vec(),
        b"secret-target".to_vec(),
        b"secret-pipe".to_vec(),
        b"long-link".to_vec(),
        b"target-path/".to_vec(),
        "日本語".as_bytes().to_vec(),
    ]);
    for s in &secrets {
        for b in &all {
            assert!(
                !contains(b, s),
                "{:?} found in the backing tree",
                String::from_utf8_lossy(s)
            );
        }
    }
    t.mount();
    check(&t);
    t.umount();
    // `kmsfs path` both ways, `cat BACKING PATH`, and a restore with every name.
    let b = t.b("tax-2025/divorce-settlement.pdf");
    assert!(b.exists() && b.starts_with(&t.backing), "{}", b.display());
    assert_eq!(
        ok(t.kmsfs(&[
            "path",
            "--reverse",
            &t.backing.display().to_string(),
            &b.display().to_string()
        ]))
        .trim_end(),
        "tax-2025/divorce-settlement.pdf"
    );
    assert_eq!(
        ok(t.kmsfs(&[
            "cat",
            &t.backing.display().to_string(),
            "tax-2025/divorce-settlement.pdf"
        ])),
        "the content"
    );
    // A rekey (new file, renamed over the old) keeps a hashed name's xattr.
    let long161 = format!(
        "tax-2025/{}",
        "abcdefghijklmnopqrstuvwxyz".repeat(7).get(..161).unwrap()
    );
    let lb = t.b(&long161);
    assert!(
        lb.file_name().unwrap().as_bytes().starts_with(b"~"),
        "{}",
        lb.display()
    );
    ok(t.kmsfs(&[
        "rekey",
        &t.backing.display().to_string(),
        &lb.display().to_string(),
    ]));
    let out = t.dir.path().join("restored");
    ok(t.kmsfs(&[
        "decrypt",
        &t.backing.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]));
    assert_eq!(
        fs::read(out.join("tax-2025/divorce-settlement.pdf")).unwrap(),
        b"the content"
    );
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read(out.join("tax-2025").join(n)).unwrap(),
            format!("file {i}").as_bytes()
        );
        assert_eq!(
            fs::read_link(out.join(n).join(n)).unwrap(),
            Path::new(&format!("secret-target-{i}"))
        );
    }
    assert_eq!(
        fs::read_link(out.join("long-link"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        &long_target[..]
    );
    assert!(fs::symlink_metadata(out.join("secret-pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    ok(t.kmsfs(&["fsck", &t.backing.display().to_string()]));
}

#[test]
fn names_that_cannot_be_are_refused_and_deep_trees_work() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let too_long = OsString::from_vec(vec![b'x'; 256]);
    let e = fs::write(t.p("").join(&too_long), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    let e = std::os::unix::fs::symlink(OsStr::from_bytes(&[b'y'; 4096]), t.p("l")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    // Two long links of one file: rename(2) between them does nothing, and a refused
    // RENAME_NOREPLACE or link leaves every name readable.
    let (l1, l2, l3) = (
        t.p(&"1".repeat(200)),
        t.p(&"2".repeat(200)),
        t.p(&"3".repeat(200)),
    );
    fs::write(&l1, b"one").unwrap();
    fs::hard_link(&l1, &l2).unwrap();
    fs::write(&l3, b"three").unwrap();
    fs::rename(&l1, &l2).unwrap();
    let noreplace = |a: &Path, b: &Path| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            a,
            rustix::fs::CWD,
            b,
            rustix::fs::RenameFlags::NOREPLACE,
        )
    };
    assert_eq!(noreplace(&l1, &l2), Err(rustix::io::Errno::EXIST));
    assert_eq!(noreplace(&l1, &l3), Err(rustix::io::Errno::EXIST));
    assert_eq!(
        fs::hard_link(&l1, &l3).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    t.umount();
    t.mount();
    for (p, want) in [(&l1, &b"one"[..]), (&l2, b"one"), (&l3, b"three")] {
        assert_eq!(fs::read(p).unwrap(), want, "{}", p.display());
    }
    // (a lookup needs only the hash; listing needs each link's xattr)
    let listed = names_in(&t.p(""));
    for p in [&l1, &l2, &l3] {
        assert!(
            listed.contains(p.file_name().unwrap()),
            "{} not listed",
            p.display()
        );
    }
    // O_TMPFILE: fuser has no FUSE_TMPFILE handler; the kernel answers EOPNOTSUPP and
    // callers (glibc's tmpfile users, systemd) fall back to a named file.
    let e = rustix::fs::open(
        t.p(""),
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap_err();
    assert_eq!(e, rustix::io::Errno::OPNOTSUPP);
    // Nearly PATH_MAX: 18 levels of 200-byte names.
    let mut p: PathBuf = t.p("");
    for i in 0..18 {
        p.push(format!("{i:02}{}", "d".repeat(198)));
        fs::create_dir(&p).unwrap();
    }
    assert!(p.as_os_str().len() > 3600, "{}", p.as_os_str().len());
    fs::write(p.join("leaf"), b"deep").unwrap();
    t.umount();
    t.mount();
    assert_eq!(fs::read(p.join("leaf")).unwrap(), b"deep");
    // `..` and readdir offsets across a remount
    assert_eq!(
        fs::read(p.join("..").join(p.file_name().unwrap()).join("leaf")).unwrap(),
        b"deep"
    );
    t.umount();
}

#[test]
fn renamed_moved_and_swapped_backing_entries_are_detected() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    for d in ["a", "b"] {
        fs::create_dir(t.p(d)).unwrap();
    }
    for f in ["a/x", "a/y", "b/z"] {
        fs::write(t.p(f), f.as_bytes()).unwrap();
    }
    t.umount();
    let (x, y, z) = (t.b("a/x"), t.b("a/y"), t.b("b/z"));
    let (a, b) = (t.b("a"), t.b("b"));
    // 1. a backing name altered (one character of the sealed name changed)
    let mut n = x.file_name().unwrap().as_bytes().to_vec();
    n[5] = if n[5] == b'A' { b'B' } else { b'A' };
    let forged = a.join(OsStr::from_bytes(&n));
    fs::rename(&x, &forged).unwrap();
    // 2. an entry moved into another backing directory
    fs::rename(&z, a.join(z.file_name().unwrap())).unwrap();
    t.mount();
    assert_eq!(names_in(&t.p("a")), BTreeSet::from(["y".into()]));
    assert_eq!(names_in(&t.p("b")), BTreeSet::new());
    t.umount();
    let log = t.log();
    for p in [&forged, &a.join(z.file_name().unwrap())] {
        assert!(
            log.lines()
                .any(|l| l.contains(&p.display().to_string()) && l.contains("not listed")),
            "{}: {log}",
            p.display()
        );
    }
    let out = t.kmsfs(&["fsck", &t.backing.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("{}: name:", forged.display())),
        "{report}"
    );
    // 3. the two directories' ids swapped: neither opens any more
    fs::rename(&forged, &x).unwrap();
    fs::rename(a.join(z.file_name().unwrap()), &z).unwrap();
    let id = |d: &Path| {
        let mut v = [0u8; 64];
        let n = rustix::fs::lgetxattr(d, "user.kmsfs.dirid", &mut v[..]).unwrap();
        v[..n].to_vec()
    };
    let (ia, ib) = (id(&a), id(&b));
    rustix::fs::lsetxattr(&a, "user.kmsfs.dirid", &ib, rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(&b, "user.kmsfs.dirid", &ia, rustix::fs::XattrFlags::empty()).unwrap();
    // (each directory is bound to its place with its own id: both are refused)
    t.mount();
    assert!(is_eio(fs::read_dir(t.p("a"))));
    assert!(is_eio(fs::read_dir(t.p("b"))));
    t.umount();
    assert!(
        t.log().contains(&format!(
            "{}: directory not bound to this place",
            a.display()
        )),
        "{}",
        t.log()
    );
    // put back: all there
    rustix::fs::lsetxattr(&a, "user.kmsfs.dirid", &ia, rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(&b, "user.kmsfs.dirid", &ib, rustix::fs::XattrFlags::empty()).unwrap();
    t.mount();
    assert_eq!(
        names_in(&t.p("a")),
        BTreeSet::from(["x".into(), "y".into()])
    );
    assert_eq!(fs::read(t.p("b/z")).unwrap(), b"b/z");
    t.umount();
    // 4. a real symlink planted under a sealed name (this tree makes only node files)
    fs::remove_file(&y).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &y).unwrap();
    t.mount();
    let e = fs::read_link(t.p("a/y")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    t.umount();
    assert!(t.log().contains("was not made by kmsfs"), "{}", t.log());
    // 5. a regular file cut to a FIFO's size residue (chunk + 28 + 2) is not a FIFO
    fs::OpenOptions::new()
        .write(true)
        .open(&x)
        .unwrap()
        .set_len(4096 + 28 + 2)
        .unwrap();
    t.mount();
    let e = fs::symlink_metadata(t.p("a/x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    t.umount();
    assert!(t.log().contains("Fifo"), "{}", t.log());
}

#[test]
fn plaintext_names_still_make_format_1_trees() {
    require_fuse!();
    let mut t = Tree::new(&["--plaintext-names"]);
    t.mount();
    fs::write(t.p("visible"), b"v").unwrap();
    std::os::unix::fs::symlink("visible", t.p("ln")).unwrap();
    t.umount();
    assert!(t.backing.join("visible").is_file());
    assert_eq!(
        fs::read_link(t.backing.join("ln")).unwrap(),
        Path::new("visible")
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.backing.join("kmsfs.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["version"].as_u64(), cfg["filenames"].as_str()),
        (Some(1), Some("plaintext"))
    );
}
