//! ZEGO callback families.
//!
//! Every ZEGO family signs with `timestamp`, `nonce` and `signature` fields in
//! the body (PascalCase in the cloud-player family). Those fields say nothing
//! about the event and change on every re-signed retry, so no typed event
//! carries them and [`without_signing`] drops them from unknown events.

pub mod cloud_player;
pub mod compose;
pub mod stream;

use crate::decode::{self, DecodeError};
use crate::error::IngestError;
use crate::providers::lenient::string_value;
use crate::providers::{AuthContext, Authenticate, Authenticated, Provider, SignInput};
use crate::verify::zego::Casing;
use crate::verify::{self, Verified, VerifyError};
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// ZEGO's proof: `timestamp`/`nonce`/`signature` fields in the body, in the
/// family's casing, signed with the app's CallbackSecret.
///
/// The signature does not cover the body, so it is remembered (the replay
/// key: app + signature) and refused with another payload while its
/// timestamp can still be fresh.
pub struct ZegoSignature(pub Casing);

/// The credential keys: never stored or delivered.
const CREDENTIAL_KEYS: [&str; 2] = ["signature", "Signature"];

impl Authenticate for ZegoSignature {
    fn authenticate(
        &self,
        context: AuthContext<'_>,
        _headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Verified<Authenticated>, IngestError> {
        let payload = decode::decode(body)?.value;
        if !payload.is_object() {
            return Err(DecodeError::Malformed.into());
        }
        let fields = verify::zego::signing_fields(&payload, self.0)?;
        let app = context
            .find_app(Provider::Zego, app_id(&payload).as_deref())
            .ok_or(VerifyError::UnknownApp)?;
        let authenticated = Authenticated {
            replay_key: Some(signature_key(&app.app_id, &fields.signature)),
            app_id: app.app_id.clone(),
            payload,
            volatile_keys: &SIGNING_KEYS,
            credential_keys: &CREDENTIAL_KEYS,
            probe: false,
        };
        Ok(verify::zego::verify(
            authenticated,
            &fields,
            &app.secrets,
            now_ms,
            context.tolerance_secs,
        )?)
    }

    fn sign(
        &self,
        input: SignInput<'_>,
        app_id: &str,
        secret: &str,
        now_ms: u64,
    ) -> anyhow::Result<(Vec<(String, String)>, String)> {
        let mut payload = match input {
            SignInput::Generated(Value::Object(map)) => map,
            SignInput::Generated(_) => anyhow::bail!("a ZEGO payload is a JSON object"),
            SignInput::Given(body) => {
                let decoded = decode::decode(body)
                    .map_err(|e| anyhow::anyhow!("the body is not a ZEGO payload: {e}"))?
                    .value;
                let Value::Object(mut map) = decoded else {
                    anyhow::bail!("the body is not a JSON object (nor form fields)");
                };
                for key in SIGNING_KEYS {
                    map.shift_remove(key);
                }
                // The receiver picks the app (and secret) by the id the body
                // names: make it name the app we sign for, in the same type.
                for key in ["appid", "AppID", "AppId", "Appid"] {
                    if let Some(value) = map.get_mut(key) {
                        *value = match (&*value, app_id.parse::<u64>()) {
                            (Value::Number(_), Ok(n)) => Value::from(n),
                            _ => Value::String(app_id.to_owned()),
                        };
                    }
                }
                map
            }
        };
        let ts = (now_ms / 1000).to_string();
        let nonce =
            fastrand::u64(1_000_000_000_000_000_000..10_000_000_000_000_000_000).to_string();
        let signature = verify::zego::sign(secret, &ts, &nonce);
        let [t, n, s] = match self.0 {
            Casing::Pascal => ["Timestamp", "Nonce", "Signature"],
            Casing::Lower => ["timestamp", "nonce", "signature"],
        };
        if payload.contains_key(t) {
            // Samples hold placeholders where the vendors put the fields
            // (right after the app id): fill them in place.
            payload.insert(t.to_owned(), Value::String(ts));
            payload.insert(n.to_owned(), Value::String(nonce));
            payload.insert(s.to_owned(), Value::String(signature));
        } else {
            let at = payload
                .keys()
                .position(|k| k == "appid" || k == "AppID")
                .map_or(0, |p| p + 1);
            payload.shift_insert(at, t.to_owned(), Value::String(ts));
            payload.shift_insert(at + 1, n.to_owned(), Value::String(nonce));
            payload.shift_insert(at + 2, s.to_owned(), Value::String(signature));
        }
        let headers = vec![("Content-Type".into(), "application/json".into())];
        Ok((headers, Value::Object(payload).to_string()))
    }
}

/// The key under which a ZEGO signature is remembered (to refuse its reuse
/// with another body): the app and the lower-case signature, nothing else.
///
/// The signed string is the sorted secret, timestamp and nonce joined with
/// no separator, so the same signature stands for many (timestamp, nonce)
/// splits of one digit string: `1795986177` + `4159245375106675073` signs
/// exactly like `1795986177415` + `9245375106675073`. Keying on those texts
/// let a captured signature carry a forged body under a re-split, "fresh"
/// millisecond timestamp; keying on the signature alone closes that.
pub fn signature_key(app_id: &str, signature: &str) -> String {
    let mut h = Sha256::new();
    for part in [app_id, &signature.to_ascii_lowercase()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // The first 128 bits, as the dedup key: collision-safe, half the index.
    hex::encode(&h.finalize()[..16])
}

/// The ZEGO app id named in a payload, as a string.
///
/// The stream family writes `appid` (a string, or a number in
/// `room_create`/`room_close`), the cloud player `AppID`, the AI and
/// moderation families `AppId`, transcoding `Appid`. The first non-empty one
/// wins.
pub fn app_id(payload: &Value) -> Option<String> {
    ["appid", "AppID", "AppId", "Appid"]
        .iter()
        .filter_map(|key| payload.get(key).and_then(string_value))
        .find(|id| !id.trim().is_empty())
}

/// The signing keys, in both casings ZEGO uses.
pub const SIGNING_KEYS: [&str; 6] = [
    "timestamp",
    "nonce",
    "signature",
    "Timestamp",
    "Nonce",
    "Signature",
];

/// A copy of `payload` without its top-level signing keys; non-objects as they are.
pub fn without_signing(payload: &Value) -> Value {
    match payload {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !SIGNING_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signature_key_is_case_insensitive_in_the_signature_and_scoped_to_the_app() {
        assert_eq!(signature_key("1", "ABC"), signature_key("1", "abc"));
        assert_ne!(signature_key("1", "abc"), signature_key("2", "abc"));
        assert_ne!(signature_key("1", "abc"), signature_key("1", "abd"));
    }

    #[test]
    fn app_id_reads_every_zego_spelling_as_a_string() {
        assert_eq!(app_id(&json!({"appid": "1"})).as_deref(), Some("1"));
        assert_eq!(app_id(&json!({"appid": 1})).as_deref(), Some("1"));
        assert_eq!(
            app_id(&json!({"AppID": 123456789})).as_deref(),
            Some("123456789")
        );
        assert_eq!(
            app_id(&json!({"AppID": "123456789"})).as_deref(),
            Some("123456789")
        );
        assert_eq!(app_id(&json!({"AppId": 1})).as_deref(), Some("1"));
        assert_eq!(
            app_id(&json!({"Appid": "111111"})).as_deref(),
            Some("111111")
        );
        assert_eq!(
            app_id(&json!({"appid": "", "AppID": 7})).as_deref(),
            Some("7")
        );
        assert_eq!(app_id(&json!({"appid": {"x": 1}})), None);
    }

    #[test]
    fn without_signing_drops_both_casings_and_keeps_the_rest() {
        let v = json!({"event": "x", "timestamp": "1", "nonce": "2", "signature": "s",
                       "Timestamp": "1", "Nonce": "2", "Signature": "s", "room_id": "r"});
        assert_eq!(without_signing(&v), json!({"event": "x", "room_id": "r"}));
        assert_eq!(without_signing(&json!("text")), json!("text"));
    }
}
