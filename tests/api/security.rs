//! What an attacker must not get: a captured signature carrying another
//! body, a server shed by slow or large bodies, memory spent before
//! authentication, attacker-chosen metric labels and log lines, and the
//! operator's endpoints on the public port.

use crate::helpers::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// 1. The replay guard

/// A stream event signed with an explicit timestamp and nonce.
fn signed_with(stream_id: &str, ts: &str, nonce: &str) -> Value {
    let sig = hookrelay::verify::zego::sign(ZEGO_SECRET, ts, nonce);
    json!({
        "event": "stream_create",
        "appid": ZEGO_APP,
        "room_id": "room1",
        "stream_id": stream_id,
        "timestamp": ts,
        "nonce": nonce,
        "signature": sig,
    })
}

#[tokio::test]
async fn a_signature_re_split_into_a_fresh_millisecond_timestamp_cannot_carry_another_body() {
    let app = spawn_app().await;
    // The genuine callback: a seconds timestamp and a 19-digit nonce whose
    // first three digits, moved onto the timestamp, make fresh milliseconds.
    // The secret sorts after both digit strings, so the signed string (and
    // the signature) is the same for both splits.
    let ts = now_secs().to_string();
    let rest = "9245375106675073";
    let genuine = signed_with("genuine", &ts, &format!("415{rest}"));
    let (status, ack) = json_body(app.post_zego(STREAM, &genuine).await).await;
    assert_eq!(status, 200, "{ack}");

    let forged_ts = format!("{ts}415");
    let mut forged = signed_with("forged", &forged_ts, rest);
    assert_eq!(
        forged["signature"], genuine["signature"],
        "the re-split signs the same string"
    );
    forged["signature"] = genuine["signature"].clone();
    let (status, err) = json_body(app.post_zego(STREAM, &forged).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "replayed_signature"}))
    );

    // The genuine body under the re-split is still the same event: a repeat.
    let mut repeat = genuine.clone();
    repeat["timestamp"] = json!(forged_ts);
    repeat["nonce"] = json!(rest);
    let (status, again) = json_body(app.post_zego(STREAM, &repeat).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], ack["id"]);

    let events = app.wait_for_events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["raw"]["stream_id"], "genuine");
    app.stop().await;
}

#[tokio::test]
async fn the_envelope_carries_no_signature_in_raw_or_event() {
    let app = spawn_app().await;
    let lower = stream_create("no-credential");
    assert_eq!(app.post_zego(STREAM, &lower).await.status(), 200);
    let pascal = sign_pascal(
        json!({"EventType": 1, "AppId": ZEGO_APP.parse::<u64>().unwrap(), "PlayerId": "p1"}),
        ZEGO_SECRET,
        now_secs(),
    );
    let resp = app.post_zego("/callbacks/zego/cloud-player", &pascal).await;
    assert_eq!(resp.status(), 200);
    let events = app.wait_for_events(2).await;
    for envelope in &events {
        for part in ["raw", "event"] {
            for key in ["signature", "Signature"] {
                assert!(
                    envelope[part].get(key).is_none(),
                    "{part}.{key} in {envelope}"
                );
            }
        }
        let text = envelope.to_string();
        for sig in [&lower["signature"], &pascal["Signature"]] {
            assert!(!text.contains(sig.as_str().unwrap()), "{text}");
        }
    }
    // Timestamp and nonce may stay.
    let stream = events.iter().find(|e| e["family"] == "stream").unwrap();
    assert_eq!(stream["raw"]["nonce"], lower["nonce"]);
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Slow requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_bodies_starve_neither_signed_callbacks_nor_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start(&json_log_config(dir.path(), ""));
    let addr = bin.addr;

    // 2,000 connections: headers, then one body byte a second of a declared 1,000.
    let stop = tokio_util::sync::CancellationToken::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tricklers = Vec::new();
    for _ in 0..2000 {
        let stop = stop.clone();
        let opened = Arc::clone(&opened);
        tricklers.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let head = format!("POST {STREAM} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if stream.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < 2000 {
        assert!(
            Instant::now() < deadline,
            "could not open 2,000 connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Meanwhile: signed callbacks at 10 a second for 4 seconds, each answered
    // 200 within 1 s, and /healthz answering 200 throughout.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        tick.tick().await;
        let started = Instant::now();
        let resp = client
            .post(bin.url(STREAM))
            .json(&stream_create(&format!("during-trickle-{i}")))
            .send()
            .await
            .expect("a signed callback is answered");
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(resp.status(), 200, "callback {i}: {:?}", resp.text().await);
        assert!(took < Duration::from_secs(1), "callback {i} took {took:?}");
        if i % 5 == 0 {
            let health = client.get(bin.url("/healthz")).send().await.unwrap();
            assert_eq!(health.status(), 200);
        }
    }
    stop.cancel();
    for t in tricklers {
        let _ = t.await;
    }
    eprintln!("slowest signed callback during the trickle: {slowest:?}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_body_timeout_secs_is_answered_408() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__BODY_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let mut stream = stalled_body(app.addr, STREAM, 1000, 10, None).await;
    let response = read_response(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn probes_are_never_shed_while_callbacks_are_over_the_body_budget() {
    let app = spawn_app_env(&[
        ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "4096"),
        ("HOOKRELAY_SERVER__MAX_INFLIGHT_BODY_BYTES", "8192"),
        ("HOOKRELAY_SERVER__CONCURRENCY_LIMIT", "1"),
    ])
    .await;
    // Two stalled bodies of 4,096 declared bytes use the whole budget.
    let _a = stalled_body(app.addr, STREAM, 4096, 100, None).await;
    let _b = stalled_body(app.addr, STREAM, 4096, 100, None).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    // A third callback is shed at once.
    loop {
        let resp = app.post_zego(STREAM, &stream_create("over-budget")).await;
        let (status, body) = json_body(resp).await;
        if status == 503 {
            assert_eq!(body, json!({"ok": false, "error": "overloaded"}));
            break;
        }
        // The stalled connections may not have been read yet: poll.
        assert!(Instant::now() < deadline, "never shed: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Memory before authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_stalled_bodies_of_the_largest_size_cost_less_than_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start(&json_log_config(dir.path(), ""));
    let limit = 65_536;
    let idle = bin.status_kb("VmRSS");
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(stalled_body(bin.addr, STREAM, limit, limit - 1, None).await);
    }
    // Wait until the server has read what was sent (RSS stops growing).
    let mut last = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = bin.status_kb("VmRSS");
        if now == last {
            break;
        }
        last = now;
    }
    let grown_mib = (bin.status_kb("VmRSS").saturating_sub(idle)) / 1024;
    assert!(
        grown_mib < 64,
        "300 stalled bodies raised RSS by {grown_mib} MiB"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_junk_bodies_keep_peak_rss_within_64_mib_of_idle() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start(&json_log_config(dir.path(), ""));
    let client = reqwest::Client::new();
    // Warm up the allocator and the connection pool with one ordinary request.
    let _ = client
        .post(bin.url(STREAM))
        .json(&stream_create("warm"))
        .send()
        .await
        .unwrap();
    let idle_peak = bin.status_kb("VmHWM");
    let array = format!("[{}0]", "0,".repeat(32_000));
    let object = format!("{{\"a\":[{}0]}}", "0,".repeat(32_000));
    let nested = format!("{}{}", "{\"a\":".repeat(10_000), "1");
    let bodies = [array, object, nested];
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let body = bodies[(round + i) % bodies.len()].clone();
            let (client, url) = (client.clone(), bin.url(STREAM));
            tasks.push(tokio::spawn(async move {
                let resp = client.post(url).body(body).send().await.unwrap();
                resp.status().as_u16()
            }));
        }
        for t in tasks {
            let status = t.await.unwrap();
            assert!((400..500).contains(&status), "junk answered {status}");
        }
    }
    let grown_mib = bin.status_kb("VmHWM").saturating_sub(idle_peak) / 1024;
    assert!(grown_mib < 64, "junk raised peak RSS by {grown_mib} MiB");
}

#[tokio::test]
async fn the_default_body_limit_is_64_kib() {
    let app = spawn_app().await;
    let mut payload = stream_create("big");
    payload["extra_info"] = json!("x".repeat(65_536));
    let (status, err) = json_body(app.post_zego(STREAM, &payload).await).await;
    assert_eq!(
        (status, err),
        (413, json!({"ok": false, "error": "payload_too_large"}))
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 5. Attacker-chosen labels and log lines

#[tokio::test]
async fn an_unknown_kind_keeps_its_text_in_the_envelope_but_not_in_metric_labels() {
    let app = spawn_app().await;
    let made_up = format!("made_up_{}", "k".repeat(100));
    let mut payload = stream_create("odd-kind");
    payload["event"] = json!(made_up);
    let payload = sign_lower(payload, ZEGO_SECRET, now_secs());
    let (status, ack) = json_body(app.post_zego(STREAM, &payload).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["kind"], made_up.as_str());

    let metrics = metrics_text(&app).await;
    assert!(!metrics.contains(&made_up), "the kind became a label");
    assert!(
        metrics.contains(
            r#"hookrelay_events_total{provider="zego",family="stream",kind="unknown"} 1"#
        ),
        "{metrics}"
    );

    // Past 128 characters it is no event type: 400, nothing stored.
    let mut long = stream_create("long-kind");
    long["event"] = json!("k".repeat(129));
    let long = sign_lower(long, ZEGO_SECRET, now_secs());
    let (status, err) = json_body(app.post_zego(STREAM, &long).await).await;
    assert_eq!(
        (status, err),
        (400, json!({"ok": false, "error": "malformed_body"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn every_documented_stream_kind_has_its_series_from_start_up() {
    let app = spawn_app().await;
    let metrics = metrics_text(&app).await;
    for kind in [
        "stream_create",
        "room_login",
        "mix_stop",
        "procedure",
        "unknown",
    ] {
        let series =
            format!(r#"hookrelay_events_total{{provider="zego",family="stream",kind="{kind}"}} 0"#);
        assert!(metrics.contains(&series), "{series} missing");
    }
    app.stop().await;
}

#[tokio::test]
async fn only_short_plain_request_ids_are_echoed() {
    let app = spawn_app().await;
    let request_id = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let plain = "abc.DEF_123-xyz";
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", plain)
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&resp), plain);

    for bad in ["a".repeat(65), "x".repeat(30_000), "two words".into()] {
        let resp = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &bad)
            .send()
            .await
            .unwrap();
        let echoed = request_id(&resp);
        assert_ne!(echoed, bad);
        assert!(
            uuid::Uuid::parse_str(&echoed).is_ok(),
            "a generated id replaces {:.20}…: {echoed}",
            bad
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_shed_request_is_logged_once_at_warn_and_never_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start_with_env(
        &json_log_config(dir.path(), ""),
        &[
            ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "4096"),
            ("HOOKRELAY_SERVER__MAX_INFLIGHT_BODY_BYTES", "4096"),
        ],
    );
    let _held = stalled_body(bin.addr, STREAM, 4096, 10, None).await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client
            .post(bin.url(STREAM))
            .header("x-request-id", "shed-me")
            .json(&stream_create("shed"))
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The log line is written before the answer; give the pipe a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<Value> = bin
            .log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.to_string().contains("shed-me"))
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let shed: Vec<&Value> = lines
        .iter()
        .filter(|v| v.to_string().contains("overloaded"))
        .collect();
    assert_eq!(shed.len(), 1, "{lines:#?}");
    assert_eq!(shed[0]["level"], "WARN", "{:#?}", shed[0]);
    assert!(
        lines.iter().all(|v| v["level"] != "ERROR"),
        "an ERROR line for a shed request: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------
// 6. Surfaces

#[tokio::test]
async fn with_an_admin_listener_the_public_port_serves_callbacks_and_healthz_only() {
    let app = spawn_app_with(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[server.allowed_ips]\nzego = [\"10.0.0.0/8\"]\nnetease = [\"10.0.0.0/8\"]\n",
    )
    .await;
    let admin = app.admin_addr.expect("an admin listener");
    let get = |addr: SocketAddr, path: &str| {
        let client = app.client.clone();
        let url = format!("http://{addr}{path}");
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(app.addr, "/healthz").await, 200);
    assert_eq!(get(app.addr, "/readyz").await, 404);
    assert_eq!(get(app.addr, "/metrics").await, 404);
    // allowed_ips never applies to the admin listener.
    assert_eq!(get(admin, "/healthz").await, 200);
    assert_eq!(get(admin, "/readyz").await, 200);
    assert_eq!(get(admin, "/metrics").await, 200);
    // Callbacks are not served on the admin listener.
    let resp = app
        .client
        .post(format!("http://{admin}{STREAM}"))
        .json(&stream_create("on-admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // And the public callback route still applies allowed_ips.
    let resp = app.post_zego(STREAM, &stream_create("refused")).await;
    assert_eq!(resp.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn readyz_writes_to_the_spool_at_most_once_a_second() {
    let app = spawn_app().await;
    let spool = app.dir.path().join("spool").join("spool.sqlite3");
    let probed_at = || -> Option<i64> {
        let conn = rusqlite::Connection::open(&spool).unwrap();
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'probed_at_ms'",
            [],
            |r| r.get(0),
        )
        .ok()
    };
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let first = probed_at().expect("the first probe wrote");
    let started = Instant::now();
    for _ in 0..50 {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            probed_at(),
            Some(first),
            "50 probes within a second wrote again"
        );
    }
    // After a second, a probe writes again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(probed_at().unwrap() > first);
    app.stop().await;
}
