//! `kind = "log"`: one structured log line per event, through `tracing`.

use super::Outcome;
use crate::config::LogSinkConfig;
use crate::spool::StoredEvent;

pub struct LogSink {
    name: String,
}

impl LogSink {
    pub fn new(name: &str, _config: &LogSinkConfig) -> LogSink {
        LogSink {
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn deliver(&mut self, events: &[StoredEvent]) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| {
                tracing::info!(
                    target: "hookrelay::sink",
                    sink = %self.name,
                    event_id = %e.id,
                    envelope = %e.envelope,
                    "event"
                );
                Outcome::Delivered
            })
            .collect()
    }
}
