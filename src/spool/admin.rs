//! Operator access to a spool, for the CLI: list and replay dead letters,
//! show an event. Safe while the server runs: SQLite WAL lets this process
//! read, and its few writes wait for the server's writer between commits.

use super::reader::{CatalogRow, ROW_COLUMNS};
use super::{FILE_NAME, SpoolError, StoredEvent, now_ms, open_connection};
use crate::store::inspect::{Attempt, EventFilter, SinkMarks};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;

/// A spool opened by the CLI.
pub struct Admin {
    conn: Connection,
    log_dir: std::path::PathBuf,
}

/// One dead letter, as `dead-letters list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub sink: String,
    pub event_id: String,
    pub kind: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    /// RFC 3339 UTC.
    pub dead_at: String,
    /// True once `replay` was asked and the sink has not finished it.
    pub replay_pending: bool,
}

impl Admin {
    /// Opens the spool in `dir`; it must exist (the CLI never creates one).
    pub fn open(dir: &Path) -> Result<Admin, SpoolError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(SpoolError::Open {
                path,
                reason: "no spool here (check spool.dir in the config)".into(),
            });
        }
        let conn = open_connection(&path, false).map_err(|e| SpoolError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Admin {
            conn,
            log_dir: super::log::dir_of(dir),
        })
    }

    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetterRow>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sink, event_id, envelope, attempts, last_status, last_error, dead_at_ms,
                        replay_requested_at_ms IS NOT NULL
                 FROM dead_letters WHERE ?1 IS NULL OR sink = ?1 ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([sink], |r| {
                let envelope: String = r.get(2)?;
                Ok(DeadLetterRow {
                    sink: r.get(0)?,
                    event_id: r.get(1)?,
                    kind: kind_of(&envelope),
                    attempts: r.get(3)?,
                    last_status: r.get(4)?,
                    last_error: r.get(5)?,
                    dead_at: crate::clock::rfc3339(r.get(6)?),
                    replay_pending: r.get(7)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Event ids of the dead letters a replay would take.
    pub fn replay_candidates(
        &self,
        sink: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sink, event_id FROM dead_letters
                 WHERE (?1 IS NULL OR sink = ?1) AND (?2 IS NULL OR event_id = ?2)
                   AND replay_requested_at_ms IS NULL
                 ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![sink, event_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Marks these dead letters for redelivery; the running server's
    /// workers pick them up within a second.
    pub fn request_replay(&mut self, letters: &[(String, String)]) -> Result<usize, SpoolError> {
        let now = now_ms();
        let tx = self.conn.transaction().map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE dead_letters SET replay_requested_at_ms = ?1
                     WHERE sink = ?2 AND event_id = ?3 AND replay_requested_at_ms IS NULL",
                )
                .map_err(err)?;
            for (sink, id) in letters {
                n += stmt.execute(params![now, sink, id]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Reads catalog rows from the log; a corrupt record is an error that says so.
    fn load(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredEvent>, SpoolError> {
        let rows = {
            let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
            let rows = stmt.query_map(params, CatalogRow::from_row).map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (row, outcome) in super::reader::load(&self.log_dir, rows)? {
            match outcome {
                Ok(e) => out.push(e),
                Err(reason) => {
                    super::reader::report_corrupt(&self.conn, &row, &reason, None);
                    return Err(SpoolError::Corrupt(format!(
                        "event {} is corrupt in the store: {reason}",
                        row.id()
                    )));
                }
            }
        }
        Ok(out)
    }

    /// An event's envelope by id, from the events or, once pruned, from
    /// dead letters. A corrupt record is an error that says so.
    pub fn event(&self, id: &str) -> Result<Option<String>, SpoolError> {
        if let Some(e) = self.stored_event(id)? {
            return Ok(Some(e.envelope));
        }
        self.conn
            .query_row(
                "SELECT envelope FROM dead_letters WHERE event_id = ?1 LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
    }

    /// Where each configured sink stands with this event: delivered, pending or dead.
    pub fn event_status(&self, id: &str) -> Result<Vec<(String, String)>, SpoolError> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare("SELECT name, cursor FROM sinks WHERE active = 1 ORDER BY name")
            .map_err(err)?;
        let sinks = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut out = Vec::new();
        for (name, cursor) in sinks {
            let dead: bool = self
                .conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE sink = ?1 AND event_id = ?2)",
                    params![name, id],
                    |r| r.get(0),
                )
                .map_err(err)?;
            let state = if dead {
                "dead-letter"
            } else {
                match seq {
                    Some(s) if s > cursor => "pending",
                    _ => "delivered",
                }
            };
            out.push((name, state.to_owned()));
        }
        Ok(out)
    }
}

/// What the admin API reads: events newest first, one sink's marks.
impl Admin {
    /// Up to `limit` events matching `filter`, newest first, before the
    /// event `before` (by id; when that event is gone, before the first
    /// event stored after it).
    /// Events stored since `since_ms`, counted per minute (ms / 60 000) and family.
    pub fn per_minute(&self, since_ms: i64) -> Result<Vec<(i64, String, u64)>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT received_at_ms / 60000, family, COUNT(*) FROM events
                 WHERE received_at_ms >= ?1
                 GROUP BY received_at_ms / 60000, family",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![since_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    pub fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM events
                 WHERE (?1 IS NULL OR family = ?1)
                   AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR app_id = ?3)
                   AND (?4 IS NULL OR resource = ?4 OR id = ?4)
                   AND (?5 IS NULL OR seq < COALESCE(
                         (SELECT seq FROM events WHERE id = ?5),
                         (SELECT MIN(seq) FROM events WHERE id > ?5),
                         9223372036854775807))
                 ORDER BY seq DESC LIMIT ?6"
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(
                params![
                    filter.family,
                    filter.kind,
                    filter.app_id,
                    filter.q,
                    before,
                    limit as i64
                ],
                CatalogRow::from_row,
            )
            .map_err(err)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
        // A list leaves a corrupt record out (reported); `event` names it.
        let mut out = Vec::with_capacity(rows.len());
        for (row, outcome) in super::reader::load(&self.log_dir, rows)? {
            match outcome {
                Ok(e) => out.push(e),
                Err(reason) => super::reader::report_corrupt(&self.conn, &row, &reason, None),
            }
        }
        Ok(out)
    }

    /// One stored event by id. A corrupt record is an error that says so.
    pub fn stored_event(&self, id: &str) -> Result<Option<StoredEvent>, SpoolError> {
        Ok(self
            .load(
                &format!("SELECT {ROW_COLUMNS} FROM events WHERE id = ?1"),
                [id],
            )?
            .pop())
    }

    /// The seq to resume a tail after, given the last event id a client
    /// saw: that event's seq, or (when it is gone) the newest seq stored
    /// before it in id order (ids are time-ordered UUIDv7).
    pub fn resume_after(&self, id: &str) -> Result<i64, SpoolError> {
        self.conn
            .query_row(
                "SELECT COALESCE((SELECT seq FROM events WHERE id = ?1),
                                 (SELECT MAX(seq) FROM events WHERE id < ?1), 0)",
                [id],
                |r| r.get(0),
            )
            .map_err(err)
    }

    /// Where `sink` stands: its cursor, backoff, retried and dead events.
    pub fn sink_marks(&self, sink: &str) -> Result<SinkMarks, SpoolError> {
        let (cursor, next_attempt_at_ms): (i64, i64) = self
            .conn
            .query_row(
                "SELECT cursor, next_attempt_at_ms FROM sinks WHERE name = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?
            .unwrap_or((0, 0));
        let attempt = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                Attempt {
                    attempts: r.get(1)?,
                    last_status: r.get(2)?,
                    last_error: r.get(3)?,
                    dead_at_ms: r.get(4)?,
                },
            ))
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT event_id, attempts, last_status, last_error, NULL FROM attempts WHERE sink = ?1",
            )
            .map_err(err)?;
        let attempts = stmt
            .query_map([sink], attempt)
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT event_id, attempts, last_status, last_error, dead_at_ms
                 FROM dead_letters WHERE sink = ?1",
            )
            .map_err(err)?;
        let dead = stmt
            .query_map([sink], attempt)
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(SinkMarks {
            sink: sink.to_owned(),
            done_upto: cursor,
            next_attempt_at_ms,
            attempts,
            dead,
        })
    }
}

/// The `kind` of a serialized envelope (empty when it has none).
pub(crate) fn kind_of(envelope: &str) -> String {
    #[derive(serde::Deserialize)]
    struct KindOnly {
        kind: String,
    }
    serde_json::from_str::<KindOnly>(envelope)
        .map(|k| k.kind)
        .unwrap_or_default()
}

fn err(e: rusqlite::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}
