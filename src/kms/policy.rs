//! Key policies: a strict subset of the AWS key policy language. Unknown fields, effects,
//! operators or condition keys are rejected with a precise message rather than ignored.
//!
//! Supported: `Version`, `Id`, `Statement[]` of `{Sid?, Effect: Allow|Deny,
//! Principal: "*" | {"AWS": NAME | [NAME...]}, Action: "kms:Op" | [...] (wildcards `*`, `?`),
//! Resource: "*" | ["*"], Condition?: {StringEquals|StringLike: {"kms:EncryptionContext:KEY": V | [V...]}}}`.
//! Evaluation: an explicit Deny wins; otherwise an Allow must match; otherwise deny.
//!
//! Principals: a name (`alice`), `arn:aws:iam::ACCOUNT:user/NAME` or `…:role/NAME` (the
//! principal NAME, if it belongs to ACCOUNT), and an account itself
//! (`arn:aws:iam::ACCOUNT:root` or the bare 12 digits). There is no IAM here to delegate
//! to, so an account root means **every principal of that account** — what AWS's default
//! key policy grants the account's IAM users once IAM policies allow them.

use serde::Deserialize;
use serde_json::Value;

use super::{EncryptionContext, ErrorCode, KmsError, KmsResult};

/// Who is asking: a principal's name in an account.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The principal's name (`alice`).
    pub name: &'a str,
    /// The principal's 12-digit account.
    pub account: &'a str,
}

impl Who<'_> {
    /// Does `p` (a name, or a user or role ARN) name exactly this principal?
    pub fn is(&self, p: &str) -> bool {
        if p == self.name {
            return true;
        }
        let Some(rest) = p
            .strip_prefix("arn:aws:iam::")
            .and_then(|r| r.strip_prefix(self.account))
        else {
            return false;
        };
        rest.strip_prefix(":user/")
            .or_else(|| rest.strip_prefix(":role/"))
            .is_some_and(|n| n == self.name)
    }

    /// Does the policy principal `p` cover this principal: it names it, or it is the
    /// account (root ARN or account id), which covers every principal of the account.
    pub fn covered_by(&self, p: &str) -> bool {
        self.is(p) || p == self.account || p == format!("arn:aws:iam::{}:root", self.account)
    }
}

#[derive(Debug, Clone, PartialEq)]
/// A parsed and validated key policy.
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    allow: bool,
    /// None = any principal
    principals: Option<Vec<String>>,
    actions: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    like: bool,
    context_key: String,
    values: Vec<String>,
}

fn malformed(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::MalformedPolicyDocumentException, msg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "Version")]
    version: Option<String>,
    #[serde(rename = "Id")]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid")]
    _sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: String,
    #[serde(rename = "Principal")]
    principal: Value,
    #[serde(rename = "Action")]
    action: Value,
    #[serde(rename = "Resource")]
    resource: Value,
    #[serde(rename = "Condition", default)]
    condition: Option<serde_json::Map<String, Value>>,
}

fn strings(v: &Value, what: &str) -> KmsResult<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| malformed(format!("{what} must contain only strings")))
            })
            .collect(),
        _ => Err(malformed(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

/// Glob match with `*` and `?`, case-sensitive (used for actions and StringLike).
///
/// Linear in the text for patterns without `?`: the pattern is split at `*`; the first
/// piece must start the text, the last end it, and each piece between is found at its
/// leftmost place after the previous one (`str::find`, two-way search) — which is
/// exactly glob's meaning. A piece with `?` is searched position by position (its length
/// times the text's). Policies cap a condition value at `MAX_CONDITION_VALUE` and
/// contexts are capped too, so no call is unbounded.
pub fn glob(pattern: &str, s: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('*').collect();
    if pieces.len() == 1 {
        return matches_at(pattern, s).is_some_and(|n| n == s.len());
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    let Some(n) = matches_at(first, s) else {
        return false;
    };
    let rest = &s[n..];
    // The last piece ends the text: take it off first so that no middle piece uses it.
    let Some(cut) = ends_with_q(rest, last) else {
        return false;
    };
    let mut middle = &rest[..cut];
    for piece in &pieces[1..pieces.len() - 1] {
        if piece.is_empty() {
            continue;
        }
        match find_q(middle, piece) {
            Some(end) => middle = &middle[end..],
            None => return false,
        }
    }
    true
}

/// If `piece` (`?` = any one character) matches a prefix of `s`: that prefix's length.
fn matches_at(piece: &str, s: &str) -> Option<usize> {
    let mut it = s.char_indices();
    for p in piece.chars() {
        let (_, c) = it.next()?;
        if p != '?' && p != c {
            return None;
        }
    }
    Some(it.next().map_or(s.len(), |(i, _)| i))
}

/// If `piece` matches a suffix of `s`: where that suffix starts.
fn ends_with_q(s: &str, piece: &str) -> Option<usize> {
    let n = piece.chars().count();
    let start = if n == 0 {
        s.len()
    } else {
        s.char_indices().rev().nth(n - 1)?.0
    };
    matches_at(piece, &s[start..]).filter(|&m| start + m == s.len())?;
    Some(start)
}

/// The end of the leftmost match of `piece` in `s`.
fn find_q(s: &str, piece: &str) -> Option<usize> {
    if !piece.contains('?') {
        return s.find(piece).map(|i| i + piece.len());
    }
    s.char_indices()
        .find_map(|(i, _)| matches_at(piece, &s[i..]).map(|n| i + n))
}

/// The longest condition value (a StringLike pattern or a StringEquals string) a policy
/// may hold.
pub const MAX_CONDITION_VALUE: usize = 1024;

impl Policy {
    /// Parses a key policy (hostile input: bounded, strict, AWS's rules).
    pub fn parse(text: &str) -> KmsResult<Policy> {
        if text.len() > 32 * 1024 {
            return Err(malformed("policy is larger than 32 KiB"));
        }
        let raw: RawPolicy = serde_json::from_str(text)
            .map_err(|e| malformed(format!("policy is not valid: {e}")))?;
        if let Some(v) = &raw.version {
            if v != "2012-10-17" && v != "2008-10-17" {
                return Err(malformed(format!("unsupported policy Version {v:?}")));
            }
        }
        let raw_statements: Vec<Value> = match raw.statement {
            Value::Array(a) => a,
            v @ Value::Object(_) => vec![v],
            _ => return Err(malformed("Statement must be an object or a list")),
        };
        if raw_statements.is_empty() {
            return Err(malformed("Statement is empty"));
        }
        let mut statements = vec![];
        for (i, v) in raw_statements.into_iter().enumerate() {
            let s: RawStatement =
                serde_json::from_value(v).map_err(|e| malformed(format!("Statement[{i}]: {e}")))?;
            let allow = match s.effect.as_str() {
                "Allow" => true,
                "Deny" => false,
                e => {
                    return Err(malformed(format!(
                        "Statement[{i}]: Effect {e:?} is not Allow or Deny"
                    )))
                }
            };
            let principals = match &s.principal {
                Value::String(x) if x == "*" => None,
                Value::Object(m) => {
                    if let Some(k) = m.keys().find(|k| *k != "AWS") {
                        return Err(malformed(format!(
                            "Statement[{i}]: Principal type {k:?} is not supported (use \"AWS\")"
                        )));
                    }
                    let names = strings(
                        m.get("AWS").ok_or_else(|| {
                            malformed(format!("Statement[{i}]: Principal needs \"AWS\""))
                        })?,
                        "Principal.AWS",
                    )?;
                    if names.iter().any(|n| n == "*") {
                        None
                    } else {
                        Some(names)
                    }
                }
                _ => {
                    return Err(malformed(format!(
                        "Statement[{i}]: Principal must be \"*\" or {{\"AWS\": ...}}"
                    )))
                }
            };
            // Action names are case-insensitive in AWS: kept lower-cased. A pattern that
            // names no KMS action (a typo such as kms:Decrytp) is refused rather than
            // silently matching nothing — a Deny that denies nothing is worse than an error.
            let actions: Vec<String> = strings(&s.action, "Action")?
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect();
            for a in &actions {
                if !(a == "*" || KMS_ACTIONS.iter().any(|k| glob(a, &k.to_ascii_lowercase()))) {
                    return Err(malformed(format!(
                        "Statement[{i}]: Action {a:?} matches no KMS action"
                    )));
                }
            }
            let resources = strings(&s.resource, "Resource")?;
            if resources.iter().any(|r| r != "*") {
                return Err(malformed(format!(
                    "Statement[{i}]: Resource must be \"*\" in a key policy"
                )));
            }
            let mut conditions = vec![];
            for (op, body) in s.condition.iter().flatten() {
                let like = match op.as_str() {
                    "StringEquals" => false,
                    "StringLike" => true,
                    o => {
                        return Err(malformed(format!(
                            "Statement[{i}]: condition operator {o:?} is not supported (StringEquals, StringLike)"
                        )))
                    }
                };
                let m = body
                    .as_object()
                    .ok_or_else(|| malformed(format!("Statement[{i}]: {op} must be an object")))?;
                for (k, v) in m {
                    let context_key = k
                        .strip_prefix("kms:EncryptionContext:")
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| {
                            malformed(format!(
                                "Statement[{i}]: condition key {k:?} is not supported (kms:EncryptionContext:KEY)"
                            ))
                        })?;
                    let values = strings(v, k)?;
                    if let Some(long) = values.iter().find(|v| v.len() > MAX_CONDITION_VALUE) {
                        return Err(malformed(format!(
                            "Statement[{i}]: a {op} value of {} characters is longer than {MAX_CONDITION_VALUE}",
                            long.len()
                        )));
                    }
                    conditions.push(Condition {
                        like,
                        context_key: context_key.to_string(),
                        values,
                    });
                }
            }
            statements.push(Statement {
                allow,
                principals,
                actions,
                conditions,
            });
        }
        Ok(Policy { statements })
    }

    /// Does the policy allow `who` to perform `action` (e.g. `kms:Decrypt`) with
    /// this encryption context?
    pub fn allows(&self, who: Who, action: &str, ctx: Option<&EncryptionContext>) -> bool {
        self.decision(who, action, ctx) == Decision::Allow
    }

    /// What the policy says: an explicit deny wins over any allow; no matching statement
    /// leaves the decision to grants.
    pub fn decision(&self, who: Who, action: &str, ctx: Option<&EncryptionContext>) -> Decision {
        let mut d = Decision::NotMentioned;
        for s in &self.statements {
            if !s.matches(who, action, ctx) {
                continue;
            }
            if !s.allow {
                return Decision::Deny;
            }
            d = Decision::Allow;
        }
        d
    }
}

/// A key policy's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it and none denies it.
    Allow,
    /// A statement denies it (whatever else allows it).
    Deny,
    /// No statement matches (a grant may still allow it).
    NotMentioned,
}

impl Statement {
    fn matches(&self, who: Who, action: &str, ctx: Option<&EncryptionContext>) -> bool {
        if let Some(ps) = &self.principals {
            if !ps.iter().any(|p| who.covered_by(p)) {
                return false;
            }
        }
        let action = action.to_ascii_lowercase();
        if !self.actions.iter().any(|a| a == "*" || glob(a, &action)) {
            return false;
        }
        self.conditions.iter().all(|c| {
            let Some(v) = ctx.and_then(|m| m.get(&c.context_key)) else {
                return false;
            };
            c.values
                .iter()
                .any(|want| if c.like { glob(want, v) } else { want == v })
        })
    }
}

/// The policy a key gets when none is given: the creating principal may do everything.
/// Every action of AWS KMS's key policies (so that a policy written for AWS parses here,
/// including actions of operations this KMS does not offer yet).
pub const KMS_ACTIONS: &[&str] = &[
    "kms:CancelKeyDeletion",
    "kms:ConnectCustomKeyStore",
    "kms:CreateAlias",
    "kms:CreateCustomKeyStore",
    "kms:CreateGrant",
    "kms:CreateKey",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DeleteCustomKeyStore",
    "kms:DeleteImportedKeyMaterial",
    "kms:DeriveSharedSecret",
    "kms:Encapsulate",
    "kms:Decapsulate",
    "kms:DescribeCustomKeyStores",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:DisconnectCustomKeyStore",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateMac",
    "kms:GenerateRandom",
    "kms:GetKeyLastUsage",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:GetParametersForImport",
    "kms:GetPublicKey",
    "kms:ImportKeyMaterial",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListKeys",
    "kms:ListResourceTags",
    "kms:ListRetirableGrants",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:ReplicateKey",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:Sign",
    "kms:SynchronizeMultiRegionKey",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateCustomKeyStore",
    "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion",
    "kms:Verify",
    "kms:VerifyMac",
];

/// The default key policy: `admin` may do everything.
pub fn default_policy(admin: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "kmsfs-default",
        "Statement": [{
            "Sid": "Enable key administration and use by its creator",
            "Effect": "Allow",
            "Principal": {"AWS": admin},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Who<'_> {
        Who {
            name,
            account: "111122223333",
        }
    }

    fn ctx(k: &str, v: &str) -> EncryptionContext {
        [(k.to_string(), v.to_string())].into_iter().collect()
    }

    #[test]
    fn allow_deny_and_conditions() {
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Principal":{"AWS":["alice","bob"]},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*",
               "Condition":{"StringLike":{"kms:EncryptionContext:kmsfs:fs":"tree-*"}}},
              {"Effect":"Deny","Principal":{"AWS":"bob"},"Action":"kms:Decrypt","Resource":"*"},
              {"Effect":"Allow","Principal":"*","Action":"kms:DescribeKey","Resource":"*"}]}"#,
        )
        .unwrap();
        let c = ctx("kmsfs:fs", "tree-1");
        assert!(p.allows(who("alice"), "kms:Decrypt", Some(&c)));
        assert!(p.allows(
            who("alice"),
            "kms:GenerateDataKeyWithoutPlaintext",
            Some(&c)
        ));
        assert!(!p.allows(who("alice"), "kms:Decrypt", Some(&ctx("kmsfs:fs", "other"))));
        assert!(!p.allows(who("alice"), "kms:Decrypt", None));
        assert!(
            !p.allows(who("bob"), "kms:Decrypt", Some(&c)),
            "explicit deny wins"
        );
        assert!(p.allows(who("bob"), "kms:GenerateDataKey", Some(&c)));
        assert!(
            !p.allows(who("carol"), "kms:Decrypt", Some(&c)),
            "no match means deny"
        );
        assert!(p.allows(who("carol"), "kms:DescribeKey", None));
        assert!(!p.allows(who("alice"), "kms:Encrypt", Some(&c)));
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        for (bad, why) in [
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Extra":1}]}"#,
                "Extra",
            ),
            (
                r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
                "Maybe",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"x"},"Action":"kms:*","Resource":"*"}]}"#,
                "Service",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}]}"#,
                "s3:*",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:x"}]}"#,
                "Resource",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NumericEquals":{}}}]}"#,
                "NumericEquals",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:SourceIp":"1"}}}]}"#,
                "aws:SourceIp",
            ),
            (r#"{"Version":"2020-01-01","Statement":[]}"#, "Version"),
            ("not json", "not valid"),
        ] {
            let e = Policy::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedPolicyDocumentException);
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }

    /// On e663627 a Deny on "kms:decrypt" denied nothing (case-sensitive match), and any
    /// "kms:..." string was accepted.
    #[test]
    fn actions_match_case_insensitively_and_unknown_ones_are_refused() {
        let p = Policy::parse(
            r#"{"Statement":[
              {"Effect":"Allow","Principal":"*","Action":"KMS:*","Resource":"*"},
              {"Effect":"Deny","Principal":{"AWS":"bob"},"Action":"kms:decrypt","Resource":"*"},
              {"Effect":"Deny","Principal":{"AWS":"carol"},"Action":"kms:generatedatakey*","Resource":"*"}]}"#,
        )
        .unwrap();
        assert!(
            !p.allows(who("bob"), "kms:Decrypt", None),
            "lower-case Deny applies"
        );
        assert!(p.allows(who("bob"), "kms:Encrypt", None));
        assert!(!p.allows(who("carol"), "kms:GenerateDataKeyWithoutPlaintext", None));
        for bad in ["kms:Decrytp", "kms:", "kms:Foo*", "kms:?"] {
            let text = format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"{bad}","Resource":"*"}}]}}"#
            );
            let e = Policy::parse(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedPolicyDocumentException, "{bad}");
            assert!(e.message.contains("matches no KMS action"), "{}", e.message);
        }
        assert!(Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":["kms:Sign","kms:CreateGrant","kms:Get*"],"Resource":"*"}]}"#
        )
        .is_ok());
    }

    #[test]
    fn globbing() {
        assert!(glob(
            "kms:GenerateDataKey*",
            "kms:GenerateDataKeyWithoutPlaintext"
        ));
        assert!(glob("kms:*", "kms:Decrypt"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*x*y", "zzxzzy"));
        assert!(!glob("kms:Decrypt", "kms:DecryptX"));
        assert!(glob("*", ""));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
        assert!(glob("é?*ü", "éxü"));
        assert!(glob("*?", "x"));
        assert!(!glob("*?", ""));
    }

    /// The classic backtracking glob, as a reference.
    fn reference(p: &str, s: &str) -> bool {
        let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
        fn go(p: &[char], s: &[char]) -> bool {
            match p.first() {
                None => s.is_empty(),
                Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
                Some(c) => !s.is_empty() && (*c == '?' || *c == s[0]) && go(&p[1..], &s[1..]),
            }
        }
        go(&p, &s)
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_the_reference(p in "[ab*?é]{0,8}", s in "[abé]{0,10}") {
            proptest::prop_assert_eq!(glob(&p, &s), reference(&p, &s), "{:?} {:?}", p, s);
        }
    }

    #[test]
    fn long_condition_values_are_refused() {
        let doc = |v: &str| {
            serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*",
                "Action": "kms:Decrypt", "Resource": "*",
                "Condition": {"StringLike": {"kms:EncryptionContext:k": v}}}]})
            .to_string()
        };
        assert!(Policy::parse(&doc(&"*a".repeat(512))).is_ok());
        let e = Policy::parse(&doc(&"*a".repeat(513))).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedPolicyDocumentException);
    }

    #[test]
    fn arn_principals_and_the_account_root() {
        let doc = |principal: &str| {
            serde_json::json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": principal}, "Action": "kms:Decrypt", "Resource": "*"}]})
            .to_string()
        };
        // AWS's default key policy names the account root: every principal of the account.
        let root = Policy::parse(&doc("arn:aws:iam::111122223333:root")).unwrap();
        assert!(root.allows(who("alice"), "kms:Decrypt", None));
        assert!(root.allows(who("bob"), "kms:Decrypt", None));
        assert!(!root.allows(who("bob"), "kms:Encrypt", None));
        let bare = Policy::parse(&doc("111122223333")).unwrap();
        assert!(bare.allows(who("bob"), "kms:Decrypt", None));
        // Another account's root or users match nobody here.
        for other in [
            "arn:aws:iam::999999999999:root",
            "999999999999",
            "arn:aws:iam::999999999999:user/alice",
        ] {
            let p = Policy::parse(&doc(other)).unwrap();
            assert!(!p.allows(who("alice"), "kms:Decrypt", None), "{other}");
        }
        // A user or role ARN names that one principal, not a prefix of it.
        let user = Policy::parse(&doc("arn:aws:iam::111122223333:user/alice")).unwrap();
        assert!(user.allows(who("alice"), "kms:Decrypt", None));
        assert!(!user.allows(who("alice2"), "kms:Decrypt", None));
        assert!(!user.allows(who("bob"), "kms:Decrypt", None));
        let role = Policy::parse(&doc("arn:aws:iam::111122223333:role/alice")).unwrap();
        assert!(role.allows(who("alice"), "kms:Decrypt", None));
        assert!(
            !Policy::parse(&doc("arn:aws:iam::111122223333:user/alicex"))
                .unwrap()
                .allows(who("alice"), "kms:Decrypt", None)
        );
    }

    #[test]
    fn default_policy_allows_creator_only() {
        let p = Policy::parse(&default_policy("local-admin")).unwrap();
        assert!(p.allows(who("local-admin"), "kms:PutKeyPolicy", None));
        assert!(!p.allows(who("mallory"), "kms:Decrypt", None));
    }
}
