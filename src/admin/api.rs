//! The JSON handlers of `/api/`. Shapes are a contract (see README.md,
//! "Admin API"); the data comes from [`crate::store::inspect`] and, for
//! sinks, from the same progress cells as the `hookrelay_spool_*` gauges.

use super::AdminState;
use crate::error::AdminError;
use crate::metrics::Backlog;
use crate::store::inspect::{
    DeadLetterView, EventDetail, EventFilter, EventPage, MAX_LIMIT, ReplaySelection,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// The default page size of `GET /api/events`.
pub const DEFAULT_LIMIT: usize = 50;

/// Query of `GET /api/events`; empty values mean "any".
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    pub family: Option<String>,
    pub kind: Option<String>,
    pub app_id: Option<String>,
    pub q: Option<String>,
    pub before: Option<String>,
    pub limit: Option<String>,
}

fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl EventsQuery {
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            family: given(self.family.clone()),
            kind: given(self.kind.clone()),
            app_id: given(self.app_id.clone()),
            q: given(self.q.clone()),
        }
    }

    /// `limit`: default 50, at most 500; not a positive number is a 400.
    pub fn limit(&self) -> Result<usize, AdminError> {
        match given(self.limit.clone()) {
            None => Ok(DEFAULT_LIMIT),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n.min(MAX_LIMIT)),
                _ => Err(AdminError::BadRequest("invalid_limit")),
            },
        }
    }
}

/// Events newest first; shared with the UI.
pub async fn list_events(state: &AdminState, query: &EventsQuery) -> Result<EventPage, AdminError> {
    let limit = query.limit()?;
    Ok(state
        .inspector
        .events(
            &state.sink_names(),
            query.filter(),
            given(query.before.clone()),
            limit,
        )
        .await?)
}

/// `GET /api/events`
pub async fn events(
    State(state): State<AdminState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, AdminError> {
    Ok(Json(list_events(&state, &query).await?))
}

/// `GET /api/events/{id}`
pub async fn event(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, AdminError> {
    state
        .inspector
        .event(&state.sink_names(), &id)
        .await?
        .map(Json)
        .ok_or(AdminError::NotFound)
}

/// One row of `GET /api/sinks`.
#[derive(Debug, Clone, Serialize)]
pub struct SinkView {
    pub name: String,
    pub kind: &'static str,
    pub pending: i64,
    pub oldest_pending_seconds: f64,
    pub dead_letters: i64,
    pub failing_since: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// Every configured sink's backlog and health; shared with the UI.
pub fn sink_views(state: &AdminState) -> Vec<SinkView> {
    let config = state.app.config();
    let newest = state.app.store.newest_position();
    let now = crate::clock::now_ms();
    let at = |ms: i64| (ms > 0).then(|| crate::clock::rfc3339(ms));
    config
        .sinks
        .iter()
        .map(|s| {
            let p = state.app.metrics.progress(s.name());
            let backlog = Backlog::of(&p, newest, now);
            SinkView {
                name: s.name().to_owned(),
                kind: s.kind(),
                pending: backlog.pending,
                oldest_pending_seconds: backlog.oldest_pending_seconds,
                dead_letters: state.app.metrics.dead_letters(s.name()),
                failing_since: at(p.failing_since_ms.load(Ordering::Relaxed)),
                next_attempt_at: at(p.next_attempt_at_ms.load(Ordering::Relaxed)),
                last_error: p.last_error(),
            }
        })
        .collect()
}

/// `GET /api/sinks`
pub async fn sinks(State(state): State<AdminState>) -> Json<Value> {
    state.app.store.settle().await;
    Json(json!({ "sinks": sink_views(&state) }))
}

#[derive(Debug, Deserialize)]
pub struct SinkQuery {
    pub sink: Option<String>,
}

fn known_sink(state: &AdminState, sink: Option<String>) -> Result<Option<String>, AdminError> {
    match given(sink) {
        Some(name) if !state.sink_names().contains(&name) => {
            Err(AdminError::BadRequest("unknown_sink"))
        }
        other => Ok(other),
    }
}

/// `GET /api/dead-letters?sink=`
pub async fn dead_letters(
    State(state): State<AdminState>,
    Query(query): Query<SinkQuery>,
) -> Result<Json<Value>, AdminError> {
    let sink = known_sink(&state, query.sink)?;
    let rows = state.inspector.dead_letters(sink.as_deref()).await?;
    let rows: Vec<DeadLetterView> = rows.into_iter().map(DeadLetterView::from).collect();
    Ok(Json(json!({ "dead_letters": rows })))
}

/// Body of `POST /api/dead-letters/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    sink: Option<String>,
}

/// `POST /api/dead-letters/replay` with `{"ids":[...]}` or `{"all":true,"sink":"<name>"}`.
pub async fn replay(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let request: ReplayRequest =
        serde_json::from_slice(&body).map_err(|_| AdminError::BadRequest("malformed_body"))?;
    let sink = known_sink(&state, request.sink)?;
    let selection = match (request.ids, request.all) {
        (Some(ids), false) if !ids.is_empty() => ReplaySelection::Ids(ids),
        (None, true) => ReplaySelection::All,
        _ => return Err(AdminError::BadRequest("give_ids_or_all")),
    };
    let replayed = state.inspector.replay(sink.as_deref(), selection).await?;
    tracing::info!(
        replayed,
        sink = sink.as_deref().unwrap_or("*"),
        "admin API: dead letters queued for replay"
    );
    Ok(Json(json!({ "replayed": replayed })))
}

/// Query of `GET /api/state/streams` and `/api/state/players`.
#[derive(Debug, Default, Deserialize)]
pub struct StateQuery {
    pub app_id: Option<String>,
    pub room_id: Option<String>,
}

/// `GET /api/state/streams?app_id=&room_id=`: the ZEGO streams live now.
pub async fn state_streams(
    State(state): State<AdminState>,
    Query(query): Query<StateQuery>,
) -> Json<Value> {
    let (app, room) = (given(query.app_id), given(query.room_id));
    let streams = state.live.streams(app.as_deref(), room.as_deref());
    Json(json!({ "streams": streams }))
}

/// `GET /api/state/players?app_id=`: cloud players, upload tasks and
/// NetEase cloud-play tasks, each with its latest status.
pub async fn state_players(
    State(state): State<AdminState>,
    Query(query): Query<StateQuery>,
) -> Json<Value> {
    let app = given(query.app_id);
    Json(json!({ "players": state.live.players(app.as_deref()) }))
}
