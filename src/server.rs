//! The HTTP surface: routes, middleware, and the application's lifecycle.
//! Nothing here knows a vendor's wire format; see [`crate::ingest`].

use crate::config::Config;
use crate::delivery::Delivery;
use crate::error::IngestError;
use crate::ingest::{self, AppState};
use crate::providers::Family;
use crate::sinks::Sink;
use crate::spool::{Spool, SpoolOptions};
use anyhow::Context;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// A bound, ready-to-run hookrelay.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    delivery: Delivery,
}

impl Application {
    /// Opens the spool, starts delivery and binds the listener. Port 0 is
    /// allowed (tests read the port back with [`Application::local_addr`]).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        if config.apps.is_empty() {
            tracing::warn!("no [[apps]] are configured: every callback will be refused with 401 unknown_app");
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
        let delivery = Delivery::start(sinks, &spool)?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let state = AppState::new(Arc::clone(&config), spool);
        let router = router(state.clone(), &config);
        Ok(Application {
            listener,
            router,
            state,
            delivery,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests,
    /// stops delivery at an event boundary and closes the spool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "hookrelay listening");
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        tracing::info!("listener closed; stopping delivery");
        self.delivery.stop().await;
        self.state.spool.close().await;
        tracing::info!("spool closed; bye");
        served.context("server error")
    }
}

/// Every route and the middleware stack.
pub fn router(state: AppState, config: &Config) -> Router {
    let callbacks = Router::new()
        .route(
            "/callbacks/zego/cloud-player",
            post(|State(s): State<AppState>, body| ingest::zego(s, Family::CloudPlayer, body)),
        )
        .route(
            "/callbacks/zego/stream",
            post(|State(s): State<AppState>, body| ingest::zego(s, Family::Stream, body)),
        )
        .route(
            "/callbacks/zego/compose",
            post(|State(s): State<AppState>, body| ingest::zego(s, Family::Compose, body)),
        )
        .route(
            "/callbacks/netease/cloud-play",
            post(
                |State(s): State<AppState>, headers: HeaderMap, body| {
                    ingest::netease(s, Family::CloudPlay, headers, body)
                },
            ),
        )
        // The one body limit: answered 413 payload_too_large by the handler.
        .layer(DefaultBodyLimit::max(config.server.max_body_bytes));

    Router::new()
        .merge(callbacks)
        .route("/healthz", get(healthz))
        .fallback(|| async { IngestError::NotFound })
        .method_not_allowed_fallback(|| async { IngestError::MethodNotAllowed })
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::new())
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(make_span))
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    IngestError::Overloaded
                }))
                .load_shed()
                .concurrency_limit(config.server.concurrency_limit)
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(config.server.request_timeout_secs),
                )),
        )
}

fn make_span<B>(request: &Request<B>) -> tracing::Span {
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
    )
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
}
