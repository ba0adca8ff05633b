//! The HTTP surface: listeners, routes, middleware, and the application's
//! lifecycle. Nothing here knows a vendor's wire format; see [`crate::ingest`].
//!
//! - [`routes`]: the routes of each listener, the middleware stack, handlers;
//! - [`limits`]: what bounds a request before it is trusted;
//! - [`state`]: what every request shares.

pub mod limits;
pub mod routes;
pub mod state;

pub use routes::{AppService, Listener, router, service};
pub use state::AppState;

use crate::config::Backend;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::sinks::Sink;
use crate::spool::{Spool, SpoolOptions};
use crate::store::{NatsStore, Store};
use anyhow::Context;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A bound, ready-to-run hookrelay.
pub struct Application {
    listener: TcpListener,
    service: AppService,
    /// `[admin] listen`, when set, with its own routes.
    admin: Option<(TcpListener, AppService)>,
    state: AppState,
    delivery: Delivery,
}

impl Application {
    /// Opens the spool, starts delivery and binds the listener. Port 0 is
    /// allowed (tests read the port back with [`Application::local_addr`]).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        if config.apps.is_empty() {
            tracing::warn!(
                "no [[apps]] are configured: every callback will be refused with 401 unknown_app"
            );
        }
        let sinks = config
            .sinks
            .iter()
            .map(|c| Ok((Sink::build(c)?, c.common.clone())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let names: Vec<(String, String)> = sinks
            .iter()
            .map(|(s, _)| (s.name().to_owned(), s.kind().to_owned()))
            .collect();
        let sink_names: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        let metrics = Arc::new(Metrics::new(&sink_names, &config.apps));
        let store = open_store(&config, &names, metrics.store_corrupt_records()).await?;
        let delivery = Delivery::start(sinks, &store, Arc::clone(&metrics)).await?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?,
            ),
            None => None,
        };
        let state = AppState::new(Arc::clone(&config), store, metrics);
        let public = Listener::Public {
            with_operations: admin_listener.is_none(),
        };
        let service = service(router(state.clone(), public));
        let admin =
            admin_listener.map(|l| (l, routes::service(router(state.clone(), Listener::Admin))));
        Ok(Application {
            listener,
            service,
            admin,
            state,
            delivery,
        })
    }

    /// The callback listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The admin listener's address, when `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Shared state (config swaps on reload go through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// On every SIGHUP, loads a new config with `loader` and swaps in its
    /// apps and secrets; a config that fails to load is refused with a log
    /// line and the running one keeps serving. In-flight requests finish
    /// with the config they started with.
    pub fn reload_on_sighup(
        &self,
        loader: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
    ) {
        #[cfg(unix)]
        {
            let state = self.state.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; config reload disabled");
                    return;
                };
                while hup.recv().await.is_some() {
                    match tokio::task::block_in_place(&loader) {
                        Ok(new) => {
                            let apps = new.apps.len();
                            state.reload_apps(new);
                            tracing::info!(apps, "SIGHUP: apps and secrets reloaded");
                        }
                        Err(e) => tracing::error!(
                            error = %format!("{e:#}"),
                            "SIGHUP: the new config is refused; the running config keeps serving"
                        ),
                    }
                }
            });
        }
        #[cfg(not(unix))]
        let _ = loader;
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` turns 503
    /// at once, the listener keeps accepting for `server.drain_delay_secs`,
    /// in-flight requests get `server.shutdown_grace_secs` to finish,
    /// delivery stops at an event boundary and the spool is closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let config = self.state.config();
        let drain_delay = Duration::from_secs(config.server.drain_delay_secs);
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        tracing::info!(%addr, "hookrelay listening");

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let draining = self.state.draining();
        tokio::spawn(async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!(
                drain_delay_secs = drain_delay.as_secs(),
                "draining: /readyz answers 503; still accepting"
            );
            tokio::time::sleep(drain_delay).await;
            let _ = stop_tx.send(true);
        });

        let header_timeout = Duration::from_secs(config.server.header_read_timeout_secs);
        let graceful = GracefulShutdown::new();
        let public = accept_loop(
            self.listener,
            self.service,
            header_timeout,
            &graceful,
            stop_rx.clone(),
        );
        match self.admin {
            Some((listener, service)) => {
                if let Ok(admin_addr) = listener.local_addr() {
                    tracing::info!(%admin_addr, "admin listener: /healthz, /readyz, /metrics");
                }
                let admin = accept_loop(listener, service, header_timeout, &graceful, stop_rx);
                tokio::join!(public, admin);
            }
            None => public.await,
        }
        tracing::info!("listeners closed; finishing in-flight requests");
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "shutdown grace period over; dropping the requests still in flight"
                );
            }
        }
        self.delivery.stop().await;
        self.state.store.close().await;
        tracing::info!("delivery stopped, spool closed; bye");
        Ok(())
    }
}

/// The store `[spool] backend` names: the local SQLite spool, or the
/// JetStream store (which connects in the background and never blocks
/// start-up on NATS).
async fn open_store(
    config: &Config,
    sinks: &[(String, String)],
    corrupt_records: prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<Store> {
    match (config.spool.backend, &config.nats) {
        (Backend::Nats, Some(nats)) => {
            let names = sinks.iter().map(|(name, _)| name.clone()).collect();
            let store = NatsStore::open(
                nats.clone(),
                config.spool.retention(),
                config.signature_window(),
                names,
            )
            .await?;
            Ok(Store::Nats(store))
        }
        _ => {
            let options = SpoolOptions {
                dedup_window: config.spool.dedup_window(),
                signature_window: config.signature_window(),
                retention: config.spool.retention(),
                max_size_bytes: config.spool.max_size_mb * 1024 * 1024,
                corrupt_records,
            };
            let dir = config.spool.dir.clone();
            let sinks = sinks.to_vec();
            let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, options, &sinks))
                .await
                .context("spool open task failed")??;
            Ok(Store::Local(spool))
        }
    }
}

/// Accepts connections on `listener` until `stop` turns true, serving each
/// with `service` under `graceful` (which the caller drains).
///
/// Our own accept loop rather than axum::serve: hyper's header read timeout
/// needs a timer, which axum::serve does not configure, and without it a
/// client that never finishes its headers holds a connection forever.
async fn accept_loop(
    listener: TcpListener,
    service: AppService,
    header_timeout: Duration,
    graceful: &GracefulShutdown,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut stopped = std::pin::pin!(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            service
                .clone()
                .map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                });
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
}
