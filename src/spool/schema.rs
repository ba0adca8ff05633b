//! Tables, indexes and migrations of the spool's SQLite file.
//!
//! `PRAGMA user_version` holds the schema version; [`migrate`] brings an
//! older file up to date inside one transaction and refuses a newer one
//! (written by a later hookrelay) rather than guessing at it.
//!
//! Version 1 kept every event's envelope in `events`. Version 2 keeps the
//! events themselves in the log (`log.rs`) and `events` becomes the
//! catalog: one small row per event saying where its record is. Taking over
//! a version 1 file ([`migrate_v1_events`]) copies every event into the log
//! under its own seq, so sink cursors, attempts, dead letters and dedup
//! keys all carry over unchanged.

use super::log::{BodyKind, Log, Record};
use rusqlite::{Connection, params};
use std::path::Path;

/// The version this build writes.
pub const VERSION: i64 = 2;

const V1: &str = "
CREATE TABLE events (
    -- AUTOINCREMENT: a seq is never reused after pruning, so sink cursors stay valid.
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    received_at_ms INTEGER NOT NULL,
    -- Dedup lookups scan this index; rows outside the window are ignored, then pruned.
    dedup_key      TEXT    NOT NULL,
    -- ZEGO only: hash of (app, timestamp, nonce, signature), to refuse a reused signature.
    sig_key        TEXT,
    -- The resource whose events a sink keeps in order (PlayerId, stream_id, taskId).
    resource       TEXT,
    family         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    -- The serialized envelope, exactly as sinks receive it.
    envelope       TEXT    NOT NULL
);
CREATE INDEX events_dedup_key ON events (dedup_key);
CREATE INDEX events_sig_key ON events (sig_key) WHERE sig_key IS NOT NULL;

-- Signatures of re-signed repeats (the first signature of an event is in events.sig_key).
CREATE TABLE signatures (
    sig_key    TEXT    PRIMARY KEY,
    dedup_key  TEXT    NOT NULL,
    seen_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Per-sink delivery progress: every event with seq <= cursor is done for that sink.
CREATE TABLE sinks (
    name   TEXT    PRIMARY KEY,
    kind   TEXT    NOT NULL,
    cursor INTEGER NOT NULL,
    -- 1 while the sink is in the running config; inactive sinks do not hold back pruning.
    active INTEGER NOT NULL DEFAULT 1,
    -- The sink-level backoff, persisted so a restart keeps the schedule.
    failures           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Attempts so far of events past a sink's cursor that failed (cleared as the cursor moves).
CREATE TABLE attempts (
    sink        TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT    NOT NULL,
    PRIMARY KEY (sink, event_id)
) WITHOUT ROWID;

-- Small facts about the spool itself (readiness probes write here).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;

-- Events a sink rejected or gave up on, kept until an operator replays them.
-- The envelope is copied so pruning the event never loses a dead letter.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sink        TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    resource    TEXT,
    envelope    TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT    NOT NULL,
    dead_at_ms  INTEGER NOT NULL,
    -- Set by `dead-letters replay`: the sink's worker delivers it again.
    replay_requested_at_ms INTEGER,
    UNIQUE (sink, event_id)
);
CREATE INDEX dead_letters_replay ON dead_letters (sink, id)
    WHERE replay_requested_at_ms IS NOT NULL;
";

/// The catalog: where each stored event's record is, and what operators
/// filter on. Rows are appended in seq order; the only other index is the
/// id (UUIDv7, time-ordered), so inserts land at the right edge of both.
const V2_EVENTS: &str = "
CREATE TABLE events (
    -- Assigned by the writer from meta.next_seq; never reused after pruning.
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    received_at_ms INTEGER NOT NULL,
    -- 128-bit keys, big-endian (hex of the blob = the envelope's dedup_key).
    dedup_key      BLOB    NOT NULL,
    sig_key        BLOB,
    resource       TEXT,
    family         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    app_id         TEXT    NOT NULL,
    -- The record: segment (its first seq), byte offset, framed length.
    segment        INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    len            INTEGER NOT NULL,
    -- Set when the record failed its checksum on a read: reported, never delivered.
    corrupt        TEXT
);
";

/// Creates or upgrades the schema; refuses files from a newer build. A
/// version 1 file's events are copied into the log in `log_dir`.
pub fn migrate(conn: &mut Connection, log_dir: &Path) -> Result<(), String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > VERSION {
        return Err(format!(
            "spool schema version {version} is newer than this hookrelay understands ({VERSION}); \
             run a newer hookrelay"
        ));
    }
    if version == VERSION {
        return Ok(());
    }
    // The migration's commit must be on disk before anything is written to
    // the new log: a power loss that undid it would remove that log at the
    // next start. FULL for this commit, NORMAL again after.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| e.to_string())?;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    if version < 1 {
        tx.execute_batch(V1).map_err(|e| e.to_string())?;
        tx.execute_batch("DROP TABLE events;")
            .map_err(|e| e.to_string())?;
        tx.execute_batch(V2_EVENTS).map_err(|e| e.to_string())?;
    } else {
        migrate_v1_events(&tx, log_dir)?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())
}

/// Copies a version 1 spool's events (envelopes) into a new log, each under
/// its own seq, and replaces the `events` table with the catalog. Runs in
/// the migration's transaction: if it stops half-way the file is still
/// version 1, and the next start removes the partial log and begins again.
fn migrate_v1_events(tx: &rusqlite::Transaction<'_>, log_dir: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("taking over the version 1 spool: {e}");
    if log_dir.exists() {
        std::fs::remove_dir_all(log_dir).map_err(|e| err(&e))?;
    }
    let next_seq: i64 = tx
        .query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                        COALESCE((SELECT MAX(seq) FROM events), 0)) + 1",
            [],
            |r| r.get(0),
        )
        .map_err(|e| err(&e))?;
    let first_seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MIN(seq), ?1) FROM events",
            [next_seq],
            |r| r.get(0),
        )
        .map_err(|e| err(&e))?;
    let (mut log, _) = Log::open(log_dir, None, first_seq).map_err(|e| err(&e))?;
    tx.execute_batch("ALTER TABLE events RENAME TO events_v1;")
        .map_err(|e| err(&e))?;
    tx.execute_batch(V2_EVENTS).map_err(|e| err(&e))?;
    let mut rows = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT seq, id, received_at_ms, dedup_key, sig_key, resource, family, kind,
                        COALESCE(json_extract(envelope, '$.app_id'), ''), envelope
                 FROM events_v1 ORDER BY seq",
            )
            .map_err(|e| err(&e))?;
        let mut query = stmt.query([]).map_err(|e| err(&e))?;
        let mut framed = Vec::new();
        let mut pending: Vec<(Record, u64, u32)> = Vec::new();
        let flush = |log: &mut Log,
                     framed: &mut Vec<u8>,
                     pending: &mut Vec<(Record, u64, u32)>,
                     rows: &mut Vec<(Record, i64, u64, u32)>|
         -> Result<(), String> {
            if framed.is_empty() {
                return Ok(());
            }
            log.roll_if_full(pending[0].0.seq).map_err(|e| err(&e))?;
            let segment = log.segment();
            let at = log.append(framed).map_err(|e| err(&e))?;
            for (r, off, len) in pending.drain(..) {
                rows.push((r, segment, at + off, len));
            }
            framed.clear();
            Ok(())
        };
        while let Some(row) = query.next().map_err(|e| err(&e))? {
            let id: String = row.get(1).map_err(|e| err(&e))?;
            let dedup: String = row.get(3).map_err(|e| err(&e))?;
            let sig: Option<String> = row.get(4).map_err(|e| err(&e))?;
            let app_id: rusqlite::types::Value = row.get(8).map_err(|e| err(&e))?;
            let app_id = match app_id {
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Integer(i) => i.to_string(),
                _ => String::new(),
            };
            let record = Record {
                seq: row.get(0).map_err(|e| err(&e))?,
                received_at_ms: row.get(2).map_err(|e| err(&e))?,
                id: uuid::Uuid::parse_str(&id).unwrap_or_default(),
                dedup: super::keys::key128(&dedup),
                sig: sig.as_deref().map(super::keys::key128),
                resource: row.get(5).map_err(|e| err(&e))?,
                family: row.get(6).map_err(|e| err(&e))?,
                kind: row.get(7).map_err(|e| err(&e))?,
                app_id,
                body_kind: BodyKind::Envelope,
                body: row.get(9).map_err(|e| err(&e))?,
            };
            let off = framed.len() as u64;
            record.encode(&mut framed);
            let len = (framed.len() as u64 - off) as u32;
            pending.push((record, off, len));
            if framed.len() >= 4 * 1024 * 1024 {
                flush(&mut log, &mut framed, &mut pending, &mut rows)?;
            }
        }
        flush(&mut log, &mut framed, &mut pending, &mut rows)?;
    }
    for (r, segment, offset, len) in &rows {
        insert_catalog_row(tx, r, *segment, *offset, *len).map_err(|e| err(&e))?;
    }
    tx.execute_batch("DROP TABLE events_v1;")
        .map_err(|e| err(&e))?;
    set_log_marks(tx, next_seq, log.segment(), log.end()).map_err(|e| err(&e))?;
    Ok(())
}

/// Inserts the catalog row of `r`, stored at `offset` of `segment`.
pub(super) fn insert_catalog_row(
    tx: &rusqlite::Transaction<'_>,
    r: &Record,
    segment: i64,
    offset: u64,
    len: u32,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO events (seq, id, received_at_ms, dedup_key, sig_key, resource, family,
                             kind, app_id, segment, offset, len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        r.seq,
        r.id.to_string(),
        r.received_at_ms,
        &r.dedup.to_be_bytes()[..],
        r.sig.map(|s| s.to_be_bytes().to_vec()),
        r.resource,
        r.family,
        r.kind,
        r.app_id,
        segment,
        offset as i64,
        len
    ])?;
    Ok(())
}

/// Records the log's end (its newest segment and length) and the next seq:
/// what recovery trusts, and where seqs resume after every event was pruned.
pub(super) fn set_log_marks(
    tx: &rusqlite::Transaction<'_>,
    next_seq: i64,
    segment: i64,
    end: u64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    stmt.execute(params!["next_seq", next_seq])?;
    stmt.execute(params!["log_segment", segment])?;
    stmt.execute(params!["log_end", end as i64])?;
    Ok(())
}

/// The marks [`set_log_marks`] wrote: (next seq, segment, end).
pub(super) fn log_marks(conn: &Connection) -> rusqlite::Result<Option<(i64, i64, u64)>> {
    let get = |key: &str| -> rusqlite::Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    match (get("next_seq")?, get("log_segment")?, get("log_end")?) {
        (Some(n), Some(s), Some(e)) => Ok(Some((n, s, e as u64))),
        _ => Ok(None),
    }
}
