//! ZEGO callback families.
//!
//! Every ZEGO family signs with `timestamp`, `nonce` and `signature` fields in
//! the body (PascalCase in the cloud-player family). Those fields say nothing
//! about the event and change on every re-signed retry, so no typed event
//! carries them and [`without_signing`] drops them from unknown events.

pub mod cloud_player;
pub mod compose;
pub mod stream;

use crate::config::Config;
use crate::decode::{self, DecodeError};
use crate::error::IngestError;
use crate::event;
use crate::providers::lenient::string_value;
use crate::providers::{Authenticate, Authenticated, Provider, SignInput};
use crate::verify::zego::Casing;
use crate::verify::{self, Verified, VerifyError};
use axum::http::HeaderMap;
use serde_json::{Map, Value};

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
        config: &Config,
        _headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Verified<Authenticated>, IngestError> {
        let payload = decode::decode(body)?.value;
        if !payload.is_object() {
            return Err(DecodeError::Malformed.into());
        }
        let fields = verify::zego::signing_fields(&payload, self.0)?;
        let app = config
            .find_app(Provider::Zego, app_id(&payload).as_deref())
            .ok_or(VerifyError::UnknownApp)?;
        let authenticated = Authenticated {
            replay_key: Some(event::signature_key(&app.app_id, &fields.signature)),
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
            config.server.timestamp_tolerance_secs,
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
