//! Grants: who they let in, under which constraints, and who may end them.

use super::tests::{code, kms};
use super::*;

fn as_(k: &LocalKms, who: &str) -> LocalKms {
    k.with_caller(Caller {
        principal: who.into(),
        source: "test".into(),
        region: None,
        account: None,
    })
}

fn ctx(pairs: &[(&str, &str)]) -> Option<EncryptionContext> {
    Some(
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

fn encrypt(k: &LocalKms, id: &str, c: Option<EncryptionContext>) -> KmsResult<EncryptResponse> {
    k.encrypt(EncryptRequest {
        key_id: id.into(),
        plaintext: Secret(b"x".to_vec()),
        encryption_context: c,
        ..Default::default()
    })
}

#[test]
fn a_grant_lets_its_grantee_in_within_its_constraints_until_it_is_retired() {
    let (_d, admin) = kms();
    use ErrorCode::*;
    let id = admin
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let bob = as_(&admin, "bob");
    let carol = as_(&admin, "carol");
    assert_eq!(
        code(encrypt(&bob, &id, ctx(&[("app", "x")]))),
        AccessDeniedException
    );
    let g = admin
        .create_grant(CreateGrantRequest {
            key_id: id.clone(),
            grantee_principal: "arn:aws:iam::000000000000:user/bob".into(),
            retiring_principal: Some("carol".into()),
            operations: vec!["Encrypt".into(), "Decrypt".into()],
            constraints: Some(GrantConstraints {
                encryption_context_subset: ctx(&[("app", "x")]),
                encryption_context_equals: None,
            }),
            ..Default::default()
        })
        .unwrap();
    let blob = encrypt(&bob, &id, ctx(&[("app", "x"), ("more", "y")]))
        .unwrap()
        .ciphertext_blob;
    assert_eq!(
        code(encrypt(&bob, &id, ctx(&[("app", "z")]))),
        AccessDeniedException
    );
    assert_eq!(code(encrypt(&bob, &id, None)), AccessDeniedException);
    let dec = bob
        .decrypt(DecryptRequest {
            ciphertext_blob: blob,
            encryption_context: ctx(&[("app", "x"), ("more", "y")]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dec.plaintext.0, b"x");
    // Only what the grant names: no DescribeKey, no GenerateDataKey.
    assert_eq!(
        code(bob.describe_key(DescribeKeyRequest { key_id: id.clone() })),
        AccessDeniedException
    );
    assert_eq!(
        code(encrypt(&carol, &id, ctx(&[("app", "x")]))),
        AccessDeniedException
    );
    let listed = admin
        .list_grants(ListGrantsRequest {
            key_id: id.clone(),
            ..Default::default()
        })
        .unwrap()
        .grants;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].grant_id, g.grant_id);
    assert_eq!(listed[0].operations, ["Decrypt", "Encrypt"]);
    assert_eq!(
        code(bob.list_grants(ListGrantsRequest {
            key_id: id.clone(),
            ..Default::default()
        })),
        AccessDeniedException
    );
    let retirable = |who: &LocalKms, of: &str| {
        who.list_retirable_grants(ListRetirableGrantsRequest {
            retiring_principal: of.into(),
            ..Default::default()
        })
    };
    assert_eq!(retirable(&carol, "carol").unwrap().grants.len(), 1);
    assert_eq!(code(retirable(&bob, "carol")), AccessDeniedException);
    // The grantee may not retire it (RetireGrant is not among its operations).
    let retire = |who: &LocalKms| {
        who.retire_grant(RetireGrantRequest {
            grant_token: Some(g.grant_token.clone()),
            ..Default::default()
        })
    };
    assert_eq!(code(retire(&bob)), AccessDeniedException);
    retire(&carol).unwrap();
    assert_eq!(
        code(encrypt(&bob, &id, ctx(&[("app", "x")]))),
        AccessDeniedException
    );
    assert_eq!(code(retire(&carol)), InvalidGrantTokenException);
}

#[test]
fn an_explicit_deny_wins_over_a_grant() {
    let (_d, admin) = kms();
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":"local-admin"},"Action":"kms:*","Resource":"*"},
        {"Effect":"Deny","Principal":{"AWS":"bob"},"Action":"kms:Encrypt","Resource":"*"}]}"#;
    let id = admin
        .create_key(CreateKeyRequest {
            policy: Some(policy.into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    admin
        .create_grant(CreateGrantRequest {
            key_id: id.clone(),
            grantee_principal: "bob".into(),
            operations: vec!["Encrypt".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        code(encrypt(&as_(&admin, "bob"), &id, None)),
        ErrorCode::AccessDeniedException
    );
}

#[test]
fn grant_names_tokens_validation_revocation_and_grants_that_grant() {
    let (_d, admin) = kms();
    use ErrorCode::*;
    let id = admin
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let req = |ops: &[&str], name: Option<&str>| CreateGrantRequest {
        key_id: id.clone(),
        grantee_principal: "bob".into(),
        operations: ops.iter().map(|o| o.to_string()).collect(),
        name: name.map(str::to_string),
        ..Default::default()
    };
    let a = admin
        .create_grant(req(&["Encrypt"], Some("nightly")))
        .unwrap();
    let b = admin
        .create_grant(req(&["Encrypt"], Some("nightly")))
        .unwrap();
    assert_eq!(
        a.grant_id, b.grant_id,
        "same name and parameters: the same grant"
    );
    let c = admin
        .create_grant(req(&["Decrypt"], Some("nightly")))
        .unwrap();
    assert_ne!(a.grant_id, c.grant_id);
    assert_eq!(
        code(admin.create_grant(req(&["Sign"], None))),
        ValidationException
    );
    assert_eq!(
        code(admin.create_grant(req(&[], None))),
        ValidationException
    );
    assert_eq!(
        code(admin.create_grant(req(&["Encrypt"], Some("bad name!")))),
        ValidationException
    );
    let constrained = CreateGrantRequest {
        constraints: Some(GrantConstraints {
            encryption_context_equals: ctx(&[("a", "b")]),
            encryption_context_subset: None,
        }),
        ..req(&["DescribeKey"], None)
    };
    assert_eq!(code(admin.create_grant(constrained)), ValidationException);
    // Grant tokens: a live grant's token is accepted, anything else refused.
    let bob = as_(&admin, "bob");
    bob.encrypt(EncryptRequest {
        key_id: id.clone(),
        plaintext: Secret(b"x".to_vec()),
        grant_tokens: Some(vec![a.grant_token.clone()]),
        ..Default::default()
    })
    .unwrap();
    let forged = bob.encrypt(EncryptRequest {
        key_id: id.clone(),
        plaintext: Secret(b"x".to_vec()),
        grant_tokens: Some(vec!["forged".into()]),
        ..Default::default()
    });
    assert_eq!(code(forged), InvalidGrantTokenException);
    // A grantee holding CreateGrant may pass on what it has, nothing more.
    let d = admin
        .create_grant(req(&["CreateGrant", "Decrypt", "Encrypt"], None))
        .unwrap();
    let onward = |ops: &[&str]| {
        bob.create_grant(CreateGrantRequest {
            grantee_principal: "dave".into(),
            ..req(ops, None)
        })
    };
    onward(&["Decrypt"]).unwrap();
    assert_eq!(
        code(onward(&["Decrypt", "GenerateDataKey"])),
        AccessDeniedException
    );
    // Revocation needs kms:RevokeGrant from the key policy.
    let revoke = |who: &LocalKms| {
        who.revoke_grant(RevokeGrantRequest {
            key_id: id.clone(),
            grant_id: d.grant_id.clone(),
            ..Default::default()
        })
    };
    assert_eq!(code(revoke(&bob)), AccessDeniedException);
    revoke(&admin).unwrap();
    assert_eq!(code(revoke(&admin)), InvalidGrantIdException);
}
