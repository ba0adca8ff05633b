//! The operator's pages, rendered on the server: the sign-in form and an
//! overview (sinks and the newest events). The data comes from the same
//! functions as the JSON API ([`super::api::sink_views`],
//! [`super::api::list_events`]); the inspector UI builds on these.
//!
//! Pages that change state carry the session's CSRF token in a
//! `<meta name="csrf-token">` tag and in their forms' hidden `csrf` field;
//! scripts send it back as `X-CSRF-Token`.

use super::AdminState;
use super::api::{EventsQuery, list_events, sink_views};
use super::auth::{self, Access, COOKIE, CSRF_HEADER, SESSION_TTL};
use crate::error::AdminError;
use axum::Extension;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use std::fmt::Write as _;

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`.
fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let meta = csrf
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">", escape(t)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{meta}\
         <title>{} · hookrelay</title></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// Headers every admin page carries: not cached, not framed.
fn html(status: StatusCode, text: String) -> Response {
    let mut response = (status, Html(text)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    response
}

/// The sign-in form, answered with `status` (401 where a page needed a session).
pub fn sign_in_page(_state: &AdminState, status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>hookrelay</h1>{error}\
         <form method=\"post\" action=\"/ui/sign-in\">\
         <label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
         <button type=\"submit\">Sign in</button></form>"
    );
    html(status, page("Sign in", None, &body))
}

/// `GET /ui/sign-in`
pub async fn sign_in_form(State(state): State<AdminState>) -> Response {
    sign_in_page(&state, StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
}

/// `POST /ui/sign-in` (form field `token`): a session cookie and a
/// redirect to `/ui/`, or the form again with 401.
pub async fn sign_in(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if auth::cross_site(&headers) {
        return AdminError::CsrfRefused.into_response();
    }
    let config = state.app.config();
    let ok = match &config.admin.token {
        Some(token) => auth::token_matches(token, &form.token),
        None => true,
    };
    if !ok {
        tracing::warn!("admin UI: sign-in with a wrong token");
        return sign_in_page(&state, StatusCode::UNAUTHORIZED, Some("Wrong token."));
    }
    let (id, _) = state.sessions.create();
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/sign-out` (form field `csrf`, the session's CSRF token): ends
/// the session. Checked here rather than by the middleware, which cannot
/// read a form field.
pub async fn sign_out(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    if auth::cross_site(&headers) {
        return AdminError::CsrfRefused.into_response();
    }
    let Some(id) = auth::session_cookie(&headers) else {
        return AdminError::Unauthorized.into_response();
    };
    let Some(csrf) = state.sessions.csrf(&id) else {
        return AdminError::Unauthorized.into_response();
    };
    let access = Access::Session {
        id: id.clone(),
        csrf,
    };
    let mut with_token = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&form.csrf) {
        with_token.insert(CSRF_HEADER, v);
    }
    if !auth::csrf_ok(&access, &with_token) {
        return AdminError::CsrfRefused.into_response();
    }
    state.sessions.remove(&id);
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/sign-in")]).into_response();
    let expired = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /ui/`: sinks and the newest events.
pub async fn overview(
    State(state): State<AdminState>,
    Extension(access): Extension<Access>,
) -> Result<Response, AdminError> {
    let csrf = match &access {
        Access::Session { csrf, .. } => Some(csrf.as_str()),
        Access::Open | Access::Bearer => None,
    };
    let mut body = String::from(
        "<h1>hookrelay</h1><h2>Sinks</h2><table><thead><tr>\
        <th>Sink</th><th>Kind</th><th>Pending</th><th>Oldest pending (s)</th>\
        <th>Dead letters</th><th>Failing since</th><th>Last error</th></tr></thead><tbody>",
    );
    for s in sink_views(&state) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            escape(s.kind),
            s.pending,
            s.oldest_pending_seconds,
            s.dead_letters,
            escape(s.failing_since.as_deref().unwrap_or("-")),
            escape(s.last_error.as_deref().unwrap_or("-")),
        );
    }
    body.push_str(
        "</tbody></table><h2>Newest events</h2><table><thead><tr>\
        <th>Received</th><th>Provider/family/kind</th><th>App</th><th>Resource</th>\
        <th>Id</th><th>Deliveries</th></tr></thead><tbody>",
    );
    let query = EventsQuery {
        limit: Some("20".into()),
        ..EventsQuery::default()
    };
    for e in list_events(&state, &query).await?.events {
        let deliveries: Vec<String> = e
            .deliveries
            .iter()
            .map(|(sink, st)| format!("{sink}: {st}"))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}/{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.received_at),
            escape(&e.provider),
            escape(&e.family),
            escape(&e.kind),
            escape(&e.app_id),
            escape(e.resource.as_deref().unwrap_or("-")),
            escape(&e.id),
            escape(&deliveries.join(", ")),
        );
    }
    body.push_str("</tbody></table>");
    if let Some(token) = csrf {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/ui/sign-out\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(token)
        );
    }
    Ok(html(StatusCode::OK, page("Overview", csrf, &body)))
}
