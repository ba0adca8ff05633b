//! The spool: the durable store every acknowledged event passes through.
//!
//! # Design
//! Two parts in `spool.dir`:
//! - **the log** (`log/*.seg`, see `log.rs`): every event's record written
//!   once, appended, `fdatasync`ed per group commit. This is what makes an
//!   acknowledged event durable.
//! - **the SQLite file** (`spool.sqlite3`, WAL, `synchronous=NORMAL`): the
//!   catalog (one small row per event: where its record is, what operators
//!   filter on), sink cursors, backoff, attempts and dead letters. It is
//!   never the only copy of an event: after a power loss it may miss its
//!   last commits, and [`Spool::open`] puts the log's newer records back
//!   (`Log::open` recovery). Cursors it loses mean a re-delivery, never a skip.
//!
//! All writes go through one writer thread. Requests hand it an `Append`
//! and wait on a oneshot; the writer takes everything waiting (up to
//! `MAX_BATCH`) as one batch: it decides each event against the in-memory
//! key index (`keys.rs`), writes the new records with one write and one
//! `fdatasync` — group commit — and answers the appends; then it inserts
//! their catalog rows together with the batch's ledger commands in one
//! transaction before it takes the next batch. Delivery is told of events
//! once their rows are committed; [`Spool::catalogued`] lets a reader wait
//! for that. The envelope is rendered from the stored payload at delivery
//! (`crate::event::render`), so each event's payload is on disk once.
//!
//! # Layout
//! - `mod.rs`: this doc; the [`Spool`] handle — opening and recovery, and
//!   thin methods that send commands to the writer or open readers.
//! - `log.rs`: segment files, record framing (length, CRC32C), recovery.
//! - `keys.rs`: the dedup and signature index over their windows.
//! - `writer.rs`: the writer thread — deciding, appending, committing,
//!   answering; [`NewEvent`], [`Appended`], `Windows`.
//! - `ledger.rs`: delivery bookkeeping run as writer transactions.
//! - `reader.rs`: [`Reader`], a read connection and the log; [`StoredEvent`].
//! - `maintenance.rs`: pruning rows and segments, the checkpointer thread.
//! - `recent.rs`: memory of recently committed keys, answering repeats
//!   without a trip through the writer.
//! - `schema.rs`: tables, migrations, taking over a version 1 spool.
//! - `admin.rs`: operator access for the CLI and the admin API.
//!
//! # Invariants
//! - A reply `Stored`/`Duplicate` is sent only after the record is synced.
//!   If the write or the sync fails the batch's records are cut from the
//!   log and every request in it gets `SpoolError` (503). If the catalog
//!   commit after it fails, the rows wait and go with the next commit (and
//!   a restart puts them back from the log).
//! - Seqs are monotonic and never reused (`meta.next_seq`); each sink's
//!   `cursor` says every event with `seq <= cursor` is done for that sink.
//! - A record that fails its checksum is reported (log line, metric
//!   `hookrelay_store_corrupt_records_total`, `events show`) and never
//!   delivered; a torn write at the log's end was never acknowledged and
//!   is cut at open.
//!
//! # What a crash can lose
//! Nothing that was acknowledged. Requests in a batch that had not synced
//! got no answer (or a 503), so the vendor retries them.

pub mod admin;
mod keys;
mod ledger;
pub mod log;
mod maintenance;
mod reader;
pub(crate) mod recent;
mod schema;
#[cfg(test)]
mod test_support;
mod writer;

pub use crate::clock::now_ms;
pub use ledger::{DeadLetter, FailedAttempt};
pub use reader::{Reader, StoredEvent};
pub use recent::Recent;
pub use writer::{Appended, Body, NewEvent};

use crate::verify::Verified;
use maintenance::Checkpointer;
use recent::RecentKeys;
use rusqlite::{Connection, OpenFlags};

/// Puts the records recovery found past the catalog's end back into the
/// catalog (a power loss can drop the catalog's last commits; the log has
/// them). Returns the next seq.
fn recover_tail(
    conn: &mut Connection,
    recovered: &log::Recovered,
    mut next_seq: i64,
    log: &log::Log,
) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    for (record, at) in &recovered.tail {
        schema::insert_catalog_row(&tx, record, at.segment, at.offset, at.len)?;
        next_seq = next_seq.max(record.seq + 1);
    }
    if !recovered.tail.is_empty() {
        tracing::info!(
            records = recovered.tail.len(),
            "put records from the log's tail back into the catalog"
        );
    }
    schema::set_log_marks(&tx, next_seq, log.segment(), log.end())?;
    tx.commit()?;
    Ok(next_seq)
}

/// Rebuilds the key index from the catalog rows inside the windows.
fn load_keys(conn: &Connection, options: &SpoolOptions) -> rusqlite::Result<keys::Keys> {
    let windows = writer::Windows::at(now_ms(), options);
    let since = windows.dedup_start.min(windows.sig_start);
    let mut index = keys::Keys::default();
    let blob = |b: Option<Vec<u8>>| -> Option<u128> {
        let bytes: [u8; 16] = b?.as_slice().try_into().ok()?;
        Some(u128::from_be_bytes(bytes))
    };
    // Rows are in seq order; the oldest inside the window start the index.
    let first: Option<i64> = conn
        .query_row(
            "SELECT seq FROM events WHERE received_at_ms >= ?1 ORDER BY seq LIMIT 1",
            [since],
            |r| r.get(0),
        )
        .ok();
    if let Some(first) = first {
        let mut stmt = conn.prepare(
            "SELECT seq, received_at_ms, dedup_key, sig_key FROM events WHERE seq >= ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([first])?;
        while let Some(r) = rows.next()? {
            let dedup = blob(r.get(2)?).unwrap_or_default();
            index.insert(r.get(0)?, r.get(1)?, dedup, blob(r.get(3)?));
        }
    }
    let mut stmt = conn
        .prepare("SELECT sig_key, dedup_key, seen_at_ms FROM signatures WHERE seen_at_ms >= ?1")?;
    let mut rows = stmt.query([windows.sig_start])?;
    while let Some(r) = rows.next()? {
        let (sig, dedup): (String, String) = (r.get(0)?, r.get(1)?);
        index.insert_resigned(keys::key128(&sig), keys::key128(&dedup), r.get(2)?);
    }
    index.expire(windows.dedup_start, windows.sig_start);
    Ok(index)
}
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use writer::Command;
pub use writer::Windows;

/// The spool's file name inside `spool.dir`.
pub const FILE_NAME: &str = "spool.sqlite3";

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the spool at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("spool write failed: {0}")]
    Write(String),
    #[error("spool read failed: {0}")]
    Read(String),
    #[error("the spool is closed")]
    Closed,
    /// A stored record failed its checksum: reported, never delivered.
    #[error("{0}")]
    Corrupt(String),
}

/// Settings the spool needs.
#[derive(Debug, Clone, Default)]
pub struct SpoolOptions {
    pub dedup_window: Duration,
    /// How long a used ZEGO signature is remembered: at least as long as a
    /// timestamp can be fresh (2 × `server.timestamp_tolerance_secs`), so a
    /// signature cannot be forgotten while it could still verify.
    pub signature_window: Duration,
    pub retention: Duration,
    /// Largest size of the log and the SQLite file together, in bytes; 0 = no limit.
    pub max_size_bytes: u64,
    /// Counts records found corrupt (`hookrelay_store_corrupt_records_total`).
    pub corrupt_records: prometheus_client::metrics::counter::Counter,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    tx: std_mpsc::Sender<Command>,
    recent: Arc<RecentKeys>,
    dedup_window: Duration,
    signature_window: Duration,
    committed: watch::Receiver<i64>,
    path: PathBuf,
    corrupt_records: prometheus_client::metrics::counter::Counter,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
}

pub(crate) fn open_connection(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never block the writer. The synchronous level is set below.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode: cannot switch the spool to WAL mode (got {mode})"
        )));
    }
    // NORMAL: the log, not this file, is what makes an event durable; see the module doc.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Keep the WAL file from growing without bound after a burst.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Readers, the writer and the checkpointer touch the catalog's newest
    // pages (rows are appended in seq order), which the OS caches anyway:
    // 512 KiB each instead of SQLite's default 2 MB.
    conn.pragma_update(None, "cache_size", -512)?;
    Ok(conn)
}

/// Creates `dir` (and missing parents) readable by the owner only; a
/// directory that already exists keeps its mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates an empty database file with mode 0600 unless one exists. SQLite
/// gives the `-wal` and `-shm` files it creates the database file's mode,
/// so they are owner-only too (a umask change would not be thread safe).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and starts its writer thread.
    ///
    /// `sinks` are the configured sinks as (name, kind): a sink new to the
    /// spool starts at the newest event. A file that is not a SQLite
    /// database, or is damaged, stops start-up with the reason; it is never
    /// replaced.
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
        sinks: &[(String, String)],
    ) -> Result<Spool, SpoolError> {
        let path = dir.join(FILE_NAME);
        let open_err = |reason: String| SpoolError::Open {
            path: path.clone(),
            reason,
        };
        create_private_dir(dir).map_err(|e| open_err(format!("cannot create directory: {e}")))?;
        create_private_file(&path).map_err(|e| open_err(format!("cannot create the file: {e}")))?;
        let mut conn = open_connection(&path, true).map_err(|e| open_err(e.to_string()))?;
        // No integrity scan of the whole file at open: it read every page
        // (6 s at a million events) and the catalog is not the events' only
        // copy; a file that is not a database fails the pragmas above.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            maintenance::WAL_AUTOCHECKPOINT_PAGES,
        )
        .map_err(|e| open_err(e.to_string()))?;
        let log_dir = log::dir_of(dir);
        schema::migrate(&mut conn, &log_dir).map_err(open_err)?;
        let marks = schema::log_marks(&conn).map_err(|e| open_err(e.to_string()))?;
        let next_seq = marks.map_or(1, |(n, _, _)| n);
        let (log, recovered) = log::Log::open(&log_dir, marks.map(|(_, s, e)| (s, e)), next_seq)
            .map_err(|e| open_err(format!("event log: {e}")))?;
        // Space returns a segment at a time: under a small `max_size_mb`,
        // segments are an eighth of it.
        let log = match options.max_size_bytes {
            0 => log,
            max => log.with_segment_bytes((max / 8).clamp(64 * 1024, log::SEGMENT_BYTES)),
        };
        if recovered.cut_bytes > 0 {
            tracing::warn!(
                bytes = recovered.cut_bytes,
                "cut a torn write at the end of the event log (never acknowledged)"
            );
        }
        let next_seq = recover_tail(&mut conn, &recovered, next_seq, &log)
            .map_err(|e| open_err(format!("recovering the log's tail: {e}")))?;
        ledger::register_sinks(&mut conn, sinks, next_seq - 1)
            .map_err(|e| open_err(e.to_string()))?;
        let keys = load_keys(&conn, &options).map_err(|e| open_err(e.to_string()))?;

        let recent = Arc::new(RecentKeys::default());
        let dedup_window = options.dedup_window;
        let signature_window = options.signature_window;
        let corrupt_records = options.corrupt_records.clone();
        let writer = writer::Writer::new(conn, options, Arc::clone(&recent), log, keys, next_seq)
            .and_then(writer::spawn)
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        let checkpointer = Checkpointer::start(&path).map_err(open_err)?;
        Ok(Spool {
            inner: Arc::new(Inner {
                tx: writer.tx,
                recent,
                dedup_window,
                signature_window,
                committed: writer.committed,
                path,
                corrupt_records,
                writer: Mutex::new(Some(writer.thread)),
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Answers a repeat from memory when its original is known to be durably
    /// stored; [`Recent::Unknown`] means "append it and let the spool decide".
    pub fn recent(&self, dedup_key: &str, sig_key: Option<&str>) -> Recent {
        let now = now_ms();
        let windows = Windows {
            dedup_start: now - self.inner.dedup_window.as_millis() as i64,
            sig_start: now - self.inner.signature_window.as_millis() as i64,
        };
        self.inner.recent.lookup(dedup_key, sig_key, windows)
    }

    /// Stores a verified event; returns once its record is synced to the
    /// log (or refused). Its catalog row follows ([`Spool::catalogued`]).
    pub async fn append(&self, event: Verified<NewEvent>) -> Result<Appended, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(Box::new(event.into_inner()), reply))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Runs `f` in the writer's next transaction (group-committed with appends).
    async fn exec(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Exec(Box::new(f), reply))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    fn send(&self, command: Command) -> Result<(), SpoolError> {
        self.inner.tx.send(command).map_err(|_| SpoolError::Closed)
    }

    /// Returns once every event acknowledged before the call is in the
    /// catalog, so a read by id or a listing finds it. Appends are answered
    /// when their records are synced; their catalog rows follow within the
    /// same writer turn.
    /// Waits at most a second: a writer stuck on a failing disk must not
    /// hang `/metrics` or the admin API.
    pub async fn catalogued(&self) {
        let barrier = self.exec(|_| Ok(()));
        let _ = tokio::time::timeout(Duration::from_secs(1), barrier).await;
    }

    /// Records that `sink` is done with every event up to `cursor`; its
    /// backoff and its persisted attempts are cleared.
    pub async fn advance(&self, sink: &str, cursor: i64) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        self.exec(move |tx| ledger::advance(tx, &sink, cursor))
            .await
    }

    /// Persists the sink's backoff and the attempts of the events that failed.
    pub async fn record_failure(
        &self,
        sink: &str,
        failures: u32,
        next_attempt_at_ms: i64,
        failed: Vec<FailedAttempt>,
    ) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        self.exec(move |tx| ledger::record_failure(tx, &sink, failures, next_attempt_at_ms, failed))
            .await
    }

    /// Moves events to the sink's dead letters (replacing an earlier entry for the same event).
    pub async fn dead_letter(
        &self,
        sink: &str,
        letters: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        let now = now_ms();
        self.exec(move |tx| ledger::dead_letter(tx, &sink, letters, now))
            .await
    }

    /// Removes dead letters that a replay delivered.
    pub async fn replayed(&self, sink: &str, event_ids: Vec<String>) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        self.exec(move |tx| ledger::replayed(tx, &sink, event_ids))
            .await
    }

    /// Proves the spool takes durable writes of new events: a row is
    /// written and committed, and under `max_size_mb` there is room left for
    /// an event of `room_bytes`. A full spool or a full disk fails it.
    pub async fn probe(&self, room_bytes: u64) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Probe(room_bytes, reply))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Prunes now instead of at the next periodic prune (tests, benchmarks).
    pub async fn prune_now(&self) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Prune(reply))?;
        rx.await.map_err(|_| SpoolError::Closed)
    }

    /// The highest committed seq; changes after every commit that stored events.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.inner.committed.clone()
    }

    /// A new read connection.
    pub fn reader(&self) -> Result<Reader, SpoolError> {
        Ok(Reader::open(&self.inner.path)?.counting(self.inner.corrupt_records.clone()))
    }

    /// The counter of corrupt records this spool found.
    pub fn corrupt_records(&self) -> prometheus_client::metrics::counter::Counter {
        self.inner.corrupt_records.clone()
    }

    /// Commits what is queued, checkpoints the WAL and stops the writer.
    /// Appends after this fail with [`SpoolError::Closed`].
    pub async fn close(&self) {
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .ok()
            .and_then(|mut c| c.take());
        if let Some(checkpointer) = checkpointer {
            checkpointer.stop().await;
        }
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
