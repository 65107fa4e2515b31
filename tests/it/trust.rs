//! Trust in the backing tree's config (issue: "whoever can write the backing tree can
//! redirect the keys"). The attacker writes the backing tree and owns a KMS key the
//! victim's principal may use (here: a second key of the same keystore).

use std::fs;
use std::process::Command;

use crate::common::*;

fn fails(out: std::process::Output, needle: &str) -> String {
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failure with {needle:?}, got success"
    );
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
    assert_eq!(error_lines(&e), 1, "one line: {e}");
    e
}

fn arn_of(t: &Tree, key: &str) -> String {
    let out = ok(t.kmsfs(&["key", "describe", key]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["KeyMetadata"]["Arn"].as_str().unwrap().to_string()
}

fn config(t: &Tree) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(t.b("kmsfs.json")).unwrap()).unwrap()
}

fn set_config(t: &Tree, v: &serde_json::Value) {
    fs::write(t.b("kmsfs.json"), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// On e663627: a key added to `keys` in kmsfs.json was used for every new file; edited
/// fields were used unchecked.
#[test]
fn an_edited_config_is_refused_by_the_mount_and_the_tree_commands() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    fs::write(t.p("f"), b"secret").unwrap();
    t.umount();
    let theirs = arn_of(&t, ok(t.kmsfs(&["key", "create"])).trim());
    let orig = config(&t);
    assert!(
        orig["mac"].is_string() && orig["tree_key"].is_array(),
        "{orig}"
    );

    let mut v = orig.clone();
    v["keys"]
        .as_array_mut()
        .unwrap()
        .push(theirs.clone().into());
    set_config(&t, &v);
    let e = fails(t.try_mount(&[]), "pinned");
    assert!(e.contains(&theirs), "{e}");
    fails(t.kmsfs(&["rotate", t.backing.to_str().unwrap()]), "pinned");
    fails(
        t.kmsfs(&["keys", "add", t.backing.to_str().unwrap(), &theirs]),
        "pinned",
    );

    // the attacker's key in place of ours
    let mut v = orig.clone();
    v["keys"] = serde_json::json!([theirs]);
    set_config(&t, &v);
    fails(t.try_mount(&[]), "pinned");

    for (field, value) in [
        ("chunk_size", serde_json::json!(8192)),
        ("kms", serde_json::json!("https://127.0.0.1:9")),
        (
            "fs_id",
            serde_json::json!("00000000-0000-4000-8000-000000000000"),
        ),
    ] {
        let mut v = orig.clone();
        v[field] = value;
        set_config(&t, &v);
        let out = t.try_mount(&[]);
        assert!(!out.status.success(), "{field}: mounted an edited config");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("MAC mismatch") || e.contains("replaced"),
            "{field}: {e}"
        );
    }
    // a stripped MAC is a downgrade this host has seen through
    let mut v = orig.clone();
    v.as_object_mut().unwrap().remove("mac");
    v.as_object_mut().unwrap().remove("tree_key");
    set_config(&t, &v);
    fails(t.try_mount(&[]), "lost its MAC");

    set_config(&t, &orig);
    t.mount();
    assert_eq!(fs::read(t.p("f")).unwrap(), b"secret");
    // the owner's own key change on this host re-authenticates and re-pins
    t.umount();
    ok(t.kmsfs(&["keys", "add", t.backing.to_str().unwrap(), &theirs]));
    ok(t.kmsfs(&["keys", "remove", t.backing.to_str().unwrap(), &theirs]));
    t.mount();
    assert_eq!(fs::read(t.p("f")).unwrap(), b"secret");
}

/// The whole config replaced by one the attacker made (their key, their tree key, a
/// valid MAC): the directory is pinned to the tree it held.
#[test]
fn a_config_replaced_wholesale_is_refused() {
    require_fuse!();
    let t = Tree::new(&[]);
    let theirs = ok(t.kmsfs(&["key", "create"])).trim().to_string();
    let other = t.dir.path().join("attackers-tree");
    ok(t.kmsfs(&["init", other.to_str().unwrap(), "--key", &theirs]));
    fs::copy(other.join("kmsfs.json"), t.b("kmsfs.json")).unwrap();
    let e = fails(t.try_mount(&[]), "the tree was replaced");
    assert!(e.contains(&arn_of(&t, &theirs)), "{e}");
    // and with the expected keys named explicitly (units, fstab), also refused
    let ours = arn_of(&t, "alias/kmsfs-default");
    fails(
        t.try_mount(&["--expect-key", &ours]),
        "not one of the expected keys",
    );
}

/// A file forged with a header whose key is wrapped under the attacker's key: on
/// e663627 the mount served it without a log line.
#[test]
fn a_file_wrapped_only_under_a_foreign_key_is_eio_with_a_log_line() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    let theirs = ok(t.kmsfs(&["key", "create"])).trim().to_string();
    // the attacker's tree, wrapped under their key of the same keystore (one the victim
    // may use); its own known-trees file, like another host
    let mut other = Tree::new(&[]);
    other.ks = t.ks.clone();
    other.backing = other.dir.path().join("b2");
    ok(other.kmsfs(&["init", other.backing.to_str().unwrap(), "--key", &theirs]));
    other.mount();
    fs::write(other.p("forged"), b"attacker's content").unwrap();
    other.umount();
    // copied with its header into the victim's tree
    let st = Command::new("cp")
        .args(["-a", "--preserve=xattr"])
        .arg(other.b("forged"))
        .arg(t.b("forged"))
        .status()
        .unwrap();
    assert!(st.success());
    t.mount();
    assert!(is_eio(fs::read(t.p("forged"))));
    let log = t.log();
    // Refused before any KMS call: its authentication is not under this tree's key (a
    // tree of generation 0 has none; then its wraps are not under the tree's keys).
    assert!(
        log.contains("forged")
            && (log.contains("not authenticated under the tree key")
                || log.contains("not one of the tree's keys")),
        "{log}"
    );
}

/// With no --kms and no pin, a KMS location written in the tree is not contacted: on
/// e663627 the README's quick start (no --kms) used it, so the tree could send the mount
/// to an endpoint its writer runs.
#[test]
fn a_kms_named_only_by_the_tree_is_not_contacted() {
    require_fuse!();
    let t = Tree::new(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let evil = format!("http://{}", listener.local_addr().unwrap());
    let mut v = config(&t);
    v["kms"] = evil.clone().into();
    set_config(&t, &v);
    let home = tempfile::tempdir().unwrap();
    let out = command()
        .args([
            "mount",
            t.backing.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
        ])
        .env_remove("KMSFS_KMS")
        .env("KMSFS_KNOWN_TREES", home.path().join("known.json"))
        .env("XDG_DATA_HOME", home.path())
        .output()
        .unwrap();
    let e = fails(out, "which this host has not used for it");
    assert!(e.contains(&evil), "{e}");
    assert!(listener.accept().is_err(), "the tree's KMS was contacted");
}

/// `rotate --to` on a mounted tree: the mount started with the old key list; files whose
/// headers now name only the new key are opened after it re-authenticates kmsfs.json.
#[test]
fn rotate_to_another_key_while_mounted_keeps_files_readable() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    for i in 0..5 {
        fs::write(t.p(&format!("f{i}")), format!("content {i}")).unwrap();
    }
    t.remount(); // no file key cached
    let new_key = ok(t.kmsfs(&["key", "create"])).trim().to_string();
    ok(t.kmsfs(&["rotate", t.backing.to_str().unwrap(), "--to", &new_key]));
    let new_arn = arn_of(&t, &new_key);
    assert_eq!(config(&t)["keys"], serde_json::json!([new_arn]));
    for i in 0..5 {
        assert_eq!(
            fs::read_to_string(t.p(&format!("f{i}"))).unwrap(),
            format!("content {i}"),
            "{}",
            t.log()
        );
    }
}
