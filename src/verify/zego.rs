//! ZEGO callback signatures.
//!
//! `signature = sha1_hex(join(sort_bytewise([secret, timestamp, nonce])))`:
//! the three strings are sorted in plain byte order (PHP `sort(SORT_STRING)`,
//! Java `Arrays.sort`), concatenated without a separator and hashed. The body
//! is not covered, so a captured request can be replayed with another body;
//! freshness ([`super::check_fresh`]) and the spool's signature-replay check
//! are the only defences.

use super::{Verified, VerifyError, check_fresh, matching_secret, parse_hex};
use crate::secret::SecretString;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// Which spelling of the signing keys a family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Casing {
    /// `timestamp`/`nonce`/`signature`: the stream, room, mix and compose families.
    Lower,
    /// `Timestamp`/`Nonce`/`Signature`: cloud player/upload, transcoding, moderation, AI.
    Pascal,
}

impl Casing {
    /// `[timestamp, nonce, signature]` in this casing.
    fn keys(self) -> [&'static str; 3] {
        match self {
            Casing::Lower => ["timestamp", "nonce", "signature"],
            Casing::Pascal => ["Timestamp", "Nonce", "Signature"],
        }
    }

    fn other(self) -> Casing {
        match self {
            Casing::Lower => Casing::Pascal,
            Casing::Pascal => Casing::Lower,
        }
    }
}

/// The signing inputs exactly as the sender wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningFields {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

/// Keys that are signing fields in either casing (the dedup key ignores them).
pub const SIGNING_KEYS: [&str; 6] = [
    "timestamp",
    "nonce",
    "signature",
    "Timestamp",
    "Nonce",
    "Signature",
];

/// Reads the signing fields from a decoded payload (must be a JSON object,
/// else [`VerifyError::MissingSignature`]).
///
/// Each key is looked up in the family's own casing first and in the other
/// casing only when that key is absent. The family's casing wins because a
/// body may carry both (`zego_cloudplayer_mixed_case_keys`): merging keys
/// case-insensitively would let an unsigned lowercase decoy shadow the real
/// PascalCase value.
///
/// Values keep their exact text: a string's contents, or a number's text as
/// serde_json holds it (`u64`/`i64` digits, never an `f64` re-rendering).
/// ZEGO signs the text it sent, and nonces such as `7254119327986670314`
/// exceed 2^53, so any float round trip would change them. A field that is
/// absent, empty, or neither a string nor a number is missing.
pub fn signing_fields(payload: &Value, casing: Casing) -> Result<SigningFields, VerifyError> {
    let map = payload.as_object().ok_or(VerifyError::MissingSignature)?;
    let (own, other) = (casing.keys(), casing.other().keys());
    let field = |i: usize| {
        map.get(own[i])
            .or_else(|| map.get(other[i]))
            .and_then(exact_text)
            .ok_or(VerifyError::MissingSignature)
    };
    Ok(SigningFields {
        timestamp: field(0)?,
        nonce: field(1)?,
        signature: field(2)?,
    })
}

fn exact_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The signature ZEGO would send (lowercase hex) — also used by the `send`
/// subcommand and tests.
pub fn sign(secret: &str, timestamp: &str, nonce: &str) -> String {
    hex::encode(digest(secret, timestamp, nonce))
}

/// SHA-1 over the byte-wise sorted parts, fed piecewise: no joined string.
/// Sorting byte slices is exactly PHP's `SORT_STRING` order; a numeric sort
/// would differ (nonce `99` vs timestamp `1470820198`).
fn digest(secret: &str, timestamp: &str, nonce: &str) -> [u8; 20] {
    let mut parts = [secret.as_bytes(), timestamp.as_bytes(), nonce.as_bytes()];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Verifies `fields` against each secret in order, then freshness.
///
/// The received signature is compared as bytes, so uppercase hex passes too.
/// A signature that is not 40 hex digits cannot match any secret and is
/// [`VerifyError::BadSignature`]; so is an empty `secrets`.
pub fn verify<T>(
    payload: T,
    fields: &SigningFields,
    secrets: &[SecretString],
    now_ms: i64,
    tolerance_secs: u64,
) -> Result<Verified<T>, VerifyError> {
    let received: [u8; 20] = parse_hex(&fields.signature).ok_or(VerifyError::BadSignature)?;
    let position = matching_secret(secrets, &received, |secret| {
        digest(secret, &fields.timestamp, &fields.nonce)
    })
    .ok_or(VerifyError::BadSignature)?;
    check_fresh(&fields.timestamp, now_ms, tolerance_secs)?;
    Ok(Verified::new(payload, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OFFICIAL_SIG: &str = "5bd59fd62953a8059fb7eaba95720f66d19e4517";

    fn fields(timestamp: &str, nonce: &str, signature: &str) -> SigningFields {
        SigningFields {
            timestamp: timestamp.into(),
            nonce: nonce.into(),
            signature: signature.into(),
        }
    }

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::new(*s)).collect()
    }

    #[test]
    fn the_official_vector_signs_and_verifies() {
        assert_eq!(sign("secret", "1470820198", "123412"), OFFICIAL_SIG);
        let f = fields("1470820198", "123412", OFFICIAL_SIG);
        let ok = verify("body", &f, &secrets(&["secret"]), 0, 0).expect("verifies");
        assert_eq!(*ok.get(), "body");
        assert_eq!(ok.secret_position(), 0);
    }

    #[test]
    fn an_uppercase_signature_is_the_same_digest() {
        let f = fields("1470820198", "123412", &OFFICIAL_SIG.to_ascii_uppercase());
        assert!(verify((), &f, &secrets(&["secret"]), 0, 0).is_ok());
    }

    #[test]
    fn a_malformed_or_wrong_signature_is_bad() {
        let s = secrets(&["secret"]);
        for sig in [
            "zz",
            "5bd59fd6",
            "5bd59fd62953a8059fb7eaba95720f66d19e451g",
            "6f9452cf95a9b034b18690137148a4ae208635a2",
        ] {
            let f = fields("1470820198", "123412", sig);
            assert_eq!(
                verify((), &f, &s, 0, 0).err(),
                Some(VerifyError::BadSignature),
                "{sig}"
            );
        }
        let f = fields("1470820198", "123412", OFFICIAL_SIG);
        assert_eq!(
            verify((), &f, &[], 0, 0).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_body_signed_with_the_old_secret_verifies_at_position_one() {
        let sig = sign("old", "1470820198", "123412");
        let f = fields("1470820198", "123412", &sig);
        let ok = verify((), &f, &secrets(&["new", "old"]), 0, 0).expect("verifies");
        assert_eq!(ok.secret_position(), 1);
        let ok = verify((), &f, &secrets(&["old", "new"]), 0, 0).expect("verifies");
        assert_eq!(ok.secret_position(), 0);
    }

    #[test]
    fn the_signature_is_checked_before_freshness() {
        let now_ms = 1_470_820_198_000 + 3_600_000;
        let s = secrets(&["secret"]);
        let good = fields("1470820198", "123412", OFFICIAL_SIG);
        assert_eq!(
            verify((), &good, &s, now_ms, 300).err(),
            Some(VerifyError::StaleTimestamp)
        );
        assert!(verify((), &good, &s, now_ms, 3600).is_ok());
        let forged = fields("1470820198", "123412", &"0".repeat(40));
        assert_eq!(
            verify((), &forged, &s, now_ms, 300).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn json_numbers_are_signed_as_their_exact_text() {
        let payload = json!({"timestamp": 1687981272, "nonce": 7254119327986670314u64, "signature": "x", "neg": -5});
        let f = signing_fields(&payload, Casing::Lower).expect("fields");
        assert_eq!(f, fields("1687981272", "7254119327986670314", "x"));
        let parsed: Value =
            serde_json::from_str(r#"{"timestamp":-1,"nonce":1.5,"signature":"s"}"#).unwrap();
        let f = signing_fields(&parsed, Casing::Lower).expect("fields");
        assert_eq!((f.timestamp.as_str(), f.nonce.as_str()), ("-1", "1.5"));
    }

    #[test]
    fn the_family_casing_wins_over_the_other_casing() {
        let payload = json!({
            "Timestamp": "1681221510", "Nonce": "abcdd22113", "Signature": "S",
            "timestamp": "2", "nonce": "1", "signature": "s",
        });
        let pascal = signing_fields(&payload, Casing::Pascal).expect("fields");
        assert_eq!(pascal, fields("1681221510", "abcdd22113", "S"));
        let lower = signing_fields(&payload, Casing::Lower).expect("fields");
        assert_eq!(lower, fields("2", "1", "s"));
    }

    #[test]
    fn the_other_casing_is_used_only_for_absent_keys() {
        let payload = json!({"Timestamp": "1", "Nonce": "2", "Signature": "3"});
        assert_eq!(
            signing_fields(&payload, Casing::Lower),
            Ok(fields("1", "2", "3"))
        );
        let mixed = json!({"timestamp": "1", "Nonce": "2", "signature": "3", "nonce": "n"});
        assert_eq!(
            signing_fields(&mixed, Casing::Pascal),
            Ok(fields("1", "2", "3"))
        );
    }

    #[test]
    fn absent_empty_or_non_scalar_fields_are_missing() {
        let missing = Err(VerifyError::MissingSignature);
        assert_eq!(
            signing_fields(&json!({"timestamp": "1", "nonce": "2"}), Casing::Lower),
            missing
        );
        assert_eq!(
            signing_fields(
                &json!({"timestamp": "", "nonce": "2", "signature": "3"}),
                Casing::Lower
            ),
            missing
        );
        assert_eq!(
            signing_fields(
                &json!({"timestamp": null, "nonce": "2", "signature": "3"}),
                Casing::Lower
            ),
            missing
        );
        assert_eq!(
            signing_fields(
                &json!({"timestamp": ["1"], "nonce": "2", "signature": "3"}),
                Casing::Lower
            ),
            missing
        );
        assert_eq!(
            signing_fields(&json!(["timestamp"]), Casing::Lower),
            missing
        );
        assert_eq!(signing_fields(&json!("text"), Casing::Pascal), missing);
    }

    #[test]
    fn signing_keys_cover_both_casings() {
        for casing in [Casing::Lower, Casing::Pascal] {
            for key in casing.keys() {
                assert!(SIGNING_KEYS.contains(&key));
            }
        }
    }
}
