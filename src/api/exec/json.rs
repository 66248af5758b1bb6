//! The response writer: GraphQL responses go to JSON bytes here, not through serde.
//!
//! Lists of bugs and pages are rendered straight to JSON while they resolve (see
//! `api::exec::fast`), and reach the response as `Value::Binary` fragments that hold that JSON.
//! This writer splices them in verbatim; everything else it writes exactly as `serde_json`
//! writes an `async_graphql::Response` (compact, same escaping, same number formatting), which
//! a test checks. Nothing in the schema returns binary data, so a `Binary` value can only be such
//! a fragment.

use async_graphql::Value;

/// A response that may hold pre-rendered JSON fragments. It deliberately has no `Serialize`:
/// serde would write the fragments as arrays of bytes, so the only ways out are
/// [`Response::to_json`] and [`Response::to_chunks`].
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
    /// The whole response as one buffer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + size_hint(&self.0.data));
        self.write(&mut out);
        out
    }

    /// The response as a list of chunks whose concatenation is [`to_json`](Self::to_json):
    /// large pre-rendered fragments are passed on as they are, not copied into one big buffer.
    /// A Q1 answer is about 700 KB; assembling it contiguously meant one large allocation and
    /// a full copy per request, and large allocations are what kept the gateway's RSS high.
    pub fn to_chunks(&self) -> Chunks {
        let mut out = Chunks::default();
        self.write(&mut out);
        out.flush();
        out
    }

    fn write(&self, out: &mut impl Sink) {
        let r = &self.0;
        let mut sep = b'{';
        // A request that never executed has no `data` entry at all, as GraphQL over HTTP asks.
        if !super::is_request_error(r) {
            out.buf().extend_from_slice(b"{\"data\":");
            write_value(&r.data, out);
            sep = b',';
        }
        if !r.extensions.is_empty() {
            out.buf().push(sep);
            out.buf().extend_from_slice(b"\"extensions\":");
            write_object(r.extensions.iter().map(|(k, v)| (k.as_str(), v)), out);
            sep = b',';
        }
        if !r.errors.is_empty() {
            out.buf().push(sep);
            out.buf().extend_from_slice(b"\"errors\":");
            write_serde(&r.errors, out.buf());
        }
        out.buf().push(b'}');
    }
}

/// Where [`write_value`] writes: plain JSON goes to a buffer, fragments may be kept whole.
pub trait Sink {
    fn buf(&mut self) -> &mut Vec<u8>;
    fn fragment(&mut self, json: &bytes::Bytes);
}

impl Sink for Vec<u8> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self
    }

    fn fragment(&mut self, json: &bytes::Bytes) {
        self.extend_from_slice(json);
    }
}

/// A response body as chunks: runs of written JSON between shared fragments.
#[derive(Debug, Default)]
pub struct Chunks {
    pub chunks: std::collections::VecDeque<bytes::Bytes>,
    pub len: usize,
    current: Vec<u8>,
}

impl Chunks {
    /// Fragments below this size are copied: a chunk of its own would cost more than that.
    const SHARE_FROM: usize = 4096;

    fn flush(&mut self) {
        if !self.current.is_empty() {
            let run = std::mem::take(&mut self.current);
            self.len += run.len();
            self.chunks.push_back(run.into());
        }
    }
}

impl Sink for Chunks {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.current
    }

    fn fragment(&mut self, json: &bytes::Bytes) {
        if json.len() < Self::SHARE_FROM {
            self.current.extend_from_slice(json);
        } else {
            self.flush();
            self.len += json.len();
            self.chunks.push_back(json.clone());
        }
    }
}

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

pub fn write_value(v: &Value, out: &mut impl Sink) {
    match v {
        Value::Null => out.buf().extend_from_slice(b"null"),
        Value::Boolean(true) => out.buf().extend_from_slice(b"true"),
        Value::Boolean(false) => out.buf().extend_from_slice(b"false"),
        Value::Number(n) => write_serde(n, out.buf()),
        Value::String(s) => write_str(s, out.buf()),
        Value::Enum(name) => write_str(name, out.buf()),
        Value::Binary(json) => out.fragment(json),
        Value::List(items) => {
            out.buf().push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.buf().push(b',');
                }
                write_value(item, out);
            }
            out.buf().push(b']');
        }
        Value::Object(map) => write_object(map.iter().map(|(k, v)| (k.as_str(), v)), out),
    }
}

fn write_object<'v>(entries: impl Iterator<Item = (&'v str, &'v Value)>, out: &mut impl Sink) {
    out.buf().push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.buf().push(b',');
        }
        write_str(k, out.buf());
        out.buf().push(b':');
        write_value(v, out);
    }
    out.buf().push(b'}');
}

/// Whether any of a word's eight bytes needs escaping in a JSON string: a control character,
/// `"` or `\\`. Bytes of multi-byte UTF-8 sequences (0x80 and up) never match.
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// Writes `s` as a JSON string, escaped as `serde_json` escapes it. Runs of eight bytes that
/// need no escape are checked as one word: text columns are mostly such runs, and the byte by
/// byte scan was 7% of the gateway's CPU under the Q1 load.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        // The tail, padded with spaces (which need no escape), is one more word.
        if bytes.len() - i < 8 {
            let mut w = [b' '; 8];
            w[..bytes.len() - i].copy_from_slice(&bytes[i..]);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                break;
            }
        }
        // A word with something to escape, or the tail: byte by byte up to the next word.
        let stop = (i + 8).min(bytes.len());
        while i < stop {
            let b = bytes[i];
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
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            i += 1;
            start = i;
        }
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
        let mut cases: Vec<String> = [all.as_str(), "", "plain", "\"", "a\\b"]
            .map(str::to_owned)
            .to_vec();
        // Every ASCII byte and a multi-byte character at every offset of two words and a tail,
        // so each lane of the word-at-a-time check is exercised.
        for c in (0u8..0x80).map(char::from).chain(['é', '日', '\u{10FFFF}']) {
            for at in 0..19 {
                let mut s: String = "x".repeat(at);
                s.push(c);
                s.push_str(&"y".repeat(18 - at));
                cases.push(s);
            }
        }
        for s in &cases {
            let mut out = Vec::new();
            write_str(s, &mut out);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                serde_json::to_string(s).expect("json"),
                "{s:?}"
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

    #[test]
    fn chunks_concatenate_to_the_buffer_and_share_large_fragments() {
        let big = bytes::Bytes::from(format!("[{}]", "1,".repeat(3000) + "1"));
        let data = Value::List(vec![
            Value::Binary(bytes::Bytes::from_static(b"{\"id\":1}")),
            Value::Binary(big.clone()),
            Value::String("tail".into()),
        ]);
        let mut resp = async_graphql::Response::new(data);
        resp.errors.push(ServerError::new(
            "boom",
            Some(async_graphql::Pos::default()),
        ));
        let resp = Response(resp);
        let chunks = resp.to_chunks();
        let joined: Vec<u8> = chunks
            .chunks
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        assert_eq!(joined, resp.to_json());
        assert_eq!(chunks.len, joined.len());
        // The large fragment is its own chunk, the same allocation; the small one was copied.
        assert_eq!(chunks.chunks.len(), 3);
        assert_eq!(chunks.chunks[1].as_ptr(), big.as_ptr());
        assert!(chunks.chunks.iter().all(|c| !c.is_empty()));
    }
}
