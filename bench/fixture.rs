//! Set-up shared by the KMS benchmarks (included with `#[path]`).
use kmsfs::kms::*;

/// A new key, an encryption context naming `fs`, and one data key wrapped under both:
/// what GenerateDataKey and Decrypt are then timed with.
#[allow(dead_code)]
pub fn key_and_blob<K: Kms + ?Sized>(kms: &K, fs: &str) -> (String, EncryptionContext, Vec<u8>) {
    let key = kms
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let ctx: EncryptionContext = [("kmsfs:fs".to_string(), fs.to_string())]
        .into_iter()
        .collect();
    let blob = kms
        .generate_data_key(GenerateDataKeyRequest {
            key_id: key.clone(),
            key_spec: Some("AES_256".into()),
            encryption_context: Some(ctx.clone()),
            ..Default::default()
        })
        .unwrap()
        .ciphertext_blob;
    (key, ctx, blob)
}

/// A benchmark's throwaway keystore keeps its root key in the clear (seal none) unless
/// KMSFS_SEAL says otherwise: nothing in it outlives the run. Call first, single-threaded.
#[allow(dead_code)]
pub fn throwaway_keystore() {
    if std::env::var_os("KMSFS_SEAL").is_none() {
        std::env::set_var("KMSFS_SEAL", "none");
    }
}
