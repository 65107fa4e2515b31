//! The XKS proxy (`kmsfs xks serve`) in front of a SoftHSM2 token: against AWS's XKS
//! Proxy API specification from outside (tests/compat/xks_proxy_spec.py, botocore's
//! SigV4), its keys never extractable, its configuration refused when unsafe.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// A proxy on a SoftHSM2 token: keys `k1` (both usages), `enc-only`, `off` (disabled).
pub struct Proxy {
    pub child: Child,
    pub url: String,
    pub uri_path: String,
    pub akid: String,
    pub secret: String,
    pub env: Vec<(String, String)>,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a proxy with a new token; None only where SoftHSM2 is missing outside CI.
    pub fn start() -> Option<Proxy> {
        Self::start_with(None)
    }

    /// `start`, with the configuration's `tls` section.
    pub fn start_with(tls: Option<serde_json::Value>) -> Option<Proxy> {
        let (dir, _tokens, conf) = softhsm()?;
        let pin = dir.path().join("pin");
        fs::write(&pin, "4321\n").unwrap();
        let env = vec![
            ("SOFTHSM2_CONF".to_string(), conf.display().to_string()),
            (
                "KMSFS_PKCS11_PIN_FILE".to_string(),
                pin.display().to_string(),
            ),
        ];
        let token = format!("pkcs11:token=kmsfs-test?module-path={MODULE}");
        let run = |args: &[&str]| {
            let mut c = Command::new(bin());
            c.args(args);
            for (k, v) in &env {
                c.env(k, v);
            }
            ok(c.output().unwrap())
        };
        run(&["xks", "key", "create", "k1", "--token", &token]);
        run(&[
            "xks", "key", "create", "enc-only", "--token", &token, "--usage", "encrypt",
        ]);
        run(&["xks", "key", "create", "off", "--token", &token]);
        let secret_file = dir.path().join("secret");
        let aws_json = dir.path().join("aws.json");
        let akid = run(&[
            "xks",
            "credential",
            "create",
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--aws-json",
            aws_json.to_str().unwrap(),
            "--path-prefix",
            "/tenant-1",
        ])
        .trim()
        .to_string();
        let secret = fs::read_to_string(&secret_file).unwrap().trim().to_string();
        // The file AWS's console takes: the path and the credential.
        let j: serde_json::Value = serde_json::from_slice(&fs::read(&aws_json).unwrap()).unwrap();
        assert_eq!(j["XksProxyUriPath"], "/tenant-1/kms/xks/v1");
        assert_eq!(
            j["XksProxyAuthenticationCredential"]["AccessKeyId"],
            akid.as_str()
        );
        assert_eq!(
            j["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
            secret.as_str()
        );
        let config = dir.path().join("xks.json");
        let mut cfg = serde_json::json!({
            "path_prefix": "/tenant-1",
            "token": token,
            "credentials": [{"access_key_id": akid, "secret_file": secret_file}],
            "keys": {"k1": {}, "enc-only": {"usage": ["ENCRYPT"]}, "off": {"enabled": false}},
        });
        let https = tls.is_some();
        if let Some(t) = tls {
            cfg["tls"] = t;
        }
        fs::write(&config, cfg.to_string()).unwrap();
        let (child, mut url) = spawn(&config, &env, "127.0.0.1:0");
        if https {
            url = url.replace("http://127.0.0.1", "https://localhost");
        }
        Some(Proxy {
            child,
            url,
            uri_path: "/tenant-1/kms/xks/v1".into(),
            akid,
            secret,
            env,
            config,
            _dir: dir,
        })
    }

    /// Stops the proxy (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let addr = self.url.trim_start_matches("http://").to_string();
        for _ in 0..50 {
            let (c, url) = spawn(&self.config, &self.env, &addr);
            if url == self.url {
                self.child = c;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the proxy did not come back on {}", self.url);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(config: &Path, env: &[(String, String)], listen: &str) -> (Child, String) {
    let mut c = Command::new(bin());
    c.args([
        "xks",
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        listen,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = match line.trim().strip_prefix("listening on ") {
        Some(a) => format!("http://{a}"),
        None => String::new(),
    };
    (child, url)
}

/// Every endpoint and every refusal of the specification, from a client nobody here
/// wrote the signing of (botocore).
#[test]
fn the_proxy_answers_as_the_specification_says() {
    let Some(venv) = python_venv() else { return };
    let Some(p) = Proxy::start() else { return };
    all_ok(
        python_script(&venv, "xks_proxy_spec.py")
            .env("ENDPOINT", &p.url)
            .env("URI_PATH", &p.uri_path)
            .env("AKID", &p.akid)
            .env("SECRET", &p.secret)
            .env("KEY", "k1")
            .env("ENC_ONLY", "enc-only")
            .env("DISABLED", "off"),
    );
}

/// A configuration that would be unsafe or wrong is refused in one line naming what.
#[test]
fn unsafe_or_wrong_configurations_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("secret");
    fs::write(
        &secret,
        "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IHNlY3JldCE=\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let cases = [
        (
            serde_json::json!({"token": "pkcs11:token=t?module-path=/x.so", "listen": "0.0.0.0:0",
                "credentials": [{"access_key_id": "ABCDEFGHIJKLMNOPQRSTUV", "secret_file": secret}]}),
            "without TLS",
        ),
        (
            serde_json::json!({"token": "pkcs11:token=t?module-path=/x.so",
                "credentials": [{"access_key_id": "short", "secret_file": secret}]}),
            "access_key_id",
        ),
        (
            serde_json::json!({"token": "pkcs11:token=t?module-path=/x.so", "path_prefix": "no-slash",
                "credentials": [{"access_key_id": "ABCDEFGHIJKLMNOPQRSTUV", "secret_file": secret}]}),
            "path_prefix",
        ),
        (
            serde_json::json!({"token": "pkcs11:token=t?module-path=/x.so",
                "credentials": [{"access_key_id": "ABCDEFGHIJKLMNOPQRSTUV", "secret_file": secret}]}),
            "group/others",
        ),
    ];
    for (cfg, want) in cases {
        let f = d.path().join("c.json");
        fs::write(&f, cfg.to_string()).unwrap();
        let o = Command::new(bin())
            .args(["xks", "serve", "--config", f.to_str().unwrap()])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success() && e.contains(want), "{want}: {e}");
        assert_eq!(error_lines(&e), 1, "{e}");
    }
}

/// "Hold your own key", end to end: SoftHSM2 token -> `kmsfs xks serve` -> `kmsfs kms
/// serve` with an external key store that boto3 creates, connects and puts a key in ->
/// a tree wrapped under that key mounts and works. With the proxy stopped, opening a
/// file whose key the mount has not cached fails with EIO and a log line naming the
/// store; the store's connection fails with XKS_PROXY_NOT_REACHABLE; with the proxy back
/// and the store reconnected the same mount reads the file, with no remount.
#[test]
fn a_tree_under_an_external_key_lives_and_dies_with_its_proxy() {
    require_fuse!();
    let Some(venv) = python_venv() else { return };
    let Some(mut proxy) = Proxy::start() else {
        return;
    };
    let ksd = tempfile::tempdir().unwrap();
    let server = Server::start(&ksd.path().join("ks"), &["--xks-admin", "alice"]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // A proxy that accepts connections and never answers: the deadline must end it.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}", hang.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in hang.incoming().flatten() {
            held.push(c);
        }
    });
    let state = ksd.path().join("state.json");
    let (purl, ppath, pakid, psecret) = (
        proxy.url.clone(),
        proxy.uri_path.clone(),
        proxy.akid.clone(),
        proxy.secret.clone(),
    );
    let flows = |phase: &str| {
        let out = python_script(&venv, "xks_kms_flows.py")
            .arg(phase)
            .env("ENDPOINT", server.url())
            .env("AKID", &server.akid)
            .env("SECRET", &server.secret)
            .env("PROXY_ENDPOINT", &purl)
            .env("PROXY_PATH", &ppath)
            .env("XKS_AKID", &pakid)
            .env("XKS_SECRET", &psecret)
            .env("DEAD_ENDPOINT", &dead)
            .env("HANG_ENDPOINT", &hang_url)
            .env("STATE", &state)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("--- {phase}\n{text}");
        assert!(
            out.status.success() && text.contains("ALL OK"),
            "{phase}: {text}"
        );
    };
    flows("setup");
    let st: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    let (key, store) = (
        st["key"].as_str().unwrap().to_string(),
        st["store"].as_str().unwrap().to_string(),
    );
    // A tree wrapped under the XKS key, through the server.
    let d = tempfile::tempdir().unwrap();
    let (b, mnt, log) = (
        d.path().join("b"),
        d.path().join("mnt"),
        d.path().join("log"),
    );
    fs::create_dir(&mnt).unwrap();
    let tree = |args: &[&str]| {
        let mut c = server.cmd();
        c.args(args)
            .env("KMSFS_KNOWN_TREES", d.path().join("known.json"))
            .env("KMSFS_KMS_TIMEOUT", "5");
        c.output().unwrap()
    };
    ok(tree(&["init", b.to_str().unwrap(), "--key", &key]));
    let mount = || {
        ok(tree(&[
            "mount",
            b.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ]))
    };
    mount();
    fs::write(mnt.join("cached"), b"opened before the proxy stopped").unwrap();
    fs::write(mnt.join("cold"), b"never opened by the second mount").unwrap();
    ok(Command::new(bin())
        .args(["umount", mnt.to_str().unwrap()])
        .output()
        .unwrap());
    // A new mount: nothing cached; open one file while the proxy runs.
    mount();
    assert_eq!(
        fs::read(mnt.join("cached")).unwrap(),
        b"opened before the proxy stopped"
    );
    proxy.stop();
    let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
    let e = fs::read(mnt.join("cold")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = fs::read_to_string(&log).unwrap_or_default();
    let naming: Vec<&str> = text
        .lines()
        .skip(before)
        .filter(|l| l.contains(&store))
        .collect();
    assert_eq!(
        naming.len(),
        1,
        "log lines naming {store}: {naming:#?}\n{text}"
    );
    // The AWS-side flows with the proxy down, then up again.
    flows("down");
    proxy.restart();
    flows("up");
    // The same mount reads the file now, with no remount.
    assert_eq!(
        fs::read(mnt.join("cold")).unwrap(),
        b"never opened by the second mount"
    );
    fs::write(mnt.join("new"), b"and writes").unwrap();
    ok(Command::new(bin())
        .args(["umount", mnt.to_str().unwrap()])
        .output()
        .unwrap());
}

/// Mutual TLS: the proxy takes only clients whose certificate chains to its client CA
/// *and* names the configured subject (AWS KMS: `cks.kms.<region>.amazonaws.com`); our
/// KMS's client presents one (KMSFS_XKS_CLIENT_CERT / KMSFS_XKS_CLIENT_KEY).
#[test]
fn mutual_tls_takes_only_the_configured_client() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let d = tempfile::tempdir().unwrap();
    let mut ca_p = CertificateParams::new(vec![]).unwrap();
    ca_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_p.distinguished_name
        .push(DnType::CommonName, "kmsfs test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_p.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &ca, &ca_key).unwrap();
        (c.pem(), k.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        "localhost",
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let kms_client = leaf(
        "cks.kms.us-east-1.amazonaws.com",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let intruder = leaf(
        "intruder.example",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |n: &str, s: &str| {
        let p = d.path().join(n);
        fs::write(&p, s).unwrap();
        p
    };
    let tls = serde_json::json!({
        "cert": write("cert.pem", &server_cert),
        "key": write("key.pem", &server_key),
        "client_ca": write("ca.pem", &ca.pem()),
        "client_subject": "cks.kms.us-east-1.amazonaws.com",
    });
    let Some(p) = Proxy::start_with(Some(tls)) else {
        return;
    };
    assert!(p.url.starts_with("https://localhost:"), "{}", p.url);
    let client = |id: Option<&(String, String)>| {
        let identity = id.map(|(c, k)| format!("{c}{k}"));
        kmsfs::xks::client::XksClient::with_tls(
            &p.url,
            &p.uri_path,
            "us-east-1",
            &p.akid,
            &p.secret,
            Some(ca.pem().as_bytes()),
            identity.as_deref().map(str::as_bytes),
        )
        .unwrap()
    };
    let meta = kmsfs::xks::client::Metadata {
        principal: "arn:aws:iam::000000000000:user/alice",
        key_arn: None,
        operation: "KmsHealthCheck",
    };
    client(Some(&kms_client))
        .health(&meta)
        .expect("the configured client");
    let e = client(Some(&intruder)).health(&meta).unwrap_err();
    assert!(
        matches!(e, kmsfs::xks::client::CallError::Unreachable(_)),
        "{e}"
    );
    let e = client(None).health(&meta).unwrap_err();
    assert!(
        matches!(e, kmsfs::xks::client::CallError::Unreachable(_)),
        "{e}"
    );
}

/// Under systemd (kmsfs-xks.service): the SigV4 secret and the token's PIN come only as
/// credentials ($CREDENTIALS_DIRECTORY), and READY=1 is sent once the proxy answers.
#[test]
fn the_proxy_runs_as_its_unit_would_run_it() {
    let Some((dir, _tokens, conf)) = softhsm() else {
        return;
    };
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("kmsfs-pkcs11-pin"), "4321\n").unwrap();
    let (akid, secret) = {
        let f = dir.path().join("s");
        let akid = ok(Command::new(bin())
            .args([
                "xks",
                "credential",
                "create",
                "--secret-file",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap());
        fs::copy(&f, creds.join("kmsfs-xks-secret")).unwrap();
        (
            akid.trim().to_string(),
            fs::read_to_string(&f).unwrap().trim().to_string(),
        )
    };
    let config = dir.path().join("xks.json");
    fs::write(
        &config,
        serde_json::json!({
            "token": format!("pkcs11:token=kmsfs-test?module-path={MODULE}"),
            "credentials": [{"access_key_id": akid, "secret_file": "credential:kmsfs-xks-secret"}],
        })
        .to_string(),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(bin())
        .args([
            "xks",
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("KMSFS_PKCS11_PIN_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!(
        "http://{}",
        line.trim().strip_prefix("listening on ").unwrap()
    );
    let c = kmsfs::xks::client::XksClient::with_tls(
        &url,
        "/kms/xks/v1",
        "us-east-1",
        &akid,
        &secret,
        None,
        None,
    )
    .unwrap();
    c.health(&kmsfs::xks::client::Metadata {
        principal: "x",
        key_arn: None,
        operation: "KmsHealthCheck",
    })
    .expect("health through the unit's credentials");
    let _ = child.kill();
    let _ = child.wait();
}

/// Credential rotation without a restart (the spec's "SigV4 credentials rotation"): add
/// the new credential to the configuration and send SIGHUP — both sign; remove the old
/// one and send SIGHUP — only the new one does. A configuration that no longer parses is
/// refused and the running one kept.
#[test]
fn sighup_rotates_credentials_without_a_restart() {
    let Some(p) = Proxy::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let new_secret = d.path().join("new");
    let new_akid = ok(Command::new(bin())
        .args([
            "xks",
            "credential",
            "create",
            "--secret-file",
            new_secret.to_str().unwrap(),
        ])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let new_plain = fs::read_to_string(&new_secret).unwrap().trim().to_string();
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&p.config).unwrap()).unwrap();
    let old_cred = cfg["credentials"][0].clone();
    let new_cred = serde_json::json!({"access_key_id": new_akid, "secret_file": new_secret});
    let health = |akid: &str, secret: &str| {
        kmsfs::xks::client::XksClient::with_tls(
            &p.url,
            &p.uri_path,
            "us-east-1",
            akid,
            secret,
            None,
            None,
        )
        .unwrap()
        .health(&kmsfs::xks::client::Metadata {
            principal: "x",
            key_arn: None,
            operation: "KmsHealthCheck",
        })
    };
    let hup = |cfg: &serde_json::Value| {
        fs::write(&p.config, cfg.to_string()).unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(p.child.id() as i32).unwrap(),
            rustix::process::Signal::HUP,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(health(&new_akid, &new_plain).is_err(), "not configured yet");
    cfg["credentials"] = serde_json::json!([old_cred.clone(), new_cred.clone()]);
    hup(&cfg);
    health(&p.akid, &p.secret).expect("the old credential, during the rotation");
    health(&new_akid, &new_plain).expect("the new credential, during the rotation");
    cfg["credentials"] = serde_json::json!([new_cred]);
    hup(&cfg);
    assert!(
        health(&p.akid, &p.secret).is_err(),
        "the old credential after the rotation"
    );
    health(&new_akid, &new_plain).expect("the new credential after the rotation");
    hup(&serde_json::json!("not a configuration"));
    health(&new_akid, &new_plain).expect("a broken configuration keeps the running one");
}
