//! The writer thread: it owns the write connection, takes every waiting
//! command into one transaction and commits once (group commit), then
//! answers each request. [`append_one`] is the dedup and signature-replay
//! SQL run for every appended event.

use super::recent::RecentKeys;
use super::{SpoolError, SpoolOptions, maintenance, now_ms};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::{oneshot, watch};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 1024;

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

/// What [`Spool::append`](super::Spool::append) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Newly stored under this id.
    Stored { id: String },
    /// A repeat within the dedup window: the id of the event first stored.
    Duplicate { id: String },
    /// This ZEGO signature was already used with a different payload.
    ReplayedSignature,
}

/// A write run inside the writer's current transaction.
pub(super) type Exec = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send>;

pub(super) enum Command {
    Append(Box<NewEvent>, oneshot::Sender<Result<Appended, SpoolError>>),
    Exec(Exec, oneshot::Sender<Result<(), SpoolError>>),
    Prune(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
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

/// A running writer thread, as the [`Spool`](super::Spool) handle holds it.
pub(super) struct Started {
    pub tx: std_mpsc::Sender<Command>,
    pub committed: watch::Receiver<i64>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the writer thread on `conn` (already migrated); `max_seq` is the
/// highest seq in the file.
pub(super) fn spawn(
    conn: Connection,
    options: SpoolOptions,
    recent: Arc<RecentKeys>,
    max_seq: i64,
) -> std::io::Result<Started> {
    let (tx, rx) = std_mpsc::channel();
    let (committed_tx, committed) = watch::channel(max_seq);
    let writer = Writer::new(conn, options, recent, committed_tx);
    let thread = std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(Started {
        tx,
        committed,
        thread,
    })
}

pub(super) struct Writer {
    recent: Arc<RecentKeys>,
    conn: Connection,
    options: SpoolOptions,
    committed: watch::Sender<i64>,
    last_prune: Instant,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        options: SpoolOptions,
        recent: Arc<RecentKeys>,
        committed: watch::Sender<i64>,
    ) -> Writer {
        Writer {
            recent,
            conn,
            options,
            committed,
            last_prune: Instant::now(),
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(64);
        loop {
            match rx.recv_timeout(maintenance::PRUNE_EVERY) {
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
                maintenance::checkpoint_at_close(&self.conn);
                let _ = reply.send(());
                return;
            }
            if self.last_prune.elapsed() >= maintenance::PRUNE_EVERY {
                self.prune();
            }
        }
        maintenance::checkpoint_at_close(&self.conn);
    }

    /// Applies a batch in one transaction and answers every command in it.
    /// Returns the shutdown reply if the batch held a shutdown.
    pub(super) fn process(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
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
        match maintenance::prune(&mut self.conn, &self.options, now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned delivered events past retention"),
            Err(e) => tracing::warn!(error = %e, "spool prune failed; will retry"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recent;
    use crate::spool::test_support::{
        event, migrated, open, options, signed_event, store, verified,
    };

    #[tokio::test]
    async fn a_stored_event_is_read_back_after_append() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let ev = event(1);
        let (envelope, resource) = (ev.envelope.clone(), ev.resource.clone());
        let id = store(&spool, ev).await;
        assert_eq!(*spool.committed().borrow(), 1);
        let got = spool.reader().unwrap().event_by_id(&id).unwrap().unwrap();
        assert_eq!((got.seq, got.id), (1, id));
        assert_eq!((got.envelope, got.resource), (envelope, resource));
        spool.close().await;
    }

    #[tokio::test]
    async fn a_duplicate_within_the_window_answers_the_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let first = store(&spool, event(1)).await;
        let again = spool.append(verified(event(1))).await.unwrap();
        assert_eq!(again, Appended::Duplicate { id: first.clone() });
        assert_eq!(spool.reader().unwrap().pending_after(0).unwrap(), 1);
        // Once committed, memory answers the repeat without the writer.
        assert_eq!(
            spool.recent(&event(1).dedup_key, None),
            Recent::Duplicate { id: first }
        );
        spool.close().await;
    }

    #[tokio::test]
    async fn a_repeat_older_than_the_dedup_window_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let old = NewEvent {
            received_at_ms: now_ms() - 2 * 3_600_000,
            ..event(1)
        };
        store(&spool, old).await;
        let again = spool.append(verified(event(1))).await.unwrap();
        assert!(matches!(again, Appended::Stored { .. }), "{again:?}");
        spool.close().await;
    }

    #[tokio::test]
    async fn a_signature_reused_with_another_payload_is_refused_with_the_same_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let first = store(&spool, signed_event(1, 100)).await;
        let other = spool.append(verified(signed_event(2, 100))).await.unwrap();
        assert_eq!(other, Appended::ReplayedSignature);
        let same = spool.append(verified(signed_event(1, 100))).await.unwrap();
        assert_eq!(same, Appended::Duplicate { id: first });
        assert_eq!(spool.reader().unwrap().pending_after(0).unwrap(), 1);
        spool.close().await;
    }

    #[tokio::test]
    async fn a_re_signed_repeat_records_its_signature_against_other_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let first = store(&spool, signed_event(1, 100)).await;
        // The vendor retries payload 1 with a fresh signature 101.
        let retry = spool.append(verified(signed_event(1, 101))).await.unwrap();
        assert_eq!(retry, Appended::Duplicate { id: first });
        let other = spool.append(verified(signed_event(2, 101))).await.unwrap();
        assert_eq!(other, Appended::ReplayedSignature);
        spool.close().await;
    }

    fn writer(dir: &std::path::Path) -> (Writer, watch::Receiver<i64>, Arc<RecentKeys>) {
        let (committed_tx, committed) = watch::channel(0);
        let recent = Arc::new(RecentKeys::default());
        let w = Writer::new(migrated(dir), options(), Arc::clone(&recent), committed_tx);
        (w, committed, recent)
    }

    type AppendReply = oneshot::Receiver<Result<Appended, SpoolError>>;

    fn append(batch: &mut Vec<Command>, ev: NewEvent) -> AppendReply {
        let (reply, rx) = oneshot::channel();
        batch.push(Command::Append(Box::new(ev), reply));
        rx
    }

    /// The reply a processed command got.
    fn answer<T>(mut rx: oneshot::Receiver<T>) -> T {
        rx.try_recv().expect("answered")
    }

    #[test]
    fn a_batch_commits_together_and_sees_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, committed, recent) = writer(dir.path());
        let mut batch = Vec::new();
        let a = append(&mut batch, event(1));
        let b = append(&mut batch, event(2));
        let repeat = append(&mut batch, event(1));
        assert!(w.process(&mut batch).is_none());
        assert!(batch.is_empty());
        let Ok(Appended::Stored { id: first }) = answer(a) else {
            panic!("the first event is stored");
        };
        assert!(matches!(answer(b), Ok(Appended::Stored { .. })));
        assert_eq!(answer(repeat).unwrap(), Appended::Duplicate { id: first });
        assert_eq!(*committed.borrow(), 2);
        assert!(matches!(
            recent.lookup(&event(2).dedup_key, None, Windows::at(now_ms(), &options())),
            Recent::Duplicate { .. }
        ));
    }

    /// Today's behaviour: one failing command fails the whole transaction,
    /// so nothing in the batch is stored and every request is answered an
    /// error (ingest answers those 503 and the vendor retries).
    #[test]
    fn a_batch_with_one_failing_command_rolls_back_and_answers_every_request_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, committed, recent) = writer(dir.path());
        let mut batch = Vec::new();
        let before = append(&mut batch, event(1));
        let (ok_reply, ok_rx) = oneshot::channel();
        batch.push(Command::Exec(
            Box::new(|tx| {
                tx.execute("INSERT INTO meta (key, value) VALUES ('x', 1)", [])
                    .map(drop)
            }),
            ok_reply,
        ));
        let (bad_reply, bad_rx) = oneshot::channel();
        batch.push(Command::Exec(
            Box::new(|tx| {
                tx.execute("INSERT INTO no_such_table VALUES (1)", [])
                    .map(drop)
            }),
            bad_reply,
        ));
        let after = append(&mut batch, event(2));
        assert!(w.process(&mut batch).is_none());

        for reply in [before, after] {
            assert!(matches!(answer(reply), Err(SpoolError::Write(_))));
        }
        for reply in [ok_rx, bad_rx] {
            assert!(matches!(answer(reply), Err(SpoolError::Write(_))));
        }
        let stored: i64 = w
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM meta)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the whole batch is rolled back");
        assert_eq!(*committed.borrow(), 0);
        let windows = Windows::at(now_ms(), &options());
        assert_eq!(
            recent.lookup(&event(1).dedup_key, None, windows),
            Recent::Unknown
        );

        // The writer carries on: the next batch commits.
        let retry = append(&mut batch, event(1));
        w.process(&mut batch);
        assert!(matches!(answer(retry), Ok(Appended::Stored { .. })));
        assert_eq!(*committed.borrow(), 1);
    }

    #[test]
    fn a_shutdown_in_a_batch_is_returned_after_the_rest_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _, _) = writer(dir.path());
        let mut batch = Vec::new();
        let stored = append(&mut batch, event(1));
        let (reply, _rx) = oneshot::channel();
        batch.push(Command::Shutdown(reply));
        assert!(w.process(&mut batch).is_some());
        assert!(matches!(answer(stored), Ok(Appended::Stored { .. })));
    }
}
