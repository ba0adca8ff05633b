//! Acknowledged means stored: restarts, crashes and failing sinks lose
//! nothing; what a restart or a clean stop leaves behind; a full spool.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const ROUTE: &str = "/callbacks/zego/stream";

#[tokio::test]
async fn acknowledged_events_survive_a_kill_9_and_reach_the_file_sink_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = json_log_config(dir.path(), "");
    // The sink cannot write yet (its path is a directory), so acknowledged
    // events exist only in the spool when the process dies.
    std::fs::create_dir(&events).unwrap();

    let bin = Binary::start(&config);
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for i in 0..20 {
        let resp = client
            .post(bin.url(ROUTE))
            .json(&stream_create(&format!("crash-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ack: Value = resp.json().await.unwrap();
        acked.push(ack["id"].as_str().unwrap().to_owned());
    }
    bin.kill9();

    std::fs::remove_dir(&events).unwrap();
    let bin = Binary::start(&config);
    let lines = wait_for_lines(&events, acked.len()).await;
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, acked, "every acknowledged event, once, in order");

    // The dedup memory survived too.
    let resp = client
        .post(bin.url(ROUTE))
        .json(&stream_create("crash-0"))
        .send()
        .await
        .unwrap();
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(
        ack["duplicate"],
        json!(false),
        "a new signature on new content is new"
    );
    drop(bin);
}

#[tokio::test]
async fn a_file_sink_that_cannot_write_keeps_retrying_and_catches_up_without_delaying_acks() {
    let app = spawn_app().await;
    std::fs::create_dir(app.events_path()).unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        let (status, ack) = json_body(
            app.post_zego(ROUTE, &stream_create(&format!("blocked-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200);
        acked.push(ack["id"].clone());
    }
    std::fs::remove_dir(app.events_path()).unwrap();
    let lines = app.wait_for_events(5).await;
    let ids: Vec<Value> = lines.iter().map(|l| l["id"].clone()).collect();
    assert_eq!(ids, acked);
    app.stop().await;
}

#[tokio::test]
async fn a_clean_restart_resumes_delivery_and_remembers_duplicates() {
    let app = spawn_app().await;
    let payload = stream_create("restart");
    let (_, first) = json_body(app.post_zego(ROUTE, &payload).await).await;
    app.wait_for_events(1).await;
    let dir = app.stop().await;

    let text = base_config(dir.path(), "");
    let app = spawn_app_in(dir, &text).await;
    let (status, again) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);
    let (_, next) = json_body(app.post_zego(ROUTE, &stream_create("after")).await).await;
    let lines = app.wait_for_events(2).await;
    assert_eq!(lines.len(), 2, "nothing re-delivered after a clean stop");
    assert_eq!(lines[1]["id"], next["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_spool_that_cannot_store_answers_503_so_the_vendor_retries() {
    let app = spawn_app_env(&[
        ("HOOKRELAY_SPOOL__MAX_SIZE_MB", "1"),
        ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "1048576"),
    ])
    .await;
    let mut saw_503 = false;
    for i in 0..200 {
        let mut payload = stream_create(&format!("fill-{i}"));
        payload["extra_info"] = json!("x".repeat(200_000));
        let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
        if status == 503 {
            assert_eq!(body, json!({"ok": false, "error": "spool_unavailable"}));
            saw_503 = true;
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    assert!(saw_503, "a full spool must refuse with 503");
    app.stop().await;
}

#[tokio::test]
async fn sigkill_under_concurrent_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = json_log_config(dir.path(), "");
    let bin = Binary::start(&config);
    let url = bin.url(ROUTE);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (url, acked, errors, stop) = (url.clone(), acked.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                let sent = client
                    .post(&url)
                    .json(&stream_create(&format!("load-{worker}-{i}")))
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status() == 200 => match resp.json::<Value>().await {
                        Ok(ack) => acked
                            .lock()
                            .unwrap()
                            .push(ack["id"].as_str().unwrap().to_owned()),
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    },
                    Ok(resp) => panic!("unexpected status {}", resp.status()),
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    // Kill once the load is well under way (however busy the machine is).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load did not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bin.kill9(); // mid-load: requests are in flight
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load did not get going ({} acks)",
        acked.len()
    );

    let _bin = Binary::start(&config);
    // Wait until every acknowledged id is in the file (or give up after 20 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = read_lines(&events);
        let ids: std::collections::HashSet<&str> =
            lines.iter().filter_map(|l| l["id"].as_str()).collect();
        if acked.iter().all(|id| ids.contains(id.as_str())) || std::time::Instant::now() > deadline
        {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for l in &lines {
        *seen
            .entry(l["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let lost = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "kill test: acknowledged {}, lost {lost}, duplicated {duplicated}, lines {}, connection errors {}",
        acked.len(),
        lines.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(lost, 0, "acknowledged events lost");
}

#[tokio::test]
async fn a_corrupt_spool_stops_start_up_with_a_clear_message_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, base_config(dir.path(), "")).unwrap();
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let garbage = b"this is not a SQLite database, it is an operator's mistake".repeat(100);
    let file = spool_dir.join("spool.sqlite3");
    std::fs::write(&file, &garbage).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spool.sqlite3"), "{stderr}");
    assert!(stderr.contains("not a database"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "never replaced");
}

#[tokio::test]
async fn the_dead_letter_gauge_counts_letters_kept_from_before_a_restart() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let sink = http_sink(Some("gone"), &receiver.url(), 1000, "");
    let app = spawn_app_with(&sink).await;
    assert_eq!(
        app.post_zego(STREAM, &stream_create("kept")).await.status(),
        200
    );
    let config = app.dir.path().join("hookrelay.toml");
    wait_for_dead_letters(&config, "gone", 1).await;
    let dir = app.stop().await;

    let text = base_config(dir.path(), &sink);
    let app = spawn_app_in(dir, &text).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = metrics_text(&app).await;
    assert_eq!(
        series(&metrics, "hookrelay_dead_letters{sink=\"gone\"}"),
        Some(1.0),
        "the dead letter is still in the spool, so the gauge must say so"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_clean_stop_leaves_the_spool_checkpointed() {
    let app = spawn_app().await;
    for i in 0..5 {
        assert_eq!(
            app.post_zego(STREAM, &stream_create(&format!("ckpt-{i}")))
                .await
                .status(),
            200
        );
    }
    app.wait_for_events(5).await;
    let dir = app.stop().await;
    let wal = dir.path().join("spool").join("spool.sqlite3-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal_len, 0,
        "the WAL is checkpointed into the database at close"
    );
    assert!(dir.path().join("spool").join("spool.sqlite3").exists());
}

#[tokio::test]
async fn readyz_is_503_while_the_spool_refuses_callbacks() {
    let app = spawn_app_env(&[
        ("HOOKRELAY_SPOOL__MAX_SIZE_MB", "1"),
        ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "1048576"),
    ])
    .await;
    let mut full = false;
    for i in 0..200 {
        let mut payload = stream_create(&format!("fill-{i}"));
        payload["extra_info"] = json!("x".repeat(200_000));
        if app.post_zego(STREAM, &payload).await.status() == 503 {
            full = true;
            break;
        }
    }
    assert!(full, "the spool never filled up");
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    let (status, body) = json_body(resp).await;
    assert_eq!(
        (status, body["reason"].clone()),
        (503, json!("spool_unavailable")),
        "{body}"
    );
    app.stop().await;
}

/// A bit flipped on disk inside an acknowledged event's record (the log's
/// middle, not a torn tail): the event is never delivered, altered or not;
/// it is reported in the metric and the log, and `events show` says it is
/// corrupt. Its neighbours are delivered as usual.
#[tokio::test]
async fn a_bit_flipped_in_an_acknowledged_record_is_reported_and_never_delivered() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = json_body(
            app.post_zego(ROUTE, &stream_create(&format!("flip-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    app.wait_for_events(3).await;
    let dir = app.stop().await;

    // Flip one bit in the middle record's payload, and wind the file sink's
    // cursor back so the three are read again.
    let spool = dir.path().join("spool");
    let db = rusqlite::Connection::open(spool.join("spool.sqlite3")).unwrap();
    let (segment, offset, len): (i64, i64, i64) = db
        .query_row(
            "SELECT segment, offset, len FROM events WHERE id = ?1",
            [&ids[1]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    db.execute("UPDATE sinks SET cursor = 0", []).unwrap();
    drop(db);
    let file = spool.join("log").join(format!("{segment:020}.seg"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[(offset + len / 2) as usize] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("events.jsonl")).unwrap();

    let text = base_config(dir.path(), "");
    let app = spawn_app_in(dir, &text).await;
    let lines = app.wait_for_events(2).await;
    let delivered: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(delivered, [ids[0].as_str(), ids[2].as_str()]);
    let metrics = metrics_text(&app).await;
    assert_eq!(
        series(&metrics, "hookrelay_store_corrupt_records_total"),
        Some(1.0)
    );
    // Nothing else shows up later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_lines(&app.events_path()).len(), 2);

    let config = app.dir.path().join("hookrelay.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["events", "show", "--config"])
        .arg(&config)
        .arg(&ids[1])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(stderr.contains(&ids[1]), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["events", "show", "--config"])
        .arg(&config)
        .arg(&ids[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}
