//! Delivery bookkeeping: which sinks exist, how far each got (its cursor),
//! its backoff and the attempts of events that failed, and its dead
//! letters. The [`Spool`](super::Spool) handle runs these functions as
//! commands in the writer's transaction, group-committed with appends;
//! [`register_sinks`] runs once at open, before the writer starts.

use super::StoredEvent;
use rusqlite::{Connection, Transaction, params};

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

/// Marks exactly `sinks` (name, kind) active. A sink new to the spool
/// starts at the newest event; a sink no longer configured stays, inactive,
/// and no longer holds back pruning.
pub(super) fn register_sinks(
    conn: &mut Connection,
    sinks: &[(String, String)],
    newest: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute("UPDATE sinks SET active = 0", [])?;
    for (name, kind) in sinks {
        tx.execute(
            "INSERT INTO sinks (name, kind, cursor, active)
             VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (name) DO UPDATE SET active = 1, kind = excluded.kind",
            params![name, kind, newest],
        )?;
    }
    tx.commit()
}

/// Moves the sink's cursor forward to `cursor` (never back) and clears its
/// backoff and every attempt persisted for it.
pub(super) fn advance(tx: &Transaction<'_>, sink: &str, cursor: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE sinks SET cursor = MAX(cursor, ?1), failures = 0, next_attempt_at_ms = 0
         WHERE name = ?2",
    )?
    .execute(params![cursor, sink])?;
    tx.prepare_cached("DELETE FROM attempts WHERE sink = ?1")?
        .execute([sink])?;
    Ok(())
}

/// Persists the sink's backoff and the attempts of the events that failed.
pub(super) fn record_failure(
    tx: &Transaction<'_>,
    sink: &str,
    failures: u32,
    next_attempt_at_ms: i64,
    failed: Vec<FailedAttempt>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE sinks SET failures = ?1, next_attempt_at_ms = ?2 WHERE name = ?3")?
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
}

/// Stores dead letters for `sink`, dead at `now` (Unix ms). A letter for an
/// event already dead for this sink adds its attempts to the earlier ones
/// and clears a pending replay request.
pub(super) fn dead_letter(
    tx: &Transaction<'_>,
    sink: &str,
    letters: Vec<DeadLetter>,
    now: i64,
) -> rusqlite::Result<()> {
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
}

/// Removes the sink's dead letters of these events (a replay delivered them).
pub(super) fn replayed(
    tx: &Transaction<'_>,
    sink: &str,
    event_ids: Vec<String>,
) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("DELETE FROM dead_letters WHERE sink = ?1 AND event_id = ?2")?;
    for id in event_ids {
        stmt.execute(params![sink, id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::admin::Admin;
    use crate::spool::test_support::{event, open, options, store};
    use crate::spool::{Reader, Spool, SpoolOptions, now_ms};

    fn failed(event_id: &str, attempts: u32) -> FailedAttempt {
        FailedAttempt {
            event_id: event_id.to_owned(),
            attempts,
            last_status: Some(502),
            last_error: "bad gateway".into(),
        }
    }

    async fn dead(spool: &Spool, id: &str) -> DeadLetter {
        DeadLetter {
            event: spool.reader().unwrap().event_by_id(id).unwrap().unwrap(),
            attempts: 3,
            last_status: Some(400),
            last_error: "rejected".into(),
        }
    }

    #[tokio::test]
    async fn advance_moves_the_cursor_only_forward_and_clears_backoff_and_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let mut ids = Vec::new();
        for n in 1..=3 {
            ids.push(store(&spool, event(n)).await);
        }
        let later = now_ms() + 60_000;
        spool
            .record_failure("s", 2, later, vec![failed(&ids[2], 2)])
            .await
            .unwrap();
        spool.advance("s", 2).await.unwrap();
        let reader = spool.reader().unwrap();
        assert_eq!(reader.cursor("s").unwrap(), Some(2));
        assert_eq!(reader.sink_state("s").unwrap(), (0, 0));
        // Every attempt of the sink goes, also those of events past the cursor.
        assert!(reader.attempts("s").unwrap().is_empty());

        spool.advance("s", 1).await.unwrap();
        assert_eq!(reader.cursor("s").unwrap(), Some(2), "never backwards");
        spool.advance("s", 3).await.unwrap();
        assert_eq!(reader.cursor("s").unwrap(), Some(3));
        spool.close().await;
    }

    #[tokio::test]
    async fn record_failure_persists_backoff_and_attempts_for_a_reopened_reader() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let a = store(&spool, event(1)).await;
        let b = store(&spool, event(2)).await;
        spool
            .record_failure("s", 1, 1_000, vec![failed(&a, 1)])
            .await
            .unwrap();
        spool
            .record_failure("s", 2, 2_000, vec![failed(&a, 2), failed(&b, 1)])
            .await
            .unwrap();
        let path = spool.path().to_owned();
        spool.close().await;

        let reader = Reader::open(&path).unwrap();
        assert_eq!(reader.sink_state("s").unwrap(), (2, 2_000));
        let attempts = reader.attempts("s").unwrap();
        assert_eq!((attempts[&a], attempts[&b]), (2, 1));
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            reader.cursor("s").unwrap(),
            Some(0),
            "a failure never moves the cursor"
        );
    }

    #[tokio::test]
    async fn a_dead_letter_is_removed_once_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s", "t"]);
        let id = store(&spool, event(1)).await;
        spool
            .dead_letter("s", vec![dead(&spool, &id).await])
            .await
            .unwrap();
        spool
            .dead_letter("t", vec![dead(&spool, &id).await])
            .await
            .unwrap();
        let reader = spool.reader().unwrap();
        assert_eq!(reader.dead_letter_count("s").unwrap(), 1);

        spool.replayed("s", vec![id.clone()]).await.unwrap();
        assert_eq!(reader.dead_letter_count("s").unwrap(), 0);
        assert_eq!(
            reader.dead_letter_count("t").unwrap(),
            1,
            "only that sink's"
        );
        spool.close().await;
    }

    #[tokio::test]
    async fn a_second_dead_letter_for_an_event_adds_its_attempts_and_clears_a_replay_request() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["s"]);
        let id = store(&spool, event(1)).await;
        spool
            .dead_letter("s", vec![dead(&spool, &id).await])
            .await
            .unwrap();
        let mut admin = Admin::open(dir.path()).unwrap();
        assert_eq!(
            admin.request_replay(&[("s".into(), id.clone())]).unwrap(),
            1
        );
        spool
            .dead_letter("s", vec![dead(&spool, &id).await])
            .await
            .unwrap();
        let rows = admin.dead_letters(Some("s")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].attempts, rows[0].replay_pending), (6, false));
        spool.close().await;
    }

    #[tokio::test]
    async fn dead_letters_survive_pruning_of_their_event() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            dedup_window: std::time::Duration::from_millis(1),
            signature_window: std::time::Duration::from_millis(1),
            ..options()
        };
        let spool = open(dir.path(), options, &["s"]);
        let old = crate::spool::NewEvent {
            received_at_ms: now_ms() - 60_000,
            ..event(1)
        };
        let envelope = old.envelope();
        let id = store(&spool, old).await;
        spool
            .dead_letter("s", vec![dead(&spool, &id).await])
            .await
            .unwrap();
        spool.advance("s", 1).await.unwrap();
        spool.prune_now().await.unwrap();

        let reader = spool.reader().unwrap();
        assert!(
            reader.event_by_id(&id).unwrap().is_none(),
            "the event was pruned"
        );
        assert_eq!(reader.dead_letter_count("s").unwrap(), 1);
        let admin = Admin::open(dir.path()).unwrap();
        assert_eq!(admin.event(&id).unwrap(), Some(envelope));
        spool.close().await;
    }

    #[tokio::test]
    async fn a_new_sink_starts_at_the_newest_event_and_a_dropped_one_goes_inactive() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), options(), &["old"]);
        store(&spool, event(1)).await;
        store(&spool, event(2)).await;
        spool.close().await;

        let spool = open(dir.path(), options(), &["new"]);
        let reader = spool.reader().unwrap();
        assert_eq!(reader.cursor("new").unwrap(), Some(2));
        assert_eq!(reader.cursor("old").unwrap(), Some(0));
        let admin = Admin::open(dir.path()).unwrap();
        let id = reader.events_after(0, 1).unwrap()[0].id.clone();
        let status = admin.event_status(&id).unwrap();
        assert_eq!(status, vec![("new".to_owned(), "delivered".to_owned())]);
        spool.close().await;
    }
}
