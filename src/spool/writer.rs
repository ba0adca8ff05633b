//! The writer thread: it owns the log's end and the catalog's write
//! connection, takes every waiting command into one batch, decides each
//! event (new, duplicate, replayed signature) against the key index,
//! appends the new records to the log with one write and one `fdatasync`
//! (group commit) and answers the appends, then records them in the
//! catalog with the batch's ledger commands in one transaction.

use super::keys::{Keys, key128};
use super::log::{BodyKind, Log, Record};
use super::recent::RecentKeys;
use super::{SpoolError, SpoolOptions, maintenance, now_ms, schema};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::{oneshot, watch};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 1024;

/// What is stored for an event.
#[derive(Debug, Clone)]
pub enum Body {
    /// The decoded payload as JSON text, credentials removed: the local
    /// store keeps this and renders the envelope at delivery.
    Raw(String),
    /// A rendered envelope (what the NATS store publishes).
    Envelope(String),
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
    pub app_id: String,
    pub body: Body,
}

impl NewEvent {
    /// The envelope sinks receive for this event.
    pub fn envelope(&self) -> String {
        match &self.body {
            Body::Envelope(e) => e.clone(),
            Body::Raw(raw) => crate::event::render(self.meta(), raw).unwrap_or_default(),
        }
    }

    fn meta(&self) -> crate::event::Meta<'_> {
        crate::event::Meta {
            id: &self.id,
            received_at_ms: self.received_at_ms,
            family: self.family,
            kind: &self.kind,
            app_id: &self.app_id,
            dedup_key: &self.dedup_key,
        }
    }
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
    /// Readiness: room for this many bytes, and a durable write.
    Probe(u64, oneshot::Sender<Result<(), SpoolError>>),
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
    pub(super) fn at(now: i64, options: &SpoolOptions) -> Windows {
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

/// Starts the writer thread.
pub(super) fn spawn(writer: Writer) -> std::io::Result<Started> {
    let (tx, rx) = std_mpsc::channel();
    let committed = writer.committed.subscribe();
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
    pub(super) conn: Connection,
    options: SpoolOptions,
    committed: watch::Sender<i64>,
    last_prune: Instant,
    log: Log,
    keys: Keys,
    next_seq: i64,
    /// Bytes of every segment but the current one (for `max_size_mb`).
    sealed_bytes: u64,
    /// Records synced to the log whose catalog rows are not committed yet.
    uncatalogued: Vec<(Record, i64, u64, u32)>,
    /// Signatures of re-signed repeats whose rows a failed commit dropped.
    unsaved_resigned: Vec<(String, String)>,
}

/// What a batch decided for one event.
enum Decision {
    Stored(Record),
    Answer(Appended),
}

/// A catalog row as the dedup confirmations read it.
struct Row {
    id: String,
    dedup: u128,
    sig: Option<u128>,
    at_ms: i64,
}

fn blob_key(b: Option<Vec<u8>>) -> Option<u128> {
    let b = b?;
    let bytes: [u8; 16] = b.as_slice().try_into().ok()?;
    Some(u128::from_be_bytes(bytes))
}

impl Writer {
    /// A writer over an opened catalog (`conn`, migrated) and log.
    pub(super) fn new(
        conn: Connection,
        options: SpoolOptions,
        recent: Arc<RecentKeys>,
        log: Log,
        keys: Keys,
        next_seq: i64,
    ) -> std::io::Result<Writer> {
        let sealed_bytes = super::log::size(log.dir())?.saturating_sub(log.end());
        let (committed, _) = watch::channel(next_seq - 1);
        Ok(Writer {
            recent,
            conn,
            options,
            committed,
            last_prune: Instant::now(),
            log,
            keys,
            next_seq,
            sealed_bytes,
            uncatalogued: Vec::new(),
            unsaved_resigned: Vec::new(),
        })
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

    /// The catalog row of `seq`, if it is still there (or waiting to be
    /// committed after a failed catalog commit).
    fn row(&self, seq: i64) -> rusqlite::Result<Option<Row>> {
        if let Ok(i) = self
            .uncatalogued
            .binary_search_by_key(&seq, |(r, ..)| r.seq)
        {
            let r = &self.uncatalogued[i].0;
            return Ok(Some(Row {
                id: r.id.to_string(),
                dedup: r.dedup,
                sig: r.sig,
                at_ms: r.received_at_ms,
            }));
        }
        self.conn
            .prepare_cached(
                "SELECT id, dedup_key, sig_key, received_at_ms FROM events WHERE seq = ?1",
            )?
            .query_row([seq], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    dedup: blob_key(r.get(1)?).unwrap_or_default(),
                    sig: blob_key(r.get(2)?),
                    at_ms: r.get(3)?,
                })
            })
            .optional()
    }

    /// The dedup key an earlier event or repeat was signed with `sig` for.
    fn signature_use(
        &self,
        sig: u128,
        windows: Windows,
        batch_sigs: &HashMap<u128, u128>,
    ) -> rusqlite::Result<Option<u128>> {
        if let Some(k) = batch_sigs.get(&sig) {
            return Ok(Some(*k));
        }
        for seq in self.keys.sig_candidates(sig) {
            if let Some(row) = self.row(seq)?
                && row.sig == Some(sig)
                && row.at_ms >= windows.sig_start
            {
                return Ok(Some(row.dedup));
            }
        }
        Ok(self.keys.resigned(sig, windows.sig_start))
    }

    /// The id of the first event stored with `dedup` within the window.
    fn stored_id(
        &self,
        dedup: u128,
        windows: Windows,
        batch_ids: &HashMap<u128, String>,
    ) -> rusqlite::Result<Option<String>> {
        if let Some(id) = batch_ids.get(&dedup) {
            return Ok(Some(id.clone()));
        }
        let mut found = None;
        // Newest first: the last match is the first event stored.
        for seq in self.keys.dedup_candidates(dedup) {
            if let Some(row) = self.row(seq)?
                && row.dedup == dedup
                && row.at_ms >= windows.dedup_start
            {
                found = Some(row.id);
            }
        }
        Ok(found)
    }

    /// Decides every append of the batch, in order; a later event sees the
    /// earlier ones of the same batch.
    fn decide(
        &mut self,
        batch: &[Command],
        windows: Windows,
        resigned: &mut Vec<(String, String)>,
    ) -> rusqlite::Result<Vec<Option<Decision>>> {
        let mut batch_ids: HashMap<u128, String> = HashMap::new();
        let mut batch_sigs: HashMap<u128, u128> = HashMap::new();
        let mut seq = self.next_seq;
        let mut out = Vec::with_capacity(batch.len());
        for cmd in batch {
            let Command::Append(ev, _) = cmd else {
                out.push(None);
                continue;
            };
            let dedup = key128(&ev.dedup_key);
            let sig = ev.sig_key.as_deref().map(key128);
            let mut sig_known = false;
            if let Some(sig) = sig
                && let Some(used_by) = self.signature_use(sig, windows, &batch_sigs)?
            {
                if used_by != dedup {
                    out.push(Some(Decision::Answer(Appended::ReplayedSignature)));
                    continue;
                }
                sig_known = true;
            }
            if let Some(id) = self.stored_id(dedup, windows, &batch_ids)? {
                if let (Some(sig), false) = (sig, sig_known) {
                    // A re-signed retry: remember its signature too, so it
                    // cannot carry another body later.
                    batch_sigs.insert(sig, dedup);
                    if let Some(text) = &ev.sig_key {
                        resigned.push((text.clone(), ev.dedup_key.clone()));
                    }
                }
                out.push(Some(Decision::Answer(Appended::Duplicate { id })));
                continue;
            }
            let (body_kind, body) = match &ev.body {
                Body::Raw(raw) => (BodyKind::Raw, raw.clone()),
                Body::Envelope(e) => (BodyKind::Envelope, e.clone()),
            };
            let record = Record {
                seq,
                received_at_ms: ev.received_at_ms,
                id: uuid::Uuid::parse_str(&ev.id).unwrap_or_else(|_| uuid::Uuid::now_v7()),
                dedup,
                sig,
                family: ev.family.to_owned(),
                kind: ev.kind.clone(),
                app_id: ev.app_id.clone(),
                resource: ev.resource.clone(),
                body_kind,
                body,
            };
            seq += 1;
            batch_ids.insert(dedup, record.id.to_string());
            if let Some(sig) = sig {
                batch_sigs.insert(sig, dedup);
            }
            out.push(Some(Decision::Stored(record)));
        }
        Ok(out)
    }

    fn used_bytes(&self) -> u64 {
        let db = std::fs::metadata(self.conn.path().unwrap_or_default())
            .map(|m| m.len())
            .unwrap_or(0);
        self.sealed_bytes + self.log.end() + db
    }

    /// Refuses `more` bytes past `spool.max_size_mb`.
    fn check_room(&self, more: u64) -> Result<(), String> {
        let max = self.options.max_size_bytes;
        if max > 0 && self.used_bytes().saturating_add(more) > max {
            return Err("spool.max_size_mb reached: no room for another event".into());
        }
        Ok(())
    }

    /// Applies a batch and answers every command in it.
    /// Returns the shutdown reply if the batch held a shutdown.
    ///
    /// Appends are answered as soon as the log is synced: that is what
    /// makes them durable. The catalog rows (and the batch's ledger
    /// commands) are committed right after, before the next batch is
    /// decided; delivery sees an event once its row is committed. Should
    /// that commit fail, the rows are kept and written with the next batch
    /// (and a restart puts them back from the log in any case).
    pub(super) fn process(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        let now = now_ms();
        let windows = Windows::at(now, &self.options);
        self.keys.expire(windows.dedup_start, windows.sig_start);
        let mut resigned = Vec::new();
        let decided = self
            .decide(batch, windows, &mut resigned)
            .map_err(|e| e.to_string());
        let appended = decided.and_then(|decisions| self.append(decisions));
        let mut outcomes = match appended {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::error!(error = %e, batch = batch.len(), "spool write failed; the batch is answered 503");
                let err = SpoolError::Write(e);
                batch.iter().map(|_| Some(Err(err.clone()))).collect()
            }
        };
        // Answer the appends now: their records are on disk.
        for (cmd, outcome) in batch.iter_mut().zip(outcomes.iter_mut()) {
            let Command::Append(ev, _) = cmd else {
                continue;
            };
            let outcome = outcome
                .take()
                .unwrap_or_else(|| Err(SpoolError::Write("no outcome".into())));
            match &outcome {
                Ok(Appended::Stored { id }) => {
                    self.recent
                        .stored(&ev.dedup_key, ev.sig_key.as_deref(), id, ev.received_at_ms)
                }
                Ok(Appended::Duplicate { .. }) => {
                    if let Some(sig) = &ev.sig_key {
                        self.recent.signature(&ev.dedup_key, sig, ev.received_at_ms);
                    }
                }
                _ => {}
            }
            let placeholder = Command::Prune(oneshot::channel().0);
            if let Command::Append(_, reply) = std::mem::replace(cmd, placeholder) {
                let _ = reply.send(outcome);
            }
        }
        let committed = self.commit_catalog(batch, &resigned, now);
        let mut shutdown = None;
        let mut prune = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Append(..) => {}
                Command::Exec(_, reply) => {
                    let _ = reply.send(committed.clone().map(drop));
                }
                Command::Probe(room, reply) => {
                    let answer = committed
                        .clone()
                        .and_then(|()| self.check_room(room).map_err(SpoolError::Write));
                    let _ = reply.send(answer);
                }
                Command::Shutdown(reply) => shutdown = Some(reply),
                // An answered append left this placeholder behind.
                Command::Prune(reply) if reply.is_closed() => {}
                Command::Prune(reply) => prune.push(reply),
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

    /// Writes the batch's new records to the log and syncs them. Returns
    /// each command's outcome (appends only). Nothing is `Stored` unless
    /// the sync succeeded; on failure the log is cut back.
    #[allow(clippy::type_complexity)]
    fn append(
        &mut self,
        decisions: Vec<Option<Decision>>,
    ) -> Result<Vec<Option<Result<Appended, SpoolError>>>, String> {
        let mut framed = Vec::new();
        let mut offsets = Vec::new();
        for d in decisions.iter().flatten() {
            if let Decision::Stored(r) = d {
                let off = framed.len() as u64;
                r.encode(&mut framed);
                offsets.push((off, (framed.len() as u64 - off) as u32));
            }
        }
        if !offsets.is_empty() {
            // A full spool fails the whole batch: a duplicate may name an
            // event of this batch that is not stored.
            self.check_room(framed.len() as u64)?;
            let first = self.next_seq;
            let before = self.log.segment();
            let end = self.log.end();
            self.log.roll_if_full(first).map_err(|e| e.to_string())?;
            if self.log.segment() != before {
                self.sealed_bytes += end;
            }
            let at = self.log.append(&framed).map_err(|e| e.to_string())?;
            let segment = self.log.segment();
            self.next_seq += offsets.len() as i64;
            let mut offsets = offsets.into_iter();
            for d in decisions.iter().flatten() {
                if let (Decision::Stored(r), Some((off, len))) = (d, offsets.next()) {
                    self.keys.insert(r.seq, r.received_at_ms, r.dedup, r.sig);
                    self.uncatalogued.push((r.clone(), segment, at + off, len));
                }
            }
        }
        Ok(decisions
            .into_iter()
            .map(|d| match d {
                Some(Decision::Stored(r)) => Some(Ok(Appended::Stored {
                    id: r.id.to_string(),
                })),
                Some(Decision::Answer(a)) => Some(Ok(a)),
                None => None,
            })
            .collect())
    }

    /// Commits the catalog rows of every synced record not yet in the
    /// catalog, with the batch's ledger commands and probe, in one
    /// transaction. On success delivery is told of the new events.
    fn commit_catalog(
        &mut self,
        batch: &mut [Command],
        resigned: &[(String, String)],
        now: i64,
    ) -> Result<(), SpoolError> {
        let has_probe = batch.iter().any(|c| matches!(c, Command::Probe(..)));
        let committed = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for cmd in batch.iter_mut() {
                if let Command::Exec(f, _) = cmd {
                    let f = std::mem::replace(f, Box::new(|_| Ok(())));
                    f(&tx)?;
                }
            }
            for (r, segment, offset, len) in &self.uncatalogued {
                schema::insert_catalog_row(&tx, r, *segment, *offset, *len)?;
            }
            for (sig, dedup) in self.unsaved_resigned.iter().chain(resigned) {
                tx.prepare_cached(
                    "INSERT INTO signatures (sig_key, dedup_key, seen_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sig_key) DO NOTHING",
                )?
                .execute(params![sig, dedup, now])?;
            }
            if has_probe {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('probed_at_ms', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([now])?;
            }
            schema::set_log_marks(&tx, self.next_seq, self.log.segment(), self.log.end())?;
            tx.commit()
        })();
        // A re-signed repeat's signature is remembered either way: it was
        // answered, and the vendor may retry it.
        for (sig, dedup) in resigned {
            self.keys.insert_resigned(key128(sig), key128(dedup), now);
        }
        if let Err(e) = committed {
            // Kept, like the rows, for the next commit.
            self.unsaved_resigned.extend(resigned.iter().cloned());
            tracing::error!(
                error = %e,
                waiting = self.uncatalogued.len(),
                "spool catalog commit failed; the events are in the log and are catalogued with the next commit"
            );
            return Err(SpoolError::Write(e.to_string()));
        }
        self.unsaved_resigned.clear();
        if !self.uncatalogued.is_empty() {
            self.uncatalogued.clear();
            let last = self.next_seq - 1;
            self.committed.send_if_modified(|v| {
                let changed = last > *v;
                *v = (*v).max(last);
                changed
            });
        }
        Ok(())
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        if !self.uncatalogued.is_empty() {
            // Records whose rows are not committed must not lose their segment.
            return;
        }
        match maintenance::prune(&mut self.conn, &self.options, now_ms(), self.next_seq) {
            Ok((_, upto)) => {
                if upto >= self.next_seq - 1 && self.log.end() > 0 {
                    // Every record of the current segment is gone too: start
                    // a new one so the old one can be removed.
                    let end = self.log.end();
                    match self.log.roll(self.next_seq) {
                        Ok(()) => self.sealed_bytes += end,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start a new log segment; will retry")
                        }
                    }
                }
                match maintenance::remove_segments(self.log.dir(), self.log.segment(), upto) {
                    Ok(freed) => self.sealed_bytes = self.sealed_bytes.saturating_sub(freed),
                    Err(e) => {
                        tracing::warn!(error = %e, "removing pruned log segments failed; will retry")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "spool prune failed; will retry"),
        }
    }
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
        let (envelope, resource) = (ev.envelope(), ev.resource.clone());
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
        let recent = Arc::new(RecentKeys::default());
        let (log, _) = Log::open(&crate::spool::log::dir_of(dir), None, 1).unwrap();
        let w = Writer::new(
            migrated(dir),
            options(),
            Arc::clone(&recent),
            log,
            Keys::default(),
            1,
        )
        .unwrap();
        let committed = w.committed.subscribe();
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

    /// Appends are durable once the log is synced, so a ledger command that
    /// fails the catalog's transaction fails only the ledger commands: the
    /// appends are answered `Stored`, their rows wait and are committed
    /// with the next batch, and only then does delivery see them.
    #[test]
    fn a_failing_ledger_command_fails_its_transaction_but_not_the_synced_appends() {
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
            assert!(matches!(answer(reply), Ok(Appended::Stored { .. })));
        }
        for reply in [ok_rx, bad_rx] {
            assert!(matches!(answer(reply), Err(SpoolError::Write(_))));
        }
        let rows = |w: &Writer| -> i64 {
            w.conn
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM meta WHERE key = 'x')",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(rows(&w), 0, "the transaction is rolled back");
        assert_eq!(*committed.borrow(), 0, "delivery does not see them yet");
        let windows = Windows::at(now_ms(), &options());
        assert!(matches!(
            recent.lookup(&event(1).dedup_key, None, windows),
            Recent::Duplicate { .. }
        ));

        // The next batch commits its own rows and the waiting ones.
        let third = append(&mut batch, event(3));
        w.process(&mut batch);
        assert!(matches!(answer(third), Ok(Appended::Stored { .. })));
        assert_eq!(rows(&w), 3);
        assert_eq!(*committed.borrow(), 3);
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
