//! Sharing a tree by KMS grant (`kmsfs share`): a principal gets two grants on each of
//! the tree's keys, constrained to the tree's encryption contexts: one on `kmsfs:fs = <fs
//! id>`, which every wrap of the tree's file keys carries (read-only: Decrypt; read-write:
//! also Encrypt and GenerateDataKey, for new files and their copies under recovery keys),
//! one on `kmsfs:tree = <fs id>`, which the tree key's wraps carry (Decrypt only: no
//! grantee can wrap a tree key of its own choosing), and for a read-write share one on
//! `kmsfs:tree-w = <fs id>`, the write key's (Decrypt only; a read-only share never holds
//! the write key, so it can make nothing the tree's writers accept). It can then mount this tree, and no
//! other tree wrapped under the same keys: the KMS enforces it, not the file modes.
//! Revoking a share (`--revoke`) also moves the tree to a new tree key
//! (`generation`), which the revoked principal never held.

use serde::Serialize;

use crate::error::{Context, Result};
use crate::kms::{
    CreateGrantRequest, EncryptionContext, GrantConstraints, GrantListEntry, ListGrantsRequest,
    RevokeGrantRequest,
};
use crate::trust::TrustedTree;

/// The operations of a read-only share.
pub const READ_ONLY: &[&str] = &["Decrypt"];
/// The operations of a read-write share.
pub const READ_WRITE: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
];

/// One principal's access to a tree, as its grants say.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Share {
    /// The grantee, as the grants name it.
    pub principal: String,
    /// The operations granted (the union over the tree's keys).
    pub operations: Vec<String>,
    /// (key ARN, grant id) of each grant.
    pub grants: Vec<(String, String)>,
}

/// The encryption-context pair of the tree key's wraps (`crate::trust::tree_context`).
const TREE_PAIR: &str = "kmsfs:tree";
/// The pair of the file keys' wraps.
const FS_PAIR: &str = "kmsfs:fs";
/// The pair of the write key's wraps (`crate::trust::write_context`).
const WRITE_PAIR: &str = "kmsfs:tree-w";

fn constraint(pair: &str, fs_id: &str) -> GrantConstraints {
    let mut ctx = EncryptionContext::new();
    ctx.insert(pair.into(), fs_id.into());
    GrantConstraints {
        encryption_context_subset: Some(ctx),
        encryption_context_equals: None,
    }
}

/// Is this grant bound to the tree `fs_id` (a subset or equals constraint naming it)?
fn for_tree(g: &GrantListEntry, fs_id: &str) -> bool {
    let names = |c: &Option<EncryptionContext>| {
        c.as_ref().is_some_and(|m| {
            [FS_PAIR, TREE_PAIR, WRITE_PAIR]
                .iter()
                .any(|p| m.get(*p).map(String::as_str) == Some(fs_id))
        })
    };
    g.constraints
        .as_ref()
        .is_some_and(|c| names(&c.encryption_context_subset) || names(&c.encryption_context_equals))
}

/// AWS grant names are `[a-zA-Z0-9:/_-]{1,256}`.
fn grant_name(what: &str, fs_id: &str, principal: &str, read_only: bool) -> String {
    let p: String = principal
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ":/_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mode = if read_only { "ro" } else { "rw" };
    format!("kmsfs-{what}-{mode}-{fs_id}-{p}")
        .chars()
        .take(256)
        .collect()
}

/// Every grant of the tree's keys bound to this tree.
fn tree_grants(t: &TrustedTree) -> Result<Vec<(String, GrantListEntry)>> {
    let mut out = vec![];
    for key in &t.cfg.keys {
        let mut marker = None;
        loop {
            let r = t
                .kms
                .list_grants(ListGrantsRequest {
                    key_id: key.clone(),
                    marker,
                    ..Default::default()
                })
                .with_context(|| format!("listing the grants of {key}"))?;
            out.extend(
                r.grants
                    .into_iter()
                    .filter(|g| for_tree(g, &t.cfg.fs_id))
                    .map(|g| (key.clone(), g)),
            );
            match r.next_marker.filter(|_| r.truncated) {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
    }
    Ok(out)
}

/// The principals this tree is shared with.
pub fn shares(t: &TrustedTree) -> Result<Vec<Share>> {
    let mut out: Vec<Share> = vec![];
    for (key, g) in tree_grants(t)? {
        let i = match out.iter().position(|s| s.principal == g.grantee_principal) {
            Some(i) => i,
            None => {
                out.push(Share {
                    principal: g.grantee_principal.clone(),
                    operations: vec![],
                    grants: vec![],
                });
                out.len() - 1
            }
        };
        let s = &mut out[i];
        for op in g.operations {
            if !s.operations.contains(&op) {
                s.operations.push(op);
            }
        }
        s.grants.push((key, g.grant_id));
    }
    for s in &mut out {
        s.operations.sort();
    }
    out.sort_by(|a, b| a.principal.cmp(&b.principal));
    Ok(out)
}

/// Revokes every grant bound to this tree for `principal`; how many there were.
pub fn unshare(t: &TrustedTree, principal: &str) -> Result<usize> {
    let mine: Vec<(String, GrantListEntry)> = tree_grants(t)?
        .into_iter()
        .filter(|(_, g)| g.grantee_principal == principal)
        .collect();
    for (key, g) in &mine {
        t.kms
            .revoke_grant(RevokeGrantRequest {
                key_id: key.clone(),
                grant_id: g.grant_id.clone(),
                ..Default::default()
            })
            .with_context(|| format!("revoking grant {} on {key}", g.grant_id))?;
    }
    Ok(mine.len())
}

/// Shares the tree with `principal`: one grant per key, bound to this tree. A share
/// that changes mode (read-only ↔ read-write) replaces the principal's grants, so that
/// what remains is exactly what was asked for. Returns (key, grant id) pairs.
pub fn share(t: &TrustedTree, principal: &str, read_only: bool) -> Result<Vec<(String, String)>> {
    if t.cfg.public_key_tree() {
        // Its wraps carry no encryption context (KMS has none for RSA), so no grant
        // could be bound to this tree: it would open every tree under the key.
        crate::error::fail!(
            "this tree's keys are RSA keys, whose grants cannot be bound to one tree (no encryption context); share the key itself, or use a tree of symmetric keys"
        );
    }
    let ops: Vec<String> = (if read_only { READ_ONLY } else { READ_WRITE })
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A change of mode shows in the file-key grant (the tree-key grant is Decrypt either way).
    let on_file_keys = |g: &GrantListEntry| {
        g.constraints
            .as_ref()
            .and_then(|c| c.encryption_context_subset.as_ref())
            .is_some_and(|m| m.contains_key("kmsfs:fs"))
    };
    let stale = tree_grants(t)?.into_iter().any(|(_, g)| {
        g.grantee_principal == principal && on_file_keys(&g) && {
            let mut have = g.operations.clone();
            have.sort();
            let mut want = ops.clone();
            want.sort();
            have != want
        }
    });
    if stale {
        unshare(t, principal)?;
    }
    let mut made = vec![];
    for key in &t.cfg.keys {
        let mut grants = vec![
            ("share", "kmsfs:fs", ops.clone()),
            ("tree", TREE_PAIR, vec!["Decrypt".to_string()]),
        ];
        if !read_only {
            // The write key: what authenticates files, node records and directory
            // places. A read-only share never holds it, so it can make nothing the
            // tree's writers accept.
            grants.push(("write", WRITE_PAIR, vec!["Decrypt".to_string()]));
        }
        for (what, pair, ops) in grants {
            let r = t
                .kms
                .create_grant(CreateGrantRequest {
                    key_id: key.clone(),
                    grantee_principal: principal.to_string(),
                    operations: ops,
                    constraints: Some(constraint(pair, &t.cfg.fs_id)),
                    name: Some(grant_name(what, &t.cfg.fs_id, principal, read_only)),
                    ..Default::default()
                })
                .with_context(|| format!("granting {principal} the use of {key}"))?;
            made.push((key.clone(), r.grant_id));
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_constraints() {
        let n = grant_name("share", "abc", "arn:aws:iam::1:user/b.o@b", true);
        assert_eq!(n, "kmsfs-share-ro-abc-arn:aws:iam::1:user/b-o-b");
        let g = |subset: Option<&str>, equals: Option<&str>| GrantListEntry {
            key_id: "k".into(),
            grant_id: "g".into(),
            name: None,
            creation_date: 0.0,
            grantee_principal: "bob".into(),
            retiring_principal: None,
            issuing_account: "a".into(),
            operations: vec![],
            constraints: Some(GrantConstraints {
                encryption_context_subset: subset.map(|v| [("kmsfs:fs".into(), v.into())].into()),
                encryption_context_equals: equals.map(|v| [("kmsfs:fs".into(), v.into())].into()),
            }),
        };
        assert!(for_tree(&g(Some("t1"), None), "t1"));
        assert!(for_tree(&g(None, Some("t1")), "t1"));
        assert!(!for_tree(&g(Some("t2"), None), "t1"));
        assert!(!for_tree(&g(None, None), "t1"));
    }
}
