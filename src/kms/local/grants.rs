//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, and
//! what a grant allows. Authorisation is: an explicit deny in the key policy wins; then a
//! policy allow, or a grant to the caller for that operation whose constraints the
//! request's encryption context meets. Grants take effect at once; a grant token is
//! accepted when it names a live grant.

use super::*;
use crate::kms::policy::Decision;

/// What a grant can name: an operation of the table (`kms::Op`), or one side of ReEncrypt
/// (a policy action, not an operation of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantOp {
    Op(Op),
    ReEncryptFrom,
    ReEncryptTo,
}

impl GrantOp {
    fn name(self) -> &'static str {
        match self {
            GrantOp::Op(o) => o.name(),
            GrantOp::ReEncryptFrom => "ReEncryptFrom",
            GrantOp::ReEncryptTo => "ReEncryptTo",
        }
    }
}

use GrantOp::{ReEncryptFrom, ReEncryptTo};
const fn g(o: Op) -> GrantOp {
    GrantOp::Op(o)
}

/// Every key can be described and can carry grants that grant and retire.
const GRANT_ADMIN: [GrantOp; 3] = [g(Op::DescribeKey), g(Op::CreateGrant), g(Op::RetireGrant)];

/// The operations a grant can name, by the kind of key (AWS's lists).
fn grantable(k: &KeyRecord) -> Vec<GrantOp> {
    let mut ops = match (k.spec.as_str(), k.usage.as_str()) {
        (SYMMETRIC_DEFAULT, _) => vec![
            g(Op::Encrypt),
            g(Op::Decrypt),
            g(Op::GenerateDataKey),
            g(Op::GenerateDataKeyWithoutPlaintext),
            ReEncryptFrom,
            ReEncryptTo,
            g(Op::GenerateDataKeyPair),
            g(Op::GenerateDataKeyPairWithoutPlaintext),
        ],
        (_, ENCRYPT_DECRYPT) => vec![
            g(Op::Encrypt),
            g(Op::Decrypt),
            ReEncryptFrom,
            ReEncryptTo,
            g(Op::GetPublicKey),
        ],
        (_, KEY_AGREEMENT) => vec![g(Op::DeriveSharedSecret), g(Op::GetPublicKey)],
        (_, ENCAPSULATE_DECAPSULATE) => {
            vec![g(Op::Encapsulate), g(Op::Decapsulate), g(Op::GetPublicKey)]
        }
        (_, SIGN_VERIFY) => vec![g(Op::Sign), g(Op::Verify), g(Op::GetPublicKey)],
        _ => vec![g(Op::GenerateMac), g(Op::VerifyMac)],
    };
    ops.extend(GRANT_ADMIN);
    ops
}

/// Operations that take an encryption context: the only ones a constrained grant can name.
const CONTEXT_OPS: [GrantOp; 10] = [
    g(Op::Encrypt),
    g(Op::Decrypt),
    g(Op::GenerateDataKey),
    g(Op::GenerateDataKeyWithoutPlaintext),
    ReEncryptFrom,
    ReEncryptTo,
    g(Op::GenerateDataKeyPair),
    g(Op::GenerateDataKeyPairWithoutPlaintext),
    g(Op::CreateGrant),
    g(Op::RetireGrant),
];

/// Does the grant record name an operation that allows `action`?
fn names(g: &GrantRecord, action: &str) -> bool {
    g.operations
        .iter()
        .any(|o| action.strip_prefix("kms:") == Some(o.as_str()))
}

/// Does the request's encryption context meet the grant's constraints?
fn meets(c: &Option<GrantConstraints>, ctx: Option<&EncryptionContext>) -> bool {
    let Some(c) = c else { return true };
    let empty = EncryptionContext::new();
    let ctx = ctx.unwrap_or(&empty);
    if let Some(eq) = &c.encryption_context_equals {
        if eq != ctx {
            return false;
        }
    }
    if let Some(sub) = &c.encryption_context_subset {
        if !sub.iter().all(|(k, v)| ctx.get(k) == Some(v)) {
            return false;
        }
    }
    true
}

fn entry(me: &LocalKms, s: &Store, id: &str, g: &GrantRecord) -> GrantListEntry {
    GrantListEntry {
        key_id: me.arn_id(s, &g.key_id),
        grant_id: id.to_string(),
        name: g.name.clone(),
        creation_date: g.created,
        grantee_principal: g.grantee.clone(),
        retiring_principal: g.retiring.clone(),
        issuing_account: format!(
            "arn:aws:iam::{}:root",
            s.keys
                .get(&g.key_id)
                .map_or(me.e.account.as_str(), |k| me.owner(k))
        ),
        operations: g.operations.clone(),
        constraints: g.constraints.clone(),
    }
}

impl LocalKms {
    /// Does a grant let the caller perform `action` (`kms:OP`) on key `id`?
    pub(super) fn granted(
        &self,
        store: &Store,
        id: &str,
        action: &str,
        ctx: Option<&EncryptionContext>,
    ) -> bool {
        store.grants.values().any(|g| {
            g.key_id == id
                && self.who().is(&g.grantee)
                && names(g, action)
                && meets(&g.constraints, ctx)
        })
    }

    /// Grant tokens must name live grants (at most 10).
    pub(super) fn check_grant_tokens(&self, tokens: &Option<Vec<String>>) -> KmsResult<()> {
        let tokens = tokens.as_deref().unwrap_or_default();
        if tokens.is_empty() {
            return Ok(());
        }
        if tokens.len() > 10 {
            return Err(KmsError::validation("at most 10 GrantTokens"));
        }
        let s = self.snapshot()?;
        for t in tokens {
            if !s.grants.values().any(|g| &g.token == t) {
                return Err(KmsError::new(
                    ErrorCode::InvalidGrantTokenException,
                    "The grant token is not valid.",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn do_create_grant(
        &self,
        req: CreateGrantRequest,
    ) -> KmsResult<CreateGrantResponse> {
        self.check_grant_tokens(&req.grant_tokens)?;
        self.run(Op::CreateGrant.name(), |info| {
            if let Some(c) = &req.constraints {
                check_context(c.encryption_context_subset.as_ref())?;
                check_context(c.encryption_context_equals.as_ref())?;
            }
            self.mutate(Op::CreateGrant.name(), info, |s, info| {
                let id = self.resolve_as(s, &req.key_id, true)?;
                let k = &s.keys[&id];
                info.key(self.arn(k), k.versions.get(k.current as usize));
                let ops = validate_grant(k, &req)?;
                // Allowed by the policy, or by a grant with CreateGrant that covers every
                // operation asked for under the same constraints.
                let caller = &self.caller.principal;
                let policy = self.policy_of(k)?.decision(self.who(), Op::CreateGrant.action(), None);
                let by_grant = || {
                    s.grants.values().any(|g| {
                        g.key_id == id
                            && self.who().is(&g.grantee)
                            && names(g, Op::CreateGrant.action())
                            && ops.iter().all(|o| g.operations.contains(o))
                            && g.constraints == req.constraints
                    })
                };
                if !(policy == Decision::Allow || policy == Decision::NotMentioned && by_grant()) {
                    return Err(KmsError::new(
                        ErrorCode::AccessDeniedException,
                        format!(
                            "User: {caller} is not authorized to perform: kms:CreateGrant on resource: {}",
                            self.arn_id(s, &id)
                        ),
                    ));
                }
                self.usable(k)?;
                dry_run(req.dry_run)?;
                let new = GrantRecord {
                    key_id: id.clone(),
                    token: hex::encode(random_bytes::<32>()),
                    name: req.name.clone(),
                    grantee: req.grantee_principal.clone(),
                    retiring: req.retiring_principal.clone(),
                    operations: ops,
                    constraints: req.constraints.clone(),
                    issuer: caller.clone(),
                    created: now(),
                };
                // The same name and parameters: the grant already made (idempotent retries).
                if new.name.is_some() {
                    let same = |g: &GrantRecord| {
                        (g.key_id == new.key_id && g.name == new.name && g.grantee == new.grantee)
                            && (g.retiring == new.retiring && g.operations == new.operations)
                            && g.constraints == new.constraints
                    };
                    if let Some((gid, g)) = s.grants.iter().find(|(_, g)| same(g)) {
                        return Ok(CreateGrantResponse {
                            grant_token: g.token.clone(),
                            grant_id: gid.clone(),
                        });
                    }
                }
                self.check_grant_quota(s, &id)?;
                let gid = hex::encode(random_bytes::<32>());
                let r = CreateGrantResponse {
                    grant_token: new.token.clone(),
                    grant_id: gid.clone(),
                };
                s.grants.insert(gid, new);
                Ok(r)
            })
        })
    }

    pub(super) fn do_list_grants(&self, req: ListGrantsRequest) -> KmsResult<ListGrantsResponse> {
        self.run(Op::ListGrants.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::ListGrants.action(), None, info)?;
            let all: Vec<GrantListEntry> = s
                .grants
                .iter()
                .filter(|(gid, g)| {
                    g.key_id == k.id
                        && req.grant_id.as_ref().is_none_or(|w| w == *gid)
                        && req
                            .grantee_principal
                            .as_ref()
                            .is_none_or(|w| *w == g.grantee)
                })
                .map(|(gid, g)| entry(self, &s, gid, g))
                .collect();
            let (grants, next) = super::operations::paginate(&all, req.limit, &req.marker)?;
            Ok(ListGrantsResponse {
                grants,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_list_retirable_grants(
        &self,
        req: ListRetirableGrantsRequest,
    ) -> KmsResult<ListGrantsResponse> {
        self.run(Op::ListRetirableGrants.name(), |_| {
            let caller = &self.caller.principal;
            // No IAM here: a principal may list the grants it may retire, nobody else's.
            if !self.who().is(&req.retiring_principal) {
                return Err(KmsError::new(
                    ErrorCode::AccessDeniedException,
                    format!(
                        "User: {caller} is not authorized to list the grants {} may retire",
                        req.retiring_principal
                    ),
                ));
            }
            let s = self.snapshot()?;
            let all: Vec<GrantListEntry> = s
                .grants
                .iter()
                .filter(|(_, g)| {
                    self.foreign_region().is_none()
                        && g.retiring.as_deref().is_some_and(|r| self.who().is(r))
                })
                .map(|(gid, g)| entry(self, &s, gid, g))
                .collect();
            let (grants, next) = super::operations::paginate(&all, req.limit, &req.marker)?;
            Ok(ListGrantsResponse {
                grants,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_retire_grant(&self, req: RetireGrantRequest) -> KmsResult<()> {
        self.run(Op::RetireGrant.name(), |info| {
            self.mutate(Op::RetireGrant.name(), info, |s, info| {
                let gid = match (&req.grant_token, &req.key_id, &req.grant_id) {
                    (Some(t), _, _) => s
                        .grants
                        .iter()
                        // (a request signed for another region sees none of this region's)
                        .find(|(_, g)| &g.token == t && self.foreign_region().is_none())
                        .map(|(gid, _)| gid.clone())
                        .ok_or_else(|| {
                            KmsError::new(
                                ErrorCode::InvalidGrantTokenException,
                                "The grant token is not valid.",
                            )
                        })?,
                    (None, Some(key), Some(gid)) => {
                        let id = self.resolve_as(s, key, true)?;
                        match s.grants.get(gid) {
                            Some(g) if g.key_id == id => gid.clone(),
                            _ => {
                                return Err(KmsError::new(
                                    ErrorCode::InvalidGrantIdException,
                                    format!(
                                        "Grant {gid} does not exist on {}",
                                        self.arn_id(s, &id)
                                    ),
                                ))
                            }
                        }
                    }
                    _ => {
                        return Err(KmsError::validation(
                            "RetireGrant needs GrantToken, or KeyId and GrantId",
                        ))
                    }
                };
                let g = &s.grants[&gid];
                info.key(self.arn_id(s, &g.key_id), None);
                let caller = &self.caller.principal;
                let may = g.retiring.as_deref().is_some_and(|r| self.who().is(r))
                    || (self.who().is(&g.grantee) && names(g, Op::RetireGrant.action()))
                    || &g.issuer == caller;
                if !may {
                    return Err(KmsError::new(
                        ErrorCode::AccessDeniedException,
                        format!("User: {caller} may not retire grant {gid}"),
                    ));
                }
                dry_run(req.dry_run)?;
                s.grants.remove(&gid);
                Ok(())
            })
        })
    }

    pub(super) fn do_revoke_grant(&self, req: RevokeGrantRequest) -> KmsResult<()> {
        self.run(Op::RevokeGrant.name(), |info| {
            self.mutate(Op::RevokeGrant.name(), info, |s, info| {
                let id = self
                    .authorized(s, &req.key_id, Op::RevokeGrant.action(), None, info)?
                    .id
                    .clone();
                match s.grants.get(&req.grant_id) {
                    Some(g) if g.key_id == id => {}
                    _ => {
                        return Err(KmsError::new(
                            ErrorCode::InvalidGrantIdException,
                            format!(
                                "Grant {} does not exist on {}",
                                req.grant_id,
                                self.arn_id(s, &id)
                            ),
                        ))
                    }
                }
                dry_run(req.dry_run)?;
                s.grants.remove(&req.grant_id);
                Ok(())
            })
        })
    }
}

/// The request's operations, checked against what the key can do (sorted, unique).
fn validate_grant(k: &KeyRecord, req: &CreateGrantRequest) -> KmsResult<Vec<String>> {
    let bad = |m: String| Err(KmsError::validation(m));
    if req.grantee_principal.is_empty() || req.grantee_principal.len() > 256 {
        return bad("GranteePrincipal must be 1..256 characters".into());
    }
    if req
        .retiring_principal
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 256)
    {
        return bad("RetiringPrincipal must be 1..256 characters".into());
    }
    if let Some(n) = &req.name {
        if n.is_empty()
            || n.len() > 256
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
        {
            return bad(format!("Name {n:?} must be 1..256 of [a-zA-Z0-9:/_-]"));
        }
    }
    if req.operations.is_empty() {
        return bad("Operations must name at least one operation".into());
    }
    let allowed = grantable(k);
    let mut ops: Vec<GrantOp> = vec![];
    for o in &req.operations {
        let Some(op) = allowed.iter().copied().find(|a| a.name() == o) else {
            return bad(format!(
                "Operation {o} is not valid for a {} {} key",
                k.spec, k.usage
            ));
        };
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    ops.sort_by_key(|o| o.name());
    if let Some(c) = &req.constraints {
        if c.encryption_context_equals.is_some() && c.encryption_context_subset.is_some() {
            return bad(
                "Constraints take EncryptionContextEquals or EncryptionContextSubset, not both"
                    .into(),
            );
        }
        if let Some(o) = ops.iter().find(|o| !CONTEXT_OPS.contains(o)) {
            return bad(format!(
                "Operation {} takes no encryption context, so a grant with Constraints cannot name it",
                o.name()
            ));
        }
    }
    Ok(ops.iter().map(|o| o.name().to_string()).collect())
}
