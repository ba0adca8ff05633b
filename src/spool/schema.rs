//! Tables, indexes and migrations of the spool.
//!
//! `PRAGMA user_version` holds the schema version; [`migrate`] brings an
//! older file up to date inside one transaction and refuses a newer one
//! (written by a later hookrelay) rather than guessing at it.

use rusqlite::Connection;

/// The version this build writes.
pub const VERSION: i64 = 1;

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

/// Creates or upgrades the schema; refuses files from a newer build.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
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
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    if version < 1 {
        tx.execute_batch(V1).map_err(|e| e.to_string())?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}
