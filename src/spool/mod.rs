//! The spool: the durable store every acknowledged event passes through.
//!
//! # Design
//! One SQLite file (`<spool.dir>/spool.sqlite3`) in WAL mode with
//! `synchronous=FULL`: a commit returns only after the WAL is fsynced, so an
//! event whose request was answered 200 survives `kill -9` and power loss.
//!
//! All writes go through one writer thread that owns the write connection.
//! Requests hand it an [`Append`](Command) and wait on a oneshot; the writer
//! takes everything that is waiting (up to [`MAX_BATCH`]) into one
//! transaction and commits once — group commit — so N concurrent requests
//! cost one fsync, not N. Delivery cursors are written the same way.
//! Readers (delivery workers, the CLI) use their own connections; WAL lets
//! them read while the writer commits.
//!
//! # Invariants
//! - A reply `Stored`/`Duplicate` is sent only after the transaction holding
//!   the event committed. On any error the whole batch is rolled back and
//!   every request in it gets `SpoolError` (answered 503: the vendor retries).
//! - `events.seq` is monotonic and never reused; each sink's `cursor` says
//!   every event with `seq <= cursor` is done for that sink. A crash between
//!   a delivery and its cursor commit re-delivers (at-least-once), never skips.
//! - Events are pruned only when every active sink's cursor has passed them
//!   and they are older than both the retention and the dedup window.
//!
//! # What a crash can lose
//! Nothing that was acknowledged. Requests in a batch that had not committed
//! got no answer (or a 503), so the vendor retries them.

pub mod admin;
pub(crate) mod recent;
mod schema;

pub use recent::Recent;
use recent::RecentKeys;

use crate::verify::Verified;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the writer prunes old events and dedup entries when idle or busy.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Rows deleted per prune transaction, so a large backlog never stalls appends.
const PRUNE_CHUNK: i64 = 20_000;

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

/// An event ready to be stored. Built by ingest after verification.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    /// `zego`, `netease`: the NATS store puts it in the subject.
    pub provider: &'static str,
    pub received_at_ms: i64,
    pub dedup_key: String,
    /// ZEGO: the signature's key; a second use with another payload is refused.
    pub sig_key: Option<String>,
    pub resource: Option<String>,
    pub family: &'static str,
    pub kind: String,
    /// The serialized envelope.
    pub envelope: String,
}

/// What [`Spool::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Newly stored under this id.
    Stored { id: String },
    /// A repeat within the dedup window: the id of the event first stored.
    Duplicate { id: String },
    /// This ZEGO signature was already used with a different payload.
    ReplayedSignature,
}

/// A stored event as delivery reads it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    /// When we acknowledged it (Unix ms); for a replayed dead letter, when it died.
    pub received_at_ms: i64,
    pub resource: Option<String>,
    pub envelope: String,
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

/// A write run inside the writer's current transaction.
type Exec = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send>;

enum Command {
    Append(Box<NewEvent>, oneshot::Sender<Result<Appended, SpoolError>>),
    Exec(Exec, oneshot::Sender<Result<(), SpoolError>>),
    Prune(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// An event a sink gave up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub event: StoredEvent,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
}

/// One failed attempt to remember across restarts.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    pub event_id: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
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
    checkpointer: Mutex<Option<(std_mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

pub use crate::clock::now_ms;

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

/// The writer checkpoints the WAL after a commit that leaves it this many
/// pages long (1 MiB at 4 KiB pages), inside that commit. SQLite's default,
/// 1000, made every ~40th commit under load wait for a 4 MiB copy and fsync:
/// p99 at a steady 2,000 events/s was ~9 ms; at 256 it is ~4 ms with the same
/// throughput at saturation (64 is cheaper still in latency but costs ~15%
/// of throughput). See bench/README.md for the A/B.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;

/// How often the checkpointer copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies the WAL into the database in the background (PASSIVE: it never
/// blocks the writer or readers). The writer's own auto-checkpoint (every
/// 1 MiB of WAL) then finds most of it copied already, so it is
/// short — and, running between the writer's transactions, it is the one
/// that completes and lets the WAL start over; a background checkpoint alone
/// never catches up with continuous commits.
fn run_checkpointer(conn: Connection, stop: std_mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint failed; will retry");
        }
    }
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
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
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
        register_sinks(&mut conn, sinks).map_err(|e| open_err(e.to_string()))?;
        let max_seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;

        let (tx, rx) = std_mpsc::channel();
        let (committed_tx, committed) = watch::channel(max_seq);
        let recent = Arc::new(RecentKeys::default());
        let dedup_window = options.dedup_window;
        let signature_window = options.signature_window;
        let writer = Writer {
            recent: Arc::clone(&recent),
            conn,
            options,
            committed: committed_tx,
            last_prune: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        let checkpoint_conn = open_connection(&path, false).map_err(|e| open_err(e.to_string()))?;
        let (stop_checkpointer, stop_rx) = std_mpsc::channel();
        let checkpointer = std::thread::Builder::new()
            .name("spool-checkpoint".into())
            .spawn(move || run_checkpointer(checkpoint_conn, stop_rx))
            .map_err(|e| open_err(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Spool {
            inner: Arc::new(Inner {
                tx,
                recent,
                dedup_window,
                signature_window,
                committed,
                path,
                writer: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some((stop_checkpointer, checkpointer))),
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
        self.inner
            .tx
            .send(Command::Append(Box::new(event.into_inner()), reply))
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Runs `f` in the writer's next transaction (group-committed with appends).
    async fn exec(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Exec(Box::new(f), reply))
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Records that `sink` is done with every event up to `cursor`; its
    /// backoff and the attempts of those events are cleared.
    pub async fn advance(&self, sink: &str, cursor: i64) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        self.exec(move |tx| {
            tx.prepare_cached(
                "UPDATE sinks SET cursor = MAX(cursor, ?1), failures = 0, next_attempt_at_ms = 0
                 WHERE name = ?2",
            )?
            .execute(params![cursor, sink])?;
            tx.prepare_cached("DELETE FROM attempts WHERE sink = ?1")?
                .execute([&sink])?;
            Ok(())
        })
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
        self.exec(move |tx| {
            tx.prepare_cached(
                "UPDATE sinks SET failures = ?1, next_attempt_at_ms = ?2 WHERE name = ?3",
            )?
            .execute(params![failures, next_attempt_at_ms, sink])?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO attempts (sink, event_id, attempts, last_status, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (sink, event_id) DO UPDATE SET attempts = excluded.attempts,
                   last_status = excluded.last_status, last_error = excluded.last_error",
            )?;
            for f in failed {
                stmt.execute(params![
                    sink,
                    f.event_id,
                    f.attempts,
                    f.last_status,
                    f.last_error
                ])?;
            }
            Ok(())
        })
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
        self.exec(move |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO dead_letters
                   (sink, event_id, resource, envelope, attempts, last_status, last_error, dead_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (sink, event_id) DO UPDATE SET
                   attempts = dead_letters.attempts + excluded.attempts,
                   last_status = excluded.last_status, last_error = excluded.last_error,
                   dead_at_ms = excluded.dead_at_ms, replay_requested_at_ms = NULL",
            )?;
            for d in letters {
                stmt.execute(params![
                    sink,
                    d.event.id,
                    d.event.resource,
                    d.event.envelope,
                    d.attempts,
                    d.last_status,
                    d.last_error,
                    now
                ])?;
            }
            Ok(())
        })
        .await
    }

    /// Removes dead letters that a replay delivered.
    pub async fn replayed(&self, sink: &str, event_ids: Vec<String>) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        self.exec(move |tx| {
            let mut stmt =
                tx.prepare_cached("DELETE FROM dead_letters WHERE sink = ?1 AND event_id = ?2")?;
            for id in event_ids {
                stmt.execute(params![sink, id])?;
            }
            Ok(())
        })
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
            tx.execute_batch("SAVEPOINT probe")?;
            let tried = (|| -> rusqlite::Result<()> {
                let pragma = |name: &str| -> rusqlite::Result<u64> {
                    tx.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                        .map(|v| v.max(0) as u64)
                };
                let free_pages = pragma("max_page_count")?
                    .saturating_sub(pragma("page_count")?)
                    .saturating_add(pragma("freelist_count")?);
                if free_pages.saturating_mul(pragma("page_size")?) < room_bytes {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                        Some("spool.max_size_mb reached: no room for another event".into()),
                    ));
                }
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('probed_at_ms', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([now])?;
                Ok(())
            })();
            if let Err(e) = tried {
                tx.execute_batch("ROLLBACK TO probe")?;
                if let Ok(mut o) = report.lock() {
                    *o = Some(e.to_string());
                }
            }
            tx.execute_batch("RELEASE probe")
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
        self.inner
            .tx
            .send(Command::Prune(reply))
            .map_err(|_| SpoolError::Closed)?;
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
        if let Some((stop, handle)) = checkpointer {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn register_sinks(conn: &mut Connection, sinks: &[(String, String)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute("UPDATE sinks SET active = 0", [])?;
    for (name, kind) in sinks {
        tx.execute(
            "INSERT INTO sinks (name, kind, cursor, active)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) FROM events), 1)
             ON CONFLICT (name) DO UPDATE SET active = 1, kind = excluded.kind",
            params![name, kind],
        )?;
    }
    tx.commit()
}

struct Writer {
    recent: Arc<RecentKeys>,
    conn: Connection,
    options: SpoolOptions,
    committed: watch::Sender<i64>,
    last_prune: Instant,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(64);
        loop {
            match rx.recv_timeout(PRUNE_EVERY) {
                Ok(cmd) => batch.push(cmd),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    self.prune();
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let shutdown = self.process(&mut batch);
            if let Some(reply) = shutdown {
                self.checkpoint();
                let _ = reply.send(());
                return;
            }
            if self.last_prune.elapsed() >= PRUNE_EVERY {
                self.prune();
            }
        }
        self.checkpoint();
    }

    /// Applies a batch in one transaction and answers every command in it.
    /// Returns the shutdown reply if the batch held a shutdown.
    fn process(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        let now = now_ms();
        let windows = Windows::at(now, &self.options);
        let mut execs: Vec<Option<Exec>> = batch
            .iter_mut()
            .map(|cmd| match cmd {
                Command::Exec(f, _) => Some(std::mem::replace(f, Box::new(|_| Ok(())))),
                _ => None,
            })
            .collect();
        let result = (|| -> rusqlite::Result<(Vec<Option<Appended>>, i64)> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut max_seq = 0;
            for (cmd, exec) in batch.iter().zip(execs.iter_mut()) {
                if let Some(f) = exec.take() {
                    f(&tx)?;
                }
                match cmd {
                    Command::Append(ev, _) => {
                        let (outcome, seq) = append_one(&tx, ev, now, windows)?;
                        max_seq = max_seq.max(seq);
                        outcomes.push(Some(outcome));
                    }
                    Command::Exec(..) => outcomes.push(None),
                    Command::Shutdown(_) | Command::Prune(_) => outcomes.push(None),
                }
            }
            tx.commit()?;
            Ok((outcomes, max_seq))
        })();
        let mut shutdown = None;
        let mut prune = Vec::new();
        match result {
            Ok((outcomes, max_seq)) => {
                if max_seq > 0 {
                    self.committed.send_if_modified(|v| {
                        let changed = max_seq > *v;
                        *v = (*v).max(max_seq);
                        changed
                    });
                }
                for (cmd, outcome) in batch.drain(..).zip(outcomes) {
                    match (cmd, outcome) {
                        (Command::Append(ev, reply), Some(o)) => {
                            // Committed: repeats can now be answered from memory.
                            match &o {
                                Appended::Stored { id } => self.recent.stored(
                                    &ev.dedup_key,
                                    ev.sig_key.as_deref(),
                                    id,
                                    ev.received_at_ms,
                                ),
                                Appended::Duplicate { .. } => {
                                    if let Some(sig) = &ev.sig_key {
                                        self.recent.signature(
                                            &ev.dedup_key,
                                            sig,
                                            ev.received_at_ms,
                                        );
                                    }
                                }
                                Appended::ReplayedSignature => {}
                            }
                            let _ = reply.send(Ok(o));
                        }
                        (Command::Exec(_, reply), _) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Command::Shutdown(reply), _) => shutdown = Some(reply),
                        (Command::Prune(reply), _) => prune.push(reply),
                        (Command::Append(_, reply), None) => {
                            let _ = reply.send(Err(SpoolError::Write("no outcome".into())));
                        }
                    }
                }
            }
            Err(e) => {
                let err = SpoolError::Write(e.to_string());
                tracing::error!(error = %e, batch = batch.len(), "spool commit failed; the batch is answered 503");
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Append(_, reply) => {
                            let _ = reply.send(Err(err.clone()));
                        }
                        Command::Exec(_, reply) => {
                            let _ = reply.send(Err(err.clone()));
                        }
                        Command::Shutdown(reply) => shutdown = Some(reply),
                        Command::Prune(reply) => prune.push(reply),
                    }
                }
            }
        }
        if !prune.is_empty() {
            self.prune();
            for reply in prune {
                let _ = reply.send(());
            }
        }
        shutdown
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        let now = now_ms();
        let keep = self
            .options
            .retention
            .max(self.options.dedup_window)
            .max(self.options.signature_window);
        let event_cutoff = now - keep.as_millis() as i64;
        let sig_cutoff = now - self.options.signature_window.as_millis() as i64;
        let result = (|| -> rusqlite::Result<usize> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Every active sink must be past an event before it may go.
            let done: i64 = tx.query_row(
                "SELECT COALESCE((SELECT MIN(cursor) FROM sinks WHERE active = 1),
                                 (SELECT COALESCE(MAX(seq), 0) FROM events))",
                [],
                |r| r.get(0),
            )?;
            // Events are appended in time order, so the old ones are a prefix.
            let first_young: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM events WHERE received_at_ms >= ?1 ORDER BY seq LIMIT 1",
                    [event_cutoff],
                    |r| r.get(0),
                )
                .optional()?;
            let upto = match first_young {
                Some(seq) => done.min(seq - 1),
                None => done,
            };
            let deleted = tx.execute(
                "DELETE FROM events WHERE seq IN
                   (SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
                params![upto, PRUNE_CHUNK],
            )?;
            tx.execute("DELETE FROM signatures WHERE seen_at_ms < ?1", [sig_cutoff])?;
            tx.commit()?;
            Ok(deleted)
        })();
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned delivered events past retention"),
            Err(e) => tracing::warn!(error = %e, "spool prune failed; will retry"),
        }
    }

    fn checkpoint(&mut self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "spool checkpoint at close failed");
        }
    }
}

/// The oldest times (Unix ms) a dedup key and a signature are still remembered from.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub dedup_start: i64,
    pub sig_start: i64,
}

impl Windows {
    fn at(now: i64, options: &SpoolOptions) -> Windows {
        Windows {
            dedup_start: now - options.dedup_window.as_millis() as i64,
            sig_start: now - options.signature_window.as_millis() as i64,
        }
    }
}

/// Stores one event, or finds it to be a duplicate or a replayed signature.
/// Returns the outcome and the new seq (0 unless stored).
fn append_one(
    tx: &rusqlite::Transaction<'_>,
    ev: &NewEvent,
    now: i64,
    windows: Windows,
) -> rusqlite::Result<(Appended, i64)> {
    let mut sig_known = false;
    if let Some(sig) = &ev.sig_key {
        let first_use: Option<String> = tx
            .prepare_cached(
                "SELECT dedup_key FROM events WHERE sig_key = ?1 AND received_at_ms >= ?2 LIMIT 1",
            )?
            .query_row(params![sig, windows.sig_start], |r| r.get(0))
            .optional()?;
        let used_by = match first_use {
            Some(k) => Some(k),
            None => tx
                .prepare_cached(
                    "SELECT dedup_key FROM signatures WHERE sig_key = ?1 AND seen_at_ms >= ?2",
                )?
                .query_row(params![sig, windows.sig_start], |r| r.get(0))
                .optional()?,
        };
        if let Some(key) = used_by {
            if key != ev.dedup_key {
                return Ok((Appended::ReplayedSignature, 0));
            }
            sig_known = true;
        }
    }
    let existing: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM events WHERE dedup_key = ?1 AND received_at_ms >= ?2
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![ev.dedup_key, windows.dedup_start], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        if let Some(sig) = ev.sig_key.as_ref().filter(|_| !sig_known) {
            // A re-signed retry: remember its signature too, so it cannot carry another body later.
            tx.prepare_cached(
                "INSERT INTO signatures (sig_key, dedup_key, seen_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sig_key) DO NOTHING",
            )?
            .execute(params![sig, ev.dedup_key, now])?;
        }
        return Ok((Appended::Duplicate { id }, 0));
    }
    tx.prepare_cached(
        "INSERT INTO events (id, received_at_ms, dedup_key, sig_key, resource, family, kind, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ev.id,
        ev.received_at_ms,
        ev.dedup_key,
        ev.sig_key,
        ev.resource,
        ev.family,
        ev.kind,
        ev.envelope
    ])?;
    let seq = tx.last_insert_rowid();
    Ok((Appended::Stored { id: ev.id.clone() }, seq))
}

/// A read connection: delivery workers and the CLI read through one each.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, SpoolError> {
        let conn = open_connection(path, false).map_err(|e| SpoolError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Reader { conn })
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, id, resource, envelope, received_at_ms FROM events
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(read_err)?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    resource: r.get(2)?,
                    envelope: r.get(3)?,
                    received_at_ms: r.get(4)?,
                })
            })
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    /// The sink's cursor, if the sink is known to the spool.
    pub fn cursor(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        self.conn
            .query_row("SELECT cursor FROM sinks WHERE name = ?1", [sink], |r| {
                r.get(0)
            })
            .optional()
            .map_err(read_err)
    }

    /// One event's envelope by id.
    pub fn event_by_id(&self, id: &str) -> Result<Option<StoredEvent>, SpoolError> {
        self.conn
            .query_row(
                "SELECT seq, id, resource, envelope, received_at_ms FROM events WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredEvent {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        resource: r.get(2)?,
                        envelope: r.get(3)?,
                        received_at_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(read_err)
    }

    /// The sink's persisted backoff: (consecutive failures, next attempt at, Unix ms).
    pub fn sink_state(&self, sink: &str) -> Result<(u32, i64), SpoolError> {
        self.conn
            .query_row(
                "SELECT failures, next_attempt_at_ms FROM sinks WHERE name = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map(|o| o.unwrap_or((0, 0)))
            .map_err(read_err)
    }

    /// Persisted attempts of events past the sink's cursor, by event id.
    pub fn attempts(
        &self,
        sink: &str,
    ) -> Result<std::collections::HashMap<String, u32>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT event_id, attempts FROM attempts WHERE sink = ?1")
            .map_err(read_err)?;
        let rows = stmt
            .query_map([sink], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(read_err)?;
        rows.collect::<Result<_, _>>().map_err(read_err)
    }

    /// Dead letters of `sink` that an operator asked to replay, oldest first.
    pub fn replays(&self, sink: &str, limit: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, event_id, resource, envelope, dead_at_ms FROM dead_letters
                 WHERE sink = ?1 AND replay_requested_at_ms IS NOT NULL ORDER BY id LIMIT ?2",
            )
            .map_err(read_err)?;
        let rows = stmt
            .query_map(params![sink, limit as i64], |r| {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    resource: r.get(2)?,
                    envelope: r.get(3)?,
                    received_at_ms: r.get(4)?,
                })
            })
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    /// Dead letters held for `sink`.
    pub fn dead_letter_count(&self, sink: &str) -> Result<i64, SpoolError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .map_err(read_err)
    }

    /// Number of events with `seq > cursor`, i.e. not yet done for a sink at `cursor`.
    pub fn pending_after(&self, cursor: i64) -> Result<i64, SpoolError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE seq > ?1",
                [cursor],
                |r| r.get(0),
            )
            .map_err(read_err)
    }
}

fn read_err(e: rusqlite::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}
