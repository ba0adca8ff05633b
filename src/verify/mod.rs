//! Signatures and clocks: proving a callback came from the vendor.
//!
//! Each vendor module reads its signing inputs ([`zego::signing_fields`],
//! [`netease::signing_headers`]) and then checks them against the app's
//! secrets. Checks run in a fixed order, so the error says what is really
//! wrong: missing fields, then the signature, then freshness. A correctly
//! signed old request is [`VerifyError::StaleTimestamp`]; a forged one is
//! [`VerifyError::BadSignature`] whatever its timestamp.
//!
//! Success is a [`Verified<T>`], a value only this module can build, so code
//! downstream (the spool) can demand proof instead of trusting a flag.
//!
//! An app may hold several secrets during a rotation, newest first. Each is
//! tried in order and the position that matched is recorded, so operators can
//! see when the old secret stops being used and retire it.

pub mod netease;
pub mod zego;

use crate::secret::SecretString;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature fields are missing")]
    MissingSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp is outside the tolerance window")]
    StaleTimestamp,
    #[error("no app is configured for this app id")]
    UnknownApp,
}

impl VerifyError {
    /// The stable machine code for responses and logs.
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::MissingSignature => "missing_signature",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::UnknownApp => "unknown_app",
        }
    }
}

/// Proof that `T` passed signature verification. Only this module (and its
/// children) can build one: the fields are private and so is the constructor.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    secret_position: usize,
}

impl<T> Verified<T> {
    fn new(value: T, secret_position: usize) -> Self {
        Self {
            value,
            secret_position,
        }
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }

    /// Which of the app's secrets matched (0 = newest).
    pub fn secret_position(&self) -> usize {
        self.secret_position
    }

    /// Transforms the verified value while keeping the proof: what is built
    /// from a verified payload is as trustworthy as the payload. Crate-only,
    /// and every verifier proves a real value (NetEase: the body bytes), so
    /// no `Verified<()>` exists to be turned into anything.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified {
            value: f(self.value),
            secret_position: self.secret_position,
        }
    }
}

/// Values at or above this are milliseconds: as seconds they would lie past
/// the year 5000, as milliseconds they are after 1973. ZEGO sends seconds
/// (its AI and ASR families milliseconds), NetEase milliseconds (seconds are
/// seen too), so the unit is read off the value rather than configured.
const MS_THRESHOLD: i64 = 100_000_000_000;

/// Freshness check shared by both vendors. `now_ms` is Unix ms.
///
/// `tolerance_secs == 0` disables the check (neither vendor documents a
/// window, and replayed test vectors carry old timestamps). Otherwise the
/// timestamp must be an integer, in seconds or milliseconds, within
/// `tolerance_secs` of now in either direction; anything else, including a
/// timestamp that is not an integer, is [`VerifyError::StaleTimestamp`]
/// because a request whose age cannot be told cannot be called fresh.
pub fn check_fresh(timestamp: &str, now_ms: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    if tolerance_secs == 0 {
        return Ok(());
    }
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::StaleTimestamp)?;
    // i128 so that no timestamp, however absurd, can overflow the arithmetic.
    let tolerance = i128::from(tolerance_secs);
    let within = if ts >= MS_THRESHOLD {
        (i128::from(now_ms) - i128::from(ts)).abs() <= tolerance * 1000
    } else {
        // Compare whole seconds with whole seconds: a sender truncates its
        // clock to seconds, so truncate ours the same way.
        (i128::from(now_ms.div_euclid(1000)) - i128::from(ts)).abs() <= tolerance
    };
    if within {
        Ok(())
    } else {
        Err(VerifyError::StaleTimestamp)
    }
}

/// A hex digest as bytes, accepting either case: vendors document lowercase,
/// but an uppercase digest is the same digest and rejecting it buys nothing.
/// Wrong length or non-hex text is `None`.
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The position of the first secret whose digest equals `received`, compared
/// in constant time so a forger learns nothing from response timing.
fn matching_secret<const N: usize>(
    secrets: &[SecretString],
    received: &[u8; N],
    digest: impl Fn(&str) -> [u8; N],
) -> Option<usize> {
    secrets
        .iter()
        .position(|secret| bool::from(digest(secret.expose())[..].ct_eq(&received[..])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{self, Encoding};
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use md5::{Digest as _, Md5};
    use serde_json::Value;
    use sha1::Sha1;

    const NOW_MS: i64 = 1_700_000_000_000;

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(VerifyError::MissingSignature.code(), "missing_signature");
        assert_eq!(VerifyError::BadSignature.code(), "bad_signature");
        assert_eq!(VerifyError::StaleTimestamp.code(), "stale_timestamp");
        assert_eq!(VerifyError::UnknownApp.code(), "unknown_app");
    }

    #[test]
    fn second_timestamps_within_tolerance_are_fresh_and_outside_are_stale() {
        let now_s = NOW_MS / 1000;
        assert_eq!(check_fresh(&now_s.to_string(), NOW_MS, 300), Ok(()));
        assert_eq!(check_fresh(&(now_s - 300).to_string(), NOW_MS, 300), Ok(()));
        assert_eq!(check_fresh(&(now_s + 300).to_string(), NOW_MS, 300), Ok(()));
        assert_eq!(
            check_fresh(&(now_s - 301).to_string(), NOW_MS, 300),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            check_fresh(&(now_s + 301).to_string(), NOW_MS, 300),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn millisecond_timestamps_within_tolerance_are_fresh_and_outside_are_stale() {
        assert_eq!(check_fresh(&NOW_MS.to_string(), NOW_MS, 300), Ok(()));
        assert_eq!(
            check_fresh(&(NOW_MS - 300_000).to_string(), NOW_MS, 300),
            Ok(())
        );
        assert_eq!(
            check_fresh(&(NOW_MS + 299_999).to_string(), NOW_MS, 300),
            Ok(())
        );
        assert_eq!(
            check_fresh(&(NOW_MS - 300_001).to_string(), NOW_MS, 300),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            check_fresh(&(NOW_MS + 300_001).to_string(), NOW_MS, 300),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn zero_tolerance_disables_the_freshness_check() {
        assert_eq!(check_fresh("1470820198", NOW_MS, 0), Ok(()));
        assert_eq!(check_fresh("not a number", NOW_MS, 0), Ok(()));
        assert_eq!(check_fresh("", NOW_MS, 0), Ok(()));
    }

    #[test]
    fn a_timestamp_that_is_not_an_integer_is_stale_when_checked() {
        for ts in [
            "",
            "abc",
            "1700000000.0",
            " 1700000000",
            "1e9",
            "99999999999999999999",
        ] {
            assert_eq!(
                check_fresh(ts, NOW_MS, 300),
                Err(VerifyError::StaleTimestamp),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        assert_eq!(
            check_fresh(&i64::MIN.to_string(), i64::MAX, u64::MAX / 2000),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(check_fresh(&i64::MAX.to_string(), i64::MAX, 1), Ok(()));
    }

    #[test]
    fn verified_map_keeps_the_secret_position() {
        let v = Verified::new(2u8, 1).map(|n| n.to_string());
        assert_eq!(v.get(), "2");
        assert_eq!(v.secret_position(), 1);
        assert_eq!(v.into_inner(), "2");
    }

    // ---- protocol vectors -------------------------------------------------

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/protocol-vectors.json"
    );

    /// Every key a vector's `expected` may carry. A new key fails the test, so
    /// a policy added to the vectors cannot go unnoticed here.
    const KNOWN_EXPECTED_KEYS: [&str; 15] = [
        "valid_signature",
        "sha1_input",
        "signature",
        "event_kind",
        "key_fields",
        "wrong_if_numeric_sort",
        "wrong_if_nonce_parsed_as_f64",
        "body_md5",
        "checksum_input",
        "expected_checksum",
        "md5_if_reserialized_pretty",
        "md5_if_gbk_encoded",
        "md5_header_sent",
        "reason",
        "policy_dependent",
    ];

    fn load_vectors() -> Vec<Value> {
        let text = std::fs::read_to_string(VECTORS).expect("read protocol vectors");
        match serde_json::from_str(&text).expect("vectors are JSON") {
            Value::Array(items) => items,
            other => panic!("vectors are not an array: {other}"),
        }
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
    }

    fn sha1_hex(input: &str) -> String {
        hex::encode(Sha1::digest(input.as_bytes()))
    }

    /// Unix ms for a vector's timestamp, in either unit.
    fn as_now_ms(ts: &str) -> i64 {
        let ts: i64 = ts.parse().expect("vector timestamps are integers");
        if ts >= MS_THRESHOLD { ts } else { ts * 1000 }
    }

    fn casing_for(family: &str) -> zego::Casing {
        match family {
            "zego-cloudplayer" | "zego-stream-pascal" | "zego-moderation-pascal" => {
                zego::Casing::Pascal
            }
            _ => zego::Casing::Lower,
        }
    }

    /// Checks `key_fields` against the decoded object where they are
    /// comparable: top-level keys whose JSON type matches, and `<key>_count`
    /// as an array length. Returns how many were checked.
    fn check_key_fields(name: &str, expected: &Value, decoded: &Value, strict: bool) -> usize {
        let mut checked = 0;
        let Some(fields) = expected["key_fields"].as_object() else {
            return 0;
        };
        for (key, want) in fields {
            if let Some(base) = key.strip_suffix("_count")
                && let Some(items) = decoded.get(base).and_then(Value::as_array)
            {
                assert_eq!(Some(items.len() as u64), want.as_u64(), "{name}: {key}");
                checked += 1;
                continue;
            }
            match (decoded.get(key), want) {
                (Some(got @ Value::String(_)), Value::String(_))
                | (Some(got @ Value::Number(_)), Value::Number(_)) => {
                    assert_eq!(got, want, "{name}: key field {key}");
                    checked += 1;
                }
                (got, Value::String(_)) if strict => {
                    panic!("{name}: key field {key} should be the string {want}, got {got:?}")
                }
                _ => {}
            }
        }
        checked
    }

    fn check_zego_vector(v: &Value) -> usize {
        let name = s(v, "name");
        let expected = &v["expected"];
        let secret = s(v, "secret");
        let valid = expected["valid_signature"]
            .as_bool()
            .expect("valid_signature");

        let decoded = decode::decode(s(v, "body").as_bytes())
            .unwrap_or_else(|e| panic!("{name}: body does not decode: {e}"));
        let fields = zego::signing_fields(&decoded.value, casing_for(s(v, "family")))
            .unwrap_or_else(|e| panic!("{name}: no signing fields: {e}"));

        // The documented algorithm, spelled out independently of `sign`.
        let mut parts = [secret, fields.timestamp.as_str(), fields.nonce.as_str()];
        parts.sort_unstable();
        assert_eq!(
            parts.concat(),
            s(expected, "sha1_input"),
            "{name}: sorted join"
        );
        assert_eq!(
            zego::sign(secret, &fields.timestamp, &fields.nonce),
            s(expected, "signature"),
            "{name}: sign"
        );
        assert_eq!(
            sha1_hex(s(expected, "sha1_input")),
            s(expected, "signature"),
            "{name}"
        );

        let secrets = [SecretString::new(secret)];
        let result = zego::verify((), &fields, &secrets, NOW_MS, 0);
        if valid {
            assert_eq!(result.map(|ok| ok.secret_position()), Ok(0), "{name}");
            // Freshness applies after the signature: fresh at its own time, stale a day later.
            let at = as_now_ms(&fields.timestamp);
            assert!(
                zego::verify((), &fields, &secrets, at, 300).is_ok(),
                "{name}"
            );
            assert_eq!(
                zego::verify((), &fields, &secrets, at + 86_400_000, 300).err(),
                Some(VerifyError::StaleTimestamp),
                "{name}"
            );
        } else {
            assert_eq!(result.err(), Some(VerifyError::BadSignature), "{name}");
        }

        if let Some(wrong) = expected.get("wrong_if_numeric_sort") {
            assert_eq!(
                sha1_hex(s(wrong, "sha1_input")),
                s(wrong, "signature"),
                "{name}"
            );
            assert_ne!(s(wrong, "signature"), fields.signature, "{name}");
        }
        if let Some(wrong) = expected.get("wrong_if_nonce_parsed_as_f64") {
            // The nonce really was > 2^53, and it reached us intact.
            let f64_nonce = s(wrong, "nonce");
            assert_eq!(
                decoded.value["nonce"]
                    .as_f64()
                    .map(|f| f as u64)
                    .map(|n| n.to_string()),
                Some(f64_nonce.to_owned())
            );
            assert_ne!(fields.nonce, f64_nonce, "{name}");
            assert_eq!(
                zego::sign(secret, &fields.timestamp, f64_nonce),
                s(wrong, "signature")
            );
            let lossy = zego::SigningFields {
                nonce: f64_nonce.to_owned(),
                ..fields.clone()
            };
            assert_eq!(
                zego::verify((), &lossy, &secrets, NOW_MS, 0).err(),
                Some(VerifyError::BadSignature),
                "{name}"
            );
        }

        let strict = decoded.encoding != Encoding::Json;
        check_key_fields(name, expected, &decoded.value, strict)
    }

    fn check_netease_vector(v: &Value) -> usize {
        let name = s(v, "name");
        let expected = &v["expected"];
        let secret = s(v, "secret");
        let body = s(v, "body").as_bytes();
        let valid = expected["valid_signature"]
            .as_bool()
            .expect("valid_signature");

        let mut map = HeaderMap::new();
        for (key, value) in v["headers"].as_object().expect("headers") {
            map.insert(
                HeaderName::from_bytes(key.as_bytes()).expect("header name"),
                HeaderValue::from_str(value.as_str().expect("header value")).expect("value"),
            );
        }
        let headers = netease::signing_headers(&map)
            .unwrap_or_else(|e| panic!("{name}: no signing headers: {e}"));
        assert_eq!(
            headers.app_key.as_deref(),
            v["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("AppKey")))
                .and_then(|(_, v)| v.as_str()),
            "{name}: AppKey"
        );

        let body_md5 = s(expected, "body_md5");
        assert_eq!(netease::body_md5(body), body_md5, "{name}: body md5");
        let checksum_input = format!("{secret}{body_md5}{}", headers.cur_time);
        assert_eq!(checksum_input, s(expected, "checksum_input"), "{name}");
        assert_eq!(
            netease::checksum(secret, body_md5, &headers.cur_time),
            s(expected, "expected_checksum"),
            "{name}: checksum"
        );
        assert_eq!(
            sha1_hex(&checksum_input),
            s(expected, "expected_checksum"),
            "{name}"
        );

        let secrets = [SecretString::new(secret)];
        let result = netease::verify((), body, &headers, &secrets, NOW_MS, 0);
        if valid {
            assert_eq!(result.map(|ok| ok.secret_position()), Ok(0), "{name}");
            let at = as_now_ms(&headers.cur_time);
            assert!(
                netease::verify((), body, &headers, &secrets, at, 300).is_ok(),
                "{name}"
            );
            assert_eq!(
                netease::verify((), body, &headers, &secrets, at - 86_400_000, 300).err(),
                Some(VerifyError::StaleTimestamp),
                "{name}"
            );
        } else {
            assert_eq!(result.err(), Some(VerifyError::BadSignature), "{name}");
        }

        match expected.get("reason").and_then(Value::as_str) {
            Some("body_md5_mismatch") => {
                assert!(!headers.md5.eq_ignore_ascii_case(body_md5), "{name}");
            }
            Some("checksum_mismatch") => {
                assert!(headers.md5.eq_ignore_ascii_case(body_md5), "{name}");
                let sent = netease::checksum(secret, &headers.md5, &headers.cur_time);
                assert!(!headers.checksum.eq_ignore_ascii_case(&sent), "{name}");
            }
            Some(other) => panic!("{name}: unknown reason {other}"),
            None => {}
        }
        if let Some(sent) = expected.get("md5_header_sent") {
            assert_eq!(Some(headers.md5.as_str()), sent.as_str(), "{name}");
        }
        if expected.get("policy_dependent").and_then(Value::as_bool) == Some(true) {
            // Policy: uppercase hex is the same digest; CheckSum covers the MD5 text as sent.
            assert!(
                headers.md5.bytes().any(|b| b.is_ascii_uppercase()),
                "{name}"
            );
            assert_eq!(
                netease::checksum(secret, &headers.md5, &headers.cur_time),
                headers.checksum.to_ascii_lowercase(),
                "{name}"
            );
            assert!(valid, "{name}: uppercase hex headers are accepted");
        }
        if let Some(pretty) = expected
            .get("md5_if_reserialized_pretty")
            .and_then(Value::as_str)
        {
            let reserialized =
                serde_json::to_string_pretty(&decode::decode(body).expect("decodes").value)
                    .expect("serializes");
            assert_eq!(netease::body_md5(reserialized.as_bytes()), pretty, "{name}");
            assert_ne!(pretty, body_md5, "{name}");
        }
        if let Some(gbk) = expected.get("md5_if_gbk_encoded").and_then(Value::as_str) {
            assert_ne!(gbk, body_md5, "{name}");
        }

        match decode::decode(body) {
            Ok(decoded) => check_key_fields(name, expected, &decoded.value, false),
            Err(_) => {
                // Only the doc's own broken 505 example (or the empty probe) fails to decode.
                let wants_error = expected["key_fields"]["json_parse"].as_str() == Some("error");
                assert!(
                    wants_error || body.is_empty(),
                    "{name}: body does not decode"
                );
                0
            }
        }
    }

    #[test]
    fn every_protocol_vector_verifies_as_expected() {
        let vectors = load_vectors();
        let (mut zego_count, mut netease_count, mut invalid, mut key_fields) = (0, 0, 0, 0);
        for v in &vectors {
            let name = s(v, "name");
            let expected = v["expected"].as_object().expect("expected");
            for key in expected.keys() {
                assert!(
                    KNOWN_EXPECTED_KEYS.contains(&key.as_str()),
                    "{name}: new key {key}"
                );
            }
            if expected["valid_signature"] == Value::Bool(false) {
                invalid += 1;
            }
            match s(v, "provider") {
                "zego" => {
                    key_fields += check_zego_vector(v);
                    zego_count += 1;
                }
                "netease" => {
                    key_fields += check_netease_vector(v);
                    netease_count += 1;
                }
                other => panic!("{name}: unknown provider {other}"),
            }
        }
        assert_eq!(vectors.len(), 53);
        assert_eq!((zego_count, netease_count), (32, 21));
        assert_eq!(
            invalid, 5,
            "two ZEGO and three NetEase vectors are forgeries"
        );
        // Top-level key fields whose JSON type matches the decoded body; pins
        // the comparison so a decoding regression cannot silently skip them.
        assert_eq!(key_fields, 93, "key fields compared across all vectors");
    }

    #[test]
    fn form_and_percent_encoded_vectors_decode_their_key_fields() {
        let vectors = load_vectors();
        let (mut seen, mut checked) = (0, 0);
        for v in &vectors {
            let Ok(decoded) = decode::decode(s(v, "body").as_bytes()) else {
                continue;
            };
            if decoded.encoding == Encoding::Json {
                continue;
            }
            seen += 1;
            checked += check_key_fields(s(v, "name"), &v["expected"], &decoded.value, true);
        }
        // The official form vector (no key fields), two form stream_create
        // bodies (6 + 2 fields) and one percent-encoded body (1 field).
        assert_eq!((seen, checked), (4, 9));
        let php = vectors
            .iter()
            .find(|v| v["name"] == "zego_stream_create_form_php_arrays")
            .expect("php arrays vector");
        let value = decode::decode(s(php, "body").as_bytes())
            .expect("decodes")
            .value;
        assert_eq!(value["title"], "my title+1");
        assert_eq!(value["user_name"], "张三");
    }

    #[test]
    fn body_md5_is_over_raw_bytes_not_a_reserialization() {
        let body = br#"{"a": 1}"#;
        assert_eq!(netease::body_md5(body), hex::encode(Md5::digest(body)));
        assert_ne!(netease::body_md5(body), netease::body_md5(br#"{"a":1}"#));
    }
}
