//! The spool on a real SQLite file: retention keeps it bounded under steady
//! load, a full spool refuses and then recovers by itself, dedup windows,
//! ZEGO signatures remembered across restarts.

use hookrelay::secret::SecretString;
use hookrelay::spool::{Appended, Body, NewEvent, Spool, SpoolOptions, now_ms};
use hookrelay::verify::{Verified, zego};
use std::time::Duration;

const SECRET: &str = "spool-test";

/// A stored event goes through real signature verification, as in the server.
fn verified(event: NewEvent) -> Verified<NewEvent> {
    let ts = (now_ms() / 1000).to_string();
    let nonce = fastrand::u64(..).to_string();
    let fields = zego::SigningFields {
        signature: zego::sign(SECRET, &ts, &nonce),
        timestamp: ts,
        nonce,
    };
    zego::verify(event, &fields, &[SecretString::new(SECRET)], now_ms(), 300).expect("signed")
}

fn event(n: u64, size: usize) -> NewEvent {
    let id = uuid::Uuid::now_v7().to_string();
    NewEvent {
        provider: "zego",
        body: Body::Envelope(format!(
            "{{\"id\":\"{id}\",\"pad\":\"{}\"}}",
            "x".repeat(size)
        )),
        app_id: "1".into(),
        id,
        received_at_ms: now_ms(),
        dedup_key: format!("{n:032x}"),
        sig_key: None,
        resource: None,
        family: "stream",
        kind: "stream_create".into(),
    }
}

/// `event(n)` as ZEGO would send it, under signature key `sig`.
fn signed_event(n: u64, sig: u64) -> NewEvent {
    NewEvent {
        provider: "zego",
        sig_key: Some(format!("{sig:032x}")),
        ..event(n, 10)
    }
}

fn sinks() -> Vec<(String, String)> {
    vec![("file".to_owned(), "file".to_owned())]
}

async fn deliver_all(spool: &Spool) {
    spool.catalogued().await;
    let cursor = *spool.committed().borrow();
    spool.advance("file", cursor).await.unwrap();
}

#[tokio::test]
async fn under_steady_load_pruning_keeps_the_spool_file_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        dedup_window: Duration::from_millis(1),
        signature_window: Duration::from_millis(1),
        retention: Duration::ZERO,
        max_size_bytes: 0,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, &sinks()).unwrap();
    let size = || {
        let db = std::fs::metadata(spool.path())
            .map(|m| m.len())
            .unwrap_or(0);
        let wal = std::fs::metadata(spool.path().with_extension("sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        db + wal
    };
    let mut sizes = Vec::new();
    let mut n = 0;
    for _round in 0..8 {
        for _ in 0..500 {
            n += 1;
            let out = spool.append(verified(event(n, 1000))).await.unwrap();
            assert!(matches!(out, Appended::Stored { .. }));
        }
        deliver_all(&spool).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        spool.prune_now().await.unwrap();
        sizes.push(size());
    }
    eprintln!("spool size per round (db + wal bytes): {sizes:?}");
    let reader = spool.reader().unwrap();
    assert_eq!(
        reader.pending_after(0).unwrap(),
        0,
        "delivered events past retention are pruned"
    );
    // After the first rounds warmed up the file, freed pages are reused: no growth.
    let warm = sizes[2];
    assert!(
        sizes[3..].iter().all(|s| *s <= warm * 2),
        "spool keeps growing under steady load: {sizes:?}"
    );
    spool.close().await;
}

#[tokio::test]
async fn undelivered_events_are_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        dedup_window: Duration::from_millis(1),
        signature_window: Duration::from_millis(1),
        retention: Duration::ZERO,
        max_size_bytes: 0,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, &sinks()).unwrap();
    for n in 0..10 {
        spool.append(verified(event(n, 10))).await.unwrap();
    }
    spool.advance("file", 4).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    spool.prune_now().await.unwrap();
    let reader = spool.reader().unwrap();
    let left = reader.events_after(0, 100).unwrap();
    assert_eq!(
        left.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (5..=10).collect::<Vec<_>>()
    );
    spool.close().await;
}

#[tokio::test]
async fn a_full_spool_refuses_appends_and_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        dedup_window: Duration::from_millis(1),
        signature_window: Duration::from_millis(1),
        retention: Duration::ZERO,
        max_size_bytes: 512 * 1024,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, &sinks()).unwrap();
    let mut n = 0;
    let full = loop {
        n += 1;
        assert!(n < 10_000, "the size limit never hit");
        match spool.append(verified(event(n, 20_000))).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    eprintln!("spool full after {n} events: {full}");
    // Space returns when delivered events are pruned: no restart needed.
    deliver_all(&spool).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    spool.prune_now().await.unwrap();
    let out = spool
        .append(verified(event(n + 1, 20_000)))
        .await
        .expect("recovered");
    assert!(matches!(out, Appended::Stored { .. }));
    spool.close().await;
}

#[tokio::test]
async fn repeats_inside_the_window_are_duplicates_and_outside_it_are_new() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        dedup_window: Duration::from_millis(300),
        signature_window: Duration::from_millis(300),
        retention: Duration::from_secs(3600),
        max_size_bytes: 0,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, &sinks()).unwrap();
    let first = spool.append(verified(event(7, 10))).await.unwrap();
    let Appended::Stored { id } = first else {
        panic!("{first:?}")
    };
    let again = spool.append(verified(event(7, 10))).await.unwrap();
    assert_eq!(again, Appended::Duplicate { id });
    tokio::time::sleep(Duration::from_millis(350)).await;
    let later = spool.append(verified(event(7, 10))).await.unwrap();
    assert!(matches!(later, Appended::Stored { .. }), "{later:?}");
    spool.close().await;
}

#[tokio::test]
async fn a_signature_used_once_is_refused_with_another_payload_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = || SpoolOptions {
        dedup_window: Duration::from_secs(3600),
        signature_window: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
        max_size_bytes: 0,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options(), &sinks()).unwrap();
    let first = spool.append(verified(signed_event(1, 100))).await.unwrap();
    let Appended::Stored { id } = first else {
        panic!("{first:?}")
    };
    spool.close().await;

    // A new process: nothing in memory, the spool alone must know.
    let spool = Spool::open(dir.path(), options(), &sinks()).unwrap();
    let replay = spool.append(verified(signed_event(2, 100))).await.unwrap();
    assert_eq!(replay, Appended::ReplayedSignature);
    let resent = spool.append(verified(signed_event(1, 100))).await.unwrap();
    assert_eq!(resent, Appended::Duplicate { id: id.clone() });
    // A re-signed retry is a duplicate, and its signature is remembered too.
    let resigned = spool.append(verified(signed_event(1, 101))).await.unwrap();
    assert_eq!(resigned, Appended::Duplicate { id });
    spool.close().await;
    let spool = Spool::open(dir.path(), options(), &sinks()).unwrap();
    let reuse = spool.append(verified(signed_event(3, 101))).await.unwrap();
    assert_eq!(reuse, Appended::ReplayedSignature);
    let other = spool.append(verified(signed_event(3, 102))).await.unwrap();
    assert!(matches!(other, Appended::Stored { .. }), "{other:?}");
    spool.close().await;
}
