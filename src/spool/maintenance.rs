//! Keeping the spool healthy: the readiness probe, pruning delivered
//! events, the background checkpointer thread and the checkpoint at close.
//! The probe and pruning run on the writer's connection (the probe inside
//! its current transaction); the checkpointer has a connection of its own.

use super::{SpoolOptions, open_connection};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

/// How often the writer prunes old events and dedup entries when idle or busy.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Rows deleted per prune transaction, so a large backlog never stalls appends.
const PRUNE_CHUNK: i64 = 20_000;

/// The writer checkpoints the WAL after a commit that leaves it this many
/// pages long (1 MiB at 4 KiB pages), inside that commit. SQLite's default,
/// 1000, made every ~40th commit under load wait for a 4 MiB copy and fsync:
/// p99 at a steady 2,000 events/s was ~9 ms; at 256 it is ~4 ms with the same
/// throughput at saturation (64 is cheaper still in latency but costs ~15%
/// of throughput). See bench/README.md for the A/B.
pub(super) const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;

/// How often the checkpointer copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Deletes (up to [`PRUNE_CHUNK`]) catalog rows of events that every
/// active sink is past and that are older than the retention, the dedup and
/// the signature window at `now`, and signatures older than the signature
/// window. Returns the highest seq that may go (whole segments at or below
/// it are then removed by [`remove_segments`]).
pub(super) fn prune(
    conn: &mut Connection,
    options: &SpoolOptions,
    now: i64,
    next_seq: i64,
) -> rusqlite::Result<(usize, i64)> {
    let keep = options
        .retention
        .max(options.dedup_window)
        .max(options.signature_window);
    let event_cutoff = now - keep.as_millis() as i64;
    let sig_cutoff = now - options.signature_window.as_millis() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Every active sink must be past an event before it may go.
    let done: i64 = tx.query_row(
        "SELECT COALESCE((SELECT MIN(cursor) FROM sinks WHERE active = 1), ?1)",
        [next_seq - 1],
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
    // What is gone for sure: everything below the oldest row left.
    let oldest_left: Option<i64> = tx
        .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))
        .optional()?
        .flatten();
    tx.commit()?;
    if deleted > 0 {
        tracing::debug!(deleted, "pruned delivered events past retention");
    }
    let gone = match oldest_left {
        Some(oldest) => upto.min(oldest - 1),
        None => upto,
    };
    Ok((deleted, gone))
}

/// Removes the log segments whose every record is at or below `upto`
/// (never `current`, the one being appended to). Returns the bytes freed.
pub(super) fn remove_segments(dir: &Path, current: i64, upto: i64) -> std::io::Result<u64> {
    let segments = super::log::segments(dir)?;
    let mut freed = 0;
    for pair in segments.windows(2) {
        let (first, next_first) = (pair[0], pair[1]);
        if first == current || next_first - 1 > upto {
            break;
        }
        let path = dir.join(super::log::segment_name(first));
        freed += std::fs::metadata(&path)?.len();
        std::fs::remove_file(&path)?;
    }
    Ok(freed)
}

/// Copies the whole WAL into the database and truncates it to 0 bytes;
/// the writer's last act before it stops.
pub(super) fn checkpoint_at_close(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "spool checkpoint at close failed");
    }
}

/// The background checkpointer thread and the way to stop it.
pub(super) struct Checkpointer {
    stop: std_mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the checkpointer on a connection of its own to `path`.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = open_connection(path, false).map_err(|e| e.to_string())?;
        let (stop, stop_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("spool-checkpoint".into())
            .spawn(move || run_checkpointer(conn, stop_rx))
            .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for it.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::test_support::{event, migrated, open, options, sinks, store, verified};
    use crate::spool::{NewEvent, SpoolError, ledger};

    const NOW: i64 = 1_700_000_000_000;
    const SEC: i64 = 1_000;

    #[tokio::test]
    async fn probe_succeeds_while_there_is_room_and_fails_once_max_size_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            max_size_bytes: 1024 * 1024,
            ..options()
        };
        let spool = open(dir.path(), options, &["s"]);
        let room = 200_000;
        spool.probe(room).await.unwrap();
        let mut full = false;
        for n in 0..50 {
            let big = NewEvent {
                body: crate::spool::Body::Envelope("x".repeat(200_000)),
                ..event(n)
            };
            if spool.append(verified(big)).await.is_err() {
                full = true;
                break;
            }
        }
        assert!(full, "the spool never filled up");
        let refused = spool.probe(room).await;
        assert!(matches!(refused, Err(SpoolError::Write(_))), "{refused:?}");
        spool.close().await;
    }

    #[tokio::test]
    async fn probe_without_a_size_limit_writes_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        spool.probe(1024 * 1024).await.unwrap();
        let conn = crate::spool::open_connection(spool.path(), false).unwrap();
        let at: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'probed_at_ms'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(at > 0);
        spool.close().await;
    }

    fn insert(conn: &Connection, n: i64, received_at_ms: i64) {
        conn.execute(
            "INSERT INTO events (seq, id, received_at_ms, dedup_key, family, kind, app_id,
                                 segment, offset, len)
             VALUES (?1, ?2, ?3, ?2, 'stream', 'stream_create', '1', 1, 0, 0)",
            params![n, format!("e{n}"), received_at_ms],
        )
        .unwrap();
    }

    fn set_cursor(conn: &mut Connection, sink: &str, cursor: i64) {
        let tx = conn.transaction().unwrap();
        ledger::advance(&tx, sink, cursor).unwrap();
        tx.commit().unwrap();
    }

    fn seqs(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn windows(retention: i64, dedup: i64, signature: i64) -> SpoolOptions {
        let secs = |s: i64| Duration::from_secs(s as u64);
        SpoolOptions {
            retention: secs(retention),
            dedup_window: secs(dedup),
            signature_window: secs(signature),
            max_size_bytes: 0,
            ..SpoolOptions::default()
        }
    }

    #[test]
    fn prune_deletes_only_old_events_every_active_sink_is_past() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(dir.path());
        ledger::register_sinks(&mut conn, &sinks(&["a", "b", "gone"]), 0).unwrap();
        ledger::register_sinks(&mut conn, &sinks(&["a", "b"]), 0).unwrap();
        for (n, age) in [(1, 500), (2, 400), (3, 300), (4, 50)] {
            insert(&conn, n, NOW - age * SEC);
        }
        set_cursor(&mut conn, "a", 4);
        set_cursor(&mut conn, "b", 2);
        let options = windows(100, 10, 10);

        // "gone" (inactive, cursor 0) holds nothing back; "b" holds back 3.
        assert_eq!(prune(&mut conn, &options, NOW, 100).unwrap().0, 2);
        assert_eq!(seqs(&conn), [3, 4]);
        set_cursor(&mut conn, "b", 4);
        // 4 is younger than the retention.
        assert_eq!(prune(&mut conn, &options, NOW, 100).unwrap().0, 1);
        assert_eq!(seqs(&conn), [4]);
        assert_eq!(
            prune(&mut conn, &options, NOW + 100 * SEC, 100).unwrap().0,
            1
        );
        assert!(seqs(&conn).is_empty());
    }

    #[test]
    fn prune_keeps_events_inside_the_dedup_or_signature_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(dir.path());
        ledger::register_sinks(&mut conn, &sinks(&["a"]), 0).unwrap();
        insert(&conn, 1, NOW - 50 * SEC);
        set_cursor(&mut conn, "a", 1);
        assert_eq!(
            prune(&mut conn, &windows(0, 100, 0), NOW, 100).unwrap().0,
            0
        );
        assert_eq!(
            prune(&mut conn, &windows(0, 0, 100), NOW, 100).unwrap().0,
            0
        );
        assert_eq!(
            prune(&mut conn, &windows(10, 10, 10), NOW, 100).unwrap().0,
            1
        );
    }

    #[test]
    fn prune_forgets_signatures_older_than_the_signature_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(dir.path());
        for (sig, age) in [("old", 20), ("young", 5)] {
            conn.execute(
                "INSERT INTO signatures (sig_key, dedup_key, seen_at_ms) VALUES (?1, 'k', ?2)",
                params![sig, NOW - age * SEC],
            )
            .unwrap();
        }
        prune(&mut conn, &windows(0, 0, 10), NOW, 100).unwrap();
        let left: Vec<String> = conn
            .prepare("SELECT sig_key FROM signatures")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, ["young"]);
    }

    #[tokio::test]
    async fn close_checkpoints_the_wal_to_zero_bytes_and_refuses_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        for n in 1..=5 {
            store(&spool, event(n)).await;
        }
        let wal = spool.path().with_extension("sqlite3-wal");
        let len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(len() > 0, "commits went to the WAL");
        spool.close().await;
        assert_eq!(len(), 0);
        let after = spool.append(verified(event(6))).await;
        assert!(matches!(after, Err(SpoolError::Closed)), "{after:?}");
        // Everything is in the database file itself.
        let reader = crate::spool::Reader::open(spool.path()).unwrap();
        assert_eq!(reader.pending_after(0).unwrap(), 5);
    }
}
