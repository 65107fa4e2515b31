use super::*;
use crate::kms::ErrorCode;

fn msg(op: Op, body: &str) -> Option<String> {
    check(op, body.as_bytes()).err().map(|e| {
        assert_eq!(e.code, ErrorCode::ValidationException);
        e.message
    })
}

#[test]
fn values_bounds_and_missing_members_in_aws_words() {
    assert_eq!(
        msg(Op::GenerateDataKey, r#"{"KeyId":"k","NumberOfBytes":1025}"#).unwrap(),
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"
    );
    assert_eq!(
        msg(Op::DescribeKey, "{}").unwrap(),
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
    );
    // A plaintext is measured, never echoed.
    assert_eq!(
        msg(Op::Encrypt, r#"{"KeyId":"k","Plaintext":""}"#).unwrap(),
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    let big = "A".repeat(4100 / 3 * 4 + 4);
    let m = msg(
        Op::Encrypt,
        &format!(r#"{{"KeyId":"","Plaintext":"{big}"}}"#),
    )
    .unwrap();
    assert!(m.starts_with("2 validation errors detected: Value '' at 'keyId' failed to satisfy constraint: Member must have length greater than or equal to 1; Value at 'plaintext' "), "{m}");
    // A ciphertext is shown as AWS's Java buffer.
    assert_eq!(
        msg(Op::Decrypt, r#"{"CiphertextBlob":""}"#).unwrap(),
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'ciphertextBlob' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
}

#[test]
fn enums_patterns_lists_and_nested_members() {
    assert_eq!(
        msg(Op::GenerateDataKey, r#"{"KeyId":"k","KeySpec":"AES_512"}"#).unwrap(),
        "1 validation error detected: Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
    );
    assert_eq!(
        msg(Op::CreateAlias, r#"{"AliasName":"alias/a b","TargetKeyId":"k"}"#).unwrap(),
        "1 validation error detected: Value 'alias/a b' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
    );
    let tokens: Vec<String> = (0..11).map(|i| format!("\"t{i}\"")).collect();
    let m = msg(
        Op::Encrypt,
        &format!(
            r#"{{"KeyId":"k","Plaintext":"AA==","GrantTokens":[{}]}}"#,
            tokens.join(",")
        ),
    )
    .unwrap();
    assert_eq!(m, "1 validation error detected: Value '[t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10]' at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10");
    let long = "k".repeat(129);
    assert_eq!(
        msg(Op::TagResource, &format!(r#"{{"KeyId":"k","Tags":[{{"TagKey":"a","TagValue":""}},{{"TagKey":"{long}","TagValue":""}}]}}"#)).unwrap(),
        format!("1 validation error detected: Value '{long}' at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128")
    );
    // Java's \w is ASCII: a policy name of another script does not match [\w]+.
    assert!(msg(Op::GetKeyPolicy, r#"{"KeyId":"k","PolicyName":"défaut"}"#).is_some());
    assert!(msg(Op::GetKeyPolicy, r#"{"KeyId":"k","PolicyName":"default"}"#).is_none());
}

#[test]
fn well_formed_requests_and_type_errors_pass_to_the_parser() {
    assert!(msg(
        Op::Encrypt,
        r#"{"KeyId":"alias/x","Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b"}}"#
    )
    .is_none());
    assert!(msg(Op::ListKeys, "").is_none());
    // Wrong JSON types are the parser's SerializationException, even beside a violation.
    assert!(msg(Op::GenerateDataKey, r#"{"KeyId":"","NumberOfBytes":"32"}"#).is_none());
    assert!(msg(Op::Encrypt, r#"{"KeyId":"k","Plaintext":"not base64!"}"#).is_none());
    assert!(msg(Op::Encrypt, "not json").is_none());
}

#[test]
fn every_operation_has_its_input_shape() {
    for op in Op::ALL {
        assert!(
            MODEL.operations.contains_key(op.name()),
            "{} is not in shapes.json (regenerate with tools/kms_model.py)",
            op.name()
        );
    }
}
