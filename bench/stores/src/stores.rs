//! The candidate stores. Each takes a batch (everything the writer found
//! waiting) and makes it durable with one group commit before returning.

use crate::payload::Ev;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// What a store answered for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored(u64),
    Duplicate(u64),
    ReplayedSignature,
}

pub trait Store: Send {
    /// Stores the batch durably (one group commit); one outcome per event.
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>);
    /// Brings everything to its final place (SQLite: checkpoint; fjall:
    /// flush the memtables) and closes.
    fn close(self: Box<Self>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No store: the writer acks at once (what the harness itself costs).
    Harness,
    /// Raw group-committed file append: the bodies back to back, one
    /// write + one fdatasync per batch, no framing, no keys.
    RawAppend,
    /// (a) Append-only segment log with framing, CRC and in-memory keys.
    SegmentLog,
    /// (b) fjall: events + dedup keyspaces, one atomic batch, SyncData.
    Fjall,
    /// (c) SQLite with seq, received_at, raw only; keys in memory.
    SqliteSlim,
    /// (d) Today's SQLite schema and append SQL, 2.6 KB envelopes.
    SqliteToday,
}

impl Kind {
    pub fn all() -> [Kind; 6] {
        [
            Kind::Harness,
            Kind::RawAppend,
            Kind::SegmentLog,
            Kind::Fjall,
            Kind::SqliteSlim,
            Kind::SqliteToday,
        ]
    }

    pub fn key(self) -> &'static str {
        match self {
            Kind::Harness => "harness",
            Kind::RawAppend => "raw",
            Kind::SegmentLog => "a",
            Kind::Fjall => "b",
            Kind::SqliteSlim => "c",
            Kind::SqliteToday => "d",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Harness => "harness only (ack without storing)",
            Kind::RawAppend => "raw group-committed file append",
            Kind::SegmentLog => "(a) segment log",
            Kind::Fjall => "(b) fjall",
            Kind::SqliteSlim => "(c) SQLite raw body only",
            Kind::SqliteToday => "(d) SQLite today (V1 schema)",
        }
    }

    /// Today's store writes the envelope; the others the raw body.
    pub fn wants_envelope(self) -> bool {
        self == Kind::SqliteToday
    }

    pub fn open(self, dir: &Path) -> Box<dyn Store> {
        match self {
            Kind::Harness => Box::new(Harness { seq: 0 }),
            Kind::RawAppend => Box::new(RawAppend::open(dir)),
            Kind::SegmentLog => Box::new(SegmentLog::open(dir)),
            Kind::Fjall => Box::new(FjallStore::open(dir)),
            Kind::SqliteSlim => Box::new(SqliteSlim::open(dir)),
            Kind::SqliteToday => Box::new(SqliteToday::open(dir)),
        }
    }
}

/// Bytes of the record header every new store keeps with the body, so the
/// in-memory keys can be rebuilt at start-up: received_at_ms (8), dedup
/// key (16), signature key (16).
pub const HEADER: usize = 40;

fn push_payload(buf: &mut Vec<u8>, ev: &Ev) {
    buf.extend_from_slice(&ev.received_at_ms.to_le_bytes());
    buf.extend_from_slice(&ev.dedup.to_le_bytes());
    buf.extend_from_slice(&ev.sig.to_le_bytes());
    buf.extend_from_slice(&ev.body);
}

/// Dedup and signature-replay keys in memory, as the new stores keep them:
/// dedup key -> position (seq or file offset), signature key -> dedup key.
#[derive(Default)]
struct Keys {
    dedup: HashMap<u128, u64>,
    sigs: HashMap<u128, u128>,
}

impl Keys {
    /// The answer for a repeat or a replayed signature; `None`: store it.
    fn check(&mut self, ev: &Ev) -> Option<Outcome> {
        let mut sig_known = false;
        if let Some(&dedup) = self.sigs.get(&ev.sig) {
            if dedup != ev.dedup {
                return Some(Outcome::ReplayedSignature);
            }
            sig_known = true;
        }
        if let Some(&pos) = self.dedup.get(&ev.dedup) {
            if !sig_known {
                self.sigs.insert(ev.sig, ev.dedup);
            }
            return Some(Outcome::Duplicate(pos));
        }
        None
    }

    fn stored(&mut self, ev: &Ev, pos: u64) {
        self.dedup.insert(ev.dedup, pos);
        self.sigs.insert(ev.sig, ev.dedup);
    }
}

fn fsync_dir(dir: &Path) {
    File::open(dir).and_then(|d| d.sync_all()).expect("fsync dir");
}

fn create_file(path: &Path) -> File {
    let f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .expect("create file");
    fsync_dir(path.parent().expect("parent"));
    f
}

// ---------------------------------------------------------------- harness

struct Harness {
    seq: u64,
}

impl Store for Harness {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        for _ in batch {
            self.seq += 1;
            out.push(Outcome::Stored(self.seq));
        }
    }
    fn close(self: Box<Self>) {}
}

// ------------------------------------------------------------- raw append

struct RawAppend {
    file: File,
    buf: Vec<u8>,
    seq: u64,
}

impl RawAppend {
    fn open(dir: &Path) -> RawAppend {
        RawAppend {
            file: create_file(&dir.join("raw.log")),
            buf: Vec::with_capacity(2 << 20),
            seq: 0,
        }
    }
}

impl Store for RawAppend {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        self.buf.clear();
        for ev in batch {
            self.buf.extend_from_slice(&ev.body);
            self.seq += 1;
            out.push(Outcome::Stored(self.seq));
        }
        self.file.write_all(&self.buf).expect("write");
        self.file.sync_data().expect("fdatasync");
    }
    fn close(self: Box<Self>) {}
}

// ------------------------------------------------------------ (a) segments

/// Segments are rolled when the next batch would take one past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// `[len u32][crc32c u32][payload]` records in `seg-<n>.log` files; a
/// batch is one write and one fdatasync. Positions are `segment << 40 | offset`.
struct SegmentLog {
    dir: PathBuf,
    file: File,
    segment: u64,
    len: u64,
    buf: Vec<u8>,
    keys: Keys,
    seq: u64,
}

impl SegmentLog {
    fn open(dir: &Path) -> SegmentLog {
        SegmentLog {
            dir: dir.to_owned(),
            file: create_file(&dir.join(segment_name(0))),
            segment: 0,
            len: 0,
            buf: Vec::with_capacity(2 << 20),
            keys: Keys::default(),
            seq: 0,
        }
    }
}

fn segment_name(n: u64) -> String {
    format!("seg-{n:08}.log")
}

impl Store for SegmentLog {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        let most: u64 = batch
            .iter()
            .map(|e| (8 + HEADER + e.body.len()) as u64)
            .sum();
        if self.len > 0 && self.len + most > SEGMENT_BYTES {
            // The previous segment is complete and synced by its last batch.
            self.segment += 1;
            self.len = 0;
            self.file = create_file(&self.dir.join(segment_name(self.segment)));
        }
        self.buf.clear();
        for ev in batch {
            if let Some(o) = self.keys.check(ev) {
                out.push(o);
                continue;
            }
            let start = self.buf.len();
            let pos = self.segment << 40 | (self.len + start as u64);
            self.buf.extend_from_slice(&[0; 8]);
            push_payload(&mut self.buf, ev);
            let payload = &self.buf[start + 8..];
            let len = payload.len() as u32;
            let crc = crc32c::crc32c(payload);
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            self.seq += 1;
            self.keys.stored(ev, pos);
            out.push(Outcome::Stored(self.seq));
        }
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf).expect("write");
            self.file.sync_data().expect("fdatasync");
            self.len += self.buf.len() as u64;
        }
    }
    fn close(self: Box<Self>) {}
}

// ---------------------------------------------------------------- (b) fjall

/// Events keyed by big-endian seq, dedup keys (16 bytes, big-endian) ->
/// seq; both in one atomic write batch persisted with `SyncData` (fdatasync
/// of the journal) before it returns. Signature keys stay in memory like
/// the other new stores'.
struct FjallStore {
    db: fjall::Database,
    events: fjall::Keyspace,
    dedup: fjall::Keyspace,
    sigs: HashMap<u128, u128>,
    in_batch: HashMap<u128, u64>,
    buf: Vec<u8>,
    seq: u64,
}

impl FjallStore {
    fn open(dir: &Path) -> FjallStore {
        let db = fjall::Database::builder(dir.join("fjall"))
            .open()
            .expect("fjall open");
        let events = db
            .keyspace("events", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        let dedup = db
            .keyspace("dedup", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        FjallStore {
            db,
            events,
            dedup,
            sigs: HashMap::new(),
            in_batch: HashMap::new(),
            buf: Vec::with_capacity(4096),
            seq: 0,
        }
    }
}

impl Store for FjallStore {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        let mut wb = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        self.in_batch.clear();
        for ev in batch {
            let mut sig_known = false;
            if let Some(&dedup) = self.sigs.get(&ev.sig) {
                if dedup != ev.dedup {
                    out.push(Outcome::ReplayedSignature);
                    continue;
                }
                sig_known = true;
            }
            let key = ev.dedup.to_be_bytes();
            let existing = match self.in_batch.get(&ev.dedup) {
                Some(&seq) => Some(seq),
                None => self.dedup.get(key).expect("fjall get").map(|v| {
                    u64::from_be_bytes(v.as_ref().try_into().expect("8-byte seq"))
                }),
            };
            if let Some(seq) = existing {
                if !sig_known {
                    self.sigs.insert(ev.sig, ev.dedup);
                }
                out.push(Outcome::Duplicate(seq));
                continue;
            }
            self.seq += 1;
            self.buf.clear();
            push_payload(&mut self.buf, ev);
            wb.insert(&self.events, self.seq.to_be_bytes(), self.buf.as_slice());
            wb.insert(&self.dedup, key, self.seq.to_be_bytes());
            self.in_batch.insert(ev.dedup, self.seq);
            self.sigs.insert(ev.sig, ev.dedup);
            out.push(Outcome::Stored(self.seq));
        }
        wb.commit().expect("fjall commit");
    }

    fn close(self: Box<Self>) {
        // Every event ends up in a table, as it would in a long run.
        self.events.rotate_memtable_and_wait().expect("flush events");
        self.dedup.rotate_memtable_and_wait().expect("flush dedup");
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .expect("persist");
    }
}

// ------------------------------------------------------- SQLite (c) and (d)

/// The connection settings of src/spool/mod.rs `open_connection` plus the
/// writer's (`Spool::open`): WAL, synchronous=FULL, 16 MB cache,
/// auto-checkpoint every 256 pages.
fn sqlite_writer(path: &Path) -> Connection {
    let conn = sqlite_connection(path);
    conn.pragma_update(None, "cache_size", -16_000).unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 256).unwrap();
    conn
}

fn sqlite_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert!(mode.eq_ignore_ascii_case("wal"));
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .unwrap();
    conn.pragma_update(None, "cache_size", -2_000).unwrap();
    conn
}

/// hookrelay's background checkpointer: PASSIVE every 200 ms on its own
/// connection (src/spool/maintenance.rs).
struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Checkpointer {
        let conn = sqlite_connection(path);
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_millis(200))
            {
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        });
        Checkpointer { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn checkpoint_at_close(conn: &Connection) {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// (c): `seq INTEGER PRIMARY KEY, received_at_ms, raw` and nothing else;
/// raw is the 40-byte key header + body, keys live in memory.
struct SqliteSlim {
    conn: Connection,
    checkpointer: Checkpointer,
    keys: Keys,
    buf: Vec<u8>,
    seq: u64,
}

impl SqliteSlim {
    fn open(dir: &Path) -> SqliteSlim {
        let path = dir.join("slim.sqlite3");
        let conn = sqlite_writer(&path);
        conn.execute_batch(
            "CREATE TABLE events (
                seq            INTEGER PRIMARY KEY,
                received_at_ms INTEGER NOT NULL,
                raw            BLOB    NOT NULL
            );",
        )
        .unwrap();
        let checkpointer = Checkpointer::start(&path);
        SqliteSlim {
            conn,
            checkpointer,
            keys: Keys::default(),
            buf: Vec::with_capacity(4096),
            seq: 0,
        }
    }
}

impl Store for SqliteSlim {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (seq, received_at_ms, raw) VALUES (?1, ?2, ?3)",
                )
                .unwrap();
            for ev in batch {
                if let Some(o) = self.keys.check(ev) {
                    out.push(o);
                    continue;
                }
                self.seq += 1;
                self.buf.clear();
                push_payload(&mut self.buf, ev);
                insert
                    .execute(params![self.seq as i64, ev.received_at_ms, self.buf])
                    .unwrap();
                self.keys.stored(ev, self.seq);
                out.push(Outcome::Stored(self.seq));
            }
        }
        tx.commit().unwrap();
    }

    fn close(self: Box<Self>) {
        self.checkpointer.stop();
        checkpoint_at_close(&self.conn);
    }
}

/// The V1 schema of src/spool/schema.rs, verbatim.
const V1: &str = "
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    received_at_ms INTEGER NOT NULL,
    dedup_key      TEXT    NOT NULL,
    sig_key        TEXT,
    resource       TEXT,
    family         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    envelope       TEXT    NOT NULL
);
CREATE INDEX events_dedup_key ON events (dedup_key);
CREATE INDEX events_sig_key ON events (sig_key) WHERE sig_key IS NOT NULL;
CREATE TABLE signatures (
    sig_key    TEXT    PRIMARY KEY,
    dedup_key  TEXT    NOT NULL,
    seen_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE sinks (
    name   TEXT    PRIMARY KEY,
    kind   TEXT    NOT NULL,
    cursor INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    failures           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE attempts (
    sink        TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT    NOT NULL,
    PRIMARY KEY (sink, event_id)
) WITHOUT ROWID;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
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
    replay_requested_at_ms INTEGER,
    UNIQUE (sink, event_id)
);
CREATE INDEX dead_letters_replay ON dead_letters (sink, id)
    WHERE replay_requested_at_ms IS NOT NULL;
";

/// Dedup window of the default config (only bounds the lookups here).
const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// (d): today's store. Keys are 32-hex text, the id a UUIDv7 string, the
/// envelope ~2.6 KB of text; per event the dedup and signature lookups and
/// inserts of writer.rs `append_one`; after the commit the keys go to the
/// memory of recent keys (recent.rs: two hash maps keyed by u128).
struct SqliteToday {
    conn: Connection,
    checkpointer: Checkpointer,
    recent: Keys,
    stored: Vec<usize>,
}

impl SqliteToday {
    fn open(dir: &Path) -> SqliteToday {
        let path = dir.join("spool.sqlite3");
        let mut conn = sqlite_writer(&path);
        let tx = conn.transaction().unwrap();
        tx.execute_batch(V1).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute(
            "INSERT INTO sinks (name, kind, cursor, active) VALUES ('file', 'file', 0, 1)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        let checkpointer = Checkpointer::start(&path);
        SqliteToday {
            conn,
            checkpointer,
            recent: Keys::default(),
            stored: Vec::new(),
        }
    }
}

impl Store for SqliteToday {
    fn commit(&mut self, batch: &[Ev], out: &mut Vec<Outcome>) {
        let now = crate::payload::now_ms();
        let start = now - WINDOW_MS;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        self.stored.clear();
        for (i, ev) in batch.iter().enumerate() {
            let o = append_one(&tx, ev, now, start).unwrap();
            if let Outcome::Stored(_) = o {
                self.stored.push(i);
            }
            out.push(o);
        }
        tx.commit().unwrap();
        for &i in &self.stored {
            let ev = &batch[i];
            self.recent.stored(ev, ev.received_at_ms as u64);
        }
    }

    fn close(self: Box<Self>) {
        self.checkpointer.stop();
        checkpoint_at_close(&self.conn);
    }
}

/// writer.rs `append_one`, the same statements in the same order.
fn append_one(
    tx: &rusqlite::Transaction<'_>,
    ev: &Ev,
    now: i64,
    window_start: i64,
) -> rusqlite::Result<Outcome> {
    let dedup_key = &ev.dedup_hex;
    let sig = &ev.sig_hex;
    let mut sig_known = false;
    let first_use: Option<String> = tx
        .prepare_cached(
            "SELECT dedup_key FROM events WHERE sig_key = ?1 AND received_at_ms >= ?2 LIMIT 1",
        )?
        .query_row(params![sig, window_start], |r| r.get(0))
        .optional()?;
    let used_by = match first_use {
        Some(k) => Some(k),
        None => tx
            .prepare_cached(
                "SELECT dedup_key FROM signatures WHERE sig_key = ?1 AND seen_at_ms >= ?2",
            )?
            .query_row(params![sig, window_start], |r| r.get(0))
            .optional()?,
    };
    if let Some(key) = used_by {
        if key != *dedup_key {
            return Ok(Outcome::ReplayedSignature);
        }
        sig_known = true;
    }
    let existing: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM events WHERE dedup_key = ?1 AND received_at_ms >= ?2
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![dedup_key, window_start], |r| r.get(0))
        .optional()?;
    if let Some(_id) = existing {
        if !sig_known {
            tx.prepare_cached(
                "INSERT INTO signatures (sig_key, dedup_key, seen_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sig_key) DO NOTHING",
            )?
            .execute(params![sig, dedup_key, now])?;
        }
        return Ok(Outcome::Duplicate(0));
    }
    let envelope = std::str::from_utf8(&ev.body).expect("utf-8 envelope");
    tx.prepare_cached(
        "INSERT INTO events (id, received_at_ms, dedup_key, sig_key, resource, family, kind, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ev.id,
        ev.received_at_ms,
        dedup_key,
        Some(sig),
        Some(&ev.resource),
        "stream",
        "stream_create",
        envelope
    ])?;
    Ok(Outcome::Stored(tx.last_insert_rowid() as u64))
}
