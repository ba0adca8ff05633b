//! A spool written by the previous release (SQLite only, schema version 1)
//! is taken over on the first start of this one: undelivered events (with
//! the exact envelopes that release stored), sink cursors, backoff, dead
//! letters, dedup keys and used signatures all carry over.
//!
//! The fixture in `tests/fixtures/spool-v1/` was made with the real v1
//! binary over HTTP (see its README). Its times are shifted to "now" in a
//! copy first, so the 24 h dedup window still covers them whenever this runs.

use hookrelay::spool::admin::Admin;
use hookrelay::spool::{Appended, Body, NewEvent, Spool, SpoolOptions, now_ms};
use hookrelay::verify::{Verified, zego};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-v1")
}

fn manifest(variant: &str) -> Value {
    let text = std::fs::read_to_string(fixture().join("manifest.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["variants"][variant].clone()
}

/// Copies a variant's files and moves every time in them to just before now.
fn copy(variant: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture().join(variant)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join("spool.sqlite3")).unwrap();
    let newest: i64 = conn
        .query_row("SELECT MAX(received_at_ms) FROM events", [], |r| r.get(0))
        .unwrap();
    let shift = now_ms() - 60_000 - newest;
    conn.execute(
        "UPDATE events SET received_at_ms = received_at_ms + ?1",
        [shift],
    )
    .unwrap();
    conn.execute(
        "UPDATE signatures SET seen_at_ms = seen_at_ms + ?1",
        [shift],
    )
    .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1, "the fixture is a version 1 spool");
    dir
}

fn options() -> SpoolOptions {
    SpoolOptions {
        dedup_window: Duration::from_secs(24 * 3600),
        signature_window: Duration::from_secs(600),
        retention: Duration::from_secs(72 * 3600),
        ..SpoolOptions::default()
    }
}

fn sinks() -> Vec<(String, String)> {
    [("archive", "file"), ("crm", "http"), ("billing", "http")]
        .iter()
        .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
        .collect()
}

fn verified(event: NewEvent) -> Verified<NewEvent> {
    let ts = (now_ms() / 1000).to_string();
    let nonce = fastrand::u64(..).to_string();
    let fields = zego::SigningFields {
        signature: zego::sign("s", &ts, &nonce),
        timestamp: ts,
        nonce,
    };
    let secrets = [hookrelay::secret::SecretString::new("s")];
    zego::verify(event, &fields, &secrets, now_ms(), 300).expect("signed")
}

fn new_event(dedup_key: &str, sig_key: Option<&str>) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        provider: "zego",
        received_at_ms: now_ms(),
        dedup_key: dedup_key.to_owned(),
        sig_key: sig_key.map(str::to_owned),
        resource: None,
        family: "stream",
        kind: "stream_create".into(),
        app_id: "1234567890".into(),
        body: Body::Raw(r#"{"event":"stream_create","stream_id":"new"}"#.into()),
    }
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn takes_over(variant: &str) {
    let m = manifest(variant);
    let dir = copy(variant);
    let spool = Spool::open(dir.path(), options(), &sinks()).expect("the v1 spool opens");
    let reader = spool.reader().unwrap();

    // Cursors, and every undelivered event with the envelope v1 stored, byte for byte.
    let events: Vec<&Value> = m["events"].as_array().unwrap().iter().collect();
    let envelope_hash = |id: &str| -> String {
        events
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["envelope_sha256"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for sink in m["sinks"].as_array().unwrap() {
        let name = sink["name"].as_str().unwrap();
        let cursor = reader.cursor(name).unwrap().unwrap();
        assert_eq!(cursor, sink["cursor"].as_i64().unwrap(), "{name}'s cursor");
        let pending = reader.events_after(cursor, 1000).unwrap();
        let expected: Vec<(i64, String)> = m["undelivered"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["seq"].as_i64().unwrap(),
                    u["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let got: Vec<(i64, String)> = pending.iter().map(|e| (e.seq, e.id.clone())).collect();
        assert_eq!(got, expected, "{name}'s undelivered events");
        for e in &pending {
            assert_eq!(
                sha256(&e.envelope),
                envelope_hash(&e.id),
                "envelope of {}",
                e.id
            );
        }
    }
    // crm's backoff and the attempts persisted for it.
    let crm = m["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "crm")
        .unwrap();
    let (failures, next_at) = reader.sink_state("crm").unwrap();
    assert_eq!(failures as i64, crm["failures"].as_i64().unwrap());
    assert_eq!(next_at, crm["next_attempt_at_ms"].as_i64().unwrap());
    assert_eq!(
        reader.attempts("crm").unwrap().len(),
        m["attempts"].as_array().unwrap().len()
    );

    // Dead letters, with their envelopes.
    let admin = Admin::open(dir.path()).unwrap();
    let letters = admin.dead_letters(None).unwrap();
    let expected = m["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), expected.len());
    for (got, want) in letters.iter().zip(expected) {
        assert_eq!(got.event_id, want["event_id"].as_str().unwrap());
        assert_eq!((got.sink.as_str(), got.attempts), ("billing", 1));
        assert_eq!(got.last_status, Some(400));
    }
    // Every event reads back by id with the same envelope (`events show`).
    for e in &events {
        let id = e["id"].as_str().unwrap();
        let envelope = admin.event(id).unwrap().expect("event found");
        assert_eq!(sha256(&envelope), e["envelope_sha256"].as_str().unwrap());
    }

    // Dedup keys carried over: a repeat of the first event is a duplicate of it.
    let first = events[0];
    let repeat = new_event(first["dedup_key"].as_str().unwrap(), None);
    let answer = spool.append(verified(repeat)).await.unwrap();
    assert_eq!(
        answer,
        Appended::Duplicate {
            id: first["id"].as_str().unwrap().to_owned()
        }
    );
    // Signatures carried over: the first event's, and the re-signed repeat's.
    let replay = new_event(
        "ffffffffffffffffffffffffffffffff",
        first["sig_key"].as_str(),
    );
    assert_eq!(
        spool.append(verified(replay)).await.unwrap(),
        Appended::ReplayedSignature
    );
    let resigned = &m["signatures"][0];
    let replay = new_event(
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        resigned["sig_key"].as_str(),
    );
    assert_eq!(
        spool.append(verified(replay)).await.unwrap(),
        Appended::ReplayedSignature
    );

    // New events continue the seq; nothing was reused.
    let last_seq = events
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .max()
        .unwrap();
    let fresh = new_event("dddddddddddddddddddddddddddddddd", None);
    let Appended::Stored { id } = spool.append(verified(fresh)).await.unwrap() else {
        panic!("a new event is stored");
    };
    spool.catalogued().await;
    let stored = reader.event_by_id(&id).unwrap().unwrap();
    assert_eq!(stored.seq, last_seq + 1);
    let envelope: Value = serde_json::from_str(&stored.envelope).unwrap();
    assert_eq!(envelope["raw"]["stream_id"], "new");
    spool.close().await;

    // And it all survives a restart of the new version.
    let spool = Spool::open(dir.path(), options(), &sinks()).unwrap();
    let reader = spool.reader().unwrap();
    assert_eq!(reader.event_by_id(&id).unwrap().unwrap().seq, last_seq + 1);
    assert_eq!(
        reader.cursor("crm").unwrap().unwrap(),
        crm["cursor"].as_i64().unwrap()
    );
    spool.close().await;
}

#[tokio::test]
async fn a_cleanly_stopped_v1_spool_is_taken_over() {
    takes_over("clean").await;
}

#[tokio::test]
async fn a_v1_spool_killed_with_its_wal_unmerged_is_taken_over() {
    takes_over("killed").await;
}
