//! The local store's delivery feed: a sink's cursor in the SQLite spool.
//!
//! Reads run on a connection of their own, off the async threads; writes
//! (cursor, backoff, dead letters) are group-committed by the spool's writer
//! with the appends.

use super::{DeadLetter, FailedAttempt, SinkState, SpoolError, StoredEvent};
use crate::spool::{Reader, Spool};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One sink's feed from the local spool.
pub struct LocalFeed {
    sink: String,
    spool: Spool,
    reader: Arc<Mutex<Reader>>,
    committed: watch::Receiver<i64>,
    /// Every event with seq <= cursor is done for the sink.
    cursor: i64,
    /// The highest seq handed out by `next` and not yet `done`.
    handed_out: i64,
    /// The last seq of the page `next` read (records left out included).
    page_end: i64,
}

impl LocalFeed {
    pub async fn open(spool: &Spool, sink: &str) -> Result<(LocalFeed, SinkState), SpoolError> {
        let feed = LocalFeed {
            sink: sink.to_owned(),
            spool: spool.clone(),
            reader: Arc::new(Mutex::new(spool.reader()?)),
            committed: spool.committed(),
            cursor: 0,
            handed_out: 0,
            page_end: 0,
        };
        let lookup = sink.to_owned();
        let (cursor, (failures, next_attempt_at_ms), attempts) = feed
            .read(move |r| {
                Ok((
                    r.cursor(&lookup)?,
                    r.sink_state(&lookup)?,
                    r.attempts(&lookup)?,
                ))
            })
            .await?;
        let cursor = cursor.unwrap_or(0);
        let feed = LocalFeed {
            cursor,
            handed_out: cursor,
            page_end: cursor,
            ..feed
        };
        let state = SinkState {
            failures,
            next_attempt_at_ms,
            attempts,
        };
        Ok((feed, state))
    }

    pub async fn next(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        self.committed.borrow_and_update();
        loop {
            let after = self.cursor;
            let (batch, page_end) = self.read(move |r| r.page_after(after, max)).await?;
            let page_end = page_end.unwrap_or(after);
            if batch.is_empty() && page_end > after {
                // A page of records that are corrupt (reported) or gone: the
                // sink moves past them rather than waiting on them forever.
                self.cursor = page_end;
                self.spool.advance(&self.sink, page_end).await?;
                continue;
            }
            self.handed_out = batch.last().map_or(after, |e| e.seq);
            self.page_end = page_end;
            return Ok(batch);
        }
    }

    pub async fn wait(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.committed.changed()).await;
    }

    pub async fn done(
        &mut self,
        batch: &[StoredEvent],
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        // The cursor must not pass an event before its dead letter is stored.
        if !dead.is_empty() {
            self.spool.dead_letter(&self.sink, dead).await?;
        }
        let mut last = batch.last().map_or(self.cursor, |e| e.seq);
        if last == self.handed_out {
            // Done with the whole page, corrupt records after its last event included.
            last = last.max(self.page_end);
        }
        // Delivered either way: a failure to record it only means a re-delivery.
        self.cursor = last.max(self.cursor);
        self.spool.advance(&self.sink, self.cursor).await
    }

    pub async fn record_failure(
        &mut self,
        failures: u32,
        next_attempt_at_ms: i64,
        failed: Vec<FailedAttempt>,
    ) -> Result<(), SpoolError> {
        self.spool
            .record_failure(&self.sink, failures, next_attempt_at_ms, failed)
            .await
    }

    pub async fn replays(&mut self, max: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        let sink = self.sink.clone();
        self.read(move |r| r.replays(&sink, max)).await
    }

    pub async fn replayed(
        &mut self,
        delivered: Vec<String>,
        dead: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        self.spool.replayed(&self.sink, delivered).await?;
        if !dead.is_empty() {
            self.spool.dead_letter(&self.sink, dead).await?;
        }
        Ok(())
    }

    pub async fn dead_letter_count(&mut self) -> Result<i64, SpoolError> {
        let sink = self.sink.clone();
        self.read(move |r| r.dead_letter_count(&sink)).await
    }

    pub fn position(&self) -> i64 {
        self.cursor
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let r = reader
                .lock()
                .map_err(|_| SpoolError::Read("reader poisoned".into()))?;
            f(&r)
        })
        .await
        .map_err(|e| SpoolError::Read(e.to_string()))?
    }
}
