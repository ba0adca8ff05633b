//! ZEGO media-merge-completed callback (`event` = `compose`, seed 003).
//!
//! The compose callback uses the stream family's envelope (lowercase `appid`,
//! `event` and signing fields beside snake_case business fields), so its
//! route shares [`super::stream`]'s dispatcher: `compose` parses into
//! [`Compose`], and any other `event` that lands on this route is kept the
//! same way the stream route keeps it, rather than lost to a misconfigured
//! callback URL.

use super::ZegoSignature;
use crate::providers::lenient::lenient_struct;
use crate::providers::{FamilyDef, Parsed, Provider};
use crate::verify::zego::Casing;

pub use super::stream::Event;

/// `/callbacks/zego/compose`: media merge results. The stream family's
/// parser, so the stream family's kinds.
pub static FAMILY: FamilyDef = FamilyDef {
    name: "compose",
    provider: Provider::Zego,
    route: "/callbacks/zego/compose",
    kinds: super::stream::KINDS,
    auth: &ZegoSignature(Casing::Lower),
    parse: |payload| Parsed::from_typed(&Event::parse(payload)),
    sample: super::stream::sample,
    sample_kinds: &[("compose", 0)],
};

lenient_struct! {
    /// `compose`: a media merge finished (Tencent or Huawei CDN only).
    ///
    /// ZEGO advises querying the merged file's details 5 s after this arrives.
    pub struct Compose {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub replay_url: Option<String>,
        /// The TaskId returned by the Merge Media Files API.
        pub task_id: Option<String>,
        /// Tencent Cloud only; 19 digits, so a string.
        pub file_id: Option<String>,
        /// 0 success; 40000, 60000, 70000 failures. Sent as a string.
        pub code: Option<i64>,
        /// Tencent Cloud only.
        pub message: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Family, TypedEvent, parse};
    use serde_json::{Value, json};

    fn seed() -> Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seeds/zego_compose.json"
        )))
        .expect("seed fixtures are JSON")
    }

    #[test]
    fn the_seed_compose_example_parses_with_typed_fields() {
        let event = Event::parse(&seed());
        assert_eq!(event.kind(), "compose");
        assert_eq!(event.event_time_ms(), None);
        assert_eq!(event.resource().as_deref(), Some("task_id"));
        let Event::Compose(c) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(c.appid.as_deref(), Some("1"));
        assert_eq!(c.code, Some(0), "\"0\" is success");
        assert_eq!(c.file_id.as_deref(), Some("5285890813218549789"));
        assert_eq!(c.replay_url.as_deref(), Some("replay_url"));
        assert_eq!(c.message.as_deref(), Some("message"));
    }

    #[test]
    fn compose_serializes_normalized_without_signing_fields() {
        assert_eq!(
            serde_json::to_value(Event::parse(&seed())).unwrap(),
            json!({
                "appid": "1",
                "event": "compose",
                "replay_url": "replay_url",
                "task_id": "task_id",
                "file_id": "5285890813218549789",
                "code": 0,
                "message": "message"
            })
        );
    }

    #[test]
    fn compose_accepts_numbers_where_the_doc_says_strings() {
        let event = Event::parse(&json!({
            "appid": 1, "event": "compose", "task_id": 77, "file_id": 5285890813218549789_u64,
            "code": 40000
        }));
        let Event::Compose(c) = &event else { panic!() };
        assert_eq!(c.appid.as_deref(), Some("1"));
        assert_eq!(c.file_id.as_deref(), Some("5285890813218549789"));
        assert_eq!(c.code, Some(40000));
        assert_eq!(event.resource().as_deref(), Some("77"));
    }

    #[test]
    fn other_events_on_the_compose_route_are_kept() {
        let parsed = parse(
            Family::by_name("compose").unwrap(),
            &json!({"event": "brand_new_event", "task_id": "t", "nonce": "1"}),
        );
        assert_eq!(parsed.kind, "brand_new_event");
        assert_eq!(
            parsed.event,
            json!({"event": "brand_new_event", "task_id": "t"})
        );
        assert_eq!(
            parse(Family::by_name("compose").unwrap(), &json!({"code": "0"})).kind,
            "unknown"
        );
    }

    #[test]
    fn the_family_parser_reduces_an_event_to_the_envelope_fields() {
        let parsed = parse(Family::by_name("compose").unwrap(), &seed());
        assert_eq!(parsed.kind, "compose");
        assert_eq!(parsed.event_time_ms, None);
        assert_eq!(parsed.resource.as_deref(), Some("task_id"));
        assert_eq!(parsed.event["code"], json!(0));
    }
}
