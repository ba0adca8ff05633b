//! What every request shares: the config in force, the spool, metrics, and
//! the limits of [`super::limits`].

use super::limits::BodyBudget;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a readiness probe's result is reused: `/readyz` writes to the
/// spool at most once per this, whatever the request rate.
pub const READINESS_CACHE: Duration = Duration::from_secs(1);

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    config: Arc<RwLock<Arc<Config>>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    /// Bytes of callback bodies being received (`server.max_inflight_body_bytes`).
    pub bodies: BodyBudget,
    /// Callbacks being processed once their body has arrived (`server.concurrency_limit`).
    pub work: Arc<Semaphore>,
    /// The last readiness probe: when, and whether the spool took the write.
    /// A tokio mutex so concurrent probes wait for one write instead of each
    /// making their own.
    readiness: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store, metrics: Arc<Metrics>) -> AppState {
        AppState {
            bodies: BodyBudget::new(config.server.max_inflight_body_bytes),
            work: Arc::new(Semaphore::new(config.server.concurrency_limit)),
            config: Arc::new(RwLock::new(config)),
            store,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            readiness: Arc::default(),
        }
    }

    /// Set once shutdown starts; `/readyz` then answers 503.
    pub fn draining(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.draining)
    }

    /// Swaps in the apps and secrets of `new`; everything else keeps its
    /// start-up value (listen address, spool, sinks need a restart).
    pub fn reload_apps(&self, new: Config) {
        let mut next = (*self.config()).clone();
        next.apps = new.apps;
        self.metrics.register_apps(&next.apps);
        self.replace_config(Arc::new(next));
    }

    /// The config in force now (apps and secrets can be swapped at run time).
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new config for the requests that start from now on.
    pub fn replace_config(&self, config: Arc<Config>) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// Whether the store takes durable writes, probed at most once per
    /// [`READINESS_CACHE`].
    pub async fn spool_ready(&self) -> bool {
        let mut last = self.readiness.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < READINESS_CACHE
        {
            return ready;
        }
        // Room for the largest callback we accept: its envelope holds the body twice (raw + event).
        let room = self.config().server.max_body_bytes as u64 * 2 + 64 * 1024;
        let ready = match tokio::time::timeout(Duration::from_secs(2), self.store.ready(room)).await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the spool does not take writes");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: the spool probe did not finish within 2 s");
                false
            }
        };
        *last = Some((Instant::now(), ready));
        ready
    }
}
