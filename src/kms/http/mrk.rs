//! The client's multi-Region awareness, as the AWS Encryption SDK's MRK-aware keyrings
//! have it: a data operation naming a multi-Region key by its ARN in another Region is
//! sent for the replica in the client's Region (same key id, same material), and the
//! answer names the ARN the caller asked for. So a tree made in one Region, whose headers
//! name the key's ARN there, mounts through a server of another Region.

use zeroize::Zeroizing;

/// The operations rewritten: those that use a key's material, not those that manage it
/// (a DescribeKey names one Region's key on purpose).
const DATA_OPS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "Sign",
    "Verify",
];

/// The request fields that name a key, as serde writes them.
const KEY_FIELDS: [&str; 3] = [
    "\"KeyId\":\"",
    "\"SourceKeyId\":\"",
    "\"DestinationKeyId\":\"",
];

/// `arn:aws:kms:REGION:ACCOUNT:key/mrk-…` with another Region than `region`: the ARN in
/// `region`.
fn localized(arn: &str, region: &str) -> Option<String> {
    let rest = arn.strip_prefix("arn:aws:kms:")?;
    let (r, rest) = rest.split_once(':')?;
    let (account, res) = rest.split_once(':')?;
    let id = res.strip_prefix("key/")?;
    let is_mrk = id
        .strip_prefix("mrk-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    (is_mrk && r != region).then(|| format!("arn:aws:kms:{region}:{account}:key/{id}"))
}

/// Replaces every whole JSON string `"from"` in `body` by `"to"` (the answer's key fields).
fn replace_strings(body: &[u8], pairs: &[(String, String)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 16));
    let mut i = 0;
    'outer: while i < body.len() {
        if body[i] == b'"' {
            for (from, to) in pairs {
                let pat = from.as_bytes();
                let end = i + 1 + pat.len();
                if end < body.len() && &body[i + 1..end] == pat && body[end] == b'"' {
                    out.push(b'"');
                    out.extend_from_slice(to.as_bytes());
                    out.push(b'"');
                    i = end + 1;
                    continue 'outer;
                }
            }
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

/// The request body to send, and the (sent, asked) ARN pairs to put back in the answer.
pub(super) fn localize(
    op: &str,
    body: Zeroizing<Vec<u8>>,
    region: &str,
) -> (Zeroizing<Vec<u8>>, Vec<(String, String)>) {
    if !DATA_OPS.contains(&op) {
        return (body, vec![]);
    }
    // Only the key fields (serde writes `"KeyId":"…"` without spaces): an ARN inside an
    // encryption context is data, bound as AAD, and is never changed.
    let text = String::from_utf8_lossy(&body);
    let mut pairs: Vec<(String, String)> = vec![];
    for field in [
        "\"KeyId\":\"",
        "\"SourceKeyId\":\"",
        "\"DestinationKeyId\":\"",
    ] {
        for (start, _) in text.match_indices(field) {
            let from = start + field.len();
            let Some(len) = text[from..].find('"') else {
                continue;
            };
            let arn = &text[from..from + len];
            if let Some(l) = localized(arn, region) {
                if !pairs.iter().any(|(a, _)| a == arn) {
                    pairs.push((arn.to_string(), l));
                }
            }
        }
    }
    if pairs.is_empty() {
        return (body, vec![]);
    }
    // Rewritten in the key fields only (a context value equal to the ARN stays as it is).
    let mut sent = Zeroizing::new(text.into_owned());
    for field in KEY_FIELDS {
        for (asked, local) in &pairs {
            let (from, to) = (format!("{field}{asked}\""), format!("{field}{local}\""));
            if sent.contains(&from) {
                // a new buffer; the old one is wiped when dropped (it may hold plaintext)
                sent = Zeroizing::new(sent.replace(&from, &to));
            }
        }
    }
    let sent = Zeroizing::new(std::mem::take(&mut *sent).into_bytes());
    (
        sent,
        pairs
            .into_iter()
            .map(|(asked, sent)| (sent, asked))
            .collect(),
    )
}

/// The answer with the ARNs the caller asked for in place of those sent.
pub(super) fn restore(body: Zeroizing<Vec<u8>>, back: &[(String, String)]) -> Zeroizing<Vec<u8>> {
    if back.is_empty() {
        return body;
    }
    replace_strings(&body, back)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mrk-0123456789abcdef0123456789abcdef";

    #[test]
    fn another_regions_mrk_arn_is_sent_for_this_region_and_answered_as_asked() {
        let a = format!("arn:aws:kms:eu-west-1:111122223333:key/{ID}");
        let b = format!("arn:aws:kms:us-east-1:111122223333:key/{ID}");
        let req = format!(r#"{{"KeyId":"{a}","CiphertextBlob":"AAAA"}}"#);
        let (sent, back) = localize("Decrypt", Zeroizing::new(req.into_bytes()), "us-east-1");
        assert_eq!(
            String::from_utf8(sent.to_vec()).unwrap(),
            format!(r#"{{"KeyId":"{b}","CiphertextBlob":"AAAA"}}"#)
        );
        let answer = format!(r#"{{"KeyId":"{b}","Plaintext":"AAAA"}}"#);
        let got = restore(Zeroizing::new(answer.into_bytes()), &back);
        assert_eq!(
            String::from_utf8(got.to_vec()).unwrap(),
            format!(r#"{{"KeyId":"{a}","Plaintext":"AAAA"}}"#)
        );
    }

    #[test]
    fn a_context_value_equal_to_the_key_arn_is_left_alone() {
        let there = format!("arn:aws:kms:eu-west-1:111122223333:key/{ID}");
        let here = format!("arn:aws:kms:us-east-1:111122223333:key/{ID}");
        let req = format!(r#"{{"KeyId":"{there}","EncryptionContext":{{"k":"{there}"}}}}"#);
        let (sent, _) = localize("Encrypt", Zeroizing::new(req.into_bytes()), "us-east-1");
        assert_eq!(
            String::from_utf8(sent.to_vec()).unwrap(),
            format!(r#"{{"KeyId":"{here}","EncryptionContext":{{"k":"{there}"}}}}"#)
        );
    }

    #[test]
    fn an_arn_in_an_encryption_context_is_data_and_left_alone() {
        let there = format!("arn:aws:kms:eu-west-1:111122223333:key/{ID}");
        let req = format!(r#"{{"EncryptionContext":{{"k":"{there}"}},"CiphertextBlob":"AAAA"}}"#);
        let (sent, back) = localize(
            "Decrypt",
            Zeroizing::new(req.clone().into_bytes()),
            "us-east-1",
        );
        assert_eq!(String::from_utf8(sent.to_vec()).unwrap(), req);
        assert!(back.is_empty());
    }

    #[test]
    fn single_region_keys_management_calls_and_this_region_are_left_alone() {
        let uuid = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let mrk_here = format!("arn:aws:kms:us-east-1:111122223333:key/{ID}");
        let mrk_there = format!("arn:aws:kms:eu-west-1:111122223333:key/{ID}");
        for (op, arn) in [
            ("Decrypt", uuid.to_string()),
            ("Decrypt", mrk_here.clone()),
            ("DescribeKey", mrk_there.clone()),
        ] {
            let req = format!(r#"{{"KeyId":"{arn}"}}"#);
            let (sent, back) = localize(op, Zeroizing::new(req.clone().into_bytes()), "us-east-1");
            assert_eq!(String::from_utf8(sent.to_vec()).unwrap(), req, "{op} {arn}");
            assert!(back.is_empty());
        }
    }
}
