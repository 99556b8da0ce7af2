//! Request bodies: size limits, content types and decoding (JSON, YAML, protobuf) into JSON
//! values, with errors that name what went wrong and where.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The largest request body the server reads (kube-apiserver's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads a whole body, refusing more than [`MAX_BODY_BYTES`] without reading further.
pub async fn read<B>(body: B, content_length: Option<u64>) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ))
    };
    if content_length.is_some_and(|l| l > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// The media type without parameters, lower-cased.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a body by its content type. An empty or missing content type is read as JSON (kubectl
/// sends `PUT .../scale` without one).
pub fn decode(content_type: Option<&str>, bytes: &[u8]) -> ApiResult<Value> {
    match media_type(content_type).as_str() {
        ""
        | "application/json"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "*/*" => parse_json(bytes),
        "application/yaml"
        | "application/apply-patch+yaml"
        | "text/yaml"
        | "application/x-yaml" => parse_yaml(bytes),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes).map_err(|e| {
            if e.is_unsupported_kind() {
                ApiError::unsupported_media_type(&e.to_string())
            } else {
                ApiError::bad_request(format!("the protobuf body cannot be decoded: {e}"))
            }
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; expected a JSON object",
        ));
    }
    // serde_json's recursion limit (128) bounds the stack on hostile nesting.
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

pub fn parse_yaml(bytes: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; expected an object",
        ));
    }
    // JSON is YAML; parse it as JSON first for JSON's exact error positions and number handling.
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(value);
    }
    // serde_yaml refuses alias expansion past a fixed budget, which defuses "billion laughs".
    serde_yaml::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(decode(None, br#"{"a":1}"#).is_ok());
        assert!(decode(Some("application/json; charset=utf-8"), br#"{"a":1}"#).is_ok());
        assert_eq!(
            decode(Some("application/apply-patch+yaml"), b"a: 1\n").unwrap()["a"],
            1
        );
        assert_eq!(decode(Some("text/plain"), b"x").unwrap_err().code, 415);
    }

    #[test]
    fn parse_errors_say_where() {
        let e = parse_json(b"{\"a\":").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        assert_eq!(parse_json(b"{} x").unwrap_err().code, 400);
        let deep = "[".repeat(100_000);
        assert_eq!(parse_json(deep.as_bytes()).unwrap_err().code, 400);
    }

    #[test]
    fn yaml_bombs_are_refused() {
        let bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n\
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        assert_eq!(parse_yaml(bomb.as_bytes()).unwrap_err().code, 400);
    }
}
