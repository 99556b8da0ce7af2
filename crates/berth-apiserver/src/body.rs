//! Request bodies: size limits, content types and decoding (JSON, YAML, protobuf) into JSON
//! values, with errors that name what went wrong and where.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The largest request body the server reads (kube-apiserver's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How much of an oversized body is read and thrown away before answering 413, so that the
/// client sees the answer instead of a connection reset while it is still sending.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
const MAX_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a whole body, refusing more than [`MAX_BODY_BYTES`]; memory stays bounded by it.
pub async fn read<B>(body: B, content_length: Option<u64>) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use bytes::{Buf, BufMut};
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ))
    };
    let mut body = std::pin::pin!(body);
    let mut collected = bytes::BytesMut::new();
    let mut oversized = content_length.is_some_and(|l| l > MAX_BODY_BYTES as u64);
    let mut drained = 0usize;
    let started = tokio::time::Instant::now();
    loop {
        if oversized && (drained > MAX_DRAIN_BYTES || started.elapsed() > MAX_DRAIN_TIME) {
            return Err(too_large());
        }
        let frame = match tokio::time::timeout(MAX_DRAIN_TIME, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                return Err(if oversized {
                    too_large()
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {e}"))
                });
            }
            Err(_) if oversized => return Err(too_large()),
            Err(_) => return Err(ApiError::timeout("timed out reading the request body")),
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if oversized {
            drained += data.remaining();
            continue;
        }
        if collected.len() + data.remaining() > MAX_BODY_BYTES {
            oversized = true;
            drained += collected.len() + data.remaining();
            collected = bytes::BytesMut::new();
            continue;
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            collected.put_slice(chunk);
            data.advance(n);
        }
    }
    if oversized {
        return Err(too_large());
    }
    Ok(collected.freeze())
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

/// A decoded request body, and the object keys it repeated (JSON only; see [`decode_object`]).
pub struct Decoded {
    pub value: Value,
    /// Paths of keys that appear twice in one JSON object (`data.a`, `spec.ports[0].port`):
    /// JSON parsers keep the last value silently; Kubernetes' strict decoding refuses them.
    pub duplicate_fields: Vec<String>,
}

/// Decodes a body by its content type. An empty or missing content type is read as JSON (kubectl
/// sends `PUT .../scale` without one).
pub fn decode(content_type: Option<&str>, bytes: &[u8]) -> ApiResult<Value> {
    decode_object(content_type, bytes).map(|decoded| decoded.value)
}

/// [`decode`], also reporting repeated keys, found in the same single pass over the body.
pub fn decode_object(content_type: Option<&str>, bytes: &[u8]) -> ApiResult<Decoded> {
    let plain = |value| Decoded {
        value,
        duplicate_fields: Vec::new(),
    };
    match media_type(content_type).as_str() {
        ""
        | "application/json"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "*/*" => parse_json_object(bytes),
        "application/yaml"
        | "application/apply-patch+yaml"
        | "text/yaml"
        | "application/x-yaml" => parse_yaml(bytes).map(plain),
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(bytes).map(plain).map_err(|e| {
                if e.is_unsupported_kind() {
                    ApiError::unsupported_media_type(&e.to_string())
                } else {
                    ApiError::bad_request(format!("the protobuf body cannot be decoded: {e}"))
                }
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    parse_json_object(bytes).map(|decoded| decoded.value)
}

fn parse_json_object(bytes: &[u8]) -> ApiResult<Decoded> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; expected a JSON object",
        ));
    }
    let invalid = |e: serde_json::Error| {
        ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
    };
    // serde_json's recursion limit (128) bounds the stack on hostile nesting.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut state = WalkState::default();
    let value = serde::de::DeserializeSeed::deserialize(ValueSeed(&mut state), &mut deserializer)
        .map_err(invalid)?;
    deserializer.end().map_err(invalid)?;
    Ok(Decoded {
        value,
        duplicate_fields: state.duplicates,
    })
}

/// Where the walk is (to name a repeated key) and what it found.
#[derive(Default)]
struct WalkState {
    path: Vec<Segment>,
    duplicates: Vec<String>,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl WalkState {
    fn path_to(&self, key: &str) -> String {
        let mut path = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(k) if path.is_empty() => path.push_str(k),
                Segment::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        path
    }
}

/// Builds the `Value` as serde_json would, noting repeated keys on the way (the last one wins,
/// as in Kubernetes' non-strict decoding).
struct ValueSeed<'a>(&'a mut WalkState);

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let path = self.0.path_to(&key);
                self.0.duplicates.push(path);
            }
            self.0.path.push(Segment::Key(key));
            let value = map.next_value_seed(ValueSeed(&mut *self.0))?;
            if let Some(Segment::Key(key)) = self.0.path.pop() {
                object.insert(key, value);
            }
        }
        Ok(Value::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.0.path.push(Segment::Index(items.len()));
            let item = seq.next_element_seed(ValueSeed(&mut *self.0));
            self.0.path.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinities, so this is never Null in practice.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// The deepest flow nesting (`[`, `{`) and indentation accepted in YAML. Deeper documents are
/// refused before parsing: libyaml's cost grows with the square of the depth, and serde_yaml
/// refuses depths past 128 anyway, only after doing that work.
const MAX_YAML_DEPTH: usize = 128;
const MAX_YAML_INDENT: usize = 1024;

/// A cheap upper bound on a YAML document's nesting, ignoring brackets inside quotes.
fn yaml_too_deep(text: &str) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for line in text.lines() {
        if line.len() - line.trim_start_matches(' ').len() > MAX_YAML_INDENT {
            return true;
        }
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_YAML_DEPTH {
                        return true;
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        // A quote never spans lines in the flow styles that can nest deeply.
        if quote == Some('\'') {
            quote = None;
        }
    }
    false
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
    if yaml_too_deep(text) {
        return Err(ApiError::bad_request(format!(
            "the request body is not valid YAML: nesting deeper than {MAX_YAML_DEPTH} levels"
        )));
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

    fn duplicate_fields(content_type: Option<&str>, bytes: &[u8]) -> Vec<String> {
        decode_object(content_type, bytes)
            .map(|d| d.duplicate_fields)
            .unwrap_or_default()
    }

    #[test]
    fn duplicate_keys_are_found_by_path() {
        let body = br#"{"a":1,"b":{"c":1,"c":2},"l":[{"x":1,"x":1}],"a":2}"#;
        assert_eq!(duplicate_fields(None, body), ["b.c", "l[0].x", "a"]);
        assert!(duplicate_fields(None, br#"{"a":{"a":1}}"#).is_empty());
        assert!(duplicate_fields(Some("application/yaml"), b"a: 1").is_empty());
        assert!(duplicate_fields(None, b"{not json").is_empty());
        // The one pass builds the same value serde_json would, last duplicate winning.
        let decoded = decode_object(None, body).unwrap().value;
        assert_eq!(
            decoded,
            serde_json::json!({"a":2,"b":{"c":2},"l":[{"x":1}]})
        );
        let numbers =
            br#"{"i":-3,"u":18446744073709551615,"f":1.5,"e":1e3,"n":null,"t":true,"s":"\u00e9"}"#;
        let expected: Value = serde_json::from_slice(numbers).unwrap();
        assert_eq!(decode_object(None, numbers).unwrap().value, expected);
    }

    #[test]
    fn deep_yaml_is_refused_before_parsing() {
        let flow = format!("a: {}", "[".repeat(100_000));
        let started = std::time::Instant::now();
        assert_eq!(parse_yaml(flow.as_bytes()).unwrap_err().code, 400);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let quoted = format!("a: \"{}\"\n", "[".repeat(500));
        assert_eq!(
            parse_yaml(quoted.as_bytes()).unwrap()["a"]
                .as_str()
                .map(str::len),
            Some(500)
        );
        let indented = format!("a:\n{}b: 1\n", " ".repeat(2000));
        assert_eq!(parse_yaml(indented.as_bytes()).unwrap_err().code, 400);
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
