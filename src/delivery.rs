//! Delivery: one worker per sink moves events from the spool to the sink.
//!
//! Workers read from the spool, never from the request path, so a slow or
//! failing sink delays neither acknowledgements nor the other sinks. Each
//! worker keeps its own cursor in the spool; after a restart it resumes
//! from there (events delivered but not yet recorded are offered again:
//! at-least-once).
//!
//! While a sink fails, the worker backs off the sink as a whole —
//! exponential steps with full jitter, capped, persisted in the spool so a
//! restart keeps the schedule — and probes it with one event at a time
//! instead of hammering it with the whole backlog; the first answer resets
//! the backoff and the backlog drains at full speed. An event the sink
//! rejects, or that fails `max_attempts` times, moves to the sink's dead
//! letters with its last status and error; nothing is dropped silently.
//! Dead letters an operator replays are picked up within a second.
//!
//! Routing and pace are the worker's too, so every sink kind and both store
//! backends get them: an event the sink's `match` does not accept is never
//! offered to it — it is marked done with the rest of its batch (so it
//! holds back neither the sink's cursor, its backlog gauges nor retention)
//! and counts as `filtered`. The rule is applied when the worker reads an
//! event, so after a restart with a changed `match`, events still pending
//! for the sink follow the new rule. `max_per_second` is a token bucket
//! holding one second's worth, taken before each offer (retries and probes
//! included): a paced sink builds a backlog in the store, never in the
//! request path or in another sink's worker.

use crate::clock::now_ms;
use crate::metrics::{Metrics, SinkProgress};
use crate::sinks::{Outcome, RetryPolicy, Route, Sink, SinkCommon};
use crate::store::{DeadLetter, FailedAttempt, Feed, SpoolError, Store, StoredEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events read from the spool per batch.
const BATCH: usize = 256;
/// How often an idle worker looks for dead letters an operator replayed.
const REPLAY_POLL: Duration = Duration::from_secs(1);
/// How often a busy worker looks for them: not on every batch, since the
/// query would cost as much as reading the batch itself.
const REPLAY_CHECK_EVERY: Duration = Duration::from_millis(500);
/// After a short batch, wait this long before reading the next one, so that
/// at moderate rates a batch carries several events: every batch costs a
/// spool read, a sink write (an fsync for the file sink) and a cursor commit,
/// which at 2,000 events/s delivered one or two at a time cost more CPU than
/// accepting the events did. A full batch is followed at once.
const LINGER: Duration = Duration::from_millis(5);

/// The running workers.
pub struct Delivery {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Delivery {
    /// Starts one worker per sink, each on its own [`Feed`] of `store`,
    /// routing and pacing as the sink's [`SinkCommon`] says.
    pub async fn start(
        sinks: Vec<(Sink, SinkCommon)>,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, SpoolError> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (sink, common) in sinks {
            let progress = metrics.progress(sink.name());
            let (feed, state) = store.feed(sink.name(), Arc::clone(&progress)).await?;
            let mut backoff = Backoff::default();
            if state.failures > 0 {
                progress.failed(
                    now_ms(),
                    state.next_attempt_at_ms,
                    "failing before the restart",
                );
                // Keep the persisted schedule across the restart.
                let wait =
                    Duration::from_millis((state.next_attempt_at_ms - now_ms()).max(0) as u64);
                backoff = Backoff {
                    failures: state.failures,
                    next_attempt: Some(Instant::now() + wait),
                };
            }
            let worker = Worker {
                progress,
                metrics: Arc::clone(&metrics),
                policy: sink.retry_policy(),
                name: sink.name().to_owned(),
                sink,
                feed,
                cancel: cancel.clone(),
                backoff,
                route: Route::new(common.route.as_ref()),
                batch: common
                    .max_per_second
                    .map_or(BATCH, |r| (r as usize).clamp(1, BATCH)),
                pace: common.max_per_second.map(Pace::new),
                released: false,
            };
            tasks.spawn(worker.run(state.attempts));
        }
        Ok(Delivery { tasks, cancel })
    }

    /// Stops every worker at an event boundary and waits for them.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The delay before the next try after `failures` consecutive failures:
/// uniform in `[0, min(cap, base * 2^(failures-1))]` ("full jitter"), at
/// least a millisecond so a failing sink is never spun on.
pub fn backoff_delay(policy: RetryPolicy, failures: u32, rand01: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let step = policy.base.saturating_mul(1u32 << exp).min(policy.cap);
    step.mul_f64(rand01.clamp(0.0, 1.0))
        .max(Duration::from_millis(1))
}

/// A sink's backoff state: consecutive failures and when it may be tried again.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    pub failures: u32,
    pub next_attempt: Option<Instant>,
}

impl Backoff {
    /// Records a failure; returns the delay chosen (at least `at_least`).
    pub fn fail(
        &mut self,
        policy: RetryPolicy,
        rand01: f64,
        at_least: Option<Duration>,
    ) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff_delay(policy, self.failures, rand01).max(at_least.unwrap_or_default());
        self.next_attempt = Some(Instant::now() + delay);
        delay
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.next_attempt = None;
    }

    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// Time left before the next try (zero when due).
    pub fn remaining(&self) -> Duration {
        self.next_attempt
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// At most `rate` events a second: a token bucket holding one second's
/// worth (so a burst after a quiet spell is at most `rate`).
#[derive(Debug, Clone)]
pub struct Pace {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    /// A full bucket of `per_second` tokens.
    pub fn new(per_second: u32) -> Pace {
        let rate = f64::from(per_second.max(1));
        Pace {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.at = now;
    }

    /// How long until a token is there (zero: now).
    pub fn wait(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 - TOKEN_EPSILON {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Takes up to `want` of the tokens there now; returns how many.
    pub fn take(&mut self, want: usize) -> usize {
        self.refill();
        let n = ((self.tokens + TOKEN_EPSILON).floor().max(0.0) as usize).min(want);
        self.tokens -= n as f64;
        n
    }

    /// Returns tokens taken for events that were not sent after all.
    pub fn give_back(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.rate);
    }
}

/// Float slack, so a sleep computed to the nanosecond yields its token.
const TOKEN_EPSILON: f64 = 1e-6;

/// What finally became of an event at a sink.
#[derive(Debug, Clone)]
enum Final {
    Delivered,
    Dead {
        attempts: u32,
        status: Option<u16>,
        error: String,
    },
}

impl Final {
    /// The dead letter `event` becomes, if it ended dead: the one place a
    /// dead letter is built.
    fn dead_letter(self, event: StoredEvent) -> Option<DeadLetter> {
        match self {
            Final::Delivered => None,
            Final::Dead {
                attempts,
                status,
                error,
            } => Some(DeadLetter {
                event,
                attempts,
                last_status: status,
                last_error: error,
            }),
        }
    }
}

struct Worker {
    name: String,
    metrics: Arc<Metrics>,
    progress: Arc<SinkProgress>,
    policy: RetryPolicy,
    sink: Sink,
    feed: Feed,
    cancel: CancellationToken,
    backoff: Backoff,
    /// The sink's `match`; `None` = every event.
    route: Option<Route>,
    /// Events read per batch: fewer when paced, so progress is recorded
    /// about once a second rather than once per `BATCH` events.
    batch: usize,
    /// The sink's `max_per_second`.
    pace: Option<Pace>,
    /// Set when `deliver_all` gave its batch back to the store (see
    /// [`Feed::hold_limit`]).
    released: bool,
}

impl Worker {
    async fn run(mut self, mut attempts: HashMap<String, u32>) {
        let name = self.name.clone();
        self.progress
            .cursor
            .store(self.feed.position(), Ordering::Relaxed);
        // Dead letters kept from before a restart count from the start.
        self.refresh_dead_letter_gauge().await;
        tracing::debug!(sink = %name, position = self.feed.position(), "delivery worker started");
        let mut replays_checked: Option<Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            if replays_checked.is_none_or(|t| t.elapsed() >= REPLAY_CHECK_EVERY) {
                replays_checked = Some(Instant::now());
                match self.feed.replays(BATCH).await {
                    Ok(replays) if !replays.is_empty() => {
                        // More may be waiting: look again on the next turn.
                        replays_checked = None;
                        if !self.deliver_replays(replays).await {
                            break;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(sink = %name, error = %e, "cannot read replays"),
                }
            }
            let batch = match self.feed.next(self.batch).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "cannot read the store; retrying");
                    if self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.feed.wait(REPLAY_POLL) => continue,
                    _ = self.cancel.cancelled() => break,
                }
            }
            let short = batch.len() < self.batch;
            self.progress
                .oldest_pending_ms
                .store(batch[0].received_at_ms, Ordering::Relaxed);
            // Only what the sink's `match` accepts is offered; the rest is
            // done with the batch.
            let offered: Vec<StoredEvent> = match &self.route {
                None => batch.clone(),
                Some(route) => batch
                    .iter()
                    .filter(|e| route.accepts(&e.envelope))
                    .cloned()
                    .collect(),
            };
            let filtered = (batch.len() - offered.len()) as u64;
            let finals = if offered.is_empty() {
                Vec::new()
            } else {
                match self
                    .deliver_all(offered.clone(), &mut attempts, false)
                    .await
                {
                    Some(finals) => finals,
                    None if std::mem::take(&mut self.released) => {
                        // Given back to the store: wait out the backoff, then read again.
                        let wait = self.backoff.remaining();
                        if self.pause(wait).await {
                            break;
                        }
                        continue;
                    }
                    None => break, // cancelled: this batch is offered again after restart
                }
            };
            let dead: Vec<DeadLetter> = offered
                .into_iter()
                .zip(finals)
                .filter_map(|(event, f)| f.dead_letter(event))
                .collect();
            for d in &dead {
                tracing::error!(
                    sink = %name, event_id = %d.event.id, attempts = d.attempts,
                    status = d.last_status, error = %d.last_error,
                    "event moved to dead letters"
                );
            }
            let any_dead = !dead.is_empty();
            // The feed must not move past an event before its dead letter is stored.
            while let Err(e) = self.feed.done(&batch, dead.clone()).await {
                if !any_dead {
                    // Delivered; failing to record it only means a re-delivery.
                    tracing::warn!(sink = %name, error = %e, "cannot record delivery progress");
                    break;
                }
                tracing::error!(sink = %name, error = %e, "cannot store dead letters; retrying");
                if self.pause(Duration::from_secs(1)).await {
                    return;
                }
            }
            if any_dead {
                self.refresh_dead_letter_gauge().await;
            }
            self.metrics.delivery(&self.name, "filtered", filtered);
            attempts.clear();
            self.progress
                .cursor
                .store(self.feed.position(), Ordering::Relaxed);
            self.progress.oldest_pending_ms.store(0, Ordering::Relaxed);
            if short && self.pause(LINGER).await {
                break;
            }
        }
        tracing::debug!(sink = %name, position = self.feed.position(), "delivery worker stopped");
    }

    /// Delivers replayed dead letters; returns false if cancelled.
    async fn deliver_replays(&mut self, replays: Vec<StoredEvent>) -> bool {
        let mut attempts = HashMap::new();
        let Some(finals) = self.deliver_all(replays.clone(), &mut attempts, true).await else {
            return false;
        };
        let mut delivered = Vec::new();
        let mut dead = Vec::new();
        for (event, f) in replays.into_iter().zip(finals) {
            let id = event.id.clone();
            match f.dead_letter(event) {
                Some(letter) => dead.push(letter),
                None => delivered.push(id),
            }
        }
        tracing::info!(sink = %self.name, delivered = delivered.len(), dead = dead.len(), "replayed dead letters");
        if let Err(e) = self.feed.replayed(delivered, dead).await {
            tracing::warn!(sink = %self.name, error = %e, "cannot record replayed dead letters");
        }
        self.refresh_dead_letter_gauge().await;
        true
    }

    async fn refresh_dead_letter_gauge(&mut self) {
        if let Ok(n) = self.feed.dead_letter_count().await {
            self.metrics.set_dead_letters(&self.name, n);
        }
    }

    /// Delivers every event of `batch` until each is delivered or dead.
    /// Returns the final state per event, in order; None if cancelled first.
    async fn deliver_all(
        &mut self,
        batch: Vec<StoredEvent>,
        attempts: &mut HashMap<String, u32>,
        replay: bool,
    ) -> Option<Vec<Final>> {
        let mut finals: HashMap<String, Final> = HashMap::with_capacity(batch.len());
        let mut pending: Vec<StoredEvent> = batch.clone();
        loop {
            if self.backoff.is_failing() {
                let wait = self.backoff.remaining();
                if !replay && self.feed.hold_limit().is_some_and(|limit| wait > limit) {
                    // A shared store's other replicas take the sink over if
                    // this one holds a batch too long: give it back instead,
                    // so the events stay in order wherever they are delivered.
                    self.feed.release().await;
                    self.released = true;
                    return None;
                }
                if !wait.is_zero() && self.pause(wait).await {
                    return None;
                }
            }
            // While failing, probe with the first pending event only.
            let mut n = if self.backoff.is_failing() {
                1
            } else {
                pending.len()
            };
            if self.pace.is_some() {
                loop {
                    let wait = self.pace.as_mut().map_or(Duration::ZERO, Pace::wait);
                    if wait.is_zero() {
                        break;
                    }
                    if self.pause(wait).await {
                        return None;
                    }
                }
                n = self.pace.as_mut().map_or(n, |p| p.take(n));
            }
            // A prefix of what is pending: each resource's events stay in order.
            let offer: Arc<[StoredEvent]> = pending[..n].to_vec().into();
            let outcomes = self.sink.deliver(Arc::clone(&offer)).await;
            if let Some(pace) = &mut self.pace {
                // Not sent (an earlier event of its resource failed): no token spent.
                pace.give_back(
                    outcomes
                        .iter()
                        .filter(|o| matches!(o, Outcome::Deferred))
                        .count(),
                );
            }
            let now = now_ms();
            let (mut delivered, mut retried, mut dead) = (0u64, 0u64, 0u64);
            let mut failed = Vec::new();
            let mut retry_after = None;
            let mut last_reason = String::new();
            for (event, outcome) in offer.iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => {
                        delivered += 1;
                        if event.seq > 0 && !replay {
                            self.metrics.delivered_after(
                                &self.name,
                                (now - event.received_at_ms).max(0) as f64 / 1000.0,
                            );
                        }
                        finals.insert(event.id.clone(), Final::Delivered);
                    }
                    Outcome::Deferred => {}
                    Outcome::Reject { reason, status } => {
                        dead += 1;
                        self.progress.set_last_error(&reason);
                        let n = attempts.get(&event.id).copied().unwrap_or(0) + 1;
                        finals.insert(
                            event.id.clone(),
                            Final::Dead {
                                attempts: n,
                                status,
                                error: reason,
                            },
                        );
                    }
                    Outcome::Retry {
                        reason,
                        status,
                        after,
                    } => {
                        let n = attempts.entry(event.id.clone()).or_insert(0);
                        *n += 1;
                        if self.policy.max_attempts.is_some_and(|max| *n >= max) {
                            dead += 1;
                            finals.insert(
                                event.id.clone(),
                                Final::Dead {
                                    attempts: *n,
                                    status,
                                    error: reason,
                                },
                            );
                        } else {
                            retried += 1;
                            retry_after = retry_after.max(after);
                            last_reason.clone_from(&reason);
                            failed.push(FailedAttempt {
                                event_id: event.id.clone(),
                                attempts: *n,
                                last_status: status,
                                last_error: reason,
                            });
                        }
                    }
                }
            }
            self.metrics.delivery(&self.name, "delivered", delivered);
            self.metrics.delivery(&self.name, "retry", retried);
            self.metrics.delivery(&self.name, "dead_letter", dead);
            pending.retain(|e| !finals.contains_key(&e.id));
            if failed.is_empty() {
                if self.backoff.is_failing() {
                    tracing::info!(sink = %self.name, "sink answers again; draining the backlog");
                }
                self.backoff.succeed();
                self.progress.recovered();
            } else {
                let delay = self.backoff.fail(self.policy, fastrand::f64(), retry_after);
                tracing::warn!(
                    sink = %self.name,
                    pending = pending.len(),
                    failures = self.backoff.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    reason = %last_reason,
                    "delivery failed; backing off"
                );
                let next_at = now_ms() + delay.as_millis() as i64;
                self.progress.failed(now_ms(), next_at, &last_reason);
                if let Err(e) = self
                    .feed
                    .record_failure(self.backoff.failures, next_at, failed)
                    .await
                {
                    tracing::warn!(sink = %self.name, error = %e, "cannot persist the retry schedule");
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        Some(
            batch
                .iter()
                .map(|e| finals.remove(&e.id).unwrap_or(Final::Delivered))
                .collect(),
        )
    }

    /// Sleeps for `d`; true if cancelled meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.cancel.cancelled() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(600),
        max_attempts: Some(12),
    };

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        assert_eq!(backoff_delay(POLICY, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(POLICY, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(POLICY, 4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(POLICY, 10, 1.0), Duration::from_secs(512));
        assert_eq!(backoff_delay(POLICY, 11, 1.0), Duration::from_secs(600));
        assert_eq!(backoff_delay(POLICY, 500, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn backoff_is_full_jitter_but_never_zero() {
        assert_eq!(backoff_delay(POLICY, 3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff_delay(POLICY, 3, 0.0), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_sink_is_due_again_only_after_its_backoff_elapses() {
        let mut b = Backoff::default();
        assert!(!b.is_failing());
        assert_eq!(b.remaining(), Duration::ZERO);
        let d1 = b.fail(POLICY, 1.0, None);
        assert_eq!(d1, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.remaining(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.remaining(), Duration::ZERO);
        let d2 = b.fail(POLICY, 1.0, None);
        let d3 = b.fail(POLICY, 1.0, None);
        assert_eq!((d2, d3), (Duration::from_secs(2), Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(b.remaining(), Duration::from_secs(1));
        // Retry-After wins when it asks for longer than the backoff.
        let d4 = b.fail(POLICY, 0.1, Some(Duration::from_secs(30)));
        assert_eq!(d4, Duration::from_secs(30));
        // Twelve failures in a row add up to at most ~37 minutes of waiting.
        let mut total = Duration::ZERO;
        for n in 1..=12 {
            total += backoff_delay(POLICY, n, 1.0);
        }
        assert_eq!(total, Duration::from_secs(1023 + 600 + 600));
        b.succeed();
        assert!(!b.is_failing());
        assert_eq!(b.remaining(), Duration::ZERO);
    }
}
