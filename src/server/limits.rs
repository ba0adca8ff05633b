//! What bounds a request before it is trusted: the bytes of bodies in
//! flight, the work done at once, and the request id a client may choose.
//!
//! The order matters. A body is read *before* a unit of work is taken, so a
//! client trickling its body one byte a second holds a share of
//! [`BodyBudget`] (bounded in bytes and, by `server.body_timeout_secs`, in
//! time) but never a unit of `server.concurrency_limit`: well-behaved senders
//! whose bodies have arrived are never queued behind slow ones.

use axum::http::{HeaderMap, HeaderValue, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The total bytes of request bodies being received at once
/// (`server.max_inflight_body_bytes`).
///
/// Each callback reserves its declared `Content-Length` (or the largest body
/// allowed, when it declares none) before a byte of it is read, and keeps the
/// reservation until its answer is sent. A reservation that does not fit is
/// refused at once (503 `overloaded`): memory held by bodies stays under the
/// budget whatever the clients do.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// A share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct BodyReservation {
    bytes: usize,
    used: Arc<AtomicUsize>,
}

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        BodyBudget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub fn reserve(&self, bytes: usize) -> Option<BodyReservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .ok()?;
        Some(BodyReservation {
            bytes,
            used: Arc::clone(&self.used),
        })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The body size a request declares, if it declares one that parses.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Longest client-chosen `X-Request-Id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `X-Request-Id` may be copied into logs and echoed
/// back: at most 64 characters of `[A-Za-z0-9._-]`. Anything else is
/// replaced by one we generate, so a client cannot write 300 KB (or a
/// terminal escape) into every log line of its request.
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_reservations_up_to_its_limit_and_frees_them_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none(), "60 + 41 > 100");
        let b = budget.reserve(40).expect("60 + 40 = 100 fits");
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(budget.reserve(60).is_some());
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(usize::MAX).is_none(), "no overflow");
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let ok = |s: &str| acceptable_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123_X.y"));
        assert!(ok(&"a".repeat(64)));
        assert!(!ok(&"a".repeat(65)));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok("semi;colon"));
        assert!(!acceptable_request_id(
            &HeaderValue::from_bytes(b"tab\there").unwrap()
        ));
    }

    #[test]
    fn a_declared_length_is_read_when_it_parses() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        assert_eq!(declared_length(&h), Some(1000));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("x"));
        assert_eq!(declared_length(&h), None);
    }
}
