//! AWS's request validation: before an operation runs, AWS checks its input against the
//! API model (required members, lengths, value bounds, enum values, patterns) and answers
//! every violation at once in one `ValidationException` of a fixed form. The model is
//! `shapes.json`, the input side of botocore's KMS model reduced by `tools/kms_model.py`;
//! the words are [`messages::model_violations`](super::messages::model_violations).
//!
//! Values are read as borrowed slices of the request: a sensitive member (a plaintext,
//! a password) is measured, never copied out of the zeroized request body.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::messages::{self, Violation};
use super::{KmsResult, Op};

#[derive(Deserialize)]
struct Model {
    operations: HashMap<String, String>,
    shapes: HashMap<String, Shape>,
}

#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "type")]
    kind: String,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    pattern: Option<String>,
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    members: Vec<(String, String)>,
    member: Option<String>,
    value: Option<String>,
    /// `pattern` compiled as Java matches it (the whole value).
    #[serde(skip)]
    regex: Option<regex::Regex>,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| {
    let mut m: Model =
        serde_json::from_str(include_str!("shapes.json")).expect("shapes.json parses");
    // Where kmsfs deliberately accepts more than AWS: an XKS proxy on loopback may be
    // `http://`, and any proxy may name a port (the store's own checks bound both).
    if let Some(s) = m.shapes.get_mut("XksProxyUriEndpointType") {
        s.pattern = None;
    }
    for s in m.shapes.values_mut() {
        // Java's `\w` is ASCII; Rust's is Unicode.
        s.regex = s.pattern.as_ref().map(|p| {
            // Every `\w` in the model is inside a bracket class.
            let p = p.replace(r"\w", "A-Za-z0-9_");
            regex::Regex::new(&format!("^(?:{p})$")).expect("model pattern compiles")
        });
    }
    m
});

/// Checks the request `body` of `op` against AWS's model: `ValidationException` in AWS's
/// words listing every violation. A body that does not parse, or a member of the wrong
/// JSON type, passes here: the parse that follows answers `SerializationException`, as
/// AWS does before it validates.
pub fn check(op: Op, body: &[u8]) -> KmsResult<()> {
    let Some(shape) = MODEL.operations.get(op.name()) else {
        return Ok(());
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let Ok(raw) = serde_json::from_slice::<&RawValue>(body) else {
        return Ok(());
    };
    let mut found = Vec::new();
    match walk(shape, Some(raw), "", &mut found) {
        Ok(()) if found.is_empty() => Ok(()),
        Ok(()) => Err(messages::model_violations(&found)),
        Err(TypeMismatch) => Ok(()),
    }
}

/// A member of another JSON type than the model's: the parse will refuse the request.
struct TypeMismatch;

fn walk(
    name: &str,
    raw: Option<&RawValue>,
    path: &str,
    found: &mut Vec<Violation>,
) -> Result<(), TypeMismatch> {
    let s = &MODEL.shapes[name];
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(());
    };
    let text = raw.get();
    match s.kind.as_str() {
        "structure" => {
            let fields: HashMap<&str, &RawValue> =
                serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            for (member, shape) in &s.members {
                let value = fields.get(member.as_str()).copied();
                let at = join(path, &lower_camel(member));
                let absent = value.is_none_or(|v| v.get() == "null");
                if absent && s.required.contains(member) {
                    found.push(Violation::null(at));
                    continue;
                }
                walk(shape, value, &at, found)?;
            }
        }
        "list" => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            let shown = || {
                let each: Vec<&str> = items.iter().map(|i| unquote(i.get())).collect();
                format!("[{}]", each.join(", "))
            };
            if let Some(v) = length(s, items.len() as i64, "length") {
                found.push(Violation::value(path, shown(), v));
            }
            let member = s.member.as_deref().unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                walk(
                    member,
                    Some(item),
                    &format!("{path}.{}.member", i + 1),
                    found,
                )?;
            }
        }
        "map" => {
            let entries: HashMap<&str, &RawValue> =
                serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            if let Some(v) = length(s, entries.len() as i64, "length") {
                let mut each: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{k}={}", unquote(v.get())))
                    .collect();
                each.sort();
                found.push(Violation::value(
                    path,
                    format!("{{{}}}", each.join(", ")),
                    v,
                ));
            }
            let value = s.value.as_deref().unwrap_or_default();
            for v in entries.values() {
                walk(value, Some(v), path, found)?;
            }
        }
        "string" => {
            let v: &str = serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            let shown = || {
                if s.sensitive {
                    None
                } else {
                    Some(v.to_string())
                }
            };
            // Java counts UTF-16 units.
            let n = v.encode_utf16().count() as i64;
            if let Some(c) = length(s, n, "length") {
                found.push(Violation::maybe(path, shown(), c));
            } else if let Some(values) = &s.values {
                if !values.iter().any(|e| e == v) {
                    found.push(Violation::maybe(
                        path,
                        shown(),
                        format!(
                            "Member must satisfy enum value set: [{}]",
                            values.join(", ")
                        ),
                    ));
                }
            } else if let (Some(re), Some(p)) = (&s.regex, &s.pattern) {
                if !re.is_match(v) {
                    found.push(Violation::maybe(
                        path,
                        shown(),
                        format!("Member must satisfy regular expression pattern: {p}"),
                    ));
                }
            }
        }
        "blob" => {
            let v: &str = serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            let n = decoded_len(v).ok_or(TypeMismatch)?;
            if let Some(c) = length(s, n, "length") {
                // AWS shows a blob as the Java buffer that held it.
                let shown = (!s.sensitive)
                    .then(|| format!("java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]"));
                found.push(Violation::maybe(path, shown, c));
            }
        }
        "integer" => {
            let v: i64 = serde_json::from_str(text).map_err(|_| TypeMismatch)?;
            if let Some(c) = length(s, v, "value") {
                found.push(Violation::value(path, v.to_string(), c));
            }
        }
        "boolean" => {
            serde_json::from_str::<bool>(text).map_err(|_| TypeMismatch)?;
        }
        _ => {}
    }
    Ok(())
}

/// The bound `n` breaks, in AWS's words (`what` is "length" or "value").
fn length(s: &Shape, n: i64, what: &str) -> Option<String> {
    if let Some(min) = s.min.filter(|&m| n < m) {
        return Some(format!(
            "Member must have {what} greater than or equal to {min}"
        ));
    }
    if let Some(max) = s.max.filter(|&m| n > m) {
        return Some(format!(
            "Member must have {what} less than or equal to {max}"
        ));
    }
    None
}

/// The length of standard base64 `v` once decoded; None if it is not base64's shape.
fn decoded_len(v: &str) -> Option<i64> {
    if v.len() % 4 != 0 {
        return None;
    }
    let pad = v.bytes().rev().take_while(|&b| b == b'=').count();
    Some((v.len() / 4 * 3).checked_sub(pad)? as i64)
}

/// A JSON scalar as Java would print it inside a list or map.
fn unquote(json: &str) -> &str {
    json.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(json)
}

fn lower_camel(member: &str) -> String {
    let mut c = member.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

#[cfg(test)]
mod tests;
