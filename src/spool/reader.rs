//! [`Reader`]: a read connection of its own and the log, so delivery
//! workers and the CLI read while the writer commits (WAL).
//!
//! Events are read by their catalog rows: the rows say where each record
//! is, the records are read from the log (a run of neighbours with one
//! read), checked against their CRC and the row, and rendered to envelopes.

use super::log::{self, BodyKind, LogError, Record};
use super::{SpoolError, open_connection};
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

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

/// The catalog columns [`CatalogRow::from_row`] reads, in order.
pub(super) const ROW_COLUMNS: &str =
    "seq, id, resource, received_at_ms, segment, offset, len, corrupt";

/// Where one event's record is, as the catalog says.
#[derive(Debug, Clone)]
pub(super) struct CatalogRow {
    seq: i64,
    id: String,
    resource: Option<String>,
    received_at_ms: i64,
    segment: i64,
    offset: u64,
    len: u64,
    corrupt: Option<String>,
}

impl CatalogRow {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CatalogRow> {
        Ok(CatalogRow {
            seq: r.get(0)?,
            id: r.get(1)?,
            resource: r.get(2)?,
            received_at_ms: r.get(3)?,
            segment: r.get(4)?,
            offset: r.get::<_, i64>(5)? as u64,
            len: r.get::<_, i64>(6)? as u64,
            corrupt: r.get(7)?,
        })
    }
}

/// The envelope of a checked record.
fn envelope_of(record: &Record) -> Option<String> {
    match record.body_kind {
        BodyKind::Envelope => Some(record.body.clone()),
        BodyKind::Raw => {
            let id = record.id.to_string();
            let dedup = format!("{:032x}", record.dedup);
            let meta = crate::event::Meta {
                id: &id,
                received_at_ms: record.received_at_ms,
                family: &record.family,
                kind: &record.kind,
                app_id: &record.app_id,
                dedup_key: &dedup,
            };
            crate::event::render(meta, &record.body)
        }
    }
}

/// A catalog row and what its record turned out to be: the event, or why it is corrupt.
pub(super) type Loaded = (CatalogRow, Result<StoredEvent, String>);

/// Reads `rows` from the log.
pub(super) fn load(log_dir: &Path, rows: Vec<CatalogRow>) -> Result<Vec<Loaded>, SpoolError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut i = 0;
    while i < rows.len() {
        // A run of rows whose records are neighbours in one segment.
        let mut j = i + 1;
        while j < rows.len()
            && rows[j].segment == rows[i].segment
            && rows[j].offset == rows[j - 1].offset + rows[j - 1].len
        {
            j += 1;
        }
        let start = rows[i].offset;
        let end = rows[j - 1].offset + rows[j - 1].len;
        let bytes = match log::read_at(log_dir, rows[i].segment, start, end - start) {
            Ok(b) => Some(b),
            // Pruned while we looked: the rows are gone too.
            Err(LogError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(LogError::Io(e)) => return Err(SpoolError::Read(e.to_string())),
            Err(corrupt @ LogError::Corrupt { .. }) => {
                for row in rows[i..j].iter().cloned() {
                    out.push((row, Err(corrupt.to_string())));
                }
                i = j;
                continue;
            }
        };
        for row in rows[i..j].iter().cloned() {
            let Some(bytes) = &bytes else { continue };
            if let Some(reason) = &row.corrupt {
                out.push((row.clone(), Err(reason.clone())));
                continue;
            }
            let from = (row.offset - start) as usize;
            let slice = &bytes[from..from + row.len as usize];
            let outcome = match log::decode_run(row.segment, row.offset, slice) {
                Ok(mut records) if records.len() == 1 => {
                    let (record, _) = records.remove(0);
                    if record.seq != row.seq || record.id.to_string() != row.id {
                        Err(format!(
                            "the record at {} byte {} is seq {}, not {}",
                            log::segment_name(row.segment),
                            row.offset,
                            record.seq,
                            row.seq
                        ))
                    } else {
                        envelope_of(&record)
                            .map(|envelope| StoredEvent {
                                seq: row.seq,
                                id: row.id.clone(),
                                received_at_ms: row.received_at_ms,
                                resource: row.resource.clone(),
                                envelope,
                            })
                            .ok_or_else(|| "the stored payload does not render".to_owned())
                    }
                }
                Ok(_) => Err("the catalog's length spans more than one record".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            out.push((row, outcome));
        }
        i = j;
    }
    Ok(out)
}

/// Marks a corrupt record in the catalog and reports it once: a log line and the metric.
pub(super) fn report_corrupt(
    conn: &Connection,
    row: &CatalogRow,
    reason: &str,
    counter: Option<&Counter>,
) {
    if row.corrupt.is_some() {
        return;
    }
    let first = conn
        .execute(
            "UPDATE events SET corrupt = ?1 WHERE seq = ?2 AND corrupt IS NULL",
            params![reason, row.seq],
        )
        .unwrap_or(1);
    if first > 0 {
        tracing::error!(
            event_id = %row.id,
            seq = row.seq,
            reason,
            "a stored event's record is corrupt: it is not delivered (see `hookrelay events show`)"
        );
        if let Some(c) = counter {
            c.inc();
        }
    }
}

/// A read connection: delivery workers and the CLI read through one each.
pub struct Reader {
    conn: Connection,
    log_dir: PathBuf,
    corrupt: Option<Counter>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, SpoolError> {
        let conn = open_connection(path, false).map_err(|e| SpoolError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let log_dir = log::dir_of(path.parent().unwrap_or(Path::new(".")));
        Ok(Reader {
            conn,
            log_dir,
            corrupt: None,
        })
    }

    /// Counts the corrupt records this reader finds in `counter`.
    pub fn counting(mut self, counter: Counter) -> Reader {
        self.corrupt = Some(counter);
        self
    }

    /// Reads rows from the log; corrupt records are reported and left out.
    fn events(&self, rows: Vec<CatalogRow>) -> Result<Vec<StoredEvent>, SpoolError> {
        let mut out = Vec::with_capacity(rows.len());
        for (row, outcome) in load(&self.log_dir, rows)? {
            match outcome {
                Ok(e) => out.push(e),
                Err(reason) => report_corrupt(&self.conn, &row, &reason, self.corrupt.as_ref()),
            }
        }
        Ok(out)
    }

    fn rows(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<CatalogRow>, SpoolError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(read_err)?;
        let rows = stmt
            .query_map(params, CatalogRow::from_row)
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    /// Up to `limit` events with `seq > after`, in order; see [`Reader::page_after`].
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, SpoolError> {
        Ok(self.page_after(after, limit)?.0)
    }

    /// Up to `limit` catalog rows with `seq > after`, read from the log, and
    /// the seq of the page's last row. A record that is corrupt (reported:
    /// log line, metric, catalog mark) or gone is left out of the events,
    /// so a reader moves on to the last seq, not the last event returned.
    pub fn page_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, Option<i64>), SpoolError> {
        let rows = self.rows(
            &format!("SELECT {ROW_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            params![after, limit as i64],
        )?;
        let last = rows.last().map(|r| r.seq);
        Ok((self.events(rows)?, last))
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
        let rows = self.rows(
            &format!("SELECT {ROW_COLUMNS} FROM events WHERE id = ?1"),
            [id],
        )?;
        Ok(self.events(rows)?.pop())
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

/// Maps a dead letter row of (id, event_id, resource, envelope, dead_at_ms).
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
        let (envelope, received_at_ms) = (ev.envelope(), ev.received_at_ms);
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
