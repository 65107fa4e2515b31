//! The root of trust (#21): the embedded keystore's root key is sealed under a
//! passphrase (asked on the terminal, or read from a file), never stored in the clear
//! unless asked for; old keystores warn and migrate with one command.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// kmsfs with the keystore `ks`, its own pins, small Argon2id parameters (tests), and the
/// given extra environment.
fn kmsfs(ks: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("KMSFS_KMS", format!("local:{}", ks.display()))
        .env(
            "KMSFS_KNOWN_TREES",
            ks.parent().unwrap().join("known_trees.json"),
        )
        .env("KMSFS_ARGON2", "8192,1,1")
        .env_remove("KMSFS_SEAL")
        .env_remove("KMSFS_PASSPHRASE_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_passphrase_sealed_keystore_opens_only_with_its_passphrase() {
    require_fuse!();
    let d = tempfile::tempdir().unwrap();
    let (ks, b, mnt) = (
        d.path().join("ks"),
        d.path().join("b"),
        d.path().join("mnt"),
    );
    fs::create_dir(&mnt).unwrap();
    let pw = d.path().join("pw");
    fs::write(&pw, "correct horse battery\n").unwrap();
    let bad = d.path().join("bad");
    fs::write(&bad, "a guess\n").unwrap();
    let with = [("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap())];
    let o = kmsfs(&ks, &with, &["init", &s(&b)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(ks.join("root.seal").is_file() && !ks.join("root.key").exists());
    assert!(!err(&o).contains("warning"), "{}", err(&o));
    let o = kmsfs(&ks, &with, &["mount", &s(&b), &s(&mnt)]);
    assert!(o.status.success(), "{}", err(&o));
    fs::write(mnt.join("secret.txt"), b"sealed at rest").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    // No passphrase at hand (no terminal here): one line saying what to do.
    let o = kmsfs(&ks, &[], &["cat", &s(&b), "secret.txt"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("KMSFS_PASSPHRASE_FILE"), "{}", err(&o));
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    // A wrong one: one line.
    let o = kmsfs(
        &ks,
        &[("KMSFS_PASSPHRASE_FILE", bad.to_str().unwrap())],
        &["cat", &s(&b), "secret.txt"],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    // The right one.
    let o = kmsfs(&ks, &with, &["cat", &s(&b), "secret.txt"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "sealed at rest",
        "{}",
        err(&o)
    );
    let o = kmsfs(&ks, &with, &["kms", "seal", "show"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("passphrase (Argon2id"));
    // Nothing in the keystore or the tree holds the plaintext.
    assert!(!tree_contains(&ks, b"sealed at rest") && !tree_contains(&b, b"sealed at rest"));
}

/// Without a terminal, a passphrase file or a chosen seal, a new keystore is refused in
/// one line that says how to choose (a root key in the clear only when asked for), and
/// nothing is left behind; `--passphrase-file` and `--seal none` are that choice.
#[test]
fn a_new_keystore_needs_a_seal_or_a_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let (ks, b) = (d.path().join("ks"), d.path().join("b"));
    for args in [vec!["init", &s(&b)][..].to_vec(), vec!["key", "create"]] {
        let o = kmsfs(&ks, &[], &args);
        assert!(!o.status.success(), "{args:?}: {}", err(&o));
        let e = err(&o);
        assert!(
            e.contains("--passphrase-file") && e.contains("--seal none"),
            "{e}"
        );
        assert_eq!(error_lines(&e), 1, "{e}");
        assert!(!ks.join("root.key").exists() && !ks.join("root.seal").exists());
        assert!(!b.exists(), "the tree was made without a keystore");
    }
    // A passphrase file on the command line (never the passphrase itself).
    let pw = d.path().join("pw");
    fs::write(&pw, "from a file on argv\n").unwrap();
    let o = kmsfs(&ks, &[], &["--passphrase-file", &s(&pw), "init", &s(&b)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(ks.join("root.seal").is_file() && !ks.join("root.key").exists());
    let o = kmsfs(&ks, &[], &["key", "list"]);
    assert!(!o.status.success());
    let o = kmsfs(&ks, &[], &["--passphrase-file", &s(&pw), "key", "list"]);
    assert!(o.status.success(), "{}", err(&o));
    // None, asked for: made, with a warning saying so.
    let clear = d.path().join("clear");
    let o = kmsfs(&clear, &[], &["--seal", "none", "key", "create"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(clear.join("root.key").is_file());
    assert!(err(&o).contains("in the clear"), "{}", err(&o));
    // A seal that does not parse: one line, nothing made.
    let bad = d.path().join("bad");
    let o = kmsfs(&bad, &[], &["--seal", "rot13", "key", "create"]);
    assert!(
        !o.status.success() && err(&o).contains("unknown seal"),
        "{}",
        err(&o)
    );
    assert!(!bad.exists());
}

/// `kms seal change` killed at any moment, in either direction (none -> passphrase,
/// passphrase -> none): the keystore opens afterwards, with the old seal or the new one,
/// and every key and file reads back; a later change completes, and no clear root key
/// is left once the keystore is sealed again.
#[test]
fn a_seal_change_killed_at_any_moment_still_opens() {
    require_fuse!();
    let d = tempfile::tempdir().unwrap();
    let (ks, b, mnt) = (
        d.path().join("ks"),
        d.path().join("b"),
        d.path().join("mnt"),
    );
    fs::create_dir(&mnt).unwrap();
    let pw = d.path().join("pw");
    fs::write(&pw, "killed midway\n").unwrap();
    let w = [("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap())];
    ok(kmsfs(&ks, &[("KMSFS_SEAL", "none")], &["init", &s(&b)]));
    ok(kmsfs(&ks, &[], &["mount", &s(&b), &s(&mnt)]));
    fs::write(mnt.join("f"), b"still here").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    let keys = ok(kmsfs(&ks, &w, &["key", "list"]));
    let root = fs::read(ks.join("root.key")).unwrap();
    let change = || {
        let to = if ks.join("root.seal").exists() {
            "none"
        } else {
            "passphrase"
        };
        Command::new(bin())
            .args(["kms", "seal", "change", "--to", to])
            .env("KMSFS_KMS", format!("local:{}", ks.display()))
            .env("KMSFS_ARGON2", "8192,1,1")
            .env("KMSFS_PASSPHRASE_FILE", &pw)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one change takes here, to spread the kills over all of it.
    let t = std::time::Instant::now();
    assert!(change().wait().unwrap().success());
    let whole = t.elapsed().as_micros() as u64;
    let (mut killed, mut finished) = (0, 0);
    // Spread over three times the measured change: a loaded host runs it slower.
    for i in 0..60u64 {
        let delay_us = whole * i / 20;
        let mut child = change();
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        match child.try_wait().unwrap() {
            Some(_) => finished += 1,
            None => {
                child.kill().unwrap();
                killed += 1;
            }
        }
        child.wait().unwrap();
        let o = kmsfs(&ks, &w, &["cat", &s(&b), "f"]);
        assert_eq!(o.stdout, b"still here", "after {delay_us} us: {}", err(&o));
        assert_eq!(
            ok(kmsfs(&ks, &w, &["key", "list"])),
            keys,
            "after {delay_us} us"
        );
    }
    assert!(killed > 0, "killed {killed}, finished {finished}");
    // Finish sealed: nothing in the keystore holds the root key in the clear, not even
    // a temp file of a killed change.
    if !ks.join("root.seal").exists() || ks.join("root.key").exists() {
        ok(kmsfs(
            &ks,
            &w,
            &["kms", "seal", "change", "--to", "passphrase"],
        ));
    }
    assert!(
        !tree_contains(&ks, &root),
        "a clear root key is left in the keystore"
    );
    assert_eq!(ok(kmsfs(&ks, &w, &["cat", &s(&b), "f"])), "still here");
}

/// A keystore with its root key in the clear (as every keystore made before seals) warns
/// on every open, and moves through every seal and back with `kms seal change`, each
/// step keeping every key and tree readable; an interrupted change still opens.
#[test]
fn seal_changes_keep_everything_readable() {
    require_fuse!();
    let d = tempfile::tempdir().unwrap();
    let (ks, b, mnt) = (
        d.path().join("ks"),
        d.path().join("b"),
        d.path().join("mnt"),
    );
    fs::create_dir(&mnt).unwrap();
    let none = [("KMSFS_SEAL", "none")];
    let o = kmsfs(&ks, &none, &["init", &s(&b)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(ks.join("root.key").is_file());
    ok(kmsfs(&ks, &[], &["mount", &s(&b), &s(&mnt)]));
    fs::write(mnt.join("f"), b"content").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    let read = |env: &[(&str, &str)]| kmsfs(&ks, env, &["cat", &s(&b), "f"]);
    let o = read(&[]);
    assert_eq!(o.stdout, b"content");
    assert!(
        err(&o).contains("keeps its root key in the clear"),
        "{}",
        err(&o)
    );
    let root_before = fs::read(ks.join("root.key")).unwrap();

    let (p1, p2) = (d.path().join("p1"), d.path().join("p2"));
    fs::write(&p1, "first passphrase\n").unwrap();
    fs::write(&p2, "second passphrase\n").unwrap();
    let (w1, w2) = (
        [("KMSFS_PASSPHRASE_FILE", p1.to_str().unwrap())],
        [("KMSFS_PASSPHRASE_FILE", p2.to_str().unwrap())],
    );
    // none -> passphrase: the clear file is destroyed.
    ok(kmsfs(
        &ks,
        &w1,
        &["kms", "seal", "change", "--to", "passphrase"],
    ));
    assert!(!ks.join("root.key").exists());
    assert!(
        !tree_contains(&ks, &root_before),
        "the old root key is still on disk"
    );
    let o = read(&w1);
    assert_eq!(o.stdout, b"content", "{}", err(&o));
    assert!(!err(&o).contains("warning"), "{}", err(&o));
    // passphrase -> another passphrase: the old one no longer opens it.
    ok(kmsfs(
        &ks,
        &[("KMSFS_PASSPHRASE_FILE", p1.to_str().unwrap())],
        &["kms", "seal", "show"],
    ));
    let o = Command::new(bin())
        .args(["kms", "seal", "change", "--to", "passphrase"])
        .env("KMSFS_KMS", format!("local:{}", ks.display()))
        .env("KMSFS_ARGON2", "8192,1,1")
        // the current passphrase opens it, the new one seals it: one file for both here
        .env("KMSFS_PASSPHRASE_FILE", &p1)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // -> none -> passphrase (p2)
    ok(kmsfs(&ks, &w1, &["kms", "seal", "change", "--to", "none"]));
    assert!(ks.join("root.key").is_file() && !ks.join("root.seal").exists());
    assert_eq!(read(&[]).stdout, b"content");
    ok(kmsfs(
        &ks,
        &w2,
        &["kms", "seal", "change", "--to", "passphrase"],
    ));
    assert_eq!(read(&w2).stdout, b"content");
    assert!(err(&read(&w1)).contains("wrong passphrase"));
    // A change killed after writing the new seal and before destroying root.key: it
    // opens (through the seal), says so, and the next change finishes.
    fs::write(ks.join("root.key"), &root_before).unwrap();
    std::fs::set_permissions(
        ks.join("root.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let o = read(&w2);
    assert_eq!(o.stdout, b"content");
    assert!(
        err(&o).contains("holds both root.seal and root.key"),
        "{}",
        err(&o)
    );
    ok(kmsfs(
        &ks,
        &w2,
        &["kms", "seal", "change", "--to", "passphrase"],
    ));
    assert!(!ks.join("root.key").exists());
    assert_eq!(read(&w2).stdout, b"content");
}

/// The README's two commands on a terminal: `init` asks for a passphrase twice, `mount`
/// once (and hands the unsealed key to its daemon); nothing in the clear.
#[test]
fn on_a_terminal_init_and_mount_ask_for_a_passphrase() {
    require_fuse!();
    let d = tempfile::tempdir().unwrap();
    let (ks, b, mnt) = (
        d.path().join("ks"),
        d.path().join("b"),
        d.path().join("mnt"),
    );
    fs::create_dir(&mnt).unwrap();
    // A pseudo-terminal, answered like a user would (python3's pty module).
    let on_tty = |args: &[&str], answers: &[&str]| -> (i32, String) {
        let script = r#"
import os, pty, sys, time
answers = sys.argv[1].split("\x1f") if sys.argv[1] else []
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out = b""
for a in answers:
    while b": " not in out.split(b"\n")[-1]:
        try:
            c = os.read(fd, 1024)
        except OSError:
            break
        if not c:
            break
        out += c
    time.sleep(0.05)
    os.write(fd, a.encode() + b"\n")
    out += b"\n"
while True:
    try:
        c = os.read(fd, 1024)
    except OSError:
        break
    if not c:
        break
    out += c
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(st))
"#;
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(answers.join("\x1f"))
            .arg(bin())
            .args(args)
            .env("KMSFS_KMS", format!("local:{}", ks.display()))
            .env("KMSFS_KNOWN_TREES", d.path().join("known.json"))
            .env("KMSFS_ARGON2", "8192,1,1")
            .env_remove("KMSFS_SEAL")
            .env_remove("KMSFS_PASSPHRASE_FILE")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (rc, out) = on_tty(
        &["init", &s(&b)],
        &["a long passphrase", "a long passphrase"],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("Passphrase for the keystore") && out.contains("Repeat it"),
        "{out}"
    );
    assert!(
        !out.contains("a long passphrase"),
        "the passphrase was echoed: {out}"
    );
    assert!(ks.join("root.seal").is_file() && !ks.join("root.key").exists());
    let (rc, out) = on_tty(&["mount", &s(&b), &s(&mnt)], &["a long passphrase"]);
    assert_eq!(rc, 0, "{out}");
    fs::write(mnt.join("f"), b"typed once").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    // Mismatched repeats change nothing.
    let (rc, out) = on_tty(
        &["kms", "seal", "change", "--to", "passphrase"],
        &["a long passphrase", "new passphrase 1", "new passphrase 2"],
    );
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("differ"), "{out}");
    let (rc, out) = on_tty(&["cat", &s(&b), "f"], &["a long passphrase"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("typed once"), "{out}");
}

/// `kmsfs kms unlock`: after it, commands need no passphrase; after `kms lock`, or once
/// its time is up, they do again. The key is kept in the kernel keyring, not a file.
#[test]
fn unlock_spares_the_passphrase_until_lock_or_timeout() {
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("ks");
    let pw = d.path().join("pw");
    fs::write(&pw, "an unlock passphrase\n").unwrap();
    let with = [("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap())];
    ok(kmsfs(&ks, &with, &["key", "create"]));
    assert!(ks.join("root.seal").is_file());
    let list = || kmsfs(&ks, &[], &["key", "list"]);
    assert!(
        !list().status.success(),
        "a sealed keystore opened without its passphrase"
    );
    ok(kmsfs(&ks, &with, &["kms", "unlock", "--for", "1h"]));
    let o = list();
    assert!(o.status.success(), "{}", err(&o));
    // Nothing new in the keystore directory: the key is in the kernel, not a file.
    let mut names: Vec<_> = fs::read_dir(&ks)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n == "root.key"), "{names:?}");
    assert!(ok(kmsfs(&ks, &[], &["kms", "lock"])).contains("locked"));
    assert!(!list().status.success(), "still unlocked after kms lock");
    ok(kmsfs(&ks, &with, &["kms", "unlock", "--for", "2s"]));
    assert!(list().status.success());
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(!list().status.success(), "still unlocked after its time");
    // Only a passphrase seal is unlocked.
    let clear = d.path().join("clear");
    ok(kmsfs(&clear, &[("KMSFS_SEAL", "none")], &["key", "create"]));
    let o = kmsfs(&clear, &[], &["kms", "unlock"]);
    assert!(!o.status.success() && err(&o).contains("not sealed with a passphrase"));
}

/// The KMS seal (auto-unseal, for server fleets): the root key is a ciphertext blob of a
/// key in another KMS (here a second `kmsfs kms serve`), unwrapped there at each open.
/// With that KMS away the keystore does not open (one line naming it); back, it does;
/// and it moves on to a passphrase seal with every key intact.
#[test]
fn a_keystore_sealed_by_another_kms() {
    require_fuse!();
    let other = tempfile::tempdir().unwrap();
    let mut server = Server::start(&other.path().join("ks"), &[]);
    ok(server
        .cmd()
        .args(["key", "create", "--alias", "seal"])
        .output()
        .unwrap());
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("ks");
    let b = d.path().join("b");
    let (akid, secret, url) = (server.akid.clone(), server.secret.clone(), server.url());
    let creds = [
        ("AWS_ACCESS_KEY_ID", akid.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("KMSFS_KMS_TIMEOUT", "1"),
    ];
    ok(kmsfs(&ks, &[("KMSFS_SEAL", "none")], &["init", &s(&b)]));
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    ok(kmsfs(&ks, &[], &["mount", &s(&b), &s(&mnt)]));
    fs::write(mnt.join("f"), b"sealed by another KMS").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    let to = format!("kms:alias/seal@{url}");
    let o = kmsfs(&ks, &creds, &["kms", "seal", "change", "--to", &to]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!ks.join("root.key").exists() && ks.join("root.seal").is_file());
    let shown = ok(kmsfs(&ks, &creds, &["kms", "seal", "show"]));
    assert!(
        shown.starts_with("kms: wrapped under alias/seal at http"),
        "{shown}"
    );
    let read = || kmsfs(&ks, &creds, &["cat", &s(&b), "f"]);
    let o = read();
    assert_eq!(o.stdout, b"sealed by another KMS", "{}", err(&o));
    // The other KMS away: one line naming it.
    server.stop();
    let o = read();
    assert!(!o.status.success());
    assert!(
        err(&o).contains("sealed by the KMS") && err(&o).contains(&url),
        "{}",
        err(&o)
    );
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    server.restart();
    assert_eq!(read().stdout, b"sealed by another KMS");
    // kms -> passphrase
    let pw = d.path().join("pw");
    fs::write(&pw, "after the kms seal\n").unwrap();
    let mut with: Vec<(&str, &str)> = creds.to_vec();
    with.push(("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap()));
    ok(kmsfs(
        &ks,
        &with,
        &["kms", "seal", "change", "--to", "passphrase"],
    ));
    server.stop();
    let o = kmsfs(&ks, &with, &["cat", &s(&b), "f"]);
    assert_eq!(o.stdout, b"sealed by another KMS", "{}", err(&o));
}

/// Every seal's secret at hand: a SoftHSM2 token with its PIN file, a passphrase file,
/// and a second KMS server with the key `alias/seal`; `pkcs` and `kms` are the seal
/// targets that name them. None only where SoftHSM2 is missing outside CI.
struct SealRig {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    pkcs: String,
    kms: String,
    _server: Server,
    _server_dir: tempfile::TempDir,
}

impl SealRig {
    fn new(passphrase: &str) -> Option<SealRig> {
        let (dir, _tokens, conf) = softhsm()?;
        let server_dir = tempfile::tempdir().unwrap();
        let server = Server::start(&server_dir.path().join("ks"), &[]);
        ok(server
            .cmd()
            .args(["key", "create", "--alias", "seal"])
            .output()
            .unwrap());
        let (pin, pw) = (dir.path().join("pin"), dir.path().join("pw"));
        fs::write(&pin, "4321\n").unwrap();
        fs::write(&pw, format!("{passphrase}\n")).unwrap();
        let env = vec![
            ("SOFTHSM2_CONF", conf.display().to_string()),
            ("KMSFS_PKCS11_PIN_FILE", pin.display().to_string()),
            ("KMSFS_PASSPHRASE_FILE", pw.display().to_string()),
            ("AWS_ACCESS_KEY_ID", server.akid.clone()),
            ("AWS_SECRET_ACCESS_KEY", server.secret.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ];
        Some(SealRig {
            pkcs: format!("pkcs11:token=kmsfs-test;object=kmsfs-root?module-path={MODULE}"),
            kms: format!("kms:alias/seal@{}", server.url()),
            dir,
            env,
            _server: server,
            _server_dir: server_dir,
        })
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// Seal changes in every direction — none → passphrase → PKCS#11 → another KMS →
/// passphrase — keep every key and the tree readable at each step.
#[test]
fn every_seal_change_keeps_the_tree_readable() {
    require_fuse!();
    let Some(rig) = SealRig::new("a chain of seals") else {
        return;
    };
    let d = &rig.dir;
    let (ks, b, mnt) = (
        d.path().join("ks"),
        d.path().join("b"),
        d.path().join("mnt"),
    );
    fs::create_dir(&mnt).unwrap();
    let env = rig.env();
    ok(kmsfs(&ks, &[("KMSFS_SEAL", "none")], &["init", &s(&b)]));
    ok(kmsfs(&ks, &[], &["mount", &s(&b), &s(&mnt)]));
    fs::write(mnt.join("f"), b"through every seal").unwrap();
    ok(Command::new(bin())
        .args(["umount", &s(&mnt)])
        .output()
        .unwrap());
    let keys = ok(kmsfs(&ks, &env, &["key", "list"]));
    for to in [
        "passphrase",
        rig.pkcs.as_str(),
        rig.kms.as_str(),
        "passphrase",
    ] {
        let o = kmsfs(&ks, &env, &["kms", "seal", "change", "--to", to]);
        assert!(o.status.success(), "to {to}: {}", err(&o));
        assert!(!ks.join("root.key").exists(), "to {to}");
        let o = kmsfs(&ks, &env, &["cat", &s(&b), "f"]);
        assert_eq!(o.stdout, b"through every seal", "after {to}: {}", err(&o));
        assert_eq!(ok(kmsfs(&ks, &env, &["key", "list"])), keys, "after {to}");
    }
}

/// The PKCS#11 seal with SoftHSM2 (a token initialised here, in a temp dir): the root key
/// is encrypted in the token under a key that is sensitive and never extractable; a wrong
/// PIN, a missing token and a deleted key object each refuse the keystore in one line.
#[test]
fn a_keystore_sealed_by_a_pkcs11_token() {
    let Some((d, tokens, conf)) = softhsm() else {
        return;
    };
    let (pin, bad) = (d.path().join("pin"), d.path().join("bad"));
    fs::write(&pin, "4321\n").unwrap();
    fs::write(&bad, "1111\n").unwrap();
    let ks = d.path().join("ks");
    let env = |pinfile: &Path| {
        vec![
            ("SOFTHSM2_CONF".to_string(), conf.display().to_string()),
            (
                "KMSFS_PKCS11_PIN_FILE".to_string(),
                pinfile.display().to_string(),
            ),
        ]
    };
    let run = |e: &[(String, String)], args: &[&str]| {
        let e: Vec<(&str, &str)> = e.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        kmsfs(&ks, &e, args)
    };
    ok(kmsfs(&ks, &[("KMSFS_SEAL", "none")], &["key", "create"]));
    let uri = format!("pkcs11:token=kmsfs-test;object=kmsfs-root?module-path={MODULE}");
    let o = run(&env(&pin), &["kms", "seal", "change", "--to", &uri]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!ks.join("root.key").exists());
    let list = |e: &[(String, String)]| run(e, &["key", "list"]);
    let o = list(&env(&pin));
    assert!(o.status.success(), "{}", err(&o));
    assert!(ok(run(&env(&pin), &["kms", "seal", "show"]))
        .starts_with("pkcs11: pkcs11:token=kmsfs-test"));
    // The clear keystore is not in the copy: no file holds a 32-byte root key.
    assert!(!ks.join("root.key").exists());
    // The key object: sensitive, never extractable (as the token reports it).
    let shown = ok(run(&env(&pin), &["kms", "seal", "show"]));
    assert!(
        shown.contains("AES-256")
            && shown.contains(", sensitive")
            && shown.contains("not extractable")
            && shown.contains("never extractable"),
        "{shown}"
    );
    // A wrong PIN, a missing token, a deleted key: one line each.
    let o = list(&env(&bad));
    assert!(!o.status.success());
    assert!(err(&o).contains("wrong PIN"), "{}", err(&o));
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    let empty = d.path().join("empty.conf");
    let none = d.path().join("none");
    fs::create_dir(&none).unwrap();
    fs::write(
        &empty,
        format!("directories.tokendir = {}\n", none.display()),
    )
    .unwrap();
    let mut e = env(&pin);
    e[0].1 = empty.display().to_string();
    let o = list(&e);
    assert!(!o.status.success());
    assert!(err(&o).contains("no PKCS#11 token labelled"), "{}", err(&o));
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    // The key object deleted (the token re-initialised): one line.
    let copy = d.path().join("tokens-before");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&tokens)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--token",
            "kmsfs-test",
            "--label",
            "kmsfs-test",
            "--pin",
            "4321",
            "--so-pin",
            "87654321",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let o = list(&env(&pin));
    assert!(!o.status.success());
    assert!(err(&o).contains("no key object"), "{}", err(&o));
    assert_eq!(error_lines(&err(&o)), 1, "{}", err(&o));
    // the token as it was (a backup of it) opens the keystore again
    fs::remove_dir_all(&tokens).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&copy)
        .arg(&tokens)
        .status()
        .unwrap();
    assert!(st.success());
    let o = list(&env(&pin));
    assert!(o.status.success(), "{}", err(&o));
    // and on to a passphrase seal with everything intact
    let pw = d.path().join("pw");
    fs::write(&pw, "after the token seal\n").unwrap();
    let mut e = env(&pin);
    e.push(("KMSFS_PASSPHRASE_FILE".into(), pw.display().to_string()));
    ok(run(&e, &["kms", "seal", "change", "--to", "passphrase"]));
    let o = kmsfs(
        &ks,
        &[("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap())],
        &["key", "list"],
    );
    assert!(o.status.success(), "{}", err(&o));
}

/// The stolen disk, for every seal (passphrase, PKCS#11 token, another KMS, systemd
/// credential): a copy of the keystore directory and the backing tree holds neither the
/// root key nor any key's material (nor a principal's secret) in the clear — scanned for
/// each, byte for byte — and without the seal's secret (passphrase, PIN, KMS access,
/// credential) nothing in it decrypts; with it, every file reads back from the copy.
#[test]
fn a_stolen_copy_of_the_disk_decrypts_nothing_under_any_seal() {
    require_fuse!();
    let Some(rig) = SealRig::new("what the thief lacks") else {
        return;
    };
    let d = &rig.dir;
    for (i, seal) in ["passphrase", &rig.pkcs, &rig.kms, "systemd-credential"]
        .into_iter()
        .enumerate()
    {
        let home = d.path().join(format!("home{i}"));
        let (ks, b, mnt) = (
            home.join("ks"),
            home.join("b"),
            d.path().join(format!("mnt{i}")),
        );
        fs::create_dir_all(&mnt).unwrap();
        fs::create_dir(&home).unwrap();
        let creds = d.path().join(format!("creds{i}"));
        fs::create_dir(&creds).unwrap();
        // The seal's secret, and a thief's stand-in for it (wrong or missing).
        let creds_dir = creds.display().to_string();
        let mut secret = rig.env();
        secret.push(("CREDENTIALS_DIRECTORY", &creds_dir));
        let thief = [
            ("AWS_ACCESS_KEY_ID", "AKIATHIEF"),
            ("AWS_SECRET_ACCESS_KEY", "not the secret"),
            ("AWS_REGION", "us-east-1"),
        ];

        ok(kmsfs(&ks, &[("KMSFS_SEAL", "none")], &["init", &s(&b)]));
        ok(kmsfs(
            &ks,
            &[],
            &[
                "key",
                "create",
                "--spec",
                "HMAC_256",
                "--usage",
                "GENERATE_VERIFY_MAC",
            ],
        ));
        ok(kmsfs(
            &ks,
            &[],
            &[
                "key",
                "create",
                "--spec",
                "ECC_NIST_P256",
                "--usage",
                "SIGN_VERIFY",
            ],
        ));
        ok(kmsfs(&ks, &[], &["mount", &s(&b), &s(&mnt)]));
        fs::create_dir(mnt.join("docs")).unwrap();
        let files: Vec<(String, Vec<u8>)> = (0..4)
            .map(|n| {
                (
                    format!("docs/file{n}"),
                    format!("stolen-disk plaintext {n} ")
                        .repeat(100 * (n + 1))
                        .into_bytes(),
                )
            })
            .collect();
        for (p, data) in &files {
            fs::write(mnt.join(p), data).unwrap();
        }
        ok(Command::new(bin())
            .args(["umount", &s(&mnt)])
            .output()
            .unwrap());
        // Every secret of the keystore, from the library (the keystore is still clear).
        kmsfs::seal::allow_clear_by_default();
        let secrets = kmsfs::kms::local::LocalKms::open(&ks, false)
            .unwrap()
            .secrets_for_scan()
            .unwrap();
        assert!(secrets.len() >= 4, "{seal}: {} secrets", secrets.len());
        // The scan finds a secret where one is: root.key, before the seal.
        assert!(
            tree_contains(&home, &secrets[0]),
            "{seal}: the scan missed root.key"
        );

        if seal == "systemd-credential" {
            // The operator's steps: the root key into a credential (systemd-creds encrypt
            // in real life), the clear file destroyed.
            fs::copy(ks.join("root.key"), creds.join("kmsfs-root-key")).unwrap();
            fs::write(ks.join("root.key"), [0u8; 32]).unwrap();
            fs::remove_file(ks.join("root.key")).unwrap();
        } else {
            let o = kmsfs(&ks, &secret, &["kms", "seal", "change", "--to", seal]);
            assert!(o.status.success(), "{seal}: {}", err(&o));
        }
        assert!(!ks.join("root.key").exists(), "{seal}");

        // The thief's copy: keystore directory and backing tree (not the token, the
        // server, the passphrase file or the credentials).
        let copy = d.path().join(format!("stolen{i}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(&home)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        for (n, sec) in secrets.iter().enumerate() {
            assert!(
                !tree_contains(&copy, sec),
                "{seal}: secret #{n} ({} bytes) is in the clear in the copy",
                sec.len()
            );
        }
        for (_, data) in &files {
            assert!(
                !tree_contains(&copy, &data[..40]),
                "{seal}: plaintext in the copy"
            );
        }
        let (cks, cb) = (copy.join("ks"), copy.join("b"));
        for (p, _) in &files {
            let o = kmsfs(&cks, &thief, &["cat", &s(&cb), p]);
            assert!(
                !o.status.success() && o.stdout.is_empty(),
                "{seal}: the thief read {p}"
            );
            assert_eq!(error_lines(&err(&o)), 1, "{seal}: {}", err(&o));
        }
        let o = kmsfs(&cks, &thief, &["key", "list"]);
        assert!(!o.status.success(), "{seal}: the thief listed the keys");
        // With the seal's secret, everything reads back from the copy.
        for (p, data) in &files {
            let o = kmsfs(&cks, &secret, &["cat", &s(&cb), p]);
            assert_eq!(&o.stdout, data, "{seal}: {p}: {}", err(&o));
        }
    }
}

/// A keystore and tree made by e418955 (before seals; tests/fixtures/e418955.tar, made by that
/// build: `init`, then a file, a directory with a file and a symlink written through its
/// mount) open with a warning that the root key is in the clear, and migrate with one
/// command: afterwards the root key is nowhere in the clear and everything reads back.
#[test]
fn a_keystore_made_before_seals_opens_warns_and_migrates() {
    let d = tempfile::tempdir().unwrap();
    // A tar, because the tree lives in xattrs too (git keeps neither them nor modes).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e418955.tar");
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-xf"])
        .arg(&fixture)
        .arg("-C")
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    // The keystore is private, as e418955 made it.
    let (ks, b) = (d.path().join("ks"), d.path().join("b"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&ks, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(&ks).unwrap() {
        fs::set_permissions(e.unwrap().path(), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let root = fs::read(ks.join("root.key")).unwrap();
    let pattern: Vec<u8> = (0..20000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    let check = |env: &[(&str, &str)]| -> String {
        let o = kmsfs(&ks, env, &["cat", &s(&b), "old.txt"]);
        assert_eq!(o.stdout, b"made by e418955\n", "{}", err(&o));
        let o = kmsfs(&ks, env, &["cat", &s(&b), "dir/pattern.bin"]);
        assert_eq!(o.stdout, pattern, "{}", err(&o));
        err(&o)
    };
    let e = check(&[]);
    assert!(e.contains("keeps its root key in the clear"), "{e}");
    // Its sealed JSON store moved into SQLite at that first open, was checked row by
    // row, and is gone (it would roll the store back).
    assert!(ks.join("keystore.sqlite").exists());
    assert!(!ks.join("keystore.sealed").exists());
    // A migration that committed and stopped before removing the old file: the next
    // open checks the store holds what the file holds, then removes it.
    let st = Command::new("tar")
        .args(["-xf"])
        .arg(&fixture)
        .arg("-C")
        .arg(d.path())
        .arg("ks/keystore.sealed")
        .status()
        .unwrap();
    assert!(st.success());
    fs::set_permissions(
        ks.join("keystore.sealed"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    check(&[]);
    assert!(!ks.join("keystore.sealed").exists());
    let pw = d.path().join("pw");
    fs::write(&pw, "migrated at last\n").unwrap();
    let with = [("KMSFS_PASSPHRASE_FILE", pw.to_str().unwrap())];
    ok(kmsfs(
        &ks,
        &with,
        &["kms", "seal", "change", "--to", "passphrase"],
    ));
    assert!(!ks.join("root.key").exists());
    assert!(
        !tree_contains(&ks, &root),
        "the old root key is still on disk"
    );
    let e = check(&with);
    assert!(!e.contains("warning"), "{e}");
    let o = kmsfs(&ks, &[], &["cat", &s(&b), "old.txt"]);
    assert!(!o.status.success(), "opened without the passphrase");
}
