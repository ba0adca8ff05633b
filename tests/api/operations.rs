//! Running hookrelay: health, drain on SIGTERM, SIGHUP secret
//! rotation, env overrides, check-config, healthcheck, allowed source IPs,
//! `send` and `events show`.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUTE: &str = "/callbacks/zego/stream";

#[tokio::test]
async fn readyz_answers_200_while_the_spool_takes_writes() {
    let app = spawn_app().await;
    let (status, body) = json_body(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body), (200, json!({"ok": true})));
    app.stop().await;
}

#[tokio::test]
async fn sigterm_drains_readiness_first_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = json_log_config(dir.path(), "");
    let bin = Binary::start_with_env(&config, &[("HOOKRELAY_SERVER__DRAIN_DELAY_SECS", "2")]);
    let client = reqwest::Client::new();
    let ready = client.get(bin.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    bin.signal("TERM");
    let started = Instant::now();
    // At once: not ready, with the reason; but still accepting callbacks.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let resp = client.get(bin.url("/readyz")).send().await.unwrap();
        if resp.status() == 503 {
            assert_eq!(resp.json::<Value>().await.unwrap()["reason"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "readyz did not flip");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = client
        .post(bin.url(ROUTE))
        .json(&stream_create("during-drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the listener accepts during the drain delay"
    );
    let status = bin.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit 0 after a graceful shutdown: {status}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the drain delay was honoured"
    );
}

#[tokio::test]
async fn sigterm_under_load_never_acknowledges_a_lost_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = json_log_config(dir.path(), "");
    let bin = Binary::start(&config);
    let url = bin.url(ROUTE);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                match client
                    .post(&url)
                    .json(&stream_create(&format!("term-{worker}-{i}")))
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status();
                        assert!(status == 200 || status == 503, "unexpected {status}");
                        if status == 200 {
                            let ack: Value = resp.json().await.unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(ack["id"].as_str().unwrap().to_owned());
                        }
                    }
                    // After the listener closed: a connection error, never a false 2xx.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    bin.signal("TERM");
    let status = bin.wait_exit(Duration::from_secs(30));
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(status.success(), "{status}");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "load did not get going");
    // Every acknowledged event was stored: after a restart all reach the file sink.
    let _bin = Binary::start(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = read_lines(&events);
        let ids: std::collections::HashSet<&str> =
            lines.iter().filter_map(|l| l["id"].as_str()).collect();
        let missing = acked.iter().filter(|id| !ids.contains(id.as_str())).count();
        if missing == 0 {
            eprintln!("sigterm test: {} acknowledged, 0 lost", acked.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rotation_config(dir: &std::path::Path, secrets: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[spool]\ndir = \"{}\"\n[[apps]]\nprovider = \"zego\"\napp_id = \"{ZEGO_APP}\"\nsecrets = {secrets}\n",
        dir.join("spool").display()
    )
}

#[tokio::test]
async fn sighup_rotates_secrets_without_rejecting_either_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, rotation_config(dir.path(), "[\"old-secret\"]")).unwrap();
    let bin = Binary::start(&config);
    let client = reqwest::Client::new();
    let post = |secret: &'static str, id: String| {
        let client = client.clone();
        let url = bin.url(ROUTE);
        async move {
            let payload = sign_lower(
                json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": id}),
                secret,
                now_secs(),
            );
            client
                .post(url)
                .json(&payload)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("old-secret", "a1".into()).await, 200);
    assert_eq!(post("new-secret", "a2".into()).await, 401);

    std::fs::write(
        &config,
        rotation_config(dir.path(), "[\"new-secret\", \"old-secret\"]"),
    )
    .unwrap();
    bin.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while post("new-secret", format!("probe-{n}")).await != 200 {
        n += 1;
        assert!(
            Instant::now() < deadline,
            "the new secret was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        post("old-secret", "b1".into()).await,
        200,
        "the old secret still works during rotation"
    );

    let m = parse_metrics(&bin.metrics_text().await);
    let key = |pos: u32| {
        format!(
            "hookrelay_secret_matches_total{{provider=\"zego\",app_id=\"{ZEGO_APP}\",position=\"{pos}\"}}"
        )
    };
    assert!(m[&key(0)] >= 1.0, "new secret matched at position 0");
    assert!(m[&key(1)] >= 1.0, "old secret matched at position 1");

    // A broken config is refused; the running one keeps serving.
    std::fs::write(&config, "[server\nthis is not toml").unwrap();
    bin.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post("new-secret", "c1".into()).await, 200);
    assert_eq!(post("old-secret", "c2".into()).await, 200);

    // Finishing the rotation: the old secret is refused.
    std::fs::write(&config, rotation_config(dir.path(), "[\"new-secret\"]")).unwrap();
    bin.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while post("old-secret", format!("gone-{n}")).await != 401 {
        n += 1;
        assert!(
            Instant::now() < deadline,
            "the old secret was never retired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post("new-secret", "d1".into()).await, 200);
}

#[tokio::test]
async fn an_environment_variable_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = json_log_config(dir.path(), "");
    let bin = Binary::start_with_env(&config, &[("HOOKRELAY_APPS__0__SECRET", "secret-from-env")]);
    let client = reqwest::Client::new();
    let by_env = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "e"}),
        "secret-from-env",
        now_secs(),
    );
    let by_file = stream_create("f");
    assert_eq!(
        client
            .post(bin.url(ROUTE))
            .json(&by_env)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .post(bin.url(ROUTE))
            .json(&by_file)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn check_config_prints_the_effective_config_redacted_and_fails_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("HOOKRELAY_SERVER__TIMESTAMP_TOLERANCE_SECS", "42")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let effective: toml::Table = printed.parse().expect("the effective config is TOML");
    assert_eq!(
        effective["server"]["timestamp_tolerance_secs"].as_integer(),
        Some(42)
    );
    assert!(
        !printed.contains(ZEGO_SECRET) && !printed.contains(NETEASE_SECRET),
        "{printed}"
    );
    assert!(printed.contains("[redacted]"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_byte = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_body_byte"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_healthcheck_subcommand_reports_a_live_server() {
    let app = spawn_app().await;
    let ok = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["healthcheck", "--url", &app.url("/healthz")])
        .status()
        .unwrap();
    assert!(ok.success());
    let addr = app.addr;
    app.stop().await;
    let down = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["healthcheck", "--url", &format!("http://{addr}/healthz")])
        .status()
        .unwrap();
    assert_eq!(down.code(), Some(1));
}

#[tokio::test]
async fn callbacks_from_outside_allowed_ips_are_refused_with_403() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__ALLOWED_IPS", "[\"10.0.0.0/8\"]")]).await;
    let (status, body) = json_body(app.post_zego(ROUTE, &stream_create("ip")).await).await;
    assert_eq!(
        (status, body),
        (403, json!({"ok": false, "error": "forbidden"}))
    );
    app.stop().await;

    let app = spawn_app_env(&[
        (
            "HOOKRELAY_SERVER__ALLOWED_IPS",
            "{ zego = [\"10.0.0.0/8\"] }",
        ),
        ("HOOKRELAY_SERVER__TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let send = |xff: &'static str| {
        app.client
            .post(app.url(ROUTE))
            .header("x-forwarded-for", xff)
            .json(&stream_create(xff))
            .send()
    };
    assert_eq!(send("10.1.2.3").await.unwrap().status(), 200);
    // Only the entry our load balancer appended (the rightmost) counts.
    assert_eq!(send("10.9.9.9, 192.0.2.1").await.unwrap().status(), 403);
    // NetEase is not restricted by a ZEGO-only list.
    let body = r#"{"data":{"taskId":"t","timestamp":1},"eventType":503}"#;
    let resp = app
        .post_netease(body, &netease_headers(body, NETEASE_SECRET))
        .await;
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /callbacks/zego/stream HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server kept a slow-header connection open"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_delivers_correctly_signed_callbacks_of_every_family() {
    let app = spawn_app().await;
    let config = app.dir.path().join("hookrelay.toml");
    let cases = [
        ("stream", "stream_create"),
        ("stream", "stream_close"),
        ("compose", "compose"),
        ("cloud-player", "player_created"),
        ("cloud-player", "upload_failed"),
        ("cloud-play", "play_error"),
    ];
    for (family, kind) in cases {
        let url = format!("http://{}", app.addr);
        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || {
                Command::new(env!("CARGO_BIN_EXE_hookrelay"))
                    .args([
                        "send", "--family", family, "--kind", kind, "--url", &url, "--config",
                    ])
                    .arg(&config)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "send {family} {kind}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events = app.wait_for_events(cases.len()).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, cases.map(|(_, k)| k));

    // --emit writes unique signed requests instead of sending.
    let out_file = app.dir.path().join("emitted.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["send", "--family", "stream", "--emit", "5", "--out"])
        .arg(&out_file)
        .arg("--config")
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert_eq!(l["route"], "/callbacks/zego/stream");
        let resp = app
            .client
            .post(app.url(l["route"].as_str().unwrap()))
            .header("content-type", "application/json")
            .body(l["body"].as_str().unwrap().to_owned())
            .send()
            .await
            .unwrap();
        let (status, ack) = json_body(resp).await;
        assert_eq!(
            (status, ack["duplicate"].clone()),
            (200, json!(false)),
            "{ack}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn events_show_prints_the_envelope_and_where_each_sink_stands() {
    let app = spawn_app().await;
    let (_, ack) = json_body(app.post_zego(STREAM, &stream_create("shown")).await).await;
    let id = ack["id"].as_str().unwrap().to_owned();
    app.wait_for_events(1).await;
    let config = app.dir.path().join("hookrelay.toml");
    let out = cli(&["events", "show", &id], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("stdout is the envelope as JSON");
    assert_eq!(sorted_keys(&shown), ENVELOPE_KEYS);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(
        shown,
        app.wait_for_events(1).await[0],
        "the same envelope the sink got"
    );
    // The sink's progress is recorded just after its write: poll for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&["events", "show", &id], &config);
        if stderr(&out).contains("sink file: delivered") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stderr(&out));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = cli(&["events", "show"], &config);
    assert_eq!(out.status.code(), Some(2), "the id is required");
    app.stop().await;
}
