//! Request errors and their HTTP form — the only place that names a status code.
//!
//! 4xx answers carry a stable machine code (`{"ok":false,"error":"<code>"}`)
//! and nothing internal; a 503 tells the vendor to retry. Each rejection is
//! logged once, at warn, with its code and cause, never with the body or a
//! secret.

use crate::decode::DecodeError;
use crate::spool::SpoolError;
use crate::verify::VerifyError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed body: {0}")]
    Decode(#[from] DecodeError),
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    #[error("this signature was already used with a different payload")]
    ReplayedSignature,
    #[error("the body exceeds server.max_body_bytes")]
    PayloadTooLarge,
    #[error("the body could not be read: {0}")]
    BodyRead(String),
    #[error("could not store the event: {0}")]
    Spool(#[from] SpoolError),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("too many requests in flight")]
    Overloaded,
    #[error("the source address is not in server.allowed_ips")]
    Forbidden,
    #[error("request timed out")]
    Timeout,
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Decode(_) | IngestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            IngestError::Verify(_) | IngestError::ReplayedSignature => StatusCode::UNAUTHORIZED,
            IngestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Spool(_) | IngestError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The stable code operators and scripts match on.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Decode(_) | IngestError::BodyRead(_) => "malformed_body",
            IngestError::Verify(v) => v.code(),
            IngestError::ReplayedSignature => "replayed_signature",
            IngestError::PayloadTooLarge => "payload_too_large",
            IngestError::Spool(_) => "spool_unavailable",
            IngestError::NotFound => "not_found",
            IngestError::MethodNotAllowed => "method_not_allowed",
            IngestError::Overloaded => "overloaded",
            IngestError::Timeout => "timeout",
            IngestError::Forbidden => "forbidden",
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        match &self {
            IngestError::NotFound | IngestError::MethodNotAllowed => {
                tracing::debug!(error.code = code, "rejected")
            }
            IngestError::Spool(e) => {
                tracing::error!(error.code = code, error.message = %e, "could not store the callback")
            }
            other => tracing::warn!(error.code = code, error.message = %other, "rejected"),
        }
        let mut response = (
            status,
            Json(serde_json::json!({ "ok": false, "error": code })),
        )
            .into_response();
        response.extensions_mut().insert(RejectionCode(code));
        response
    }
}

/// Put on error responses so middleware (metrics) can read the code.
#[derive(Debug, Clone, Copy)]
pub struct RejectionCode(pub &'static str);

/// Errors of the admin API and UI (the admin listener's `/api/` and `/ui/`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no valid token or session")]
    Unauthorized,
    #[error("a state-changing request without a valid CSRF token, or from another site")]
    CsrfRefused,
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("the store cannot be read: {0}")]
    Store(#[from] SpoolError),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::CsrfRefused => StatusCode::FORBIDDEN,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code scripts match on.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::CsrfRefused => "csrf_refused",
            AdminError::NotFound => "not_found",
            AdminError::BadRequest(code) => code,
            AdminError::Store(_) => "store_unavailable",
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            AdminError::Store(e) => {
                tracing::error!(error.code = self.code(), error.message = %e, "admin request failed")
            }
            other => tracing::debug!(error.code = other.code(), "admin request refused"),
        }
        (
            self.status(),
            Json(serde_json::json!({ "ok": false, "error": self.code() })),
        )
            .into_response()
    }
}
