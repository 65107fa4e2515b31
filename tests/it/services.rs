//! systemd integration without a running systemd: units verify, Type=notify readiness,
//! credentials from $CREDENTIALS_DIRECTORY, fstab-style mounting through mount.fuse3.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[test]
fn units_verify_with_systemd_analyze() {
    let Ok(_) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze missing in CI"
        );
        eprintln!("!!!!!!!! SKIPPING: systemd-analyze not installed !!!!!!!!");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for e in fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        // verify with the binary present at the ExecStart path
        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("/usr/local/bin/kmsfs", BIN);
        let name = p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace("@.", "@test.");
        fs::write(dir.path().join(name), text).unwrap();
    }
    let units: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(units.len() >= 5, "{units:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// Waits for a datagram on the notify socket (READY=1 / STOPPING=1).
fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("no notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn mount_sends_ready_only_once_the_mount_answers() {
    require_fuse!();
    let t = Tree::new(&[]);
    let sock_path = t.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let child = command()
        .args([
            "mount",
            "--foreground",
            t.backing.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
        ])
        .env("KMSFS_KMS", t.kms_arg())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("JOURNAL_STREAM", "8:1234") // journald-style log lines
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let msg = recv(&sock);
    assert!(msg.contains("READY=1"), "{msg}");
    // at READY the mount must already answer: it is a FUSE filesystem now
    let st = rustix::fs::statfs(&t.mnt).unwrap();
    assert_eq!(
        st.f_type as u32, 0x65735546,
        "READY=1 arrived before the FUSE mount was live"
    );
    fs::write(t.mnt.join("f"), b"x").unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let msg = recv(&sock);
    assert!(msg.contains("STOPPING=1"), "{msg}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines().any(|l| l.starts_with("<6>mounted")),
        "journald-style lines expected: {log}"
    );
}

#[test]
fn server_sends_ready_once_the_port_accepts_and_reads_its_root_key_from_credentials() {
    let dir = tempfile::tempdir().unwrap();
    // the root key comes from a systemd credential, not from the keystore directory
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    let key = creds.join("kmsfs-root-key");
    fs::write(&key, random_bytes(32, 77)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    let ks = dir.path().join("state");
    let local = |args: &[&str]| {
        command()
            .args(["--kms", &format!("local:{}", ks.display())])
            .args(args)
            .env("CREDENTIALS_DIRECTORY", &creds)
            .output()
            .unwrap()
    };
    let out = local(&["key", "create", "--alias", "svc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !ks.join("root.key").exists(),
        "the root key must stay in the credential"
    );
    // without the credential the sealed keystore cannot be opened
    let out = command()
        .args(["--kms", &format!("local:{}", ks.display()), "key", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = command()
        .args([
            "--kms",
            &format!("local:{}", ks.display()),
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let msg = recv(&sock);
    assert!(msg.contains("READY=1"), "{msg}");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    // the port accepts as soon as READY=1 is out
    let mut s = std::net::TcpStream::connect(&addr).expect("READY=1 before the port accepts");
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok\n"),
        "{resp}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The units' default: a passphrase-sealed keystore whose passphrase is the systemd
/// credential `kmsfs-passphrase` (`LoadCredentialEncrypted=`). The server unseals it
/// once and answers; without the credential it exits non-zero with one line naming it.
#[test]
fn server_opens_a_passphrase_sealed_keystore_with_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("kmsfs-passphrase"), "a service passphrase\n").unwrap();
    let ks = dir.path().join("state");
    let kms = format!("local:{}", ks.display());
    let with_creds = |args: &[&str]| {
        command()
            .args(["--kms", &kms])
            .args(args)
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env("KMSFS_ARGON2", "8192,1,1")
            .env_remove("KMSFS_SEAL")
            .env_remove("KMSFS_PASSPHRASE_FILE")
            .output()
            .unwrap()
    };
    ok(with_creds(&["key", "create", "--alias", "svc"]));
    assert!(ks.join("root.seal").is_file() && !ks.join("root.key").exists());
    assert!(ok(with_creds(&["kms", "seal", "show"])).starts_with("passphrase"));
    // Without the credential: one line, naming it.
    let out = command()
        .args(["--kms", &kms, "kms", "serve", "--listen", "127.0.0.1:0"])
        .env_remove("KMSFS_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && e.contains("kmsfs-passphrase"),
        "{e}"
    );
    assert_eq!(error_lines(&e), 1, "{e}");
    // With it: READY=1, and the port answers.
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = command()
        .args(["--kms", &kms, "kms", "serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("KMSFS_ARGON2", "8192,1,1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let msg = recv(&sock);
    assert!(msg.contains("READY=1"), "{msg}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn remote_mount_with_credentials_from_credentials_directory() {
    require_fuse!();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ks"), &[]);
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::write(
        creds.join("kms-credentials"),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            server.akid, server.secret
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        command()
            .args(args)
            .env("KMSFS_KMS", server.url())
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["key", "create", "--alias", "svc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = dir.path().join("b");
    let m = dir.path().join("m");
    fs::create_dir(&m).unwrap();
    assert!(run(&["init", b.to_str().unwrap(), "--key", "alias/svc"])
        .status
        .success());
    let out = run(&["mount", b.to_str().unwrap(), m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(m.join("f"), b"via credentials").unwrap();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"via credentials");
    assert!(run(&["umount", m.to_str().unwrap()]).status.success());
}

#[test]
fn fstab_style_mount_through_mount_fuse3() {
    require_fuse!();
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mount.fuse3 (fuse3) missing in CI"
        );
        eprintln!("!!!!!!!! SKIPPING: mount.fuse3 not installed !!!!!!!!");
        return;
    }
    let mut t = Tree::new(&[]);
    // mount.fuse3 finds `kmsfs` on PATH
    let bindir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // mount(8) runs /sbin/mount.fuse3 SOURCE DIR -t fuse.kmsfs -o OPTS with a sanitised PATH
    // (kmsfs must be in /usr/local/bin or /usr/bin for fstab); call the helper the same way
    // with a PATH that finds this build.
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let out = Command::new(helper)
        .args([
            t.backing.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
            "-t",
            "fuse.kmsfs",
        ])
        .args([
            "-o",
            &format!(
                "kms={},allow_other,nofail,files_ahead,log={}",
                t.kms_arg(),
                t.log.display()
            ),
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.kmsfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.mounted = true;
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains(t.mnt.to_str().unwrap()) && l.contains("fuse")),
        "not mounted"
    );
    fs::write(t.p("f"), b"fstab").unwrap();
    assert_eq!(fs::read(t.p("f")).unwrap(), b"fstab");
    // files_ahead: a run of creates in one directory, some of them made ahead
    for i in 0..20 {
        fs::write(t.p(&format!("n{i}")), format!("file {i}")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 0..20 {
        assert_eq!(
            fs::read_to_string(t.p(&format!("n{i}"))).unwrap(),
            format!("file {i}")
        );
    }
    t.umount();
}
