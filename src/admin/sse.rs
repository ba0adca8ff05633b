//! `GET /api/events/stream`: one `event: envelope` per newly stored event,
//! its `id:` the event id; a reconnect with `Last-Event-ID` resumes after
//! that event. A comment line every 15 s keeps proxies from closing it.
//! The stream ends when the server starts draining.

use super::AdminState;
use super::api::EventsQuery;
use crate::error::AdminError;
use crate::store::inspect::{EventFilter, Tail};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The comment heartbeat's interval.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub async fn stream(
    State(state): State<AdminState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AdminError> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let tail = state.inspector.tail(last_id).await?;
    let filter = EventFilter {
        q: None,
        ..query.filter()
    };
    let draining = state.app.draining();
    let events = futures_util::stream::unfold(
        (tail, filter, draining),
        |(mut tail, filter, draining)| async move {
            next_event(&mut tail, &filter, &draining)
                .await
                .map(|e| (Ok(e), (tail, filter, draining)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// The next matching event as SSE; None ends the stream (draining, or the
/// store failed: the client reconnects with `Last-Event-ID`).
async fn next_event(
    tail: &mut Tail,
    filter: &EventFilter,
    draining: &Arc<AtomicBool>,
) -> Option<Event> {
    loop {
        if draining.load(Ordering::SeqCst) {
            return None;
        }
        let event = match tail.next(Duration::from_secs(1)).await {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "event stream: the store failed; closing");
                return None;
            }
        };
        let Ok(envelope) = serde_json::from_str::<serde_json::Value>(&event.envelope) else {
            continue;
        };
        if !filter.matches(&envelope, &event.id, event.resource.as_deref()) {
            continue;
        }
        return Some(
            Event::default()
                .event("envelope")
                .id(event.id)
                .data(envelope.to_string()),
        );
    }
}
