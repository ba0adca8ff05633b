//! The operator's pages, rendered on the server: the sign-in form, the
//! page layout (nav bar, stylesheet, script) and the response headers every
//! page carries. The inspector's pages are in [`super::pages`].
//!
//! HTML is built with `format!` and [`escape`]: every value that came from
//! a callback or the store goes through `escape`, so attacker text in an
//! event is shown, never run.
//!
//! Pages that change state carry the session's CSRF token in a
//! `<meta name="csrf-token">` tag and in their forms' hidden `csrf` field;
//! scripts send it back as `X-CSRF-Token`.

use super::AdminState;
use super::auth::{self, Access, COOKIE, CSRF_HEADER, SESSION_TTL};
use crate::error::AdminError;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

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
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{meta}\
         <link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
         <script src=\"/ui/assets/ui.js\" defer></script>\
         <title>{} · hookrelay</title></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// The pages in the nav bar: (path, label).
const NAV: [(&str, &str); 3] = [
    ("/ui/", "Events"),
    ("/ui/sinks", "Sinks"),
    ("/ui/live", "Live now"),
];

/// The session's CSRF token, when the request came with the cookie.
pub fn csrf_of(access: &Access) -> Option<&str> {
    match access {
        Access::Session { csrf, .. } => Some(csrf.as_str()),
        Access::Open | Access::Bearer => None,
    }
}

/// A signed-in page: the nav bar (`current` marked), then `main`.
pub fn layout(title: &str, access: &Access, current: &str, main: &str) -> Response {
    let csrf = csrf_of(access);
    let mut nav = String::new();
    for (path, label) in NAV {
        let here = if path == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        nav.push_str(&format!("<li><a href=\"{path}\"{here}>{label}</a></li>"));
    }
    let sign_out = csrf
        .map(|t| {
            format!(
                "<form method=\"post\" action=\"/ui/sign-out\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                escape(t)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<header><span class=\"brand\">hookrelay</span>\
         <nav aria-label=\"Main\"><ul>{nav}</ul></nav>{sign_out}</header>\
         <main id=\"main\">{main}</main>"
    );
    html(StatusCode::OK, page(title, csrf, &body))
}

/// `GET /ui/assets/{name}`: the stylesheet and the script, compiled in.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "ui.css" => (include_str!("assets/ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (
            include_str!("assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Headers every admin page carries: not cached, not framed.
pub fn html(status: StatusCode, text: String) -> Response {
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
        "<main id=\"main\"><h1>hookrelay</h1>{error}\
         <form method=\"post\" action=\"/ui/sign-in\">\
         <label for=\"token\">Admin token</label> \
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus> \
         <button type=\"submit\">Sign in</button></form></main>"
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
