//! The KMS over HTTP: AWS's JSON 1.1 protocol (`POST /`, `X-Amz-Target:
//! TrentService.<Op>`, SigV4), both ends. The protocol's rules are here, once; `server`
//! serves any [`Kms`](super::Kms) (the embedded one, behind principals), `client` calls
//! any endpoint that speaks it (ours, AWS KMS, moto), `sigv4` checks signatures.

pub mod client;
pub mod limits;
mod mrk;
pub mod server;
pub mod sigv4;
pub mod sts;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{ErrorCode, KmsError, KmsResult};

/// The content type of requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// `X-Amz-Target` is this prefix and the operation's name.
pub const TARGET_PREFIX: &str = "TrentService.";

/// A body that is empty (or blank) means `{}`: some clients send nothing for operations
/// without input, some emulators answer nothing for operations without output.
fn or_empty_object(body: &[u8]) -> &[u8] {
    if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    }
}

/// Parses a request body (SerializationException if it is not the operation's shape).
pub fn parse_request<Req: DeserializeOwned>(body: &[u8]) -> KmsResult<Req> {
    serde_json::from_slice(or_empty_object(body)).map_err(|e| {
        KmsError::new(
            ErrorCode::SerializationException,
            format!("cannot parse the request: {e}"),
        )
    })
}

/// Writes a response body straight into a buffer that is wiped when dropped (no copy of
/// a plaintext data key left behind); an operation without output answers `{}`.
pub fn write_response<Resp: Serialize>(resp: &Resp) -> KmsResult<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    serde_json::to_writer(&mut *out, resp).map_err(|e| KmsError::internal(e.to_string()))?;
    if out.as_slice() == b"null" {
        out.clear();
        out.extend_from_slice(b"{}");
    }
    Ok(out)
}

/// Parses a successful response body. An operation without output (`Resp` is `()`)
/// takes any JSON answer (`{}`, nothing, `null`, or an object some emulator adds).
pub fn parse_response<Resp: DeserializeOwned>(body: &[u8]) -> Result<Resp, serde_json::Error> {
    let body = or_empty_object(body);
    serde_json::from_slice(body).or_else(|e| match serde_json::from_slice::<Resp>(b"null") {
        Ok(unit) if serde_json::from_slice::<serde_json::Value>(body).is_ok() => Ok(unit),
        _ => Err(e),
    })
}

/// Runs one operation on a JSON request body; the JSON answer.
pub fn call<Req: DeserializeOwned, Resp: Serialize>(
    body: &[u8],
    f: impl FnOnce(Req) -> KmsResult<Resp>,
) -> KmsResult<Zeroizing<Vec<u8>>> {
    write_response(&f(parse_request(body)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_and_unit_answers() {
        let v: serde_json::Value = parse_request(b" ").unwrap();
        assert_eq!(v, serde_json::json!({}));
        parse_response::<()>(b"{}").unwrap();
        parse_response::<()>(b"").unwrap();
        parse_response::<()>(b"{\"KeyId\":\"k\"}").unwrap();
        assert!(parse_response::<()>(b"not json").is_err());
        assert!(parse_response::<crate::kms::KeyIdResponse>(b"{}").is_err());
        assert_eq!(write_response(&()).unwrap().as_slice(), b"{}");
        let e = parse_request::<crate::kms::KeyIdRequest>(b"{}").unwrap_err();
        assert_eq!(e.code, ErrorCode::SerializationException);
    }
}
