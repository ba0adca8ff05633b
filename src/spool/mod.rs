//! The spool: the durable store every acknowledged event passes through.
//!
//! # Design
//! One SQLite file (`<spool.dir>/spool.sqlite3`) in WAL mode with
//! `synchronous=FULL`: a commit returns only after the WAL is fsynced, so an
//! event whose request was answered 200 survives `kill -9` and power loss.
//!
//! All writes go through one writer thread that owns the write connection.
//! Requests hand it an `Append` command and wait on a oneshot; the writer
//! takes everything that is waiting (up to `MAX_BATCH`) into one
//! transaction and commits once — group commit — so N concurrent requests
//! cost one fsync, not N. Delivery bookkeeping (cursors, backoff, dead
//! letters) and the readiness probe are written the same way: `Exec`
//! commands whose SQL runs inside the writer's current transaction.
//! Readers (delivery workers, the CLI) use their own connections; WAL lets
//! them read while the writer commits.
//!
//! # Layout
//! - `mod.rs`: this doc; the [`Spool`] handle — opening the file, and thin
//!   public methods that send commands to the writer or open readers;
//!   [`SpoolOptions`], [`SpoolError`], the shared connection settings and
//!   the re-exports.
//! - `writer.rs`: the writer thread — batching and group commit, answering
//!   every request of a batch — and `append_one`, the dedup and
//!   signature-replay SQL; [`NewEvent`], [`Appended`], `Windows`.
//! - `ledger.rs`: delivery bookkeeping, run as writer transactions: sink
//!   registration at open, cursors (`advance`), backoff and attempts
//!   (`record_failure`), dead letters (`dead_letter`, `replayed`);
//!   [`DeadLetter`], [`FailedAttempt`].
//! - `reader.rs`: [`Reader`], a read connection, and its queries;
//!   [`StoredEvent`].
//! - `maintenance.rs`: the readiness probe, pruning, the background
//!   checkpointer thread and the checkpoint at close.
//! - `recent.rs`: memory of recently committed dedup keys and signatures,
//!   answering repeats without a trip through the writer.
//! - `schema.rs`: tables, indexes and migrations.
//! - `admin.rs`: operator access for the CLI (dead letters, event lookup).
//!
//! # Invariants
//! - A reply `Stored`/`Duplicate` is sent only after the transaction holding
//!   the event committed. On any error the whole batch is rolled back and
//!   every request in it gets `SpoolError` (answered 503: the vendor retries).
//! - `events.seq` is monotonic and never reused; each sink's `cursor` says
//!   every event with `seq <= cursor` is done for that sink. A crash between
//!   a delivery and its cursor commit re-delivers (at-least-once), never skips.
//! - Events are pruned only when every active sink's cursor has passed them
//!   and they are older than the retention, the dedup and the signature
//!   window. Dead letters hold a copy of the envelope, so pruning never
//!   loses one.
//!
//! # What a crash can lose
//! Nothing that was acknowledged. Requests in a batch that had not committed
//! got no answer (or a 503), so the vendor retries them.

pub mod admin;
mod ledger;
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
pub use writer::{Appended, NewEvent};

use crate::verify::Verified;
use maintenance::Checkpointer;
use recent::RecentKeys;
use rusqlite::{Connection, OpenFlags};
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
}

/// Settings the spool needs.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dedup_window: Duration,
    /// How long a used ZEGO signature is remembered: at least as long as a
    /// timestamp can be fresh (2 × `server.timestamp_tolerance_secs`), so a
    /// signature cannot be forgotten while it could still verify.
    pub signature_window: Duration,
    pub retention: Duration,
    /// Largest file size in bytes; 0 = no limit.
    pub max_size_bytes: u64,
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
    // WAL: readers never block the writer; FULL: a commit is fsynced before it returns.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode: cannot switch the spool to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Keep the WAL file from growing without bound after a burst.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Readers and the checkpointer scan recent pages the OS caches anyway:
    // SQLite's default 2 MB each. The writer gets more (see `Spool::open`).
    conn.pragma_update(None, "cache_size", -2_000)?;
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
        // The writer's cache holds the dedup indexes' interior and hot leaf pages.
        conn.pragma_update(None, "cache_size", -16_000)
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            maintenance::WAL_AUTOCHECKPOINT_PAGES,
        )
        .map_err(|e| open_err(e.to_string()))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| open_err(format!("integrity check failed: {e}")))?;
        if check != "ok" {
            return Err(open_err(format!("integrity check failed: {check}")));
        }
        schema::migrate(&mut conn).map_err(open_err)?;
        if options.max_size_bytes > 0 {
            let page_size: u64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(|e| open_err(e.to_string()))?;
            let pages = (options.max_size_bytes / page_size.max(1)).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|e| open_err(e.to_string()))?;
        }
        ledger::register_sinks(&mut conn, sinks).map_err(|e| open_err(e.to_string()))?;
        let max_seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;

        let recent = Arc::new(RecentKeys::default());
        let dedup_window = options.dedup_window;
        let signature_window = options.signature_window;
        let writer = writer::spawn(conn, options, Arc::clone(&recent), max_seq)
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
                writer: Mutex::new(Some(writer.thread)),
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Answers a repeat from memory when its original is known to be
    /// committed; [`Recent::Unknown`] means "append it and let the spool decide".
    pub fn recent(&self, dedup_key: &str, sig_key: Option<&str>) -> Recent {
        let now = now_ms();
        let windows = Windows {
            dedup_start: now - self.inner.dedup_window.as_millis() as i64,
            sig_start: now - self.inner.signature_window.as_millis() as i64,
        };
        self.inner.recent.lookup(dedup_key, sig_key, windows)
    }

    /// Stores a verified event; returns once it is committed (or refused).
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
    /// written, committed and fsynced, and under `max_size_mb` there is room
    /// left for an event of `room_bytes`. A full spool or a full disk fails it.
    pub async fn probe(&self, room_bytes: u64) -> Result<(), SpoolError> {
        let now = now_ms();
        // A failed probe must not fail the appends group-committed with it:
        // it runs in a savepoint and reports its own outcome.
        let outcome: Arc<Mutex<Option<String>>> = Arc::default();
        let report = Arc::clone(&outcome);
        self.exec(move |tx| {
            let failed = maintenance::probe(tx, room_bytes, now)?;
            if let (Some(reason), Ok(mut o)) = (failed, report.lock()) {
                *o = Some(reason);
            }
            Ok(())
        })
        .await?;
        match outcome.lock().ok().and_then(|mut o| o.take()) {
            Some(reason) => Err(SpoolError::Write(reason)),
            None => Ok(()),
        }
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
        Reader::open(&self.inner.path)
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
