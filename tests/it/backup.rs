//! Backups at rest: the backing tree restores elsewhere from tar and rsync copies (with
//! xattrs); a copy without xattrs fails loudly; fsck finds and salvages damage; files are
//! restored without mounting; a real backup tool (restic) runs inside a mount.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn populated() -> (Tree, Vec<(String, Vec<u8>)>) {
    let mut t = Tree::new(&[]);
    t.mount();
    fs::create_dir_all(t.p("docs/deep")).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            let name = if i == 11 {
                // a hashed (long) name: its sealed form lives in an xattr of the file
                format!("docs/deep/{}", "long-name-".repeat(25))
            } else if i % 2 == 0 {
                format!("docs/f{i}")
            } else {
                format!("docs/deep/g{i}")
            };
            let data = random_bytes(i * 3001 % 40_000, i as u64);
            fs::write(t.p(&name), &data).unwrap();
            (name, data)
        })
        .collect();
    std::os::unix::fs::symlink("f0", t.p("docs/link")).unwrap();
    std::os::unix::fs::symlink("../f0", t.p(&format!("docs/deep/{}", "l".repeat(255)))).unwrap();
    t.umount();
    (t, files)
}

/// Mounts the tree copied to `backing` (same keystore) and checks every file.
fn check_copy(t: &Tree, backing: &Path, files: &[(String, Vec<u8>)]) {
    let mnt = t.dir.path().join("mnt2");
    fs::create_dir_all(&mnt).unwrap();
    ok(t.kmsfs(&["mount", backing.to_str().unwrap(), mnt.to_str().unwrap()]));
    let r = std::panic::catch_unwind(|| {
        for (name, data) in files {
            assert_eq!(
                &fs::read(mnt.join(name)).unwrap(),
                data,
                "{name} in the restored copy"
            );
        }
        assert_eq!(
            fs::read_link(mnt.join("docs/link")).unwrap().to_str(),
            Some("f0")
        );
        assert_eq!(
            fs::read_link(mnt.join(format!("docs/deep/{}", "l".repeat(255))))
                .unwrap()
                .to_str(),
            Some("../f0")
        );
    });
    ok(t.kmsfs(&["umount", mnt.to_str().unwrap()]));
    r.unwrap();
}

#[test]
fn tar_and_rsync_copies_restore_and_a_copy_without_xattrs_fails_loudly() {
    require_fuse!();
    let (t, files) = populated();
    let d = t.dir.path();
    // tar with xattrs
    let tarball = d.join("backup.tar");
    ok(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=user.*",
            "-cf",
            tarball.to_str().unwrap(),
            "-C",
            t.backing.to_str().unwrap(),
            ".",
        ])
        .output()
        .unwrap());
    let from_tar = d.join("from-tar");
    fs::create_dir(&from_tar).unwrap();
    ok(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=user.*",
            "-xf",
            tarball.to_str().unwrap(),
            "-C",
            from_tar.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    check_copy(&t, &from_tar, &files);
    ok(t.kmsfs(&["fsck", from_tar.to_str().unwrap()]));
    // rsync -aX
    if Command::new("rsync").arg("--version").output().is_ok() {
        let from_rsync = d.join("from-rsync");
        ok(Command::new("rsync")
            .args([
                "-aX",
                &format!("{}/", t.backing.display()),
                from_rsync.to_str().unwrap(),
            ])
            .output()
            .unwrap());
        check_copy(&t, &from_rsync, &files);
    } else {
        assert!(std::env::var_os("CI").is_none(), "rsync missing in CI");
        eprintln!("!!!!!!!! SKIPPING the rsync round trip: rsync not installed !!!!!!!!");
    }
    // a copy without xattrs: fsck and the mount name the files that lost their header
    let bare = d.join("bare");
    ok(Command::new("cp")
        .args(["-r", t.backing.to_str().unwrap(), bare.to_str().unwrap()])
        .output()
        .unwrap());
    // (names are sealed: the backing paths of the plaintext ones, below the copy)
    let in_bare = |p: &str| bare.join(t.b(p).strip_prefix(&t.backing).unwrap());
    let out = t.kmsfs(&["fsck", bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!(
            "{}: header: no kmsfs header",
            in_bare("docs/f0").display()
        )),
        "{report}"
    );
    let mnt = d.join("mnt3");
    fs::create_dir(&mnt).unwrap();
    let log = d.join("bare.log");
    ok(t.kmsfs(&[
        "mount",
        bare.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ]));
    let r = fs::read(mnt.join("docs/f2"));
    ok(t.kmsfs(&["umount", mnt.to_str().unwrap()]));
    assert!(
        is_eio(r),
        "a file without its header must be EIO, not garbage"
    );
    // Without xattrs the directories lost their ids too: the names no longer open.
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!(
            "{}: directory has entries but no id (user.kmsfs.dirid missing: copied without xattrs?); answering EIO",
            bare.display()
        )),
        "{log}"
    );
}

#[test]
fn fsck_reports_damage_with_offsets_salvages_and_sets_exit_status() {
    require_fuse!();
    let (t, files) = populated();
    ok(t.kmsfs(&["fsck", t.backing.to_str().unwrap()]));
    let json: serde_json::Value = serde_json::from_str(&ok(t.kmsfs(&[
        "fsck",
        t.backing.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["files"], 12);
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
    // damage: a flipped byte in chunk 2 of f8 (6 chunks), a truncated tail of g5, a stray
    // rekey temp file
    let (f4, _) = &files[8];
    let cc = 4096 + 28;
    let p = t.b(f4);
    let mut data = fs::read(&p).unwrap();
    data[2 * cc + 100] ^= 0x40;
    fs::write(&p, &data).unwrap();
    let g5 = t.b(&files[5].0);
    let len = fs::metadata(&g5).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&g5)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    fs::write(t.b("docs/.kmsfs-tmp-f0.123"), b"junk").unwrap();
    let out = t.kmsfs(&[
        "fsck",
        t.backing.to_str().unwrap(),
        "--salvage",
        t.dir.path().join("salvage").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "damage must give exit status 1");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!(
            "{}: chunk 2 at offset {}: chunk",
            p.display(),
            2 * cc
        )),
        "{text}"
    );
    assert!(text.contains(&g5.display().to_string()), "{text}");
    // the backing path always, the plaintext path when the names open
    assert!(text.contains(&format!("(in the tree: {f4})")), "{text}");
    assert!(text.contains("stray-temp-file"), "{text}");
    // salvage: every readable chunk of f4, the bad one zero-filled
    let salvaged = fs::read(t.dir.path().join("salvage").join(f4)).unwrap();
    let orig = &files[8].1;
    assert_eq!(salvaged.len(), orig.len());
    assert_eq!(&salvaged[..2 * 4096], &orig[..2 * 4096]);
    assert!(salvaged[2 * 4096..3 * 4096].iter().all(|&b| b == 0));
    assert_eq!(&salvaged[3 * 4096..], &orig[3 * 4096..]);
    // structure-only check needs no KMS; a missing config cannot run at all (exit 2)
    let out = t.kmsfs(&["fsck", t.backing.to_str().unwrap(), "--no-kms"]);
    assert_eq!(out.status.code(), Some(1));
    let out = t.kmsfs(&["fsck", t.dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cat_and_decrypt_restore_without_mounting() {
    require_fuse!();
    let (t, files) = populated();
    let (name, data) = &files[3];
    let out = t.kmsfs(&["cat", t.b(name).to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(&out.stdout, data);
    let dest = t.dir.path().join("restored");
    ok(t.kmsfs(&[
        "decrypt",
        t.b("docs").to_str().unwrap(),
        "--out",
        dest.to_str().unwrap(),
    ]));
    for (name, data) in &files {
        assert_eq!(&fs::read(dest.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        fs::read_link(dest.join("docs/link")).unwrap().to_str(),
        Some("f0")
    );
}

#[test]
fn restic_repository_inside_a_mount() {
    require_fuse!();
    if Command::new("restic").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "restic missing in CI");
        eprintln!("!!!!!!!! SKIPPING: restic not installed !!!!!!!!");
        return;
    }
    let mut t = Tree::new(&[]);
    t.mount();
    // something real to back up: this crate's sources
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let repo = t.p("restic-repo");
    let cache = t.dir.path().join("restic-cache");
    let dest = t.dir.path().join("restic-restore");
    let restic = |args: &[&str]| {
        Command::new("restic")
            .args(["-r", repo.to_str().unwrap()])
            .args(args)
            .env("RESTIC_PASSWORD", "test-password")
            .env("RESTIC_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    ok(restic(&["init"]));
    ok(restic(&["backup", src.to_str().unwrap()]));
    ok(restic(&["check", "--read-data"]));
    ok(restic(&[
        "restore",
        "latest",
        "--target",
        dest.to_str().unwrap(),
    ]));
    for e in walk(&src) {
        let rel = e.strip_prefix("/").unwrap();
        assert_eq!(
            fs::read(&e).unwrap(),
            fs::read(dest.join(rel)).unwrap(),
            "{}",
            e.display()
        );
    }
    // and the repository survives a remount
    t.remount();
    ok(restic(&["check", "--read-data"]));
}
