//! The inspector: `/ui/` (events, filters, paging, the live toggle and the
//! events-per-minute chart), `/ui/events/{id}` (one event, its deliveries,
//! a replay button when dead-lettered), `/ui/sinks` and `/ui/live`.
//!
//! Everything is rendered here, so the lists are readable with JavaScript
//! off; `assets/ui.js` only adds the live rows. Every value from the store
//! goes through [`escape`].

use super::AdminState;
use super::api::{EventsQuery, list_events, sink_views};
use super::auth::Access;
use super::ui::{csrf_of, escape, layout};
use crate::error::AdminError;
use crate::providers::FAMILIES;
use crate::store::inspect::{DeadLetterView, ReplaySelection};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Minutes the chart covers.
pub const CHART_MINUTES: i64 = 60;

/// `GET /ui/?family=&kind=&app_id=&q=&before=`
pub async fn events(
    State(state): State<AdminState>,
    Extension(access): Extension<Access>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, AdminError> {
    let page = list_events(&state, &query).await?;
    let now = crate::clock::now_ms();
    let counts = state
        .inspector
        .per_minute(now - CHART_MINUTES * 60_000)
        .await?;
    let value = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let mut m = String::from("<h1>Events</h1>");

    // Filters: a GET form, so a filtered list is a link.
    m.push_str(
        "<form class=\"filters\" method=\"get\" action=\"/ui/\" role=\"search\">\
         <label for=\"f-family\">Family<select id=\"f-family\" name=\"family\">\
         <option value=\"\">any</option>",
    );
    for f in FAMILIES.iter() {
        let name = f.as_str();
        let selected = if query.family.as_deref() == Some(name) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            m,
            "<option value=\"{name}\"{selected}>{}/{name}</option>",
            f.provider().as_str()
        );
    }
    let _ = write!(
        m,
        "</select></label>\
         <label for=\"f-kind\">Kind<input id=\"f-kind\" name=\"kind\" value=\"{}\"></label>\
         <label for=\"f-app\">App id<input id=\"f-app\" name=\"app_id\" value=\"{}\"></label>\
         <label for=\"f-q\">Resource or event id<input id=\"f-q\" name=\"q\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/ui/\">Clear</a></form>",
        value(&query.kind),
        value(&query.app_id),
        value(&query.q),
    );

    m.push_str(&chart(&counts, now));

    // Hidden until the script shows it: without JavaScript it could do nothing.
    m.push_str(
        "<h2 id=\"list-heading\">Newest first</h2>\
         <p class=\"live-toggle\" hidden><input type=\"checkbox\" id=\"live\">\
         <label for=\"live\">Live: add new events as they arrive</label>\
         <span id=\"live-status\" role=\"status\" aria-live=\"polite\"></span></p>\
         <table aria-labelledby=\"list-heading\"><thead><tr>\
         <th scope=\"col\">Received</th><th scope=\"col\">Provider/family/kind</th>\
         <th scope=\"col\">App</th><th scope=\"col\">Resource</th>\
         <th scope=\"col\">Deliveries</th><th scope=\"col\">Event id</th></tr></thead>\
         <tbody id=\"events-body\">",
    );
    for e in &page.events {
        let deliveries: Vec<String> = e
            .deliveries
            .iter()
            .map(|(sink, st)| format!("{sink}: {st}"))
            .collect();
        let _ = write!(
            m,
            "<tr data-id=\"{id}\"><td>{}</td><td>{}/{}/{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"id\"><a href=\"/ui/events/{id}\">{id}</a></td></tr>",
            escape(&e.received_at),
            escape(&e.provider),
            escape(&e.family),
            escape(&e.kind),
            escape(&e.app_id),
            escape(e.resource.as_deref().unwrap_or("-")),
            escape(&deliveries.join(", ")),
            id = escape(&e.id),
        );
    }
    m.push_str("</tbody></table>");
    if page.events.is_empty() {
        m.push_str("<p>No events match.</p>");
    }

    // Paging keeps the filters.
    let mut keep = String::new();
    for (k, v) in [
        ("family", &query.family),
        ("kind", &query.kind),
        ("app_id", &query.app_id),
        ("q", &query.q),
        ("limit", &query.limit),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let _ = write!(keep, "&{k}={}", url_encode(v));
        }
    }
    m.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if query.before.as_deref().is_some_and(|b| !b.is_empty()) {
        let _ = write!(
            m,
            "<a href=\"/ui/?{}\">Newest</a>",
            escape(keep.trim_start_matches('&'))
        );
    }
    if let Some(next) = &page.next {
        let _ = write!(
            m,
            "<a href=\"/ui/?before={}{}\" rel=\"next\">Older</a>",
            escape(&url_encode(next)),
            escape(&keep)
        );
    }
    m.push_str("</nav>");
    Ok(layout("Events", &access, "/ui/", &m))
}

/// Family colours of the chart, in [`FAMILIES`] order (then grey).
const COLOURS: [&str; 6] = [
    "#0a58ca", "#d97706", "#1a7f37", "#9333ea", "#b42318", "#0e7490",
];

fn colour_of(family: &str) -> &'static str {
    FAMILIES
        .iter()
        .position(|f| f.as_str() == family)
        .and_then(|i| COLOURS.get(i).copied())
        .unwrap_or("#6b7280")
}

/// The events-per-minute chart of the last hour: stacked bars by family,
/// as inline SVG (no script), with a legend carrying the totals as text.
pub fn chart(counts: &[(i64, String, u64)], now_ms: i64) -> String {
    const W: i64 = 720;
    const H: i64 = 160;
    const BAR: i64 = W / CHART_MINUTES;
    let last = now_ms / 60_000;
    let first = last - CHART_MINUTES + 1;
    let mut by_minute: BTreeMap<i64, Vec<(&str, u64)>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (minute, family, n) in counts {
        if (first..=last).contains(minute) {
            by_minute
                .entry(*minute)
                .or_default()
                .push((family.as_str(), *n));
            *totals.entry(family.as_str()).or_default() += n;
        }
    }
    let peak = by_minute
        .values()
        .map(|v| v.iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let total: u64 = totals.values().sum();
    let mut svg = format!(
        "<section class=\"chart\" aria-labelledby=\"chart-heading\">\
         <h2 id=\"chart-heading\">Events per minute, last hour</h2>\
         <svg viewBox=\"0 0 {W} {vh}\" role=\"img\" aria-labelledby=\"chart-title\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-title\">{total} events in the \
         last hour, peak {peak} a minute</title>\
         <line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" stroke=\"#d0d7de\"/>\
         <text x=\"4\" y=\"12\" font-size=\"11\" fill=\"#57606a\">{peak}/min</text>\
         <text x=\"4\" y=\"{ty}\" font-size=\"11\" fill=\"#57606a\">60 min ago</text>\
         <text x=\"{W}\" y=\"{ty}\" font-size=\"11\" fill=\"#57606a\" text-anchor=\"end\">now</text>",
        vh = H + 16,
        ty = H + 13,
    );
    for (minute, mut families) in by_minute {
        families.sort_by_key(|(f, _)| FAMILIES.iter().position(|d| d.as_str() == *f));
        let x = (minute - first) * BAR;
        let mut y = H;
        for (family, n) in families {
            let h = ((n as f64 / peak as f64) * (H - 16) as f64)
                .round()
                .max(1.0) as i64;
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{}\">\
                 <title>{}: {n}</title></rect>",
                BAR - 2,
                colour_of(family),
                escape(family),
            );
        }
    }
    svg.push_str("</svg><ul class=\"legend\" aria-label=\"Families\">");
    for (family, n) in &totals {
        let _ = write!(
            svg,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" \
             height=\"12\" fill=\"{}\"/></svg> {}: {n}</li>",
            colour_of(family),
            escape(family),
        );
    }
    if totals.is_empty() {
        svg.push_str("<li>No events in the last hour.</li>");
    }
    svg.push_str("</ul></section>");
    svg
}

/// Percent-encodes a query value (everything but unreserved characters).
fn url_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[derive(Debug, Default, Deserialize)]
pub struct EventPageQuery {
    pub replayed: Option<usize>,
}

/// `GET /ui/events/{id}`
pub async fn event(
    State(state): State<AdminState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(query): Query<EventPageQuery>,
) -> Result<Response, AdminError> {
    let Some(detail) = state.inspector.event(&state.sink_names(), &id).await? else {
        let m = format!(
            "<h1>Event not found</h1><p>No stored event has the id <code>{}</code>.</p>\
             <p><a href=\"/ui/\">Back to the events</a></p>",
            escape(&id)
        );
        let mut r = layout("Not found", &access, "", &m);
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    let mut m = format!("<h1>Event <code>{}</code></h1>", escape(&id));
    if let Some(n) = query.replayed {
        let _ = write!(
            m,
            "<p class=\"notice\" role=\"status\">Queued {n} dead letter(s) for replay.</p>"
        );
    }
    let field = |name: &str| match detail.envelope.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    };
    m.push_str("<dl class=\"fields\">");
    for name in [
        "received_at",
        "provider",
        "family",
        "kind",
        "app_id",
        "event_time_ms",
        "dedup_key",
    ] {
        let _ = write!(m, "<dt>{name}</dt><dd>{}</dd>", escape(&field(name)));
    }
    m.push_str(
        "</dl><h2 id=\"deliveries\">Deliveries</h2>\
         <table aria-labelledby=\"deliveries\"><thead><tr><th scope=\"col\">Sink</th>\
         <th scope=\"col\">State</th><th scope=\"col\" class=\"num\">Attempts</th>\
         <th scope=\"col\">Last status</th><th scope=\"col\">Last error</th>\
         <th scope=\"col\">Next attempt</th></tr></thead><tbody>",
    );
    let opt = |v: Option<String>| escape(v.as_deref().unwrap_or("-"));
    for d in &detail.deliveries {
        let _ = write!(
            m,
            "<tr><th scope=\"row\">{}</th><td class=\"state-{state}\">{state}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.sink),
            d.attempts.map(|a| a.to_string()).unwrap_or_default(),
            opt(d.last_status.map(|s| s.to_string())),
            opt(d.last_error.clone()),
            opt(d.next_attempt_at.clone()),
            state = escape(d.state),
        );
    }
    m.push_str("</tbody></table>");
    let dead: Vec<&str> = detail
        .deliveries
        .iter()
        .filter(|d| d.state == "dead")
        .map(|d| d.sink.as_str())
        .collect();
    if !dead.is_empty() {
        let csrf = csrf_of(&access)
            .map(|t| {
                format!(
                    "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                    escape(t)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            m,
            "<form method=\"post\" action=\"/ui/events/{}/replay\">{csrf}\
             <button type=\"submit\" id=\"replay\">Replay dead letter ({})</button></form>",
            escape(&url_encode(&id)),
            escape(&dead.join(", ")),
        );
    }
    let raw = detail.envelope.get("raw").cloned().unwrap_or(Value::Null);
    let mut envelope = detail.envelope.clone();
    if let Some(o) = envelope.as_object_mut() {
        o.remove("raw");
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = write!(
        m,
        "<h2 id=\"envelope\">Envelope</h2><pre tabindex=\"0\" aria-labelledby=\"envelope\">{}</pre>\
         <h2 id=\"raw\">Raw payload</h2><pre tabindex=\"0\" aria-labelledby=\"raw\">{}</pre>",
        escape(&pretty(&envelope)),
        escape(&pretty(&raw)),
    );
    Ok(layout("Event", &access, "", &m))
}

/// `POST /ui/events/{id}/replay` (form field `csrf`): queues the event's
/// dead letters, of every sink holding it, and goes back to the event.
pub async fn replay(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let replayed = state
        .inspector
        .replay(None, ReplaySelection::Ids(vec![id.clone()]))
        .await?;
    tracing::info!(replayed, event = %id, "admin UI: dead letters queued for replay");
    let to = format!("/ui/events/{}?replayed={replayed}", url_encode(&id));
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

/// `GET /ui/sinks`
pub async fn sinks(
    State(state): State<AdminState>,
    Extension(access): Extension<Access>,
) -> Result<Response, AdminError> {
    let mut m = String::from(
        "<h1>Sinks</h1><table><thead><tr><th scope=\"col\">Sink</th><th scope=\"col\">Kind</th>\
         <th scope=\"col\" class=\"num\">Backlog</th><th scope=\"col\" class=\"num\">Oldest pending (s)</th>\
         <th scope=\"col\">Failing since</th><th scope=\"col\">Next attempt</th>\
         <th scope=\"col\">Last error</th><th scope=\"col\" class=\"num\">Dead letters</th>\
         </tr></thead><tbody>",
    );
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or("-"));
    state.app.store.settle().await;
    for s in sink_views(&state) {
        let _ = write!(
            m,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&s.name),
            escape(s.kind),
            s.pending,
            s.oldest_pending_seconds,
            opt(&s.failing_since),
            opt(&s.next_attempt_at),
            opt(&s.last_error),
            s.dead_letters,
        );
    }
    m.push_str("</tbody></table><h2 id=\"dead\">Dead letters</h2>");
    let letters: Vec<DeadLetterView> = state
        .inspector
        .dead_letters(None)
        .await?
        .into_iter()
        .map(DeadLetterView::from)
        .collect();
    if letters.is_empty() {
        m.push_str("<p>None.</p>");
    } else {
        m.push_str(
            "<table aria-labelledby=\"dead\"><thead><tr><th scope=\"col\">Event</th>\
             <th scope=\"col\">Sink</th><th scope=\"col\">Kind</th>\
             <th scope=\"col\" class=\"num\">Attempts</th><th scope=\"col\">Last status</th>\
             <th scope=\"col\">Last error</th><th scope=\"col\">Dead since</th></tr></thead><tbody>",
        );
        for d in &letters {
            let _ = write!(
                m,
                "<tr><td class=\"id\"><a href=\"/ui/events/{id}\">{id}</a></td><td>{}</td>\
                 <td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.sink),
                escape(&d.kind),
                d.attempts,
                d.last_status
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                escape(&d.last_error),
                escape(&d.dead_at),
                id = escape(&d.id),
            );
        }
        m.push_str("</tbody></table>");
    }
    Ok(layout("Sinks", &access, "/ui/sinks", &m))
}

/// `GET /ui/live`: streams grouped by room, then players and tasks.
pub async fn live(
    State(state): State<AdminState>,
    Extension(access): Extension<Access>,
) -> Result<Response, AdminError> {
    let now = crate::clock::now_ms();
    let since = |ms: Option<i64>| {
        ms.map(|t| {
            format!(
                "{} ({} s ago)",
                crate::clock::rfc3339(t),
                (now - t).max(0) / 1000
            )
        })
        .unwrap_or_else(|| "-".to_owned())
    };
    let mut m =
        String::from("<h1>Live now</h1><p><a href=\"/ui/live\">Refresh</a></p><h2>Streams</h2>");
    let mut rooms: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for s in state.live.streams(None, None) {
        rooms
            .entry((s.app_id.clone(), s.room_id.clone()))
            .or_default()
            .push(s);
    }
    if rooms.is_empty() {
        m.push_str("<p id=\"no-streams\">No stream is live.</p>");
    }
    for (i, ((app, room), streams)) in rooms.iter().enumerate() {
        let _ = write!(
            m,
            "<h3 id=\"room-{i}\">Room {} <small>(app {})</small></h3>\
             <table aria-labelledby=\"room-{i}\" class=\"streams\"><thead><tr>\
             <th scope=\"col\">Stream</th><th scope=\"col\">User</th>\
             <th scope=\"col\">Stream sid</th><th scope=\"col\" class=\"num\">Seq</th>\
             <th scope=\"col\">Live since</th></tr></thead><tbody>",
            escape(room),
            escape(app),
        );
        for s in streams {
            let _ = write!(
                m,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"id\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&s.stream_id),
                escape(s.user_id.as_deref().unwrap_or("-")),
                escape(&s.stream_sid),
                s.stream_seq.map(|n| n.to_string()).unwrap_or_default(),
                escape(&since(s.since_ms)),
            );
        }
        m.push_str("</tbody></table>");
    }
    m.push_str("<h2 id=\"players\">Players and tasks</h2>");
    let players = state.live.players(None);
    if players.is_empty() {
        m.push_str("<p>No player or task is running.</p>");
    } else {
        m.push_str(
            "<table aria-labelledby=\"players\"><thead><tr><th scope=\"col\">Id</th>\
             <th scope=\"col\">Provider</th><th scope=\"col\">App</th>\
             <th scope=\"col\">Status</th><th scope=\"col\">Last event</th>\
             <th scope=\"col\">At</th></tr></thead><tbody>",
        );
        for p in &players {
            let _ = write!(
                m,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.id),
                escape(&p.provider),
                escape(&p.app_id),
                escape(&p.status),
                escape(&p.last_kind),
                escape(&since(p.event_time_ms)),
            );
        }
        m.push_str("</tbody></table>");
    }
    Ok(layout("Live now", &access, "/ui/live", &m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_stacks_families_and_escapes_their_names() {
        let now = 120 * 60_000;
        let counts = vec![
            (119, "stream".to_owned(), 3),
            (119, "<script>".to_owned(), 1),
            (10, "stream".to_owned(), 99), // older than an hour: left out
        ];
        let svg = chart(&counts, now);
        assert!(svg.contains("4 events in the last hour"), "{svg}");
        assert!(svg.contains("stream: 3"));
        assert!(svg.contains("&lt;script&gt;: 1"));
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
