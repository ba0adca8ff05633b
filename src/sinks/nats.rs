//! `kind = "nats"`: publishes each envelope to a NATS JetStream stream and
//! counts it delivered only once the stream acknowledged it (the PubAck).
//!
//! Subject `{subject_prefix}.{provider}.{family}.{kind}` (the kind made a
//! subject token), `Nats-Msg-Id` = the envelope's `dedup_key`: a redelivery
//! (after a crash, or a replica's failover) is dropped by the stream itself
//! within its duplicate window, so consumers see each event once.

use super::{Deliver, Outcome, RetryPolicy, SinkKind};
use crate::nats::subject_token;
use crate::providers::FAMILIES;
use crate::spool::StoredEvent;
use anyhow::bail;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, stream};
use axum::body::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

crate::nats_config! {
    /// `kind = "nats"`.
    pub struct NatsSinkConfig {
        /// Defaults to `nats-{index}`.
        #[serde(default)]
        pub name: Option<String>,
        /// The stream to publish to; it must exist unless `create_stream`.
        pub stream: String,
        /// Create the stream when missing (subjects `{subject_prefix}.{provider}.>`
        /// for every provider). Default false.
        #[serde(default)]
        pub create_stream: bool,
        /// Default `hookrelay`.
        #[serde(default = "default_prefix")]
        pub subject_prefix: String,
        /// Wait this long for the PubAck (milliseconds). Default 5000.
        #[serde(default = "default_timeout_ms")]
        pub timeout_ms: u64,
        /// Attempts before an event goes to dead letters. Default 12.
        #[serde(default = "default_max_attempts")]
        pub max_attempts: u32,
        /// Publishes awaiting their PubAck at once. Default 256.
        #[serde(default = "default_max_in_flight")]
        pub max_in_flight: usize,
    }
}

fn default_prefix() -> String {
    "hookrelay".into()
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_attempts() -> u32 {
    12
}
fn default_max_in_flight() -> usize {
    256
}

impl SinkKind for NatsSinkConfig {
    const KIND: &'static str = "nats";
    type Sink = NatsSink;

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn name_mut(&mut self) -> &mut Option<String> {
        &mut self.name
    }

    fn validate(&mut self, i: usize) -> anyhow::Result<()> {
        self.connection().validate(&format!("sinks[{i}]"))?;
        if self.stream.is_empty()
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("invalid config at `sinks[{i}].stream`: letters, digits, `-` or `_`");
        }
        if self.subject_prefix.is_empty()
            || self
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || subject_token(t) != t)
        {
            bail!("invalid config at `sinks[{i}].subject_prefix`: not a subject prefix");
        }
        if self.timeout_ms == 0 {
            bail!("invalid config at `sinks[{i}].timeout_ms`: must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("invalid config at `sinks[{i}].max_attempts`: must be at least 1");
        }
        if self.max_in_flight == 0 {
            bail!("invalid config at `sinks[{i}].max_in_flight`: must be at least 1");
        }
        Ok(())
    }

    fn build(&self, name: &str) -> anyhow::Result<NatsSink> {
        Ok(NatsSink {
            name: name.to_owned(),
            config: Box::new(self.clone()),
            js: None,
            stream_ready: false,
        })
    }
}

/// Publishes envelopes to JetStream; connects on first use (and reconnects
/// by itself), so a NATS that is down at start-up is an outage to retry,
/// not a start-up failure.
pub struct NatsSink {
    name: String,
    /// Boxed: the sink enum stays as small as its other kinds.
    config: Box<NatsSinkConfig>,
    js: Option<Box<jetstream::Context>>,
    stream_ready: bool,
}

/// The envelope fields the subject and the message id come from.
#[derive(serde::Deserialize)]
struct Routing {
    provider: String,
    family: String,
    kind: String,
    dedup_key: String,
}

impl NatsSink {
    async fn context(&mut self) -> Result<jetstream::Context, String> {
        if self.js.is_none() {
            let client = self
                .config
                .connection()
                .connect("hookrelay-sink")
                .await
                .map_err(|e| format!("{e:#}"))?;
            let timeout = Duration::from_millis(self.config.timeout_ms);
            self.js = Some(Box::new(
                jetstream::ContextBuilder::new()
                    .timeout(timeout)
                    .build(client),
            ));
        }
        let js = self.js.as_deref().cloned().ok_or("not connected")?;
        if !self.stream_ready {
            let found = js.get_stream(&self.config.stream).await;
            match found {
                Ok(_) => {}
                Err(_) if self.config.create_stream => {
                    let mut providers: Vec<&str> =
                        FAMILIES.iter().map(|f| f.provider().as_str()).collect();
                    providers.dedup();
                    js.create_stream(stream::Config {
                        name: self.config.stream.clone(),
                        subjects: providers
                            .iter()
                            .map(|p| format!("{}.{p}.>", self.config.subject_prefix))
                            .collect(),
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("cannot create stream {}: {e}", self.config.stream))?;
                }
                Err(e) => return Err(format!("stream {}: {e}", self.config.stream)),
            }
            self.stream_ready = true;
        }
        Ok(js)
    }
}

impl Deliver for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// As the HTTP sink: 1 s doubling to 10 min, then dead letters.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            max_attempts: Some(self.config.max_attempts),
        }
    }

    /// Publishes in order (so one resource's events keep their order in
    /// the stream) with at most `max_in_flight` publishes awaiting their
    /// PubAck; each event is delivered once its PubAck comes.
    async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
        let js = match self.context().await {
            Ok(js) => js,
            Err(reason) => return events.iter().map(|_| retry(reason.clone())).collect(),
        };
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let max_in_flight = self.config.max_in_flight.max(1);
        // Published (or failed) but not yet settled, in order.
        let mut pending: VecDeque<Result<PublishAckFuture, Outcome>> = VecDeque::new();
        let mut in_flight = 0;
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events.iter() {
            while in_flight >= max_in_flight {
                if let Some(p) = pending.pop_front() {
                    in_flight -= usize::from(p.is_ok());
                    outcomes.push(settle(p, timeout).await);
                }
            }
            let routing: Routing = match serde_json::from_str(&event.envelope) {
                Ok(r) => r,
                Err(e) => {
                    pending.push_back(Err(Outcome::Reject {
                        reason: format!("the envelope cannot be routed: {e}"),
                        status: None,
                    }));
                    continue;
                }
            };
            let subject = format!(
                "{}.{}.{}.{}",
                self.config.subject_prefix,
                subject_token(&routing.provider),
                subject_token(&routing.family),
                subject_token(&routing.kind)
            );
            let message = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(event.envelope.clone()))
                .message_id(&routing.dedup_key);
            match js.send_publish(subject, message).await {
                Ok(ack) => {
                    in_flight += 1;
                    pending.push_back(Ok(ack));
                }
                Err(e) => pending.push_back(Err(retry(format!("publish failed: {e}")))),
            }
        }
        for p in pending {
            outcomes.push(settle(p, timeout).await);
        }
        if outcomes.iter().any(|o| matches!(o, Outcome::Retry { .. })) {
            // Look the stream up again next time (it may have been recreated).
            self.stream_ready = false;
        }
        outcomes
    }
}

fn retry(reason: String) -> Outcome {
    Outcome::Retry {
        reason,
        status: None,
        after: None,
    }
}

/// The outcome of one publish: delivered once its PubAck came.
async fn settle(p: Result<PublishAckFuture, Outcome>, timeout: Duration) -> Outcome {
    match p {
        Err(outcome) => outcome,
        Ok(ack) => match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(_)) => Outcome::Delivered,
            Ok(Err(e)) => retry(format!("no PubAck: {e}")),
            Err(_) => retry("no PubAck within timeout_ms".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NatsSinkConfig {
        toml::from_str(&format!(
            "servers = [\"nats://127.0.0.1:4222\"]\nstream = \"EVENTS\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn defaults_and_validation_name_the_key() {
        let mut c = config("");
        assert_eq!(c.subject_prefix, "hookrelay");
        assert!(!c.create_stream);
        assert!(c.validate(0).is_ok());
        let mut bad = config("subject_prefix = \"a..b\"");
        let e = format!("{:#}", bad.validate(2).unwrap_err());
        assert!(e.contains("sinks[2].subject_prefix"), "{e}");
        assert_eq!(c.max_in_flight, 256);
        let mut bad = config("max_in_flight = 0");
        assert!(format!("{:#}", bad.validate(1).unwrap_err()).contains("sinks[1].max_in_flight"));
        let mut bad = config("max_attempts = 0");
        assert!(format!("{:#}", bad.validate(1).unwrap_err()).contains("sinks[1].max_attempts"));
        let mut none: NatsSinkConfig = toml::from_str("stream = \"S\"").unwrap();
        assert!(format!("{:#}", none.validate(0).unwrap_err()).contains("sinks[0].servers"));
        assert!(toml::from_str::<NatsSinkConfig>("stream = \"S\"\nsurprise = 1").is_err());
    }
}
