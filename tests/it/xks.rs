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
    pub token: String,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a proxy with a new token; None only where SoftHSM2 is missing outside CI.
    pub fn start() -> Option<Proxy> {
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
        fs::write(
            &config,
            serde_json::json!({
                "path_prefix": "/tenant-1",
                "token": token,
                "credentials": [{"access_key_id": akid, "secret_file": secret_file}],
                "keys": {"k1": {}, "enc-only": {"usage": ["ENCRYPT"]}, "off": {"enabled": false}},
            })
            .to_string(),
        )
        .unwrap();
        let child = spawn(&config, &env, "127.0.0.1:0");
        let (child, url) = child;
        Some(Proxy {
            child,
            url,
            uri_path: "/tenant-1/kms/xks/v1".into(),
            akid,
            secret,
            env,
            token,
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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/xks_proxy_spec.py"
    );
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .env("ENDPOINT", &p.url)
        .env("URI_PATH", &p.uri_path)
        .env("AKID", &p.akid)
        .env("SECRET", &p.secret)
        .env("KEY", "k1")
        .env("ENC_ONLY", "enc-only")
        .env("DISABLED", "off")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
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
