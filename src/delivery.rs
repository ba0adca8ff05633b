//! Delivery: one worker per sink moves events from the spool to the sink.
//!
//! Workers read from the spool, never from the request path, so a slow or
//! failing sink delays neither acknowledgements nor the other sinks. Each
//! worker keeps its own cursor in the spool; after a restart it resumes
//! from there (events delivered but not yet recorded are offered again:
//! at-least-once).
//!
//! While a sink fails, the worker backs off the sink as a whole —
//! exponential steps with full jitter, capped — and probes it with one event
//! at a time instead of hammering it with the whole backlog; the first
//! success resets the backoff and the backlog drains at full speed.

use crate::sinks::{Outcome, RetryPolicy, Sink};
use crate::spool::{Reader, Spool, SpoolError, StoredEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Events read from the spool per batch.
const BATCH: usize = 256;

/// The running workers.
pub struct Delivery {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Delivery {
    /// Starts one worker per sink.
    pub fn start(sinks: Vec<Sink>, spool: &Spool) -> Result<Delivery, SpoolError> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for sink in sinks {
            let reader = spool.reader()?;
            let worker = Worker {
                sink,
                spool: spool.clone(),
                reader: Arc::new(Mutex::new(reader)),
                cancel: cancel.clone(),
            };
            tasks.spawn(worker.run());
        }
        Ok(Delivery { tasks, cancel })
    }

    /// Stops every worker at an event boundary and waits for them.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

struct Worker {
    sink: Sink,
    spool: Spool,
    reader: Arc<Mutex<Reader>>,
    cancel: CancellationToken,
}

/// The delay before the next try after `failures` consecutive failures:
/// uniform in `[0, min(cap, base * 2^(failures-1))]` ("full jitter"), at
/// least a millisecond so a failing sink is never spun on.
pub fn backoff(policy: RetryPolicy, failures: u32, rand01: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let step = policy
        .base
        .saturating_mul(1u32 << exp)
        .min(policy.cap);
    step.mul_f64(rand01.clamp(0.0, 1.0)).max(Duration::from_millis(1))
}

impl Worker {
    async fn run(mut self) {
        let name = self.sink.name().to_owned();
        let mut committed = self.spool.committed();
        let lookup = name.clone();
        let mut cursor = match self.read(move |r| r.cursor(&lookup)).await {
            Ok(c) => c.unwrap_or(0),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot read the sink's cursor; the worker stops");
                return;
            }
        };
        tracing::debug!(sink = %name, cursor, "delivery worker started");
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            committed.borrow_and_update();
            let batch = match self.read(move |r| r.events_after(cursor, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "cannot read the spool; retrying");
                    if self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = committed.changed() => continue,
                    _ = self.cancel.cancelled() => break,
                }
            }
            let last = batch.last().map_or(cursor, |e| e.seq);
            if !self.deliver_all(batch).await {
                break; // cancelled: this batch is offered again after restart
            }
            cursor = last;
            if let Err(e) = self.spool.advance(&name, cursor).await {
                // The events were delivered; failing to record it only means a re-delivery.
                tracing::warn!(sink = %name, cursor, error = %e, "cannot record delivery progress");
            }
        }
        tracing::debug!(sink = %name, cursor, "delivery worker stopped");
    }

    /// Delivers every event of `batch`, retrying with backoff until each is
    /// delivered. Returns false if cancelled first.
    async fn deliver_all(&mut self, batch: Vec<StoredEvent>) -> bool {
        let policy = self.sink.retry_policy();
        let mut pending: Vec<StoredEvent> = batch;
        let mut failures: u32 = 0;
        loop {
            // While failing, probe with the first pending event only.
            let offer: Arc<[StoredEvent]> = if failures == 0 {
                pending.clone().into()
            } else {
                pending[..1].to_vec().into()
            };
            let outcomes = self.sink.deliver(Arc::clone(&offer)).await;
            let mut retry_after = None;
            let mut failed_ids = std::collections::HashSet::new();
            let mut last_reason = String::new();
            for (event, outcome) in offer.iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => {}
                    Outcome::Retry { reason, after, .. } => {
                        failed_ids.insert(event.seq);
                        retry_after = retry_after.max(after);
                        last_reason = reason;
                    }
                }
            }
            let offered: std::collections::HashSet<i64> = offer.iter().map(|e| e.seq).collect();
            pending.retain(|e| !offered.contains(&e.seq) || failed_ids.contains(&e.seq));
            if pending.is_empty() {
                return true;
            }
            if failed_ids.is_empty() {
                // The probe went through: drain the rest at full speed.
                failures = 0;
                continue;
            }
            failures += 1;
            let delay = backoff(policy, failures, fastrand::f64()).max(retry_after.unwrap_or_default());
            tracing::warn!(
                sink = %self.sink.name(),
                pending = pending.len(),
                failures,
                retry_in_ms = delay.as_millis() as u64,
                reason = %last_reason,
                "delivery failed; backing off"
            );
            if self.pause(delay).await {
                return false;
            }
        }
    }

    /// Sleeps for `d`; true if cancelled meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.cancel.cancelled() => true,
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let r = reader.lock().map_err(|_| SpoolError::Read("reader poisoned".into()))?;
            f(&r)
        })
        .await
        .map_err(|e| SpoolError::Read(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(600),
    };

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        assert_eq!(backoff(POLICY, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(POLICY, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(POLICY, 4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(POLICY, 11, 1.0), Duration::from_secs(600));
        assert_eq!(backoff(POLICY, 500, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn backoff_is_full_jitter_but_never_zero() {
        assert_eq!(backoff(POLICY, 3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(POLICY, 3, 0.0), Duration::from_millis(1));
    }
}
