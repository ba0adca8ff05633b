//! Body encodings: raw JSON, percent-encoded JSON, or form fields.
//!
//! ZEGO sends JSON by default and form fields (`POST/FORM`) only when support
//! switched it on; its docs also tell receivers to "UrlDecode" the data, which
//! some senders take to mean percent-encoding a whole JSON body. Senders also
//! mislabel `Content-Type`, so the encoding is decided by the body alone:
//!
//! 1. A body that parses as JSON is JSON. Values inside it are never
//!    percent-decoded: moderation URLs legitimately contain `%2F` and `%3D`.
//! 2. Else a trimmed body starting with `%7B`/`%7b` is a percent-encoded JSON
//!    object: it is decoded once with form rules and parsed as JSON.
//! 3. Else it is form fields, `&`-separated `key=value` pairs, which become a
//!    JSON object of strings (arrays of strings for `k[]=` and repeated keys).
//!
//! Anything else, an empty body included, is [`DecodeError::Malformed`].
//! Numbers are kept as serde_json parses them (`u64`/`i64` for integers), never
//! re-rendered through `f64`, because 19-digit ZEGO nonces exceed 2^53 and are
//! signed as their exact text.

use serde_json::map::Entry;
use serde_json::{Map, Value};

/// How a body was encoded; kept for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    PercentEncodedJson,
    Form,
}

/// A decoded body: always a JSON value, whatever the wire encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub encoding: Encoding,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is neither JSON, percent-encoded JSON nor form fields")]
    Malformed,
}

/// Deepest object/array nesting accepted. Callbacks nest two or three
/// levels; serde_json's own limit (128) is about its stack, not our memory.
pub const MAX_DEPTH: usize = 32;

/// Most JSON values (objects, arrays, scalars) in one body. Callbacks carry a
/// few dozen fields; a tree of small values costs far more memory than the
/// bytes that describe it (`[0,0,…]` about 40×), so a body that would build
/// one is refused before any of it is built.
pub const MAX_VALUES: usize = 10_000;

/// Decodes a callback body; see the module docs for the rules and their order.
pub fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    let trimmed = body.trim_ascii();
    if trimmed.first() == Some(&b'{') && !json_shape_is_bounded(trimmed) {
        return Err(DecodeError::Malformed);
    }
    // JSON first: it is the vendors' default, and a form or percent-encoded
    // body fails on its first byte, so the attempt costs next to nothing.
    // A top-level array is never a callback and is not built as one (a
    // `[0,0,…]` tree costs about 40× its bytes): such a body is read as the
    // form fields it may be (a key may start with `[`), which costs no more
    // than its size. Otherwise JSON builds at most one object of bounded
    // shape, or a single scalar.
    if trimmed.first() != Some(&b'[')
        && let Ok(value) = serde_json::from_slice::<Value>(body)
    {
        return Ok(Decoded {
            encoding: Encoding::Json,
            value,
        });
    }
    if trimmed
        .get(..3)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"%7B"))
    {
        // The prefix decides the branch: `%7B…` that is not JSON once decoded
        // is malformed rather than retried as form fields.
        let text = percent_decode_form(trimmed)?;
        if !text.trim_start().starts_with('{') || !json_shape_is_bounded(text.as_bytes()) {
            return Err(DecodeError::Malformed);
        }
        let value = serde_json::from_str(&text).map_err(|_| DecodeError::Malformed)?;
        return Ok(Decoded {
            encoding: Encoding::PercentEncodedJson,
            value,
        });
    }
    Ok(Decoded {
        encoding: Encoding::Form,
        value: decode_form(trimmed)?,
    })
}

/// Whether JSON text nests at most [`MAX_DEPTH`] levels and holds at most
/// [`MAX_VALUES`] values, by one pass over the bytes that builds nothing.
/// Only the shape is judged; whether it is valid JSON is the parser's call.
fn json_shape_is_bounded(text: &[u8]) -> bool {
    let (mut depth, mut values) = (0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            // Each comma starts one more value (or key/value pair).
            b',' => {
                values += 1;
                if values > MAX_VALUES {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// Decodes one form-encoded component (`application/x-www-form-urlencoded`):
/// `+` is a space, then `%XX` is a byte; the result must be UTF-8.
///
/// Form rules rather than plain RFC 3986 percent-decoding, because every
/// common form encoder (PHP `urlencode`, Java `URLEncoder`, Go `QueryEscape`)
/// writes a space as `+` and a literal plus as `%2B`: `my+title%2B1` is
/// `my title+1`. A `%` not followed by two hex digits is malformed.
pub fn percent_decode_form(s: &[u8]) -> Result<String, DecodeError> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        // Most keys and many values need no decoding: copy once.
        return std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Malformed);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'+' => {
                out.push(b' ');
                rest = tail;
            }
            b'%' => match tail {
                [hi, lo, after @ ..] => {
                    let byte = hex_digit(*hi)
                        .zip(hex_digit(*lo))
                        .map(|(hi, lo)| hi << 4 | lo)
                        .ok_or(DecodeError::Malformed)?;
                    out.push(byte);
                    rest = after;
                }
                _ => return Err(DecodeError::Malformed),
            },
            _ => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::Malformed)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form fields into an object of strings. `k[]` is stored as `k` and always
/// yields an array; a plain key seen twice turns into an array too, because
/// ZEGO's form array encoding is undocumented and both styles are plausible.
fn decode_form(body: &[u8]) -> Result<Value, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Malformed);
    }
    let mut map = Map::new();
    for pair in body.split(|&b| b == b'&') {
        let eq = pair
            .iter()
            .position(|&b| b == b'=')
            .ok_or(DecodeError::Malformed)?;
        let (raw_key, raw_value) = pair.split_at(eq);
        let mut key = percent_decode_form(raw_key)?;
        let value = Value::String(percent_decode_form(raw_value.get(1..).unwrap_or_default())?);
        let is_array = key.ends_with("[]");
        if is_array {
            key.truncate(key.len() - 2);
        }
        if key.is_empty() {
            return Err(DecodeError::Malformed);
        }
        match map.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(if is_array {
                    Value::Array(vec![value])
                } else {
                    value
                });
            }
            Entry::Occupied(mut slot) => match slot.get_mut() {
                Value::Array(items) => items.push(value),
                single => {
                    let first = single.take();
                    *single = Value::Array(vec![first, value]);
                }
            },
        }
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(body: &str) -> Value {
        decode(body.as_bytes()).expect("decodes").value
    }

    fn encoding(body: &str) -> Encoding {
        decode(body.as_bytes()).expect("decodes").encoding
    }

    #[test]
    fn raw_json_with_leading_whitespace_is_json() {
        let body = "\n  \t{\"event\":\"stream_create\",\"appid\":\"1\"}\r\n";
        assert_eq!(encoding(body), Encoding::Json);
        assert_eq!(value(body), json!({"event": "stream_create", "appid": "1"}));
    }

    #[test]
    fn string_values_inside_json_are_never_percent_decoded() {
        let body = r#"{"AudioUrl":"https%3A%2F%2Fcdn%2Fa.mp3%3Fx%3D1","t":"a+b"}"#;
        assert_eq!(
            value(body),
            json!({"AudioUrl": "https%3A%2F%2Fcdn%2Fa.mp3%3Fx%3D1", "t": "a+b"})
        );
    }

    #[test]
    fn percent_encoded_json_is_decoded_once_with_plus_as_space() {
        // {"title":"my title+1","url":"a%2Fb"} with the inner %2F encoded again as %252F.
        let body = "%7B%22title%22%3A%22my+title%2B1%22%2C%22url%22%3A%22a%252Fb%22%7D";
        let decoded = decode(body.as_bytes()).expect("decodes");
        assert_eq!(decoded.encoding, Encoding::PercentEncodedJson);
        assert_eq!(
            decoded.value,
            json!({"title": "my title+1", "url": "a%2Fb"})
        );
    }

    #[test]
    fn percent_encoded_json_may_use_lowercase_hex_and_surrounding_whitespace() {
        let body = "  %7b%22a%22%3a1%7d\n";
        assert_eq!(encoding(body), Encoding::PercentEncodedJson);
        assert_eq!(value(body), json!({"a": 1}));
    }

    #[test]
    fn percent_encoded_text_that_is_not_json_is_malformed() {
        assert_eq!(decode(b"%7Bnot json"), Err(DecodeError::Malformed));
    }

    #[test]
    fn form_fields_treat_plus_as_space_and_percent_2b_as_plus() {
        let body = "title=my+title%2B1&extra_info=a%2Bb+c%26d%3De&empty=";
        assert_eq!(encoding(body), Encoding::Form);
        assert_eq!(
            value(body),
            json!({"title": "my title+1", "extra_info": "a+b c&d=e", "empty": ""})
        );
    }

    #[test]
    fn bracketed_keys_become_arrays_stored_under_the_bare_key() {
        let body = "rtmp_url%5B%5D=rtmp%3A%2F%2Fa&rtmp_url%5B%5D=rtmp%3A%2F%2Fb&pic_url[]=p&x=1";
        assert_eq!(
            value(body),
            json!({"rtmp_url": ["rtmp://a", "rtmp://b"], "pic_url": ["p"], "x": "1"})
        );
    }

    #[test]
    fn repeated_keys_become_arrays_in_arrival_order() {
        let body = "hls_url=a&event=e&hls_url=b&hls_url=c";
        let v = value(body);
        assert_eq!(v, json!({"hls_url": ["a", "b", "c"], "event": "e"}));
        // The first occurrence keeps its position (preserve_order).
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["hls_url", "event"]);
    }

    #[test]
    fn utf8_chinese_in_form_fields_is_decoded() {
        assert_eq!(
            value("user_name=%E5%BC%A0%E4%B8%89&room=%e6%88%bf"),
            json!({"user_name": "张三", "room": "房"})
        );
    }

    #[test]
    fn invalid_utf8_after_percent_decoding_is_malformed() {
        assert_eq!(decode(b"user_name=%E5%BC"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"k%FF=v"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"k=\xff"), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_pair_without_equals_is_malformed() {
        assert_eq!(decode(b"a=1&flag"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"a=1&"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"just some text"), Err(DecodeError::Malformed));
    }

    #[test]
    fn an_empty_key_is_malformed() {
        assert_eq!(decode(b"=v"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"a=1&[]=2"), Err(DecodeError::Malformed));
    }

    #[test]
    fn an_empty_or_blank_body_is_malformed() {
        assert_eq!(decode(b""), Err(DecodeError::Malformed));
        assert_eq!(decode(b" \r\n"), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_bad_percent_escape_is_malformed() {
        assert_eq!(decode(b"a=%zz"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"a=%4"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"a=50%"), Err(DecodeError::Malformed));
        assert_eq!(percent_decode_form(b"%g1"), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_nineteen_digit_json_number_survives_exactly() {
        let v = value(r#"{"nonce":7254119327986670314,"room_session_id":858012925204410400}"#);
        assert_eq!(v["nonce"].as_u64(), Some(7254119327986670314));
        assert_eq!(v["nonce"].to_string(), "7254119327986670314");
        assert_eq!(v["room_session_id"].to_string(), "858012925204410400");
    }

    #[test]
    fn a_top_level_array_is_never_built_as_json() {
        let junk = format!("[{}0]", "0,".repeat(100_000));
        assert_eq!(decode(junk.as_bytes()), Err(DecodeError::Malformed));
        assert_eq!(decode(b"  [1]"), Err(DecodeError::Malformed));
        // Form fields whose first key starts with `[` are still form fields.
        let form = decode(b"[=1&b=2").unwrap();
        assert_eq!(form.encoding, Encoding::Form);
        assert_eq!(form.value["["], "1");
    }

    #[test]
    fn nesting_past_the_limit_is_malformed_and_up_to_it_decodes() {
        let deep = |n: usize| format!("{}{}", "{\"a\":".repeat(n), "1".to_owned() + &"}".repeat(n));
        assert!(decode(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(
            decode(deep(MAX_DEPTH + 1).as_bytes()),
            Err(DecodeError::Malformed)
        );
        // Brackets inside strings are text, not nesting.
        let text = format!("{{\"a\":\"{}\"}}", "[{".repeat(100));
        assert!(decode(text.as_bytes()).is_ok());
        // The same rules hold for percent-encoded JSON.
        let encoded = deep(MAX_DEPTH + 1).replace('{', "%7B").replace('}', "%7D");
        assert_eq!(decode(encoded.as_bytes()), Err(DecodeError::Malformed));
    }

    #[test]
    fn an_object_of_too_many_values_is_malformed() {
        let many = format!("{{\"a\":[{}0]}}", "0,".repeat(MAX_VALUES));
        assert_eq!(decode(many.as_bytes()), Err(DecodeError::Malformed));
        let some = format!("{{\"a\":[{}0]}}", "0,".repeat(100));
        assert!(decode(some.as_bytes()).is_ok());
    }

    #[test]
    fn percent_decode_form_passes_plain_text_through() {
        assert_eq!(
            percent_decode_form(b"plain-text_1.2~").as_deref(),
            Ok("plain-text_1.2~")
        );
        assert_eq!(percent_decode_form(b"a+b%20c").as_deref(), Ok("a b c"));
    }
}
