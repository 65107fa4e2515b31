//! The remote KMS: `kmsfs kms serve` with SigV4 and our reqwest client; mounts whose keys
//! live on the server; an outage under a live mount; TLS; boto3, the aws cli and moto.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn err(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A tree whose KMS is `server`, mounted through the CLI with the server's credentials.
struct RemoteTree {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl RemoteTree {
    fn new(server: &Server) -> RemoteTree {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        ok(server
            .cmd()
            .args(["key", "create", "--alias", "tree"])
            .output()
            .unwrap());
        ok(server
            .cmd()
            .args([
                "init",
                dir.path().join("b").to_str().unwrap(),
                "--key",
                "alias/tree",
            ])
            .output()
            .unwrap());
        RemoteTree {
            dir,
            mounted: false,
        }
    }
    fn b(&self) -> String {
        self.dir.path().join("b").display().to_string()
    }
    fn mnt(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
    fn mount(&mut self, server: &Server) {
        ok(server
            .cmd()
            .args([
                "mount",
                &self.b(),
                self.mnt().to_str().unwrap(),
                "--log-file",
                self.dir.path().join("log").to_str().unwrap(),
            ])
            .output()
            .unwrap());
        self.mounted = true;
    }
    fn umount(&mut self) {
        ok(command()
            .args(["umount", self.mnt().to_str().unwrap()])
            .output()
            .unwrap());
        self.mounted = false;
    }
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for RemoteTree {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(self.mnt(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

#[test]
fn mount_on_the_server_end_to_end_with_rotation() {
    require_fuse!();
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let mut t = RemoteTree::new(&server);
    t.mount(&server);
    let data = random_bytes(100_000, 9);
    fs::write(t.mnt().join("f"), &data).unwrap();
    t.umount();
    ok(server
        .cmd()
        .args(["key", "rotate", "alias/tree"])
        .output()
        .unwrap());
    let out = ok(server
        .cmd()
        .args(["rotate", &t.b(), "--json"])
        .output()
        .unwrap());
    assert!(out.contains("\"changed\": 1"), "{out}");
    t.mount(&server);
    assert_eq!(fs::read(t.mnt().join("f")).unwrap(), data);
    // the server's audit log names the remote principal and its address
    let show = ok(command()
        .args([
            "--kms",
            &format!("local:{}", ks.path().join("ks").display()),
            "audit",
            "show",
            "--principal",
            "alice",
            "--op",
            "ReEncrypt",
            "--json",
        ])
        .output()
        .unwrap());
    assert!(show.contains("\"source\":\"127.0.0.1:"), "{show}");
}

/// A remote tree mounted on a server with two files, remounted so that only `cached` has
/// its key in the mount's cache; then the server is stopped.
fn mounted_then_kms_stopped() -> (tempfile::TempDir, Server, RemoteTree) {
    let ks = tempfile::tempdir().unwrap();
    let mut server = Server::start(&ks.path().join("ks"), &[]);
    let mut t = RemoteTree::new(&server);
    t.mount(&server);
    fs::write(t.mnt().join("cached"), b"kept").unwrap();
    fs::write(t.mnt().join("uncached"), b"needs the KMS").unwrap();
    t.umount();
    t.mount(&server);
    assert_eq!(fs::read(t.mnt().join("cached")).unwrap(), b"kept");
    server.stop();
    (ks, server, t)
}

#[test]
fn kms_outage_under_a_live_mount() {
    require_fuse!();
    let (_ks, mut server, t) = mounted_then_kms_stopped();
    // a file whose key is cached keeps working
    assert_eq!(fs::read(t.mnt().join("cached")).unwrap(), b"kept");
    // an uncached one fails with EIO within the timeout (1 s per try, 3 retries), not a hang
    let start = Instant::now();
    assert!(is_eio(fs::read(t.mnt().join("uncached"))));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(t.log().contains("unreachable"), "{}", t.log());
    server.restart();
    assert_eq!(
        fs::read(t.mnt().join("uncached")).unwrap(),
        b"needs the KMS",
        "works again without a remount"
    );
}

#[test]
fn authentication_errors_and_plain_http_refusal() {
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let e = err(server
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args(["key", "list"])
        .output()
        .unwrap());
    assert!(e.contains("InvalidSignatureException"), "{e}");
    let e = err(server
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "AKKFNOSUCHKEY0000000")
        .args(["key", "list"])
        .output()
        .unwrap());
    assert!(e.contains("UnrecognizedClientException"), "{e}");
    // alice may not use the key local-admin created (its default policy names its creator)
    let e = err(server
        .cmd()
        .args(["key", "describe", "alias/seed"])
        .output()
        .unwrap());
    assert!(e.contains("AccessDeniedException"), "{e}");
    // a disabled principal is unknown to the server
    ok(command()
        .args([
            "--kms",
            &format!("local:{}", ks.path().join("ks").display()),
            "kms",
            "principal",
            "disable",
            "alice",
        ])
        .output()
        .unwrap());
    let e = err(server.cmd().args(["key", "list"]).output().unwrap());
    assert!(e.contains("UnrecognizedClientException"), "{e}");
    // listening beyond loopback without TLS is refused
    let out = command()
        .args([
            "--kms",
            &format!("local:{}", ks.path().join("ks").display()),
            "kms",
            "serve",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("without TLS"), "{e}");
}

#[test]
fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    fs::write(&cp, cert.cert.pem()).unwrap();
    fs::write(&kp, cert.key_pair.serialize_pem()).unwrap();
    let server = Server::start(
        &dir.path().join("ks"),
        &[
            "--tls-cert",
            cp.to_str().unwrap(),
            "--tls-key",
            kp.to_str().unwrap(),
        ],
    );
    assert!(server.url().starts_with("https://"));
    // without the CA the certificate is not trusted
    let e = err(server.cmd().args(["key", "create"]).output().unwrap());
    assert!(e.contains("unreachable"), "{e}");
    let arn = ok(server
        .cmd()
        .env("KMSFS_KMS_CA", &cp)
        .args(["key", "create", "--alias", "overtls"])
        .output()
        .unwrap());
    assert!(arn.starts_with("arn:aws:kms:"), "{arn}");
}

/// Runs `tests/compat/SCRIPT` with boto3 against a fresh server (principal alice) and a
/// second principal `other` (`extra`: its creation options), whose credentials the script
/// reads from `{VAR}_AKID` / `{VAR}_SECRET`. Answers the keystore's directory (None: no
/// Python here, outside CI).
fn compat_script(
    script: &str,
    other: &str,
    extra: &[&str],
    var: &str,
) -> Option<tempfile::TempDir> {
    let venv = python_venv()?;
    let ks = tempfile::tempdir().unwrap();
    // The scripts check AWS's API as fast as they can: the per-principal rate bound (its
    // own test in this file) would throttle GetParametersForImport (weight 1,000).
    let server = Server::start(&ks.path().join("ks"), &["--max-rate", "1000000"]);
    let out = ok(command()
        .args([
            "--kms",
            &format!("local:{}", ks.path().join("ks").display()),
        ])
        .args(["kms", "principal", "create", other])
        .args(extra)
        .output()
        .unwrap());
    let creds: Vec<&str> = out.lines().filter_map(|l| l.split(" = ").nth(1)).collect();
    all_ok(
        python_script(&venv, script)
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret)
            .env(format!("{var}_AKID"), creds[0])
            .env(format!("{var}_SECRET"), creds[1])
            .env("AWS_CLI", venv.join("bin/aws")),
    );
    Some(ks)
}

/// One server answering as two Regions on its own SQLite store (`--region A,B`): each
/// request is answered as the Region it is signed for, so everything the two-server
/// cluster test checks through boto3 (tests/compat/multi_region.py: per-Region keys and
/// aliases, replicas, imported material, UpdatePrimaryRegion, deletion) holds with both
/// clients on one endpoint; a Region not served sees nothing.
#[test]
fn one_server_answers_as_several_regions() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let (ra, rb) = ("us-east-1", "eu-west-1");
    let server = Server::start(
        &ks.path().join("ks"),
        &["--max-rate", "1000000", "--region", &format!("{ra},{rb}")],
    );
    all_ok(
        python_script(&venv, "multi_region.py")
            .env("ENDPOINT_A", server.url())
            .env("REGION_A", ra)
            .env("ENDPOINT_B", server.url())
            .env("REGION_B", rb)
            .env("REGION_NOT_SERVED", "ap-south-1")
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret),
    );
    // The same Region twice is a mistake worth a line, not a silent dedupe.
    let out = command()
        .args(["kms", "serve", "--keystore"])
        .arg(ks.path().join("ks"))
        .args(["--listen", "127.0.0.1:0", "--region", "us-east-1,us-east-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("us-east-1 is named twice"), "{err}");
}

#[test]
fn boto3_and_aws_cli_against_our_server() {
    // bob: a second principal for the policy checks
    compat_script("boto3_compat.py", "bob", &[], "BOB");
}

/// AWS's exact messages (model validation, not-found, states, usage, sizes, tags), the
/// on-demand rotation limit, and cross-account use with a principal of another account.
#[test]
fn aws_words_and_cross_account_use_through_boto3() {
    let Some(ks) = compat_script(
        "aws_words.py",
        "carol",
        &["--account", "444455556666"],
        "CAROL",
    ) else {
        return;
    };
    // A request refused by the model check, before any operation ran, is audited too.
    let shown = ok(command()
        .args([
            "--kms",
            &format!("local:{}", ks.path().join("ks").display()),
        ])
        .args(["audit", "show", "--json"])
        .output()
        .unwrap());
    let refused = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["op"] == "GenerateDataKey" && r["error_code"] == "ValidationException")
        .count();
    assert!(
        refused >= 1,
        "the model's refusal of NumberOfBytes=1025 is not in the audit log"
    );
}

/// The AWS Encryption SDK CLI (from PyPI, nobody here wrote it) encrypts and decrypts
/// with a key of our server, found through AWS_ENDPOINT_URL_KMS; the audit log shows the
/// calls it made; a ciphertext with one flipped byte is refused.
#[test]
fn aws_encryption_sdk_cli_against_our_server() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let arn = ok(server.cmd().args(["key", "create"]).output().unwrap());
    let arn = arn.trim();
    let d = ks.path();
    let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(d.join("plain"), &plain).unwrap();
    let esdk = |args: &[&str]| {
        let out = Command::new(venv.join("bin/aws-encryption-cli"))
            .args(args)
            .args(["--wrapping-keys", &format!("key={arn}")])
            .args([
                "--commitment-policy",
                "require-encrypt-require-decrypt",
                "-S",
            ])
            .env("AWS_ENDPOINT_URL_KMS", server.url())
            .env("AWS_ACCESS_KEY_ID", &server.akid)
            .env("AWS_SECRET_ACCESS_KEY", &server.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_REGION")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let p = |n: &str| d.join(n).display().to_string();
    let (good, err) = esdk(&[
        "--encrypt",
        "-i",
        &p("plain"),
        "-o",
        &p("ct"),
        "--encryption-context",
        "purpose=test",
    ]);
    assert!(good, "encrypt: {err}");
    let ct = fs::read(d.join("ct")).unwrap();
    assert!(ct.len() > plain.len() && !ct.windows(64).any(|w| w == &plain[..64]));
    let (good, err) = esdk(&["--decrypt", "-i", &p("ct"), "-o", &p("back")]);
    assert!(good, "decrypt: {err}");
    assert_eq!(fs::read(d.join("back")).unwrap(), plain);
    let mut bad = ct.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(d.join("bad"), &bad).unwrap();
    let (good, _) = esdk(&["--decrypt", "-i", &p("bad"), "-o", &p("bad.out")]);
    assert!(!good, "a tampered ciphertext decrypted");
    let log = ok(command()
        .args(["--kms", &format!("local:{}", d.join("ks").display())])
        .args(["audit", "show"])
        .output()
        .unwrap());
    for op in ["GenerateDataKey", "Decrypt"] {
        assert!(log.contains(op), "audit log lacks {op}: {log}");
    }
}

#[test]
fn our_client_against_moto() {
    require_fuse!();
    let Some(venv) = python_venv() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut moto = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("mnt")).unwrap();
    let kms = |args: &[&str]| {
        command()
            .args(args)
            .env("KMSFS_KMS", format!("http://127.0.0.1:{port}"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
    };
    let arn = ok(kms(&["key", "create", "--description", "via moto"]))
        .trim()
        .to_string();
    let b = dir.path().join("b");
    let m = dir.path().join("mnt");
    ok(kms(&["init", b.to_str().unwrap(), "--key", &arn]));
    ok(kms(&["mount", b.to_str().unwrap(), m.to_str().unwrap()]));
    let data = random_bytes(50_000, 3);
    fs::write(m.join("f"), &data).unwrap();
    ok(kms(&["umount", m.to_str().unwrap()]));
    ok(kms(&["mount", b.to_str().unwrap(), m.to_str().unwrap()]));
    let back = fs::read(m.join("f"));
    ok(kms(&["umount", m.to_str().unwrap()]));
    let _ = moto.kill();
    let _ = moto.wait();
    assert_eq!(back.unwrap(), data);
}

/// During a KMS outage, an open that needs the KMS (its key is not cached) waits for the
/// KMS; opens and closes of other files must not wait behind it. On e663627 the
/// open-file table lock was held across the unwrap, so every open in the mount stalled.
#[test]
fn an_open_waiting_on_the_kms_does_not_stall_other_opens() {
    require_fuse!();
    let (_ks, server, t) = mounted_then_kms_stopped();
    // The KMS hangs (accepts, never answers): each unwrap try waits for its timeout.
    let hang = std::net::TcpListener::bind(&server.addr).unwrap();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in hang.incoming() {
            held.push(c);
        }
    });
    let mnt = t.mnt();
    let slow = std::thread::spawn(move || {
        let start = Instant::now();
        let r = fs::read(mnt.join("uncached"));
        (r.map_err(|e| e.raw_os_error()), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // meanwhile: the cached file opens, reads and closes, several times
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(fs::read(t.mnt().join("cached")).unwrap(), b"kept");
    }
    let fast = start.elapsed();
    let (r, waited) = slow.join().unwrap();
    assert_eq!(
        r,
        Err(Some(libc::EIO)),
        "the uncached file during the outage"
    );
    assert!(
        fast + Duration::from_millis(300) < waited,
        "opens of a cached file took {fast:?}, the open waiting on the KMS {waited:?}: they waited behind it"
    );
}

/// Abuse of the server by unauthenticated clients. On e663627: 1,024 idle connections
/// starved every other client for as long as they were held; one request with a
/// 70,000-character access key id wrote a 70 KB audit line that made every later open of
/// the keystore fail; every refused request cost an fsync'd audit record.
const ABUSE: &str = r#"
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
def healthz(src):
    s = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = s.recv(4096)
    s.close()
    return data
# 1. one host holds idle connections (more than its share): another host is still served
idle = []
for _ in range(40):
    try:
        idle.append(socket.create_connection((host, port), timeout=5))
    except OSError:
        break
time.sleep(0.3)
t = time.time()
assert b"200 OK" in healthz("127.0.0.2"), "another host was starved"
print("other host served in %.2fs while %d idle connections were open" % (time.time() - t, len(idle)))
# 2. idle connections are closed by the server after the idle timeout
time.sleep(3.5)
closed = 0
for s in idle:
    s.settimeout(0.5)
    try:
        closed += s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        closed += 1
    except socket.timeout:
        pass
assert closed == len(idle), "%d of %d idle connections still open" % (len(idle) - closed, len(idle))
assert b"200 OK" in healthz("127.0.0.1"), "same host not served after the idle ones were closed"
# 3. a slow client (headers trickled) is cut off too
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
t = time.time()
try:
    for _ in range(20):
        s.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.5)
    raise AssertionError("a slow client kept its connection for 10 s")
except (BrokenPipeError, ConnectionResetError):
    pass
print("slow client cut after %.1fs" % (time.time() - t))
# 4. a huge access key id, then many bad signatures from one source
def post(auth):
    s = socket.create_connection((host, port), timeout=5)
    body = b"{}"
    req = ("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
           "X-Amz-Target: TrentService.ListKeys\r\nX-Amz-Date: 20260101T000000Z\r\n"
           "Authorization: %s\r\nContent-Length: %d\r\n\r\n" % (auth, len(body))).encode() + body
    s.sendall(req)
    data = s.recv(65536)
    s.close()
    return data
r = post("AWS4-HMAC-SHA256 Credential=%s/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=%s" % ("A" * 60000, "0" * 64))
assert b"400" in r.split(b"\r\n")[0] and b"IncompleteSignatureException" in r, r[:300]
for i in range(200):
    r = post("AWS4-HMAC-SHA256 Credential=AKIAFAKE%08d/20260101/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=%s" % (i, "0" * 64))
    assert b"400" in r.split(b"\r\n")[0], r[:200]
print("ALL OK")
"#;

#[test]
fn the_server_holds_under_idle_slow_huge_and_repeated_unauthenticated_requests() {
    let ks = tempfile::tempdir().unwrap();
    let ksp = ks.path().join("ks");
    let server = Server::start(
        &ksp,
        &[
            "--idle-timeout",
            "2",
            "--max-connections",
            "64",
            "--max-per-source",
            "16",
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let out = Command::new("python3")
        .args(["-c", ABUSE, "127.0.0.1", &port])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
    // the keystore still opens, for the server and for everyone else
    let kms = format!("local:{}", ksp.display());
    ok(command()
        .args(["--kms", &kms, "key", "list"])
        .output()
        .unwrap());
    ok(server.cmd().args(["key", "list"]).output().unwrap());
    // refusals were recorded, but not one fsync'd line each: at most the per-window
    // allowance plus summary records
    let show = ok(command()
        .args(["--kms", &kms, "audit", "show", "--json"])
        .output()
        .unwrap());
    let refusals = show
        .lines()
        .filter(|l| l.contains("UnrecognizedClientException") || l.contains("IncompleteSignature"))
        .count();
    assert!(
        (1..=40).contains(&refusals),
        "{refusals} refusal records for 201 refused requests"
    );
    assert!(
        show.lines().all(|l| l.len() < 8192),
        "an audit line is unbounded"
    );
    assert!(ok(command()
        .args(["--kms", &kms, "audit", "verify"])
        .output()
        .unwrap())
    .contains("audit log OK"));
}

/// `kmsfs share`: a principal the key policy does not let in reads a tree once it is
/// shared (read-only, then read-write: it can create files), never another tree under the
/// same key, and nothing after `--revoke`. The KMS enforces it (grants bound to the tree's
/// fs id), not the file modes.
#[test]
fn share_a_tree_by_grant() {
    require_fuse!();
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let d = tempfile::tempdir().unwrap();
    ok(server
        .cmd()
        .args(["key", "create", "--alias", "shared"])
        .output()
        .unwrap());
    let (a, b, mnt) = (d.path().join("a"), d.path().join("b"), d.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let mount = |cmd: &mut Command, backing: &std::path::Path| {
        let log = d.path().join("log");
        cmd.args(["mount", &s(backing), &s(&mnt), "--log-file", &s(&log)])
            .output()
            .unwrap()
    };
    let umount = || ok(command().args(["umount", &s(&mnt)]).output().unwrap());
    for (tree, name) in [(&a, "in-a"), (&b, "in-b")] {
        ok(server
            .cmd()
            .args(["init", &s(tree), "--key", "alias/shared"])
            .output()
            .unwrap());
        ok(mount(&mut server.cmd(), tree));
        fs::write(mnt.join(name), name.as_bytes()).unwrap();
        umount();
    }
    let creds = principal(&ks.path().join("ks"), "bob");
    let bob = || as_principal(&server, &creds);
    let cat =
        |tree: &std::path::Path, name: &str| bob().args(["cat", &s(tree), name]).output().unwrap();
    let alice_share = |args: &[&str]| {
        ok(server
            .cmd()
            .args(["share", &s(&a)])
            .args(args)
            .output()
            .unwrap())
    };
    // Not shared: the key policy lets only alice in.
    let e = cat(&a, "in-a");
    assert!(!e.status.success(), "bob read an unshared tree");
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("AccessDenied"),
        "{e:?}"
    );
    alice_share(&["--with", "bob", "--read-only"]);
    assert_eq!(alice_share(&["--list"]).trim(), "bob\tDecrypt");
    assert_eq!(ok(cat(&a, "in-a")), "in-a");
    // A tree under the same key is not shared.
    let e = cat(&b, "in-b");
    assert!(
        !e.status.success(),
        "bob read another tree under the shared key"
    );
    // Read-only: bob can mount and read, but not create a file.
    ok(mount(&mut bob(), &a));
    assert_eq!(fs::read(mnt.join("in-a")).unwrap(), b"in-a");
    assert!(fs::write(mnt.join("from-bob"), b"x").is_err());
    umount();
    // Read-write: bob creates files.
    alice_share(&["--with", "bob"]);
    let list = alice_share(&["--list"]);
    assert_eq!(
        list.trim(),
        "bob\tDecrypt,Encrypt,GenerateDataKey,GenerateDataKeyWithoutPlaintext"
    );
    ok(mount(&mut bob(), &a));
    fs::write(mnt.join("from-bob"), b"bob's").unwrap();
    umount();
    ok(mount(&mut server.cmd(), &a));
    assert_eq!(fs::read(mnt.join("from-bob")).unwrap(), b"bob's");
    umount();
    // Revoked: nothing.
    assert!(alice_share(&["--revoke", "bob"]).contains("revoked 3 grant"));
    assert!(!cat(&a, "in-a").status.success(), "bob read after --revoke");
    assert_eq!(alice_share(&["--list"]).trim(), "");
}

/// Creates principal `name` in keystore `ks`; its (access key id, secret).
fn principal(ks: &std::path::Path, name: &str) -> (String, String) {
    let out = ok(command()
        .args(["--kms", &format!("local:{}", ks.display())])
        .args(["kms", "principal", "create", name])
        .output()
        .unwrap());
    let creds: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(" = ").nth(1))
        .map(str::to_string)
        .collect();
    (creds[0].clone(), creds[1].clone())
}

/// A kmsfs command against `server`, signed as the principal of `creds`.
fn as_principal(server: &Server, creds: &(String, String)) -> Command {
    let mut c = server.cmd();
    c.env("AWS_ACCESS_KEY_ID", &creds.0)
        .env("AWS_SECRET_ACCESS_KEY", &creds.1);
    c
}

/// #13: an encrypt-only tree. The backup host's principal may call GetPublicKey on an
/// RSA key and nothing else: it makes the tree, untars and rsyncs into the mount and
/// replaces a file whole, but reads nothing already there. The restore principal
/// (Decrypt) reads every byte. A swapped public key in kmsfs.json is refused.
#[test]
fn an_encrypt_only_tree_for_a_backup_host() {
    require_fuse!();
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let d = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let make_rsa = || {
        let out = ok(server
            .cmd()
            .args([
                "key",
                "create",
                "--spec",
                "RSA_2048",
                "--usage",
                "ENCRYPT_DECRYPT",
            ])
            .output()
            .unwrap());
        out.split_whitespace()
            .find(|w| w.starts_with("arn:"))
            .unwrap_or_else(|| panic!("no ARN in {out:?}"))
            .to_string()
    };
    let key = make_rsa();
    let grant = |who: &str, op: &str| {
        ok(server
            .cmd()
            .args(["grant", "create", &key, "--grantee", who, "--operation", op])
            .output()
            .unwrap())
    };
    grant("backup", "GetPublicKey");
    grant("restore", "Decrypt");
    grant("restore", "GetPublicKey");
    let backup = principal(&ks.path().join("ks"), "backup");
    let restore = principal(&ks.path().join("ks"), "restore");
    // Something to back up: a small tree of files, one large, one empty.
    let src = d.path().join("src");
    fs::create_dir_all(src.join("etc/conf.d")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(src.join("etc/conf.d/empty"), b"").unwrap();
    let (b, mnt) = (d.path().join("b"), d.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let log = d.path().join("log");
    let mount = |who: &(String, String)| {
        ok(as_principal(&server, who)
            .args(["mount", &s(&b), &s(&mnt), "--log-file", &s(&log)])
            .output()
            .unwrap())
    };
    let umount = || ok(command().args(["umount", &s(&mnt)]).output().unwrap());
    ok(as_principal(&server, &backup)
        .args(["init", &s(&b), "--key", &key])
        .output()
        .unwrap());
    mount(&backup);
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    };
    // What a backup job does: untar into the mount, rsync a copy beside it.
    let untar = |what: &str| {
        sh(&format!(
            "tar -C {} -cf - {what} | tar -C {} -xf -",
            s(&src),
            s(&mnt)
        ))
    };
    let rsync = || {
        sh(&format!(
            "rsync -a --whole-file {}/ {}/copy/",
            s(&src),
            s(&mnt)
        ))
    };
    untar(".");
    rsync();
    umount();
    mount(&backup);
    let e = fs::read(mnt.join("etc/hosts")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let e = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("etc/hosts"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // Replaced whole (O_TRUNC), by hand and by a second untar over the first.
    fs::write(mnt.join("etc/hosts"), b"10.0.0.1 replaced\n").unwrap();
    untar("big.bin");
    // rsync sees nothing changed (sizes and times), and reads nothing.
    rsync();
    assert_eq!(
        fs::metadata(mnt.join("big.bin")).unwrap().len(),
        big.len() as u64
    );
    umount();
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("answering EACCES"), "{logged}");
    // The restore host reads every byte.
    mount(&restore);
    assert_eq!(fs::read(mnt.join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(mnt.join("copy/big.bin")).unwrap(), big);
    assert_eq!(
        fs::read(mnt.join("etc/hosts")).unwrap(),
        b"10.0.0.1 replaced\n"
    );
    assert_eq!(
        fs::read(mnt.join("copy/etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(fs::read(mnt.join("copy/etc/conf.d/empty")).unwrap(), b"");
    umount();
    assert_eq!(
        ok(as_principal(&server, &restore)
            .args(["cat", &s(&b.join("copy/etc/hosts"))])
            .output()
            .unwrap()),
        "127.0.0.1 localhost\n"
    );
    // Whoever writes the backing tree swaps in a public key of their own: refused.
    let other = make_rsa();
    let theirs = ok(server
        .cmd()
        .args(["key", "public-key", &other])
        .output()
        .unwrap());
    let cfg_path = b.join("kmsfs.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["public_keys"][&key] = serde_json::Value::String(theirs.trim().to_string());
    fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let out = as_principal(&server, &backup)
        .args(["mount", &s(&b), &s(&mnt)])
        .output()
        .unwrap();
    assert!(!out.status.success(), "mounted with a swapped public key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("that is not the KMS's"),
        "{out:?}"
    );
}

/// Bounds against a signed principal (#22): an encryption context beyond 8 KiB is
/// refused and is not copied into the fsync'd audit record (on e418955 one connection
/// grew audit.log by 63.5 MiB in 3.3 s with 60 KiB contexts); a principal beyond its
/// request budget gets ThrottlingException, with no audit record per throttled request,
/// while another principal is still served.
#[test]
fn a_signed_principal_cannot_flood_the_audit_log_or_the_server() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &["--max-rate", "2"]);
    let bob = principal(&ks.path().join("ks"), "bob");
    let key = ok(server.cmd().args(["key", "create"]).output().unwrap());
    let log = ks.path().join("ks").join("audit.log");
    let script = r#"
import os, sys, time, boto3
from botocore.config import Config
def client(a, s):
    return boto3.client("kms", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=a, aws_secret_access_key=s, config=Config(retries={"max_attempts": 1}))
alice, bob = client(os.environ["AKID"], os.environ["SECRET"]), client(os.environ["BOB_AKID"], os.environ["BOB_SECRET"])
key, log = os.environ["KEY"], os.environ["LOG"]
size = os.path.getsize(log)
big = {f"k{i}": "v" * 1000 for i in range(9)}
try:
    alice.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=big)
    print("FAIL: a 9 KiB context was taken"); sys.exit(1)
except alice.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException", e.response
grew = os.path.getsize(log) - size
assert grew < 2048, f"the refused 9 KiB context grew the audit log by {grew} bytes"
ok_ctx = {f"k{i}": "v" * 1000 for i in range(8)}
alice.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ok_ctx)
time.sleep(2.5)
size = os.path.getsize(log)
import threading
codes = []
def flood():
    c = client(os.environ["AKID"], os.environ["SECRET"])
    for _ in range(5):
        try:
            c.list_keys(); codes.append("ok")
        except c.exceptions.ClientError as e:
            codes.append(e.response["Error"]["Code"])
t0 = time.monotonic()
ts = [threading.Thread(target=flood) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
elapsed = time.monotonic() - t0
ok, throttled = codes.count("ok"), codes.count("ThrottlingException")
# A bucket of 4 and 2 more per second; every other request throttled.
assert ok <= 5 + 2 * elapsed and ok + throttled == 80 and throttled > 0, (elapsed, codes)
grew = os.path.getsize(log) - size
assert grew < ok * 1500, f"{throttled} throttled requests grew the audit log by {grew} bytes ({ok} served)"
bob.list_keys()  # another principal is still served
print("ALL OK", ok, throttled, grew)
"#;
    all_ok(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret)
            .env("BOB_AKID", &bob.0)
            .env("BOB_SECRET", &bob.1)
            .env("KEY", key.trim())
            .env("LOG", &log),
    );
}

/// Per-principal resource quotas (#22): beyond its keys, aliases or grants a principal
/// gets LimitExceededException; another principal is not held by it.
#[test]
fn a_principal_is_held_to_its_quotas() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(
        &ks.path().join("ks"),
        &["--quotas", "keys=2,aliases=1,grants=1"],
    );
    let bob = principal(&ks.path().join("ks"), "bob");
    let script = r#"
import hashlib, os, boto3
from botocore.config import Config
def client(a, s):
    return boto3.client("kms", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=a, aws_secret_access_key=s, config=Config(retries={"max_attempts": 1}))
alice, bob = client(os.environ["AKID"], os.environ["SECRET"]), client(os.environ["BOB_AKID"], os.environ["BOB_SECRET"])
def code(f):
    try:
        f(); return "ok"
    except alice.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
k1 = alice.create_key()["KeyMetadata"]["KeyId"]
k2 = alice.create_key()["KeyMetadata"]["KeyId"]
assert code(lambda: alice.create_key()) == "LimitExceededException"
assert code(lambda: bob.create_key()) == "ok", "bob is not held by alice's keys"
alice.create_alias(AliasName="alias/one", TargetKeyId=k1)
assert code(lambda: alice.create_alias(AliasName="alias/two", TargetKeyId=k2)) == "LimitExceededException"
alice.create_grant(KeyId=k1, GranteePrincipal="bob", Operations=["Decrypt"])
assert code(lambda: alice.create_grant(KeyId=k2, GranteePrincipal="bob", Operations=["Decrypt"])) == "LimitExceededException"
alice.schedule_key_deletion(KeyId=k2, PendingWindowInDays=7)
print("ALL OK")
"#;
    all_ok(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret)
            .env("BOB_AKID", &bob.0)
            .env("BOB_SECRET", &bob.1),
    );
}

/// Ed25519 keys (ECC_NIST_EDWARDS25519, #23): made, signed with and verified through
/// boto3; the public key parses in Python's `cryptography` and verifies our signatures
/// there (an implementation nobody here wrote); ED25519_PH_SHA_512 (Ed25519ph over a
/// SHA-512 digest, AWS's DIGEST form; its primitive is checked against RFC 8032's vector
/// in kms::local::lc_sign) signs and verifies; RAW for it and DIGEST for the pure form are
/// refused, never ignored.
#[test]
fn ed25519_keys_sign_what_an_outside_library_verifies() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let script = r#"
import hashlib, os, boto3
from botocore.config import Config
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
kms = boto3.client("kms", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=os.environ["AKID"], aws_secret_access_key=os.environ["SECRET"],
                   config=Config(retries={"max_attempts": 1}))
def code(f):
    try:
        f(); return "ok"
    except kms.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
md = kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
assert md["KeySpec"] == "ECC_NIST_EDWARDS25519" and md["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"], md
assert code(lambda: kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="KEY_AGREEMENT")) == "ValidationException"
pub = kms.get_public_key(KeyId=md["KeyId"])
assert pub["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"], pub
key = load_der_public_key(pub["PublicKey"])
assert isinstance(key, Ed25519PublicKey)
for msg in (b"x", b"signed by kmsfs" * 100, os.urandom(4096)):
    s = kms.sign(KeyId=md["KeyId"], Message=msg, MessageType="RAW", SigningAlgorithm="ED25519_SHA_512")
    assert len(s["Signature"]) == 64
    key.verify(s["Signature"], msg)  # raises if it does not verify
    assert kms.verify(KeyId=md["KeyId"], Message=msg, Signature=s["Signature"], SigningAlgorithm="ED25519_SHA_512")["SignatureValid"]
    bad = bytes([s["Signature"][0] ^ 1]) + s["Signature"][1:]
    assert code(lambda: kms.verify(KeyId=md["KeyId"], Message=msg, Signature=bad, SigningAlgorithm="ED25519_SHA_512")) == "KMSInvalidSignatureException"
assert code(lambda: kms.sign(KeyId=md["KeyId"], Message=b"d" * 64, MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512")) == "ValidationException"
digest = hashlib.sha512(b"prehashed by the caller").digest()
ph = kms.sign(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ED25519_PH_SHA_512")["Signature"]
assert len(ph) == 64
assert kms.verify(KeyId=md["KeyId"], Message=digest, MessageType="DIGEST", Signature=ph, SigningAlgorithm="ED25519_PH_SHA_512")["SignatureValid"]
other = hashlib.sha512(b"another").digest()
assert code(lambda: kms.verify(KeyId=md["KeyId"], Message=other, MessageType="DIGEST", Signature=ph, SigningAlgorithm="ED25519_PH_SHA_512")) == "KMSInvalidSignatureException"
# Ed25519ph is not pure Ed25519 of the digest
try:
    key.verify(ph, digest); raise SystemExit("an Ed25519ph signature verified as pure Ed25519")
except __import__("cryptography").exceptions.InvalidSignature:
    pass
assert code(lambda: kms.sign(KeyId=md["KeyId"], Message=b"m", MessageType="RAW", SigningAlgorithm="ED25519_PH_SHA_512")) == "ValidationException"
assert code(lambda: kms.sign(KeyId=md["KeyId"], Message=digest[:32], MessageType="DIGEST", SigningAlgorithm="ED25519_PH_SHA_512")) == "ValidationException"
print("ALL OK")
"#;
    all_ok(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret),
    );
}

/// ML-DSA and ML-KEM keys cross-checked outside kmsfs (tests/compat/pq_keys.py, Python's
/// `cryptography` on OpenSSL): our ML-DSA signatures verify there and theirs under another
/// key do not verify here; their ML-KEM encapsulations to our public keys decapsulate here
/// to the same shared secret.
#[test]
fn post_quantum_keys_cross_checked_with_an_outside_implementation() {
    let Some(venv) = python_venv() else { return };
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    all_ok(
        python_script(&venv, "pq_keys.py")
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret),
    );
}
