//! The forward-HTTP sink against real receivers: outages, rejections, hangs,
//! Standard Webhooks headers across retries, Retry-After, which statuses are
//! retried, dead letters and their replay, and the sink's defaults.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::Value;
use std::time::{Duration, Instant};

const ROUTE: &str = "/callbacks/zego/stream";

fn verify(r: &crate::receiver::Received) -> Value {
    let wh = standardwebhooks::Webhook::new(WHSEC).unwrap();
    wh.verify(&r.body, &r.headers)
        .expect("signature verifies with a Standard Webhooks library");
    let envelope: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.headers["webhook-id"], envelope["id"].as_str().unwrap());
    assert_eq!(r.headers["x-team"], "media");
    envelope
}

#[tokio::test]
async fn after_an_outage_every_event_arrives_signed_and_the_backlog_drains_quickly() {
    let receiver = TestReceiver::start(Mode::Status(503)).await;
    let app = spawn_app_with(&http_sink(
        Some("billing"),
        &receiver.url(),
        500,
        "headers = { \"X-Team\" = \"media\" }",
    ))
    .await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let (status, ack) = json_body(
            app.post_zego(ROUTE, &stream_create(&format!("outage-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200, "acks never wait for a failing sink");
        acked.push(ack["id"].as_str().unwrap().to_owned());
    }
    // The downstream stays down for a few seconds; the worker probes, it does not hammer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hits_while_down = receiver.hits();
    assert!(
        hits_while_down < 10,
        "a failing sink is probed one event at a time ({hits_while_down} hits)"
    );
    receiver.set_mode(Mode::Status(200));
    let recovered = Instant::now();
    let got = receiver
        .wait_for(acked.len(), Duration::from_secs(30))
        .await;
    let drained = recovered.elapsed();
    eprintln!(
        "outage test: {} events, drained {:?} after recovery",
        acked.len(),
        drained
    );
    let ids: Vec<String> = got
        .iter()
        .map(|r| verify(r)["id"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, acked, "every event, in order");
    // The file sink was never held back by the failing HTTP sink.
    assert_eq!(app.wait_for_events(acked.len()).await.len(), acked.len());
    app.stop().await;
}

#[tokio::test]
async fn a_410_dead_letters_the_event_and_a_replay_delivers_it_once_fixed() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let app = spawn_app_with(&http_sink(Some("gone"), &receiver.url(), 500, "")).await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("rejected")).await).await;
    let id = ack["id"].as_str().unwrap().to_owned();
    let config = app.dir.path().join("hookrelay.toml");
    // Wait for it to land in dead letters.
    let listed = wait_for_dead_letters(&config, "gone", 1).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["event_id"], id.as_str());
    assert_eq!(listed[0]["last_status"], 410);
    assert_eq!(listed[0]["attempts"], 1, "a 410 is not retried");
    assert_eq!(listed[0]["kind"], "stream_create");

    let out = cli(&["events", "show", &id], &config);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert!(stderr(&out).contains("sink gone: dead-letter"));

    assert_eq!(
        cli(&["events", "show", "no-such-id"], &config)
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        cli(&["dead-letters", "list", "--sink", "nope"], &config)
            .status
            .code(),
        Some(1)
    );

    receiver.set_mode(Mode::Status(200));
    let out = cli(
        &["dead-letters", "replay", "--sink", "gone", "--all"],
        &config,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let envelope: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    // Once delivered, the dead letter is gone; replaying again finds nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&["dead-letters", "list", "--json"], &config);
        if out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "dead letter not cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cli(&["dead-letters", "replay", "--all"], &config)
            .status
            .code(),
        Some(1)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_hanging_downstream_times_out_without_delaying_other_sinks_or_acks() {
    let hang = TestReceiver::start(Mode::Hang).await;
    let ok = TestReceiver::start(Mode::Status(204)).await;
    let sinks = format!(
        "{}{}",
        http_sink(Some("stuck"), &hang.url(), 500, ""),
        http_sink(
            Some("healthy"),
            &ok.url(),
            500,
            "headers = { \"X-Team\" = \"media\" }"
        )
    );
    let app = spawn_app_with(&sinks).await;
    let started = Instant::now();
    for i in 0..10 {
        let (status, _) = json_body(
            app.post_zego(ROUTE, &stream_create(&format!("hang-{i}")))
                .await,
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "acks do not wait for sinks"
    );
    let got = ok.wait_for(10, Duration::from_secs(10)).await;
    for r in &got {
        verify(r);
    }
    assert_eq!(app.wait_for_events(10).await.len(), 10);
    // The hanging sink keeps being probed after timeouts (500 ms each).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hang.hits() >= 2,
        "timed-out requests are retried ({} hits)",
        hang.hits()
    );
    app.stop().await;
}

#[tokio::test]
async fn after_max_attempts_an_event_moves_to_dead_letters_with_its_last_error() {
    let receiver = TestReceiver::start(Mode::Status(500)).await;
    let app = spawn_app_with(&http_sink(
        Some("flaky"),
        &receiver.url(),
        500,
        "max_attempts = 2",
    ))
    .await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("doomed")).await).await;
    let config = app.dir.path().join("hookrelay.toml");
    let rows = wait_for_dead_letters(&config, "flaky", 1).await;
    let row = &rows[0];
    assert_eq!(row["event_id"], ack["id"]);
    assert_eq!(row["attempts"], 2);
    assert_eq!(row["last_status"], 500);
    assert_eq!(row["last_error"], "HTTP 500");
    assert_eq!(receiver.hits(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_http_sink_keeps_one_webhook_id_across_retries_and_signs_each_attempt() {
    let receiver = TestReceiver::scripted(&[(503, None), (500, None)], Mode::Status(200)).await;
    let app = spawn_app_with(&http_sink(Some("hooks"), &receiver.url(), 1000, "")).await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("retried")).await).await;
    let id = ack["id"].as_str().unwrap().to_owned();
    let hits = receiver.wait_for_success(Duration::from_secs(20)).await;
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [503, 500, 200]
    );
    let wh = standardwebhooks::Webhook::new(WHSEC).unwrap();
    for hit in &hits {
        assert_eq!(
            hit.headers["webhook-id"],
            id.as_str(),
            "stable across retries"
        );
        assert!(
            hit.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let ts: u64 = hit.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .expect("webhook-timestamp is an integer");
        assert!(
            ts.abs_diff(now_secs()) < 60,
            "seconds, not milliseconds: {ts}"
        );
        assert!(
            hit.headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with("v1,")
        );
        wh.verify(&hit.body, &hit.headers)
            .expect("every attempt verifies with a Standard Webhooks library");
        let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(envelope["id"], id.as_str());
    }
    app.stop().await;
}

#[tokio::test]
async fn the_http_sink_honours_retry_after() {
    let receiver = TestReceiver::scripted(&[(429, Some("3"))], Mode::Status(200)).await;
    let app = spawn_app_with(&http_sink(Some("polite"), &receiver.url(), 1000, "")).await;
    assert_eq!(
        app.post_zego(ROUTE, &stream_create("ra")).await.status(),
        200
    );
    let hits = receiver.wait_for_success(Duration::from_secs(20)).await;
    assert_eq!(hits.len(), 2);
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(2800),
        "Retry-After: 3 was not honoured (retried after {gap:?})"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_http_sink_dead_letters_501_at_once_and_retries_408() {
    let not_impl = TestReceiver::start(Mode::Status(501)).await;
    let timeout_once = TestReceiver::scripted(&[(408, None)], Mode::Status(200)).await;
    let sinks = format!(
        "{}{}",
        http_sink(Some("noimpl"), &not_impl.url(), 1000, ""),
        http_sink(Some("flaky"), &timeout_once.url(), 1000, "")
    );
    let app = spawn_app_with(&sinks).await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("classify")).await).await;
    let config = app.dir.path().join("hookrelay.toml");
    let rows = wait_for_dead_letters(&config, "noimpl", 1).await;
    assert_eq!(rows[0]["event_id"], ack["id"]);
    assert_eq!(rows[0]["attempts"], 1, "501 is not retried");
    assert_eq!(rows[0]["last_status"], 501);
    let hits = timeout_once.wait_for_success(Duration::from_secs(20)).await;
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [408, 200]
    );
    assert!(dead_letters(&config, "flaky").is_empty());
    assert_eq!(not_impl.attempts().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_replay_by_id_replays_that_event_only() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let app = spawn_app_with(&http_sink(Some("gone"), &receiver.url(), 1000, "")).await;
    let (_, a) = json_body(app.post_zego(ROUTE, &stream_create("dl-a")).await).await;
    let (_, b) = json_body(app.post_zego(ROUTE, &stream_create("dl-b")).await).await;
    let config = app.dir.path().join("hookrelay.toml");
    wait_for_dead_letters(&config, "gone", 2).await;

    // Usage errors are exit 2; an unknown id is exit 1.
    let out = cli(&["dead-letters", "replay", "--sink", "gone"], &config);
    assert_eq!(out.status.code(), Some(2), "neither --id nor --all");
    let id_a = a["id"].as_str().unwrap();
    let out = cli(&["dead-letters", "replay", "--id", id_a, "--all"], &config);
    assert_eq!(out.status.code(), Some(2), "--id and --all together");
    let out = cli(
        &["dead-letters", "replay", "--id", "no-such-event"],
        &config,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).is_empty(), "a message on stderr");

    receiver.set_mode(Mode::Status(200));
    let out = cli(
        &["dead-letters", "replay", "--sink", "gone", "--id", id_a],
        &config,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let envelope: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(envelope["id"], a["id"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "only the replayed event");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<Value> = dead_letters(&config, "gone")
            .iter()
            .map(|r| r["event_id"].clone())
            .collect();
        if left == [b["id"].clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "dead letters left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn http_sink_options_default_to_5000_ms_and_12_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\n[[sinks]]\nkind = \"http\"\nurl = \"https://internal.example/hooks/zego\"\nsecret = \"{WHSEC}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let out = cli(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective: toml::Table = stdout(&out).parse().unwrap();
    let sink = &effective["sinks"][0];
    assert_eq!(sink["name"].as_str(), Some("http-0"));
    assert_eq!(sink["timeout_ms"].as_integer(), Some(5000));
    assert_eq!(sink["max_attempts"].as_integer(), Some(12));
    assert!(
        !stdout(&out).contains(WHSEC.trim_start_matches("whsec_")),
        "the sink secret is redacted"
    );
}
