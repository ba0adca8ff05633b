//! The request pipeline, one for every family: authenticate → dedup →
//! parse → store → acknowledge.
//!
//! What differs between families is in their [`FamilyDef`]
//! (`crate::providers::FamilyDef`): how a request proves itself (per
//! vendor, [`crate::providers::Authenticate`]) and how its payload parses.
//! Sinks are never awaited here: the answer depends only on the store's
//! commit, so the vendor hears back in milliseconds whatever the sinks do.

use crate::clock;
use crate::config::Config;
use crate::decode::DecodeError;
use crate::error::IngestError;
use crate::event::{self, Envelope};
use crate::metrics::Metrics;
use crate::providers::{Authenticated, Family, Parsed};
use crate::spool::{self, Appended, Body, NewEvent};
use crate::store::Store;
use crate::verify::Verified;
use axum::Json;
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

/// Longest `kind` accepted, in characters. The envelope keeps the vendor's
/// text (an event type we do not know yet is still delivered); a longer one
/// is no event type but an attack on whatever indexes or prints kinds.
pub const MAX_KIND_CHARS: usize = 128;

/// What the pipeline works with: the config in force, the store, metrics.
#[derive(Clone, Copy)]
pub struct Pipeline<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub metrics: &'a Metrics,
}

/// One callback of `family`, its body read in full.
pub async fn ingest(
    state: Pipeline<'_>,
    family: Family,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Ack>, IngestError> {
    let now = clock::now_ms();
    let verified =
        family
            .def()
            .auth
            .authenticate(state.config.auth_context(), headers, body, now)?;
    let provider = family.provider();
    let proof = verified.get();
    state
        .metrics
        .secret_match(provider.as_str(), &proof.app_id, verified.secret_position());
    if proof.probe {
        // The console's address check: answer 200, store nothing.
        return Ok(Ack::new(None, false));
    }
    let dedup_key = event::dedup_key(provider, &proof.app_id, &proof.payload, proof.volatile_keys);
    if let Some(answer) =
        answer_from_memory(state, family, &dedup_key, proof.replay_key.as_deref())?
    {
        return Ok(answer);
    }
    let parsed = parse(family, &proof.payload)?;
    let raw_only = state.store.renders_at_delivery();
    let new_event =
        verified.map(|proof| build_event(family, now, proof, parsed, dedup_key, raw_only));
    store(state, family, new_event).await
}

/// A repeat whose original is already committed is answered without
/// touching the spool (the common case for vendor retries).
fn answer_from_memory(
    state: Pipeline<'_>,
    family: Family,
    dedup_key: &str,
    sig_key: Option<&str>,
) -> Result<Option<Json<Ack>>, IngestError> {
    match state.store.recent(dedup_key, sig_key) {
        spool::Recent::Duplicate { id } => {
            tracing::Span::current().record("event_id", id.as_str());
            state.metrics.duplicate(family);
            Ok(Some(Ack::new(Some(id), true)))
        }
        spool::Recent::ReplayedSignature => Err(IngestError::ReplayedSignature),
        spool::Recent::Unknown => Ok(None),
    }
}

/// The family's typed event, refused as malformed when its kind is absurd.
fn parse(family: Family, payload: &Value) -> Result<Parsed, IngestError> {
    let parsed = family.parse(payload);
    if parsed.kind.chars().count() > MAX_KIND_CHARS {
        return Err(DecodeError::Malformed.into());
    }
    Ok(parsed)
}

fn build_event(
    family: Family,
    received_at_ms: i64,
    proof: Authenticated,
    parsed: Parsed,
    dedup_key: String,
    raw_only: bool,
) -> NewEvent {
    let Authenticated {
        app_id,
        mut payload,
        replay_key,
        credential_keys,
        ..
    } = proof;
    // A credential (a ZEGO signature is one while its timestamp is fresh)
    // never reaches the envelope: not sinks, logs nor dead letters.
    if let Value::Object(map) = &mut payload {
        for key in credential_keys {
            map.shift_remove(*key);
        }
    }
    let id = event::new_id();
    let body = if raw_only {
        // The local store keeps the payload and renders the envelope at delivery.
        Body::Raw(serde_json::to_string(&payload).unwrap_or_default())
    } else {
        Body::Envelope(render_envelope(
            family,
            &id,
            received_at_ms,
            &app_id,
            &parsed,
            &dedup_key,
            &payload,
        ))
    };
    NewEvent {
        id,
        provider: family.provider().as_str(),
        received_at_ms,
        dedup_key,
        sig_key: replay_key,
        resource: parsed.resource,
        family: family.as_str(),
        kind: parsed.kind,
        app_id,
        body,
    }
}

fn render_envelope(
    family: Family,
    id: &str,
    received_at_ms: i64,
    app_id: &str,
    parsed: &Parsed,
    dedup_key: &str,
    payload: &Value,
) -> String {
    let received_at = clock::rfc3339(received_at_ms);
    let envelope = Envelope {
        id,
        received_at: &received_at,
        provider: family.provider(),
        family,
        kind: &parsed.kind,
        app_id,
        event_time_ms: parsed.event_time_ms,
        dedup_key,
        event: &parsed.event,
        raw: payload,
    };
    // Serializing Values and plain strings cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

async fn store(
    state: Pipeline<'_>,
    family: Family,
    event: Verified<NewEvent>,
) -> Result<Json<Ack>, IngestError> {
    let span = tracing::Span::current();
    span.record("kind", event.get().kind.as_str());
    let kind = event.get().kind.clone();
    let outcome = state.store.append(event).await?;
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
