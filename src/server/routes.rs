//! Routes, the middleware stack and the handlers.
//!
//! Two groups of routes with different rules:
//! - **callbacks** (`/callbacks/...`): source check, body budget, body
//!   deadline, then a unit of `server.concurrency_limit` for the work
//!   (verify, parse, store), all under `server.request_timeout_secs`;
//! - **operations** (`/healthz`, `/readyz`, `/metrics`): none of those
//!   limits, so no amount of callback traffic, slow or fast, can make a
//!   probe fail. With `[admin] listen` set, `/readyz` and `/metrics` move to
//!   the admin listener and the public one keeps `/healthz` only.

use super::limits::{acceptable_request_id, declared_length};
use super::state::AppState;
use crate::error::{IngestError, RejectionCode};
use crate::ingest;
use crate::providers::{FAMILIES, Family};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The whole HTTP service as served: a type-erased, cloneable tower service.
pub type AppService = tower::util::BoxCloneService<Request, Response, Infallible>;

/// Which listener a router is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: callbacks and `/healthz`, plus `/readyz` and
    /// `/metrics` when there is no admin listener.
    Public { with_operations: bool },
    /// `[admin] listen`: `/healthz`, `/readyz`, `/metrics`, and the admin
    /// API and UI (`/api/...`, `/ui/...`, see [`crate::admin`]).
    Admin,
}

/// The routes of one listener.
pub fn router(state: AppState, listener: Listener) -> Router {
    let routes = match listener {
        Listener::Public { with_operations } => {
            callback_routes(&state).merge(operation_routes(with_operations))
        }
        Listener::Admin => operation_routes(true).merge(crate::admin::routes(state.clone())),
    };
    routes
        .fallback(|| async { IngestError::NotFound })
        .method_not_allowed_fallback(|| async { IngestError::MethodNotAllowed })
        .with_state(state)
}

fn callback_routes(state: &AppState) -> Router<AppState> {
    let config = state.config();
    FAMILIES
        .iter()
        .fold(Router::new(), |routes, &family| {
            routes.route(
                family.route(),
                post(move |State(s): State<AppState>, req: Request| callback(s, family, req)),
            )
        })
        // Layers on these routes only: the probes never time out here.
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    timeout_as_json,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(config.server.request_timeout_secs),
                )),
        )
}

fn operation_routes(with_admin_routes: bool) -> Router<AppState> {
    let routes = Router::new().route("/healthz", get(healthz));
    if with_admin_routes {
        routes
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
    } else {
        routes
    }
}

/// A router wrapped in the middleware stack, read top to bottom.
pub fn service(router: Router) -> AppService {
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::new())
        .map_request(drop_unacceptable_request_id)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Every rejection is logged once, at its own level, by
        // `IngestError::into_response`; the trace layer's default would log
        // each 5xx again as an ERROR "response failed" (a shed request is
        // not an error of ours).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_failure(()),
        )
        .service(router)
        .boxed_clone()
}

/// A client's request id is kept only when it is short and plain; else
/// it is removed here and `SetRequestIdLayer` generates one.
fn drop_unacceptable_request_id(mut req: Request) -> Request {
    if req
        .headers()
        .get("x-request-id")
        .is_some_and(|v| !acceptable_request_id(v))
    {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The timeout layer answers a bare 408; give it the error contract's JSON
/// shape and count it like any other rejection.
async fn timeout_as_json(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let family = family_of(req.uri().path());
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

fn family_of(path: &str) -> Option<Family> {
    Family::by_route(path)
}

/// One callback request: source check, body, the family's pipeline, metrics.
async fn callback(state: AppState, family: Family, req: Request) -> Response {
    let started = Instant::now();
    tracing::Span::current().record("family", family.as_str());
    let response = match receive(&state, family, req).await {
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

async fn receive(
    state: &AppState,
    family: Family,
    req: Request,
) -> Result<axum::Json<ingest::Ack>, IngestError> {
    let (parts, body) = req.into_parts();
    let config = state.config();
    if let Some(ip) = client_ip(&parts, config.server.trust_forwarded_for)
        && let Some(allowed) = &config.server.allowed_ips
        && !allowed.allows(family.provider(), ip)
    {
        tracing::debug!(%ip, "source address not allowed");
        return Err(IngestError::Forbidden);
    }
    // The one body limit: past it, 413 payload_too_large, before a byte is read.
    let limit = config.server.max_body_bytes;
    let reservation = match declared_length(&parts.headers) {
        Some(n) if n > limit as u64 => return Err(IngestError::PayloadTooLarge),
        Some(n) => n as usize,
        None => limit,
    };
    let _reserved = state
        .bodies
        .reserve(reservation)
        .ok_or(IngestError::Overloaded)?;
    let deadline = Duration::from_secs(config.server.body_timeout_secs);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Err(IngestError::Timeout),
        Ok(Err(e)) => return Err(body_error(e)),
        Ok(Ok(bytes)) => bytes,
    };
    // The body is here: only now take a unit of work, never queueing for one.
    let _permit = state
        .work
        .try_acquire()
        .map_err(|_| IngestError::Overloaded)?;
    let pipeline = ingest::Pipeline {
        config: &config,
        store: &state.store,
        metrics: &state.metrics,
    };
    ingest::ingest(pipeline, family, &parts.headers, &bytes).await
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
    // Only an acceptable client id or our own UUID reaches this point.
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
    if state.spool_ready().await {
        (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
    } else {
        not_ready("spool_unavailable")
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.store.settle().await;
    let newest = state.store.newest_position();
    let body = state.metrics.render(newest, crate::clock::now_ms());
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
