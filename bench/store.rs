//! CreateKey latency as the store grows, on the engine `KMSFS_STORE` names (default: SQLite
//! in a temp dir; `bench/store.sh` runs both engines side by side, starting PostgreSQL).
//! `cargo bench --bench store [-- SIZE...]` (default 1000 10000 100000): the store is filled
//! to each size in one commit (`bench_fill`), then 200 CreateKeys are timed one by one.
use std::time::Instant;

use kmsfs::kms::local::LocalKms;
use kmsfs::kms::*;

#[path = "fixture.rs"]
mod fixture;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    fixture::throwaway_keystore();
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open(&dir.path().join("ks"), true).unwrap();
    let engine = std::env::var("KMSFS_STORE")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("postgres") {
                "postgresql"
            } else {
                "sqlite"
            }
        })
        .unwrap_or("sqlite");
    let like = kms
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let mut have = 1;
    for n in sizes {
        if n > have {
            let t = Instant::now();
            kms.bench_fill(&like, n - have).unwrap();
            eprintln!("filled to {n} keys in {:.1} s", t.elapsed().as_secs_f64());
            have = n;
        }
        let mut lat: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                kms.create_key(CreateKeyRequest::default()).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        have += 200;
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{engine} CreateKey at {n} keys: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            lat[100], lat[180], lat[198]
        );
    }
}
