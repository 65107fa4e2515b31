//! criterion micro-benchmarks of the hot paths: chunk seal/open per AEAD backend (4 KiB
//! and 64 KiB), header encode/decode, and opening a header whose key is cached.
//! `cargo bench --bench micro`
use std::sync::Arc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kmsfs::crypto::{random_nonce, Backend, TAG_LEN};
use kmsfs::envelope::Envelope;
use kmsfs::format::{chunk_aad, Header, TreeConfig};
use kmsfs::kms::local::LocalKms;
use kmsfs::kms::{CreateKeyRequest, Kms};

fn chunks(c: &mut Criterion) {
    let key = [7u8; 32];
    let file_id = [1u8; 16];
    let mut g = c.benchmark_group("chunk");
    for (bname, backend) in [("aws-lc", Backend::AwsLc), ("aes-gcm", Backend::RustCrypto)] {
        let aead = backend.key(&key);
        for size in [4096usize, 65536] {
            g.throughput(Throughput::Bytes(size as u64));
            let aad = chunk_aad(&file_id, 3, false);
            let mut buf = vec![0x5au8; size];
            g.bench_with_input(
                BenchmarkId::new(format!("seal/{bname}"), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        let nonce = random_nonce();
                        black_box(aead.seal(&nonce, &aad, &mut buf))
                    })
                },
            );
            // One sealed chunk (ciphertext ‖ tag), re-opened from a fresh copy each time.
            let nonce = random_nonce();
            let mut sealed = vec![0x5au8; size];
            let tag = aead.seal(&nonce, &aad, &mut sealed);
            sealed.extend_from_slice(&tag);
            assert_eq!(sealed.len(), size + TAG_LEN);
            let mut work = sealed.clone();
            g.bench_with_input(
                BenchmarkId::new(format!("open/{bname}"), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&sealed);
                        aead.open(&nonce, &aad, &mut work).expect("authentic chunk");
                    })
                },
            );
        }
    }
    g.finish();
}

/// An envelope over a fresh embedded KMS (audit on, as in a mount).
fn envelope(dir: &std::path::Path) -> Arc<Envelope> {
    // a throwaway keystore: its root key in the clear unless KMSFS_SEAL says otherwise
    if std::env::var_os("KMSFS_SEAL").is_none() {
        std::env::set_var("KMSFS_SEAL", "none");
    }
    let kms = Arc::new(LocalKms::open(&dir.join("keystore"), true).unwrap());
    let arn = kms
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .arn;
    let cfg = TreeConfig::new(4096, vec![arn], None);
    Arc::new(Envelope::new(kms, cfg).with_backend(Backend::AwsLc))
}

fn headers(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let env = envelope(dir.path());
    let (h, _) = env.new_header().unwrap();
    let bytes = h.encode().unwrap();
    let mut g = c.benchmark_group("header");
    g.bench_function("encode", |b| b.iter(|| black_box(h.encode().unwrap())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(Header::decode(black_box(&bytes)).unwrap()))
    });
    env.open_header(&h).unwrap(); // warm the key cache
    g.bench_function("open-cached-key", |b| {
        b.iter(|| black_box(env.open_header(&h).unwrap()))
    });
    g.finish();
}

/// AWS's model check of a request body (what every server request costs before it is
/// parsed), beside the parse itself.
fn model_check(c: &mut Criterion) {
    use kmsfs::kms::{model, Op};
    let mut g = c.benchmark_group("request");
    let encrypt = br#"{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","Plaintext":"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=","EncryptionContext":{"kmsfs:fs":"0123456789abcdef0123456789abcdef","kmsfs:file":"fedcba9876543210fedcba9876543210"}}"#;
    g.bench_function("model check, Encrypt", |b| {
        b.iter(|| model::check(Op::Encrypt, encrypt).unwrap())
    });
    g.bench_function("parse, Encrypt", |b| {
        b.iter(|| kmsfs::kms::http::parse_request::<kmsfs::kms::EncryptRequest>(encrypt).unwrap())
    });
    g.finish();
}

criterion_group!(benches, chunks, headers, model_check);
criterion_main!(benches);
