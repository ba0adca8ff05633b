//! The request pipeline: decode → verify → parse → store → acknowledge.
//!
//! Sinks are never awaited here: the answer depends only on the spool
//! commit, so the vendor hears back in milliseconds whatever the sinks do.

use crate::decode::{self, DecodeError};
use crate::error::IngestError;
use crate::event::{self, Envelope};
use crate::providers::{self, Family, Parsed, Provider, lenient};
use crate::server::AppState;
use crate::spool::{self, Appended, NewEvent};
use crate::verify::{self, VerifyError, zego::Casing};
use axum::Json;
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

/// The success answer.
#[derive(Debug, Serialize)]
pub struct Ack {
    pub ok: bool,
    pub id: Option<String>,
    pub duplicate: bool,
}

impl Ack {
    fn new(id: Option<String>, duplicate: bool) -> Json<Ack> {
        Json(Ack {
            ok: true,
            id,
            duplicate,
        })
    }
}

/// Any ZEGO family: signing fields live in the body.
pub async fn zego(state: &AppState, family: Family, body: Bytes) -> Result<Json<Ack>, IngestError> {
    let payload = decode::decode(&body)?.value;
    if !payload.is_object() {
        return Err(DecodeError::Malformed.into());
    }
    let casing = match family {
        Family::CloudPlayer => Casing::Pascal,
        _ => Casing::Lower,
    };
    let fields = verify::zego::signing_fields(&payload, casing)?;
    let config = state.config();
    let named_app = lenient::app_id(&payload);
    let app = config
        .find_app(Provider::Zego, named_app.as_deref())
        .ok_or(VerifyError::UnknownApp)?;
    let now = spool::now_ms();
    let verified = verify::zego::verify(
        payload,
        &fields,
        &app.secrets,
        now,
        config.server.timestamp_tolerance_secs,
    )?;
    state
        .metrics
        .secret_match("zego", &app.app_id, verified.secret_position());
    let sig_key = event::signature_key(&app.app_id, &fields.signature);
    let dedup_key = event::dedup_key(
        Provider::Zego,
        &app.app_id,
        verified.get(),
        &verify::zego::SIGNING_KEYS,
    );
    if let Some(answer) = answer_from_memory(state, family, &dedup_key, Some(&sig_key))? {
        return Ok(answer);
    }
    let parsed = parse(family, verified.get())?;
    let app_id = app.app_id.clone();
    let new_event = verified.map(|mut payload| {
        // The signature is a bearer credential while its timestamp is fresh:
        // the envelope (sinks, logs, dead letters) never carries it.
        if let Value::Object(map) = &mut payload {
            map.remove("signature");
            map.remove("Signature");
        }
        build_event(
            Provider::Zego,
            family,
            &app_id,
            now,
            payload,
            parsed,
            dedup_key,
            Some(sig_key),
        )
    });
    store(state, family, new_event).await
}

/// A repeat whose original is already committed is answered without
/// touching the spool (the common case for vendor retries).
fn answer_from_memory(
    state: &AppState,
    family: Family,
    dedup_key: &str,
    sig_key: Option<&str>,
) -> Result<Option<Json<Ack>>, IngestError> {
    match state.spool.recent(dedup_key, sig_key) {
        spool::Recent::Duplicate { id } => {
            tracing::Span::current().record("event_id", id.as_str());
            state.metrics.duplicate(family);
            Ok(Some(Ack::new(Some(id), true)))
        }
        spool::Recent::ReplayedSignature => Err(IngestError::ReplayedSignature),
        spool::Recent::Unknown => Ok(None),
    }
}

/// NetEase cloud play: signing headers cover the body's MD5.
pub async fn netease(
    state: &AppState,
    family: Family,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Json<Ack>, IngestError> {
    let signing = verify::netease::signing_headers(headers)?;
    let config = state.config();
    let app = config
        .find_app(Provider::Netease, signing.app_key.as_deref())
        .ok_or(VerifyError::UnknownApp)?;
    let now = spool::now_ms();
    let verified = verify::netease::verify(
        (),
        &body,
        &signing,
        &app.secrets,
        now,
        config.server.timestamp_tolerance_secs,
    )?;
    state
        .metrics
        .secret_match("netease", &app.app_id, verified.secret_position());
    let payload = match decode::decode(&body) {
        Ok(d) => d.value,
        // Authentic but not JSON (the vendor's own 505 example is one): keep the text.
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    if is_probe(&body, &payload) {
        // The console's address check: answer 200, store nothing.
        return Ok(Ack::new(None, false));
    }
    let dedup_key = event::dedup_key(Provider::Netease, &app.app_id, &payload, &[]);
    if let Some(answer) = answer_from_memory(state, family, &dedup_key, None)? {
        return Ok(answer);
    }
    let parsed = parse(family, &payload)?;
    let app_id = app.app_id.clone();
    let new_event = verified.map(|()| {
        build_event(
            Provider::Netease,
            family,
            &app_id,
            now,
            payload,
            parsed,
            dedup_key,
            None,
        )
    });
    store(state, family, new_event).await
}

fn is_probe(body: &[u8], payload: &Value) -> bool {
    body.trim_ascii().is_empty() || payload.as_object().is_some_and(|m| m.is_empty())
}

/// Longest `kind` accepted, in characters. The envelope keeps the vendor's
/// text (an event type we do not know yet is still delivered); a longer one
/// is no event type but an attack on whatever indexes or prints kinds.
pub const MAX_KIND_CHARS: usize = 128;

/// The family's typed event, refused as malformed when its kind is absurd.
fn parse(family: Family, payload: &Value) -> Result<Parsed, IngestError> {
    let parsed = providers::parse(family, payload);
    if parsed.kind.chars().count() > MAX_KIND_CHARS {
        return Err(DecodeError::Malformed.into());
    }
    Ok(parsed)
}

#[allow(clippy::too_many_arguments)]
fn build_event(
    provider: Provider,
    family: Family,
    app_id: &str,
    received_at_ms: i64,
    payload: Value,
    parsed: Parsed,
    dedup_key: String,
    sig_key: Option<String>,
) -> NewEvent {
    let id = event::new_id();
    let received_at = rfc3339(received_at_ms);
    let envelope = Envelope {
        id: &id,
        received_at: &received_at,
        provider,
        family,
        kind: &parsed.kind,
        app_id,
        event_time_ms: parsed.event_time_ms,
        dedup_key: &dedup_key,
        event: &parsed.event,
        raw: &payload,
    };
    // Serializing Values and plain strings cannot fail.
    let envelope = serde_json::to_string(&envelope).unwrap_or_default();
    NewEvent {
        id,
        received_at_ms,
        dedup_key,
        sig_key,
        resource: parsed.resource,
        family: family.as_str(),
        kind: parsed.kind,
        envelope,
    }
}

async fn store(
    state: &AppState,
    family: Family,
    event: verify::Verified<NewEvent>,
) -> Result<Json<Ack>, IngestError> {
    let span = tracing::Span::current();
    span.record("kind", event.get().kind.as_str());
    let kind = event.get().kind.clone();
    let outcome = state.spool.append(event).await?;
    match outcome {
        Appended::Stored { id } => {
            span.record("event_id", id.as_str());
            state.metrics.stored(family, &kind);
            Ok(Ack::new(Some(id), false))
        }
        Appended::Duplicate { id } => {
            span.record("event_id", id.as_str());
            state.metrics.duplicate(family);
            Ok(Ack::new(Some(id), true))
        }
        Appended::ReplayedSignature => Err(IngestError::ReplayedSignature),
    }
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
