//! The response writer: GraphQL responses go to JSON bytes here, not through serde.
//!
//! Lists of bugs and pages are rendered straight to JSON while they resolve (see
//! `graphql::fast`), and reach the response as `Value::Binary` fragments that hold that JSON.
//! This writer splices them in verbatim; everything else it writes exactly as `serde_json`
//! writes an `async_graphql::Response` (compact, same escaping, same number formatting), which
//! a test checks. Nothing in the schema returns binary data, so a `Binary` value can only be such
//! a fragment.

use async_graphql::Value;

/// A response that may hold pre-rendered JSON fragments. It deliberately has no `Serialize`:
/// serde would write the fragments as arrays of bytes, so the only way out is
/// [`Response::to_json`].
#[derive(Debug, Default)]
pub struct Response(pub async_graphql::Response);

impl std::ops::Deref for Response {
    type Target = async_graphql::Response;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Response {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Response {
    /// The response body: `{"data":…}` plus `extensions` and `errors` when present, in the
    /// order and spelling async-graphql's `Serialize` uses.
    pub fn to_json(&self) -> Vec<u8> {
        let r = &self.0;
        // Sized up front: the data is mostly pre-rendered fragments of known length, and growing a
        // buffer of several hundred KB by doubling copied it about eight times.
        let mut out = Vec::with_capacity(64 + size_hint(&r.data));
        out.extend_from_slice(b"{\"data\":");
        write_value(&r.data, &mut out);
        if !r.extensions.is_empty() {
            out.extend_from_slice(b",\"extensions\":{");
            for (i, (k, v)) in r.extensions.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, &mut out);
                out.push(b':');
                write_value(v, &mut out);
            }
            out.push(b'}');
        }
        if !r.errors.is_empty() {
            out.extend_from_slice(b",\"errors\":");
            write_serde(&r.errors, &mut out);
        }
        out.push(b'}');
        out
    }
}

/// Writes `v`; `Binary` values are JSON fragments and go in as they are.
/// About how many bytes [`write_value`] writes for `v`: exact for fragments and structure,
/// short by any escapes in strings and approximate for numbers. Buffers are sized with it.
pub fn size_hint(v: &Value) -> usize {
    // Separators: one comma fewer than entries.
    let commas = |n: usize| n.saturating_sub(1);
    match v {
        Value::Null | Value::Boolean(true) => 4,
        Value::Boolean(false) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Enum(name) => name.len() + 2,
        Value::Binary(json) => json.len(),
        Value::List(items) => 2 + commas(items.len()) + items.iter().map(size_hint).sum::<usize>(),
        Value::Object(map) => {
            2 + commas(map.len())
                + map
                    .iter()
                    .map(|(k, v)| k.len() + 3 + size_hint(v))
                    .sum::<usize>()
        }
    }
}

pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_serde(n, out),
        Value::String(s) => write_str(s, out),
        Value::Enum(name) => write_str(name, out),
        Value::Binary(json) => out.extend_from_slice(json),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

/// Writes a JSON string with serde_json's escaping: `"`, `\` and control characters only.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes a value through serde_json. Used for numbers and errors, whose serialization into a
/// `Vec` cannot fail; should it ever, the value is written as `null` rather than a broken body.
pub fn write_serde<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let mark = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(mark);
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{Name, Number, ServerError};

    #[test]
    fn size_hints_are_exact_without_escapes() {
        let v = Value::from_json(serde_json::json!({
            "a": [1, "x", null, true, { "b": "yy" }],
            "c": { "d": [] },
            "e": "text",
        }))
        .expect("value");
        let mut out = Vec::new();
        write_value(&v, &mut out);
        // Numbers are estimated at 8 bytes; the one here is 1.
        assert_eq!(size_hint(&v), out.len() + 7);
        let raw = Value::Binary(bytes::Bytes::from_static(b"[{\"x\":1}]"));
        assert_eq!(size_hint(&raw), 9);
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é 日本 \u{2028} \u{10FFFF} / ");
        for s in [all.as_str(), "", "plain", "\"", "a\\b"] {
            let mut out = Vec::new();
            write_str(s, &mut out);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                serde_json::to_string(s).expect("json")
            );
        }
    }

    #[test]
    fn responses_are_written_as_serde_writes_them() {
        let mut obj = async_graphql::indexmap::IndexMap::new();
        obj.insert(Name::new("a\"key"), Value::Enum(Name::new("HIGH")));
        obj.insert(Name::new("n"), Value::Number(Number::from(-3)));
        obj.insert(
            Name::new("f"),
            Value::Number(Number::from_f64(0.1).expect("finite")),
        );
        obj.insert(
            Name::new("one"),
            Value::Number(Number::from_f64(1.0).expect("finite")),
        );
        obj.insert(
            Name::new("l"),
            Value::List(vec![
                Value::Null,
                Value::Boolean(true),
                Value::Boolean(false),
            ]),
        );
        obj.insert(Name::new("s"), Value::String("x\ny".into()));
        let mut resp = async_graphql::Response::new(Value::Object(obj));
        resp.errors.push(ServerError::new("boom", None));
        resp.extensions
            .insert("trace".into(), Value::String("t".into()));
        let ours = Response(resp);
        assert_eq!(
            String::from_utf8(ours.to_json()).expect("utf-8"),
            serde_json::to_string(&ours.0).expect("json")
        );
        let empty = Response::default();
        assert_eq!(empty.to_json(), b"{\"data\":null}");
    }

    #[test]
    fn binary_values_are_spliced_in() {
        let v = Value::List(vec![
            Value::Binary(bytes::Bytes::from_static(b"{\"id\":1}")),
            Value::Null,
        ]);
        let mut out = Vec::new();
        write_value(&v, &mut out);
        assert_eq!(out, b"[{\"id\":1},null]");
    }
}
