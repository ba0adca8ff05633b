//! ZEGO callback families.
//!
//! Every ZEGO family signs with `timestamp`, `nonce` and `signature` fields in
//! the body (PascalCase in the cloud-player family). Those fields say nothing
//! about the event and change on every re-signed retry, so no typed event
//! carries them and [`without_signing`] drops them from unknown events.

pub mod cloud_player;
pub mod compose;
pub mod stream;

use serde_json::{Map, Value};

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
    fn without_signing_drops_both_casings_and_keeps_the_rest() {
        let v = json!({"event": "x", "timestamp": "1", "nonce": "2", "signature": "s",
                       "Timestamp": "1", "Nonce": "2", "Signature": "s", "room_id": "r"});
        assert_eq!(without_signing(&v), json!({"event": "x", "room_id": "r"}));
        assert_eq!(without_signing(&json!("text")), json!("text"));
    }
}
