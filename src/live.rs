//! The operator's window: which ZEGO streams are live now and what state
//! each cloud player, upload task and NetEase cloud-play task is in, derived
//! from stored envelopes (the JSON [`crate::event::Envelope`] serializes to).
//!
//! No HTTP and no storage here: the admin API feeds [`LiveState::apply`]
//! with envelopes (as they are stored, or re-read from the store on start in
//! any order) and serves [`LiveState::streams`] and [`LiveState::players`].
//!
//! # Order independence
//!
//! Vendors do not deliver in order (ZEGO says so for `stream_create` /
//! `stream_close`; its cloud player says to order by `EventTime`), vendors
//! retry, and a rebuild reads the store in whatever order it likes. So every
//! piece of state is a join of the events seen: each field only ever moves
//! to the maximum of itself and what an event brings. Applying any
//! permutation of a set of events, with any repetitions, gives the same
//! state (within the retention horizon below).
//!
//! ## Streams
//!
//! A stream is keyed by `(app_id, room_id, stream_id)` (`stream_alias` when
//! `stream_id` is empty). Per key, per `stream_sid` (one publishing
//! session), events are ordered by `(stream_seq, event_time_ms)`, a missing
//! value lowest. Per sid we keep the maximum order of any close, the maximum
//! order of any `recreate = 1` create, and the create with the maximum order
//! (its fields are what is shown). A sid is **live** iff a create was seen
//! and either no close was seen or some `recreate = 1` create orders after
//! every close. Hence: a close ends its sid whether it arrives before or
//! after the create; a late or repeated plain create never resurrects it; a
//! `recreate = 1` create with a higher `stream_seq` than the close resumes
//! it, and a close ordered after that recreate ends it again. An equal
//! order counts as "not after": the close wins.
//!
//! A key is live iff some sid is live. If several are (a new session's
//! create arrived, the old session's close has not), the fields shown come
//! from the live sid whose create is newest by `(since_ms, stream_seq,
//! event_time_ms, user_id)`, then the greatest `stream_sid`.
//! `since_ms` is the create's `create_time_ms`, else its envelope's
//! `event_time_ms`; `stream_seq` and `user_id` are that create's.
//!
//! ## Players and tasks
//!
//! Keyed by `(provider, app_id, id)`: ZEGO `PlayerId` (EventType 1-4) or
//! `UploadTaskId` (10001-10006), NetEase `data.taskId`. Each takes the
//! status of the event with the greatest `(event_time_ms, ended, status,
//! last_kind)`: the latest vendor event time (ZEGO `EventTime`, NetEase
//! `timestamp`); at an equal time an ending event beats a non-ending one,
//! then the words compare. An event without a time loses to any with one.
//! Ended ones are not listed.
//!
//! | source | kind (Detail) | `status` | ends |
//! |---|---|---|---|
//! | ZEGO player | `player_created` | `created` | |
//! | | `player_destroyed` | `destroyed` | yes |
//! | | `player_status_changed` (Status 1..8) | `creating`, `connecting`, `waiting`, `playing`, `paused`, `connect_failed`, `ended`, `destroyed` (other: `status_changed`) | 8 only |
//! | | `player_exception` | `exception` | |
//! | ZEGO upload | `upload_succeeded` | `succeeded` | yes |
//! | | `upload_failed` | `failed` | yes |
//! | | `upload_status_changed` (Status 1..3) | `waiting`, `uploading`, `cancelled` (other: `status_changed`) | 3 only |
//! | | `upload_cancel_failed` | `cancel_failed` | |
//! | | `upload_exception` (ZEGO retries) | `exception` | |
//! | | `upload_expired` | `expired` | yes |
//! | NetEase | `task_created` / `task_updated` | `created` / `updated` | |
//! | | `task_destroyed` | `destroyed` | yes |
//! | | `play_started` / `play_resumed` | `playing` | |
//! | | `play_paused` | `paused` | |
//! | | `play_error` | `error` | |
//! | | `play_finished` | `finished` | yes |
//!
//! A ZEGO player whose media ended (Status 7, `ended`) still exists until
//! it is destroyed (ZEGO then sends EventType 2, Reason 3), so it stays
//! listed. Unknown kinds change nothing.
//!
//! # Bounded memory
//!
//! The watermark is the greatest event time seen (an event time more than
//! an hour past its envelope's `received_at` counts as `received_at`, so one
//! bogus clock cannot age everything out). Ended sids and ended players are
//! kept as tombstones while their newest event is within
//! [`Limits::retention_ms`] (24 h) of the watermark, so a late create or an
//! older status cannot bring them back; then they are forgotten. An event
//! older than the watermark by more than the retention, for a sid or player
//! not held, is ignored: it may belong to something already forgotten. So
//! order independence holds for events within 24 h of each other; beyond
//! that, one that has never been seen and arrives after a day's newer
//! events is dropped (a restart restores the [`LiveState::snapshot`], which
//! keeps long-lived streams). Caps ([`Limits`]) bound the number of stream
//! keys, sids per key and players: past a cap, ended entries go first, then
//! those with the oldest event time.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One live ZEGO stream, as `GET /api/state/streams` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStream {
    pub app_id: String,
    pub room_id: String,
    pub stream_id: String,
    pub stream_sid: String,
    pub stream_seq: Option<i64>,
    pub user_id: Option<String>,
    /// Milliseconds: the shown create's `create_time_ms`.
    pub since_ms: Option<i64>,
}

/// One cloud player or task that has not ended, as `GET /api/state/players`
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePlayer {
    /// `zego` or `netease`.
    pub provider: String,
    pub app_id: String,
    /// `PlayerId`, `UploadTaskId` or NetEase `taskId`.
    pub id: String,
    /// See the module docs' table.
    pub status: String,
    /// The kind of the event that set `status`.
    pub last_kind: String,
    /// That event's vendor time.
    pub event_time_ms: Option<i64>,
}

/// Memory bounds; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long (event time) ended sids and players are remembered.
    pub retention_ms: i64,
    /// Stream keys `(app, room, stream_id)` held at most.
    pub max_streams: usize,
    /// Sids held per stream key at most.
    pub max_sids_per_stream: usize,
    /// Players and tasks held at most.
    pub max_players: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            retention_ms: 24 * 60 * 60 * 1000,
            max_streams: 100_000,
            max_sids_per_stream: 64,
            max_players: 100_000,
        }
    }
}

/// A snapshot that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum LiveStateError {
    #[error("live state snapshot is not valid JSON of the expected shape")]
    Malformed(#[from] serde_json::Error),
    #[error("live state snapshot version {0} is not supported")]
    Version(u32),
}

/// The derived live state; share it with `Arc`.
#[derive(Debug, Default)]
pub struct LiveState {
    inner: Mutex<Inner>,
    limits: Limits,
}

/// `(seq, event time)`, a missing value lowest.
type Order = (i64, i64);

type StreamKey = (String, String, String);
type PlayerKey = (String, String, String);

/// How many applies between two sweeps for expired tombstones.
const SWEEP_EVERY: u32 = 1024;

/// Event times may run this far ahead of `received_at` before the watermark
/// stops trusting them.
const CLOCK_SLACK_MS: i64 = 60 * 60 * 1000;

const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Default, Clone, PartialEq)]
struct Inner {
    watermark_ms: Option<i64>,
    streams: BTreeMap<StreamKey, BTreeMap<String, Sid>>,
    players: BTreeMap<PlayerKey, Player>,
    applies_since_sweep: u32,
}

/// One publishing session of a stream key. Every field is a max-join.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sid {
    /// The create with the greatest order: the fields shown.
    create: Option<Create>,
    /// The greatest order of a `recreate = 1` create.
    recreate: Option<Order>,
    /// The greatest order of a close.
    close: Option<Order>,
    /// The newest event time of any of its events.
    last_ms: Option<i64>,
}

impl Sid {
    fn is_live(&self) -> bool {
        self.create.is_some()
            && match self.close {
                None => true,
                Some(close) => self.recreate.is_some_and(|recreate| recreate > close),
            }
    }
}

/// A create's shown fields; derived `Ord` compares them in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Create {
    order: Order,
    since_ms: Option<i64>,
    stream_seq: Option<i64>,
    user_id: Option<String>,
}

/// A player's or task's status; derived `Ord` (field order) picks the winner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Player {
    event_time_ms: Option<i64>,
    ended: bool,
    status: String,
    last_kind: String,
}

/// What one envelope says, reduced to what the live state keeps.
enum Fact {
    Create {
        key: StreamKey,
        sid: String,
        create: Create,
        recreate: bool,
    },
    Close {
        key: StreamKey,
        sid: String,
        order: Order,
    },
    Player {
        key: PlayerKey,
        player: Player,
    },
}

/// The persisted form: maps as entry lists (JSON keys must be strings).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    watermark_ms: Option<i64>,
    streams: Vec<(StreamKey, BTreeMap<String, Sid>)>,
    players: Vec<(PlayerKey, Player)>,
}

impl LiveState {
    pub fn new() -> LiveState {
        LiveState::default()
    }

    pub fn with_limits(limits: Limits) -> LiveState {
        LiveState {
            inner: Mutex::default(),
            limits,
        }
    }

    /// Folds one stored envelope into the state. Envelopes of other kinds,
    /// or missing the ids the state is keyed by, change nothing.
    pub fn apply(&self, envelope: &Value) {
        let Some(fact) = Fact::read(envelope) else {
            return;
        };
        let time = envelope.get("event_time_ms").and_then(Value::as_i64);
        let clock = time.map(|t| match received_at_ms(envelope) {
            Some(received) => t.min(received.saturating_add(CLOCK_SLACK_MS)),
            None => t,
        });
        let mut inner = self.lock();
        inner.watermark_ms = inner.watermark_ms.max(clock);
        let horizon = inner
            .watermark_ms
            .map(|w| w.saturating_sub(self.limits.retention_ms));
        let stale = matches!((time, horizon), (Some(t), Some(h)) if t < h);
        match fact {
            Fact::Create { key, sid, .. } | Fact::Close { key, sid, .. }
                if stale
                    && !inner
                        .streams
                        .get(&key)
                        .is_some_and(|s| s.contains_key(&sid)) => {}
            Fact::Player { key, .. } if stale && !inner.players.contains_key(&key) => {}
            fact => inner.fold(fact, time, &self.limits),
        }
        inner.applies_since_sweep += 1;
        if inner.applies_since_sweep >= SWEEP_EVERY {
            inner.sweep(self.limits.retention_ms);
        }
    }

    /// The live streams, optionally of one app and room, sorted by app,
    /// room, stream id.
    pub fn streams(&self, app_id: Option<&str>, room_id: Option<&str>) -> Vec<LiveStream> {
        let inner = self.lock();
        inner
            .streams
            .iter()
            .filter(|((app, room, _), _)| {
                app_id.is_none_or(|a| a == app) && room_id.is_none_or(|r| r == room)
            })
            .filter_map(|((app, room, stream), sids)| {
                let (sid, create) = sids
                    .iter()
                    .filter(|(_, s)| s.is_live())
                    .filter_map(|(sid, s)| Some((sid, s.create.as_ref()?)))
                    .max_by(|(a_sid, a), (b_sid, b)| {
                        (a.since_ms, a, a_sid).cmp(&(b.since_ms, b, b_sid))
                    })?;
                Some(LiveStream {
                    app_id: app.clone(),
                    room_id: room.clone(),
                    stream_id: stream.clone(),
                    stream_sid: sid.clone(),
                    stream_seq: create.stream_seq,
                    user_id: create.user_id.clone(),
                    since_ms: create.since_ms,
                })
            })
            .collect()
    }

    /// The players and tasks that have not ended, optionally of one app,
    /// sorted by app, id, provider.
    pub fn players(&self, app_id: Option<&str>) -> Vec<LivePlayer> {
        let inner = self.lock();
        let mut players: Vec<LivePlayer> = inner
            .players
            .iter()
            .filter(|((_, app, _), p)| !p.ended && app_id.is_none_or(|a| a == app))
            .map(|((provider, app, id), p)| LivePlayer {
                provider: provider.clone(),
                app_id: app.clone(),
                id: id.clone(),
                status: p.status.clone(),
                last_kind: p.last_kind.clone(),
                event_time_ms: p.event_time_ms,
            })
            .collect();
        players
            .sort_by(|a, b| (&a.app_id, &a.id, &a.provider).cmp(&(&b.app_id, &b.id, &b.provider)));
        players
    }

    /// The whole state as JSON, tombstones included, for [`LiveState::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        let inner = self.lock();
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            watermark_ms: inner.watermark_ms,
            streams: inner
                .streams
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            players: inner
                .players
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        // Strings, integers and derived structs: serializing cannot fail.
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// The state a [`LiveState::snapshot`] was taken of, with default
    /// [`Limits`]. Events applied after it may be applied again (repeats
    /// change nothing).
    pub fn restore(bytes: &[u8]) -> Result<LiveState, LiveStateError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(LiveStateError::Version(snapshot.version));
        }
        let inner = Inner {
            watermark_ms: snapshot.watermark_ms,
            streams: snapshot.streams.into_iter().collect(),
            players: snapshot.players.into_iter().collect(),
            applies_since_sweep: 0,
        };
        Ok(LiveState {
            inner: Mutex::new(inner),
            limits: Limits::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation leaves the maps valid, so a panic elsewhere does not
        // make the state unusable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn fold(&mut self, fact: Fact, time: Option<i64>, limits: &Limits) {
        match fact {
            Fact::Create {
                key,
                sid,
                create,
                recreate,
            } => {
                let order = create.order;
                let s = self.sid(key, sid, limits);
                s.last_ms = s.last_ms.max(time);
                if recreate {
                    s.recreate = s.recreate.max(Some(order));
                }
                s.create = s.create.take().max(Some(create));
            }
            Fact::Close { key, sid, order } => {
                let s = self.sid(key, sid, limits);
                s.last_ms = s.last_ms.max(time);
                s.close = s.close.max(Some(order));
            }
            Fact::Player { key, player } => {
                if !self.players.contains_key(&key) && self.players.len() >= limits.max_players {
                    self.sweep(limits.retention_ms);
                    evict(&mut self.players, limits.max_players, |p| {
                        (!p.ended, p.event_time_ms)
                    });
                }
                let held = self.players.entry(key).or_insert_with(|| player.clone());
                if player > *held {
                    *held = player;
                }
            }
        }
    }

    /// The sid's state, made room for under the caps.
    fn sid(&mut self, key: StreamKey, sid: String, limits: &Limits) -> &mut Sid {
        if !self.streams.contains_key(&key) && self.streams.len() >= limits.max_streams {
            self.sweep(limits.retention_ms);
            evict(&mut self.streams, limits.max_streams, |sids| {
                let live = sids.values().any(Sid::is_live);
                (live, sids.values().map(|s| s.last_ms).max().flatten())
            });
        }
        let sids = self.streams.entry(key).or_default();
        if !sids.contains_key(&sid) && sids.len() >= limits.max_sids_per_stream {
            evict(sids, limits.max_sids_per_stream, |s| {
                (s.is_live(), s.last_ms)
            });
        }
        sids.entry(sid).or_default()
    }

    /// Forgets ended sids and players whose newest event is older than the
    /// retention behind the watermark.
    fn sweep(&mut self, retention_ms: i64) {
        self.applies_since_sweep = 0;
        let Some(watermark) = self.watermark_ms else {
            return;
        };
        let horizon = Some(watermark.saturating_sub(retention_ms));
        self.streams.retain(|_, sids| {
            sids.retain(|_, s| s.is_live() || s.last_ms >= horizon);
            !sids.is_empty()
        });
        self.players
            .retain(|_, p| !p.ended || p.event_time_ms >= horizon);
    }
}

/// Drops the entries that rank lowest by `rank` (ended before live, then
/// oldest) until `map` has room for one more below `cap` (a tenth of the
/// cap at once, so a full map is not re-sorted on every new key).
fn evict<K: Ord + Clone, V, R: Ord>(map: &mut BTreeMap<K, V>, cap: usize, rank: impl Fn(&V) -> R) {
    let target = cap.saturating_sub(cap / 10 + 1);
    if map.len() <= target {
        return;
    }
    let mut ranked: Vec<(R, K)> = map.iter().map(|(k, v)| (rank(v), k.clone())).collect();
    ranked.sort();
    for (_, key) in ranked.into_iter().take(map.len() - target) {
        map.remove(&key);
    }
}

impl Fact {
    fn read(envelope: &Value) -> Option<Fact> {
        let provider = envelope.get("provider")?.as_str()?;
        let kind = envelope.get("kind")?.as_str()?;
        let app = envelope.get("app_id").and_then(Value::as_str).unwrap_or("");
        let time = envelope.get("event_time_ms").and_then(Value::as_i64);
        let event = envelope.get("event")?;
        match (provider, kind) {
            ("zego", "stream_create" | "stream_close") => {
                let stream = ["stream_id", "stream_alias"]
                    .iter()
                    .filter_map(|k| str_field(event, k))
                    .find(|s| !s.is_empty())?;
                let key = (
                    app.to_owned(),
                    str_field(event, "room_id").unwrap_or("").to_owned(),
                    stream.to_owned(),
                );
                let sid = str_field(event, "stream_sid").unwrap_or("").to_owned();
                let seq = event.get("stream_seq").and_then(Value::as_i64);
                let order = (seq.unwrap_or(i64::MIN), time.unwrap_or(i64::MIN));
                if kind == "stream_close" {
                    return Some(Fact::Close { key, sid, order });
                }
                let since_ms = event.get("create_time_ms").and_then(Value::as_i64).or(time);
                Some(Fact::Create {
                    key,
                    sid,
                    recreate: event.get("recreate").and_then(Value::as_i64) == Some(1),
                    create: Create {
                        order,
                        since_ms,
                        stream_seq: seq,
                        user_id: str_field(event, "user_id").map(str::to_owned),
                    },
                })
            }
            ("zego", _) => {
                let (id_field, (status, ended)) = zego_status(kind, event)?;
                let id = str_field(event, id_field).filter(|id| !id.is_empty())?;
                Some(Fact::Player {
                    key: (provider.to_owned(), app.to_owned(), id.to_owned()),
                    player: Player {
                        event_time_ms: time,
                        ended,
                        status: status.to_owned(),
                        last_kind: kind.to_owned(),
                    },
                })
            }
            ("netease", _) => {
                let (status, ended) = netease_status(kind)?;
                let id = str_field(event, "taskId").filter(|id| !id.is_empty())?;
                Some(Fact::Player {
                    key: (provider.to_owned(), app.to_owned(), id.to_owned()),
                    player: Player {
                        event_time_ms: time,
                        ended,
                        status: status.to_owned(),
                        last_kind: kind.to_owned(),
                    },
                })
            }
            _ => None,
        }
    }
}

/// The id field and `(status, ended)` of a ZEGO cloud-player or upload kind.
fn zego_status(kind: &str, event: &Value) -> Option<(&'static str, (&'static str, bool))> {
    let detail = |field: &str| {
        event
            .get("Detail")
            .and_then(|d| d.get(field))
            .and_then(Value::as_i64)
    };
    let player = match kind {
        "player_created" => ("created", false),
        "player_destroyed" => ("destroyed", true),
        "player_status_changed" => match detail("Status") {
            Some(1) => ("creating", false),
            Some(2) => ("connecting", false),
            Some(3) => ("waiting", false),
            Some(4) => ("playing", false),
            Some(5) => ("paused", false),
            Some(6) => ("connect_failed", false),
            Some(7) => ("ended", false),
            Some(8) => ("destroyed", true),
            _ => ("status_changed", false),
        },
        "player_exception" => ("exception", false),
        _ => {
            let upload = match kind {
                "upload_succeeded" => ("succeeded", true),
                "upload_failed" => ("failed", true),
                "upload_status_changed" => match detail("Status") {
                    Some(1) => ("waiting", false),
                    Some(2) => ("uploading", false),
                    Some(3) => ("cancelled", true),
                    _ => ("status_changed", false),
                },
                "upload_cancel_failed" => ("cancel_failed", false),
                "upload_exception" => ("exception", false),
                "upload_expired" => ("expired", true),
                _ => return None,
            };
            return Some(("UploadTaskId", upload));
        }
    };
    Some(("PlayerId", player))
}

/// `(status, ended)` of a NetEase cloud-play kind.
fn netease_status(kind: &str) -> Option<(&'static str, bool)> {
    Some(match kind {
        "task_created" => ("created", false),
        "task_updated" => ("updated", false),
        "task_destroyed" => ("destroyed", true),
        "play_started" | "play_resumed" => ("playing", false),
        "play_paused" => ("paused", false),
        "play_error" => ("error", false),
        "play_finished" => ("finished", true),
        _ => return None,
    })
}

fn str_field<'a>(event: &'a Value, field: &str) -> Option<&'a str> {
    event.get(field).and_then(Value::as_str)
}

fn received_at_ms(envelope: &Value) -> Option<i64> {
    let text = envelope.get("received_at")?.as_str()?;
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Envelope;
    use crate::providers::Family;
    use serde_json::json;

    const T0: i64 = 1_700_000_000_000;

    /// The stored envelope of `payload` posted to `family`, built like
    /// `ingest::build_event` builds it.
    fn envelope(family: &str, app_id: &str, payload: Value) -> Value {
        let family = Family::by_name(family).expect("family");
        let parsed = family.parse(&payload);
        // Received when it happened, unless a test says otherwise.
        let received_at = crate::clock::rfc3339(parsed.event_time_ms.unwrap_or(T0));
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
            raw: &payload,
        };
        serde_json::to_value(envelope).unwrap()
    }

    /// A `stream_create` as ZEGO sends it: numbers as strings.
    fn create(stream: &str, sid: &str, seq: i64, at: i64, recreate: bool) -> Value {
        envelope(
            "stream",
            "1",
            json!({
                "event": "stream_create", "appid": "1", "timestamp": "1", "nonce": "2",
                "signature": "x", "room_id": "room1", "user_id": "user1",
                "stream_id": stream, "stream_sid": sid, "stream_seq": format!("{seq:02}"),
                "create_time": (at / 1000).to_string(), "create_time_ms": at.to_string(),
                "recreate": if recreate { "1" } else { "0" },
            }),
        )
    }

    fn close(stream: &str, sid: &str, seq: i64, at: i64) -> Value {
        envelope(
            "stream",
            "1",
            json!({
                "event": "stream_close", "appid": "1", "timestamp": "1", "nonce": "2",
                "signature": "x", "room_id": "room1", "user_id": "user1", "type": "0",
                "stream_id": stream, "stream_sid": sid, "stream_seq": seq.to_string(),
                "destroy_timemillis": at.to_string(),
            }),
        )
    }

    fn zego_player(event_type: i64, at: i64, detail: Value) -> Value {
        let id = if event_type > 10000 {
            json!({"UploadTaskId": "u1"})
        } else {
            json!({"PlayerId": "p1", "RoomId": "room1"})
        };
        let mut payload = json!({"AppID": 123, "EventType": event_type,
                                 "EventTime": at.to_string(), "Detail": detail});
        payload
            .as_object_mut()
            .unwrap()
            .extend(id.as_object().unwrap().clone());
        envelope("cloud_player", "123", payload)
    }

    fn netease(event_type: i64, at: i64) -> Value {
        envelope(
            "cloud_play",
            "appkey",
            json!({"eventType": event_type, "data": {"taskId": "t1", "channelId": 7,
                   "code": 200, "timestamp": at}}),
        )
    }

    fn state_of(events: &[&Value]) -> LiveState {
        let state = LiveState::new();
        for event in events {
            state.apply(event);
        }
        state
    }

    fn live_sids(state: &LiveState) -> Vec<String> {
        state
            .streams(None, None)
            .into_iter()
            .map(|s| s.stream_sid)
            .collect()
    }

    fn statuses(state: &LiveState) -> Vec<(String, String)> {
        state
            .players(None)
            .into_iter()
            .map(|p| (p.id, p.status))
            .collect()
    }

    #[test]
    fn a_created_stream_is_live_with_the_create_s_fields() {
        let state = state_of(&[&create("s1", "sid1", 1, T0, false)]);
        assert_eq!(
            state.streams(Some("1"), Some("room1")),
            vec![LiveStream {
                app_id: "1".into(),
                room_id: "room1".into(),
                stream_id: "s1".into(),
                stream_sid: "sid1".into(),
                stream_seq: Some(1),
                user_id: Some("user1".into()),
                since_ms: Some(T0),
            }]
        );
        assert!(state.streams(Some("2"), None).is_empty());
        assert!(state.streams(None, Some("room2")).is_empty());
    }

    #[test]
    fn a_close_ends_the_stream_whether_it_arrives_before_or_after_the_create() {
        let (c, x) = (
            create("s1", "sid1", 1, T0, false),
            close("s1", "sid1", 2, T0 + 5),
        );
        assert!(live_sids(&state_of(&[&c, &x])).is_empty());
        assert!(live_sids(&state_of(&[&x, &c])).is_empty());
        // Even a close whose seq is lower than the create's ends the session.
        let low = close("s1", "sid1", 0, T0 + 5);
        assert!(live_sids(&state_of(&[&c, &low])).is_empty());
    }

    #[test]
    fn a_repeated_or_late_create_does_not_resurrect_a_closed_stream() {
        let (c, x) = (
            create("s1", "sid1", 1, T0, false),
            close("s1", "sid1", 2, T0 + 5),
        );
        assert!(live_sids(&state_of(&[&c, &x, &c, &c])).is_empty());
        // A plain create with a higher seq is not a resume either.
        let later = create("s1", "sid1", 3, T0 + 9, false);
        assert!(live_sids(&state_of(&[&c, &x, &later])).is_empty());
    }

    #[test]
    fn a_repeated_create_is_one_live_stream() {
        let c = create("s1", "sid1", 1, T0, false);
        assert_eq!(live_sids(&state_of(&[&c, &c, &c])), ["sid1"]);
    }

    #[test]
    fn recreate_after_the_close_resumes_and_a_later_close_ends_it_again() {
        let c = create("s1", "sid1", 1, T0, false);
        let x = close("s1", "sid1", 2, T0 + 5);
        let r = create("s1", "sid1", 3, T0 + 9, true);
        let x2 = close("s1", "sid1", 4, T0 + 20);
        for order in [[&c, &x, &r], [&r, &x, &c], [&x, &r, &c]] {
            let state = state_of(&order);
            let streams = state.streams(None, None);
            assert_eq!(streams.len(), 1);
            assert_eq!(
                (streams[0].stream_seq, streams[0].since_ms),
                (Some(3), Some(T0 + 9))
            );
        }
        assert!(live_sids(&state_of(&[&x2, &r, &x, &c])).is_empty());
        // A recreate not after the close (equal seq and time) does not resume.
        let stale = create("s1", "sid1", 2, T0 + 5, true);
        assert!(live_sids(&state_of(&[&c, &x, &stale])).is_empty());
    }

    #[test]
    fn of_two_live_sessions_the_newest_create_is_shown_and_the_key_listed_once() {
        let old = create("s1", "old", 1, T0, false);
        let new = create("s1", "new", 1, T0 + 1000, false);
        assert_eq!(live_sids(&state_of(&[&new, &old])), ["new"]);
        assert_eq!(live_sids(&state_of(&[&old, &new])), ["new"]);
        let old_close = close("s1", "old", 2, T0 + 1001);
        assert_eq!(live_sids(&state_of(&[&old_close, &new, &old])), ["new"]);
        let new_close = close("s1", "new", 2, T0 + 2000);
        assert_eq!(live_sids(&state_of(&[&old, &new_close, &new])), ["old"]);
    }

    #[test]
    fn a_player_takes_the_status_of_the_latest_event_time_not_the_last_arrival() {
        let created = zego_player(1, T0, json!({"CreateTime": 1}));
        let playing = zego_player(3, T0 + 10, json!({"Status": 4}));
        let paused = zego_player(3, T0 + 20, json!({"Status": 5}));
        let state = state_of(&[&paused, &created, &playing]);
        let players = state.players(Some("123"));
        assert_eq!(
            players,
            vec![LivePlayer {
                provider: "zego".into(),
                app_id: "123".into(),
                id: "p1".into(),
                status: "paused".into(),
                last_kind: "player_status_changed".into(),
                event_time_ms: Some(T0 + 20),
            }]
        );
        assert!(state.players(Some("other")).is_empty());
        let exception = zego_player(4, T0 + 30, json!({"Code": -1}));
        state.apply(&exception);
        assert_eq!(statuses(&state), [("p1".into(), "exception".into())]);
    }

    #[test]
    fn a_destroyed_player_leaves_the_list_and_older_events_do_not_bring_it_back() {
        let created = zego_player(1, T0, json!({}));
        let destroyed = zego_player(2, T0 + 50, json!({"Reason": 1}));
        let playing = zego_player(3, T0 + 10, json!({"Status": 4}));
        assert!(
            state_of(&[&created, &destroyed, &playing])
                .players(None)
                .is_empty()
        );
        assert!(
            state_of(&[&destroyed, &playing, &created])
                .players(None)
                .is_empty()
        );
        let status_destroyed = zego_player(3, T0 + 50, json!({"Status": 8}));
        assert!(
            state_of(&[&created, &status_destroyed])
                .players(None)
                .is_empty()
        );
        // Media ended: the player exists until ZEGO destroys it.
        let ended = zego_player(3, T0 + 40, json!({"Status": 7}));
        assert_eq!(
            statuses(&state_of(&[&created, &ended])),
            [("p1".into(), "ended".into())]
        );
    }

    #[test]
    fn at_an_equal_event_time_the_ending_event_wins() {
        let playing = zego_player(3, T0, json!({"Status": 4}));
        let destroyed = zego_player(2, T0, json!({"Reason": 3}));
        assert!(state_of(&[&playing, &destroyed]).players(None).is_empty());
        assert!(state_of(&[&destroyed, &playing]).players(None).is_empty());
    }

    #[test]
    fn upload_tasks_are_listed_until_they_succeed_fail_are_cancelled_or_expire() {
        let waiting = zego_player(10003, T0, json!({"Status": 1}));
        let uploading = zego_player(10003, T0 + 1, json!({"Status": 2}));
        let exception = zego_player(10005, T0 + 2, json!({"Code": 2}));
        let state = state_of(&[&uploading, &waiting]);
        assert_eq!(statuses(&state), [("u1".into(), "uploading".into())]);
        state.apply(&exception);
        assert_eq!(statuses(&state), [("u1".into(), "exception".into())]);
        for (event_type, detail) in [
            (10001, json!({})),
            (10002, json!({"Reason": 1})),
            (10003, json!({"Status": 3})),
            (10006, json!({})),
        ] {
            let end = zego_player(event_type, T0 + 3, detail);
            assert!(
                state_of(&[&end, &uploading, &waiting, &exception])
                    .players(None)
                    .is_empty(),
                "{event_type}"
            );
        }
    }

    #[test]
    fn netease_tasks_follow_their_timestamp_and_leave_when_finished_or_destroyed() {
        let state = state_of(&[
            &netease(506, T0 + 30),
            &netease(500, T0),
            &netease(503, T0 + 10),
        ]);
        let players = state.players(Some("appkey"));
        assert_eq!(players.len(), 1);
        assert_eq!(
            (
                players[0].provider.as_str(),
                players[0].status.as_str(),
                players[0].last_kind.as_str()
            ),
            ("netease", "paused", "play_paused")
        );
        state.apply(&netease(507, T0 + 40));
        assert_eq!(statuses(&state), [("t1".into(), "playing".into())]);
        state.apply(&netease(504, T0 + 50));
        assert!(state.players(None).is_empty());
        state.apply(&netease(505, T0 + 45));
        assert!(
            state.players(None).is_empty(),
            "an older error does not revive it"
        );
        assert!(
            state_of(&[&netease(502, T0 + 5), &netease(500, T0)])
                .players(None)
                .is_empty()
        );
    }

    #[test]
    fn other_kinds_and_events_without_ids_change_nothing() {
        let login = envelope(
            "stream",
            "1",
            json!({"event": "room_login", "room_id": "r", "login_time": "1"}),
        );
        let no_id = envelope("cloud_play", "k", json!({"eventType": 503, "data": {}}));
        let unknown = envelope(
            "cloud_player",
            "1",
            json!({"EventType": 77, "PlayerId": "p"}),
        );
        let state = state_of(&[&login, &no_id, &unknown, &json!({"kind": 1}), &json!(null)]);
        assert!(state.streams(None, None).is_empty() && state.players(None).is_empty());
        assert_eq!(*state.lock(), Inner::default());
    }

    #[test]
    fn a_snapshot_restores_the_same_state_including_tombstones() {
        let state = state_of(&[
            &create("s1", "sid1", 1, T0, false),
            &create("s2", "sid2", 1, T0, false),
            &close("s2", "sid2", 2, T0 + 1),
            &zego_player(1, T0, json!({})),
            &netease(504, T0),
        ]);
        let restored = LiveState::restore(&state.snapshot()).unwrap();
        assert_eq!(restored.streams(None, None), state.streams(None, None));
        assert_eq!(restored.players(None), state.players(None));
        assert_eq!(restored.snapshot(), state.snapshot());
        // The tombstone still holds: a late create does not resurrect s2.
        restored.apply(&create("s2", "sid2", 1, T0, false));
        assert_eq!(live_sids(&restored), ["sid1"]);
        assert!(matches!(
            LiveState::restore(b"nope"),
            Err(LiveStateError::Malformed(_))
        ));
        let future = br#"{"version":9,"watermark_ms":null,"streams":[],"players":[]}"#;
        assert!(matches!(
            LiveState::restore(future),
            Err(LiveStateError::Version(9))
        ));
    }

    #[test]
    fn rebuilding_from_stored_events_in_reverse_gives_the_same_state() {
        let events = [
            create("s1", "a", 1, T0, false),
            close("s1", "a", 2, T0 + 10),
            create("s1", "a", 3, T0 + 20, true),
            create("s2", "b", 1, T0 + 30, false),
            zego_player(1, T0, json!({})),
            zego_player(3, T0 + 5, json!({"Status": 4})),
            netease(500, T0),
        ];
        let forward = state_of(&events.iter().collect::<Vec<_>>());
        let backward = state_of(&events.iter().rev().collect::<Vec<_>>());
        assert_eq!(backward.streams(None, None), forward.streams(None, None));
        assert_eq!(backward.players(None), forward.players(None));
        assert_eq!(live_sids(&forward), ["a", "b"]);
    }

    #[test]
    fn ended_entries_are_forgotten_after_the_retention_and_stale_events_for_them_ignored() {
        const DAY: i64 = 24 * 60 * 60 * 1000;
        let state = state_of(&[
            &create("s1", "sid1", 1, T0, false),
            &close("s1", "sid1", 2, T0 + 1),
            &create("live", "sidL", 1, T0, false),
            &netease(504, T0),
            &netease(503, T0 - 1).clone(),
        ]);
        // A day later the tombstones go at the next sweep; live streams stay.
        state.apply(&create("s9", "sid9", 1, T0 + DAY + 10, false));
        state.lock().sweep(Limits::default().retention_ms);
        {
            let inner = state.lock();
            assert!(
                !inner
                    .streams
                    .contains_key(&("1".into(), "room1".into(), "s1".into()))
            );
            assert!(inner.players.is_empty());
        }
        assert_eq!(live_sids(&state), ["sidL", "sid9"]);
        // The forgotten session's late create is too old to be trusted.
        state.apply(&create("s1", "sid1", 1, T0, false));
        state.apply(&netease(503, T0 - 1));
        assert_eq!(live_sids(&state), ["sidL", "sid9"]);
        assert!(state.players(None).is_empty());
    }

    #[test]
    fn an_event_time_far_past_received_at_does_not_age_everything_out() {
        let state = state_of(&[&netease(504, T0)]);
        // Received at T0, but claims to have happened a year later.
        let mut bogus = netease(503, T0 + 365 * 24 * 60 * 60 * 1000);
        bogus["received_at"] = json!(crate::clock::rfc3339(T0));
        state.apply(&bogus);
        let watermark = state.lock().watermark_ms;
        assert_eq!(watermark, Some(T0 + CLOCK_SLACK_MS));
    }

    #[test]
    fn the_caps_evict_ended_entries_first_then_the_oldest() {
        let state = LiveState::with_limits(Limits {
            max_streams: 3,
            max_sids_per_stream: 2,
            max_players: 2,
            ..Limits::default()
        });
        state.apply(&create("s1", "a", 1, T0, false));
        state.apply(&close("s1", "a", 2, T0 + 1));
        state.apply(&create("s2", "b", 1, T0 + 2, false));
        state.apply(&create("s3", "c", 1, T0 + 3, false));
        state.apply(&create("s4", "d", 1, T0 + 4, false));
        assert_eq!(live_sids(&state), ["b", "c", "d"]);
        state.apply(&create("s5", "e", 1, T0 + 5, false));
        // Full again: the oldest live key makes room.
        assert_eq!(live_sids(&state), ["c", "d", "e"]);
        for (i, sid) in ["x", "y", "z"].iter().enumerate() {
            state.apply(&create("s5", sid, 1, T0 + 10 + i as i64, false));
        }
        let inner = state.lock();
        let sids = &inner.streams[&("1".into(), "room1".into(), "s5".into())];
        assert_eq!(sids.keys().collect::<Vec<_>>(), ["y", "z"]);
    }
}
