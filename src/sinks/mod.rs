//! Destinations. Each sink receives envelopes read back from the spool, in
//! spool order, and answers one [`Outcome`] per event; the delivery worker
//! (in [`crate::delivery`]) owns retries, backoff and progress.

pub mod file;
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
}

/// How a sink wants to be retried when it fails.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff step; doubles per consecutive failure.
    pub base: Duration,
    /// Largest backoff step.
    pub cap: Duration,
}

/// A configured sink, ready to deliver.
pub enum Sink {
    Log(log::LogSink),
    File(file::FileSink),
}

impl Sink {
    pub fn build(config: &SinkConfig) -> anyhow::Result<Sink> {
        Ok(match config {
            SinkConfig::Log(c) => Sink::Log(log::LogSink::new(config.name(), c)),
            SinkConfig::File(c) => Sink::File(file::FileSink::new(config.name(), c)),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Log(s) => s.name(),
            Sink::File(s) => s.name(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Log(_) => "log",
            Sink::File(_) => "file",
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        match self {
            // Local sinks: failures are a full disk or a bad path an operator
            // fixes; probe often so they catch up soon after.
            Sink::Log(_) | Sink::File(_) => RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
            },
        }
    }

    /// Delivers `events` (in spool order); one outcome per event, same order.
    pub async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
        match self {
            Sink::Log(s) => s.deliver(&events),
            Sink::File(s) => s.deliver(events).await,
        }
    }
}
