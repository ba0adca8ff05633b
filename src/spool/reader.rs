//! [`Reader`]: a read connection of its own, so delivery workers and the
//! CLI read while the writer commits (WAL).

use super::{SpoolError, open_connection};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

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
            .query_map(params![after, limit as i64], stored_event)
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
                stored_event,
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
            .query_map(params![sink, limit as i64], stored_event)
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

/// Maps a row of (seq, id, resource, envelope, received_at_ms).
fn stored_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        id: r.get(1)?,
        resource: r.get(2)?,
        envelope: r.get(3)?,
        received_at_ms: r.get(4)?,
    })
}

fn read_err(e: rusqlite::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::spool::DeadLetter;
    use crate::spool::admin::Admin;
    use crate::spool::test_support::{event, open, options, store};

    #[tokio::test]
    async fn events_after_pages_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let mut ids = Vec::new();
        for n in 1..=5 {
            ids.push(store(&spool, event(n)).await);
        }
        let reader = spool.reader().unwrap();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = reader.events_after(after, 2).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().unwrap().seq;
            seen.extend(page.into_iter().map(|e| (e.seq, e.id)));
        }
        let expected: Vec<_> = (1..=5).zip(ids).collect();
        assert_eq!(seen, expected);
        assert!(reader.events_after(5, 10).unwrap().is_empty());
        spool.close().await;
    }

    #[tokio::test]
    async fn event_by_id_finds_a_stored_event_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let ev = event(7);
        let (envelope, received_at_ms) = (ev.envelope.clone(), ev.received_at_ms);
        let id = store(&spool, ev).await;
        let reader = spool.reader().unwrap();
        let got = reader.event_by_id(&id).unwrap().unwrap();
        assert_eq!(
            (got.seq, got.envelope, got.received_at_ms),
            (1, envelope, received_at_ms)
        );
        assert_eq!(got.resource.as_deref(), Some("r7"));
        assert!(reader.event_by_id("no-such-id").unwrap().is_none());
        spool.close().await;
    }

    #[tokio::test]
    async fn pending_after_counts_the_events_past_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let reader = spool.reader().unwrap();
        assert_eq!(reader.pending_after(0).unwrap(), 0);
        for n in 1..=4 {
            store(&spool, event(n)).await;
        }
        assert_eq!(reader.pending_after(0).unwrap(), 4);
        assert_eq!(reader.pending_after(3).unwrap(), 1);
        assert_eq!(reader.pending_after(4).unwrap(), 0);
        spool.close().await;
    }

    #[tokio::test]
    async fn an_unknown_sink_has_no_cursor_no_backoff_and_no_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let reader = spool.reader().unwrap();
        assert_eq!(reader.cursor("nope").unwrap(), None);
        assert_eq!(reader.sink_state("nope").unwrap(), (0, 0));
        assert!(reader.attempts("nope").unwrap().is_empty());
        assert_eq!(reader.dead_letter_count("nope").unwrap(), 0);
        spool.close().await;
    }

    #[tokio::test]
    async fn replays_lists_only_the_dead_letters_an_operator_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let reader = spool.reader().unwrap();
        let mut letters = Vec::new();
        for n in 1..=3 {
            let id = store(&spool, event(n)).await;
            letters.push(DeadLetter {
                event: reader.event_by_id(&id).unwrap().unwrap(),
                attempts: 1,
                last_status: None,
                last_error: "timeout".into(),
            });
        }
        let ids: Vec<String> = letters.iter().map(|d| d.event.id.clone()).collect();
        spool.dead_letter("s", letters).await.unwrap();
        assert!(reader.replays("s", 10).unwrap().is_empty());

        let mut admin = Admin::open(dir.path()).unwrap();
        let asked = [
            ("s".to_owned(), ids[2].clone()),
            ("s".to_owned(), ids[0].clone()),
        ];
        assert_eq!(admin.request_replay(&asked).unwrap(), 2);
        let replays = reader.replays("s", 10).unwrap();
        let got: Vec<&str> = replays.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            got,
            [ids[0].as_str(), ids[2].as_str()],
            "in dead-letter order"
        );
        assert_eq!(reader.replays("s", 1).unwrap().len(), 1);
        spool.close().await;
    }
}
