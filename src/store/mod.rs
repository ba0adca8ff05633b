//! The store boundary: everything ingest, delivery and the CLI need from
//! durable storage, and nothing more.
//!
//! ```text
//!  ingest ── recent / append (durable before Ok) ──▶ Store ◀── ready (/readyz)
//!  delivery ── one Feed per sink: next events, done, failures,
//!              dead letters, replays ──▶ Feed
//! ```
//!
//! Two implementations sit behind it: [`local`], the embedded SQLite spool
//! of one replica, and (with `[spool] backend = "nats"`) a JetStream stream
//! shared by every replica. Delivery never knows which one it talks to: it
//! asks a [`Feed`] for the next events of its sink, delivers them, and tells
//! the feed what became of each (delivered, failed for now, dead).
//!
//! The promises every implementation keeps:
//! - [`Store::append`] returns `Stored`/`Duplicate` only once the event is
//!   durable; any doubt is an error (answered 503: the vendor retries).
//! - A feed offers every stored event to its sink at least once, in store
//!   order, until the sink delivered it or it became a dead letter.
//! - An event leaves the store only after every sink is done with it (and
//!   retention has passed).

pub mod inspect;
pub mod local;
pub mod nats;
pub mod operator;

use crate::metrics::SinkProgress;
use crate::spool::{Recent, Spool};
use crate::verify::Verified;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::spool::{Appended, DeadLetter, FailedAttempt, NewEvent, SpoolError, StoredEvent};
pub use local::LocalFeed;
pub use nats::{NatsFeed, NatsStore};

/// `[spool] backend`: which implementation stores events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Nats,
}

/// The durable store of this process.
#[derive(Clone)]
pub enum Store {
    /// `[spool] backend = "local"`: SQLite on this replica's disk.
    Local(Spool),
    /// `[spool] backend = "nats"`: a JetStream stream shared by replicas.
    Nats(NatsStore),
}

impl Store {
    /// Answers a repeat from memory when its original is known to be stored;
    /// [`Recent::Unknown`] means "append it and let the store decide".
    /// True when the store keeps the payload and renders envelopes at
    /// delivery (the local spool); false when it keeps envelopes (NATS).
    pub fn renders_at_delivery(&self) -> bool {
        matches!(self, Store::Local(_))
    }

    pub fn recent(&self, dedup_key: &str, sig_key: Option<&str>) -> Recent {
        match self {
            Store::Local(spool) => spool.recent(dedup_key, sig_key),
            Store::Nats(nats) => nats.recent(dedup_key, sig_key),
        }
    }

    /// Stores a verified event; returns once it is durable (or refused).
    pub async fn append(&self, event: Verified<NewEvent>) -> Result<Appended, SpoolError> {
        match self {
            Store::Local(spool) => spool.append(event).await,
            Store::Nats(nats) => nats.append(event).await,
        }
    }

    /// Whether the store takes durable writes of an event of `room_bytes`.
    pub async fn ready(&self, room_bytes: u64) -> Result<(), SpoolError> {
        match self {
            Store::Local(spool) => spool.probe(room_bytes).await,
            Store::Nats(nats) => nats.ready().await,
        }
    }

    /// The delivery feed of `sink`, with the sink's persisted retry state.
    /// `progress` carries the sink's backlog gauges where the store keeps
    /// them itself.
    pub async fn feed(
        &self,
        sink: &str,
        progress: Arc<SinkProgress>,
    ) -> Result<(Feed, SinkState), SpoolError> {
        match self {
            Store::Local(spool) => {
                let (feed, state) = LocalFeed::open(spool, sink).await?;
                Ok((Feed::Local(feed), state))
            }
            Store::Nats(nats) => {
                let (feed, state) = nats.feed(sink, progress).await?;
                Ok((Feed::Nats(Box::new(feed)), state))
            }
        }
    }

    /// Returns once every acknowledged event is visible to readers (the
    /// local spool answers before its catalog commit; NATS: at once).
    pub async fn settle(&self) {
        if let Store::Local(spool) = self {
            spool.catalogued().await;
        }
    }

    /// The position of the newest stored event, from which (minus each
    /// worker's position) the pending gauges are computed; `None` where the
    /// store keeps the backlog per sink itself and the gauges are set from it.
    pub fn newest_position(&self) -> Option<i64> {
        match self {
            Store::Local(spool) => Some(*spool.committed().borrow()),
            Store::Nats(_) => None,
        }
    }

    /// Flushes and closes; appends after this fail.
    pub async fn close(&self) {
        match self {
            Store::Local(spool) => spool.close().await,
            Store::Nats(nats) => nats.close().await,
        }
    }
}

/// A sink's retry state as last persisted: kept across restarts so a
/// failing sink keeps its schedule and an event keeps its attempt count.
#[derive(Debug, Clone, Default)]
pub struct SinkState {
    /// Consecutive failed rounds (0 = healthy).
    pub failures: u32,
    /// When the sink is due again, Unix ms (0 = now).
    pub next_attempt_at_ms: i64,
    /// Attempts so far of events that failed, by event id.
    pub attempts: HashMap<String, u32>,
}

/// Where a sink's worker gets its events and reports what became of them.
pub enum Feed {
    Local(LocalFeed),
    /// Boxed: it holds the pull stream's state.
    Nats(Box<NatsFeed>),
}

/// Calls the same method on whichever feed this is.
macro_rules! feed {
    ($self:ident, $feed:ident => $call:expr) => {
        match $self {
            Feed::Local($feed) => $call,
            Feed::Nats($feed) => $call,
        }
    };
}

impl Feed {
    /// The next events after those already handed out, at most `max`;
    /// empty when there are none right now.
    pub async fn next(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        feed!(self, f => f.next(max).await)
    }

    /// Waits until more events may be there, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) {
        feed!(self, f => f.wait(timeout).await)
    }

    /// Records that `batch` (the last events [`Feed::next`] gave) is finished:
    /// `dead` are stored as dead letters first, then the rest counts as
    /// delivered. Until this returns Ok, the batch may be offered again.
    pub async fn done(
        &mut self,
        batch: &[StoredEvent],
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        feed!(self, f => f.done(batch, dead).await)
    }

    /// Persists the sink's backoff and the attempts of events that failed.
    pub async fn record_failure(
        &mut self,
        failures: u32,
        next_attempt_at_ms: i64,
        failed: Vec<FailedAttempt>,
    ) -> Result<(), SpoolError> {
        feed!(self, f => f.record_failure(failures, next_attempt_at_ms, failed).await)
    }

    /// Dead letters an operator asked to replay, at most `max`.
    pub async fn replays(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        feed!(self, f => f.replays(max).await)
    }

    /// Settles replayed dead letters: `delivered` leave the dead letters,
    /// `dead` stay there with their new attempt counts.
    pub async fn replayed(
        &mut self,
        delivered: Vec<String>,
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        feed!(self, f => f.replayed(delivered, dead).await)
    }

    /// How many dead letters the sink holds.
    pub async fn dead_letter_count(&mut self) -> Result<i64, SpoolError> {
        feed!(self, f => f.dead_letter_count().await)
    }

    /// How long a batch may be held undelivered (a sink backing off)
    /// before it must be given back with [`Feed::release`]; `None`: as long
    /// as it takes.
    pub fn hold_limit(&self) -> Option<Duration> {
        match self {
            Feed::Local(_) => None,
            Feed::Nats(f) => f.hold_limit(),
        }
    }

    /// Gives the batch handed out by `next` back, undelivered.
    pub async fn release(&mut self) {
        if let Feed::Nats(f) = self {
            f.release().await;
        }
    }

    /// The position the sink is done up to (store order), for progress metrics.
    pub fn position(&self) -> i64 {
        feed!(self, f => f.position())
    }
}
