//! Arbitrary-input property tests of every parser that takes attacker input: the file
//! header and `kmsfs.json` (whoever writes the backing tree), the KMS ciphertext blob,
//! key policies and SigV4 requests (network clients). 10,000 cases each (the seeds are
//! random per run; a failure prints a minimal case): no panic, no hang, and inputs that
//! are mutations of valid ones are refused unless they still mean the same thing.

use proptest::prelude::*;

use kmsfs::format::{Header, TreeConfig};
use kmsfs::kms::local::LocalKms;
use kmsfs::kms::policy::Policy;
use kmsfs::kms::sigv4;
use kmsfs::kms::{CreateKeyRequest, DecryptRequest, EncryptRequest, EncryptionContext, Kms};

const CASES: u32 = 10_000;

/// A byte string: random, or a valid `seed` with a few bytes flipped, cut or extended.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = seed.len().max(1);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2 * n),
        (
            proptest::collection::vec((0..n, any::<u8>()), 1..4),
            0..n + 8,
            proptest::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(move |(flips, cut, tail)| {
                let mut b = seed.clone();
                for (i, x) in flips {
                    if i < b.len() {
                        b[i] ^= x | 1;
                    }
                }
                b.truncate(cut);
                b.extend(tail);
                b
            }),
    ]
}

fn sample_header() -> Vec<u8> {
    Header {
        suite: kmsfs::format::SUITE_AES256GCM_HKDF_SHA256,
        chunk_shift: 12,
        file_id: [7; 16],
        mac: [9; 32],
        wraps: vec![kmsfs::format::Wrap {
            key_arn: "arn:aws:kms:local:000000000000:key/1b4e28ba-2fa1-11d2-883f-0016d3cca427"
                .into(),
            material_id: "ab".repeat(32),
            blob: vec![3; 100],
        }],
    }
    .encode()
    .unwrap()
}

fn sample_config() -> String {
    serde_json::to_string(&TreeConfig::new(
        4096,
        vec!["arn:aws:kms:local:000000000000:key/1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()],
        Some("local:/var/lib/kmsfs".into()),
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn file_header(bytes in mutated(sample_header())) {
        if let Ok(h) = Header::decode(&bytes) {
            // whatever decodes re-encodes to the same bytes: no two readings of one header
            prop_assert_eq!(h.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn tree_config(bytes in mutated(sample_config().into_bytes())) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(c) = TreeConfig::parse(&text) {
            prop_assert!(!c.keys.is_empty() && c.keys.len() <= kmsfs::format::MAX_WRAPS);
            prop_assert!(kmsfs::format::chunk_shift(c.chunk_size).is_ok());
        }
    }

    #[test]
    fn key_policy(text in prop_oneof![
        ".{0,200}",
        policy_json().prop_map(|v| v.to_string()),
    ]) {
        let _ = Policy::parse(&text);
    }

    #[test]
    fn sigv4_authorization_and_request(
        auth in prop_oneof![
            ".{0,300}",
            (
                "[A-Za-z0-9]{0,140}",
                "[0-9]{0,10}",
                "[a-z0-9-]{0,40}",
                "[a-z]{0,5}",
                "[a-z;-]{0,80}",
                "[0-9a-fA-F]{0,70}"
            ).prop_map(|(a, d, r, s, h, g)| format!(
                "AWS4-HMAC-SHA256 Credential={a}/{d}/{r}/{s}/aws4_request, SignedHeaders={h}, Signature={g}"
            )),
        ],
        headers in proptest::collection::vec(("[a-z-]{1,20}", ".{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(a) = sigv4::parse_authorization(&auth) {
            let headers: Vec<(String, String)> = headers;
            let req = sigv4::Request { method: "POST", path: "/", query: "", headers: &headers, body: &body };
            // random signatures never verify
            prop_assert!(sigv4::verify(&req, &a, "secret", 1_700_000_000).is_err());
        }
    }
}

/// JSON shaped like a policy, with random values where it matters.
fn policy_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::json!("*")),
        Just(serde_json::json!("kms:*")),
        Just(serde_json::json!("kms:Decrypt")),
        ".{0,20}".prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("Effect".to_string()),
                    Just("Principal".to_string()),
                    Just("Action".to_string()),
                    Just("Resource".to_string()),
                    Just("Condition".to_string()),
                    Just("StringEquals".to_string()),
                    Just("AWS".to_string()),
                    "[a-zA-Z:]{0,12}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::vec(value, 0..3)
        .prop_map(|st| serde_json::json!({"Version": "2012-10-17", "Statement": st}))
}

/// The KMS ciphertext blob, through Decrypt of the embedded KMS (every request is an
/// audited operation, so this runs the whole refusal path, audit record included).
#[test]
fn kms_ciphertext_blob() {
    let d = tempfile::tempdir().unwrap();
    // A throwaway keystore: its root key in the clear, chosen here.
    kmsfs::seal::allow_clear_by_default();
    let kms = LocalKms::open(&d.path().join("ks"), true).unwrap();
    let key = kms
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let mut ctx = EncryptionContext::new();
    ctx.insert("a".into(), "b".into());
    let valid = kms
        .encrypt(EncryptRequest {
            key_id: key,
            plaintext: kmsfs::kms::Secret(b"data key".to_vec()),
            encryption_context: Some(ctx.clone()),
            encryption_algorithm: None,
            ..Default::default()
        })
        .unwrap()
        .ciphertext_blob;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    runner
        .run(&mutated(valid.clone()), |blob| {
            let r = kms.decrypt(DecryptRequest {
                ciphertext_blob: blob.clone(),
                encryption_context: Some(ctx.clone()),
                key_id: None,
                encryption_algorithm: None,
                ..Default::default()
            });
            // only the untouched blob opens
            prop_assert_eq!(r.is_ok(), blob == valid);
            Ok(())
        })
        .unwrap();
}
