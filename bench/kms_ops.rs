//! Audited operations per second of the embedded KMS (every record durable, group commit).
//! `cargo bench --bench kms_ops [-- THREADS SECONDS]`
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsfs::kms::local::LocalKms;
use kmsfs::kms::*;

#[path = "fixture.rs"]
mod fixture;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    fixture::throwaway_keystore();
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(&dir.path().join("ks"), true).unwrap());
    let (key, ctx, blob) = fixture::key_and_blob(&*kms, "bench");
    for (name, decrypt) in [("GenerateDataKey", false), ("Decrypt", true)] {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut lat = vec![];
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (kms, key, ctx, blob, done) = (
                    kms.clone(),
                    key.clone(),
                    ctx.clone(),
                    blob.clone(),
                    done.clone(),
                );
                std::thread::spawn(move || {
                    let mut l = vec![];
                    while Instant::now() < stop {
                        let t = Instant::now();
                        if decrypt {
                            kms.decrypt(DecryptRequest {
                                ciphertext_blob: blob.clone(),
                                encryption_context: Some(ctx.clone()),
                                key_id: None,
                                encryption_algorithm: None,
                                ..Default::default()
                            })
                            .unwrap();
                        } else {
                            kms.generate_data_key(GenerateDataKeyRequest {
                                key_id: key.clone(),
                                key_spec: Some("AES_256".into()),
                                encryption_context: Some(ctx.clone()),
                                ..Default::default()
                            })
                            .unwrap();
                        }
                        l.push(t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    l
                })
            })
            .collect();
        for h in hs {
            lat.extend(h.join().unwrap());
        }
        lat.sort();
        let n = done.load(Ordering::Relaxed);
        println!(
            "{name:<16} {threads} threads: {:>8.0} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  (audited, fsync per batch)",
            n as f64 / secs as f64,
            lat[lat.len() / 2].as_secs_f64() * 1e6,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e6
        );
    }
    let rep = kms.audit().verify().unwrap();
    println!("audit log verified: {} records", rep.records);
}
