//! `kind = "log"`: one structured log line per event, through `tracing`.

use super::{Deliver, Outcome, RetryPolicy, SinkKind};
use crate::spool::StoredEvent;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `kind = "log"`: one structured log line per event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkConfig {
    /// Defaults to `log-{index}`.
    pub name: Option<String>,
}

impl SinkKind for LogSinkConfig {
    const KIND: &'static str = "log";
    type Sink = LogSink;

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn name_mut(&mut self) -> &mut Option<String> {
        &mut self.name
    }

    /// Nothing to check beyond the name.
    fn validate(&mut self, _index: usize) -> anyhow::Result<()> {
        Ok(())
    }

    fn build(&self, name: &str) -> anyhow::Result<LogSink> {
        Ok(LogSink::new(name, self))
    }
}

pub struct LogSink {
    name: String,
}

impl LogSink {
    pub fn new(name: &str, _config: &LogSinkConfig) -> LogSink {
        LogSink {
            name: name.to_owned(),
        }
    }
}

impl Deliver for LogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::LOCAL
    }

    async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_sink_takes_only_a_name_and_has_nothing_else_to_check() {
        let mut c: LogSinkConfig = toml::from_str("").unwrap();
        c.validate(0).unwrap();
        let mut c: LogSinkConfig = toml::from_str("name = \"audit\"").unwrap();
        c.validate(3).unwrap();
        assert_eq!(c.name(), Some("audit"));
        let err = toml::from_str::<LogSinkConfig>("path = \"x\"").unwrap_err();
        assert!(err.message().contains("unknown field `path`"), "{err}");
    }
}
