//! Property tests for everything that reads untrusted bytes: decode, both
//! verifiers and every family's parser, fed arbitrary bytes, mutated seed
//! bodies (`tests/fixtures/seeds/`) and mutated protocol vectors
//! (`tests/fixtures/protocol-vectors.json`).
//!
//! Each property runs a small number of cases so `cargo test` stays fast;
//! `PROPTEST_CASES=20000 cargo test --test untrusted_input` runs longer.
//! A failing input is shrunk and printed, and its seed saved in
//! `tests/proptest-regressions/untrusted_input.txt` to be replayed first
//! next time (commit that file with the fix).

#[path = "api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookrelay::decode::{self, DecodeError, Decoded, Encoding};
use hookrelay::error::IngestError;
use hookrelay::event;
use hookrelay::providers::{self, FAMILIES, Family, Provider};
use hookrelay::secret::SecretString;
use hookrelay::verify::{self, VerifyError, netease, zego};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

// ---- configuration ---------------------------------------------------------

/// `default` cases, or `PROPTEST_CASES` when set.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // The default looks for a lib.rs beside the test file and finds none.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/untrusted_input.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---- corpus ----------------------------------------------------------------

fn fixtures() -> &'static Path {
    static DIR: LazyLock<std::path::PathBuf> =
        LazyLock::new(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    &DIR
}

static VECTORS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let text = std::fs::read_to_string(fixtures().join("protocol-vectors.json")).expect("vectors");
    match serde_json::from_str(&text).expect("vectors are JSON") {
        Value::Array(items) => items,
        other => panic!("vectors are not an array: {other}"),
    }
});

fn vectors_of(provider: &str) -> Vec<Value> {
    VECTORS
        .iter()
        .filter(|v| v["provider"] == provider)
        .cloned()
        .collect()
}

static ZEGO_VECTORS: LazyLock<Vec<Value>> = LazyLock::new(|| vectors_of("zego"));
static NETEASE_VECTORS: LazyLock<Vec<Value>> = LazyLock::new(|| vectors_of("netease"));

/// Every seed file and every vector body, as bytes.
static CORPUS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut paths: Vec<_> = std::fs::read_dir(fixtures().join("seeds"))
        .expect("seeds dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    paths.sort();
    let mut corpus: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("seed"))
        .collect();
    corpus.extend(
        VECTORS
            .iter()
            .map(|v| v["body"].as_str().expect("body").as_bytes().to_vec()),
    );
    assert!(corpus.len() > 50, "the corpus is loaded");
    corpus
});

/// The corpus entries that decode to JSON objects.
static SEED_OBJECTS: LazyLock<Vec<Map<String, Value>>> = LazyLock::new(|| {
    CORPUS
        .iter()
        .filter_map(|body| match decode::decode(body) {
            Ok(Decoded {
                value: Value::Object(map),
                ..
            }) if !map.is_empty() => Some(map),
            _ => None,
        })
        .collect()
});

/// Every key seen anywhere in the corpus, plus the dispatch and signing keys.
static KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    fn collect(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    out.insert(k.clone());
                    collect(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut keys: BTreeSet<String> = ["event", "Event", "EventType", "eventType", "data", "Detail"]
        .into_iter()
        .chain(zego::SIGNING_KEYS)
        .map(str::to_owned)
        .collect();
    for map in SEED_OBJECTS.iter() {
        collect(&Value::Object(map.clone()), &mut keys);
    }
    keys.into_iter().collect()
});

/// Values the parsers dispatch on: every event type and tag they know, and near misses.
const TAGS: &[&str] = &[
    "1",
    "2",
    "3",
    "4",
    "10001",
    "10002",
    "10003",
    "10004",
    "10005",
    "10006",
    "500",
    "501",
    "502",
    "503",
    "504",
    "505",
    "506",
    "507",
    "508",
    "-1",
    "0",
    "stream_create",
    "stream_close",
    "room_create",
    "room_close",
    "room_login",
    "room_logout",
    "mix_start",
    "mix_stop",
    "record",
    "compose",
    "snapshot",
    "procedure",
    "transcode_start",
    "",
];

// ---- strategies ------------------------------------------------------------

/// Byte strings that tend to sit on a decoder's edges.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"%",
    b"%7B",
    b"%7b",
    b"%2",
    b"%zz",
    b"%FF",
    b"+",
    b"&",
    b"=",
    b"[]",
    b"%5B%5D",
    b"\xff",
    b"\xe5\xbc",
    b"\0",
    b" \r\n\t",
    b"null",
    b"true",
    b"-",
    b"0.5",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"7254119327986670314",
    b"\"EventType\":",
    b"\"eventType\":50",
    b"\"event\":\"",
    b"\"data\":",
    b"\"Detail\":",
    b"[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":",
];

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    Duplicate(Index, Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| ByteEdit::Flip(i, 1 << bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| ByteEdit::Insert(i, t.to_vec())),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<Index>(), 1..16usize).prop_map(|(i, n)| ByteEdit::Remove(i, n)),
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ByteEdit::Duplicate(a, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let at = |i: &Index| i.index(bytes.len() + 1);
        match edit {
            ByteEdit::Flip(i, mask) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= mask;
            }
            ByteEdit::Set(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            ByteEdit::Insert(i, b) => {
                let i = at(i);
                bytes.splice(i..i, b.iter().copied());
            }
            ByteEdit::Remove(i, n) => {
                let i = at(i);
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            ByteEdit::Truncate(i) => {
                let i = at(i);
                bytes.truncate(i);
            }
            ByteEdit::Duplicate(a, b) => {
                let (a, b) = (at(a), at(b));
                let (from, to) = (a.min(b), a.max(b));
                let copy = bytes[from..to.min(from + 64)].to_vec();
                bytes.splice(to..to, copy);
            }
            _ => {}
        }
    }
    bytes
}

/// A corpus entry with a few byte-level edits.
fn mutated_seed() -> impl Strategy<Value = Vec<u8>> {
    (any::<Index>(), prop::collection::vec(byte_edit(), 1..6))
        .prop_map(|(i, edits)| apply(CORPUS[i.index(CORPUS.len())].clone(), &edits))
}

/// Arbitrary bytes, a corpus entry as is, or a mutated one.
fn untrusted_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        1 => "[a-z0-9%+&=\\[\\]{}\" é]{0,40}".prop_map(String::into_bytes),
        1 => any::<Index>().prop_map(|i| CORPUS[i.index(CORPUS.len())].clone()),
        5 => mutated_seed(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<Index>().prop_map(|i| KEYS[i.index(KEYS.len())].clone()),
        1 => ".{0,6}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(TAGS).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        ".{0,12}",
        "[0-9]{15,25}",
        " ?-?[0-9]{1,4}(\\.[0-9]{0,3})? ?",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        select(TAGS).prop_map(|t| t.parse::<i64>().map_or(Value::from(t), Value::from)),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep, with keys the parsers know.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum ValueEdit {
    Set(String, Value),
    SetNested(String, String, Value),
    Remove(Index),
    Tag(&'static str, &'static str, bool),
}

fn value_edit() -> impl Strategy<Value = ValueEdit> {
    prop_oneof![
        (key(), json_value()).prop_map(|(k, v)| ValueEdit::Set(k, v)),
        (select(&["data", "Detail"][..]), key(), json_value())
            .prop_map(|(o, k, v)| ValueEdit::SetNested(o.to_owned(), k, v)),
        any::<Index>().prop_map(ValueEdit::Remove),
        (
            select(&["event", "Event", "EventType", "eventType"][..]),
            select(TAGS),
            any::<bool>()
        )
            .prop_map(|(k, t, as_number)| ValueEdit::Tag(k, t, as_number)),
    ]
}

fn edit_object(mut map: Map<String, Value>, edits: &[ValueEdit]) -> Map<String, Value> {
    for edit in edits {
        match edit {
            ValueEdit::Set(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            ValueEdit::SetNested(outer, k, v) => {
                let slot = map
                    .entry(outer.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(inner) = slot {
                    inner.insert(k.clone(), v.clone());
                } else {
                    *slot = v.clone();
                }
            }
            ValueEdit::Remove(i) if !map.is_empty() => {
                let k = map.keys().nth(i.index(map.len())).cloned();
                if let Some(k) = k {
                    map.remove(&k);
                }
            }
            ValueEdit::Tag(k, t, as_number) => {
                let v = match t.parse::<i64>() {
                    Ok(n) if *as_number => Value::from(n),
                    _ => Value::from(*t),
                };
                map.insert((*k).to_owned(), v);
            }
            ValueEdit::Remove(_) => {}
        }
    }
    map
}

/// A seed object with field-level edits: keeps most of a real callback's
/// shape, so the parsers' typed branches run, not only their fallbacks.
fn mutated_seed_object() -> impl Strategy<Value = Map<String, Value>> {
    (any::<Index>(), prop::collection::vec(value_edit(), 0..6)).prop_map(|(i, edits)| {
        let seed = SEED_OBJECTS[i.index(SEED_OBJECTS.len())].clone();
        edit_object(seed, &edits)
    })
}

/// What a parser may be handed: any JSON value, a decoded untrusted body, or
/// an edited seed object.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json_value(),
        1 => untrusted_body().prop_map(|b| decode::decode(&b).map_or(Value::Null, |d| d.value)),
        3 => mutated_seed_object().prop_map(Value::Object),
    ]
}

// ---- encoders (the sender's side) -------------------------------------------

/// Percent-encodes with form rules: space as `+`; only unreserved ASCII kept.
fn form_escape_all(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Escapes only what form syntax needs. `{` is kept as is, so a first key
/// starting with it cannot turn into the `%7B` prefix of percent-encoded JSON,
/// and `"` is escaped, so no re-encoded form is ever valid JSON.
fn form_escape_min(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' => out.push('+'),
            '%' | '+' | '&' | '=' | '"' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_ascii_control() || c.is_ascii_whitespace() => {
                out.push_str(&format!("%{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Re-encodes a decoded form value (an object of strings and arrays of
/// strings) as form fields; `None` if it holds anything else.
fn encode_form(value: &Value) -> Option<String> {
    let mut pairs = Vec::new();
    for (k, v) in value.as_object()? {
        match v {
            Value::String(s) => {
                pairs.push(format!("{}={}", form_escape_min(k), form_escape_min(s)))
            }
            Value::Array(items) => {
                for item in items {
                    pairs.push(format!(
                        "{}[]={}",
                        form_escape_min(k),
                        form_escape_min(item.as_str()?)
                    ));
                }
            }
            _ => return None,
        }
    }
    Some(pairs.join("&"))
}

/// A value as a form field's text, the way a form sender would flatten it.
fn as_form_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Json,
    PrettyJson,
    PercentEncodedJson,
    Form,
}

fn wire() -> impl Strategy<Value = Wire> {
    select(
        &[
            Wire::Json,
            Wire::PrettyJson,
            Wire::PercentEncodedJson,
            Wire::Form,
        ][..],
    )
}

/// Encodes an object the way a ZEGO sender might.
fn encode(map: &Map<String, Value>, wire: Wire) -> Vec<u8> {
    let value = Value::Object(map.clone());
    match wire {
        Wire::Json => serde_json::to_vec(&value).expect("serializes"),
        Wire::PrettyJson => serde_json::to_vec_pretty(&value).expect("serializes"),
        Wire::PercentEncodedJson => form_escape_all(&value.to_string()).into_bytes(),
        Wire::Form => {
            let mut pairs = Vec::new();
            // Form syntax has no way to send an empty key, or a key ending
            // in `[]` that is not an array: a form sender drops them.
            let sendable = map
                .iter()
                .filter(|(k, v)| !k.is_empty() && (v.is_array() || !k.ends_with("[]")));
            for (k, v) in sendable {
                match v {
                    Value::Array(items) => {
                        for item in items {
                            pairs.push(format!(
                                "{}%5B%5D={}",
                                form_escape_min(k),
                                form_escape_all(&as_form_text(item))
                            ));
                        }
                    }
                    other => pairs.push(format!(
                        "{}={}",
                        form_escape_min(k),
                        form_escape_all(&as_form_text(other))
                    )),
                }
            }
            pairs.join("&").into_bytes()
        }
    }
}

// ---- assertions --------------------------------------------------------------

fn assert_4xx(error: impl Into<IngestError>) -> Result<(), TestCaseError> {
    let error = error.into();
    let status = error.status();
    prop_assert!(
        status.is_client_error(),
        "{error} answers {status}, not a 4xx"
    );
    Ok(())
}

/// JSON equality, floats compared to 1e-12 relative (serde_json's default
/// float parsing may be one ulp off after a round trip).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// A family of the registry by name.
fn fam(name: &str) -> Family {
    Family::by_name(name).expect("a registered family")
}

fn casing_for(family: Family) -> zego::Casing {
    if family == fam("cloud_player") {
        zego::Casing::Pascal
    } else {
        zego::Casing::Lower
    }
}

fn signing_keys(casing: zego::Casing) -> [&'static str; 3] {
    match casing {
        zego::Casing::Lower => ["timestamp", "nonce", "signature"],
        zego::Casing::Pascal => ["Timestamp", "Nonce", "Signature"],
    }
}

/// Decode → verify → parse for a ZEGO body, as the server runs it; every
/// error must be a 4xx. Returns whether the body verified.
fn zego_pipeline(
    family: Family,
    body: &[u8],
    secrets: &[SecretString],
    now_ms: i64,
    tolerance_secs: u64,
) -> Result<bool, TestCaseError> {
    let decoded = match decode::decode(body) {
        Ok(d) => d,
        Err(e) => {
            assert_4xx(e)?;
            return Ok(false);
        }
    };
    let fields = match zego::signing_fields(&decoded.value, casing_for(family)) {
        Ok(f) => f,
        Err(e) => {
            assert_4xx(e)?;
            return Ok(false);
        }
    };
    providers::zego::app_id(&decoded.value);
    match zego::verify(decoded.value, &fields, secrets, now_ms, tolerance_secs) {
        Ok(verified) => {
            providers::parse(family, verified.get());
            event::dedup_key(Provider::Zego, "app", verified.get(), &zego::SIGNING_KEYS);
            Ok(true)
        }
        Err(e) => {
            assert_4xx(e)?;
            Ok(false)
        }
    }
}

// ---- errors ------------------------------------------------------------------

/// Every error decode and verify can return, listed by an exhaustive match
/// so that a new variant fails to compile here until it is classified.
fn every_decode_and_verify_error() -> Vec<IngestError> {
    let decode = [DecodeError::Malformed];
    for e in &decode {
        match e {
            DecodeError::Malformed => {}
        }
    }
    let verify = [
        VerifyError::MissingSignature,
        VerifyError::BadSignature,
        VerifyError::StaleTimestamp,
        VerifyError::UnknownApp,
    ];
    for e in &verify {
        match e {
            VerifyError::MissingSignature
            | VerifyError::BadSignature
            | VerifyError::StaleTimestamp
            | VerifyError::UnknownApp => {}
        }
    }
    decode
        .into_iter()
        .map(IngestError::from)
        .chain(verify.into_iter().map(IngestError::from))
        .collect()
}

#[test]
fn every_decode_and_verify_error_is_a_4xx() {
    for error in every_decode_and_verify_error() {
        assert!(
            error.status().is_client_error(),
            "{error} answers {}",
            error.status()
        );
    }
}

// ---- decode ------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn decode_never_panics_and_rejects_with_a_4xx(body in untrusted_body()) {
        if let Err(e) = decode::decode(&body) {
            assert_4xx(e)?;
        }
    }

    #[test]
    fn percent_decode_form_never_panics_and_rejects_with_a_4xx(body in untrusted_body()) {
        if let Err(e) = decode::percent_decode_form(&body) {
            assert_4xx(e)?;
        }
    }

    #[test]
    fn a_decoded_json_body_reserialized_decodes_to_the_same_value(body in untrusted_body()) {
        if let Ok(Decoded { encoding: Encoding::Json | Encoding::PercentEncodedJson, value }) =
            decode::decode(&body)
        {
            let again = decode::decode(&serde_json::to_vec(&value).expect("serializes"));
            prop_assert!(
                again.as_ref().is_ok_and(|d| d.encoding == Encoding::Json && same_json(&d.value, &value)),
                "{value} came back as {again:?}"
            );
        }
    }

    #[test]
    fn a_decoded_form_body_reencoded_decodes_to_the_same_value(body in untrusted_body()) {
        if let Ok(Decoded { encoding: Encoding::Form, value }) = decode::decode(&body) {
            let form = encode_form(&value);
            prop_assert!(form.is_some(), "form decoded to more than strings: {value}");
            let form = form.unwrap_or_default();
            let again = decode::decode(form.as_bytes());
            prop_assert_eq!(
                again,
                Ok(Decoded { encoding: Encoding::Form, value: value.clone() }),
                "re-encoded as {:?}", form
            );
        }
    }

    /// The model: fields a sender encodes with the common encoders' rules
    /// come back as written, `k[]` and repeated keys as arrays.
    #[test]
    fn encoded_form_fields_decode_to_what_was_encoded(
        fields in prop::collection::vec(("[a-z_]{1,3}", ".{0,12}", any::<bool>()), 1..8),
    ) {
        let mut expected = Map::new();
        let mut pairs = Vec::new();
        for (k, v, bracket) in &fields {
            let key = if *bracket { format!("{k}%5B%5D") } else { k.clone() };
            pairs.push(format!("{key}={}", form_escape_all(v)));
            let v = Value::String(v.clone());
            match expected.get_mut(k) {
                None if *bracket => { expected.insert(k.clone(), Value::Array(vec![v])); }
                None => { expected.insert(k.clone(), v); }
                Some(Value::Array(items)) => items.push(v),
                Some(single) => { let first = single.take(); *single = Value::Array(vec![first, v]); }
            }
        }
        let body = pairs.join("&");
        prop_assert_eq!(
            decode::decode(body.as_bytes()),
            Ok(Decoded { encoding: Encoding::Form, value: Value::Object(expected) }),
            "body {:?}", body
        );
    }
}

// ---- verify ------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn check_fresh_never_panics(
        timestamp in prop_oneof![text(), any::<i64>().prop_map(|n| n.to_string())],
        now_ms in any::<i64>(),
        tolerance in prop_oneof![Just(0u64), 1..1_000_000u64, any::<u64>()],
    ) {
        match verify::check_fresh(&timestamp, now_ms, tolerance) {
            Ok(()) => {}
            Err(e) => {
                prop_assert_eq!(e, VerifyError::StaleTimestamp);
                prop_assert_ne!(tolerance, 0, "tolerance 0 disables the check");
                assert_4xx(e)?;
            }
        }
    }

    /// Untrusted bytes down the whole ZEGO path, verified against the
    /// vector secrets: nothing panics and every rejection is a 4xx.
    #[test]
    fn zego_decode_verify_parse_never_panics_and_rejects_with_a_4xx(
        body in untrusted_body(),
        family in select(vec![fam("cloud_player"), fam("stream"), fam("compose")]),
        now_ms in any::<i64>(),
        tolerance in prop_oneof![Just(0u64), Just(300u64), any::<u64>()],
    ) {
        let secrets: Vec<SecretString> = ["secret", "zego-test-secret"]
            .into_iter()
            .chain(ZEGO_VECTORS.iter().filter_map(|v| v["secret"].as_str()))
            .map(SecretString::new)
            .collect();
        zego_pipeline(family, &body, &secrets, now_ms, tolerance)?;
    }

    /// The mutated protocol vectors: a valid vector whose bytes changed
    /// verifies only if its signing fields still say exactly what was signed.
    #[test]
    fn mutated_zego_vectors_verify_only_with_their_signed_fields(
        i in any::<Index>(),
        edits in prop::collection::vec(byte_edit(), 0..4),
        family in select(vec![fam("cloud_player"), fam("stream"), fam("compose")]),
    ) {
        let vector = &ZEGO_VECTORS[i.index(ZEGO_VECTORS.len())];
        let secret = vector["secret"].as_str().expect("secret");
        let body = apply(vector["body"].as_str().expect("body").as_bytes().to_vec(), &edits);
        let verified = zego_pipeline(family, &body, &[SecretString::new(secret)], 0, 0)?;
        if verified {
            let value = decode::decode(&body).expect("decoded once").value;
            let fields = zego::signing_fields(&value, casing_for(family)).expect("read once");
            prop_assert_eq!(
                zego::sign(secret, &fields.timestamp, &fields.nonce),
                fields.signature.to_ascii_lowercase()
            );
        }
    }

    /// A correctly signed ZEGO body, in any encoding, verifies; it still
    /// verifies after a round trip through decode and re-encoding, and after
    /// its unsigned fields change (ZEGO signs no body field); another secret
    /// does not verify it.
    #[test]
    fn a_signed_zego_body_verifies_and_still_verifies_after_a_decode_round_trip(
        base in prop_oneof![
            mutated_seed_object(),
            prop::collection::vec((key(), json_value()), 0..6).prop_map(|kv| kv.into_iter().collect()),
        ],
        family in select(vec![fam("cloud_player"), fam("stream"), fam("compose")]),
        timestamp in prop_oneof![
            any::<u32>().prop_map(|n| Value::from(n.to_string())),
            any::<u64>().prop_map(Value::from),
            ".{1,12}".prop_map(Value::from),
        ],
        nonce in prop_oneof![
            any::<u64>().prop_map(|n| Value::from(n.to_string())),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{1,12}".prop_map(Value::from),
        ],
        secret in ".{1,24}",
        uppercase in any::<bool>(),
        wire in wire(),
        tamper in (key(), json_value()),
    ) {
        let casing = casing_for(family);
        let [ts_key, nonce_key, sig_key] = signing_keys(casing);
        let ts_text = as_form_text(&timestamp);
        let nonce_text = as_form_text(&nonce);
        let mut signature = zego::sign(&secret, &ts_text, &nonce_text);
        if uppercase {
            signature.make_ascii_uppercase();
        }
        let mut map = base;
        map.insert(ts_key.into(), timestamp);
        map.insert(nonce_key.into(), nonce);
        map.insert(sig_key.into(), Value::from(signature.clone()));
        let body = encode(&map, wire);
        // A rotation: the signing secret is second.
        let secrets = [SecretString::new(format!("{secret}-new")), SecretString::new(secret.clone())];

        let decoded = decode::decode(&body);
        prop_assert!(decoded.is_ok(), "{:?} does not decode: {decoded:?}", String::from_utf8_lossy(&body));
        let decoded = decoded.expect("checked");
        let fields = zego::signing_fields(&decoded.value, casing).expect("signed fields present");
        prop_assert_eq!(
            (&fields.timestamp, &fields.nonce, &fields.signature),
            (&ts_text, &nonce_text, &signature)
        );
        let ok = zego::verify((), &fields, &secrets, 0, 0);
        prop_assert_eq!(ok.map(|v| v.secret_position()), Ok(1));
        prop_assert!(zego_pipeline(family, &body, &secrets, 0, 0)?);

        // The round trip: re-encode what was decoded, decode, verify again.
        let mut reencoded = vec![serde_json::to_vec(&decoded.value).expect("serializes")];
        if decoded.encoding == Encoding::Form {
            reencoded.push(encode_form(&decoded.value).expect("form values").into_bytes());
        }
        for again in reencoded {
            let value = decode::decode(&again).expect("re-encoded body decodes").value;
            prop_assert_eq!(zego::signing_fields(&value, casing), Ok(fields.clone()));
            prop_assert!(zego_pipeline(family, &again, &secrets, 0, 0)?);
        }

        // Unsigned fields can change: the signature does not cover them.
        let (k, v) = tamper;
        if !zego::SIGNING_KEYS.contains(&k.as_str()) {
            let mut tampered = map.clone();
            tampered.insert(k, v);
            prop_assert!(zego_pipeline(family, &encode(&tampered, wire), &secrets, 0, 0)?);
        }

        // Another secret does not verify it.
        let other = [SecretString::new(format!("{secret}-other"))];
        prop_assert_eq!(zego::verify((), &fields, &other, 0, 0).err(), Some(VerifyError::BadSignature));
    }
}

fn netease_header_map(pairs: &[(&str, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        // Bytes a client cannot send (CR, LF, NUL) never reach the verifier.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value,
            );
        }
    }
    map
}

fn header_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        text().prop_map(String::into_bytes),
        "[0-9a-fA-F]{32}|[0-9a-fA-F]{40}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..48),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Arbitrary header bytes and bodies down the NetEase path: nothing
    /// panics and every rejection is a 4xx.
    #[test]
    fn netease_headers_and_verify_never_panic_and_reject_with_a_4xx(
        body in untrusted_body(),
        app_key in header_text(),
        cur_time in header_text(),
        md5 in header_text(),
        checksum in header_text(),
        names in select(&[["AppKey", "CurTime", "MD5", "CheckSum"], ["appkey", "curtime", "md5", "checksum"]][..]),
        now_ms in any::<i64>(),
        tolerance in prop_oneof![Just(0u64), Just(300u64), any::<u64>()],
    ) {
        let headers = netease_header_map(&[
            (names[0], app_key), (names[1], cur_time), (names[2], md5), (names[3], checksum),
        ]);
        match netease::signing_headers(&headers) {
            Err(e) => assert_4xx(e)?,
            Ok(signing) => {
                let secrets = [SecretString::new("netease-test-secret")];
                if let Err(e) = netease::verify((), &body, &signing, &secrets, now_ms, tolerance) {
                    assert_4xx(e)?;
                }
            }
        }
        if let Err(e) = decode::decode(&body) {
            assert_4xx(e)?;
        }
    }

    /// A correctly signed NetEase body verifies over its raw bytes, still does
    /// after being decoded, and any other bytes (a re-serialization of the
    /// decoded value included, unless byte-identical) do not verify.
    #[test]
    fn a_signed_netease_body_verifies_over_its_raw_bytes_only(
        body in untrusted_body(),
        secret in ".{1,24}",
        cur_time in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[ -~]{1,16}"],
        uppercase in any::<bool>(),
        edit in byte_edit(),
        family in Just(fam("cloud_play")),
    ) {
        let mut md5 = netease::body_md5(&body);
        if uppercase {
            md5.make_ascii_uppercase();
        }
        let checksum = netease::checksum(&secret, &md5, &cur_time);
        let headers = netease_header_map(&[
            ("AppKey", b"app".to_vec()),
            ("CurTime", cur_time.clone().into_bytes()),
            ("MD5", md5.into_bytes()),
            ("CheckSum", checksum.into_bytes()),
        ]);
        let signing = netease::signing_headers(&headers).expect("well-formed headers");
        let secrets = [SecretString::new(secret.clone())];
        prop_assert!(netease::verify((), &body, &signing, &secrets, 0, 0).is_ok());

        // What the server does next: decode, keep non-JSON text, parse.
        let payload = match decode::decode(&body) {
            Ok(d) => d.value,
            Err(e) => {
                assert_4xx(e)?;
                Value::String(String::from_utf8_lossy(&body).into_owned())
            }
        };
        providers::parse(family, &payload);
        event::dedup_key(Provider::Netease, "app", &payload, &[]);
        prop_assert!(netease::verify((), &body, &signing, &secrets, 0, 0).is_ok());

        let reserialized = serde_json::to_vec(&payload).expect("serializes");
        if reserialized != body {
            prop_assert_eq!(
                netease::verify((), &reserialized, &signing, &secrets, 0, 0).err(),
                Some(VerifyError::BadSignature)
            );
        }
        let changed = apply(body.clone(), &[edit]);
        if changed != body {
            prop_assert_eq!(
                netease::verify((), &changed, &signing, &secrets, 0, 0).err(),
                Some(VerifyError::BadSignature)
            );
        }
    }

    /// The NetEase vectors with their bodies or one header mutated: a changed
    /// body never verifies, and nothing answers other than 2xx or 4xx.
    #[test]
    fn mutated_netease_vectors_never_verify_a_changed_body(
        i in any::<Index>(),
        edits in prop::collection::vec(byte_edit(), 0..4),
        header in 0..5usize,
        header_value in header_text(),
    ) {
        let vector = &NETEASE_VECTORS[i.index(NETEASE_VECTORS.len())];
        let original = vector["body"].as_str().expect("body").as_bytes();
        let body = apply(original.to_vec(), &edits);
        let mut pairs: Vec<(&str, Vec<u8>)> = vector["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().expect("header text").as_bytes().to_vec()))
            .collect();
        if let Some(pair) = pairs.get_mut(header) {
            pair.1 = header_value;
        }
        let secrets = [SecretString::new(vector["secret"].as_str().expect("secret"))];
        match netease::signing_headers(&netease_header_map(&pairs)) {
            Err(e) => assert_4xx(e)?,
            Ok(signing) => match netease::verify((), &body, &signing, &secrets, 0, 0) {
                Ok(_) => prop_assert_eq!(&body[..], original, "a changed body verified"),
                Err(e) => assert_4xx(e)?,
            },
        }
    }
}

// ---- parsers -----------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    /// Every family's parser takes any payload: it never panics, is
    /// deterministic, its event serializes, and (ZEGO) the typed event never
    /// carries the signing fields.
    #[test]
    fn every_family_parses_any_payload_without_panicking(payload in payload()) {
        providers::zego::app_id(&payload);
        for family in FAMILIES {
            let parsed = providers::parse(family, &payload);
            prop_assert_eq!(&providers::parse(family, &payload), &parsed);
            prop_assert!(serde_json::to_string(&parsed.event).is_ok());
            if family.provider() == Provider::Zego
                && let Value::Object(event) = &parsed.event
            {
                for key in zego::SIGNING_KEYS {
                    prop_assert!(!event.contains_key(key), "{family:?}: {key} kept in {}", parsed.event);
                }
            }
            event::dedup_key(family.provider(), "app", &payload, &zego::SIGNING_KEYS);
        }
    }
}

// ---- over HTTP -----------------------------------------------------------------

/// One request's body and how it is signed.
#[derive(Debug, Clone)]
enum Post {
    /// Untrusted bytes, unsigned (NetEase: no headers).
    Raw(Vec<u8>),
    /// Untrusted bytes with valid NetEase headers: authentic garbage.
    SignedNetease(Vec<u8>),
    /// An edited seed object, signed for the test app now, in some encoding.
    SignedZego(Map<String, Value>, Wire),
}

fn post() -> impl Strategy<Value = Post> {
    prop_oneof![
        2 => untrusted_body().prop_map(Post::Raw),
        1 => untrusted_body().prop_map(Post::SignedNetease),
        1 => (mutated_seed_object(), wire()).prop_map(|(m, w)| Post::SignedZego(m, w)),
    ]
}

/// Arbitrary bytes, authentic-but-odd NetEase bodies and signed-but-edited
/// ZEGO bodies POSTed to every callback route of a real app never get a 5xx.
#[test]
fn untrusted_bodies_posted_to_every_callback_route_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(helpers::spawn_app());
    let mut runner = TestRunner::new(cases(64));
    let result = runner.run(&post(), |post| {
        rt.block_on(async {
            for (route, family) in FAMILIES.iter().map(|f| (f.route(), *f)) {
                let mut req = app.client.post(app.url(route));
                let body = match &post {
                    Post::Raw(body) => body.clone(),
                    Post::SignedNetease(body) => {
                        let md5 = netease::body_md5(body);
                        let cur = helpers::now_ms().to_string();
                        let sum = netease::checksum(helpers::NETEASE_SECRET, &md5, &cur);
                        req = req
                            .header("AppKey", helpers::NETEASE_APP)
                            .header("CurTime", cur)
                            .header("MD5", md5)
                            .header("CheckSum", sum);
                        body.clone()
                    }
                    Post::SignedZego(map, wire) => {
                        let casing = casing_for(family);
                        let [ts_key, nonce_key, sig_key] = signing_keys(casing);
                        let ts = helpers::now_secs().to_string();
                        let nonce = fastrand::u64(..).to_string();
                        let mut map = map.clone();
                        map.insert("appid".into(), helpers::ZEGO_APP.into());
                        map.insert("AppID".into(), helpers::ZEGO_APP.into());
                        map.insert(
                            sig_key.into(),
                            zego::sign(helpers::ZEGO_SECRET, &ts, &nonce).into(),
                        );
                        map.insert(ts_key.into(), ts.into());
                        map.insert(nonce_key.into(), nonce.into());
                        encode(&map, *wire)
                    }
                };
                let response = req.body(body).send().await.expect("request sent");
                let status = response.status();
                prop_assert!(
                    !status.is_server_error(),
                    "{route} answered {status}: {:?}",
                    response.text().await
                );
            }
            Ok(())
        })
    });
    rt.block_on(app.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
