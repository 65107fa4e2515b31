//! Accounts: a principal belongs to one; its keys and aliases are that account's; another
//! account's key answers it only by ARN, for the operations AWS allows across accounts,
//! when the key's policy names it or its account.

use super::tests::{code, kms};
use super::*;
use ErrorCode::*;

const HOME: &str = "111122223333";
const OTHER: &str = "444455556666";

fn server() -> (tempfile::TempDir, LocalKms) {
    let (d, k) = kms();
    let k = k.serving("us-east-1", HOME).unwrap();
    k.create_principal("alice", None).unwrap();
    k.create_principal("bob", Some(OTHER)).unwrap();
    (d, k)
}

fn as_(k: &LocalKms, who: &str, account: Option<&str>) -> LocalKms {
    k.with_caller(Caller {
        principal: who.into(),
        source: "test".into(),
        region: Some("us-east-1".into()),
        account: account.map(str::to_string),
    })
}

fn encrypt(k: &LocalKms, key: &str) -> KmsResult<EncryptResponse> {
    k.encrypt(EncryptRequest {
        key_id: key.into(),
        plaintext: Secret(b"x".to_vec()),
        ..Default::default()
    })
}

fn policy(extra_principal: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "alice"}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": extra_principal},
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:EnableKey", "kms:CreateGrant"],
             "Resource": "*"}
        ]
    })
    .to_string()
}

#[test]
fn another_accounts_key_answers_by_arn_when_its_policy_names_the_account() {
    let (_d, k) = server();
    let alice = as_(&k, "alice", None);
    let bob = as_(&k, "bob", Some(OTHER));
    let md = alice
        .create_key(CreateKeyRequest {
            policy: Some(policy(&format!("arn:aws:iam::{OTHER}:root"))),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    assert_eq!(
        md.arn,
        format!("arn:aws:kms:us-east-1:{HOME}:key/{}", md.key_id)
    );
    alice
        .create_alias(CreateAliasRequest {
            alias_name: "alias/shared".into(),
            target_key_id: md.key_id.clone(),
        })
        .unwrap();
    // By ARN: allowed (Encrypt is a cross-account operation and the policy names bob's
    // account); the blob then opens for bob without a KeyId (the blob names the key).
    let blob = encrypt(&bob, &md.arn).unwrap();
    assert_eq!(blob.key_id, md.arn);
    let out = bob
        .decrypt(DecryptRequest {
            ciphertext_blob: blob.ciphertext_blob.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.plaintext.0, b"x");
    assert_eq!(out.key_id, md.arn);
    // The alias ARN of alice's account reaches it too; the alias *name* is bob's own
    // account's, where it does not exist.
    encrypt(&bob, &format!("arn:aws:kms:us-east-1:{HOME}:alias/shared")).unwrap();
    let e = encrypt(&bob, "alias/shared").unwrap_err();
    assert_eq!(e.code, NotFoundException);
    assert!(e.message.contains(OTHER), "{e}");
    // The bare key id means bob's account: no such key there.
    assert_eq!(code(encrypt(&bob, &md.key_id)), NotFoundException);
    // EnableKey is not a cross-account operation, whatever the policy says.
    assert_eq!(
        code(bob.enable_key(KeyIdRequest {
            key_id: md.arn.clone()
        })),
        NotFoundException
    );
    // Bob's account sees none of alice's keys or aliases.
    let keys = bob.list_keys(ListKeysRequest::default()).unwrap().keys;
    assert!(keys.is_empty(), "{keys:?}");
    let aliases = bob
        .list_aliases(ListAliasesRequest::default())
        .unwrap()
        .aliases;
    assert!(aliases.is_empty(), "{aliases:?}");
}

#[test]
fn a_policy_naming_no_principal_of_the_callers_account_denies() {
    let (_d, k) = server();
    let alice = as_(&k, "alice", None);
    let bob = as_(&k, "bob", Some(OTHER));
    // The default policy: alice (the creator) only.
    let plain = alice
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    assert_eq!(code(encrypt(&bob, &plain.arn)), AccessDeniedException);
    // bob by ARN of the wrong account: it names a principal bob of HOME, not him.
    let wrong = alice
        .create_key(CreateKeyRequest {
            policy: Some(policy(&format!("arn:aws:iam::{HOME}:user/bob"))),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    assert_eq!(code(encrypt(&bob, &wrong.arn)), AccessDeniedException);
    // ...and by his own account's user ARN: allowed.
    let right = alice
        .create_key(CreateKeyRequest {
            policy: Some(policy(&format!("arn:aws:iam::{OTHER}:user/bob"))),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    encrypt(&bob, &right.arn).unwrap();
    // The account root of HOME covers alice, not bob.
    let home = alice
        .create_key(CreateKeyRequest {
            policy: Some(policy(&format!("arn:aws:iam::{HOME}:root"))),
            ..Default::default()
        })
        .unwrap()
        .key_metadata;
    assert_eq!(code(encrypt(&bob, &home.arn)), AccessDeniedException);
}

#[test]
fn each_account_has_its_own_keys_and_alias_names() {
    let (_d, k) = server();
    let alice = as_(&k, "alice", None);
    let bob = as_(&k, "bob", Some(OTHER));
    let a = alice
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let b = bob
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    assert_eq!(
        b.arn,
        format!("arn:aws:kms:us-east-1:{OTHER}:key/{}", b.key_id)
    );
    for (who, key) in [(&alice, &a.key_id), (&bob, &b.key_id)] {
        who.create_alias(CreateAliasRequest {
            alias_name: "alias/app".into(),
            target_key_id: key.clone(),
        })
        .unwrap();
    }
    let listed = |who: &LocalKms| {
        let l = who
            .list_aliases(ListAliasesRequest::default())
            .unwrap()
            .aliases;
        l.into_iter()
            .map(|a| (a.alias_name, a.alias_arn, a.target_key_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(&alice),
        vec![(
            "alias/app".to_string(),
            format!("arn:aws:kms:us-east-1:{HOME}:alias/app"),
            a.key_id.clone()
        )]
    );
    assert_eq!(
        listed(&bob),
        vec![(
            "alias/app".to_string(),
            format!("arn:aws:kms:us-east-1:{OTHER}:alias/app"),
            b.key_id.clone()
        )]
    );
    // The same alias name resolves to each caller's own key.
    assert_eq!(encrypt(&alice, "alias/app").unwrap().key_id, a.arn);
    assert_eq!(encrypt(&bob, "alias/app").unwrap().key_id, b.arn);
    let ids = |who: &LocalKms| {
        who.list_keys(ListKeysRequest::default())
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.key_arn)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&alice), vec![a.arn.clone()]);
    assert_eq!(ids(&bob), vec![b.arn.clone()]);
    // A principal's account must be 12 digits.
    assert_eq!(
        code(k.create_principal("eve", Some("12345"))),
        ValidationException
    );
}

/// A custom key store is its account's, as in AWS: another account's principal does not
/// see it, cannot connect, disconnect, update or delete it, nor put a key in it.
#[test]
fn custom_key_stores_are_per_account() {
    let (_d, k) = server();
    let admin = |who: &str, account: Option<&str>| {
        k.with_caller(Caller {
            principal: who.into(),
            // (a local administrator: the XKS admin check passes)
            source: "local:test".into(),
            region: Some("us-east-1".into()),
            account: account.map(str::to_string),
        })
    };
    let (alice, bob) = (admin("alice", None), admin("bob", Some(OTHER)));
    // A store of the home account, as CreateCustomKeyStore leaves it (its proxy is not
    // needed for what is checked here).
    k.mutate("Test", &mut OpInfo::default(), |s, _| {
        s.custom_key_stores.insert(
            "cks-0123456789abcdef0".into(),
            CustomKeyStoreRecord {
                id: "cks-0123456789abcdef0".into(),
                account: None,
                name: "home".into(),
                created: now(),
                endpoint: "http://127.0.0.1:9".into(),
                path: "/kms/xks/v1".into(),
                access_key_id: "AKIAEXAMPLEEXAMPLE01".into(),
                secret: Secret(b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec()),
                connectivity: "PUBLIC_ENDPOINT".into(),
                state: "DISCONNECTED".into(),
                error_code: None,
            },
        );
        Ok(())
    })
    .unwrap();
    let id = "cks-0123456789abcdef0";
    let describe = |c: &LocalKms, id: Option<&str>, name: Option<&str>| {
        c.describe_custom_key_stores(DescribeCustomKeyStoresRequest {
            custom_key_store_id: id.map(Into::into),
            custom_key_store_name: name.map(Into::into),
            ..Default::default()
        })
    };
    assert_eq!(
        describe(&alice, None, None)
            .unwrap()
            .custom_key_stores
            .len(),
        1
    );
    describe(&alice, Some(id), None).unwrap();
    assert!(describe(&bob, None, None)
        .unwrap()
        .custom_key_stores
        .is_empty());
    for r in [
        describe(&bob, Some(id), None).map(|_| ()),
        describe(&bob, None, Some("home")).map(|_| ()),
        bob.connect_custom_key_store(CustomKeyStoreIdRequest {
            custom_key_store_id: id.into(),
        }),
        bob.disconnect_custom_key_store(CustomKeyStoreIdRequest {
            custom_key_store_id: id.into(),
        }),
        bob.update_custom_key_store(UpdateCustomKeyStoreRequest {
            custom_key_store_id: id.into(),
            new_custom_key_store_name: Some("mine now".into()),
            ..Default::default()
        }),
        bob.delete_custom_key_store(CustomKeyStoreIdRequest {
            custom_key_store_id: id.into(),
        }),
        bob.create_key(CreateKeyRequest {
            origin: Some("EXTERNAL_KEY_STORE".into()),
            custom_key_store_id: Some(id.into()),
            xks_key_id: Some("k1".into()),
            ..Default::default()
        })
        .map(|_| ()),
    ] {
        assert_eq!(code(r), CustomKeyStoreNotFoundException);
    }
    // still there, unchanged, for its own account
    let mine = describe(&alice, Some(id), None).unwrap();
    assert_eq!(mine.custom_key_stores[0].custom_key_store_name, "home");
    alice
        .delete_custom_key_store(CustomKeyStoreIdRequest {
            custom_key_store_id: id.into(),
        })
        .unwrap();
}
