//! STS `GetCallerIdentity` on the KMS endpoint, so AWS tools can learn the ARN they call
//! as (and write it into a key policy). STS speaks AWS's query protocol: a form-encoded
//! body `Action=GetCallerIdentity&Version=2011-06-15`, signed for service `sts`, answered
//! in XML. Nothing else of STS is offered.

use crate::kms::{ErrorCode, KmsError, KmsResult};

/// The content type of STS requests (the query protocol).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// The content type of STS answers.
pub const XML_CONTENT_TYPE: &str = "text/xml";
const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Who the caller is, as STS says it: the principal `name` of `account`, known to the
/// server by the access key id `akid`.
pub struct Identity<'a> {
    /// The principal's name.
    pub name: &'a str,
    /// The account the server answers as.
    pub account: &'a str,
    /// The access key the request was signed with.
    pub akid: &'a str,
}

fn form_value<'b>(body: &'b str, key: &str) -> Option<&'b str> {
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Answers a signed STS request: `GetCallerIdentity`, or InvalidAction.
pub fn answer(body: &[u8], who: &Identity, request_id: &str) -> KmsResult<Vec<u8>> {
    let body = std::str::from_utf8(body)
        .map_err(|_| KmsError::new(ErrorCode::SerializationException, "body is not UTF-8"))?;
    let action = form_value(body, "Action").unwrap_or("");
    if action != "GetCallerIdentity" {
        return Err(KmsError::new(
            ErrorCode::UnknownOperationException,
            format!(
                "STS action {:?} is not supported here (only GetCallerIdentity)",
                action.chars().take(64).collect::<String>()
            ),
        ));
    }
    if let Some(v) = form_value(body, "Version").filter(|v| *v != "2011-06-15") {
        return Err(KmsError::validation(format!(
            "STS version {:?} is not supported (2011-06-15)",
            v.chars().take(32).collect::<String>()
        )));
    }
    Ok(format!(
        "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult>\
         <Arn>arn:aws:iam::{account}:user/{name}</Arn><UserId>{akid}</UserId>\
         <Account>{account}</Account></GetCallerIdentityResult><ResponseMetadata>\
         <RequestId>{request_id}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        account = escape(who.account),
        name = escape(who.name),
        akid = escape(who.akid),
    )
    .into_bytes())
}

/// An error in the query protocol's shape.
pub fn error_body(e: &KmsError, request_id: &str) -> String {
    let code = match e.code {
        ErrorCode::UnknownOperationException => "InvalidAction",
        ErrorCode::ValidationException => "ValidationError",
        ErrorCode::UnrecognizedClientException => "InvalidClientTokenId",
        ErrorCode::InvalidSignatureException => "SignatureDoesNotMatch",
        ErrorCode::IncompleteSignatureException => "IncompleteSignature",
        ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationToken",
        c => c.name(),
    };
    let kind = if e.code.is_fault() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        escape(&e.message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_caller_identity_and_refusals() {
        let who = Identity {
            name: "alice<x>",
            account: "111122223333",
            akid: "AKIA1",
        };
        let ok = answer(b"Action=GetCallerIdentity&Version=2011-06-15", &who, "r1").unwrap();
        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.contains("<Arn>arn:aws:iam::111122223333:user/alice&lt;x&gt;</Arn>"));
        assert!(ok.contains("<Account>111122223333</Account>"));
        let e = answer(b"Action=AssumeRole&Version=2011-06-15", &who, "r").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownOperationException);
        assert!(error_body(&e, "r").contains("<Code>InvalidAction</Code>"));
        let e = answer(b"Action=GetCallerIdentity&Version=1999", &who, "r").unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationException);
    }
}
