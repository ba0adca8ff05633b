//! Prometheus metrics, one registry per application (so tests can run
//! several apps in one process). Every listed series exists from start-up —
//! one per configured sink and family, at 0 — so dashboards and alerts
//! never see a gap.

use crate::providers::App;
use crate::providers::{FAMILIES, Family as CallbackFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub family: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub provider: String,
    pub family: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub family: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub sink: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    pub provider: String,
    pub app_id: String,
    pub position: String,
}

/// Delivery outcomes counted in `hookrelay_deliveries_total`.
/// `filtered`: not offered, the sink's `match` does not accept it.
pub const OUTCOMES: [&str; 4] = ["delivered", "retry", "dead_letter", "filtered"];

/// The rejection codes a callback route can answer.
pub const REJECTION_CODES: [&str; 9] = [
    "malformed_body",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "unknown_app",
    "replayed_signature",
    "payload_too_large",
    "spool_unavailable",
    "forbidden",
];

/// A sink's delivery progress, published by its worker, read at scrape time.
#[derive(Debug, Default)]
pub struct SinkProgress {
    /// Every event with seq <= cursor is done.
    pub cursor: AtomicI64,
    /// Unix ms at which the oldest pending event was received (0 = none pending).
    pub oldest_pending_ms: AtomicI64,
    /// Events not yet done, where the store counts them itself.
    pub pending: AtomicI64,
    /// Unix ms since which the sink fails without a success (0 = healthy).
    /// Kept in memory: after a restart it counts from the restart.
    pub failing_since_ms: AtomicI64,
    /// Unix ms at which a failing sink is tried again (0 = not failing).
    pub next_attempt_at_ms: AtomicI64,
    /// The sink's last delivery error (kept after it recovers).
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl SinkProgress {
    /// A failed round: failing from now on unless already failing.
    pub fn failed(&self, now_ms: i64, next_attempt_at_ms: i64, error: &str) {
        let _ =
            self.failing_since_ms
                .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        self.next_attempt_at_ms
            .store(next_attempt_at_ms, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// A round without a retryable failure.
    pub fn recovered(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        self.next_attempt_at_ms.store(0, Ordering::Relaxed);
    }

    pub fn set_last_error(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_owned());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// A sink's backlog as the `hookrelay_spool_*` gauges show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_seconds: f64,
}

impl Backlog {
    /// `newest` as in [`Metrics::render`].
    pub fn of(p: &SinkProgress, newest: Option<i64>, now_ms: i64) -> Backlog {
        let pending = match newest {
            Some(newest) => (newest - p.cursor.load(Ordering::Relaxed)).max(0),
            None => p.pending.load(Ordering::Relaxed),
        };
        let oldest = p.oldest_pending_ms.load(Ordering::Relaxed);
        let oldest_pending_seconds = if pending > 0 && oldest > 0 {
            (now_ms - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        Backlog {
            pending,
            oldest_pending_seconds,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    events: Family<EventLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    duplicates: Family<FamilyLabel, Counter>,
    ack_seconds: Histogram,
    spool_pending: Family<SinkLabel, Gauge>,
    spool_oldest_pending_seconds: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_seconds: Family<SinkLabel, Histogram>,
    dead_letters: Family<SinkLabel, Gauge>,
    secret_matches: Family<SecretLabels, Counter>,
    store_corrupt_records: Counter,
    progress: HashMap<String, Arc<SinkProgress>>,
}

impl Metrics {
    /// The counter the local store increments for each corrupt record it finds.
    pub fn store_corrupt_records(&self) -> Counter {
        self.store_corrupt_records.clone()
    }

    /// The registry, with every series of the `sinks` and `apps` given.
    pub fn new<S: AsRef<str>>(sinks: &[S], apps: &[App]) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let duplicates = Family::<FamilyLabel, Counter>::default();
        // 0.25 ms .. ~4 s: acknowledgements are fsync-bound, a few ms.
        let ack_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        let spool_pending = Family::<SinkLabel, Gauge>::default();
        let spool_oldest_pending_seconds = Family::<SinkLabel, Gauge<f64, AtomicU64>>::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let delivery_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 20))) as fn() -> Histogram,
        );
        let dead_letters = Family::<SinkLabel, Gauge>::default();
        let secret_matches = Family::<SecretLabels, Counter>::default();

        registry.register(
            "hookrelay_requests",
            "Callback requests answered, by family and HTTP status",
            requests.clone(),
        );
        registry.register(
            "hookrelay_events",
            "Events newly stored (repeats count only as duplicates)",
            events.clone(),
        );
        registry.register(
            "hookrelay_rejections",
            "Callbacks refused, by family and error code",
            rejections.clone(),
        );
        registry.register(
            "hookrelay_duplicates",
            "Repeats answered duplicate:true and not delivered again",
            duplicates.clone(),
        );
        registry.register(
            "hookrelay_ack_seconds",
            "Time from request to a 2xx answer (the event durably stored)",
            ack_seconds.clone(),
        );
        registry.register(
            "hookrelay_spool_pending",
            "Events stored but not yet done for the sink",
            spool_pending.clone(),
        );
        registry.register(
            "hookrelay_spool_oldest_pending_seconds",
            "Age of the oldest event the sink has not yet done (0 when caught up)",
            spool_oldest_pending_seconds.clone(),
        );
        registry.register(
            "hookrelay_deliveries",
            "Delivery attempts by outcome: delivered, retry, dead_letter; and events filtered (not for the sink)",
            deliveries.clone(),
        );
        registry.register(
            "hookrelay_delivery_seconds",
            "Time from acknowledgement to successful delivery",
            delivery_seconds.clone(),
        );
        registry.register(
            "hookrelay_dead_letters",
            "Events held in the sink's dead letters",
            dead_letters.clone(),
        );
        registry.register(
            "hookrelay_build",
            "Build information",
            Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        let store_corrupt_records = Counter::default();
        registry.register(
            "hookrelay_store_corrupt_records",
            "Stored records that failed their checksum when read: reported, never delivered",
            store_corrupt_records.clone(),
        );
        registry.register(
            "hookrelay_secret_matches",
            "Verified callbacks by which of the app's secrets matched (0 = newest)",
            secret_matches.clone(),
        );

        for family in FAMILIES {
            let f = family.as_str().to_owned();
            let _ = requests.get_or_create(&RequestLabels {
                family: f.clone(),
                status: "200".into(),
            });
            let _ = duplicates.get_or_create(&FamilyLabel { family: f.clone() });
            for code in REJECTION_CODES {
                let _ = rejections.get_or_create(&RejectionLabels {
                    family: f.clone(),
                    reason: code.into(),
                });
            }
            for kind in family.kinds() {
                let _ = events.get_or_create(&EventLabels {
                    provider: family.provider().as_str().into(),
                    family: f.clone(),
                    kind: (*kind).into(),
                });
            }
        }
        let mut progress = HashMap::new();
        for sink in sinks {
            let label = SinkLabel {
                sink: sink.as_ref().to_owned(),
            };
            let _ = spool_pending.get_or_create(&label);
            let _ = spool_oldest_pending_seconds.get_or_create(&label);
            let _ = delivery_seconds.get_or_create(&label);
            let _ = dead_letters.get_or_create(&label);
            for outcome in OUTCOMES {
                let _ = deliveries.get_or_create(&DeliveryLabels {
                    sink: label.sink.clone(),
                    outcome: outcome.into(),
                });
            }
            progress.insert(label.sink, Arc::new(SinkProgress::default()));
        }
        let metrics = Metrics {
            registry,
            requests,
            events,
            rejections,
            duplicates,
            ack_seconds,
            spool_pending,
            spool_oldest_pending_seconds,
            deliveries,
            delivery_seconds,
            dead_letters,
            secret_matches,
            store_corrupt_records,
            progress,
        };
        metrics.register_apps(apps);
        metrics
    }

    /// Pre-creates the secret-match series of the configured apps (also after a reload).
    pub fn register_apps(&self, apps: &[App]) {
        for app in apps {
            for position in 0..app.secrets.len() {
                let _ = self.secret_matches.get_or_create(&SecretLabels {
                    provider: app.provider.as_str().into(),
                    app_id: app.app_id.clone(),
                    position: position.to_string(),
                });
            }
        }
    }

    pub fn request(&self, family: CallbackFamily, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                family: family.as_str().into(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn rejection(&self, family: CallbackFamily, code: &str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                family: family.as_str().into(),
                reason: code.into(),
            })
            .inc();
    }

    pub fn ack(&self, seconds: f64) {
        self.ack_seconds.observe(seconds);
    }

    pub fn stored(&self, family: CallbackFamily, kind: &str) {
        self.events
            .get_or_create(&EventLabels {
                provider: family.provider().as_str().into(),
                family: family.as_str().into(),
                kind: family.kind_label(kind).into(),
            })
            .inc();
    }

    pub fn duplicate(&self, family: CallbackFamily) {
        self.duplicates
            .get_or_create(&FamilyLabel {
                family: family.as_str().into(),
            })
            .inc();
    }

    pub fn secret_match(&self, provider: &str, app_id: &str, position: usize) {
        self.secret_matches
            .get_or_create(&SecretLabels {
                provider: provider.into(),
                app_id: app_id.into(),
                position: position.to_string(),
            })
            .inc();
    }

    pub fn delivery(&self, sink: &str, outcome: &str, n: u64) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                sink: sink.into(),
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    pub fn delivered_after(&self, sink: &str, seconds: f64) {
        self.delivery_seconds
            .get_or_create(&SinkLabel { sink: sink.into() })
            .observe(seconds);
    }

    pub fn set_dead_letters(&self, sink: &str, n: i64) {
        self.dead_letters
            .get_or_create(&SinkLabel { sink: sink.into() })
            .set(n);
    }

    /// The `hookrelay_dead_letters` gauge of `sink`.
    pub fn dead_letters(&self, sink: &str) -> i64 {
        self.dead_letters
            .get_or_create(&SinkLabel { sink: sink.into() })
            .get()
    }

    /// The progress cell a sink's worker publishes into.
    pub fn progress(&self, sink: &str) -> Arc<SinkProgress> {
        self.progress.get(sink).cloned().unwrap_or_default()
    }

    /// The text exposition, with the spool gauges refreshed from `committed`
    /// (the highest stored seq) and each sink's published progress.
    /// The exposition text. `newest` is the store position of the newest
    /// event when each sink's backlog is that minus the worker's position
    /// (local store); `None` when the store sets `SinkProgress::pending`
    /// itself (JetStream's consumer state).
    pub fn render(&self, newest: Option<i64>, now_ms: i64) -> String {
        for (sink, p) in &self.progress {
            let label = SinkLabel { sink: sink.clone() };
            let backlog = Backlog::of(p, newest, now_ms);
            self.spool_pending
                .get_or_create(&label)
                .set(backlog.pending);
            self.spool_oldest_pending_seconds
                .get_or_create(&label)
                .set(backlog.oldest_pending_seconds);
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
