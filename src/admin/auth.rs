//! Who may use the admin API: a request with `Authorization: Bearer
//! <admin.token>`, or a browser holding a session cookie from the UI's
//! sign-in. Without a configured token (a loopback-only listener) anyone
//! who can connect may.
//!
//! State-changing requests are refused when the browser says they come
//! from another site (`Sec-Fetch-Site`, or an `Origin` that is not this
//! host), and, when authenticated by the cookie, unless they carry the
//! session's CSRF token in `X-CSRF-Token` or, for a plain HTML form, in
//! its `csrf` field. A bearer token is never sent by a
//! browser on its own, so scripts using one need no CSRF token.

use super::AdminState;
use crate::error::AdminError;
use crate::secret::SecretString;
use axum::body::Body;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "hookrelay_session";
/// The header carrying a cookie session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a UI session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// How a request was let in.
#[derive(Debug, Clone)]
pub enum Access {
    /// No token configured (loopback-only listener).
    Open,
    Bearer,
    /// The UI's session, with its CSRF token.
    Session {
        id: String,
        csrf: String,
    },
}

/// Sessions of the UI, in memory: a restart signs everyone out.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    /// A new session; returns (session id, CSRF token).
    pub fn create(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        if let Ok(mut s) = self.by_id.lock() {
            let now = Instant::now();
            s.retain(|_, (_, expires)| *expires > now);
            s.insert(id.clone(), (csrf.clone(), now + SESSION_TTL));
        }
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let s = self.by_id.lock().ok()?;
        s.get(id)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(csrf, _)| csrf.clone())
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut s) = self.by_id.lock() {
            s.remove(id);
        }
    }
}

/// 244 random bits (two v4 UUIDs from the OS's generator), as hex.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `given` is the token, in time independent of where they differ.
pub fn token_matches(token: &SecretString, given: &str) -> bool {
    let a = Sha256::digest(token.expose().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

/// The session id in the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Who the request is, or Unauthorized.
pub fn authenticate(state: &AdminState, headers: &HeaderMap) -> Result<Access, AdminError> {
    let config = state.app.config();
    let Some(token) = &config.admin.token else {
        // No token is allowed only on a loopback listener. Refuse any Host
        // but a loopback one, or a page on `rebind.example` resolving to
        // 127.0.0.1 (DNS rebinding) would be same-origin with this API.
        return if loopback_host(headers) {
            Ok(Access::Open)
        } else {
            Err(AdminError::Unauthorized)
        };
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AdminError::Unauthorized)?;
        return if token_matches(token, given.trim()) {
            Ok(Access::Bearer)
        } else {
            Err(AdminError::Unauthorized)
        };
    }
    let id = session_cookie(headers).ok_or(AdminError::Unauthorized)?;
    let csrf = state.sessions.csrf(&id).ok_or(AdminError::Unauthorized)?;
    Ok(Access::Session { id, csrf })
}

/// Whether the request names a loopback host (`localhost`, `127.x.y.z`,
/// `[::1]`, with or without a port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the browser says the request comes from another site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        return match (origin_host, host) {
            (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
            _ => true, // `Origin: null` and the like
        };
    }
    false
}

/// Whether a cookie session's state-changing request carries its CSRF token.
pub fn csrf_ok(access: &Access, headers: &HeaderMap) -> bool {
    match access {
        Access::Session { csrf, .. } => headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(csrf.as_bytes()))),
        Access::Open | Access::Bearer => true,
    }
}

/// The largest form body read for its `csrf` field.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Whether a urlencoded form body carries the session's CSRF token in its
/// `csrf` field (an HTML form cannot set a header); returns the request
/// with its body put back.
async fn csrf_in_form(access: &Access, req: Request) -> (bool, Request) {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return (false, req);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return (false, Request::from_parts(parts, Body::empty()));
    };
    let mut given = HeaderMap::new();
    let probe = Request::builder()
        .method(Method::POST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(bytes.clone()));
    if let Ok(probe) = probe
        && let Ok(Form(field)) = Form::<CsrfField>::from_request(probe, &()).await
        && let Ok(v) = HeaderValue::from_str(&field.csrf)
    {
        given.insert(CSRF_HEADER, v);
    }
    let ok = csrf_ok(access, &given);
    (ok, Request::from_parts(parts, Body::from(bytes)))
}

/// The middleware in front of every `/api/` and `/ui/` route but sign-in.
pub async fn require(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let access = match authenticate(&state, req.headers()) {
        Ok(a) => a,
        Err(e) if req.uri().path().starts_with("/ui/") => {
            return super::ui::sign_in_page(&state, e.status(), None).into_response();
        }
        Err(e) => return e.into_response(),
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if cross_site(req.headers()) {
            return AdminError::CsrfRefused.into_response();
        }
        if !csrf_ok(&access, req.headers()) {
            let (ok, rebuilt) = csrf_in_form(&access, req).await;
            if !ok {
                return AdminError::CsrfRefused.into_response();
            }
            req = rebuilt;
        }
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            loopback_host(&m)
        };
        for ok in [
            "127.0.0.1:9090",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9090",
            "127.1.2.3",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "rebind.example:9090",
            "10.0.0.1",
            "localhost.evil",
            "[::2]:1",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_same_origin_or_direct_requests_are_same_site() {
        assert!(!cross_site(&headers(&[])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        let same = [
            ("origin", "http://127.0.0.1:9090"),
            ("host", "127.0.0.1:9090"),
        ];
        assert!(!cross_site(&headers(&same)));
        let other = [
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:9090"),
        ];
        assert!(cross_site(&headers(&other)));
        assert!(cross_site(&headers(&[("origin", "null"), ("host", "h")])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; hookrelay_session=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn tokens_compare_by_value() {
        let t = SecretString::new("s3cret");
        assert!(token_matches(&t, "s3cret"));
        assert!(!token_matches(&t, "s3cre"));
        assert!(!token_matches(&t, ""));
    }

    #[test]
    fn sessions_are_random_and_can_be_removed() {
        let s = Sessions::default();
        let (id, csrf) = s.create();
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.csrf(&id), Some(csrf));
        s.remove(&id);
        assert_eq!(s.csrf(&id), None);
    }
}
