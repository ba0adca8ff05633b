//! Destinations. Each sink receives envelopes read back from the spool, in
//! spool order, and answers one [`Outcome`] per event; the delivery worker
//! (in [`crate::delivery`]) owns retries, backoff and progress.

pub mod file;
pub mod http;
pub mod log;

use crate::config::SinkConfig;
use crate::spool::StoredEvent;
use std::sync::Arc;
use std::time::Duration;

/// What became of one event at one sink. Every failure is classified here,
/// once, as worth retrying or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A transient failure: try again later (no sooner than `after`, if the sink said).
    Retry {
        reason: String,
        status: Option<u16>,
        after: Option<Duration>,
    },
    /// A permanent failure: straight to dead letters.
    Reject {
        reason: String,
        status: Option<u16>,
    },
    /// Not attempted (an earlier event of the same resource is pending):
    /// offered again later without counting an attempt.
    Deferred,
}

/// How a sink wants to be retried when it fails.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff step; doubles per consecutive failure.
    pub base: Duration,
    /// Largest backoff step.
    pub cap: Duration,
    /// Attempts before an event goes to dead letters; `None` = retry forever
    /// (local sinks, whose failures an operator fixes, lose nothing by waiting).
    pub max_attempts: Option<u32>,
}

/// A configured sink, ready to deliver.
pub enum Sink {
    Log(log::LogSink),
    File(file::FileSink),
    Http(http::HttpSink),
}

impl Sink {
    pub fn build(config: &SinkConfig) -> anyhow::Result<Sink> {
        Ok(match config {
            SinkConfig::Log(c) => Sink::Log(log::LogSink::new(config.name(), c)),
            SinkConfig::File(c) => Sink::File(file::FileSink::new(config.name(), c)),
            SinkConfig::Http(c) => Sink::Http(http::HttpSink::new(config.name(), c)?),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Log(s) => s.name(),
            Sink::File(s) => s.name(),
            Sink::Http(s) => s.name(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Log(_) => "log",
            Sink::File(_) => "file",
            Sink::Http(_) => "http",
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        match self {
            // Local sinks: failures are a full disk or a bad path an operator
            // fixes; probe often so they catch up soon after.
            Sink::Log(_) | Sink::File(_) => RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                max_attempts: None,
            },
            // 1 s doubling to 10 min: a few seconds' outage is probed again
            // within seconds; a long one costs the downstream a request per 10 min.
            Sink::Http(s) => RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(600),
                max_attempts: Some(s.max_attempts()),
            },
        }
    }

    /// Delivers `events` (in spool order); one outcome per event, same order.
    pub async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
        match self {
            Sink::Log(s) => s.deliver(&events),
            Sink::File(s) => s.deliver(events).await,
            Sink::Http(s) => s.deliver(events).await,
        }
    }
}
