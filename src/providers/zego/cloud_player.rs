//! ZEGO cloud player and upload task callbacks (seed 000).
//!
//! PascalCase fields, a numeric `EventType` (1-4 player events, 10001-10006
//! upload events) and a `Detail` object whose shape depends on it. The two
//! vendor examples disagree on types (`AppID` and `EventTime` are numbers in
//! one and strings in the other) and carry undocumented top-level keys
//! (`PlayerName`, `StreamUrl`, `Title`), so every field is lenient and the
//! documented extras are typed too.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ZegoSignature;
use crate::providers::lenient::{self, lenient_struct};
use crate::providers::{FamilyDef, Parsed, Provider, SampleContext, TypedEvent};
use crate::verify::zego::Casing;
use serde_json::json;

lenient_struct! {
    /// The top-level fields every cloud-player callback shares (signing fields excluded).
    #[serde(rename_all = "PascalCase")]
    pub struct Header {
        /// A number in one vendor example, a string in the other: always a string here.
        #[serde(rename = "AppID")]
        pub app_id: Option<String>,
        /// Player events only.
        pub room_id: Option<String>,
        /// Player events only.
        pub player_id: Option<String>,
        /// Undocumented; present in the player example.
        pub player_name: Option<String>,
        /// Upload events only.
        pub upload_task_id: Option<String>,
        pub event_type: Option<i64>,
        /// Milliseconds at the cloud-player server; ZEGO says to order callbacks by it.
        pub event_time: Option<i64>,
        /// Undocumented; present in the upload example.
        pub stream_url: Option<String>,
        /// Undocumented; present in the upload example.
        pub title: Option<String>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 1 (player created). Times in seconds.
    #[serde(rename_all = "PascalCase")]
    pub struct CreatedDetail {
        pub create_time: Option<i64>,
        pub play_time: Option<i64>,
        pub max_idle_time: Option<i64>,
        pub stream_url: Option<String>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 2 (player destroyed).
    #[serde(rename_all = "PascalCase")]
    pub struct DestroyedDetail {
        /// Seconds.
        pub play_time: Option<i64>,
        /// 1 DeletePlayer, 2 idle past MaxIdleTime, 3 media ended, 4 publish
        /// failed, 5 room login failed or kicked.
        pub reason: Option<i64>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 3 (player status: 1 creating ... 8 destroyed) and
    /// 10003 (upload status: 1 waiting, 2 uploading, 3 cancelled).
    #[serde(rename_all = "PascalCase")]
    pub struct StatusDetail {
        pub status: Option<i64>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 4 (player exception, -7..=5) and 10005 (upload
    /// exception: 1 unknown, 2 upload error; ZEGO retries).
    #[serde(rename_all = "PascalCase")]
    pub struct CodeDetail {
        pub code: Option<i64>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 10002 (upload failed: 1 download, 2 upload, 3 too
    /// large) and 10004 (cancel failed: 1 uploading, 2 already uploaded).
    #[serde(rename_all = "PascalCase")]
    pub struct ReasonDetail {
        pub reason: Option<i64>,
    }
}

lenient_struct! {
    /// `Detail` of EventType 10001 and 10006: documented as empty (`{}`).
    pub struct EmptyDetail {}
}

/// One cloud-player callback: the shared header plus its typed `Detail`.
///
/// `detail` is `None` when `Detail` is absent or not an object, so a
/// malformed detail never costs the event its kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Callback<D> {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "Detail", skip_serializing_if = "Option::is_none")]
    pub detail: Option<D>,
}

/// A cloud-player or upload event. Serializes as the callback's fields alone
/// (the envelope carries the kind); [`Event::Unknown`] as its raw fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// 1
    PlayerCreated(Callback<CreatedDetail>),
    /// 2
    PlayerDestroyed(Callback<DestroyedDetail>),
    /// 3
    PlayerStatusChanged(Callback<StatusDetail>),
    /// 4
    PlayerException(Callback<CodeDetail>),
    /// 10001
    UploadSucceeded(Callback<EmptyDetail>),
    /// 10002
    UploadFailed(Callback<ReasonDetail>),
    /// 10003
    UploadStatusChanged(Callback<StatusDetail>),
    /// 10004
    UploadCancelFailed(Callback<ReasonDetail>),
    /// 10005
    UploadException(Callback<CodeDetail>),
    /// 10006
    UploadExpired(Callback<EmptyDetail>),
    /// Any other `EventType`, or none.
    #[serde(serialize_with = "crate::providers::serialize_raw")]
    Unknown {
        event_type: Option<i64>,
        /// The payload without its signing fields.
        raw: Value,
    },
}

impl Event {
    /// Dispatches on `EventType` (a number or a numeric string). Never fails.
    pub fn parse(payload: &Value) -> Event {
        let event_type = payload.get("EventType").and_then(lenient::int_value);
        match event_type {
            Some(1) => typed(payload, Event::PlayerCreated),
            Some(2) => typed(payload, Event::PlayerDestroyed),
            Some(3) => typed(payload, Event::PlayerStatusChanged),
            Some(4) => typed(payload, Event::PlayerException),
            Some(10001) => typed(payload, Event::UploadSucceeded),
            Some(10002) => typed(payload, Event::UploadFailed),
            Some(10003) => typed(payload, Event::UploadStatusChanged),
            Some(10004) => typed(payload, Event::UploadCancelFailed),
            Some(10005) => typed(payload, Event::UploadException),
            Some(10006) => typed(payload, Event::UploadExpired),
            _ => Event::unknown(event_type, payload),
        }
    }

    fn unknown(event_type: Option<i64>, payload: &Value) -> Event {
        Event::Unknown {
            event_type,
            raw: super::without_signing(payload),
        }
    }

    /// The shared header of a typed event.
    pub fn header(&self) -> Option<&Header> {
        match self {
            Event::PlayerCreated(c) => Some(&c.header),
            Event::PlayerDestroyed(c) => Some(&c.header),
            Event::PlayerStatusChanged(c) => Some(&c.header),
            Event::PlayerException(c) => Some(&c.header),
            Event::UploadSucceeded(c) => Some(&c.header),
            Event::UploadFailed(c) => Some(&c.header),
            Event::UploadStatusChanged(c) => Some(&c.header),
            Event::UploadCancelFailed(c) => Some(&c.header),
            Event::UploadException(c) => Some(&c.header),
            Event::UploadExpired(c) => Some(&c.header),
            Event::Unknown { .. } => None,
        }
    }
}

/// Builds a typed event from an object payload; anything else stays unknown.
fn typed<D: DeserializeOwned>(payload: &Value, wrap: fn(Callback<D>) -> Event) -> Event {
    // Only objects: an array would otherwise fill the header's fields by position.
    let header = payload.is_object().then(|| Header::deserialize(payload));
    let Some(Ok(header)) = header else {
        return Event::unknown(
            payload.get("EventType").and_then(lenient::int_value),
            payload,
        );
    };
    let detail = payload
        .get("Detail")
        .filter(|d| d.is_object())
        .and_then(|d| D::deserialize(d).ok());
    wrap(Callback { header, detail })
}

impl TypedEvent for Event {
    fn kind(&self) -> &str {
        match self {
            Event::PlayerCreated(_) => "player_created",
            Event::PlayerDestroyed(_) => "player_destroyed",
            Event::PlayerStatusChanged(_) => "player_status_changed",
            Event::PlayerException(_) => "player_exception",
            Event::UploadSucceeded(_) => "upload_succeeded",
            Event::UploadFailed(_) => "upload_failed",
            Event::UploadStatusChanged(_) => "upload_status_changed",
            Event::UploadCancelFailed(_) => "upload_cancel_failed",
            Event::UploadException(_) => "upload_exception",
            Event::UploadExpired(_) => "upload_expired",
            Event::Unknown { .. } => "unknown",
        }
    }

    /// `EventTime`, for unknown event types too: the whole family documents it.
    fn event_time_ms(&self) -> Option<i64> {
        match self {
            Event::Unknown { raw, .. } => raw.get("EventTime").and_then(lenient::int_value),
            typed => typed.header().and_then(|h| h.event_time),
        }
    }

    /// `PlayerId` for player events, `UploadTaskId` for upload events; an
    /// unknown event's `PlayerId`, else its `UploadTaskId`.
    fn resource(&self) -> Option<String> {
        let id = match self {
            Event::Unknown { raw, .. } => {
                return ["PlayerId", "UploadTaskId"]
                    .iter()
                    .filter_map(|key| raw.get(key).and_then(lenient::string_value))
                    .find(|id| !id.is_empty());
            }
            Event::PlayerCreated(_)
            | Event::PlayerDestroyed(_)
            | Event::PlayerStatusChanged(_)
            | Event::PlayerException(_) => self.header().and_then(|h| h.player_id.as_ref()),
            _ => self.header().and_then(|h| h.upload_task_id.as_ref()),
        };
        id.filter(|id| !id.is_empty()).cloned()
    }
}

/// `/callbacks/zego/cloud-player`: cloud player and upload tasks.
pub static FAMILY: FamilyDef = FamilyDef {
    name: "cloud_player",
    provider: Provider::Zego,
    route: "/callbacks/zego/cloud-player",
    kinds: &[
        "player_created",
        "player_destroyed",
        "player_status_changed",
        "player_exception",
        "upload_succeeded",
        "upload_failed",
        "upload_status_changed",
        "upload_cancel_failed",
        "upload_exception",
        "upload_expired",
        "unknown",
    ],
    auth: &ZegoSignature(Casing::Pascal),
    parse: |payload| Parsed::from_typed(&Event::parse(payload)),
    sample,
    sample_kinds: &[
        ("player_created", 1),
        ("player_destroyed", 2),
        ("player_status_changed", 3),
        ("player_exception", 4),
        ("upload_succeeded", 10001),
        ("upload_failed", 10002),
        ("upload_status_changed", 10003),
        ("upload_cancel_failed", 10004),
        ("upload_exception", 10005),
        ("upload_expired", 10006),
    ],
};

/// A realistic PascalCase payload of `kind` with its numeric `EventType`,
/// empty signing fields after the app id for the signer to fill in.
pub fn sample(kind: &str, i: u64, ctx: &SampleContext) -> Option<Value> {
    let code = FAMILY.sample_code(kind)?;
    let (run, now) = (&ctx.run, ctx.now_ms);
    let secs = now / 1000;
    let detail = match code {
        1 => json!({"CreateTime": secs, "PlayTime": secs, "MaxIdleTime": 30,
                    "StreamUrl": format!("https://media.example.com/video/{run}-{i}.mp4")}),
        2 => json!({"PlayTime": secs - 60, "Reason": 1}),
        3 => json!({"Status": 4}),
        4 => json!({"Code": -1}),
        10002 => json!({"Reason": 1}),
        10003 => json!({"Status": 2}),
        10004 => json!({"Reason": 2}),
        10005 => json!({"Code": 2}),
        _ => json!({}),
    };
    let value = if code < 10000 {
        json!({
            "AppID": ctx.app_id_value(), "Timestamp": "", "Nonce": "", "Signature": "",
            "RoomId": format!("room-{run}-{}", i / 16),
            "PlayerId": format!("player-{run}-{i}"),
            "PlayerName": format!("player {i}"),
            "EventType": code,
            "EventTime": now,
            "Detail": detail,
        })
    } else {
        json!({
            "AppID": ctx.app_id_value(), "Timestamp": "", "Nonce": "", "Signature": "",
            "UploadTaskId": format!("{:016x}{:08x}", ctx.run_num, i),
            "EventType": code,
            "EventTime": now,
            "StreamUrl": format!("https://media.example.com/upload/{run}-{i}.mp4"),
            "Title": format!("{run}-{i}.mp4"),
            "Detail": detail,
        })
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Family, parse};
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let text = match name {
            "created" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/seeds/zego_cloud_player_created.json"
            )),
            "upload" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/seeds/zego_upload_succeeded.json"
            )),
            _ => unreachable!(),
        };
        serde_json::from_str(text).expect("seed fixtures are JSON")
    }

    #[test]
    fn the_seed_player_created_example_parses_with_its_detail() {
        let event = Event::parse(&fixture("created"));
        assert_eq!(event.kind(), "player_created");
        assert_eq!(event.event_time_ms(), Some(1681221510034));
        assert_eq!(event.resource().as_deref(), Some("XXXXXX"));
        let Event::PlayerCreated(c) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(c.header.app_id.as_deref(), Some("123456789"));
        assert_eq!(c.header.room_id.as_deref(), Some("room_12"));
        assert_eq!(c.header.player_name.as_deref(), Some("XXXXXX"));
        assert_eq!(c.header.event_type, Some(1));
        let detail = c.detail.as_ref().expect("detail");
        assert_eq!(detail.create_time, Some(1681221508));
        assert_eq!(detail.play_time, Some(1681221508));
        assert_eq!(detail.max_idle_time, Some(30));
        assert_eq!(
            detail.stream_url.as_deref(),
            Some("https://xxx.com/video/test.mp4")
        );
    }

    #[test]
    fn the_seed_upload_example_with_string_numbers_and_empty_detail_parses() {
        let event = Event::parse(&fixture("upload"));
        assert_eq!(event.kind(), "upload_succeeded");
        // "EventTime":"1737451074593" is a string in this example.
        assert_eq!(event.event_time_ms(), Some(1737451074593));
        assert_eq!(
            event.resource().as_deref(),
            Some("678f663727b2d80007000001")
        );
        let Event::UploadSucceeded(c) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(c.header.app_id.as_deref(), Some("123456789"));
        assert_eq!(
            c.header.stream_url.as_deref(),
            Some("https://your_streamurl")
        );
        assert_eq!(c.header.title.as_deref(), Some("720.mp4"));
        assert_eq!(c.detail, Some(EmptyDetail {}));
    }

    #[test]
    fn serialization_normalizes_numbers_and_drops_signing_fields() {
        let created = serde_json::to_value(Event::parse(&fixture("created"))).unwrap();
        assert_eq!(
            created,
            json!({
                "AppID": "123456789",
                "RoomId": "room_12",
                "PlayerId": "XXXXXX",
                "PlayerName": "XXXXXX",
                "EventType": 1,
                "EventTime": 1681221510034_i64,
                "Detail": {
                    "CreateTime": 1681221508,
                    "PlayTime": 1681221508,
                    "MaxIdleTime": 30,
                    "StreamUrl": "https://xxx.com/video/test.mp4"
                }
            })
        );
        let upload = serde_json::to_value(Event::parse(&fixture("upload"))).unwrap();
        assert_eq!(
            upload,
            json!({
                "AppID": "123456789",
                "UploadTaskId": "678f663727b2d80007000001",
                "EventType": 10001,
                "EventTime": 1737451074593_i64,
                "StreamUrl": "https://your_streamurl",
                "Title": "720.mp4",
                "Detail": {}
            })
        );
    }

    #[test]
    fn every_documented_event_type_maps_to_its_kind_and_resource() {
        let table = [
            (1, "player_created", "p"),
            (2, "player_destroyed", "p"),
            (3, "player_status_changed", "p"),
            (4, "player_exception", "p"),
            (10001, "upload_succeeded", "u"),
            (10002, "upload_failed", "u"),
            (10003, "upload_status_changed", "u"),
            (10004, "upload_cancel_failed", "u"),
            (10005, "upload_exception", "u"),
            (10006, "upload_expired", "u"),
        ];
        for (n, kind, resource) in table {
            for event_type in [json!(n), json!(n.to_string())] {
                let payload =
                    json!({"EventType": event_type, "PlayerId": "p", "UploadTaskId": "u"});
                let event = Event::parse(&payload);
                assert_eq!(event.kind(), kind, "{payload}");
                assert_eq!(event.resource().as_deref(), Some(resource), "{payload}");
            }
        }
    }

    #[test]
    fn each_event_type_types_its_own_detail() {
        let detail = |event_type: i64, detail: Value| {
            serde_json::to_value(Event::parse(
                &json!({"EventType": event_type, "Detail": detail}),
            ))
            .unwrap()["Detail"]
                .clone()
        };
        assert_eq!(
            detail(
                2,
                json!({"PlayTime": "1681221508", "Reason": 3, "Extra": 1})
            ),
            json!({"PlayTime": 1681221508, "Reason": 3})
        );
        assert_eq!(detail(3, json!({"Status": "4"})), json!({"Status": 4}));
        assert_eq!(detail(4, json!({"Code": -1})), json!({"Code": -1}));
        assert_eq!(detail(10002, json!({"Reason": 1})), json!({"Reason": 1}));
        assert_eq!(detail(10003, json!({"Status": 2})), json!({"Status": 2}));
        assert_eq!(detail(10004, json!({"Reason": "2"})), json!({"Reason": 2}));
        assert_eq!(detail(10005, json!({"Code": 2})), json!({"Code": 2}));
        assert_eq!(detail(10006, json!({})), json!({}));

        let Event::PlayerException(c) =
            Event::parse(&json!({"EventType": 4, "Detail": {"Code": "-7"}}))
        else {
            panic!()
        };
        assert_eq!(c.detail.and_then(|d| d.code), Some(-7));
    }

    #[test]
    fn an_unknown_event_type_is_kept_with_its_fields_minus_signing() {
        let payload = json!({
            "AppID": 1, "EventType": 77, "PlayerId": "p7", "EventTime": "1700000000000",
            "Nonce": "n", "Timestamp": "1", "Signature": "s", "NewField": {"a": [1, 2]}
        });
        let event = Event::parse(&payload);
        assert_eq!(event.kind(), "unknown");
        assert_eq!(event.event_time_ms(), Some(1700000000000));
        assert_eq!(event.resource().as_deref(), Some("p7"));
        let Event::Unknown { event_type, raw } = &event else {
            panic!()
        };
        assert_eq!(*event_type, Some(77));
        let expected = json!({"AppID": 1, "EventType": 77, "PlayerId": "p7",
                              "EventTime": "1700000000000", "NewField": {"a": [1, 2]}});
        assert_eq!(raw, &expected);
        assert_eq!(serde_json::to_value(&event).unwrap(), expected);
    }

    #[test]
    fn payloads_without_a_usable_event_type_are_unknown() {
        for payload in [
            json!({}),
            json!({"EventType": "one"}),
            json!({"EventType": null}),
            json!([1, 2]),
            json!("text"),
        ] {
            assert_eq!(Event::parse(&payload).kind(), "unknown", "{payload}");
        }
    }

    #[test]
    fn fields_of_unexpected_types_keep_the_kind_and_drop_only_themselves() {
        let event = Event::parse(&json!({
            "EventType": 1, "PlayerId": 42, "EventTime": {"x": 1}, "RoomId": ["r"], "Detail": "oops"
        }));
        assert_eq!(event.kind(), "player_created");
        assert_eq!(event.event_time_ms(), None);
        assert_eq!(event.resource().as_deref(), Some("42"));
        let Event::PlayerCreated(c) = &event else {
            panic!()
        };
        assert_eq!(c.header.room_id, None);
        assert_eq!(c.detail, None);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"PlayerId": "42", "EventType": 1})
        );

        let Event::PlayerStatusChanged(c) = Event::parse(&json!({"EventType": 3, "Detail": [4]}))
        else {
            panic!()
        };
        assert_eq!(c.detail, None, "an array must not fill Detail by position");
    }

    #[test]
    fn the_family_parser_reduces_an_event_to_the_envelope_fields() {
        let parsed = parse(Family::by_name("cloud_player").unwrap(), &fixture("upload"));
        assert_eq!(parsed.kind, "upload_succeeded");
        assert_eq!(parsed.event_time_ms, Some(1737451074593));
        assert_eq!(parsed.resource.as_deref(), Some("678f663727b2d80007000001"));
        assert_eq!(parsed.event["AppID"], json!("123456789"));
        assert!(parsed.event.get("Nonce").is_none());
    }
}
