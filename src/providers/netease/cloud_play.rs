//! NetEase NERTC 2.0 cloud-play event 抄送 (seed 002).
//!
//! Envelope `{"data": {...}, "eventType": 500}`; the field tables for 501-507
//! also list `eventType` inside `data`, so that is the fallback. The doc's
//! summary table lists 506 twice; its sections settle 505 = play error,
//! 506 = paused, 507 = resumed. NERTC sends numbers where NetEase IM 抄送
//! sends numeric strings, so both are read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NeteaseChecksum;
use crate::providers::lenient::{self, lenient_struct};
use crate::providers::{FamilyDef, Parsed, Provider, SampleContext, TypedEvent};
use serde_json::json;

lenient_struct! {
    /// The `data` object, identical for every cloud-play event.
    #[serde(rename_all = "camelCase")]
    pub struct PlayData {
        /// The VOD or live stream's URL.
        pub stream_url: Option<String>,
        /// Seconds; when the cloud player started playing (0 before that).
        pub play_ts: Option<i64>,
        /// Seconds the player may stay idle.
        pub idle_timeout: Option<i64>,
        /// The room id: a Java long (e.g. 1144880576163552), exact in `i64`.
        pub channel_id: Option<i64>,
        pub task_id: Option<String>,
        /// 200 normally; 400 in the play-error example.
        pub code: Option<i64>,
        /// The error message; play errors (505) only.
        pub reason: Option<String>,
        /// Milliseconds; when the event happened.
        pub timestamp: Option<i64>,
    }
}

/// A cloud-play event. The typed variants serialize as their `data` fields
/// alone (the envelope's kind names the event type); [`Event::Unknown`] as
/// the payload as received.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// 500
    TaskCreated(PlayData),
    /// 501
    TaskUpdated(PlayData),
    /// 502
    TaskDestroyed(PlayData),
    /// 503
    PlayStarted(PlayData),
    /// 504
    PlayFinished(PlayData),
    /// 505
    PlayError(PlayData),
    /// 506
    PlayPaused(PlayData),
    /// 507
    PlayResumed(PlayData),
    /// Any other `eventType`, or none, or a payload that is not an object
    /// (the server stores a non-JSON body as a string).
    #[serde(serialize_with = "crate::providers::serialize_raw")]
    Unknown {
        event_type: Option<i64>,
        /// The payload as received: NetEase bodies carry no signing fields.
        raw: Value,
    },
}

impl Event {
    /// Dispatches on `eventType`, else `data.eventType` (a number or numeric
    /// string). Never fails.
    pub fn parse(payload: &Value) -> Event {
        let data = payload.get("data");
        let event_type = payload
            .get("eventType")
            .and_then(lenient::int_value)
            .or_else(|| data?.get("eventType").and_then(lenient::int_value));
        let wrap: fn(PlayData) -> Event = match event_type {
            Some(500) => Event::TaskCreated,
            Some(501) => Event::TaskUpdated,
            Some(502) => Event::TaskDestroyed,
            Some(503) => Event::PlayStarted,
            Some(504) => Event::PlayFinished,
            Some(505) => Event::PlayError,
            Some(506) => Event::PlayPaused,
            Some(507) => Event::PlayResumed,
            _ => {
                return Event::Unknown {
                    event_type,
                    raw: payload.clone(),
                };
            }
        };
        // A missing or non-object `data` leaves every field empty but keeps
        // the kind; the raw payload is stored beside the event anyway.
        let data = data
            .filter(|d| d.is_object())
            .and_then(|d| PlayData::deserialize(d).ok())
            .unwrap_or_default();
        wrap(data)
    }

    /// The typed `data` of a known event.
    pub fn data(&self) -> Option<&PlayData> {
        match self {
            Event::TaskCreated(d)
            | Event::TaskUpdated(d)
            | Event::TaskDestroyed(d)
            | Event::PlayStarted(d)
            | Event::PlayFinished(d)
            | Event::PlayError(d)
            | Event::PlayPaused(d)
            | Event::PlayResumed(d) => Some(d),
            Event::Unknown { .. } => None,
        }
    }
}

impl TypedEvent for Event {
    fn kind(&self) -> &str {
        match self {
            Event::TaskCreated(_) => "task_created",
            Event::TaskUpdated(_) => "task_updated",
            Event::TaskDestroyed(_) => "task_destroyed",
            Event::PlayStarted(_) => "play_started",
            Event::PlayFinished(_) => "play_finished",
            Event::PlayError(_) => "play_error",
            Event::PlayPaused(_) => "play_paused",
            Event::PlayResumed(_) => "play_resumed",
            Event::Unknown { .. } => "unknown",
        }
    }

    /// `data.timestamp`, for unknown event types too when they carry one.
    fn event_time_ms(&self) -> Option<i64> {
        match self {
            Event::Unknown { raw, .. } => raw
                .get("data")?
                .get("timestamp")
                .and_then(lenient::int_value),
            typed => typed.data()?.timestamp,
        }
    }

    /// `data.taskId`, for unknown event types too when they carry one.
    fn resource(&self) -> Option<String> {
        match self {
            Event::Unknown { raw, .. } => raw
                .get("data")?
                .get("taskId")
                .and_then(lenient::string_value),
            typed => typed.data()?.task_id.clone(),
        }
        .filter(|id| !id.is_empty())
    }
}

/// `/callbacks/netease/cloud-play`: NERTC cloud-play events.
pub static FAMILY: FamilyDef = FamilyDef {
    name: "cloud_play",
    provider: Provider::Netease,
    route: "/callbacks/netease/cloud-play",
    kinds: &[
        "task_created",
        "task_updated",
        "task_destroyed",
        "play_started",
        "play_finished",
        "play_error",
        "play_paused",
        "play_resumed",
        "unknown",
    ],
    auth: &NeteaseChecksum,
    parse: |payload| Parsed::from_typed(&Event::parse(payload)),
    sample,
    sample_kinds: &[
        ("play_started", 503),
        ("task_created", 500),
        ("task_updated", 501),
        ("task_destroyed", 502),
        ("play_finished", 504),
        ("play_error", 505),
        ("play_paused", 506),
        ("play_resumed", 507),
    ],
};

/// A realistic `{"data":{...},"eventType":50x}` body of `kind`.
pub fn sample(kind: &str, i: u64, ctx: &SampleContext) -> Option<Value> {
    let code = FAMILY.sample_code(kind)?;
    let now = ctx.now_ms;
    let mut data = json!({
        "channelId": ctx.run_num * 10_000 + i % 10_000,
        "code": 200,
        "idleTimeout": 300,
        "playTs": now / 1000,
        "streamUrl": format!("http://vod.example.126.net/{}/{i}.mp4", ctx.run),
        "taskId": format!("{}-{}", uuid::Uuid::now_v7(), i),
        "timestamp": now,
    });
    if code == 505 {
        data["code"] = json!(400);
        data["reason"] = json!("open url error");
    }
    Some(json!({"data": data, "eventType": code}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Family, parse};
    use serde_json::json;

    macro_rules! seed {
        ($file:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/seeds/",
                $file
            ))
        };
    }

    const SEEDS: [(&str, i64, &str); 8] = [
        (seed!("netease_cloud_play_500.json"), 500, "task_created"),
        (seed!("netease_cloud_play_501.json"), 501, "task_updated"),
        (seed!("netease_cloud_play_502.json"), 502, "task_destroyed"),
        (seed!("netease_cloud_play_503.json"), 503, "play_started"),
        (seed!("netease_cloud_play_504.json"), 504, "play_finished"),
        (seed!("netease_cloud_play_505.json"), 505, "play_error"),
        (seed!("netease_cloud_play_506.json"), 506, "play_paused"),
        (seed!("netease_cloud_play_507.json"), 507, "play_resumed"),
    ];

    const TASK: &str = "9aad689e-ba91-4764-bed1-b2e09bc21f5d";
    const URL: &str =
        "http://******.vod.126.net/jdvodvk8hs8ih/d317c15b-f42a-455e-a100-f1388e6cdbfd.mp4";

    #[test]
    fn every_seed_example_parses_to_its_kind_time_resource_and_data() {
        for (text, event_type, kind) in SEEDS {
            let payload: Value = serde_json::from_str(text).expect("seed fixtures are JSON");
            let event = Event::parse(&payload);
            assert_eq!(event.kind(), kind, "{event_type}");
            assert_eq!(event.event_time_ms(), Some(1653470489602), "{kind}");
            assert_eq!(event.resource().as_deref(), Some(TASK), "{kind}");
            let data = event.data().expect("typed");
            assert_eq!(data.channel_id, Some(1144880576163552), "{kind}");
            assert_eq!(data.idle_timeout, Some(2));
            assert_eq!(data.play_ts, Some(0));
            assert_eq!(data.stream_url.as_deref(), Some(URL));
            let (code, reason) = if event_type == 505 {
                (400, Some("open url error"))
            } else {
                (200, None)
            };
            assert_eq!(data.code, Some(code), "{kind}");
            assert_eq!(data.reason.as_deref(), reason, "{kind}");
        }
    }

    #[test]
    fn typed_events_serialize_as_their_data_fields() {
        let payload: Value = serde_json::from_str(SEEDS[5].0).unwrap();
        assert_eq!(
            serde_json::to_value(Event::parse(&payload)).unwrap(),
            json!({
                "streamUrl": URL,
                "playTs": 0,
                "idleTimeout": 2,
                "channelId": 1144880576163552_i64,
                "taskId": TASK,
                "code": 400,
                "reason": "open url error",
                "timestamp": 1653470489602_i64
            })
        );
    }

    #[test]
    fn the_doc_505_example_is_not_json_and_a_text_payload_is_unknown() {
        let text = seed!("netease_cloud_play_505_invalid.txt");
        // `"reason":open url error` is unquoted in the vendor's own example.
        assert!(serde_json::from_str::<Value>(text).is_err());
        // The server keeps such an authentic body as a JSON string.
        let event = Event::parse(&Value::String(text.to_owned()));
        assert_eq!(event.kind(), "unknown");
        assert_eq!((event.event_time_ms(), event.resource()), (None, None));
        assert_eq!(serde_json::to_value(&event).unwrap(), json!(text));
    }

    #[test]
    fn every_event_type_maps_to_its_kind_as_number_or_string() {
        for (_, n, kind) in SEEDS {
            for payload in [
                json!({"eventType": n, "data": {}}),
                json!({"eventType": n.to_string(), "data": {}}),
                json!({"data": {"eventType": n}}),
                json!({"eventType": "x", "data": {"eventType": n.to_string()}}),
            ] {
                assert_eq!(Event::parse(&payload).kind(), kind, "{payload}");
            }
        }
        // The top level wins over the 506/507 tables' `eventType` of 100 in data.
        let event = Event::parse(&json!({"eventType": 506, "data": {"eventType": 100}}));
        assert_eq!(event.kind(), "play_paused");
    }

    #[test]
    fn numbers_sent_as_strings_are_read_as_numbers() {
        let payload: Value = serde_json::from_str(
            r#"{"data":{"channelId":"1144880576163552","code":"200","idleTimeout":"2","playTs":"0","streamUrl":"u","taskId":"t","timestamp":"1653470489602"},"eventType":"504"}"#,
        )
        .unwrap();
        let event = Event::parse(&payload);
        assert_eq!(event.kind(), "play_finished");
        assert_eq!(event.event_time_ms(), Some(1653470489602));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"streamUrl": "u", "playTs": 0, "idleTimeout": 2,
                   "channelId": 1144880576163552_i64, "taskId": "t", "code": 200,
                   "timestamp": 1653470489602_i64})
        );
        let event =
            Event::parse(&json!({"eventType": 505, "data": {"taskId": 12345, "reason": 7}}));
        assert_eq!(event.resource().as_deref(), Some("12345"));
        assert_eq!(event.data().and_then(|d| d.reason.as_deref()), Some("7"));
    }

    #[test]
    fn an_unknown_event_type_is_kept_as_received() {
        let payload = json!({"eventType": 999, "data": {"taskId": "t9", "timestamp": 5, "new": [1]}, "extra": true});
        let event = Event::parse(&payload);
        assert_eq!(event.kind(), "unknown");
        assert_eq!(event.event_time_ms(), Some(5));
        assert_eq!(event.resource().as_deref(), Some("t9"));
        let Event::Unknown { event_type, raw } = &event else {
            panic!()
        };
        assert_eq!((*event_type, raw), (Some(999), &payload));
        assert_eq!(serde_json::to_value(&event).unwrap(), payload);
        for payload in [json!({}), json!({"eventType": null}), json!([500])] {
            assert_eq!(Event::parse(&payload).kind(), "unknown", "{payload}");
        }
    }

    #[test]
    fn unexpected_types_keep_the_kind() {
        let event = Event::parse(&json!({"eventType": 503, "data": "oops"}));
        assert_eq!(event.kind(), "play_started");
        assert_eq!(serde_json::to_value(&event).unwrap(), json!({}));
        let event = Event::parse(
            &json!({"eventType": 503, "data": {"timestamp": {"x": 1}, "taskId": "t"}}),
        );
        assert_eq!(
            (event.kind(), event.event_time_ms()),
            ("play_started", None)
        );
        assert_eq!(event.resource().as_deref(), Some("t"));
    }

    #[test]
    fn the_family_parser_reduces_an_event_to_the_envelope_fields() {
        let payload: Value = serde_json::from_str(SEEDS[0].0).unwrap();
        let parsed = parse(Family::by_name("cloud_play").unwrap(), &payload);
        assert_eq!(parsed.kind, "task_created");
        assert_eq!(parsed.event_time_ms, Some(1653470489602));
        assert_eq!(parsed.resource.as_deref(), Some(TASK));
        assert!(parsed.event.get("eventType").is_none());
        assert_eq!(parsed.event["channelId"], json!(1144880576163552_i64));
    }
}
