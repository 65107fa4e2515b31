//! Key lifecycle through the CLI and real mounts: rotation that re-wraps headers without
//! touching data, disable/enable, recovery keys, rekey, policies, audit, crash safety.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use sha2::{Digest, Sha256};

fn fails(out: std::process::Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "command succeeded, expected {needle}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(error_lines(&err), 1, "error is not one line: {err}");
    err
}

/// sha256 of every file's content (not its xattrs) in the backing tree, by path; the
/// config (which `rotate --to` and `keys` legitimately rewrite) is left out.
/// The content hash of every file's content, by inode: a move to a new tree key renames
/// entries (and re-seals node records), but must not touch a data byte.
fn content_hashes(backing: &Path) -> BTreeMap<u64, String> {
    let cfg = kmsfs::format::TreeConfig::load(backing).unwrap();
    kmsfs::tree::walk_files(backing, Some(&kmsfs::tree::TreeNames::for_walk(&cfg)))
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
                hex::encode(Sha256::digest(fs::read(&p).unwrap())),
            )
        })
        .collect()
}

/// (key ARN, material id) of every wrap of every file.
fn wraps(backing: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let cfg = kmsfs::format::TreeConfig::load(backing).unwrap();
    kmsfs::tree::walk_files(backing, Some(&kmsfs::tree::TreeNames::for_walk(&cfg)))
        .unwrap()
        .into_iter()
        .map(|p| {
            let h = kmsfs::tree::read_header_at(&p).unwrap();
            (
                p.display().to_string(),
                h.wraps
                    .into_iter()
                    .map(|w| (w.key_arn, w.material_id))
                    .collect(),
            )
        })
        .collect()
}

fn describe(t: &Tree, key: &str) -> serde_json::Value {
    serde_json::from_str(&ok(t.kmsfs(&["key", "describe", key]))).unwrap()
}

fn current_material(t: &Tree, key: &str) -> String {
    describe(t, key)["KeyMetadata"]["CurrentKeyMaterialId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn populate(t: &Tree, n: usize) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(t.p("sub/deeper")).unwrap();
    (0..n)
        .map(|i| {
            let name = match i % 3 {
                0 => format!("f{i}"),
                1 => format!("sub/f{i}"),
                _ => format!("sub/deeper/f{i}"),
            };
            let data = random_bytes(i * 977 % 20_000, i as u64);
            fs::write(t.p(&name), &data).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn rotate_rewraps_headers_without_touching_data() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let files = populate(&t, 60);
    t.umount();
    let before = content_hashes(&t.backing);
    let old = current_material(&t, "alias/kmsfs-default");
    assert!(wraps(&t.backing)
        .values()
        .all(|w| w.len() == 1 && w[0].1 == old));

    ok(t.kmsfs(&["key", "rotate", "alias/kmsfs-default"]));
    let new = current_material(&t, "alias/kmsfs-default");
    assert_ne!(old, new);
    // old versions still decrypt until the headers move on
    t.mount();
    assert_eq!(fs::read(t.p(&files[0].0)).unwrap(), files[0].1);
    // rotate while mounted: the mount keeps working during and after
    let out: serde_json::Value = serde_json::from_str(&ok(t.kmsfs(&[
        "rotate",
        t.backing.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(out["files"], 60);
    assert_eq!(out["changed"], 60);
    assert_eq!(out["failed"], 0);
    for (name, data) in &files {
        assert_eq!(&fs::read(t.p(name)).unwrap(), data, "{name} after rotate");
    }
    t.umount();
    assert_eq!(
        content_hashes(&t.backing),
        before,
        "rotation changed data bytes"
    );
    assert!(
        wraps(&t.backing)
            .values()
            .all(|w| w.len() == 1 && w[0].1 == new),
        "a header is not under the new version"
    );
    // idempotent
    let out: serde_json::Value = serde_json::from_str(&ok(t.kmsfs(&[
        "rotate",
        t.backing.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (out["changed"].as_u64(), out["skipped"].as_u64()),
        (Some(0), Some(60))
    );
    t.mount();
    for (name, data) in &files {
        assert_eq!(&fs::read(t.p(name)).unwrap(), data, "{name} after remount");
    }
}

#[test]
fn rotate_to_another_key_and_keys_add_remove() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let files = populate(&t, 12);
    t.umount();
    let before = content_hashes(&t.backing);
    let k2 = ok(t.kmsfs(&["key", "create", "--alias", "second"]))
        .trim()
        .to_string();
    let k3 = ok(t.kmsfs(&["key", "create", "--alias", "third"]))
        .trim()
        .to_string();
    ok(t.kmsfs(&["keys", "add", t.backing.to_str().unwrap(), "alias/second"]));
    assert!(wraps(&t.backing)
        .values()
        .all(|w| w.len() == 2 && w[1].0 == k2));
    ok(t.kmsfs(&[
        "keys",
        "remove",
        t.backing.to_str().unwrap(),
        "alias/kmsfs-default",
    ]));
    assert!(wraps(&t.backing)
        .values()
        .all(|w| w.len() == 1 && w[0].0 == k2));
    fails(
        t.kmsfs(&[
            "keys",
            "remove",
            t.backing.to_str().unwrap(),
            "alias/second",
        ]),
        "only key",
    );
    ok(t.kmsfs(&["rotate", t.backing.to_str().unwrap(), "--to", "alias/third"]));
    assert!(wraps(&t.backing)
        .values()
        .all(|w| w.len() == 1 && w[0].0 == k3));
    assert_eq!(
        ok(t.kmsfs(&["keys", "list", t.backing.to_str().unwrap()])).trim(),
        k3
    );
    assert_eq!(content_hashes(&t.backing), before);
    // the old key can go away entirely
    ok(t.kmsfs(&["key", "disable", "alias/kmsfs-default"]));
    t.mount();
    for (name, data) in &files {
        assert_eq!(&fs::read(t.p(name)).unwrap(), data);
    }
}

#[test]
fn disabled_key_fails_opens_and_enable_restores() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    // no pre-made keys: a new file must need the KMS at once
    t.mount_with(&["--dek-pool", "0"]);
    fs::write(t.p("a"), b"alpha").unwrap();
    fs::write(t.p("b"), b"beta").unwrap();
    t.umount();
    t.mount_with(&["--dek-pool", "0"]); // empty DEK cache
    assert_eq!(fs::read(t.p("a")).unwrap(), b"alpha"); // a's key is now cached
    let b_backing = t.b("b"); // (needs the tree key: before the key goes)
    ok(t.kmsfs(&["key", "disable", "alias/kmsfs-default"]));
    assert!(
        is_eio(fs::read(t.p("b"))),
        "opening an uncached file under a disabled key must fail"
    );
    let log = t.log();
    assert!(
        log.lines().any(
            |l| l.contains(&b_backing.display().to_string()) && l.contains("DisabledException")
        ),
        "{log}"
    );
    assert!(
        fs::write(t.p("c"), b"new").is_err(),
        "creating a file needs GenerateDataKey"
    );
    assert_eq!(
        fs::read(t.p("a")).unwrap(),
        b"alpha",
        "cached DEK keeps working"
    );
    ok(t.kmsfs(&["key", "enable", "alias/kmsfs-default"]));
    assert_eq!(fs::read(t.p("b")).unwrap(), b"beta");
    fs::write(t.p("c"), b"new").unwrap();
}

#[test]
fn recovery_key_keeps_tree_readable() {
    require_fuse!();
    let setup = Tree::new(&[]);
    let k1 = ok(setup.kmsfs(&["key", "create", "--alias", "primary"]))
        .trim()
        .to_string();
    let k2 = ok(setup.kmsfs(&["key", "create", "--alias", "recovery"]))
        .trim()
        .to_string();
    let backing2 = setup.dir.path().join("two");
    ok(setup.kmsfs(&[
        "init",
        backing2.to_str().unwrap(),
        "--key",
        "alias/primary",
        "--key",
        "alias/recovery",
    ]));
    let mut t = setup;
    t.backing = backing2;
    t.mount();
    let files = populate(&t, 9);
    t.umount();
    assert!(wraps(&t.backing)
        .values()
        .all(|w| w.len() == 2 && w[0].0 == k1 && w[1].0 == k2));
    ok(t.kmsfs(&["key", "disable", "alias/primary"]));
    fails(
        t.kmsfs(&["key", "schedule-deletion", "alias/primary", "--days", "3"]),
        "ValidationException",
    );
    ok(t.kmsfs(&["key", "schedule-deletion", "alias/primary", "--days", "7"]));
    assert_eq!(
        describe(&t, &k1)["KeyMetadata"]["KeyState"],
        "PendingDeletion"
    );
    t.mount();
    for (name, data) in &files {
        assert_eq!(
            &fs::read(t.p(name)).unwrap(),
            data,
            "{name} via the recovery key"
        );
    }
    ok(t.kmsfs(&["key", "cancel-deletion", &k1]));
    assert_eq!(describe(&t, &k1)["KeyMetadata"]["KeyState"], "Disabled");
}

#[test]
fn rekey_changes_deks_keeps_content_and_cleans_up() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let files = populate(&t, 10);
    rustix::fs::setxattr(
        t.p(&files[0].0),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fails(
        t.kmsfs(&["rekey", t.backing.to_str().unwrap()]),
        "is mounted",
    );
    t.umount();
    let ids_before: Vec<_> = kmsfs::tree::walk_files(&t.backing, None)
        .unwrap()
        .iter()
        .map(|p| kmsfs::tree::read_header_at(p).unwrap().file_id)
        .collect();
    let before = content_hashes(&t.backing);
    // a temp file left by a killed run is cleaned up
    fs::write(t.b("sub/.kmsfs-tmp-f1.dead"), b"junk").unwrap();
    let out: serde_json::Value = serde_json::from_str(&ok(t.kmsfs(&[
        "rekey",
        t.backing.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(out["changed"], 10);
    assert!(!t.b("sub/.kmsfs-tmp-f1.dead").exists());
    let ids_after: Vec<_> = kmsfs::tree::walk_files(&t.backing, None)
        .unwrap()
        .iter()
        .map(|p| kmsfs::tree::read_header_at(p).unwrap().file_id)
        .collect();
    assert!(
        ids_before.iter().zip(&ids_after).all(|(a, b)| a != b),
        "file ids must change"
    );
    let after = content_hashes(&t.backing);
    // every non-empty file's ciphertext changed (an empty file has no bytes to change)
    assert!(
        before
            .iter()
            .filter(|(k, v)| after.get(*k) == Some(v) && !v.starts_with("e3b0c442"))
            .count()
            == 0,
        "data bytes must change"
    );
    t.mount();
    for (name, data) in &files {
        assert_eq!(&fs::read(t.p(name)).unwrap(), data, "{name} after rekey");
    }
    let mut v = [0u8; 16];
    let n = rustix::fs::getxattr(t.p(&files[0].0), "user.note", &mut v).unwrap();
    assert_eq!(&v[..n], b"kept");
}

#[test]
fn policies_bind_local_principals() {
    let t = Tree::new(&[]);
    let arn = describe(&t, "alias/kmsfs-default")["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    // another local principal is denied by the default policy
    let out = command()
        .args(["key", "describe", "alias/kmsfs-default"])
        .env("KMSFS_KMS", t.kms_arg())
        .env("KMSFS_PRINCIPAL", "bob")
        .output()
        .unwrap();
    fails(out, "AccessDeniedException");
    // a policy that would lock the caller out is refused
    let dir = tempfile::tempdir().unwrap();
    let lockout = dir.path().join("lockout.json");
    fs::write(&lockout, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}]}"#).unwrap();
    fails(
        t.kmsfs(&["key", "policy", "put", &arn, lockout.to_str().unwrap()]),
        "MalformedPolicyDocumentException",
    );
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Conditon":{}}]}"#).unwrap();
    let e = fails(
        t.kmsfs(&["key", "policy", "put", &arn, bad.to_str().unwrap()]),
        "MalformedPolicyDocumentException",
    );
    assert!(e.contains("Conditon"), "{e}");
    // admin keeps everything; bob may only Decrypt with this tree's context
    let good = dir.path().join("good.json");
    fs::write(&good, r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":"local-admin"},"Action":"kms:*","Resource":"*"},
        {"Effect":"Allow","Principal":{"AWS":"bob"},"Action":["kms:Decrypt","kms:DescribeKey"],"Resource":"*"},
        {"Effect":"Deny","Principal":{"AWS":"local-admin"},"Action":"kms:Decrypt","Resource":"*",
         "Condition":{"StringEquals":{"kms:EncryptionContext:purpose":"forbidden"}}}]}"#).unwrap();
    ok(t.kmsfs(&["key", "policy", "put", &arn, good.to_str().unwrap()]));
    assert!(ok(t.kmsfs(&["key", "policy", "get", &arn])).contains("forbidden"));
    let out = command()
        .args(["key", "describe", &arn])
        .env("KMSFS_KMS", t.kms_arg())
        .env("KMSFS_PRINCIPAL", "bob")
        .output()
        .unwrap();
    ok(out);
    // the audit log has both the allowed and the denied requests, and verifies
    let show = ok(t.kmsfs(&["audit", "show", "--principal", "bob", "--json"]));
    let recs: Vec<serde_json::Value> = show
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs
        .iter()
        .any(|r| r["error_code"] == "AccessDeniedException" && r["op"] == "DescribeKey"));
    assert!(recs
        .iter()
        .any(|r| r["outcome"] == "ok" && r["op"] == "DescribeKey"));
    assert!(ok(t.kmsfs(&["audit", "verify"])).contains("audit log OK"));
}

/// On e663627, cutting audit.log and audit.checkpoints back together verified OK, and so
/// did deleting both. Now the sealed keystore vouches for its newest checkpoint, and an
/// anchor directory outside the keystore keeps copies.
#[test]
fn audit_log_cut_back_or_removed_with_its_checkpoints_is_detected() {
    let t = Tree::new(&[]);
    let anchor = tempfile::tempdir().unwrap();
    let anchored = |args: &[&str]| {
        command()
            .args(args)
            .env("KMSFS_KMS", t.kms_arg())
            .env("KMSFS_AUDIT_ANCHOR", anchor.path())
            .output()
            .unwrap()
    };
    for _ in 0..6 {
        ok(anchored(&["key", "create"]));
    }
    ok(anchored(&["audit", "verify"]));
    let a = anchor.path().to_str().unwrap();
    assert!(ok(anchored(&["audit", "verify", "--anchor", a])).contains("audit log OK"));
    let (log, ck) = (t.ks.join("audit.log"), t.ks.join("audit.checkpoints"));
    let (log_text, ck_text) = (
        fs::read_to_string(&log).unwrap(),
        fs::read_to_string(&ck).unwrap(),
    );
    let first_ck: serde_json::Value =
        serde_json::from_str(ck_text.lines().next().unwrap()).unwrap();
    let keep = first_ck["seq"].as_u64().unwrap() as usize;
    // cut both back, consistently, to the first checkpoint
    let cut: String = log_text
        .lines()
        .take(keep)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&log, cut).unwrap();
    fs::write(&ck, format!("{}\n", ck_text.lines().next().unwrap())).unwrap();
    let e = fails(t.kmsfs(&["audit", "verify"]), "the keystore vouches for");
    assert!(e.contains("cut off"), "{e}");
    fails(t.kmsfs(&["audit", "verify", "--anchor", a]), "vouches for");
    // the keystore refuses to run on it
    fails(t.kmsfs(&["key", "list"]), "audit log");
    // both removed
    fs::remove_file(&log).unwrap();
    fs::remove_file(&ck).unwrap();
    fails(t.kmsfs(&["audit", "verify"]), "the keystore vouches for");
    fails(t.kmsfs(&["key", "create"]), "ends at record 0");
}

#[test]
fn audit_verify_detects_an_edited_line() {
    let t = Tree::new(&[]);
    for _ in 0..5 {
        ok(t.kmsfs(&["key", "create"]));
    }
    ok(t.kmsfs(&["audit", "verify"]));
    let log = t.ks.join("audit.log");
    let text = fs::read_to_string(&log).unwrap();
    let n = text.lines().count();
    assert!(n >= 6, "{n} records");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // any field of record 4 (every record has a request id)
    lines[3] = lines[3].replacen("\"request_id\":\"", "\"request_id\":\"x", 1);
    fs::write(&log, lines.join("\n") + "\n").unwrap();
    let e = fails(t.kmsfs(&["audit", "verify"]), "sequence number 4");
    assert!(e.contains("edited"), "{e}");
}

#[test]
fn lifecycle_validation_through_the_cli() {
    let t = Tree::new(&[]);
    fails(
        t.kmsfs(&[
            "key",
            "enable-rotation",
            "alias/kmsfs-default",
            "--days",
            "30",
        ]),
        "ValidationException",
    );
    ok(t.kmsfs(&[
        "key",
        "enable-rotation",
        "alias/kmsfs-default",
        "--days",
        "90",
    ]));
    let d = describe(&t, "alias/kmsfs-default");
    assert_eq!(d["Rotation"]["KeyRotationEnabled"], true);
    assert_eq!(d["Rotation"]["RotationPeriodInDays"], 90);
    ok(t.kmsfs(&["key", "rotate", "alias/kmsfs-default"]));
    assert!(ok(t.kmsfs(&["key", "rotations", "alias/kmsfs-default"])).contains("ON_DEMAND"));
    fails(
        t.kmsfs(&["key", "describe", "alias/missing"]),
        "NotFoundException",
    );
    fails(
        t.kmsfs(&["key", "alias", "create", "aws/x", "alias/kmsfs-default"]),
        "InvalidAliasNameException",
    );
    fails(
        t.kmsfs(&["key", "cancel-deletion", "alias/kmsfs-default"]),
        "KMSInvalidStateException",
    );
}

#[test]
fn automatic_rotation_happens_once_when_two_processes_check() {
    let t = Tree::new(&[]);
    ok(t.kmsfs(&[
        "key",
        "enable-rotation",
        "alias/kmsfs-default",
        "--days",
        "90",
    ]));
    let a = kmsfs::kms::local::LocalKms::open(&t.ks, false).unwrap();
    a.set_next_rotation_for_test("alias/kmsfs-default", 1.0)
        .unwrap();
    let before = current_material(&t, "alias/kmsfs-default");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let ks = t.ks.clone();
            std::thread::spawn(move || {
                let k = kmsfs::kms::local::LocalKms::open(&ks, false).unwrap();
                kmsfs::kms::Kms::rotate_due(&k).unwrap().len()
            })
        })
        .collect();
    let rotated: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(rotated, 1, "exactly one checker rotates");
    assert_ne!(current_material(&t, "alias/kmsfs-default"), before);
    let rots = ok(t.kmsfs(&["key", "rotations", "alias/kmsfs-default"]));
    assert_eq!(
        rots.lines().filter(|l| l.contains("AUTOMATIC")).count(),
        1,
        "{rots}"
    );
}

#[test]
fn killed_key_creation_and_rotation_leave_a_consistent_state() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    // kill `key create` at various points
    for i in 0..12u64 {
        let mut child = command()
            .args(["key", "create"])
            .env("KMSFS_KMS", t.kms_arg())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(300 * i));
        let _ = child.kill();
        let _ = child.wait();
    }
    ok(t.kmsfs(&["key", "list"]));
    ok(t.kmsfs(&["audit", "verify"]));
    // a killed rotation resumes
    t.mount();
    let files = populate(&t, 300);
    t.umount();
    ok(t.kmsfs(&["key", "rotate", "alias/kmsfs-default"]));
    let mut child = command()
        .args(["rotate", t.backing.to_str().unwrap(), "--jobs", "1"])
        .env("KMSFS_KMS", t.kms_arg())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(40));
    let _ = child.kill();
    let _ = child.wait();
    let out: serde_json::Value = serde_json::from_str(&ok(t.kmsfs(&[
        "rotate",
        t.backing.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        out["changed"].as_u64().unwrap() + out["skipped"].as_u64().unwrap(),
        300
    );
    let cur = current_material(&t, "alias/kmsfs-default");
    assert!(wraps(&t.backing).values().all(|w| w[0].1 == cur));
    ok(t.kmsfs(&["audit", "verify"]));
    t.mount();
    for (name, data) in &files {
        assert_eq!(&fs::read(t.p(name)).unwrap(), data);
    }
}

/// `key create --spec/--usage` and `key mac`: an HMAC key from the command line.
#[test]
fn hmac_key_from_the_command_line() {
    let t = Tree::new(&[]);
    let arn = ok(t.kmsfs(&[
        "key",
        "create",
        "--alias",
        "mac",
        "--spec",
        "HMAC_384",
        "--usage",
        "GENERATE_VERIFY_MAC",
    ]));
    assert!(arn.trim().starts_with("arn:aws:kms:"), "{arn}");
    let msg = t.dir.path().join("msg");
    fs::write(&msg, b"sign me").unwrap();
    let m = msg.to_str().unwrap();
    let mac = ok(t.kmsfs(&["key", "mac", "alias/mac", m]));
    let mac = mac.trim();
    assert_eq!(mac.len(), 64, "48 bytes in base64: {mac}");
    assert!(ok(t.kmsfs(&["key", "mac", "alias/mac", m, "--verify", mac])).contains("MAC valid"));
    fs::write(&msg, b"sign me!").unwrap();
    fails(
        t.kmsfs(&["key", "mac", "alias/mac", m, "--verify", mac]),
        "KMSInvalidMacException",
    );
    ok(t.kmsfs(&["key", "create", "--alias", "sym"]));
    fails(t.kmsfs(&["key", "mac", "alias/sym", m]), "not an HMAC key");
    fails(
        t.kmsfs(&["key", "create", "--spec", "HMAC_256"]),
        "needs KeyUsage GENERATE_VERIFY_MAC",
    );
}

/// `key create --spec ECC_NIST_P256 --usage SIGN_VERIFY`, `key public-key`, `key sign`,
/// `key verify` from the command line; the public key is checked by openssl when present.
#[test]
fn signing_key_from_the_command_line() {
    let t = Tree::new(&[]);
    ok(t.kmsfs(&[
        "key",
        "create",
        "--alias",
        "signer",
        "--spec",
        "ECC_NIST_P256",
        "--usage",
        "SIGN_VERIFY",
    ]));
    let msg = t.dir.path().join("msg");
    fs::write(&msg, b"release 1.0").unwrap();
    let m = msg.to_str().unwrap();
    let sig = ok(t.kmsfs(&["key", "sign", "alias/signer", m]));
    let sig = sig.trim();
    assert!(ok(t.kmsfs(&["key", "verify", "alias/signer", sig, m])).contains("signature valid"));
    let pem = ok(t.kmsfs(&["key", "public-key", "alias/signer", "--pem"]));
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    if let Ok(openssl) = which("openssl") {
        use base64::Engine;
        let pem_file = t.dir.path().join("pub.pem");
        let sig_file = t.dir.path().join("sig.der");
        fs::write(&pem_file, &pem).unwrap();
        fs::write(
            &sig_file,
            base64::engine::general_purpose::STANDARD
                .decode(sig)
                .unwrap(),
        )
        .unwrap();
        let st = Command::new(openssl)
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem_file)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&msg)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    fs::write(&msg, b"release 1.1").unwrap();
    fails(
        t.kmsfs(&["key", "verify", "alias/signer", sig, m]),
        "KMSInvalidSignatureException",
    );
    ok(t.kmsfs(&["key", "create", "--alias", "sym"]));
    fails(
        t.kmsfs(&["key", "sign", "alias/sym", m]),
        "not a signing key",
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .ok_or(())
}

/// `kmsfs grant` and `kmsfs key tag|untag|tags` from the command line; another local
/// principal (KMSFS_PRINCIPAL) gets in through the grant and loses it on revocation.
#[test]
fn grants_and_tags_from_the_command_line() {
    let t = Tree::new(&[]);
    ok(t.kmsfs(&["key", "create", "--alias", "shared"]));
    let as_bob = |args: &[&str]| {
        command()
            .args(args)
            .env("KMSFS_KMS", t.kms_arg())
            .env("KMSFS_PRINCIPAL", "bob")
            .output()
            .unwrap()
    };
    let msg = t.dir.path().join("m");
    fs::write(&msg, b"hi").unwrap();
    let describe = ["key", "describe", "alias/shared"];
    fails(as_bob(&describe), "AccessDeniedException");
    let out = ok(t.kmsfs(&[
        "grant",
        "create",
        "alias/shared",
        "--grantee",
        "bob",
        "--operation",
        "DescribeKey",
        "--name",
        "cli",
    ]));
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("grant id "))
        .unwrap()
        .to_string();
    ok(as_bob(&describe));
    let listed = ok(t.kmsfs(&["grant", "list", "alias/shared"]));
    assert!(
        listed.contains(&id) && listed.contains("bob\tDescribeKey\tcli"),
        "{listed}"
    );
    fails(
        as_bob(&["grant", "revoke", "alias/shared", &id]),
        "AccessDeniedException",
    );
    ok(t.kmsfs(&["grant", "revoke", "alias/shared", &id]));
    fails(as_bob(&describe), "AccessDeniedException");
    ok(t.kmsfs(&["key", "tag", "alias/shared", "team=storage", "env=prod"]));
    ok(t.kmsfs(&["key", "untag", "alias/shared", "env"]));
    assert_eq!(
        ok(t.kmsfs(&["key", "tags", "alias/shared"])).trim(),
        "team=storage"
    );
    fails(
        t.kmsfs(&["key", "tag", "alias/shared", "aws:x=1"]),
        "TagException",
    );
}
