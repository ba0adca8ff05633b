//! The shared store: one NATS JetStream stream that every replica appends
//! to and delivers from, so replicas hold nothing of their own.
//!
//! # What lives where
//! - **Events**: the stream `[nats] stream`, subjects
//!   `{subject_prefix}.events.{provider}.{family}.{kind}`, file storage,
//!   `replicas` copies, limits retention with `max_age` =
//!   `spool.retention_hours`. `Nats-Msg-Id` is the event's dedup key, so the
//!   server itself answers a repeat within `duplicate_window_secs` with the
//!   original's sequence, whichever replica it reaches. The event id, the
//!   resource and the receive time travel as headers.
//! - **Used ZEGO signatures**: KV bucket `{stream}_signatures`, key = the
//!   replay key, value = the dedup key of the payload it signed, created
//!   atomically (`create` succeeds for exactly one writer) and aged out by
//!   the bucket's `max_age` = the signature window (≥ 2 × tolerance).
//! - **Delivery**: one durable pull consumer per sink (`sink_{name}`), in a
//!   priority group with a pinned client: every replica pulls, the server
//!   hands messages to one of them, and moves the pin to another replica
//!   `failover_secs` after the pinned one stopped pulling (a `kill -9`
//!   included). Messages the dead replica held come back after `ack_wait`.
//! - **Sink state and dead letters**: KV buckets `{stream}_sinks` (backoff,
//!   attempts) and `{stream}_dead_letters` (key `{sink}.{event id}`, the
//!   envelope copied in, no expiry).
//!
//! # Durability
//! The vendor gets its 200 only after the PubAck, i.e. once the stream
//! leader has the message (with R3, a quorum of servers). What a single
//! server does with it is its own setting: the file store fsyncs every
//! `sync_interval` (2 minutes by default), or every write with
//! `sync_interval: always`. See the README.
//!
//! # Retention
//! Limits retention: an event stays until `max_age` whatever the consumers
//! did, so `events show` finds delivered events and a sink added later is
//! not the reason anything is deleted. The cost is that a sink must deliver
//! (or dead-letter, which copies the envelope out of the stream) each event
//! within `retention_hours`; `hookrelay_spool_oldest_pending_seconds` says
//! how close a sink is to that.

use super::{Appended, DeadLetter, FailedAttempt, NewEvent, SinkState, SpoolError, StoredEvent};
use crate::metrics::SinkProgress;
use crate::nats::{NatsConnection, name_token, subject_token};
use crate::spool::{Recent, Windows, recent::RecentKeys};
use crate::verify::Verified;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, context::PublishErrorKind, kv, stream};
use axum::body::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

crate::nats_config! {
    /// `[nats]`: the JetStream store shared by replicas (`[spool] backend = "nats"`).
    pub struct NatsStoreConfig {
        /// The stream holding events; created at start-up when missing and
        /// `create_stream` is true. Default `HOOKRELAY`.
        #[serde(default = "default_stream")]
        pub stream: String,
        #[serde(default = "yes")]
        pub create_stream: bool,
        /// Subjects are `{subject_prefix}.events.{provider}.{family}.{kind}`. Default `hookrelay`.
        #[serde(default = "default_prefix")]
        pub subject_prefix: String,
        /// Stream (and bucket) replicas when hookrelay creates them: 1 here, 3 in production.
        #[serde(default = "one")]
        pub replicas: usize,
        /// A repeat of an event within this many seconds, at any replica, is
        /// answered `duplicate: true` with the first id. Default 3600.
        #[serde(default = "default_duplicate_window")]
        pub duplicate_window_secs: u64,
        /// No PubAck within this many milliseconds: 503, the vendor retries. Default 5000.
        #[serde(default = "default_ack_timeout")]
        pub ack_timeout_ms: u64,
        /// Another replica takes over a sink's delivery this many seconds
        /// after the delivering one stopped. Default 15.
        #[serde(default = "default_failover")]
        pub failover_secs: u64,
    }
}

fn default_stream() -> String {
    "HOOKRELAY".into()
}
fn default_prefix() -> String {
    "hookrelay".into()
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_duplicate_window() -> u64 {
    3600
}
fn default_ack_timeout() -> u64 {
    5000
}
fn default_failover() -> u64 {
    15
}

impl NatsStoreConfig {
    pub fn validate(&self, retention: Duration) -> anyhow::Result<()> {
        self.connection().validate("nats")?;
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid_name(&self.stream) {
            anyhow::bail!(
                "invalid config at `nats.stream`: `{}` must be letters, digits, `-` or `_`",
                self.stream
            );
        }
        if self.subject_prefix.is_empty()
            || self
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || subject_token(t) != t)
        {
            anyhow::bail!(
                "invalid config at `nats.subject_prefix`: `{}` is not a subject prefix",
                self.subject_prefix
            );
        }
        if !(1..=5).contains(&self.replicas) {
            anyhow::bail!("invalid config at `nats.replicas`: must be 1 to 5");
        }
        if self.duplicate_window_secs == 0
            || Duration::from_secs(self.duplicate_window_secs) > retention
        {
            anyhow::bail!(
                "invalid config at `nats.duplicate_window_secs`: must be at least 1 and at most \
                 spool.retention_hours"
            );
        }
        if self.ack_timeout_ms == 0 {
            anyhow::bail!("invalid config at `nats.ack_timeout_ms`: must be at least 1");
        }
        if self.failover_secs < 2 {
            anyhow::bail!("invalid config at `nats.failover_secs`: must be at least 2");
        }
        Ok(())
    }
}

/// Header names carried by every event message.
pub(crate) const EVENT_ID: &str = "Hookrelay-Event-Id";
pub(crate) const RECEIVED_AT: &str = "Hookrelay-Received-At";
pub(crate) const RESOURCE: &str = "Hookrelay-Resource";
/// The priority group every replica's deliverer pulls in.
const GROUP: &str = "deliver";
/// How long a delivered-but-unacknowledged message stays with its
/// replica; held messages are kept alive with progress acks meanwhile.
const ACK_WAIT: Duration = Duration::from_secs(20);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often dead letters are scanned for replay requests.
const REPLAY_SCAN: Duration = Duration::from_secs(1);
/// Acknowledged sequences remembered per feed, to skip their redeliveries.
const ACKED_REMEMBERED: usize = 16_384;

/// Handles that exist once the stream and buckets do.
#[derive(Clone)]
struct Handles {
    stream: stream::Stream,
    signatures: kv::Store,
    sinks: kv::Store,
    dead_letters: kv::Store,
}

/// The JetStream store; cheap to clone.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsStoreConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    handles: watch::Receiver<Option<Handles>>,
    recent: RecentKeys,
    dedup_window: Duration,
    signature_window: Duration,
}

impl NatsStore {
    /// Connects in the background and sets the stream, buckets and the
    /// sinks' consumers up as soon as NATS answers (retrying with backoff,
    /// so replicas may start before NATS). Until then appends fail with 503.
    pub async fn open(
        config: NatsStoreConfig,
        retention: Duration,
        signature_window: Duration,
        sinks: Vec<String>,
    ) -> anyhow::Result<NatsStore> {
        let connection: NatsConnection = config.connection();
        let client = connection.connect("hookrelay").await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .build(client.clone());
        let (tx, handles) = watch::channel(None);
        let store = NatsStore {
            inner: Arc::new(Inner {
                dedup_window: Duration::from_secs(config.duplicate_window_secs),
                signature_window,
                config,
                client,
                js,
                handles,
                recent: RecentKeys::default(),
            }),
        };
        let setup = store.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match setup.set_up(retention, &sinks).await {
                    Ok(handles) => {
                        tracing::info!(stream = %setup.inner.config.stream, "nats store ready");
                        let _ = tx.send(Some(handles));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64,
                            "nats store not ready; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(store)
    }

    async fn set_up(&self, retention: Duration, sinks: &[String]) -> anyhow::Result<Handles> {
        let c = &self.inner.config;
        let js = &self.inner.js;
        let stream = match js.get_stream(&c.stream).await {
            Ok(s) => s,
            Err(e) if c.create_stream => {
                tracing::debug!(error = %e, "creating the stream");
                js.create_stream(stream::Config {
                    name: c.stream.clone(),
                    subjects: vec![format!("{}.events.>", c.subject_prefix)],
                    storage: stream::StorageType::File,
                    num_replicas: c.replicas,
                    retention: stream::RetentionPolicy::Limits,
                    max_age: retention,
                    duplicate_window: Duration::from_secs(c.duplicate_window_secs),
                    ..Default::default()
                })
                .await?
            }
            Err(e) => anyhow::bail!(
                "stream {} does not exist (create_stream = false): {e}",
                c.stream
            ),
        };
        let bucket = |suffix: &str, max_age: Duration| kv::Config {
            bucket: format!("{}_{suffix}", c.stream),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: c.replicas,
            ..Default::default()
        };
        let signatures = self
            .bucket(bucket("signatures", self.inner.signature_window))
            .await?;
        let sinks_kv = self.bucket(bucket("sinks", Duration::ZERO)).await?;
        let dead_letters = self.bucket(bucket("dead_letters", Duration::ZERO)).await?;
        for sink in sinks {
            self.consumer(&stream, sink).await?;
        }
        Ok(Handles {
            stream,
            signatures,
            sinks: sinks_kv,
            dead_letters,
        })
    }

    async fn bucket(&self, config: kv::Config) -> anyhow::Result<kv::Store> {
        match self.inner.js.get_key_value(&config.bucket).await {
            Ok(kv) => Ok(kv),
            Err(_) => Ok(self.inner.js.create_key_value(config).await?),
        }
    }

    async fn consumer(
        &self,
        stream: &stream::Stream,
        sink: &str,
    ) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
        let c = &self.inner.config;
        let name = format!("sink_{}", name_token(sink));
        Ok(stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}.events.>", c.subject_prefix),
                    // A new sink starts at new events, as in local mode.
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 4096,
                    priority_groups: vec![GROUP.into()],
                    priority_policy: consumer::PriorityPolicy::PinnedClient,
                    priority_timeout: Duration::from_secs(c.failover_secs),
                    ..Default::default()
                },
            )
            .await?)
    }

    fn handles(&self) -> Result<Handles, SpoolError> {
        self.inner
            .handles
            .borrow()
            .clone()
            .ok_or_else(|| SpoolError::Write("NATS is not reachable yet".into()))
    }

    fn windows(&self) -> Windows {
        let now = crate::clock::now_ms();
        Windows {
            dedup_start: now - self.inner.dedup_window.as_millis() as i64,
            sig_start: now - self.inner.signature_window.as_millis() as i64,
        }
    }

    pub fn recent(&self, dedup_key: &str, sig_key: Option<&str>) -> Recent {
        self.inner.recent.lookup(dedup_key, sig_key, self.windows())
    }

    /// Publishes a verified event and waits for the PubAck.
    pub async fn append(&self, event: Verified<NewEvent>) -> Result<Appended, SpoolError> {
        let ev = event.into_inner();
        let h = self.handles()?;
        let timeout = Duration::from_millis(self.inner.config.ack_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(sig) = &ev.sig_key
            && !self
                .claim_signature(&h, sig, &ev.dedup_key, deadline)
                .await?
        {
            return Ok(Appended::ReplayedSignature);
        }
        let subject = format!(
            "{}.events.{}.{}.{}",
            self.inner.config.subject_prefix,
            ev.provider,
            ev.family,
            subject_token(&ev.kind)
        );
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_ID, ev.id.as_str());
        headers.insert(RECEIVED_AT, ev.received_at_ms.to_string().as_str());
        if let Some(resource) = &ev.resource {
            // Vendor text: a CR or LF would make an invalid header.
            headers.insert(RESOURCE, header_safe(resource).as_str());
        }
        let payload = Bytes::from(ev.envelope());
        let ack = loop {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(&ev.dedup_key);
            let attempt = async {
                self.inner
                    .js
                    .send_publish(subject.clone(), publish)
                    .await?
                    .await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => {
                    return Err(SpoolError::Write(
                        "no PubAck within nats.ack_timeout_ms".into(),
                    ));
                }
                Ok(Ok(ack)) => break ack,
                Ok(Err(e)) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "publish: transient; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(SpoolError::Write(e.to_string())),
            }
        };
        if ack.duplicate {
            // The PubAck carries the original's sequence: its id is there.
            let original =
                tokio::time::timeout_at(deadline, h.stream.get_raw_message(ack.sequence))
                    .await
                    .map_err(|_| SpoolError::Read("no answer reading the original event".into()))?
                    .map_err(|e| SpoolError::Read(e.to_string()))?;
            let id = original
                .headers
                .get(EVENT_ID)
                .map(|v| v.as_str().to_owned())
                .ok_or_else(|| SpoolError::Read("the original event has no id header".into()))?;
            self.inner
                .recent
                .stored(&ev.dedup_key, ev.sig_key.as_deref(), &id, ev.received_at_ms);
            if id == ev.id {
                // Our own first attempt landed and a retry saw it: stored, once.
                return Ok(Appended::Stored { id });
            }
            return Ok(Appended::Duplicate { id });
        }
        self.inner.recent.stored(
            &ev.dedup_key,
            ev.sig_key.as_deref(),
            &ev.id,
            ev.received_at_ms,
        );
        Ok(Appended::Stored { id: ev.id })
    }

    /// Records `sig` as used for `dedup_key`, atomically across replicas;
    /// false when it was already used for another payload.
    async fn claim_signature(
        &self,
        h: &Handles,
        sig: &str,
        dedup_key: &str,
        deadline: tokio::time::Instant,
    ) -> Result<bool, SpoolError> {
        loop {
            let created = tokio::time::timeout_at(
                deadline,
                h.signatures.create(sig, Bytes::from(dedup_key.to_owned())),
            )
            .await
            .map_err(|_| SpoolError::Write("no answer from the signature bucket".into()))?;
            match created {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let held = tokio::time::timeout_at(deadline, h.signatures.get(sig))
                        .await
                        .map_err(|_| {
                            SpoolError::Read("no answer from the signature bucket".into())
                        })?
                        .map_err(|e| SpoolError::Read(e.to_string()))?;
                    match held {
                        Some(v) => return Ok(v.as_ref() == dedup_key.as_bytes()),
                        // Expired between the two calls: claim it again.
                        None => continue,
                    }
                }
                // A create that timed out may have been stored: the next
                // round finds our own value and goes on.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "signature claim failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(SpoolError::Write(e.to_string())),
            }
        }
    }

    /// Whether NATS is connected and the stream answers.
    pub async fn ready(&self) -> Result<(), SpoolError> {
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(SpoolError::Write("not connected to NATS".into()));
        }
        let mut stream = self.handles()?.stream;
        stream
            .info()
            .await
            .map(|_| ())
            .map_err(|e| SpoolError::Read(e.to_string()))
    }

    /// The delivery feed of `sink`; the backlog gauges of `progress` are
    /// kept from the consumer's state, so every replica reports the same.
    pub async fn feed(
        &self,
        sink: &str,
        progress: Arc<SinkProgress>,
    ) -> Result<(NatsFeed, SinkState), SpoolError> {
        let state = match self.handles() {
            Ok(h) => read_sink_state(&h.sinks, sink).await.unwrap_or_default(),
            Err(_) => SinkState::default(),
        };
        let held: Arc<Mutex<Vec<jetstream::Message>>> = Arc::default();
        tokio::spawn(keep_alive(Arc::downgrade(&held)));
        tokio::spawn(poll_backlog(self.clone(), sink.to_owned(), progress));
        let failing = state.failures > 0;
        Ok((
            NatsFeed {
                store: self.clone(),
                sink: sink.to_owned(),
                messages: None,
                held,
                position: 0,
                failing,
                replays_scanned: None,
                batch: 256,
                acked: Default::default(),
            },
            state,
        ))
    }

    pub async fn close(&self) {
        let _ = self.inner.client.flush().await;
    }

    /// The stream and the `_sinks` and `_dead_letters` buckets, for the
    /// admin API's reads; an error until NATS answered.
    pub(crate) fn inspection(&self) -> Result<(stream::Stream, kv::Store, kv::Store), SpoolError> {
        let h = self
            .handles()
            .map_err(|e| SpoolError::Read(e.to_string()))?;
        Ok((h.stream, h.sinks, h.dead_letters))
    }
}

/// The durable consumer of `sink`.
pub(crate) fn consumer_name(sink: &str) -> String {
    format!("sink_{}", name_token(sink))
}

/// `text` as a header value: bytes outside printable ASCII, and `%`,
/// percent-encoded ([`from_header`] reverses it).
pub fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text [`header_safe`] encoded.
pub fn from_header(value: &str) -> String {
    crate::decode::percent_decode_form(value.replace('+', "%2B").as_bytes())
        .unwrap_or_else(|_| value.to_owned())
}

/// Errors worth retrying within the ack timeout: a duplicate still being
/// replicated (10158), and no stream leader for a moment (an election).
fn transient(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    match e.kind() {
        PublishErrorKind::StreamNotFound | PublishErrorKind::BrokenPipe => true,
        PublishErrorKind::Other => e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| {
                e.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
            }),
        _ => false,
    }
}

/// Progress acks for the messages a feed holds while its sink retries, so
/// they are not redelivered to this replica; stops with the feed.
async fn keep_alive(held: std::sync::Weak<Mutex<Vec<jetstream::Message>>>) {
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let Some(held) = held.upgrade() else { return };
        let messages: Vec<jetstream::Message> = match held.lock() {
            Ok(h) => h.clone(),
            Err(_) => return,
        };
        for m in messages {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

/// Sets the sink's pending and oldest-pending gauges from its consumer.
async fn poll_backlog(store: NatsStore, sink: String, progress: Arc<SinkProgress>) {
    let name = format!("sink_{}", name_token(&sink));
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if Arc::strong_count(&store.inner) == 1 {
            return;
        }
        let Ok(h) = store.handles() else { continue };
        let Ok(consumer) = h.stream.get_consumer::<consumer::pull::Config>(&name).await else {
            continue;
        };
        let Ok(info) = consumer.get_info().await else {
            continue;
        };
        let pending = (info.num_pending as i64) + info.num_ack_pending as i64;
        progress.pending.store(pending, Ordering::Relaxed);
        let oldest = if pending > 0 {
            match h
                .stream
                .get_raw_message(info.ack_floor.stream_sequence + 1)
                .await
            {
                Ok(m) => (m.time.unix_timestamp_nanos() / 1_000_000) as i64,
                Err(_) => 0,
            }
        } else {
            0
        };
        progress.oldest_pending_ms.store(oldest, Ordering::Relaxed);
    }
}

/// A sink's retry state as stored in the `_sinks` bucket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredSinkState {
    failures: u32,
    next_attempt_at_ms: i64,
    attempts: HashMap<String, u32>,
}

pub(crate) async fn read_sink_state(kv: &kv::Store, sink: &str) -> Option<SinkState> {
    let bytes = kv.get(name_token(sink)).await.ok()??;
    let s: StoredSinkState = serde_json::from_slice(&bytes).ok()?;
    Some(SinkState {
        failures: s.failures,
        next_attempt_at_ms: s.next_attempt_at_ms,
        attempts: s.attempts,
    })
}

/// A dead letter as stored in the `_dead_letters` bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDeadLetter {
    pub sink: String,
    pub event_id: String,
    pub resource: Option<String>,
    pub envelope: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub dead_at_ms: i64,
    pub replay_requested_at_ms: Option<i64>,
}

/// The key of a dead letter: `{sink}.{event id}` (both made key-safe).
pub fn dead_letter_key(sink: &str, event_id: &str) -> String {
    format!("{}.{}", name_token(sink), name_token(event_id))
}

/// One sink's feed from its JetStream consumer.
pub struct NatsFeed {
    store: NatsStore,
    sink: String,
    messages: Option<consumer::pull::Stream>,
    /// Handed out by `next`, not yet `done`.
    held: Arc<Mutex<Vec<jetstream::Message>>>,
    position: i64,
    failing: bool,
    replays_scanned: Option<tokio::time::Instant>,
    /// The worker's batch size, which the pull stream's follows.
    batch: usize,
    /// Sequences acknowledged lately: a redelivery of one is skipped.
    acked: std::collections::BTreeSet<u64>,
}

impl NatsFeed {
    async fn messages(&mut self) -> Result<&mut consumer::pull::Stream, SpoolError> {
        if self.messages.is_none() {
            let h = self.store.handles()?;
            let consumer = self
                .store
                .consumer(&h.stream, &self.sink)
                .await
                .map_err(|e| SpoolError::Read(format!("{e:#}")))?;
            let failover = Duration::from_secs(self.store.inner.config.failover_secs);
            let expires = (failover / 4).clamp(Duration::from_secs(1), Duration::from_secs(5));
            let stream = consumer
                .stream()
                .group(GROUP)
                .expires(expires)
                .heartbeat(expires / 2)
                // No more than the worker takes at once: messages buffered
                // here get no progress acks and would be redelivered.
                .max_messages_per_batch(self.batch.max(1))
                .messages()
                .await
                .map_err(|e| SpoolError::Read(e.to_string()))?;
            self.messages = Some(stream);
        }
        self.messages
            .as_mut()
            .ok_or_else(|| SpoolError::Read("no message stream".into()))
    }

    pub async fn next(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        if self.batch != max {
            // The pull stream's batch follows the worker's (a paced sink reads less).
            self.batch = max;
            self.messages = None;
        }
        let held_seqs: Vec<u64> = self
            .held
            .lock()
            .map(|h| {
                h.iter()
                    .filter_map(|m| m.info().ok().map(|i| i.stream_sequence))
                    .collect()
            })
            .unwrap_or_default();
        let mut batch = Vec::new();
        let mut fresh = Vec::new();
        let mut wait = Duration::from_secs(1);
        while batch.len() < max {
            let messages = match self.messages().await {
                Ok(m) => m,
                Err(e) if batch.is_empty() => {
                    // Not set up yet (NATS down): the worker waits and asks again.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Err(e);
                }
                Err(_) => break,
            };
            let next = match tokio::time::timeout(wait, messages.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::debug!(sink = %self.sink, error = %e, "pull stream error; re-pulling");
                    self.messages = None;
                    break;
                }
                Ok(Some(Ok(m))) => m,
            };
            // After the first message, take only what is already there.
            wait = Duration::from_millis(5);
            let Ok(info) = next.info() else { continue };
            let seq = info.stream_sequence;
            if held_seqs.contains(&seq) || fresh.iter().any(|(s, _)| *s == seq) {
                continue; // a redelivery of one we hold
            }
            if self.acked.contains(&seq) {
                // A redelivery of one already done (its ack was lost): ack again, skip.
                let _ = next.ack().await;
                continue;
            }
            if next
                .headers
                .as_ref()
                .and_then(|h| h.get(EVENT_ID))
                .is_none()
            {
                // Not written by hookrelay (another publisher on our subjects).
                tracing::warn!(sink = %self.sink, seq, "a message without an event id; skipped");
                let _ = next.ack_with(AckKind::Term).await;
                continue;
            }
            let header = |name: &str| {
                next.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            let event = StoredEvent {
                seq: seq as i64,
                id: header(EVENT_ID).unwrap_or_default(),
                received_at_ms: header(RECEIVED_AT)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                resource: header(RESOURCE).map(|r| from_header(&r)),
                envelope: String::from_utf8_lossy(&next.payload).into_owned(),
            };
            fresh.push((seq, next.clone()));
            batch.push(event);
        }
        if let Ok(mut h) = self.held.lock() {
            h.extend(fresh.into_iter().map(|(_, m)| m));
        }
        Ok(batch)
    }

    fn remember_acked(&mut self, seq: u64) {
        if self.acked.len() >= ACKED_REMEMBERED
            && let Some(oldest) = self.acked.iter().next().copied()
        {
            self.acked.remove(&oldest);
        }
        self.acked.insert(seq);
    }

    /// How long the feed may hold a batch without delivering it: past it,
    /// [`NatsFeed::release`] gives the batch back, since another replica
    /// takes the sink over `failover_secs` after this one stops pulling and
    /// would deliver newer events before the held ones.
    pub fn hold_limit(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.store.inner.config.failover_secs) / 2)
    }

    /// Gives every held message back to the stream (redelivered, in order,
    /// to whichever replica pulls next) and stops pulling until `next`.
    pub async fn release(&mut self) {
        let held: Vec<jetstream::Message> = match self.held.lock() {
            Ok(mut h) => h.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for m in held {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
        self.messages = None;
    }

    pub async fn wait(&mut self, _timeout: Duration) {
        // `next` already waited for messages.
    }

    pub async fn done(
        &mut self,
        batch: &[StoredEvent],
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        if !dead.is_empty() {
            let h = self.store.handles()?;
            put_dead_letters(&h.dead_letters, &self.sink, dead).await?;
        }
        let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
        let done: Vec<jetstream::Message> = match self.held.lock() {
            Ok(mut h) => {
                let (done, keep): (Vec<_>, Vec<_>) = h.drain(..).partition(|m| {
                    m.info()
                        .is_ok_and(|i| seqs.contains(&(i.stream_sequence as i64)))
                });
                *h = keep;
                done
            }
            Err(_) => Vec::new(),
        };
        for m in done {
            if let Ok(info) = m.info() {
                self.remember_acked(info.stream_sequence);
            }
            if let Err(e) = m.ack().await {
                tracing::debug!(sink = %self.sink, error = %e, "ack failed (redelivered later)");
            }
        }
        self.position = self.position.max(seqs.iter().copied().max().unwrap_or(0));
        if self.failing {
            self.failing = false;
            self.put_state(StoredSinkState::default()).await?;
        }
        Ok(())
    }

    async fn put_state(&self, state: StoredSinkState) -> Result<(), SpoolError> {
        let h = self.store.handles()?;
        let body = serde_json::to_vec(&state).unwrap_or_default();
        h.sinks
            .put(name_token(&self.sink), Bytes::from(body))
            .await
            .map(|_| ())
            .map_err(|e| SpoolError::Write(e.to_string()))
    }

    pub async fn record_failure(
        &mut self,
        failures: u32,
        next_attempt_at_ms: i64,
        failed: Vec<FailedAttempt>,
    ) -> Result<(), SpoolError> {
        self.failing = true;
        let attempts = failed
            .into_iter()
            .map(|f| (f.event_id, f.attempts))
            .collect();
        self.put_state(StoredSinkState {
            failures,
            next_attempt_at_ms,
            attempts,
        })
        .await
    }

    pub async fn replays(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        if self
            .replays_scanned
            .is_some_and(|t| t.elapsed() < REPLAY_SCAN)
        {
            return Ok(Vec::new());
        }
        self.replays_scanned = Some(tokio::time::Instant::now());
        let Ok(h) = self.store.handles() else {
            return Ok(Vec::new());
        };
        let letters = dead_letters_of(&h.dead_letters, Some(&self.sink)).await?;
        let mut claimed = Vec::new();
        for d in letters
            .into_iter()
            .filter(|d| d.replay_requested_at_ms.is_some())
        {
            if claimed.len() >= max {
                break;
            }
            // Every replica scans; exactly one claims each replay: the
            // request flag is cleared by a compare-and-swap on the revision.
            let key = dead_letter_key(&self.sink, &d.event_id);
            let Ok(Some(entry)) = h.dead_letters.entry(key.clone()).await else {
                continue;
            };
            let Ok(mut current) = serde_json::from_slice::<StoredDeadLetter>(&entry.value) else {
                continue;
            };
            if current.replay_requested_at_ms.take().is_none() {
                continue;
            }
            let body = Bytes::from(serde_json::to_vec(&current).unwrap_or_default());
            if h.dead_letters
                .update(key, body, entry.revision)
                .await
                .is_ok()
            {
                claimed.push(StoredEvent {
                    seq: 0,
                    id: current.event_id,
                    received_at_ms: current.dead_at_ms,
                    resource: current.resource,
                    envelope: current.envelope,
                });
            }
        }
        Ok(claimed)
    }

    pub async fn replayed(
        &mut self,
        delivered: Vec<String>,
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        let h = self.store.handles()?;
        for id in delivered {
            h.dead_letters
                .delete(dead_letter_key(&self.sink, &id))
                .await
                .map_err(|e| SpoolError::Write(e.to_string()))?;
        }
        put_dead_letters(&h.dead_letters, &self.sink, dead).await
    }

    pub async fn dead_letter_count(&mut self) -> Result<i64, SpoolError> {
        let h = self.store.handles()?;
        Ok(dead_letters_of(&h.dead_letters, Some(&self.sink))
            .await?
            .len() as i64)
    }

    pub fn position(&self) -> i64 {
        self.position
    }
}

/// Stores dead letters (adding to the attempts of an earlier entry).
async fn put_dead_letters(
    kv: &kv::Store,
    sink: &str,
    letters: Vec<DeadLetter>,
) -> Result<(), SpoolError> {
    let now = crate::clock::now_ms();
    for d in letters {
        let key = dead_letter_key(sink, &d.event.id);
        let earlier: Option<StoredDeadLetter> = kv
            .get(key.clone())
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let record = StoredDeadLetter {
            sink: sink.to_owned(),
            event_id: d.event.id.clone(),
            resource: d.event.resource.clone(),
            envelope: d.event.envelope.clone(),
            attempts: earlier.map_or(0, |e| e.attempts) + d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            dead_at_ms: now,
            replay_requested_at_ms: None,
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        kv.put(key, Bytes::from(body))
            .await
            .map_err(|e| SpoolError::Write(e.to_string()))?;
    }
    Ok(())
}

/// Every dead letter (of one sink, or all), oldest first.
pub async fn dead_letters_of(
    kv: &kv::Store,
    sink: Option<&str>,
) -> Result<Vec<StoredDeadLetter>, SpoolError> {
    let prefix = sink.map(|s| format!("{}.", name_token(s)));
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| SpoolError::Read(e.to_string()))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| SpoolError::Read(e.to_string()))?;
        if prefix
            .as_ref()
            .is_some_and(|p| !key.starts_with(p.as_str()))
        {
            continue;
        }
        if let Some(bytes) = kv
            .get(key)
            .await
            .map_err(|e| SpoolError::Read(e.to_string()))?
            && let Ok(d) = serde_json::from_slice::<StoredDeadLetter>(&bytes)
        {
            out.push(d);
        }
    }
    out.sort_by_key(|d| d.dead_at_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_round_trips_whatever_the_vendor_wrote() {
        for text in ["plain-id_1", "line\r\nbreak", "50% off + more", "房间", ""] {
            let encoded = header_safe(text);
            assert!(
                encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{encoded}"
            );
            assert_eq!(from_header(&encoded), text);
        }
    }
}
