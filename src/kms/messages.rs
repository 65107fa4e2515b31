//! AWS's words: the code and message of every refusal AWS KMS gives for a reason the AWS
//! API names, in one table, so each operation says the same thing the same way and a
//! change of wording is one edit. (Refusals of our own making — a damaged store row, an
//! unreachable proxy — say what happened where they happen.)

use super::{ErrorCode, KmsError};

/// One broken model constraint: where, the value as AWS prints it (None for a sensitive
/// member, which AWS does not echo), and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    at: String,
    value: Shown,
    rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    Null,
    Hidden,
    Value(String),
}

impl Violation {
    /// A required member that is missing.
    pub fn null(at: impl Into<String>) -> Violation {
        Violation {
            at: at.into(),
            value: Shown::Null,
            rule: "Member must not be null".into(),
        }
    }
    /// `value` at `at` breaks `rule`.
    pub fn value(
        at: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Violation {
        Violation::maybe(at, Some(value.into()), rule)
    }
    /// As [`Violation::value`]; `None` for a value AWS does not echo.
    pub fn maybe(
        at: impl Into<String>,
        value: Option<String>,
        rule: impl Into<String>,
    ) -> Violation {
        Violation {
            at: at.into(),
            value: value.map_or(Shown::Hidden, Shown::Value),
            rule: rule.into(),
        }
    }
}

/// The model's ValidationException: `1 validation error detected: Value '1025' at
/// 'numberOfBytes' failed to satisfy constraint: Member must have value less than or
/// equal to 1024`, violations joined by `; `.
pub fn model_violations(found: &[Violation]) -> KmsError {
    let each: Vec<String> = found
        .iter()
        .map(|v| {
            let value = match &v.value {
                Shown::Null => "Value null".to_string(),
                Shown::Hidden => "Value".to_string(),
                Shown::Value(s) => format!("Value '{s}'"),
            };
            format!(
                "{value} at '{}' failed to satisfy constraint: {}",
                v.at, v.rule
            )
        })
        .collect();
    let n = found.len();
    let s = if n == 1 { "error" } else { "errors" };
    KmsError::validation(format!("{n} validation {s} detected: {}", each.join("; ")))
}

/// One model violation (the form the operations use for a bound they check themselves).
pub fn model_violation(at: &str, value: impl Into<String>, rule: impl Into<String>) -> KmsError {
    model_violations(&[Violation::value(at, value, rule)])
}

/// A key id, ARN or alias that names no key here (NotFoundException).
pub fn key_not_found(key: &str) -> KmsError {
    KmsError::new(
        ErrorCode::NotFoundException,
        format!("Key '{key}' does not exist"),
    )
}

/// Something that is not a key id, key ARN or alias (NotFoundException).
pub fn invalid_key_id(key: &str) -> KmsError {
    KmsError::new(
        ErrorCode::NotFoundException,
        format!("Invalid keyId '{key}'"),
    )
}

/// An alias that does not exist (NotFoundException), named by its ARN.
pub fn alias_not_found(alias_arn: &str) -> KmsError {
    KmsError::new(
        ErrorCode::NotFoundException,
        format!("Alias {alias_arn} is not found."),
    )
}

/// A disabled key (DisabledException).
pub fn disabled(arn: &str) -> KmsError {
    KmsError::new(ErrorCode::DisabledException, format!("{arn} is disabled."))
}

/// A key pending deletion (KMSInvalidStateException).
pub fn pending_deletion(arn: &str) -> KmsError {
    KmsError::new(
        ErrorCode::KMSInvalidStateException,
        format!("{arn} is pending deletion."),
    )
}

/// A key waiting for its imported material (KMSInvalidStateException).
pub fn pending_import(arn: &str) -> KmsError {
    KmsError::new(
        ErrorCode::KMSInvalidStateException,
        format!("{arn} is pending import."),
    )
}

/// A key in a state the operation does not accept (KMSInvalidStateException).
pub fn invalid_state(arn: &str, state: &str) -> KmsError {
    KmsError::new(
        ErrorCode::KMSInvalidStateException,
        format!("{arn} is {state}"),
    )
}

/// A key used for an operation its usage does not allow (InvalidKeyUsageException).
pub fn key_usage(arn: &str, usage: &str, op: &str) -> KmsError {
    KmsError::new(
        ErrorCode::InvalidKeyUsageException,
        format!("{arn} key usage is {usage} which is not valid for {op}."),
    )
}

/// A plaintext longer than an RSA key encrypts with OAEP (ValidationException).
pub fn too_large_for(algorithm: &str, spec: &str, max: usize) -> KmsError {
    KmsError::validation(format!(
        "Algorithm {algorithm} and key spec {spec} cannot encrypt data larger than {max} bytes."
    ))
}

/// A tag key given twice in one request (TagException).
pub fn duplicate_tag_keys() -> KmsError {
    KmsError::new(ErrorCode::TagException, "Duplicate tag keys")
}

/// More than 50 tags on a key (TagException).
pub fn too_many_tags() -> KmsError {
    KmsError::new(ErrorCode::TagException, "Too many tags")
}

/// A tag key in AWS's reserved `aws:` namespace (TagException).
pub fn reserved_tag() -> KmsError {
    KmsError::new(
        ErrorCode::TagException,
        "Tags beginning with aws: are reserved",
    )
}

/// On-demand rotations beyond the per-key limit (LimitExceededException).
pub fn on_demand_rotation_limit(arn: &str, limit: usize) -> KmsError {
    KmsError::new(
        ErrorCode::LimitExceededException,
        format!("You have exceeded the maximum number of on-demand rotations ({limit}) for {arn}."),
    )
}

/// A resource count over one of AWS's documented quotas (LimitExceededException).
pub fn quota(what: &str, limit: usize) -> KmsError {
    KmsError::new(
        ErrorCode::LimitExceededException,
        format!("The request was rejected because a quota was exceeded: at most {limit} {what}"),
    )
}

/// `DryRun: true` on a request that would have succeeded (DryRunOperationException).
pub fn dry_run() -> KmsError {
    KmsError::new(
        ErrorCode::DryRunOperationException,
        "The request would have succeeded, but the DryRun option is set.",
    )
}

/// A ciphertext that does not open (InvalidCiphertextException): damaged, another key's,
/// or under another encryption context — AWS does not say which.
pub fn invalid_ciphertext() -> KmsError {
    KmsError::new(ErrorCode::InvalidCiphertextException, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_form_counts_and_joins() {
        let one = model_violation(
            "numberOfBytes",
            "1025",
            "Member must have value less than or equal to 1024",
        );
        assert_eq!(
            one.message,
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"
        );
        let two = model_violations(&[
            Violation::null("keyId"),
            Violation::maybe(
                "plaintext",
                None,
                "Member must have length less than or equal to 4096",
            ),
        ]);
        assert_eq!(
            two.message,
            "2 validation errors detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null; Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
        );
        assert_eq!(two.code, ErrorCode::ValidationException);
    }
}
