//! What the admin API and UI read from the store, for either backend:
//! events newest first with where each sink stands, one event in detail,
//! dead letters and their replay, and a tail of newly stored events.
//!
//! Local: SQL over the spool's tables on a connection of its own (the
//! CLI's [`Admin`]), off the async threads. NATS: the stream read backwards
//! with direct gets (at most [`NATS_SCAN_BUDGET`] messages a request), the
//! sinks' consumers for what is done, the `_sinks` bucket for what is being
//! retried and the `_dead_letters` bucket for what is dead.

use super::nats::{EVENT_ID, RECEIVED_AT, RESOURCE, consumer_name, read_sink_state};
use super::operator::{find_event, replay_candidates, request_replay, row};
use super::{NatsStore, SpoolError, Store, StoredEvent};
use crate::spool::admin::{Admin, DeadLetterRow};
use crate::spool::{Reader, Spool};
use async_nats::jetstream::{consumer, kv, stream};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages read from the stream for one list request, at most.
pub const NATS_SCAN_BUDGET: usize = 5_000;
/// The largest page of events.
pub const MAX_LIMIT: usize = 500;

/// Filters of an event list or tail; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub family: Option<String>,
    pub kind: Option<String>,
    pub app_id: Option<String>,
    /// The event's resource id or its event id.
    pub q: Option<String>,
}

impl EventFilter {
    /// Whether an envelope (with its stored resource) matches.
    pub fn matches(&self, envelope: &Value, id: &str, resource: Option<&str>) -> bool {
        let field = |name: &str| envelope.get(name).and_then(Value::as_str);
        let is = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        is(&self.family, field("family"))
            && is(&self.kind, field("kind"))
            && is(&self.app_id, field("app_id"))
            && self
                .q
                .as_deref()
                .is_none_or(|q| q == id || resource == Some(q))
    }
}

/// A retried or dead event's last attempt, as a store keeps it.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub dead_at_ms: Option<i64>,
}

/// Where one sink stands, in store positions.
#[derive(Debug, Clone, Default)]
pub struct SinkMarks {
    pub sink: String,
    /// Every event at or below this position is done for the sink.
    pub done_upto: i64,
    /// When a failing sink is due again, Unix ms (0 = not failing).
    pub next_attempt_at_ms: i64,
    /// Events past `done_upto` that failed and are retried, by event id.
    pub attempts: HashMap<String, Attempt>,
    /// Dead letters, by event id.
    pub dead: HashMap<String, Attempt>,
}

impl SinkMarks {
    /// `delivered`, `pending`, `retrying` or `dead`.
    pub fn state(&self, position: i64, id: &str) -> &'static str {
        if self.dead.contains_key(id) {
            "dead"
        } else if position > 0 && position <= self.done_upto {
            "delivered"
        } else if self.attempts.contains_key(id) {
            "retrying"
        } else if position == 0 {
            // Gone from the store and not dead: done with it.
            "delivered"
        } else {
            "pending"
        }
    }

    fn detail(&self, position: i64, id: &str) -> SinkDelivery {
        let state = self.state(position, id);
        let mut d = SinkDelivery {
            sink: self.sink.clone(),
            state,
            attempts: None,
            last_status: None,
            last_error: None,
            next_attempt_at: None,
            delivered_at: None,
        };
        let attempt = match state {
            "dead" => self.dead.get(id),
            "retrying" => self.attempts.get(id),
            "pending" => {
                d.attempts = Some(0);
                None
            }
            _ => None,
        };
        if let Some(a) = attempt {
            d.attempts = Some(a.attempts);
            d.last_status = a.last_status;
            d.last_error.clone_from(&a.last_error);
        }
        if state == "retrying" && self.next_attempt_at_ms > 0 {
            d.next_attempt_at = Some(crate::clock::rfc3339(self.next_attempt_at_ms));
        }
        d
    }
}

/// One row of `GET /api/events`.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub received_at: String,
    pub provider: String,
    pub family: String,
    pub kind: String,
    pub app_id: String,
    pub resource: Option<String>,
    pub deliveries: BTreeMap<String, &'static str>,
}

/// `GET /api/events`: newest first; `next` is the `before` of the next page.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    pub next: Option<String>,
}

/// One sink's delivery of one event. `delivered_at` is not recorded by
/// either store yet, so it is always null.
#[derive(Debug, Clone, Serialize)]
pub struct SinkDelivery {
    pub sink: String,
    pub state: &'static str,
    pub attempts: Option<u32>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// `GET /api/events/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    pub envelope: Value,
    pub deliveries: Vec<SinkDelivery>,
}

/// A dead letter as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub id: String,
    pub sink: String,
    pub kind: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub dead_at: String,
}

impl From<DeadLetterRow> for DeadLetterView {
    fn from(r: DeadLetterRow) -> DeadLetterView {
        DeadLetterView {
            id: r.event_id,
            sink: r.sink,
            kind: r.kind,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            dead_at: r.dead_at,
        }
    }
}

/// What to replay: these event ids (of every sink holding them, or of
/// `sink`), or every dead letter (of `sink`, or all).
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    Ids(Vec<String>),
    All,
}

fn summary(event: &StoredEvent, sinks: &[SinkMarks]) -> EventSummary {
    let envelope: Value = serde_json::from_str(&event.envelope).unwrap_or(Value::Null);
    let field = |name: &str| {
        envelope
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    EventSummary {
        id: event.id.clone(),
        received_at: match field("received_at") {
            at if at.is_empty() => crate::clock::rfc3339(event.received_at_ms),
            at => at,
        },
        provider: field("provider"),
        family: field("family"),
        kind: field("kind"),
        app_id: field("app_id"),
        resource: event.resource.clone(),
        deliveries: sinks
            .iter()
            .map(|m| (m.sink.clone(), m.state(event.seq, &event.id)))
            .collect(),
    }
}

fn read(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Read(e.to_string())
}

/// The store, opened for the admin API; cheap to clone.
#[derive(Clone)]
pub enum Inspector {
    Local(LocalInspector),
    Nats(NatsInspector),
}

impl Inspector {
    pub fn new(store: &Store) -> Inspector {
        match store {
            Store::Local(spool) => Inspector::Local(LocalInspector {
                spool: spool.clone(),
                admin: Arc::default(),
            }),
            Store::Nats(nats) => Inspector::Nats(NatsInspector {
                store: nats.clone(),
                positions: Arc::default(),
            }),
        }
    }

    /// Up to `limit` events matching `filter`, newest first, before the event `before`.
    pub async fn events(
        &self,
        sinks: &[String],
        filter: EventFilter,
        before: Option<String>,
        limit: usize,
    ) -> Result<EventPage, SpoolError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let (events, marks, next) = match self {
            Inspector::Local(l) => {
                let sinks = sinks.to_vec();
                l.run(move |a| {
                    let mut events = a.list_events(&filter, before.as_deref(), limit + 1)?;
                    let more = events.len() > limit;
                    events.truncate(limit);
                    let next = more.then(|| events.last().map(|e| e.id.clone())).flatten();
                    let marks = sinks
                        .iter()
                        .map(|s| a.sink_marks(s))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((events, marks, next))
                })
                .await?
            }
            Inspector::Nats(n) => n.events(sinks, &filter, before.as_deref(), limit).await?,
        };
        Ok(EventPage {
            events: events.iter().map(|e| summary(e, &marks)).collect(),
            next,
        })
    }

    /// Events received since `since_ms`, counted per minute (`ms / 60 000`)
    /// and family. NATS: the stream read backwards, at most
    /// [`NATS_SCAN_BUDGET`] messages, so a busier hour is undercounted.
    pub async fn per_minute(&self, since_ms: i64) -> Result<Vec<(i64, String, u64)>, SpoolError> {
        match self {
            Inspector::Local(l) => l.run(move |a| a.per_minute(since_ms)).await,
            Inspector::Nats(n) => n.per_minute(since_ms).await,
        }
    }

    /// One event and where each sink stands with it; None when unknown.
    pub async fn event(
        &self,
        sinks: &[String],
        id: &str,
    ) -> Result<Option<EventDetail>, SpoolError> {
        let found = match self {
            Inspector::Local(l) => {
                let (sinks, id) = (sinks.to_vec(), id.to_owned());
                l.run(move |a| {
                    let event = match a.stored_event(&id)? {
                        Some(e) => Some(e),
                        // Pruned: a dead letter may still hold it.
                        None => a.event(&id)?.map(|envelope| StoredEvent {
                            seq: 0,
                            id: id.clone(),
                            received_at_ms: 0,
                            resource: None,
                            envelope,
                        }),
                    };
                    let Some(event) = event else { return Ok(None) };
                    let marks = sinks
                        .iter()
                        .map(|s| a.sink_marks(s))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Some((event, marks)))
                })
                .await?
            }
            Inspector::Nats(n) => n.event(sinks, id).await?,
        };
        Ok(found.map(|(event, marks)| EventDetail {
            envelope: serde_json::from_str(&event.envelope).unwrap_or(Value::Null),
            deliveries: marks
                .iter()
                .map(|m| m.detail(event.seq, &event.id))
                .collect(),
        }))
    }

    /// Dead letters, of `sink` or all, oldest first.
    pub async fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetterRow>, SpoolError> {
        let sink = sink.map(str::to_owned);
        match self {
            Inspector::Local(l) => l.run(move |a| a.dead_letters(sink.as_deref())).await,
            Inspector::Nats(n) => {
                let (_, _, dead) = n.store.inspection()?;
                let letters = super::nats::dead_letters_of(&dead, sink.as_deref()).await?;
                Ok(letters.into_iter().map(row).collect())
            }
        }
    }

    /// Asks the sinks' workers to deliver these dead letters again;
    /// returns how many were queued (a replay already queued is not counted).
    pub async fn replay(
        &self,
        sink: Option<&str>,
        selection: ReplaySelection,
    ) -> Result<usize, SpoolError> {
        let sink = sink.map(str::to_owned);
        let ids: Vec<Option<String>> = match selection {
            ReplaySelection::All => vec![None],
            ReplaySelection::Ids(ids) => ids.into_iter().map(Some).collect(),
        };
        match self {
            Inspector::Local(l) => {
                l.run(move |a| {
                    let mut letters = Vec::new();
                    for id in &ids {
                        letters.extend(a.replay_candidates(sink.as_deref(), id.as_deref())?);
                    }
                    a.request_replay(&letters)
                })
                .await
            }
            Inspector::Nats(n) => {
                let (_, _, dead) = n.store.inspection()?;
                let mut letters = Vec::new();
                for id in &ids {
                    letters.extend(replay_candidates(&dead, sink.as_deref(), id.as_deref()).await?);
                }
                request_replay(&dead, &letters).await
            }
        }
    }

    /// Every stored event, from the oldest still kept, then new ones as
    /// they are stored (what the live state is rebuilt from).
    pub async fn follow_all(&self) -> Result<Tail, SpoolError> {
        match self {
            Inspector::Local(l) => {
                let spool = l.spool.clone();
                let reader = tokio::task::spawn_blocking(move || spool.reader())
                    .await
                    .map_err(read)??;
                Ok(Tail::Local(LocalTail {
                    reader: Arc::new(Mutex::new(reader)),
                    committed: l.spool.committed(),
                    after: 0,
                    buffered: VecDeque::new(),
                }))
            }
            Inspector::Nats(n) => {
                let (stream, _, _) = n.store.inspection()?;
                let consumer = stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy: consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await
                    .map_err(read)?;
                let messages = consumer.messages().await.map_err(read)?;
                Ok(Tail::Nats(Box::new(messages)))
            }
        }
    }

    /// Newly stored events from now on, or after the event `last_id`.
    pub async fn tail(&self, last_id: Option<String>) -> Result<Tail, SpoolError> {
        match self {
            Inspector::Local(l) => {
                let after = match last_id {
                    Some(id) => l.run(move |a| a.resume_after(&id)).await?,
                    None => {
                        // "From now on": after every event already acknowledged,
                        // whose catalog rows follow the answer.
                        l.spool.catalogued().await;
                        *l.spool.committed().borrow()
                    }
                };
                let spool = l.spool.clone();
                let reader = tokio::task::spawn_blocking(move || spool.reader())
                    .await
                    .map_err(read)??;
                Ok(Tail::Local(LocalTail {
                    reader: Arc::new(Mutex::new(reader)),
                    committed: l.spool.committed(),
                    after,
                    buffered: VecDeque::new(),
                }))
            }
            Inspector::Nats(n) => {
                let (stream, _, _) = n.store.inspection()?;
                let deliver_policy = match last_id {
                    Some(id) => match n.position_of(&stream, &id).await? {
                        Some(seq) => consumer::DeliverPolicy::ByStartSequence {
                            start_sequence: seq + 1,
                        },
                        None => consumer::DeliverPolicy::New,
                    },
                    None => consumer::DeliverPolicy::New,
                };
                let consumer = stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy,
                        ..Default::default()
                    })
                    .await
                    .map_err(read)?;
                let messages = consumer.messages().await.map_err(read)?;
                Ok(Tail::Nats(Box::new(messages)))
            }
        }
    }
}

/// The local spool, for the admin API: one connection, used off the async threads.
#[derive(Clone)]
pub struct LocalInspector {
    spool: Spool,
    admin: Arc<Mutex<Option<Admin>>>,
}

impl LocalInspector {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Admin) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        // Read what was acknowledged: catalog rows follow the answer.
        self.spool.catalogued().await;
        let admin = Arc::clone(&self.admin);
        let dir = self.spool.path().parent().map(|p| p.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut guard = admin
                .lock()
                .map_err(|_| SpoolError::Read("admin connection poisoned".into()))?;
            if guard.is_none() {
                let dir =
                    dir.ok_or_else(|| SpoolError::Read("the spool has no directory".into()))?;
                *guard = Some(Admin::open(&dir)?);
            }
            match guard.as_mut() {
                Some(a) => f(a),
                None => Err(SpoolError::Read("no admin connection".into())),
            }
        })
        .await
        .map_err(read)?
    }
}

/// The JetStream store, for the admin API.
#[derive(Clone)]
pub struct NatsInspector {
    store: NatsStore,
    /// Stream sequences of event ids seen by earlier reads, so a `before`
    /// cursor or a `Last-Event-ID` is found without a search.
    positions: Arc<Mutex<HashMap<String, u64>>>,
}

impl NatsInspector {
    fn remember(&self, id: &str, seq: u64) {
        if let Ok(mut p) = self.positions.lock() {
            if p.len() >= 100_000 {
                p.clear();
            }
            p.insert(id.to_owned(), seq);
        }
    }

    /// The stream sequence of event `id`, if it is still in the stream.
    async fn position_of(
        &self,
        stream: &stream::Stream,
        id: &str,
    ) -> Result<Option<u64>, SpoolError> {
        let known = self.positions.lock().ok().and_then(|p| p.get(id).copied());
        if known.is_some() {
            return Ok(known);
        }
        let found = find_event(stream, id).await?.map(|(_, seq)| seq);
        if let Some(seq) = found {
            self.remember(id, seq);
        }
        Ok(found)
    }

    async fn marks(
        &self,
        stream: &stream::Stream,
        sinks_kv: &kv::Store,
        dead_kv: &kv::Store,
        sinks: &[String],
    ) -> Result<Vec<SinkMarks>, SpoolError> {
        let dead = super::nats::dead_letters_of(dead_kv, None).await?;
        let mut out = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let done_upto = match stream
                .get_consumer::<consumer::pull::Config>(&consumer_name(sink))
                .await
            {
                Ok(c) => c
                    .get_info()
                    .await
                    .map(|i| i.ack_floor.stream_sequence as i64)
                    .map_err(read)?,
                Err(_) => 0,
            };
            let state = read_sink_state(sinks_kv, sink).await.unwrap_or_default();
            out.push(SinkMarks {
                sink: sink.clone(),
                done_upto,
                next_attempt_at_ms: state.next_attempt_at_ms,
                attempts: state
                    .attempts
                    .into_iter()
                    .map(|(id, attempts)| {
                        (
                            id,
                            Attempt {
                                attempts,
                                ..Attempt::default()
                            },
                        )
                    })
                    .collect(),
                dead: dead
                    .iter()
                    .filter(|d| &d.sink == sink)
                    .map(|d| {
                        (
                            d.event_id.clone(),
                            Attempt {
                                attempts: d.attempts,
                                last_status: d.last_status,
                                last_error: Some(d.last_error.clone()),
                                dead_at_ms: Some(d.dead_at_ms),
                            },
                        )
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    async fn events(
        &self,
        sinks: &[String],
        filter: &EventFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, Vec<SinkMarks>, Option<String>), SpoolError> {
        let (stream, sinks_kv, dead_kv) = self.store.inspection()?;
        let info = stream.get_info().await.map_err(read)?;
        let first = info.state.first_sequence.max(1);
        let mut seq = match before {
            Some(id) => match self.position_of(&stream, id).await? {
                Some(s) => s.saturating_sub(1),
                None => 0,
            },
            None => info.state.last_sequence,
        };
        let mut events = Vec::new();
        let mut scanned = 0;
        let mut last_scanned = None;
        while seq >= first && scanned < NATS_SCAN_BUDGET && events.len() <= limit {
            scanned += 1;
            let at = seq;
            seq -= 1;
            let Ok(m) = stream.get_raw_message(at).await else {
                continue; // deleted or aged out
            };
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            let id = header(EVENT_ID).unwrap_or_default();
            self.remember(&id, at);
            last_scanned = Some(id.clone());
            let resource = header(RESOURCE).map(|r| super::nats::from_header(&r));
            let envelope = String::from_utf8_lossy(&m.payload).into_owned();
            let value: Value = serde_json::from_str(&envelope).unwrap_or(Value::Null);
            if !filter.matches(&value, &id, resource.as_deref()) {
                continue;
            }
            events.push(StoredEvent {
                seq: at as i64,
                received_at_ms: header(RECEIVED_AT)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                id,
                resource,
                envelope,
            });
        }
        let more = events.len() > limit;
        events.truncate(limit);
        let next = if more {
            events.last().map(|e| e.id.clone())
        } else if seq >= first && scanned >= NATS_SCAN_BUDGET {
            // The scan budget ran out before the stream did: page on from
            // the last message read, even if it did not match.
            last_scanned
        } else {
            None
        };
        let marks = self.marks(&stream, &sinks_kv, &dead_kv, sinks).await?;
        Ok((events, marks, next))
    }

    async fn per_minute(&self, since_ms: i64) -> Result<Vec<(i64, String, u64)>, SpoolError> {
        let (stream, _, _) = self.store.inspection()?;
        let info = stream.get_info().await.map_err(read)?;
        let first = info.state.first_sequence.max(1);
        let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
        let mut seq = info.state.last_sequence;
        let mut scanned = 0;
        while seq >= first && scanned < NATS_SCAN_BUDGET {
            scanned += 1;
            let at = seq;
            seq -= 1;
            let Ok(m) = stream.get_raw_message(at).await else {
                continue;
            };
            let received_at_ms: i64 = m
                .headers
                .get(RECEIVED_AT)
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0);
            if received_at_ms < since_ms {
                break;
            }
            let family = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .and_then(|v| v.get("family").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            *counts.entry((received_at_ms / 60_000, family)).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((m, f), n)| (m, f, n)).collect())
    }

    async fn event(
        &self,
        sinks: &[String],
        id: &str,
    ) -> Result<Option<(StoredEvent, Vec<SinkMarks>)>, SpoolError> {
        let (stream, sinks_kv, dead_kv) = self.store.inspection()?;
        let event = match self.position_of(&stream, id).await? {
            Some(seq) => match stream.get_raw_message(seq).await {
                Ok(m) => Some(StoredEvent {
                    seq: seq as i64,
                    id: id.to_owned(),
                    received_at_ms: 0,
                    resource: m.headers.get(RESOURCE).map(|v| v.as_str().to_owned()),
                    envelope: String::from_utf8_lossy(&m.payload).into_owned(),
                }),
                Err(_) => None,
            },
            None => None,
        };
        let event = match event {
            Some(e) => Some(e),
            None => super::nats::dead_letters_of(&dead_kv, None)
                .await?
                .into_iter()
                .find(|d| d.event_id == id)
                .map(|d| StoredEvent {
                    seq: 0,
                    id: d.event_id,
                    received_at_ms: 0,
                    resource: d.resource,
                    envelope: d.envelope,
                }),
        };
        let Some(event) = event else { return Ok(None) };
        let marks = self.marks(&stream, &sinks_kv, &dead_kv, sinks).await?;
        Ok(Some((event, marks)))
    }
}

/// Newly stored events, in store order.
pub enum Tail {
    Local(LocalTail),
    Nats(Box<consumer::pull::Ordered>),
}

pub struct LocalTail {
    reader: Arc<Mutex<Reader>>,
    committed: tokio::sync::watch::Receiver<i64>,
    after: i64,
    buffered: VecDeque<StoredEvent>,
}

impl Tail {
    /// The next stored event, waiting at most `wait`: Ok(None) when none came.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<StoredEvent>, SpoolError> {
        match self {
            Tail::Local(t) => {
                if let Some(e) = t.buffered.pop_front() {
                    return Ok(Some(e));
                }
                if *t.committed.borrow_and_update() <= t.after {
                    let _ = tokio::time::timeout(wait, t.committed.changed()).await;
                }
                let (reader, after) = (Arc::clone(&t.reader), t.after);
                let batch = tokio::task::spawn_blocking(move || {
                    let r = reader
                        .lock()
                        .map_err(|_| SpoolError::Read("reader poisoned".into()))?;
                    r.page_after(after, 100)
                })
                .await
                .map_err(read)??;
                let (batch, page_end) = batch;
                if let Some(last) = page_end {
                    t.after = last;
                }
                t.buffered.extend(batch);
                Ok(t.buffered.pop_front())
            }
            Tail::Nats(messages) => match tokio::time::timeout(wait, messages.next()).await {
                Err(_) => Ok(None),
                Ok(None) => Err(SpoolError::Read("the stream ended".into())),
                Ok(Some(Err(e))) => Err(read(e)),
                Ok(Some(Ok(m))) => {
                    let header = |name: &str| {
                        m.headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .map(|v| v.as_str().to_owned())
                    };
                    let seq = m.info().map(|i| i.stream_sequence as i64).unwrap_or(0);
                    Ok(Some(StoredEvent {
                        seq,
                        id: header(EVENT_ID).unwrap_or_default(),
                        received_at_ms: header(RECEIVED_AT)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        resource: header(RESOURCE).map(|r| super::nats::from_header(&r)),
                        envelope: String::from_utf8_lossy(&m.payload).into_owned(),
                    }))
                }
            },
        }
    }
}
