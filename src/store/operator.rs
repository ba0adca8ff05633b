//! What the operator's CLI verbs (`dead-letters list|replay`, `events
//! show`) need from the store, for either backend: the local spool file, or
//! the JetStream stream and buckets every replica shares.

use super::Backend;
use super::SpoolError;
use super::nats::{NatsStoreConfig, StoredDeadLetter, dead_letter_key, dead_letters_of};
use crate::nats::name_token;
use crate::spool::admin::{Admin, DeadLetterRow, kind_of};
use async_nats::jetstream::{self, consumer, kv, stream};
use axum::body::Bytes;
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;

/// The store, opened for an operator.
pub enum Operator {
    Local(Admin),
    Nats(Box<NatsOperator>),
}

impl Operator {
    /// Opens the store `backend` names: the spool in `dir`, or the
    /// JetStream store of `nats` (whose `sinks` are asked about).
    pub fn open(
        backend: Backend,
        dir: &Path,
        nats: Option<&NatsStoreConfig>,
        sinks: Vec<String>,
    ) -> anyhow::Result<Operator> {
        match (backend, nats) {
            (Backend::Nats, Some(nats)) => {
                Ok(Operator::Nats(Box::new(NatsOperator::open(nats, sinks)?)))
            }
            _ => Ok(Operator::Local(Admin::open(dir)?)),
        }
    }

    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetterRow>, SpoolError> {
        match self {
            Operator::Local(a) => a.dead_letters(sink),
            Operator::Nats(n) => n.dead_letters(sink),
        }
    }

    pub fn replay_candidates(
        &self,
        sink: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, SpoolError> {
        match self {
            Operator::Local(a) => a.replay_candidates(sink, event_id),
            Operator::Nats(n) => n.replay_candidates(sink, event_id),
        }
    }

    pub fn request_replay(&mut self, letters: &[(String, String)]) -> Result<usize, SpoolError> {
        match self {
            Operator::Local(a) => a.request_replay(letters),
            Operator::Nats(n) => n.request_replay(letters),
        }
    }

    pub fn event(&self, id: &str) -> Result<Option<String>, SpoolError> {
        match self {
            Operator::Local(a) => a.event(id),
            Operator::Nats(n) => n.event(id).map(|found| found.map(|(envelope, _)| envelope)),
        }
    }

    pub fn event_status(&self, id: &str) -> Result<Vec<(String, String)>, SpoolError> {
        match self {
            Operator::Local(a) => a.event_status(id),
            Operator::Nats(n) => n.event_status(id),
        }
    }
}

/// The JetStream store, for the CLI: blocking calls on a runtime of its own.
pub struct NatsOperator {
    runtime: tokio::runtime::Runtime,
    stream: stream::Stream,
    dead_letters: kv::Store,
    sinks: Vec<String>,
}

fn read(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Read(e.to_string())
}

impl NatsOperator {
    fn open(config: &NatsStoreConfig, sinks: Vec<String>) -> anyhow::Result<NatsOperator> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stream, dead_letters) = runtime.block_on(async {
            let client = config.connection().connect("hookrelay-cli").await?;
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(client);
            let stream = js.get_stream(&config.stream).await?;
            let dead_letters = js
                .get_key_value(format!("{}_dead_letters", config.stream))
                .await?;
            anyhow::Ok((stream, dead_letters))
        })?;
        Ok(NatsOperator {
            runtime,
            stream,
            dead_letters,
            sinks,
        })
    }

    fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetterRow>, SpoolError> {
        let letters = self
            .runtime
            .block_on(dead_letters_of(&self.dead_letters, sink))?;
        Ok(letters.into_iter().map(row).collect())
    }

    fn replay_candidates(
        &self,
        sink: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, SpoolError> {
        self.runtime
            .block_on(replay_candidates(&self.dead_letters, sink, event_id))
    }

    fn request_replay(&mut self, letters: &[(String, String)]) -> Result<usize, SpoolError> {
        self.runtime
            .block_on(request_replay(&self.dead_letters, letters))
    }

    /// The envelope and stream sequence of event `id` (sequence 0 when
    /// only a dead letter still holds it).
    fn event(&self, id: &str) -> Result<Option<(String, u64)>, SpoolError> {
        if let Some(found) = self.runtime.block_on(find_event(&self.stream, id))? {
            return Ok(Some(found));
        }
        // Aged out of the stream: a dead letter may still hold it.
        let letters = self
            .runtime
            .block_on(dead_letters_of(&self.dead_letters, None))?;
        Ok(letters
            .into_iter()
            .find(|d| d.event_id == id)
            .map(|d| (d.envelope, 0)))
    }

    fn event_status(&self, id: &str) -> Result<Vec<(String, String)>, SpoolError> {
        let seq = self.event(id)?.map(|(_, seq)| seq);
        self.runtime.block_on(async {
            let mut out = Vec::new();
            for sink in &self.sinks {
                let dead = self
                    .dead_letters
                    .get(dead_letter_key(sink, id))
                    .await
                    .map_err(read)?
                    .is_some();
                let state = if dead {
                    "dead-letter".to_owned()
                } else {
                    let name = format!("sink_{}", name_token(sink));
                    let consumer = self
                        .stream
                        .get_consumer::<consumer::pull::Config>(&name)
                        .await
                        .map_err(read)?;
                    let info = consumer.get_info().await.map_err(read)?;
                    match seq {
                        Some(s) if s > info.ack_floor.stream_sequence => "pending".to_owned(),
                        _ => "delivered".to_owned(),
                    }
                };
                out.push((sink.clone(), state));
            }
            Ok(out)
        })
    }
}

/// The (sink, event id) of the dead letters a replay would take.
pub(crate) async fn replay_candidates(
    dead_letters: &kv::Store,
    sink: Option<&str>,
    event_id: Option<&str>,
) -> Result<Vec<(String, String)>, SpoolError> {
    let letters = dead_letters_of(dead_letters, sink).await?;
    Ok(letters
        .into_iter()
        .filter(|d| d.replay_requested_at_ms.is_none())
        .filter(|d| event_id.is_none_or(|id| d.event_id == id))
        .map(|d| (d.sink, d.event_id))
        .collect())
}

/// Marks these dead letters for redelivery; returns how many were marked.
pub(crate) async fn request_replay(
    dead_letters: &kv::Store,
    letters: &[(String, String)],
) -> Result<usize, SpoolError> {
    let now = crate::clock::now_ms();
    let mut n = 0;
    for (sink, id) in letters {
        let key = dead_letter_key(sink, id);
        let Some(bytes) = dead_letters.get(key.clone()).await.map_err(read)? else {
            continue;
        };
        let Ok(mut d) = serde_json::from_slice::<StoredDeadLetter>(&bytes) else {
            continue;
        };
        if d.replay_requested_at_ms.is_some() {
            continue;
        }
        d.replay_requested_at_ms = Some(now);
        let body = serde_json::to_vec(&d).unwrap_or_default();
        dead_letters
            .put(key, Bytes::from(body))
            .await
            .map_err(|e| SpoolError::Write(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// The envelope and stream sequence of event `id`, found by the time in
/// its UUIDv7: the stream is read from a little before that time until
/// the event, or a little after it.
pub(crate) async fn find_event(
    stream: &stream::Stream,
    id: &str,
) -> Result<Option<(String, u64)>, SpoolError> {
    let Some(at_ms) = uuid::Uuid::parse_str(id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        })
    else {
        return Ok(None);
    };
    let start =
        time::OffsetDateTime::from_unix_timestamp_nanos((at_ms as i128 - 5_000) * 1_000_000)
            .map_err(read)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .map_err(read)?;
    let mut messages = consumer.messages().await.map_err(read)?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(Ok(m))) = next else {
            return Ok(None);
        };
        let info = m.info().map_err(read)?;
        let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let is_it = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Hookrelay-Event-Id"))
            .is_some_and(|v| v.as_str() == id);
        if is_it {
            let envelope = String::from_utf8_lossy(&m.payload).into_owned();
            return Ok(Some((envelope, info.stream_sequence)));
        }
        if stored_ms > at_ms + 30_000 {
            return Ok(None);
        }
    }
}

pub(crate) fn row(d: StoredDeadLetter) -> DeadLetterRow {
    DeadLetterRow {
        kind: kind_of(&d.envelope),
        sink: d.sink,
        event_id: d.event_id,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
        dead_at: crate::clock::rfc3339(d.dead_at_ms),
        replay_pending: d.replay_requested_at_ms.is_some(),
    }
}
