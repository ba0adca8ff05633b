//! The HTTP surface: routes, middleware, and the application's lifecycle.
//! Nothing here knows a vendor's wire format; see [`crate::ingest`].

use crate::config::Config;
use crate::delivery::Delivery;
use crate::error::{IngestError, RejectionCode};
use crate::ingest::{self, AppState};
use crate::metrics::Metrics;
use crate::providers::Family;
use crate::sinks::Sink;
use crate::spool::{Spool, SpoolOptions};
use anyhow::Context;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// A bound, ready-to-run hookrelay.
pub struct Application {
    listener: TcpListener,
    service: AppService,
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
            .map(Sink::build)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let names: Vec<(String, String)> = sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.kind().to_owned()))
            .collect();
        let options = SpoolOptions {
            dedup_window: config.spool.dedup_window(),
            retention: config.spool.retention(),
            max_size_bytes: config.spool.max_size_mb * 1024 * 1024,
        };
        let dir = config.spool.dir.clone();
        let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, options, &names))
            .await
            .context("spool open task failed")??;
        let metrics = Arc::new(Metrics::new(&config));
        let delivery = Delivery::start(sinks, &spool, Arc::clone(&metrics))?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let state = AppState::new(Arc::clone(&config), spool, metrics);
        let service = service(state.clone(), &config);
        Ok(Application {
            listener,
            service,
            state,
            delivery,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
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

        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
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

        // Our own accept loop rather than axum::serve: hyper's header read
        // timeout needs a timer, which axum::serve does not configure, and
        // without it a client that never finishes its headers holds a
        // connection forever.
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(config.server.header_read_timeout_secs));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stopped = std::pin::pin!(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        });
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
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
                self.service
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
        drop(self.listener);
        tracing::info!("listener closed; finishing in-flight requests");
        let served = tokio::select! {
            _ = graceful.shutdown() => Ok(()),
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "shutdown grace period over; dropping the requests still in flight"
                );
                Ok(())
            }
        };
        self.delivery.stop().await;
        self.state.spool.close().await;
        tracing::info!("delivery stopped, spool closed; bye");
        served
    }
}

/// The whole HTTP service as served: a type-erased, cloneable tower service.
pub type AppService = tower::util::BoxCloneService<Request, Response, Infallible>;

/// Every route.
pub fn router(state: AppState) -> Router {
    let callback = |family: Family| {
        post(move |State(s): State<AppState>, req: Request| callback(s, family, req))
    };
    Router::new()
        .route(
            "/callbacks/zego/cloud-player",
            callback(Family::CloudPlayer),
        )
        .route("/callbacks/zego/stream", callback(Family::Stream))
        .route("/callbacks/zego/compose", callback(Family::Compose))
        .route("/callbacks/netease/cloud-play", callback(Family::CloudPlay))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { IngestError::NotFound })
        .method_not_allowed_fallback(|| async { IngestError::MethodNotAllowed })
        .with_state(state)
}

/// The routes wrapped in the middleware stack, read top to bottom.
///
/// The stack wraps the router as one service — not `Router::layer`, which
/// would give every route its own concurrency limit — so
/// `server.concurrency_limit` bounds the whole server.
pub fn service(state: AppState, config: &Config) -> AppService {
    let routes = router(state.clone());
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::new())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            IngestError::Overloaded
        }))
        .load_shed()
        .concurrency_limit(config.server.concurrency_limit)
        .layer(axum::middleware::from_fn_with_state(state, timeout_as_json))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.server.request_timeout_secs),
        ))
        .service(routes)
        .boxed_clone()
}

/// The timeout layer answers a bare 408; give it the error contract's JSON
/// shape and count it like any other rejection.
async fn timeout_as_json(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let family = match req.uri().path() {
        "/callbacks/zego/cloud-player" => Some(Family::CloudPlayer),
        "/callbacks/zego/stream" => Some(Family::Stream),
        "/callbacks/zego/compose" => Some(Family::Compose),
        "/callbacks/netease/cloud-play" => Some(Family::CloudPlay),
        _ => None,
    };
    let response = next.run(req).await;
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && response.extensions().get::<RejectionCode>().is_none()
    {
        let timeout = IngestError::Timeout;
        if let Some(f) = family {
            state.metrics.rejection(f, timeout.code());
            state.metrics.request(f, timeout.status().as_u16());
        }
        return timeout.into_response();
    }
    response
}

/// One callback request: source check, the family's pipeline, metrics.
async fn callback(state: AppState, family: Family, req: Request) -> Response {
    let started = Instant::now();
    let span = tracing::Span::current();
    span.record("family", family.as_str());
    let (parts, body) = req.into_parts();
    let config = state.config();
    let result = match client_ip(&parts, config.server.trust_forwarded_for) {
        Some(ip)
            if config
                .server
                .allowed_ips
                .as_ref()
                .is_some_and(|a| !a.allows(family.provider(), ip)) =>
        {
            tracing::debug!(%ip, "source address not allowed");
            Err(IngestError::Forbidden)
        }
        _ => {
            // The one body limit: past it, 413 payload_too_large.
            let limit = config.server.max_body_bytes;
            match axum::body::to_bytes(body, limit).await {
                Err(e) => Err(body_error(e)),
                Ok(bytes) if family == Family::CloudPlay => {
                    ingest::netease(&state, family, &parts.headers, bytes).await
                }
                Ok(bytes) => ingest::zego(&state, family, bytes).await,
            }
        }
    };
    let response = match result {
        Ok(ack) => {
            state.metrics.ack(started.elapsed().as_secs_f64());
            ack.into_response()
        }
        Err(e) => {
            state.metrics.rejection(family, e.code());
            e.into_response()
        }
    };
    state.metrics.request(family, response.status().as_u16());
    response
}

fn body_error(e: axum::Error) -> IngestError {
    // to_bytes reports an over-limit body as a LengthLimitError in its source chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return IngestError::PayloadTooLarge;
        }
        source = s.source();
    }
    IngestError::BodyRead(e.to_string())
}

/// The client's address: the TCP peer, or with `trust_forwarded_for` the
/// rightmost `X-Forwarded-For` entry (what our own load balancer saw;
/// entries to its left are whatever the client chose to send).
fn client_ip(parts: &axum::http::request::Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        // The rightmost entry only: if it does not parse, fall back to the
        // peer rather than trusting an entry the client wrote.
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %request.uri().path(),
        request_id = %request_id,
        family = tracing::field::Empty,
        event_id = tracing::field::Empty,
        kind = tracing::field::Empty,
    )
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
}

/// 200 while the spool takes writes and we are not draining; 503 with the
/// reason otherwise, so a load balancer takes this replica out of rotation.
async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"ok": false, "reason": reason})),
        )
            .into_response()
    };
    if state.draining().load(Ordering::SeqCst) {
        return not_ready("draining");
    }
    // Room for the largest callback we accept: its envelope holds the body twice (raw + event).
    let room = state.config().server.max_body_bytes as u64 * 2 + 64 * 1024;
    match tokio::time::timeout(Duration::from_secs(2), state.spool.probe(room)).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the spool does not take writes");
            not_ready("spool_unavailable")
        }
        Err(_) => not_ready("spool_unavailable"),
    }
}

async fn metrics(State(state): State<AppState>, _headers: HeaderMap) -> Response {
    let committed = *state.spool.committed().borrow();
    let body = state.metrics.render(committed, crate::spool::now_ms());
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
