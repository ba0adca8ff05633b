//! The envelope: what every sink receives for one event.
//!
//! Its top-level fields are a contract (`id`, `received_at`, `provider`,
//! `family`, `kind`, `app_id`, `event_time_ms`, `dedup_key`, `event`, `raw`).
//! The local store keeps the decoded payload (`raw`) and the event's
//! metadata once, and [`render`] builds the envelope from them at delivery:
//! the typed `event` is a function of `raw`, so storing both would store the
//! payload twice. The NATS store keeps the rendered envelope.

use crate::providers::{Family, Provider};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// UUIDv7: unique and time-ordered.
    pub id: &'a str,
    /// RFC 3339, UTC.
    pub received_at: &'a str,
    pub provider: Provider,
    pub family: Family,
    pub kind: &'a str,
    pub app_id: &'a str,
    pub event_time_ms: Option<i64>,
    pub dedup_key: &'a str,
    /// The typed event, normalized.
    pub event: &'a Value,
    /// The decoded payload as received.
    pub raw: &'a Value,
}

/// What the envelope needs besides the payload; stored with it.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub id: &'a str,
    pub received_at_ms: i64,
    pub family: &'a str,
    pub kind: &'a str,
    pub app_id: &'a str,
    pub dedup_key: &'a str,
}

/// [`Envelope`] with `raw` as the stored JSON text, written out as is.
#[derive(Serialize)]
struct Rendered<'a> {
    id: &'a str,
    received_at: &'a str,
    provider: Provider,
    family: Family,
    kind: &'a str,
    app_id: &'a str,
    event_time_ms: Option<i64>,
    dedup_key: &'a str,
    event: &'a Value,
    raw: &'a serde_json::value::RawValue,
}

/// Renders the envelope of a stored event from its decoded payload (JSON
/// text, as ingest serialized it). `None` if the family is unknown to this
/// build or `raw` is not JSON. `raw` is copied into the envelope verbatim;
/// only the typed `event` is built from it.
pub fn render(meta: Meta<'_>, raw: &str) -> Option<String> {
    let family = Family::by_name(meta.family)?;
    let raw_text: &serde_json::value::RawValue = serde_json::from_str(raw).ok()?;
    let payload: Value = serde_json::from_str(raw).ok()?;
    let parsed = family.parse(&payload);
    let received_at = crate::clock::rfc3339(meta.received_at_ms);
    let envelope = Rendered {
        id: meta.id,
        received_at: &received_at,
        provider: family.provider(),
        family,
        kind: meta.kind,
        app_id: meta.app_id,
        event_time_ms: parsed.event_time_ms,
        dedup_key: meta.dedup_key,
        event: &parsed.event,
        raw: raw_text,
    };
    serde_json::to_string(&envelope).ok()
}

/// A new time-ordered event id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Hex of the first 128 bits of a SHA-256: collision-safe for dedup, half the index size.
fn short_hex(digest: &[u8]) -> String {
    hex::encode(&digest[..16])
}

/// The dedup key: provider, app and the payload without its signing fields.
///
/// Object keys are hashed in sorted order, so a sender that reorders fields
/// between retries still produces the same key; `ignore` names top-level keys
/// (the ZEGO signing fields) that change when a retry is re-signed.
pub fn dedup_key(provider: Provider, app_id: &str, payload: &Value, ignore: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(provider.as_str().as_bytes());
    h.update([0]);
    h.update(app_id.as_bytes());
    h.update([0]);
    match payload {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !ignore.contains(&k.as_str()))
                .collect();
            keys.sort_unstable();
            h.update(b"{");
            for k in keys {
                hash_str(&mut h, k);
                hash_value(&mut h, &map[k]);
            }
            h.update(b"}");
        }
        other => hash_value(&mut h, other),
    }
    short_hex(&h.finalize())
}

fn hash_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn hash_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            hash_str(h, &n.to_string());
        }
        Value::String(s) => {
            h.update(b"s");
            hash_str(h, s);
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(h, item);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            h.update(b"{");
            h.update((keys.len() as u64).to_le_bytes());
            for k in keys {
                hash_str(h, k);
                hash_value(h, &map[k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SIGNING: [&str; 3] = ["timestamp", "nonce", "signature"];

    /// The local store renders at delivery what the NATS store renders at
    /// ingest: the same bytes, for every family.
    #[test]
    fn render_from_the_stored_payload_equals_the_envelope_built_at_ingest() {
        let payloads = [
            (
                "stream",
                json!({"event":"stream_create","appid":"1","stream_id":"s1","create_time":"1700000000","extra":{"b":1,"a":[1.5,null,"é\u{1}"]}}),
            ),
            (
                "cloud_player",
                json!({"EventType":1,"AppId":1,"PlayerId":"p","EventTime":1700000000123u64,"Detail":{"x":1}}),
            ),
            (
                "cloud_play",
                json!({"eventType":501,"data":{"taskId":"t","time":1700000000000u64}}),
            ),
            (
                "compose",
                json!({"event":"compose","task_id":"c","status":2}),
            ),
        ];
        for (family_name, payload) in payloads {
            let family = Family::by_name(family_name).expect("a family");
            let parsed = family.parse(&payload);
            let id = new_id();
            let at = 1_700_000_000_123;
            let received_at = crate::clock::rfc3339(at);
            let dedup = dedup_key(family.provider(), "1", &payload, &[]);
            let built = serde_json::to_string(&Envelope {
                id: &id,
                received_at: &received_at,
                provider: family.provider(),
                family,
                kind: &parsed.kind,
                app_id: "1",
                event_time_ms: parsed.event_time_ms,
                dedup_key: &dedup,
                event: &parsed.event,
                raw: &payload,
            })
            .unwrap();
            let meta = Meta {
                id: &id,
                received_at_ms: at,
                family: family_name,
                kind: &parsed.kind,
                app_id: "1",
                dedup_key: &dedup,
            };
            let stored = serde_json::to_string(&payload).unwrap();
            assert_eq!(
                render(meta, &stored).as_deref(),
                Some(built.as_str()),
                "{family_name}"
            );
        }
        let meta = Meta {
            id: "x",
            received_at_ms: 0,
            family: "no_such_family",
            kind: "k",
            app_id: "1",
            dedup_key: "d",
        };
        assert_eq!(render(meta, "{}"), None);
    }

    #[test]
    fn dedup_key_ignores_signing_fields_and_key_order() {
        let a = json!({"event":"stream_create","stream_id":"s1","timestamp":"1","nonce":"2","signature":"x"});
        let b = json!({"signature":"y","nonce":"3","stream_id":"s1","timestamp":"9","event":"stream_create"});
        assert_eq!(
            dedup_key(Provider::Zego, "1", &a, &SIGNING),
            dedup_key(Provider::Zego, "1", &b, &SIGNING)
        );
        assert_eq!(dedup_key(Provider::Zego, "1", &a, &SIGNING).len(), 32);
    }

    #[test]
    fn dedup_key_changes_with_payload_app_and_provider() {
        let a = json!({"stream_id":"s1"});
        let b = json!({"stream_id":"s2"});
        let k = dedup_key(Provider::Zego, "1", &a, &SIGNING);
        assert_ne!(k, dedup_key(Provider::Zego, "1", &b, &SIGNING));
        assert_ne!(k, dedup_key(Provider::Zego, "2", &a, &SIGNING));
        assert_ne!(k, dedup_key(Provider::Netease, "1", &a, &SIGNING));
        // A string "1" and a number 1 are different payloads.
        assert_ne!(
            dedup_key(Provider::Zego, "1", &json!({"a":"1"}), &[]),
            dedup_key(Provider::Zego, "1", &json!({"a":1}), &[])
        );
    }
}
