//! Helpers for the spool's unit tests: events, signed as the server signs
//! them, and spools in a temporary directory.

use super::{NewEvent, Spool, SpoolOptions, now_ms, open_connection, schema};
use crate::secret::SecretString;
use crate::verify::{Verified, zego};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "spool-unit-test";

/// `event` after real ZEGO signature verification, as ingest hands it over.
pub fn verified(event: NewEvent) -> Verified<NewEvent> {
    let ts = (now_ms() / 1000).to_string();
    let nonce = fastrand::u64(..).to_string();
    let fields = zego::SigningFields {
        signature: zego::sign(SECRET, &ts, &nonce),
        timestamp: ts,
        nonce,
    };
    zego::verify(event, &fields, &[SecretString::new(SECRET)], now_ms(), 300).expect("signed")
}

/// Event number `n`: dedup key `n`, received now, a small envelope.
pub fn event(n: u64) -> NewEvent {
    let id = uuid::Uuid::now_v7().to_string();
    NewEvent {
        provider: "zego",
        body: super::Body::Envelope(format!("{{\"id\":\"{id}\",\"n\":{n}}}")),
        app_id: "1234567890".into(),
        id,
        received_at_ms: now_ms(),
        dedup_key: format!("{n:032x}"),
        sig_key: None,
        resource: Some(format!("r{n}")),
        family: "stream",
        kind: "stream_create".into(),
    }
}

/// `event(n)` as ZEGO sends it, under signature key `sig`.
pub fn signed_event(n: u64, sig: u64) -> NewEvent {
    NewEvent {
        sig_key: Some(format!("{sig:032x}")),
        ..event(n)
    }
}

/// Windows of an hour, no retention, no size limit.
pub fn options() -> SpoolOptions {
    SpoolOptions {
        dedup_window: Duration::from_secs(3600),
        signature_window: Duration::from_secs(3600),
        retention: Duration::ZERO,
        max_size_bytes: 0,
        ..SpoolOptions::default()
    }
}

pub fn sinks(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), "file".to_owned()))
        .collect()
}

/// A spool in `dir` with these sinks.
pub fn open(dir: &Path, options: SpoolOptions, sink_names: &[&str]) -> Spool {
    Spool::open(dir, options, &sinks(sink_names)).expect("spool opens")
}

/// A write connection to a fresh, migrated spool file in `dir`, with no
/// writer thread: for tests that drive the writer or the SQL directly.
pub fn migrated(dir: &Path) -> Connection {
    let mut conn = open_connection(&dir.join(super::FILE_NAME), true).expect("opens");
    schema::migrate(&mut conn, &super::log::dir_of(dir)).expect("migrates");
    conn
}

/// Stores `event` and returns its id; panics unless it was newly stored.
pub async fn store(spool: &Spool, event: NewEvent) -> String {
    match spool.append(verified(event)).await.expect("appends") {
        super::Appended::Stored { id } => {
            spool.catalogued().await;
            id
        }
        other => panic!("expected Stored, got {other:?}"),
    }
}
