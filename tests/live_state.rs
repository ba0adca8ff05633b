//! Property tests for `hookrelay::live`: the derived live state depends on
//! the set of stored events, never on the order they are applied in.
//!
//! Envelopes are built from real parser output, the way ingest stores them,
//! from payloads shaped like the vendors' (ZEGO numbers as strings).
//! `PROPTEST_CASES=5000 cargo test --test live_state` runs longer.

use hookrelay::clock;
use hookrelay::event::Envelope;
use hookrelay::live::{LivePlayer, LiveState, LiveStream};
use hookrelay::providers::Family;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const T0: i64 = 1_700_000_000_000;
const APPS: [&str; 2] = ["111", "222"];
const ROOMS: [&str; 2] = ["room1", "room2"];
const STREAMS: [&str; 2] = ["s1", "s2"];

/// `default` cases, or `PROPTEST_CASES` when set.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/live_state.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// The envelope ingest would store for `payload` posted to `family`.
fn envelope(family: &str, app_id: &str, payload: &Value) -> Value {
    let family = Family::by_name(family).expect("family");
    let parsed = family.parse(payload);
    let received_at = clock::rfc3339(parsed.event_time_ms.unwrap_or(T0));
    let envelope = Envelope {
        id: "id",
        received_at: &received_at,
        provider: family.provider(),
        family,
        kind: &parsed.kind,
        app_id,
        event_time_ms: parsed.event_time_ms,
        dedup_key: "dedup",
        event: &parsed.event,
        raw: payload,
    };
    serde_json::to_value(envelope).unwrap()
}

// ---- scenarios -------------------------------------------------------------

/// One publishing session: which key, and how its life went.
#[derive(Debug, Clone)]
struct Session {
    app: usize,
    room: usize,
    stream: usize,
    life: Life,
}

#[derive(Debug, Clone, Copy)]
enum Life {
    Created,
    Closed,
    Resumed,
    ResumedAndClosed,
    /// The create was lost; only the close arrived.
    CloseOnly,
}

/// One player or task: its provider and the event codes it went through.
#[derive(Debug, Clone)]
struct Task {
    source: Source,
    app: usize,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    ZegoPlayer,
    ZegoUpload,
    Netease,
}

/// An event type with its `Detail` value (Status, Reason or Code).
#[derive(Debug, Clone, Copy)]
struct Step {
    event_type: i64,
    detail: i64,
}

impl Step {
    /// Whether this event ends the player or task (see `live`'s table).
    fn ends(self) -> bool {
        matches!(
            (self.event_type, self.detail),
            (2, _) | (3, 8) | (10001 | 10002 | 10006, _) | (10003, 3) | (502 | 504, _)
        )
    }
}

fn life() -> impl Strategy<Value = Life> {
    prop_oneof![
        Just(Life::Created),
        Just(Life::Closed),
        Just(Life::Resumed),
        Just(Life::ResumedAndClosed),
        Just(Life::CloseOnly),
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (0..APPS.len(), 0..ROOMS.len(), 0..STREAMS.len(), life()).prop_map(
        |(app, room, stream, life)| Session {
            app,
            room,
            stream,
            life,
        },
    )
}

fn step(source: Source) -> BoxedStrategy<Step> {
    let (types, details): (Vec<i64>, std::ops::RangeInclusive<i64>) = match source {
        Source::ZegoPlayer => (vec![1, 2, 3, 3, 3, 4], 1..=8),
        Source::ZegoUpload => ((10001..=10006).chain([10003, 10003]).collect(), 1..=3),
        Source::Netease => ((500..=507).collect(), 0..=0),
    };
    (proptest::sample::select(types), details)
        .prop_map(|(event_type, detail)| Step { event_type, detail })
        .boxed()
}

fn task() -> impl Strategy<Value = Task> {
    (
        prop_oneof![
            Just(Source::ZegoPlayer),
            Just(Source::ZegoUpload),
            Just(Source::Netease)
        ],
        0..APPS.len(),
    )
        .prop_flat_map(|(source, app)| {
            let first = match source {
                Source::ZegoPlayer => Step {
                    event_type: 1,
                    detail: 0,
                },
                Source::ZegoUpload => Step {
                    event_type: 10003,
                    detail: 1,
                },
                Source::Netease => Step {
                    event_type: 500,
                    detail: 0,
                },
            };
            proptest::collection::vec(step(source), 0..5).prop_map(move |rest| Task {
                source,
                app,
                steps: std::iter::once(first).chain(rest).collect(),
            })
        })
}

fn stream_event(s: &Session, sid: &str, close: bool, seq: i64, at: i64, recreate: bool) -> Value {
    let mut payload = json!({
        "event": if close { "stream_close" } else { "stream_create" },
        "appid": APPS[s.app], "timestamp": (at / 1000).to_string(),
        "nonce": "7254119327986670314", "signature": "x",
        "room_id": ROOMS[s.room], "room_session_id": "858012925204410400",
        "user_id": format!("user-{sid}"), "user_name": "u", "channel_id": "0xb-0x1",
        "stream_id": STREAMS[s.stream], "stream_alias": STREAMS[s.stream],
        "stream_sid": sid, "stream_seq": format!("{seq:02}"),
        "create_time_ms": at.to_string(),
    });
    if close {
        payload["type"] = json!("0");
        payload["destroy_timemillis"] = json!(at.to_string());
    } else {
        payload["create_time"] = json!((at / 1000).to_string());
        payload["recreate"] = json!(if recreate { "1" } else { "0" });
        payload["rtmp_url"] = json!([format!("rtmp://example/{sid}")]);
    }
    envelope("stream", APPS[s.app], &payload)
}

/// A session's events in the order they happened, and whether it is live
/// at the end.
fn session_events(i: usize, s: &Session) -> (Vec<Value>, bool) {
    let sid = format!("s-{i:03}");
    let (at, seq) = (T0 + i as i64 * 1000, i as i64 * 10 + 1);
    let create = stream_event(s, &sid, false, seq, at, false);
    let close = stream_event(s, &sid, true, seq + 1, at + 100, false);
    let resume = stream_event(s, &sid, false, seq + 2, at + 200, true);
    let close_again = stream_event(s, &sid, true, seq + 3, at + 300, false);
    match s.life {
        Life::Created => (vec![create], true),
        Life::Closed => (vec![create, close], false),
        Life::Resumed => (vec![create, close, resume], true),
        Life::ResumedAndClosed => (vec![create, close, resume, close_again], false),
        Life::CloseOnly => (vec![close], false),
    }
}

/// A task's events in the order they happened (one per 10 ms), and whether
/// it is still listed at the end.
fn task_events(i: usize, t: &Task) -> (Vec<Value>, bool) {
    let events = t
        .steps
        .iter()
        .enumerate()
        .map(|(j, step)| {
            let at = T0 + i as i64 * 1000 + j as i64 * 10;
            let app = APPS[t.app];
            match t.source {
                Source::Netease => envelope(
                    "cloud_play",
                    app,
                    &json!({"eventType": step.event_type, "data": {
                        "taskId": format!("task-{i}"), "channelId": 1144880576163552_i64,
                        "code": if step.event_type == 505 { 400 } else { 200 },
                        "idleTimeout": 2, "playTs": 0, "streamUrl": "http://vod/x.mp4",
                        "timestamp": at}}),
                ),
                Source::ZegoPlayer | Source::ZegoUpload => {
                    let detail = match step.event_type {
                        1 => json!({"CreateTime": at / 1000, "PlayTime": at / 1000,
                                    "MaxIdleTime": 30, "StreamUrl": "https://x/v.mp4"}),
                        2 | 10002 | 10004 => json!({"Reason": step.detail.min(3)}),
                        3 | 10003 => json!({"Status": step.detail}),
                        4 | 10005 => json!({"Code": -step.detail}),
                        _ => json!({}),
                    };
                    let mut payload = json!({
                        "AppID": app, "Timestamp": (at / 1000).to_string(), "Nonce": "1",
                        "Signature": "x", "EventType": step.event_type,
                        "EventTime": at.to_string(), "Detail": detail,
                    });
                    if step.event_type < 10000 {
                        payload["RoomId"] = json!("room1");
                        payload["PlayerId"] = json!(format!("player-{i}"));
                    } else {
                        payload["UploadTaskId"] = json!(format!("upload-{i}"));
                    }
                    envelope("cloud_player", app, &payload)
                }
            }
        })
        .collect();
    let listed = !t.steps.last().is_some_and(|s| s.ends());
    (events, listed)
}

struct Scenario {
    events: Vec<Value>,
    /// `(app, room, stream)` → live at the end.
    live_keys: BTreeMap<(String, String, String), bool>,
    /// Ids listed at the end.
    listed: Vec<String>,
}

fn scenario(sessions: &[Session], tasks: &[Task]) -> Scenario {
    let mut events = Vec::new();
    let mut live_keys = BTreeMap::new();
    for (i, s) in sessions.iter().enumerate() {
        let (e, live) = session_events(i, s);
        events.extend(e);
        let key = (
            APPS[s.app].into(),
            ROOMS[s.room].into(),
            STREAMS[s.stream].into(),
        );
        *live_keys.entry(key).or_insert(false) |= live;
    }
    let mut listed = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let (e, is_listed) = task_events(i, t);
        if is_listed {
            let id = e.last().map(|e| {
                let ev = &e["event"];
                ["PlayerId", "UploadTaskId", "taskId"]
                    .iter()
                    .find_map(|k| ev.get(k).and_then(Value::as_str))
                    .unwrap()
                    .to_owned()
            });
            listed.extend(id);
        }
        events.extend(e);
    }
    // The in-order sequence is the order things happened in.
    events.sort_by_key(|e| e["event_time_ms"].as_i64());
    Scenario {
        events,
        live_keys,
        listed,
    }
}

// ---- checks ----------------------------------------------------------------

type View = (Vec<LiveStream>, Vec<LivePlayer>);

fn view(state: &LiveState) -> View {
    (state.streams(None, None), state.players(None))
}

fn apply_in<'a>(order: impl IntoIterator<Item = &'a Value>) -> LiveState {
    let state = LiveState::new();
    for event in order {
        state.apply(event);
    }
    state
}

/// The in-order state is what happened: live keys and listed tasks.
fn check_in_order(s: &Scenario, state: &LiveState) -> Result<(), TestCaseError> {
    let live: Vec<_> = state
        .streams(None, None)
        .into_iter()
        .map(|l| (l.app_id, l.room_id, l.stream_id))
        .collect();
    let expected: Vec<_> = s
        .live_keys
        .iter()
        .filter(|(_, live)| **live)
        .map(|(k, _)| k.clone())
        .collect();
    prop_assert_eq!(live, expected);
    let mut listed: Vec<_> = state.players(None).into_iter().map(|p| p.id).collect();
    let mut expected = s.listed.clone();
    listed.sort();
    expected.sort();
    prop_assert_eq!(listed, expected);
    // Filters agree with the whole list.
    for app in APPS {
        let by_app = state.streams(Some(app), None);
        prop_assert!(by_app.iter().all(|l| l.app_id == app));
        for room in ROOMS {
            let both = state.streams(Some(app), Some(room));
            let expected: Vec<_> = by_app
                .iter()
                .filter(|l| l.room_id == room)
                .cloned()
                .collect();
            prop_assert_eq!(both, expected);
        }
        let players = state.players(Some(app));
        let expected: Vec<_> = state
            .players(None)
            .into_iter()
            .filter(|p| p.app_id == app)
            .collect();
        prop_assert_eq!(players, expected);
    }
    Ok(())
}

fn check_snapshot(state: &LiveState, events: &[Value]) -> Result<(), TestCaseError> {
    let restored = LiveState::restore(&state.snapshot()).expect("restores");
    prop_assert_eq!(view(&restored), view(state));
    // Re-applying what was already applied after a restart changes nothing.
    for event in events.iter().rev() {
        restored.apply(event);
    }
    prop_assert_eq!(view(&restored), view(state));
    Ok(())
}

/// Every permutation of `0..n`, by Heap's algorithm.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

#[test]
fn permutations_cover_every_order_once() {
    let mut all = permutations(4);
    assert_eq!(all.len(), 24);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 24);
}

proptest! {
    #![proptest_config(cases(48))]

    /// Small sets: literally every order, each with the same repeats.
    #[test]
    fn every_permutation_of_a_small_sequence_gives_the_in_order_state(
        sessions in proptest::collection::vec(session(), 0..=2),
        tasks in proptest::collection::vec(task(), 0..=1),
        repeats in proptest::collection::vec(any::<Index>(), 0..3),
    ) {
        let mut s = scenario(&sessions, &tasks);
        s.events.truncate(6);
        // The truncated tail no longer says what happened; only compare orders.
        let expected = view(&apply_in(&s.events));
        for order in permutations(s.events.len()) {
            let repeated = repeats.iter().filter(|_| !s.events.is_empty()).map(|i| i.index(s.events.len()));
            let order: Vec<&Value> = order.into_iter().chain(repeated).map(|i| &s.events[i]).collect();
            let state = apply_in(order);
            prop_assert_eq!(view(&state), expected.clone());
        }
    }

    /// Realistic sets: several apps, rooms, streams, sessions and tasks,
    /// shuffled with repeats.
    #[test]
    fn any_shuffle_with_repeats_gives_the_in_order_state_and_survives_a_restart(
        (events_spec, order) in (
            proptest::collection::vec(session(), 0..8),
            proptest::collection::vec(task(), 0..6),
        ).prop_flat_map(|(sessions, tasks)| {
            let n = scenario(&sessions, &tasks).events.len();
            let order: Vec<usize> = (0..n).collect();
            let repeats = proptest::collection::vec(0..n.max(1), 0..=n);
            (Just((sessions, tasks)), (Just(order), repeats).prop_map(move |(mut o, r)| {
                if n > 0 { o.extend(r); }
                o
            }).prop_shuffle())
        })
    ) {
        let (sessions, tasks) = events_spec;
        let s = scenario(&sessions, &tasks);
        let in_order = apply_in(&s.events);
        check_in_order(&s, &in_order)?;
        let shuffled = apply_in(order.iter().map(|&i| &s.events[i]));
        prop_assert_eq!(view(&shuffled), view(&in_order));
        check_snapshot(&shuffled, &s.events)?;
    }
}
