//! Load generator for `kmsfs kms serve`: many threads, each with its own connection,
//! sending SigV4-signed GenerateDataKey and Decrypt requests over loopback with the
//! audit log on. `cargo bench --bench kms_load [-- THREADS SECONDS [SERVERS]]` (needs the
//! release binary: `cargo build --release`). SERVERS > 1 starts that many servers on one
//! keystore and spreads the threads over them: give them a shared store with KMSFS_STORE
//! (bench/store.sh does, with PostgreSQL). Stops by itself.
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsfs::kms::remote::{Credentials, RemoteKms};
use kmsfs::kms::*;

#[path = "fixture.rs"]
mod fixture;
#[allow(unused_imports)]
use std::io::Write as _;

/// A minimal HTTP/1.1 keep-alive client: the request (headers signed with aws-sigv4) is
/// re-signed every 200 requests, so the load generator spends its CPU on sending, and
/// the server still verifies every signature in full.
struct Raw {
    conn: std::io::BufReader<std::net::TcpStream>,
    host: String,
    creds: Credentials,
    sent: u32,
    cached: Vec<u8>,
}

impl Raw {
    fn new(addr: &str, creds: Credentials) -> Raw {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            conn: std::io::BufReader::new(s),
            host: addr.to_string(),
            creds,
            sent: 0,
            cached: vec![],
        }
    }

    fn sign(&self, op: &str, body: &[u8]) -> Vec<u8> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;
        let target = format!("TrentService.{op}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("host", self.host.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        let identity = aws_credential_types::Credentials::new(
            self.creds.access_key_id.clone(),
            self.creds.secret_access_key.to_string(),
            None,
            None,
            "load",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("kms")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("http://{}/", self.host);
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instr, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in instr.headers() {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut b = req.into_bytes();
        b.extend_from_slice(body);
        b
    }

    fn call(&mut self, op: &str, body: &[u8]) -> u16 {
        use std::io::{Read, Write};
        if self.sent % 200 == 0 {
            self.cached = self.sign(op, body);
        }
        self.sent += 1;
        self.conn.get_mut().write_all(&self.cached).unwrap();
        let mut status = 0;
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            self.conn.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(s) = l.strip_prefix("HTTP/1.1 ") {
                status = s[..3].parse().unwrap();
            } else if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length: ") {
                len = v.parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        self.conn.read_exact(&mut body).unwrap();
        status
    }
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let nservers: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    fixture::throwaway_keystore();
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/kmsfs");
    let dir = tempfile::tempdir().unwrap();
    let ks = format!("local:{}", dir.path().join("ks").display());
    Command::new(bin)
        .args(["--kms", &ks, "key", "create"])
        .output()
        .unwrap();
    let out = Command::new(bin)
        .args(["--kms", &ks, "kms", "principal", "create", "load"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap()
            .to_string()
    };
    let creds = Credentials {
        access_key_id: field("aws_access_key_id"),
        secret_access_key: zeroize::Zeroizing::new(field("aws_secret_access_key")),
        session_token: None,
    };
    let mut servers = vec![];
    let mut addrs = vec![];
    for _ in 0..nservers {
        let mut server = Command::new(bin)
            .args(["--kms", &ks, "kms", "serve", "--listen", "127.0.0.1:0"])
            // one principal is the whole load: lift its per-principal bounds
            .args([
                "--max-rate",
                "100000000",
                "--max-request-bytes",
                "100000000000",
            ])
            .env("KMSFS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        addrs.push(
            line.trim()
                .strip_prefix("listening on ")
                .unwrap()
                .to_string(),
        );
        servers.push(server);
    }
    let url = format!("http://{}", addrs[0]);
    let client = || {
        RemoteKms::new(
            &url,
            "us-east-1",
            creds.clone(),
            None,
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let c = client();
    let (key, ctx, blob) = fixture::key_and_blob(&c, "load");
    println!(
        "{threads} client threads, {secs} s per operation, {nservers} server(s) {addrs:?}, store {} (audit on: every record durable, group commit)",
        std::env::var("KMSFS_STORE").unwrap_or_else(|_| "sqlite (default)".into())
    );
    for (name, decrypt) in [("GenerateDataKey", false), ("Decrypt", true)] {
        let stop = Instant::now() + Duration::from_secs(secs);
        let key = Arc::new(key.clone());
        let body = if decrypt {
            serde_json::to_vec(&DecryptRequest {
                ciphertext_blob: blob.clone(),
                encryption_context: Some(ctx.clone()),
                key_id: None,
                encryption_algorithm: None,
                ..Default::default()
            })
            .unwrap()
        } else {
            serde_json::to_vec(&GenerateDataKeyRequest {
                key_id: (*key).clone(),
                key_spec: Some("AES_256".into()),
                encryption_context: Some(ctx.clone()),
                ..Default::default()
            })
            .unwrap()
        };
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (addr, creds, body) =
                    (addrs[t % nservers].clone(), creds.clone(), body.clone());
                std::thread::spawn(move || {
                    let mut c = Raw::new(&addr, creds);
                    let mut lat = vec![];
                    while Instant::now() < stop {
                        let t = Instant::now();
                        assert_eq!(c.call(name, &body), 200);
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<Duration> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        lat.sort();
        println!(
            "{name:<16} {:>8.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            lat.len() as f64 / secs as f64,
            lat[lat.len() / 2].as_secs_f64() * 1e3,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
        );
    }
    if nservers > 1 {
        // Failover: clients naming every server (RemoteKms, as mounts do); the first
        // server is killed (SIGKILL) halfway through.
        let all: String = addrs
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let stop = Instant::now() + Duration::from_secs(secs);
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (all, creds, key, ctx) = (all.clone(), creds.clone(), key.clone(), ctx.clone());
                std::thread::spawn(move || {
                    let c = RemoteKms::new(&all, "us-east-1", creds, None, Duration::from_secs(2))
                        .unwrap();
                    let (mut ok, mut failed, mut worst) = (0u64, 0u64, Duration::ZERO);
                    while Instant::now() < stop {
                        let t = Instant::now();
                        let r = c.generate_data_key(GenerateDataKeyRequest {
                            key_id: key.clone(),
                            key_spec: Some("AES_256".into()),
                            encryption_context: Some(ctx.clone()),
                            ..Default::default()
                        });
                        worst = worst.max(t.elapsed());
                        if r.is_ok() {
                            ok += 1
                        } else {
                            failed += 1
                        }
                    }
                    (ok, failed, worst)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs) / 2);
        let _ = servers[0].kill();
        let killed = Instant::now();
        let (mut ok, mut failed, mut worst) = (0, 0, Duration::ZERO);
        for h in hs {
            let (o, f, w) = h.join().unwrap();
            ok += o;
            failed += f;
            worst = worst.max(w);
        }
        let _ = killed;
        println!(
            "failover (server 1 of {nservers} killed at {:.1} s): {ok} GenerateDataKey answered, {failed} failed, longest request {:.1} ms",
            secs as f64 / 2.0,
            worst.as_secs_f64() * 1e3
        );
    }
    for mut server in servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    let v = Command::new(bin)
        .args(["--kms", &ks, "audit", "verify"])
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&v.stdout).trim());
}
