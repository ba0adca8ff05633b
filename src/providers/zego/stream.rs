//! ZEGO stream-family callbacks: one envelope, dispatched on `event`.
//!
//! `stream_create` (seed 001), `stream_close`, the room events, the mix
//! events and the CDN events (`record`, `compose`, `snapshot`, `procedure`)
//! all carry `appid`, `event` and the signing fields at the top level, with
//! snake_case business fields beside them (`../shared/protocol.md`, "ZEGO stream callbacks"). Most values are
//! strings even when they are numbers (`"stream_seq": "01"`), but
//! `room_create`/`room_close` send `appid` and the 19-digit `room_session_id`
//! as JSON numbers, so every field is read leniently: times, seqs, codes and
//! enum-like ints become `i64`; ids that may exceed 2^53 stay strings; URL
//! lists accept an array or a single string.
//!
//! Any `event` value is accepted: one ZEGO does not document here (or adds
//! later) becomes [`Event::Unknown`] with its fields, keyed by the `event`
//! string. The compose route shares this dispatcher (see [`super::compose`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ZegoSignature;
use super::compose::Compose;
use crate::providers::lenient::{self, lenient_struct};
use crate::providers::{FamilyDef, Parsed, Provider, SampleContext, TypedEvent, big_id};
use crate::verify::zego::Casing;
use serde_json::json;

lenient_struct! {
    /// `stream_create`: a stream was published (not fired for mixed output).
    pub struct StreamCreate {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        pub room_session_id: Option<String>,
        pub user_id: Option<String>,
        pub user_name: Option<String>,
        pub channel_id: Option<String>,
        pub stream_id: Option<String>,
        /// Server-side stream id, unique per published stream.
        pub stream_sid: Option<String>,
        pub title: Option<String>,
        pub stream_alias: Option<String>,
        /// JSON in a string (`{"cid":0}`), kept as sent.
        pub stream_attr: Option<String>,
        /// The stream list's change counter; `"01"` on the wire is 1.
        pub stream_seq: Option<i64>,
        /// Seconds.
        pub create_time: Option<i64>,
        /// Milliseconds; the event time.
        pub create_time_ms: Option<i64>,
        pub extra_info: Option<String>,
        /// 1 when the SDK resumed the old stream within 90 s.
        pub recreate: Option<i64>,
        pub publish_id: Option<String>,
        pub publish_name: Option<String>,
        pub rtmp_url: Option<Vec<String>>,
        pub hls_url: Option<Vec<String>>,
        pub hdl_url: Option<Vec<String>>,
        pub pic_url: Option<Vec<String>>,
    }
}

lenient_struct! {
    /// `stream_close`: a stream stopped.
    pub struct StreamClose {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        pub room_session_id: Option<String>,
        pub user_id: Option<String>,
        pub user_name: Option<String>,
        pub channel_id: Option<String>,
        /// Why: 0 normal, 1 heartbeat timeout, 2 duplicate login, 3 kicked,
        /// 4 TCP drop, 5 room cleared, 100 DeleteStream API.
        pub r#type: Option<i64>,
        pub stream_alias: Option<String>,
        pub stream_id: Option<String>,
        pub stream_sid: Option<String>,
        pub stream_seq: Option<i64>,
        /// JSON in a string, kept as sent.
        pub third_define_data: Option<String>,
        pub create_time_ms: Option<i64>,
        /// Milliseconds; the event time.
        pub destroy_timemillis: Option<i64>,
    }
}

lenient_struct! {
    /// `room_create`: the first user entered a room. Sends numbers, not strings.
    pub struct RoomCreate {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        /// A UInt64 such as 858012925204410400, above 2^53.
        pub room_session_id: Option<String>,
        /// Milliseconds; the event time.
        pub room_create_time: Option<i64>,
        pub id_name: Option<String>,
    }
}

lenient_struct! {
    /// `room_close`: the room closed.
    pub struct RoomClose {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        pub room_session_id: Option<String>,
        /// 0 normal, 1 last user's heartbeat timed out, 2 dropped, 3 kicked.
        pub close_reason: Option<i64>,
        /// Milliseconds; the event time.
        pub room_close_time: Option<i64>,
    }
}

lenient_struct! {
    /// `room_login`: a user joined a room.
    pub struct RoomLogin {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        pub room_name: Option<String>,
        /// Same as `room_session_id`; 19 digits.
        pub room_seq: Option<String>,
        pub user_account: Option<String>,
        pub user_nickname: Option<String>,
        /// 18-19 digits.
        pub session_id: Option<String>,
        /// Milliseconds; the event time.
        pub login_time: Option<i64>,
        /// 1 host, 2 audience, 4 admin.
        pub user_role: Option<i64>,
        pub auth_level: Option<i64>,
        pub relogin: Option<i64>,
        pub user_update_seq: Option<i64>,
        pub callback_data: Option<String>,
    }
}

lenient_struct! {
    /// `room_logout`: a user left a room.
    pub struct RoomLogout {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub room_id: Option<String>,
        pub room_seq: Option<String>,
        pub user_account: Option<String>,
        pub user_nickname: Option<String>,
        pub session_id: Option<String>,
        pub login_time: Option<i64>,
        /// Milliseconds; the event time.
        pub logout_time: Option<i64>,
        /// 0 normal, 1 heartbeat timeout, 2 access-layer drop, 3 kicked, 4 token expired.
        pub reason: Option<i64>,
        pub user_role: Option<i64>,
        pub user_update_seq: Option<i64>,
    }
}

lenient_struct! {
    /// `mix_start`: a mix task started.
    ///
    /// The example sends both singular URL fields (strings) and plural ones
    /// (arrays); both are lists here, like `stream_create`'s `rtmp_url`.
    pub struct MixStart {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub seq: Option<i64>,
        /// `"appid:task"`.
        pub task_id: Option<String>,
        pub channel_id: Option<String>,
        pub publish_id: Option<String>,
        pub mix_url: Option<String>,
        pub mix_stream_alias: Option<String>,
        pub stream_alias: Option<String>,
        pub rtmp_url: Option<Vec<String>>,
        pub hls_url: Option<Vec<String>>,
        pub hdl_url: Option<Vec<String>>,
        pub rtmp_urls: Option<Vec<String>>,
        pub hls_urls: Option<Vec<String>>,
        pub hdl_urls: Option<Vec<String>>,
    }
}

lenient_struct! {
    /// `mix_stop`: a mix task stopped (not sent when the mix dies abnormally).
    pub struct MixStop {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub seq: Option<i64>,
        pub task_id: Option<String>,
        pub channel_id: Option<String>,
        pub publish_id: Option<String>,
        pub mix_url: Option<String>,
        pub mix_stream_alias: Option<String>,
    }
}

lenient_struct! {
    /// `record`: a CDN recording file is ready. May arrive twice (one per format).
    pub struct Record {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub stream_alias: Option<String>,
        pub replay_url: Option<String>,
        /// Seconds.
        pub begin_time: Option<i64>,
        /// Seconds.
        pub end_time: Option<i64>,
        /// Vendor-specific JSON in a string, kept as sent.
        pub extra_params: Option<String>,
    }
}

lenient_struct! {
    /// `snapshot`: an on-demand snapshot task finished.
    pub struct Snapshot {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub task_id: Option<String>,
        /// Spelled `field_id` by ZEGO (sic).
        pub field_id: Option<String>,
        /// `tencent` or `hw`.
        pub vendor: Option<String>,
        /// JSON array in a string, kept as sent.
        pub snapshot_pic_list: Option<String>,
    }
}

lenient_struct! {
    /// `procedure`: an on-demand transcoding task finished.
    pub struct Procedure {
        pub appid: Option<String>,
        pub event: Option<String>,
        pub task_id: Option<String>,
        /// `SUCCESS` or `FAILED`.
        pub status: Option<String>,
        /// The doc's table says `fileId`, its example `file_id`; either is read.
        pub file_id: Option<String>,
        /// JSON in a string, kept as sent.
        pub extra_params: Option<String>,
    }
}

/// One stream-family callback. Serializes as the variant's fields alone
/// (the envelope carries the kind); [`Event::Unknown`] as its raw fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    StreamCreate(StreamCreate),
    StreamClose(StreamClose),
    RoomCreate(RoomCreate),
    RoomClose(RoomClose),
    RoomLogin(RoomLogin),
    RoomLogout(RoomLogout),
    MixStart(MixStart),
    MixStop(MixStop),
    Record(Record),
    Compose(Compose),
    Snapshot(Snapshot),
    Procedure(Procedure),
    /// Any other `event`, or none (`kind` is then `unknown`).
    #[serde(serialize_with = "crate::providers::serialize_raw")]
    Unknown {
        /// The `event` string as sent, or `unknown`.
        kind: String,
        /// The payload without its signing fields.
        raw: Value,
    },
}

impl Event {
    /// Dispatches on `event` (falling back to PascalCase `Event`, which the
    /// transcoding and moderation siblings use). Never fails.
    pub fn parse(payload: &Value) -> Event {
        let tag = ["event", "Event"]
            .iter()
            .find_map(|key| payload.get(key).and_then(Value::as_str));
        let Some(tag) = tag else {
            return Event::unknown("unknown", payload);
        };
        match tag {
            "stream_create" => typed(tag, payload, Event::StreamCreate),
            "stream_close" => typed(tag, payload, Event::StreamClose),
            "room_create" => typed(tag, payload, Event::RoomCreate),
            "room_close" => typed(tag, payload, Event::RoomClose),
            "room_login" => typed(tag, payload, Event::RoomLogin),
            "room_logout" => typed(tag, payload, Event::RoomLogout),
            "mix_start" => typed(tag, payload, Event::MixStart),
            "mix_stop" => typed(tag, payload, Event::MixStop),
            "record" => typed(tag, payload, Event::Record),
            "compose" => typed(tag, payload, Event::Compose),
            "snapshot" => typed(tag, payload, Event::Snapshot),
            "procedure" => typed(tag, payload, |mut p: Procedure| {
                if p.file_id.is_none() {
                    p.file_id = payload.get("fileId").and_then(lenient::string_value);
                }
                Event::Procedure(p)
            }),
            _ => Event::unknown(tag, payload),
        }
    }

    fn unknown(kind: &str, payload: &Value) -> Event {
        Event::Unknown {
            kind: kind.to_owned(),
            raw: super::without_signing(payload),
        }
    }
}

/// Deserializes `T` from an object payload, or keeps the payload as unknown.
///
/// The lenient structs cannot fail on an object; a non-object (an array would
/// otherwise fill fields by position) never reaches them.
fn typed<T: DeserializeOwned>(tag: &str, payload: &Value, wrap: impl FnOnce(T) -> Event) -> Event {
    match payload.is_object().then(|| T::deserialize(payload)) {
        Some(Ok(t)) => wrap(t),
        _ => Event::unknown(tag, payload),
    }
}

/// The first present, non-empty id.
fn first_id<const N: usize>(ids: [&Option<String>; N]) -> Option<String> {
    ids.into_iter().flatten().find(|id| !id.is_empty()).cloned()
}

impl TypedEvent for Event {
    fn kind(&self) -> &str {
        match self {
            Event::StreamCreate(_) => "stream_create",
            Event::StreamClose(_) => "stream_close",
            Event::RoomCreate(_) => "room_create",
            Event::RoomClose(_) => "room_close",
            Event::RoomLogin(_) => "room_login",
            Event::RoomLogout(_) => "room_logout",
            Event::MixStart(_) => "mix_start",
            Event::MixStop(_) => "mix_stop",
            Event::Record(_) => "record",
            Event::Compose(_) => "compose",
            Event::Snapshot(_) => "snapshot",
            Event::Procedure(_) => "procedure",
            Event::Unknown { kind, .. } => kind,
        }
    }

    fn event_time_ms(&self) -> Option<i64> {
        match self {
            Event::StreamCreate(e) => e.create_time_ms,
            Event::StreamClose(e) => e.destroy_timemillis,
            Event::RoomCreate(e) => e.room_create_time,
            Event::RoomClose(e) => e.room_close_time,
            Event::RoomLogin(e) => e.login_time,
            Event::RoomLogout(e) => e.logout_time,
            // The mix and CDN events carry no millisecond event time; the
            // signing timestamp is the send time, not the event's.
            Event::MixStart(_)
            | Event::MixStop(_)
            | Event::Record(_)
            | Event::Compose(_)
            | Event::Snapshot(_)
            | Event::Procedure(_)
            | Event::Unknown { .. } => None,
        }
    }

    fn resource(&self) -> Option<String> {
        match self {
            Event::StreamCreate(e) => first_id([&e.stream_id, &e.stream_alias]),
            Event::StreamClose(e) => first_id([&e.stream_id, &e.stream_alias]),
            Event::RoomCreate(e) => first_id([&e.room_id]),
            Event::RoomClose(e) => first_id([&e.room_id]),
            Event::RoomLogin(e) => first_id([&e.room_id]),
            Event::RoomLogout(e) => first_id([&e.room_id]),
            Event::MixStart(e) => first_id([&e.task_id]),
            Event::MixStop(e) => first_id([&e.task_id]),
            Event::Record(e) => first_id([&e.stream_alias]),
            Event::Compose(e) => first_id([&e.task_id]),
            Event::Snapshot(e) => first_id([&e.task_id]),
            Event::Procedure(e) => first_id([&e.task_id]),
            Event::Unknown { raw, .. } => ["stream_id", "stream_alias", "task_id", "room_id"]
                .iter()
                .filter_map(|key| raw.get(key).and_then(Value::as_str))
                .find(|id| !id.is_empty())
                .map(str::to_owned),
        }
    }
}

/// Every kind the stream parser produces (the compose route shares it).
pub const KINDS: &[&str] = &[
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
    "unknown",
];

/// `/callbacks/zego/stream`: the stream, room, mix and CDN callbacks.
pub static FAMILY: FamilyDef = FamilyDef {
    name: "stream",
    provider: Provider::Zego,
    route: "/callbacks/zego/stream",
    kinds: KINDS,
    auth: &ZegoSignature(Casing::Lower),
    parse: |payload| Parsed::from_typed(&Event::parse(payload)),
    sample,
    sample_kinds: &[
        ("stream_create", 0),
        ("stream_close", 0),
        ("room_login", 0),
        ("room_logout", 0),
        ("room_create", 0),
        ("room_close", 0),
        ("mix_start", 0),
        ("mix_stop", 0),
        ("record", 0),
    ],
};

/// A realistic lowercase-keyed payload of `kind`, string values as ZEGO
/// sends them, with empty signing fields where ZEGO puts them (after the app
/// id) for the signer to fill in.
pub fn sample(kind: &str, i: u64, ctx: &SampleContext) -> Option<Value> {
    let (run, app, now) = (&ctx.run, ctx.app_id.as_str(), ctx.now_ms);
    let secs = (now / 1000).to_string();
    let ms = now.to_string();
    let room = format!("room-{run}-{}", i / 16);
    let user = format!("user-{run}-{i}");
    let stream = format!("stream-{run}-{i}");
    let sid = format!("s-{}{:017}", ctx.run_num, i);
    let session = big_id().to_string();
    let seq = (i % 100_000 + 1).to_string();
    let task = format!("{app}:{run}-{i}");
    let value = match kind {
        "stream_create" => json!({
            "event": "stream_create", "appid": app, "timestamp": "", "nonce": "", "signature": "",
            "room_id": room, "room_session_id": session,
            "user_id": user, "user_name": format!("{user}_name"), "channel_id": room,
            "stream_id": stream, "stream_sid": sid, "title": format!("live {i}"),
            "stream_alias": stream, "stream_attr": "{\"cid\":0}", "stream_seq": seq,
            "create_time": secs, "create_time_ms": ms, "extra_info": "",
            "recreate": "0", "publish_id": user, "publish_name": format!("{user}_name"),
            "rtmp_url": [format!("rtmp://rtmp.wsdemo.zego.im/zegodemo/{stream}"),
                         format!("rtmp://testplay.aliyun.zego.im/livestream/{stream}")],
            "hls_url": [format!("http://hls.wsdemo.zego.im/zegodemo/{stream}/playlist.m3u8"),
                        format!("http://testplay.aliyun.zego.im/livestream/{stream}.m3u8")],
            "hdl_url": [format!("http://hdl.wsdemo.zego.im/zegodemo/{stream}.flv"),
                        format!("http://testplay.aliyun.zego.im/livestream/{stream}.flv")],
            "pic_url": [format!("http://pic.wsdemo.zego.im/zegodemo/{stream}.jpg")],
        }),
        "stream_close" => json!({
            "event": "stream_close", "appid": app, "timestamp": "", "nonce": "", "signature": "",
            "room_id": room, "room_session_id": session,
            "user_id": user, "user_name": format!("{user}_name"), "channel_id": room,
            "type": "0", "stream_alias": stream, "stream_id": stream, "stream_sid": sid,
            "stream_seq": seq, "third_define_data": "{\"u\":\"bench\"}",
            "create_time_ms": (now - 60_000).to_string(), "destroy_timemillis": ms,
        }),
        "room_login" => json!({
            "event": "room_login", "appid": app, "timestamp": "", "nonce": "", "signature": "",
            "room_id": room, "room_name": format!("{room}#name"),
            "room_seq": session, "user_account": user, "user_nickname": format!("{user}_name"),
            "session_id": big_id().to_string(), "login_time": ms,
            "user_role": "2", "auth_level": "4", "relogin": "0", "user_update_seq": seq,
            "callback_data": "user login",
        }),
        "room_logout" => json!({
            "event": "room_logout", "appid": app, "timestamp": "", "nonce": "", "signature": "",
            "room_id": room, "room_seq": session,
            "user_account": user, "user_nickname": format!("{user}_name"),
            "session_id": big_id().to_string(),
            "login_time": (now - 60_000).to_string(), "logout_time": ms,
            "reason": "0", "user_role": "1", "user_update_seq": seq,
        }),
        // These two send JSON numbers (room_session_id above 2^53).
        "room_create" => json!({
            "event": "room_create", "appid": ctx.app_id_value(), "timestamp": "", "nonce": "", "signature": "",
            "room_id": format!("room-{run}-{i}"), "room_session_id": big_id(),
            "room_create_time": ms, "id_name": user,
        }),
        "room_close" => json!({
            "event": "room_close", "appid": ctx.app_id_value(), "timestamp": "", "nonce": "", "signature": "",
            "room_id": format!("room-{run}-{i}"), "room_session_id": big_id(),
            "close_reason": 0, "room_close_time": ms,
        }),
        "mix_start" => json!({
            "appid": app, "timestamp": "", "nonce": "", "signature": "", "channel_id": room, "event": "mix_start",
            "hdl_url": format!("http://hdl.wsdemo.zego.im/zegodemo/mix-{run}-{i}.flv"),
            "hdl_urls": [format!("http://hdl.wsdemo.zego.im/zegodemo/mix-{run}-{i}.flv")],
            "hls_url": format!("http://hls.wsdemo.zego.im/zegodemo/mix-{run}-{i}/playlist.m3u8"),
            "hls_urls": [format!("http://hls.wsdemo.zego.im/zegodemo/mix-{run}-{i}/playlist.m3u8")],
            "mix_stream_alias": format!("mix-{run}-{i}"),
            "mix_url": format!("rtmp://rtmp.wsdemo.zego.im/zegodemo/mix-{run}-{i}"),
            "publish_id": user,
            "rtmp_url": format!("rtmp://rtmp.wsdemo.zego.im/zegodemo/mix-{run}-{i}"),
            "rtmp_urls": [format!("rtmp://rtmp.wsdemo.zego.im/zegodemo/mix-{run}-{i}")],
            "seq": seq, "stream_alias": format!("mix-{run}-{i}"), "task_id": task,
        }),
        "mix_stop" => json!({
            "appid": app, "timestamp": "", "nonce": "", "signature": "", "channel_id": room, "event": "mix_stop",
            "mix_stream_alias": format!("mix-{run}-{i}"),
            "mix_url": format!("rtmp://rtmp.wsdemo.zego.im/zegodemo/mix-{run}-{i}"),
            "publish_id": user, "seq": seq, "task_id": task,
        }),
        "record" => json!({
            "appid": app, "timestamp": "", "nonce": "", "signature": "", "event": "record", "stream_alias": stream,
            "replay_url": format!("https://record.example.com/{stream}.mp4"),
            "begin_time": ((now - 60_000) / 1000).to_string(), "end_time": secs,
            "extra_params": "",
        }),
        "compose" => json!({
            "appid": app, "timestamp": "", "nonce": "", "signature": "", "event": "compose",
            "replay_url": format!("https://vod.example.com/compose/{run}-{i}.mp4"),
            "task_id": format!("compose-{run}-{i}"), "file_id": big_id().to_string(),
            "code": "0", "message": "success",
        }),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Family, parse};
    use serde_json::json;

    const SEED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seeds/zego_stream_create.json"
    ));

    /// protocol-vectors.json `zego_stream_close_doc`.
    const STREAM_CLOSE: &str = r##"{
    "event": "stream_close",
    "appid": "1",
    "timestamp": "1666786067",
    "nonce": "7266888922840654370",
    "signature": "3b34c38ccac2a5db80cb5a52e8a7815cc59eb313",
    "room_id": "room1",
    "room_session_id": "123456789",
    "user_id": "user1",
    "user_name": "user1_name",
    "channel_id": "0xb-0x1",
    "type": "0",
    "stream_alias": "aaa",
    "stream_id": "stream_id",
    "stream_sid": "s-115205136669740000000000104",
    "stream_seq": "700",
    "third_define_data": "{\"u\":\"S1lxOUxMN2tRZ3lIY0JMSUs3VlMxZz09\"}",
    "create_time_ms": "1666786067353",
    "destroy_timemillis": "1666986067248"
}"##;
    /// protocol-vectors.json `zego_room_login_doc`.
    const ROOM_LOGIN: &str = r##"{
    "event": "room_login",
    "appid": "1",
    "timestamp": "1499676978",
    "nonce": "350176",
    "signature": "c6ba3eb92c23487c8ac0571fe3358bada654cad3",
    "room_id": "rid_1242649",
    "room_name": "room#123",
    "room_seq": "6085791336856668982",
    "user_account": "888120154",
    "user_nickname": "888120154",
    "session_id": "792148503087288320",
    "login_time": "1499676978027",
    "user_role": "2",
    "auth_level": "4",
    "relogin": "0",
    "user_update_seq": "1",
    "callback_data": "user login"
}"##;
    /// protocol-vectors.json `zego_room_logout_doc`.
    const ROOM_LOGOUT: &str = r##"{
    "event": "room_logout",
    "appid": "1",
    "timestamp": "1499676978",
    "nonce": "350176",
    "signature": "c6ba3eb92c23487c8ac0571fe3358bada654cad3",
    "room_id": "rid_1242649",
    "room_seq": "6085791336856668982",
    "user_account": "888120154",
    "user_nickname": "888120154",
    "session_id": "792462300429684736",
    "login_time": "1663740623660",
    "logout_time": "1663740627986",
    "reason": "0",
    "user_role": "1",
    "user_update_seq": "13"
}"##;
    /// protocol-vectors.json `zego_room_create_doc_numeric`.
    const ROOM_CREATE: &str = r##"{
    "event": "room_create",
    "appid": 1,
    "timestamp": 1499676978,
    "nonce": "350176",
    "signature": "c6ba3eb92c23487c8ac0571fe3358bada654cad3",
    "room_id": "rid_1242649",
    "room_session_id": 858012925204410400,
    "room_create_time": "1499676978027",
    "id_name": "id123"
}"##;
    /// protocol-vectors.json `zego_room_close_doc_numeric`.
    const ROOM_CLOSE: &str = r##"{
    "event": "room_close",
    "appid": 1,
    "timestamp": 1499676989,
    "nonce": "350176",
    "signature": "2433751406ae9c5f1edeb36809c6ab6e72770ab1",
    "room_id": "rid_1242649",
    "room_session_id": 858012925204410400,
    "close_reason": 1,
    "room_close_time": "1499676989909"
}"##;
    /// protocol-vectors.json `zego_mix_start_doc`.
    const MIX_START: &str = r##"{
    "appid": "111111",
    "channel_id": "2222",
    "event": "mix_start",
    "hdl_url": "http://hdl.wsdemo.zego.im/zegodemo/aaa.flv",
    "hdl_urls": [
        "http://hdl.wsdemo.zego.im/zegodemo/aaa.flv",
        "http://testplay.aliyun.zego.im/livestream/aaa.flv"
    ],
    "hls_url": "http://hls.wsdemo.zego.im/zegodemo/aaa/playlist.m3u8",
    "hls_urls": [
        "http://hls.wsdemo.zego.im/zegodemo/aaa/playlist.m3u8",
        "http://testplay.aliyun.zego.im/livestream/aaa.m3u8"
    ],
    "mix_stream_alias": "aaa",
    "mix_url": "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
    "nonce": "7257784982359218206",
    "publish_id": "abc",
    "rtmp_url": "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
    "rtmp_urls": [
        "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
        "rtmp://testplay.aliyun.zego.im/livestream/aaa"
    ],
    "seq": "123",
    "signature": "2402a8ef03fc4c4a5a4059338aa7a6375079c30e",
    "stream_alias": "aaa",
    "task_id": "111111:1111",
    "timestamp": "1689834748"
}"##;
    /// protocol-vectors.json `zego_mix_stop_doc`.
    const MIX_STOP: &str = r##"{
    "appid": "111111",
    "channel_id": "2222",
    "event": "mix_stop",
    "mix_stream_alias": "aaa",
    "mix_url": "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
    "nonce": "7257787020413449571",
    "publish_id": "abc",
    "seq": "1234",
    "signature": "656f4397622b3cc242cf594b6b1bb5fc4d62a354",
    "task_id": "111111:1111",
    "timestamp": "1689835223"
}"##;
    /// protocol-vectors.json `zego_record_doc`.
    const RECORD: &str = r##"{
    "stream_alias": "aaaa",
    "replay_url": "replay_url",
    "begin_time": "1481597358",
    "end_time": "1481597358",
    "timestamp": "1481597358",
    "nonce": "158273",
    "signature": "4748d43a12a70874e63a769400099ed2b33a0e89",
    "appid": "1",
    "event": "record",
    "extra_params": "extra_params"
}"##;
    /// protocol-vectors.json `zego_compose_seed`.
    const COMPOSE: &str = r##"{
    "appid": "1",
    "event": "compose",
    "replay_url": "replay_url",
    "task_id": "task_id",
    "file_id": "5285890813218549789",
    "code": "0",
    "message": "message",
    "timestamp": "1481597358",
    "nonce": "158273",
    "signature": "4748d43a12a70874e63a769400099ed2b33a0e89"
}"##;
    /// protocol-vectors.json `zego_snapshot_doc_fixed`.
    const SNAPSHOT: &str = r##"{
    "appid": "12345",
    "event": "snapshot",
    "timestamp": "148150008",
    "nonce": "158243",
    "signature": "d37648c98c91e51117a7b76d3bb5b69411fc7efa",
    "task_id": "1253642700910365374",
    "field_id": "abcwurywbhsfwi",
    "vendor": "tencent",
    "snapshot_pic_list": "[{\"url\":\"http://abc.com/1.jpg\",\"offset\":0},{\"url\":\"http://abc.com/1.jpg\",\"offset\":0}]"
}"##;
    /// protocol-vectors.json `zego_procedure_doc_fixed`.
    const PROCEDURE: &str = r##"{
    "appid": "12345",
    "event": "procedure",
    "task_id": "xxxxx",
    "status": "SUCCESS",
    "file_id": "3270835010897125368",
    "extra_params": "extra_params",
    "timestamp": "148150008",
    "nonce": "158243",
    "signature": "d37648c98c91e51117a7b76d3bb5b69411fc7efa"
}"##;
    /// protocol-vectors.json `zego_stream_create_numbers_not_strings`.
    const STREAM_CREATE_NUMBERS: &str = r##"{
    "event": "stream_create",
    "appid": 1,
    "timestamp": 1687981272,
    "nonce": 7254119327986670314,
    "signature": "59455843a406d8bc15e55e5b5e98fc434a83111f",
    "room_id": "room1",
    "room_session_id": 1234567,
    "user_id": "user1",
    "user_name": "user1_name",
    "channel_id": "0xb-0x1",
    "stream_id": "stream_id",
    "stream_sid": "s-115205136669740000000000104",
    "title": "title",
    "stream_alias": "aaa",
    "stream_attr": "{\"cid\":0}",
    "stream_seq": 1,
    "create_time": 1687981272,
    "create_time_ms": 1687981272742,
    "extra_info": "extra",
    "recreate": 0,
    "publish_id": "publish",
    "publish_name": "publish_name",
    "rtmp_url": [
        "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
        "rtmp://testplay.aliyun.zego.im/livestream/aaa"
    ],
    "hls_url": [
        "http://hls.wsdemo.zego.im/zegodemo/aaa/playlist.m3u8",
        "http://testplay.aliyun.zego.im/livestream/aaa.m3u8"
    ],
    "hdl_url": [
        "http://hdl.wsdemo.zego.im/zegodemo/aaa.flv",
        "http://testplay.aliyun.zego.im/livestream/aaa.flv"
    ],
    "pic_url": [
        "http://pic.wsdemo.zego.im/zegodemo/aaa.jpg"
    ]
}"##;
    /// protocol-vectors.json `zego_transcode_start_pascal`.
    const TRANSCODE_START: &str = r##"{
    "Event": "transcode_start",
    "Appid": "111111",
    "Timestamp": "1689834748",
    "Nonce": "7257784982359218206",
    "Signature": "2402a8ef03fc4c4a5a4059338aa7a6375079c30e",
    "TaskId": "2222",
    "UserId": "2222",
    "Sequence": 0,
    "Status": "TranscodeStarted",
    "Details": {
        "Input": {
            "StreamId": "2222"
        },
        "Outputs": [
            {
                "StreamId": "2222",
                "VideoEncId": 0,
                "Fps": 0,
                "ShortEdgeAdaption": 0,
                "Width": 1280,
                "Height": 720,
                "VideoBitrate": 0,
                "GOP": 2
            }
        ]
    }
}"##;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("vector bodies are JSON")
    }

    #[test]
    fn the_seed_stream_create_example_parses_with_typed_fields() {
        let event = Event::parse(&json(SEED));
        assert_eq!(event.kind(), "stream_create");
        assert_eq!(event.event_time_ms(), Some(1687981272742));
        assert_eq!(event.resource().as_deref(), Some("stream_id"));
        let Event::StreamCreate(e) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(e.appid.as_deref(), Some("1"));
        assert_eq!(e.room_session_id.as_deref(), Some("1234567"));
        assert_eq!(
            e.stream_sid.as_deref(),
            Some("s-115205136669740000000000104")
        );
        assert_eq!(e.stream_seq, Some(1), "\"01\" has a leading zero");
        assert_eq!(e.create_time, Some(1687981272));
        assert_eq!(e.recreate, Some(0));
        assert_eq!(e.stream_attr.as_deref(), Some(r#"{"cid":0}"#));
        assert_eq!(e.rtmp_url.as_ref().map(Vec::len), Some(2));
        assert_eq!(e.hls_url.as_ref().map(Vec::len), Some(2));
        assert_eq!(e.hdl_url.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            e.pic_url.as_deref(),
            Some(&["http://pic.wsdemo.zego.im/zegodemo/aaa.jpg".to_owned()][..])
        );
    }

    #[test]
    fn stream_create_serializes_normalized_without_signing_fields() {
        let v = serde_json::to_value(Event::parse(&json(SEED))).unwrap();
        assert_eq!(
            v,
            json!({
                "appid": "1",
                "event": "stream_create",
                "room_id": "room1",
                "room_session_id": "1234567",
                "user_id": "user1",
                "user_name": "user1_name",
                "channel_id": "0xb-0x1",
                "stream_id": "stream_id",
                "stream_sid": "s-115205136669740000000000104",
                "title": "title",
                "stream_alias": "aaa",
                "stream_attr": "{\"cid\":0}",
                "stream_seq": 1,
                "create_time": 1687981272,
                "create_time_ms": 1687981272742_i64,
                "extra_info": "extra",
                "recreate": 0,
                "publish_id": "publish",
                "publish_name": "publish_name",
                "rtmp_url": [
                    "rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa",
                    "rtmp://testplay.aliyun.zego.im/livestream/aaa"
                ],
                "hls_url": [
                    "http://hls.wsdemo.zego.im/zegodemo/aaa/playlist.m3u8",
                    "http://testplay.aliyun.zego.im/livestream/aaa.m3u8"
                ],
                "hdl_url": [
                    "http://hdl.wsdemo.zego.im/zegodemo/aaa.flv",
                    "http://testplay.aliyun.zego.im/livestream/aaa.flv"
                ],
                "pic_url": ["http://pic.wsdemo.zego.im/zegodemo/aaa.jpg"]
            })
        );
    }

    #[test]
    fn stream_create_with_numbers_instead_of_strings_serializes_the_same() {
        let from_numbers =
            serde_json::to_value(Event::parse(&json(STREAM_CREATE_NUMBERS))).unwrap();
        let from_strings = serde_json::to_value(Event::parse(&json(SEED))).unwrap();
        assert_eq!(from_numbers, from_strings);
    }

    #[test]
    fn the_protocol_vector_bodies_parse_to_their_kinds_times_and_resources() {
        let table: [(&str, &str, Option<i64>, Option<&str>); 12] = [
            (
                STREAM_CLOSE,
                "stream_close",
                Some(1666986067248),
                Some("stream_id"),
            ),
            (
                ROOM_LOGIN,
                "room_login",
                Some(1499676978027),
                Some("rid_1242649"),
            ),
            (
                ROOM_LOGOUT,
                "room_logout",
                Some(1663740627986),
                Some("rid_1242649"),
            ),
            (
                ROOM_CREATE,
                "room_create",
                Some(1499676978027),
                Some("rid_1242649"),
            ),
            (
                ROOM_CLOSE,
                "room_close",
                Some(1499676989909),
                Some("rid_1242649"),
            ),
            (MIX_START, "mix_start", None, Some("111111:1111")),
            (MIX_STOP, "mix_stop", None, Some("111111:1111")),
            (RECORD, "record", None, Some("aaaa")),
            (COMPOSE, "compose", None, Some("task_id")),
            (SNAPSHOT, "snapshot", None, Some("1253642700910365374")),
            (PROCEDURE, "procedure", None, Some("xxxxx")),
            (TRANSCODE_START, "transcode_start", None, None),
        ];
        for (body, kind, time, resource) in table {
            let event = Event::parse(&json(body));
            assert_eq!(event.kind(), kind);
            assert_eq!(event.event_time_ms(), time, "{kind}");
            assert_eq!(event.resource().as_deref(), resource, "{kind}");
            let v = serde_json::to_value(&event).unwrap();
            for key in [
                "timestamp",
                "nonce",
                "signature",
                "Timestamp",
                "Nonce",
                "Signature",
            ] {
                assert!(v.get(key).is_none(), "{kind} serialized {key}");
            }
        }
    }

    #[test]
    fn stream_close_types_its_reason_and_times() {
        let Event::StreamClose(e) = Event::parse(&json(STREAM_CLOSE)) else {
            panic!()
        };
        assert_eq!(e.r#type, Some(0));
        assert_eq!(e.stream_seq, Some(700));
        assert_eq!(e.create_time_ms, Some(1666786067353));
        assert_eq!(e.room_session_id.as_deref(), Some("123456789"));
        assert_eq!(
            e.third_define_data.as_deref(),
            Some(r#"{"u":"S1lxOUxMN2tRZ3lIY0JMSUs3VlMxZz09"}"#)
        );
        let v = serde_json::to_value(Event::StreamClose(e)).unwrap();
        assert_eq!(v["type"], json!(0));
    }

    #[test]
    fn nineteen_digit_room_ids_survive_as_exact_strings() {
        let event = Event::parse(&json(ROOM_CREATE));
        let Event::RoomCreate(e) = &event else {
            panic!()
        };
        assert_eq!(e.room_session_id.as_deref(), Some("858012925204410400"));
        assert_eq!(e.appid.as_deref(), Some("1"), "appid arrives as a number");
        assert_eq!(e.id_name.as_deref(), Some("id123"));
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["room_session_id"], json!("858012925204410400"));
        assert_eq!(v["appid"], json!("1"));

        let Event::RoomClose(e) = Event::parse(&json(ROOM_CLOSE)) else {
            panic!()
        };
        assert_eq!(e.room_session_id.as_deref(), Some("858012925204410400"));
        assert_eq!(e.close_reason, Some(1));

        let Event::RoomLogin(e) = Event::parse(&json(ROOM_LOGIN)) else {
            panic!()
        };
        assert_eq!(e.room_seq.as_deref(), Some("6085791336856668982"));
        assert_eq!(e.session_id.as_deref(), Some("792148503087288320"));
        assert_eq!(e.room_name.as_deref(), Some("room#123"));
        assert_eq!(
            (e.user_role, e.auth_level, e.relogin),
            (Some(2), Some(4), Some(0))
        );
        assert_eq!(e.user_update_seq, Some(1));
        assert_eq!(e.callback_data.as_deref(), Some("user login"));

        let Event::RoomLogout(e) = Event::parse(&json(ROOM_LOGOUT)) else {
            panic!()
        };
        assert_eq!(e.session_id.as_deref(), Some("792462300429684736"));
        assert_eq!(
            (e.login_time, e.reason, e.user_update_seq),
            (Some(1663740623660), Some(0), Some(13))
        );
    }

    #[test]
    fn a_nonce_sent_as_a_big_json_number_is_read_exactly_and_never_serialized() {
        let payload = json(STREAM_CREATE_NUMBERS);
        assert_eq!(
            lenient::string_value(&payload["nonce"]).as_deref(),
            Some("7254119327986670314")
        );
        let v = serde_json::to_value(Event::parse(&payload)).unwrap();
        assert!(v.get("nonce").is_none());
        let unknown =
            json!({"event": "x", "nonce": 7254119327986670314_u64, "n": 7254119327986670314_u64});
        let v = serde_json::to_value(Event::parse(&unknown)).unwrap();
        assert_eq!(v, json!({"event": "x", "n": 7254119327986670314_u64}));
    }

    #[test]
    fn mix_events_type_their_seq_and_read_single_urls_as_lists() {
        let Event::MixStart(e) = Event::parse(&json(MIX_START)) else {
            panic!()
        };
        assert_eq!(e.seq, Some(123));
        assert_eq!(e.mix_stream_alias.as_deref(), Some("aaa"));
        assert_eq!(
            e.rtmp_url.as_deref(),
            Some(&["rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa".to_owned()][..])
        );
        assert_eq!(e.rtmp_urls.as_ref().map(Vec::len), Some(2));
        assert_eq!(e.hls_urls.as_ref().map(Vec::len), Some(2));
        let Event::MixStop(e) = Event::parse(&json(MIX_STOP)) else {
            panic!()
        };
        assert_eq!(e.seq, Some(1234));
        assert_eq!(
            e.mix_url.as_deref(),
            Some("rtmp://rtmp.wsdemo.zego.im/zegodemo/aaa")
        );
    }

    #[test]
    fn cdn_events_keep_their_json_in_string_fields() {
        let Event::Record(e) = Event::parse(&json(RECORD)) else {
            panic!()
        };
        assert_eq!(
            (e.begin_time, e.end_time),
            (Some(1481597358), Some(1481597358))
        );
        assert_eq!(e.replay_url.as_deref(), Some("replay_url"));
        assert_eq!(e.extra_params.as_deref(), Some("extra_params"));
        let Event::Snapshot(e) = Event::parse(&json(SNAPSHOT)) else {
            panic!()
        };
        assert_eq!(e.vendor.as_deref(), Some("tencent"));
        assert!(e.snapshot_pic_list.is_some_and(|s| s.starts_with("[{")));
        let Event::Procedure(e) = Event::parse(&json(PROCEDURE)) else {
            panic!()
        };
        assert_eq!(e.status.as_deref(), Some("SUCCESS"));
        assert_eq!(e.file_id.as_deref(), Some("3270835010897125368"));
        let Event::Procedure(e) = Event::parse(&json!({"event": "procedure", "fileId": 5})) else {
            panic!()
        };
        assert_eq!(e.file_id.as_deref(), Some("5"));
    }

    #[test]
    fn a_new_event_is_kept_with_its_fields_under_its_own_kind() {
        let payload = json!({
            "event": "brand_new_event", "appid": "1", "timestamp": "1", "nonce": "2",
            "signature": "s", "stream_id": "s1", "anything": {"nested": [1, "2"]}
        });
        let event = Event::parse(&payload);
        assert_eq!(event.kind(), "brand_new_event");
        assert_eq!(event.event_time_ms(), None);
        assert_eq!(event.resource().as_deref(), Some("s1"));
        let expected = json!({"event": "brand_new_event", "appid": "1", "stream_id": "s1",
                              "anything": {"nested": [1, "2"]}});
        let Event::Unknown { kind, raw } = &event else {
            panic!()
        };
        assert_eq!((kind.as_str(), raw), ("brand_new_event", &expected));
        assert_eq!(serde_json::to_value(&event).unwrap(), expected);
    }

    #[test]
    fn a_payload_without_a_string_event_is_unknown() {
        for payload in [
            json!({"room_id": "r"}),
            json!({"event": 5}),
            json!([]),
            json!("text"),
        ] {
            let event = Event::parse(&payload);
            assert_eq!(event.kind(), "unknown", "{payload}");
        }
        assert_eq!(
            Event::parse(&json!({"room_id": "r"})).resource().as_deref(),
            Some("r")
        );
    }

    #[test]
    fn fields_of_unexpected_types_keep_the_kind() {
        let mut payload = json(SEED);
        payload["stream_seq"] = json!({"x": 1});
        payload["create_time_ms"] = json!([1]);
        payload["rtmp_url"] = json!({"a": "b"});
        payload["title"] = json!(12);
        let event = Event::parse(&payload);
        assert_eq!(event.kind(), "stream_create");
        assert_eq!(event.event_time_ms(), None);
        let Event::StreamCreate(e) = event else {
            panic!()
        };
        assert_eq!((e.stream_seq, e.rtmp_url), (None, None));
        assert_eq!(e.title.as_deref(), Some("12"));
        assert_eq!(e.stream_id.as_deref(), Some("stream_id"));
    }

    #[test]
    fn the_resource_falls_back_to_the_stream_alias() {
        for payload in [
            json!({"event": "stream_create", "stream_alias": "aaa"}),
            json!({"event": "stream_close", "stream_id": "", "stream_alias": "aaa"}),
        ] {
            assert_eq!(Event::parse(&payload).resource().as_deref(), Some("aaa"));
        }
        assert_eq!(
            Event::parse(&json!({"event": "stream_create"})).resource(),
            None
        );
    }

    #[test]
    fn the_family_parser_reduces_an_event_to_the_envelope_fields() {
        let parsed = parse(Family::by_name("stream").unwrap(), &json(ROOM_CREATE));
        assert_eq!(parsed.kind, "room_create");
        assert_eq!(parsed.event_time_ms, Some(1499676978027));
        assert_eq!(parsed.resource.as_deref(), Some("rid_1242649"));
        assert_eq!(
            parsed.event,
            json!({"appid": "1", "event": "room_create", "room_id": "rid_1242649",
                   "room_session_id": "858012925204410400", "room_create_time": 1499676978027_i64,
                   "id_name": "id123"})
        );
    }
}
