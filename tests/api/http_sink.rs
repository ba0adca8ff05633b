//! The forward-HTTP sink against real receivers: outages, rejections, hangs.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUTE: &str = "/callbacks/zego/stream";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn http_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nkind = \"http\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 500\n{extra}\n"
    )
}

fn verify(r: &crate::receiver::Received) -> Value {
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
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
        "billing",
        &receiver.url(),
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
    let app = spawn_app_with(&http_sink("gone", &receiver.url(), "")).await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("rejected")).await).await;
    let id = ack["id"].as_str().unwrap().to_owned();
    let config = app.dir.path().join("hookrelay.toml");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("HOOKRELAY_CONFIG")
            .output()
            .unwrap()
    };
    // Wait for it to land in dead letters.
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = cli(&["dead-letters", "list", "--sink", "gone", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if !rows.is_empty() {
            break rows;
        }
        assert!(Instant::now() < deadline, "no dead letter appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["event_id"], id.as_str());
    assert_eq!(listed[0]["last_status"], 410);
    assert_eq!(listed[0]["attempts"], 1, "a 410 is not retried");
    assert_eq!(listed[0]["kind"], "stream_create");

    let out = cli(&["events", "show", &id]);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sink gone: dead-letter"));

    assert_eq!(
        cli(&["events", "show", "no-such-id"]).status.code(),
        Some(1)
    );
    assert_eq!(
        cli(&["dead-letters", "list", "--sink", "nope"])
            .status
            .code(),
        Some(1)
    );

    receiver.set_mode(Mode::Status(200));
    let out = cli(&["dead-letters", "replay", "--sink", "gone", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let envelope: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    // Once delivered, the dead letter is gone; replaying again finds nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&["dead-letters", "list", "--json"]);
        if out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "dead letter not cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cli(&["dead-letters", "replay", "--all"]).status.code(),
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
        http_sink("stuck", &hang.url(), ""),
        http_sink("healthy", &ok.url(), "headers = { \"X-Team\" = \"media\" }")
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
    let app = spawn_app_with(&http_sink("flaky", &receiver.url(), "max_attempts = 2")).await;
    let (_, ack) = json_body(app.post_zego(ROUTE, &stream_create("doomed")).await).await;
    let config = app.dir.path().join("hookrelay.toml");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["dead-letters", "list", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(line) = text.lines().next() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["event_id"], ack["id"]);
            assert_eq!(row["attempts"], 2);
            assert_eq!(row["last_status"], 500);
            assert_eq!(row["last_error"], "HTTP 500");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter after max_attempts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.hits(), 2);
    app.stop().await;
}
