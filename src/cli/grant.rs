//! `kmsfs grant ...` (library calls and printing).

use anyhow::{bail, Result};

use super::GrantCmd;
use crate::kms::{
    CreateGrantRequest, EncryptionContext, GrantConstraints, KmsLocation, ListGrantsRequest,
    RetireGrantRequest, RevokeGrantRequest,
};

/// KEY=VALUE pairs.
pub(super) fn pairs(items: &[String]) -> Result<Option<EncryptionContext>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut m = EncryptionContext::new();
    for i in items {
        let Some((k, v)) = i.split_once('=') else {
            bail!("{i:?}: expected KEY=VALUE");
        };
        m.insert(k.to_string(), v.to_string());
    }
    Ok(Some(m))
}

pub(super) fn run(kms_arg: Option<&str>, cmd: GrantCmd) -> Result<()> {
    let kms = KmsLocation::resolve(kms_arg)?.open(false)?;
    match cmd {
        GrantCmd::Create {
            key,
            grantee,
            operations,
            retiring,
            name,
            subset,
            equals,
        } => {
            let (subset, equals) = (pairs(&subset)?, pairs(&equals)?);
            let constraints = (subset.is_some() || equals.is_some()).then_some(GrantConstraints {
                encryption_context_subset: subset,
                encryption_context_equals: equals,
            });
            let r = kms.create_grant(CreateGrantRequest {
                key_id: key,
                grantee_principal: grantee,
                retiring_principal: retiring,
                operations,
                constraints,
                name,
                ..Default::default()
            })?;
            println!("grant id {}", r.grant_id);
            println!("grant token {}", r.grant_token);
        }
        GrantCmd::List { key } => {
            let mut marker = None;
            loop {
                let r = kms.list_grants(ListGrantsRequest {
                    key_id: key.clone(),
                    marker,
                    ..Default::default()
                })?;
                for g in r.grants {
                    println!(
                        "{}\t{}\t{}\t{}",
                        g.grant_id,
                        g.grantee_principal,
                        g.operations.join(","),
                        g.name.unwrap_or_default()
                    );
                }
                if !r.truncated {
                    break;
                }
                marker = r.next_marker;
            }
        }
        GrantCmd::Retire { token, key, id } => kms.retire_grant(RetireGrantRequest {
            grant_token: token,
            key_id: key,
            grant_id: id,
            ..Default::default()
        })?,
        GrantCmd::Revoke { key, id } => kms.revoke_grant(RevokeGrantRequest {
            key_id: key,
            grant_id: id,
            ..Default::default()
        })?,
    }
    Ok(())
}
