//! Black-box checks of the contract's corners (issues 2, 3 and 4) that the
//! other files leave out: every route and method, answer shapes and headers,
//! app-id spellings and types, timestamps in milliseconds, signatures in
//! uppercase, exact 19-digit ids, form bodies, NetEase retries, the HTTP
//! sink's Standard Webhooks headers across retries, the CLI's exit codes and
//! output, configuration from the environment, and logs.
//!
//! A test marked `#[ignore = "BUG: ..."]` asserts what the contract says and
//! fails against the current implementation.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAM: &str = "/callbacks/zego/stream";
const CLOUD_PLAYER: &str = "/callbacks/zego/cloud-player";
const COMPOSE: &str = "/callbacks/zego/compose";
const CLOUD_PLAY: &str = "/callbacks/netease/cloud-play";
const ROUTES: [&str; 4] = [CLOUD_PLAYER, STREAM, COMPOSE, CLOUD_PLAY];

/// A second ZEGO app, so that "the only app" fallback cannot hide a misread app id.
const ZEGO_APP_2: &str = "222";
const ZEGO_SECRET_2: &str = "second-zego-secret";
const SECOND_ZEGO_APP: &str =
    "[[apps]]\nprovider = \"zego\"\napp_id = 222\nsecret = \"second-zego-secret\"\n";

const NETEASE_APP_2: &str = "ne-second";
const NETEASE_SECRET_2: &str = "second-netease-secret";
const SECOND_NETEASE_APP: &str = "[[apps]]\nprovider = \"netease\"\napp_id = \"ne-second\"\nsecret = \"second-netease-secret\"\n";

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------------------
// Small helpers

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn post_as(app: &TestApp, path: &str, ctype: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

fn zego_sig(secret: &str, ts: &str, nonce: &str) -> String {
    hookrelay::verify::zego::sign(secret, ts, nonce)
}

/// NetEase signing headers with an explicit AppKey (or none) and CurTime.
fn netease_signed(
    body: &str,
    secret: &str,
    app_key: Option<&str>,
    cur_time: &str,
) -> Vec<(&'static str, String)> {
    let md5 = hookrelay::verify::netease::body_md5(body.as_bytes());
    let checksum = hookrelay::verify::netease::checksum(secret, &md5, cur_time);
    let mut headers = vec![
        ("CurTime", cur_time.to_owned()),
        ("MD5", md5),
        ("CheckSum", checksum),
    ];
    if let Some(key) = app_key {
        headers.push(("AppKey", key.to_owned()));
    }
    headers
}

fn cloud_play_body(event_type: u32, task: &str) -> String {
    json!({
        "data": {"taskId": task, "streamUrl": "rtmp://example/live", "code": 200, "timestamp": now_ms()},
        "eventType": event_type
    })
    .to_string()
}

/// Removes the ZEGO signing fields (either casing) so a payload can be re-signed.
fn unsigned(mut payload: Value) -> Value {
    let m = payload.as_object_mut().unwrap();
    for k in [
        "timestamp",
        "nonce",
        "signature",
        "Timestamp",
        "Nonce",
        "Signature",
    ] {
        m.remove(k);
    }
    payload
}

fn hookrelay_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.args(args).env_remove("HOOKRELAY_CONFIG");
    cmd
}

/// Runs an operator verb with `--config` appended.
fn cli(args: &[&str], config: &Path) -> Output {
    hookrelay_cmd(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dead-letters list --json` rows for `sink`.
fn dead_letters(config: &Path, sink: &str) -> Vec<Value> {
    let out = cli(&["dead-letters", "list", "--sink", sink, "--json"], config);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each row is JSON"))
        .collect()
}

async fn wait_for_dead_letters(config: &Path, sink: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = dead_letters(config, sink);
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} dead letters for {sink}, found {}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_text(app: &TestApp) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of one exact series (`name{labels}`), if exported.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == name))
        .and_then(|(_, v)| v.parse().ok())
}

/// The real binary with its stderr lines kept (JSON logs), started by `cmd`.
struct Served {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(mut cmd: Command) -> Served {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "hookrelay listening"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary logs its address as JSON")
            .parse()
            .expect("a socket address");
        Served { child, addr, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP receiver that records every attempt (not only the 2xx ones) and
/// answers from a script, then `then` for ever.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    inner: Arc<Mutex<RecorderInner>>,
}

struct RecorderInner {
    script: VecDeque<(u16, Option<&'static str>)>,
    then: u16,
    hits: Vec<Hit>,
}

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Recorder {
    async fn start(script: &[(u16, Option<&'static str>)], then: u16) -> Recorder {
        let inner = Arc::new(Mutex::new(RecorderInner {
            script: script.iter().copied().collect(),
            then,
            hits: Vec::new(),
        }));
        let state = Arc::clone(&inner);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                async move {
                    let mut g = state.lock().unwrap();
                    let (status, retry_after) = g.script.pop_front().unwrap_or((g.then, None));
                    g.hits.push(Hit {
                        at: Instant::now(),
                        status,
                        headers,
                        body,
                    });
                    let mut out = HeaderMap::new();
                    if let Some(ra) = retry_after {
                        out.insert("retry-after", ra.parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), out)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { addr, inner }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    async fn wait_for_success(&self, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.iter().any(|h| (200..300).contains(&h.status)) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "no successful delivery; {} attempts",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn http_sink(name: Option<&str>, url: &str, extra: &str) -> String {
    let name = name
        .map(|n| format!("name = \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "[[sinks]]\nkind = \"http\"\n{name}url = \"{url}\"\nsecret = \"{WHSEC}\"\ntimeout_ms = 1000\n{extra}\n"
    )
}

/// Sends the head of a request and only part of its body, then waits for the answer.
async fn send_partial_body(addr: SocketAddr, path: &str, request_id: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nX-Request-Id: {request_id}\r\n\r\n{{\"a\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // One whole response is enough (headers and a Content-Length body).
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a request whose body never came");
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Routes, methods and the shape of every answer

#[tokio::test]
async fn every_callback_route_answers_other_methods_with_405_json() {
    let app = spawn_app().await;
    for route in ROUTES {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
            reqwest::Method::PATCH,
        ] {
            let resp = app
                .client
                .request(method.clone(), app.url(route))
                .send()
                .await
                .unwrap();
            assert!(
                content_type(&resp).starts_with("application/json"),
                "{method} {route}"
            );
            let (status, body) = json_body(resp).await;
            assert_eq!(
                (status, body),
                (405, json!({"ok": false, "error": "method_not_allowed"})),
                "{method} {route}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_get_404_json_whatever_the_method() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::GET, "/"),
        (reqwest::Method::GET, "/callbacks/zego/stream/extra"),
        (reqwest::Method::POST, "/callbacks/netease/cloud-player"),
        (reqwest::Method::POST, "/callbacks/zego/Stream"),
        (reqwest::Method::DELETE, "/callbacks"),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{method} {path}"
        );
        let (status, body) = json_body(resp).await;
        assert_eq!(
            (status, body),
            (404, json!({"ok": false, "error": "not_found"})),
            "{method} {path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn acks_errors_and_health_answers_are_json() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;

    let resp = app.post_zego(STREAM, &stream_create("ct")).await;
    assert!(content_type(&resp).starts_with("application/json"));
    let (status, ack) = json_body(resp).await;
    assert_eq!(status, 200);
    let mut keys: Vec<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["duplicate", "id", "ok"], "{ack}");
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["duplicate"], false);
    assert!(ack["id"].is_string());

    let cases: [(&str, String, u16, &str); 3] = [
        (STREAM, "{}".to_owned(), 401, "missing_signature"),
        (COMPOSE, "just text".to_owned(), 400, "malformed_body"),
        (CLOUD_PLAYER, "x".repeat(600), 413, "payload_too_large"),
    ];
    for (route, body, want_status, code) in cases {
        let resp = app.post(route, body).await;
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{code}"
        );
        let (status, body) = json_body(resp).await;
        assert_eq!(
            (status, body),
            (want_status, json!({"ok": false, "error": code}))
        );
    }

    for path in ["/readyz", "/healthz"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{path}"
        );
        assert_eq!(resp.json::<Value>().await.unwrap()["ok"], true, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_given_request_id_is_echoed_on_every_kind_of_error() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;
    let cases: [(reqwest::Method, &str, String, u16); 5] = [
        (reqwest::Method::POST, STREAM, "{}".into(), 401),
        (reqwest::Method::POST, COMPOSE, "plain text".into(), 400),
        (reqwest::Method::POST, CLOUD_PLAY, "x".repeat(600), 413),
        (reqwest::Method::POST, "/nowhere", "{}".into(), 404),
        (reqwest::Method::GET, CLOUD_PLAY, String::new(), 405),
    ];
    for (i, (method, path, body, status)) in cases.into_iter().enumerate() {
        let id = format!("contract-rid-{i}");
        let resp = app
            .client
            .request(method, app.url(path))
            .header("x-request-id", &id)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(
            resp.headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap()),
            Some(id.as_str()),
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn event_ids_are_uuids_in_the_order_the_events_arrived() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, ack) = json_body(
            app.post_zego(STREAM, &stream_create(&format!("ord-{i}")))
                .await,
        )
        .await;
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        uuid::Uuid::parse_str(id).expect("a UUID");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort in arrival order");
    app.stop().await;
}

// ---------------------------------------------------------------------------
// ZEGO: app ids, timestamps, signatures, exact numbers, bodies

#[tokio::test]
async fn a_zego_appid_sent_as_a_json_number_selects_its_app() {
    let app = spawn_app_with(SECOND_ZEGO_APP).await;
    let ts = now_secs().to_string();
    let nonce = "31337";
    let body = format!(
        r#"{{"event":"stream_create","appid":{ZEGO_APP_2},"stream_id":"num-app","timestamp":"{ts}","nonce":"{nonce}","signature":"{}"}}"#,
        zego_sig(ZEGO_SECRET_2, &ts, nonce)
    );
    let (status, ack) = json_body(app.post(STREAM, body).await).await;
    assert_eq!(status, 200, "{ack}");

    let body = format!(
        r#"{{"event":"stream_create","appid":999,"stream_id":"num-app","timestamp":"{ts}","nonce":"{nonce}","signature":"{}"}}"#,
        zego_sig(ZEGO_SECRET_2, &ts, nonce)
    );
    let (status, err) = json_body(app.post(STREAM, body).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );

    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["app_id"], json!(ZEGO_APP_2), "app_id is a string");
    assert_eq!(
        events[0]["raw"]["appid"],
        json!(222),
        "raw keeps the number as sent"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_app_id_is_read_under_each_documented_spelling() {
    // With two ZEGO apps there is no "only app" to fall back on: a misread
    // app id would be refused as unknown_app.
    let app = spawn_app_with(SECOND_ZEGO_APP).await;
    for (i, key) in ["AppID", "AppId", "appid"].into_iter().enumerate() {
        let mut payload =
            json!({"EventType": 1, "PlayerId": format!("p-{key}"), "EventTime": now_ms()});
        payload[key] = json!(ZEGO_APP_2);
        let signed = sign_pascal(payload, ZEGO_SECRET_2, now_secs());
        let (status, ack) = json_body(app.post_zego(CLOUD_PLAYER, &signed).await).await;
        assert_eq!(status, 200, "{key}: {ack}");
        let events = app.wait_for_events(i + 1).await;
        assert_eq!(events[i]["app_id"], ZEGO_APP_2, "{key}");
        assert_eq!(events[i]["kind"], "player_created", "{key}");
    }
    let signed = sign_pascal(
        json!({"AppId": "31415", "EventType": 1}),
        ZEGO_SECRET_2,
        now_secs(),
    );
    let (status, err) = json_body(app.post_zego(CLOUD_PLAYER, &signed).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn zego_timestamps_in_milliseconds_are_understood() {
    let app = spawn_app().await;
    let fresh = sign_lower(unsigned(stream_create("ms-fresh")), ZEGO_SECRET, now_ms());
    let (status, ack) = json_body(app.post_zego(STREAM, &fresh).await).await;
    assert_eq!(status, 200, "{ack}");
    for (label, ts) in [
        ("an hour ago", now_ms() - 3_600_000),
        ("an hour ahead", now_ms() + 3_600_000),
    ] {
        let stale = sign_lower(
            unsigned(stream_create(&format!("ms-{label}"))),
            ZEGO_SECRET,
            ts,
        );
        let (status, err) = json_body(app.post_zego(STREAM, &stale).await).await;
        assert_eq!(
            (status, err),
            (401, json!({"ok": false, "error": "stale_timestamp"})),
            "{label}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_zero_tolerance_is_refused_at_start_up_naming_the_key() {
    // Without a freshness check a signature verifies forever, so once the
    // replay guard forgot it, it could carry any body: 0 is not a setting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    std::fs::write(&path, base_config(dir.path(), "")).unwrap();
    let env = [(
        "HOOKRELAY_SERVER__TIMESTAMP_TOLERANCE_SECS".to_string(),
        "0".to_string(),
    )];
    let err =
        hookrelay::config::Config::load(Some(&path), env).expect_err("a zero tolerance is refused");
    assert!(
        format!("{err:#}").contains("server.timestamp_tolerance_secs"),
        "{err:#}"
    );
}

#[tokio::test]
async fn an_uppercase_hex_signature_verifies_and_is_remembered_against_replay() {
    let app = spawn_app().await;
    let mut payload = stream_create("upper");
    let lower = payload["signature"].as_str().unwrap().to_owned();
    payload["signature"] = json!(lower.to_ascii_uppercase());
    let (status, ack) = json_body(app.post_zego(STREAM, &payload).await).await;
    assert_eq!(status, 200, "{ack}");

    // The captured signature, in either case, cannot carry another body.
    for sig in [lower.clone(), lower.to_ascii_uppercase()] {
        let mut forged = payload.clone();
        forged["stream_id"] = json!("forged");
        forged["signature"] = json!(sig);
        let (status, err) = json_body(app.post_zego(STREAM, &forged).await).await;
        assert_eq!(
            (status, err),
            (401, json!({"ok": false, "error": "replayed_signature"}))
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_captured_signature_cannot_be_reused_on_another_zego_route() {
    let app = spawn_app().await;
    let genuine = stream_create("cross-route");
    assert_eq!(app.post_zego(STREAM, &genuine).await.status(), 200);
    let mut forged = json!({"event": "compose", "appid": ZEGO_APP, "task_id": "evil"});
    for k in ["timestamp", "nonce", "signature"] {
        forged[k] = genuine[k].clone();
    }
    let (status, err) = json_body(app.post_zego(COMPOSE, &forged).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "replayed_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resent_callback_with_reordered_keys_is_a_duplicate_not_a_replay() {
    let app = spawn_app().await;
    let ts = now_secs().to_string();
    let nonce = "918273645";
    let sig = zego_sig(ZEGO_SECRET, &ts, nonce);
    let first = format!(
        r#"{{"event":"stream_close","appid":"{ZEGO_APP}","stream_id":"reorder","type":"0","timestamp":"{ts}","nonce":"{nonce}","signature":"{sig}"}}"#
    );
    let reordered = format!(
        r#"{{ "signature" : "{sig}", "nonce":"{nonce}", "timestamp":"{ts}", "type":"0", "stream_id":"reorder", "appid":"{ZEGO_APP}", "event":"stream_close" }}"#
    );
    let (_, a) = json_body(app.post(STREAM, first).await).await;
    let (status, b) = json_body(app.post(STREAM, reordered).await).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["duplicate"], true);
    assert_eq!(b["id"], a["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_resigned_cloud_player_retry_is_a_duplicate_with_the_first_id() {
    let app = spawn_app().await;
    let payload = json!({"AppID": ZEGO_APP, "EventType": 3, "PlayerId": "dup-p", "EventTime": now_ms(), "Detail": {"Status": 2}});
    let (_, first) = json_body(
        app.post_zego(
            CLOUD_PLAYER,
            &sign_pascal(payload.clone(), ZEGO_SECRET, now_secs()),
        )
        .await,
    )
    .await;
    let (status, again) = json_body(
        app.post_zego(
            CLOUD_PLAYER,
            &sign_pascal(payload, ZEGO_SECRET, now_secs() - 2),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);
    app.stop().await;
}

#[tokio::test]
async fn room_events_take_their_event_time_and_keep_u64_ids_exact() {
    let app = spawn_app().await;
    // room_create sends numbers: appid, timestamp, a UInt64 room_session_id above 2^53.
    let ts = now_secs();
    let nonce: u64 = 7254119327986670314;
    let create_ms = now_ms();
    let sig = zego_sig(ZEGO_SECRET, &ts.to_string(), &nonce.to_string());
    let body = format!(
        r#"{{"event":"room_create","appid":{ZEGO_APP},"room_id":"r-u64","room_session_id":858012925204410400,"room_create_time":"{create_ms}","id_name":"u1","timestamp":{ts},"nonce":{nonce},"signature":"{sig}"}}"#
    );
    let (status, ack) = json_body(app.post(STREAM, body).await).await;
    assert_eq!(status, 200, "{ack}");

    let close_ms = now_ms() + 1;
    let close = sign_lower(
        json!({"event": "room_close", "appid": ZEGO_APP.parse::<u64>().unwrap(), "room_id": "r-u64",
               "room_session_id": 858012925204410400u64, "close_reason": 0, "room_close_time": close_ms}),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, ack) = json_body(app.post_zego(STREAM, &close).await).await;
    assert_eq!(status, 200, "{ack}");

    let logout = sign_lower(
        json!({"event": "room_logout", "appid": ZEGO_APP, "room_id": "r-u64", "logout_time": "1499676978027",
               "session_id": "6085791336856668982"}),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, ack) = json_body(app.post_zego(STREAM, &logout).await).await;
    assert_eq!(status, 200, "{ack}");

    let events = app.wait_for_events(3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["room_create", "room_close", "room_logout"]);
    assert_eq!(events[0]["event_time_ms"].as_u64(), Some(create_ms));
    assert_eq!(events[1]["event_time_ms"].as_u64(), Some(close_ms));
    assert_eq!(events[2]["event_time_ms"].as_i64(), Some(1499676978027));
    assert_eq!(events[0]["app_id"], ZEGO_APP);
    assert_eq!(
        events[0]["raw"]["room_session_id"].as_u64(),
        Some(858012925204410400)
    );
    assert_eq!(events[0]["raw"]["nonce"].as_u64(), Some(nonce));
    assert_eq!(
        events[0]["event"]["room_session_id"]
            .to_string()
            .trim_matches('"'),
        "858012925204410400",
        "the typed event keeps the id's digits"
    );
    assert_eq!(
        events[2]["event"]["session_id"]
            .to_string()
            .trim_matches('"'),
        "6085791336856668982"
    );
    // And on disk, the digits themselves (no float rendering).
    let text = std::fs::read_to_string(app.events_path()).unwrap();
    assert!(text.contains("858012925204410400"));
    assert!(text.contains("7254119327986670314"));
    assert!(!text.contains("858012925204410400.0") && !text.contains("e17"));
    app.stop().await;
}

#[tokio::test]
async fn a_form_encoded_cloud_player_callback_is_verified_and_typed() {
    let app = spawn_app().await;
    let ts = now_secs().to_string();
    let nonce = "abcdd22113";
    let sig = zego_sig(ZEGO_SECRET, &ts, nonce);
    let event_time = now_ms();
    let body = format!(
        "AppID={ZEGO_APP}&EventType=1&EventTime={event_time}&PlayerId=form-player&RoomId=room_12&PlayerName=my+player%21&Timestamp={ts}&Nonce={nonce}&Signature={sig}"
    );
    let resp = post_as(
        &app,
        CLOUD_PLAYER,
        "application/x-www-form-urlencoded",
        body,
    )
    .await;
    let (status, ack) = json_body(resp).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    let e = &events[0];
    assert_eq!(e["family"], "cloud_player");
    assert_eq!(e["kind"], "player_created");
    assert_eq!(e["event_time_ms"].as_u64(), Some(event_time));
    assert_eq!(e["event"]["EventType"], json!(1), "numbers are normalized");
    assert_eq!(e["event"]["EventTime"].as_u64(), Some(event_time));
    assert_eq!(e["raw"]["EventType"], "1", "raw keeps the form's strings");
    assert_eq!(e["raw"]["PlayerName"], "my player!");
    app.stop().await;
}

#[tokio::test]
async fn the_body_decides_the_encoding_whatever_the_content_type_says() {
    let app = spawn_app().await;
    // JSON labelled as a form: still JSON (the number stays a number).
    let mut payload = stream_create("json-as-form");
    payload["extra_num"] = json!(5);
    let resp = post_as(
        &app,
        STREAM,
        "application/x-www-form-urlencoded",
        payload.to_string(),
    )
    .await;
    let (status, ack) = json_body(resp).await;
    assert_eq!(status, 200, "{ack}");

    // A form labelled as JSON: still a form.
    let ts = now_secs().to_string();
    let nonce = "4242";
    let body = format!(
        "event=stream_create&appid={ZEGO_APP}&stream_id=form-as-json&timestamp={ts}&nonce={nonce}&signature={}",
        zego_sig(ZEGO_SECRET, &ts, nonce)
    );
    let (status, ack) = json_body(post_as(&app, STREAM, "application/json", body).await).await;
    assert_eq!(status, 200, "{ack}");

    let events = app.wait_for_events(2).await;
    assert_eq!(events[0]["raw"]["extra_num"], json!(5));
    assert_eq!(events[1]["raw"]["stream_id"], "form-as-json");
    assert_eq!(events[1]["kind"], "stream_create");
    app.stop().await;
}

#[tokio::test]
async fn percent_signs_and_pluses_inside_json_values_are_kept_verbatim() {
    let app = spawn_app().await;
    let mut payload = unsigned(stream_create("verbatim"));
    payload["title"] = json!("a%20b+c%2B");
    payload["extra_info"] = json!("https%3A%2F%2Fcdn%2Fa.mp3");
    let signed = sign_lower(payload, ZEGO_SECRET, now_secs());
    let (status, ack) = json_body(app.post_zego(STREAM, &signed).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["raw"]["title"], "a%20b+c%2B");
    assert_eq!(events[0]["raw"]["extra_info"], "https%3A%2F%2Fcdn%2Fa.mp3");
    app.stop().await;
}

#[tokio::test]
async fn the_body_limit_admits_exactly_max_body_bytes() {
    let limit = 2048;
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "2048")]).await;
    let mut payload = stream_create("limit");
    payload["extra_info"] = json!("");
    let base = serde_json::to_string(&payload).unwrap().len();
    payload["extra_info"] = json!("x".repeat(limit - base));
    let exact = serde_json::to_string(&payload).unwrap();
    assert_eq!(exact.len(), limit);
    let (status, ack) = json_body(app.post(STREAM, exact.clone()).await).await;
    assert_eq!(
        status, 200,
        "a body of exactly max_body_bytes is accepted: {ack}"
    );

    // One byte more (the signature was used above, but the size is checked first).
    let over_text = exact.replacen("\"extra_info\":\"", "\"extra_info\":\"y", 1);
    assert_eq!(over_text.len(), limit + 1);
    let (status, err) = json_body(app.post(STREAM, over_text).await).await;
    assert_eq!(
        (status, err),
        (413, json!({"ok": false, "error": "payload_too_large"}))
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// NetEase

#[tokio::test]
async fn a_netease_retry_with_a_new_curtime_is_answered_duplicate_with_the_first_id() {
    let app = spawn_app().await;
    let body = cloud_play_body(503, "retried");
    let first_time = (now_ms() - 10_000).to_string();
    let (status, first) = json_body(
        app.post_netease(
            &body,
            &netease_signed(&body, NETEASE_SECRET, Some(NETEASE_APP), &first_time),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    for cur_time in [now_ms().to_string(), (now_ms() + 1_000).to_string()] {
        let (status, again) = json_body(
            app.post_netease(
                &body,
                &netease_signed(&body, NETEASE_SECRET, Some(NETEASE_APP), &cur_time),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], first["id"]);
    }
    // Nothing new was delivered: only the marker follows the first event.
    let marker = cloud_play_body(504, "marker");
    let (_, m) = json_body(
        app.post_netease(&marker, &netease_headers(&marker, NETEASE_SECRET))
            .await,
    )
    .await;
    let events = app.wait_for_events(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids: Vec<Value> = read_lines(&app.events_path())
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [first["id"].clone(), m["id"].clone()], "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_netease_curtime_in_seconds_is_understood() {
    let app = spawn_app().await;
    let body = cloud_play_body(506, "secs");
    let headers = netease_signed(
        &body,
        NETEASE_SECRET,
        Some(NETEASE_APP),
        &now_secs().to_string(),
    );
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(status, 200, "{ack}");
    let body = cloud_play_body(507, "secs-old");
    let headers = netease_signed(
        &body,
        NETEASE_SECRET,
        Some(NETEASE_APP),
        &(now_secs() - 3600).to_string(),
    );
    let (status, err) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "stale_timestamp"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn netease_numbers_sent_as_strings_are_typed_and_normalized() {
    let app = spawn_app().await;
    let body = r#"{"data":{"taskId":"t-str","playTs":"12","idleTimeout":"30","code":"200","channelId":"1144880576163552","timestamp":"1653470489602"},"eventType":"504"}"#;
    let (status, ack) = json_body(
        app.post_netease(body, &netease_headers(body, NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    let e = &events[0];
    assert_eq!(e["kind"], "play_finished");
    assert_eq!(e["event_time_ms"], json!(1653470489602i64));
    assert_eq!(e["event"]["playTs"], json!(12));
    assert_eq!(e["event"]["code"], json!(200));
    assert_eq!(e["event"]["channelId"], json!(1144880576163552i64));
    assert_eq!(e["raw"]["eventType"], "504", "raw is as received");
    app.stop().await;
}

#[tokio::test]
async fn without_an_appkey_two_netease_apps_leave_the_app_unknown() {
    let app = spawn_app_with(SECOND_NETEASE_APP).await;
    let body = cloud_play_body(500, "which-app");
    let headers = netease_signed(&body, NETEASE_SECRET, None, &now_ms().to_string());
    let (status, err) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    let headers = netease_signed(
        &body,
        NETEASE_SECRET_2,
        Some(NETEASE_APP_2),
        &now_ms().to_string(),
    );
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["app_id"], NETEASE_APP_2);
    app.stop().await;
}

#[tokio::test]
async fn on_the_netease_route_the_headers_are_checked_before_the_body() {
    let app = spawn_app().await;
    let (status, err) = json_body(app.post_netease("not json at all", &[]).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );
    let headers = netease_headers("something else", NETEASE_SECRET);
    let (status, err) = json_body(app.post_netease("not json at all", &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_netease_probe_must_still_be_signed() {
    let app = spawn_app().await;
    let (status, err) = json_body(app.post_netease("{}", &[]).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );
    let (status, err) = json_body(
        app.post_netease("{}", &netease_headers("{}", "wrong-secret"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    let headers = netease_signed("{}", NETEASE_SECRET, Some("nobody"), &now_ms().to_string());
    let (status, err) = json_body(app.post_netease("{}", &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn metrics_have_the_contracted_types_and_build_version() {
    let app = spawn_app().await;
    let text = metrics_text(&app).await;
    for (name, kind) in [
        ("hookrelay_requests", "counter"),
        ("hookrelay_events", "counter"),
        ("hookrelay_rejections", "counter"),
        ("hookrelay_duplicates", "counter"),
        ("hookrelay_ack_seconds", "histogram"),
        ("hookrelay_spool_pending", "gauge"),
        ("hookrelay_spool_oldest_pending_seconds", "gauge"),
        ("hookrelay_deliveries", "counter"),
        ("hookrelay_delivery_seconds", "histogram"),
        ("hookrelay_dead_letters", "gauge"),
        ("hookrelay_build", "info"),
        ("hookrelay_secret_matches", "counter"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "{name} should be a {kind} in\n{text}"
        );
    }
    let build = format!(
        "hookrelay_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(series(&text, &build), Some(1.0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("hookrelay_delivery_seconds_bucket{")
                && l.contains("sink=\"file\"")
                && l.contains("le=\"+Inf\"")),
        "delivery_seconds is a histogram per sink: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_probe_is_a_request_but_not_an_event_and_rejections_count_by_code() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;
    let (status, _) = json_body(
        app.post_netease("{}", &netease_headers("{}", NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.post(COMPOSE, "x".repeat(600)).await.status(), 413);
    assert_eq!(app.post(COMPOSE, "not a form").await.status(), 400);
    let text = metrics_text(&app).await;
    assert_eq!(
        series(
            &text,
            "hookrelay_requests_total{family=\"cloud_play\",status=\"200\"}"
        ),
        Some(1.0)
    );
    let cloud_play_events: f64 = text
        .lines()
        .filter(|l| l.starts_with("hookrelay_events_total{") && l.contains("family=\"cloud_play\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(cloud_play_events, 0.0, "a probe stores nothing");
    assert_eq!(
        series(
            &text,
            "hookrelay_rejections_total{family=\"compose\",reason=\"payload_too_large\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "hookrelay_rejections_total{family=\"compose\",reason=\"malformed_body\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "hookrelay_requests_total{family=\"compose\",status=\"413\"}"
        ),
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn unnamed_sinks_are_named_kind_dash_index_from_zero() {
    // base_config's file sink is sinks[0] (named "file"); these are [1] and [2].
    let extra = format!(
        "[[sinks]]\nkind = \"log\"\n{}",
        http_sink(None, "http://127.0.0.1:9/hook", "")
    );
    let app = spawn_app_with(&extra).await;
    let text = metrics_text(&app).await;
    for sink in ["file", "log-1", "http-2"] {
        assert!(
            series(
                &text,
                &format!("hookrelay_spool_pending{{sink=\"{sink}\"}}")
            )
            .is_some(),
            "no series for sink {sink} in\n{text}"
        );
    }
    let config = app.dir.path().join("hookrelay.toml");
    let out = cli(&["dead-letters", "list", "--sink", "http-2"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Request limits

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_408() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let response = send_partial_body(app.addr, STREAM, "slow-408").await;
    assert!(
        response.starts_with("HTTP/1.1 408"),
        "expected a 408, got {response:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-request-id: slow-408"),
        "{response:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_timed_out_request_gets_the_json_error_shape() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let response = send_partial_body(app.addr, STREAM, "slow-json").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["ok"], false);
    assert!(body["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_timed_out_callback_is_counted_in_requests_total() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let response = send_partial_body(app.addr, STREAM, "slow-metric").await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    let text = metrics_text(&app).await;
    assert_eq!(
        series(
            &text,
            "hookrelay_requests_total{family=\"stream\",status=\"408\"}"
        ),
        Some(1.0),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn beyond_the_body_budget_requests_are_shed_with_503_json() {
    // A slow body holds its share (100 declared bytes) of
    // server.max_inflight_body_bytes, not a unit of concurrency_limit, which
    // only the work after the body takes. The budget fits this callback
    // alone, not beside the slow one.
    let payload = stream_create("shed");
    let budget = (serde_json::to_string(&payload).unwrap().len() + 50).to_string();
    let app = spawn_app_env(&[
        ("HOOKRELAY_SERVER__MAX_INFLIGHT_BODY_BYTES", budget.as_str()),
        ("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "3"),
    ])
    .await;
    let addr = app.addr;
    let holder = tokio::spawn(async move { send_partial_body(addr, STREAM, "holder").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = app.post_zego(STREAM, &payload).await;
    assert!(content_type(&resp).starts_with("application/json"));
    let (status, body) = json_body(resp).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"ok": false, "error": "overloaded"}));
    holder.await.unwrap();
    // With the slow body gone, the same callback fits.
    let (status, body) = json_body(app.post_zego(STREAM, &payload).await).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_body_budget_counts_requests_on_every_route_together() {
    let compose = sign_lower(
        json!({"event": "compose", "appid": ZEGO_APP, "task_id": "other-route"}),
        ZEGO_SECRET,
        now_secs(),
    );
    let budget = (serde_json::to_string(&compose).unwrap().len() + 50).to_string();
    let app = spawn_app_env(&[
        ("HOOKRELAY_SERVER__MAX_INFLIGHT_BODY_BYTES", budget.as_str()),
        ("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "3"),
    ])
    .await;
    let addr = app.addr;
    let holder = tokio::spawn(async move { send_partial_body(addr, STREAM, "holder").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = app.post_zego(COMPOSE, &compose).await.status();
    holder.await.unwrap();
    assert_eq!(
        status, 503,
        "one body is in flight on the stream route, so one on the compose route is shed"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// The HTTP sink: Standard Webhooks headers, retries, classification

#[tokio::test]
async fn the_http_sink_keeps_one_webhook_id_across_retries_and_signs_each_attempt() {
    let receiver = Recorder::start(&[(503, None), (500, None)], 200).await;
    let app = spawn_app_with(&http_sink(Some("hooks"), &receiver.url(), "")).await;
    let (_, ack) = json_body(app.post_zego(STREAM, &stream_create("retried")).await).await;
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
    let receiver = Recorder::start(&[(429, Some("3"))], 200).await;
    let app = spawn_app_with(&http_sink(Some("polite"), &receiver.url(), "")).await;
    assert_eq!(
        app.post_zego(STREAM, &stream_create("ra")).await.status(),
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
    let not_impl = Recorder::start(&[], 501).await;
    let timeout_once = Recorder::start(&[(408, None)], 200).await;
    let sinks = format!(
        "{}{}",
        http_sink(Some("noimpl"), &not_impl.url(), ""),
        http_sink(Some("flaky"), &timeout_once.url(), "")
    );
    let app = spawn_app_with(&sinks).await;
    let (_, ack) = json_body(app.post_zego(STREAM, &stream_create("classify")).await).await;
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
    assert_eq!(not_impl.hits().len(), 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------
// The CLI

#[tokio::test]
async fn dead_letters_replay_by_id_replays_that_event_only() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let app = spawn_app_with(&http_sink(Some("gone"), &receiver.url(), "")).await;
    let (_, a) = json_body(app.post_zego(STREAM, &stream_create("dl-a")).await).await;
    let (_, b) = json_body(app.post_zego(STREAM, &stream_create("dl-b")).await).await;
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
async fn events_show_prints_the_envelope_and_where_each_sink_stands() {
    let app = spawn_app().await;
    let (_, ack) = json_body(app.post_zego(STREAM, &stream_create("shown")).await).await;
    let id = ack["id"].as_str().unwrap().to_owned();
    app.wait_for_events(1).await;
    let config = app.dir.path().join("hookrelay.toml");
    let out = cli(&["events", "show", &id], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("stdout is the envelope as JSON");
    let mut keys: Vec<&str> = shown
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "app_id",
            "dedup_key",
            "event",
            "event_time_ms",
            "family",
            "id",
            "kind",
            "provider",
            "raw",
            "received_at"
        ]
    );
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

#[tokio::test]
async fn check_config_exit_codes_and_where_it_reads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();

    // HOOKRELAY_CONFIG instead of --config.
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("check-config")
        .env("HOOKRELAY_CONFIG", &good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective: toml::Table = stdout(&out).parse().expect("TOML on stdout");
    assert_eq!(effective["apps"][0]["app_id"].as_str(), Some(ZEGO_APP));

    // Neither: the built-in defaults, listening on 0.0.0.0:8080 with no apps.
    let out = hookrelay_cmd(&["check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let defaults: toml::Table = stdout(&out).parse().unwrap();
    assert_eq!(defaults["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(
        defaults["server"]["max_body_bytes"].as_integer(),
        Some(65_536)
    );
    assert_eq!(
        defaults["server"]["timestamp_tolerance_secs"].as_integer(),
        Some(300)
    );
    assert_eq!(
        defaults["spool"]["dedup_window_hours"].as_integer(),
        Some(24)
    );
    assert_eq!(defaults["spool"]["retention_hours"].as_integer(), Some(72));
    assert_eq!(defaults["server"]["drain_delay_secs"].as_integer(), Some(0));
    assert_eq!(
        defaults["server"]["shutdown_grace_secs"].as_integer(),
        Some(25)
    );
    assert!(
        defaults
            .get("apps")
            .and_then(|a| a.as_array())
            .is_none_or(|a| a.is_empty())
    );

    // A missing file, a bad value, an app with two secrets: exit 1 naming the problem.
    let missing = dir.path().join("missing.toml");
    let out = cli(&["check-config"], &missing);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[spool]\nretention_hours = \"soon\"\n").unwrap();
    let out = cli(&["check-config"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("spool.retention_hours"),
        "{}",
        stderr(&out)
    );

    let two = dir.path().join("two.toml");
    std::fs::write(
        &two,
        "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = \"a\"\nsecret_env = \"B\"\n",
    )
    .unwrap();
    let out = cli(&["check-config"], &two);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("apps[0]"), "{}", stderr(&out));

    // Bad usage is clap's exit 2.
    let out = hookrelay_cmd(&["check-config", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn environment_variable_errors_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();
    for (var, value) in [
        ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "lots"),
        ("HOOKRELAY_SERVER__LISTN", "127.0.0.1:1"),
        ("HOOKRELAY_NOSUCH__KEY", "1"),
        ("HOOKRELAY_SERVER", "1"),
        ("HOOKRELAY_APPS__7__SECRET", "x"),
        ("HOOKRELAY_LOG__FORMAT", "xml"),
    ] {
        let out = hookrelay_cmd(&["check-config", "--config"])
            .arg(&good)
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn an_unknown_key_from_the_environment_names_its_own_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();
    let out = hookrelay_cmd(&["check-config", "--config"])
        .arg(&good)
        .env("HOOKRELAY_SINKS__0__PATH", dir.path().join("other.jsonl"))
        .env("HOOKRELAY_SINKS__0__ZZZ", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("zzz"), "{err}");
    assert!(err.contains("HOOKRELAY_SINKS__0__ZZZ"), "{err}");
}

#[tokio::test]
async fn serve_takes_its_config_from_hookrelay_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        base_config(dir.path(), "[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.arg("serve").env("HOOKRELAY_CONFIG", &config);
    let served = Served::start(cmd);
    let resp = reqwest::Client::new()
        .post(served.url(STREAM))
        .json(&stream_create("from-env-config"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the apps of the file are configured");
    wait_for_lines(&dir.path().join("events.jsonl"), 1).await;
}

#[tokio::test]
async fn serve_without_a_config_refuses_every_callback_and_says_so_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hookrelay_cmd(&["serve"]);
    cmd.current_dir(dir.path())
        .env("HOOKRELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("HOOKRELAY_LOG__FORMAT", "json")
        .env("HOOKRELAY_SPOOL__DIR", dir.path().join("spool"));
    let served = Served::start(cmd);
    let said_so = served.lines().iter().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("unknown_app"))
        })
    });
    assert!(said_so, "no start-up warning in {:?}", served.lines());
    let client = reqwest::Client::new();
    let resp = client
        .post(served.url(STREAM))
        .json(&stream_create("nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"ok": false, "error": "unknown_app"})
    );
    let body = cloud_play_body(500, "nobody");
    let mut req = client.post(served.url(CLOUD_PLAY)).body(body.clone());
    for (k, v) in netease_headers(&body, NETEASE_SECRET) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unknown_app");
}

#[tokio::test]
async fn serve_with_an_invalid_config_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    for (text, key) in [
        (
            "[spool]\nretention_hours = \"soon\"\n",
            "spool.retention_hours",
        ),
        (
            "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecert = \"typo\"\n",
            "secert",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = cli(&["serve"], &config);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn a_rejection_is_logged_once_at_warn_with_its_code_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        base_config(dir.path(), "[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let mut cmd = hookrelay_cmd(&["serve", "--config"]);
    cmd.arg(&config);
    let served = Served::start(cmd);
    let forged = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "body-marker-7f3a"}),
        "not-the-secret",
        now_secs(),
    );
    let resp = reqwest::Client::new()
        .post(served.url(STREAM))
        .header("x-request-id", "contract-log-1")
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-request-id"], "contract-log-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = served.lines();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("contract-log-1"))
        .collect();
    let warns: Vec<&&String> = ours
        .iter()
        .filter(|l| l.contains("\"level\":\"WARN\""))
        .collect();
    assert_eq!(warns.len(), 1, "one warn line for the rejection: {ours:?}");
    assert!(warns[0].contains("bad_signature"), "{}", warns[0]);
    assert!(
        warns[0].contains("\"family\":\"stream\""),
        "the span names the family: {}",
        warns[0]
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(ZEGO_SECRET) || l.contains("body-marker-7f3a")),
        "no secret and no body in the logs: {lines:?}"
    );
}

// ---------------------------------------------------------------------------
// Restarts and shutdown

#[tokio::test]
async fn the_dead_letter_gauge_counts_letters_kept_from_before_a_restart() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let sink = http_sink(Some("gone"), &receiver.url(), "");
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

// ---------------------------------------------------------------------------
// Secrets, sink defaults, the container's healthcheck

#[tokio::test]
async fn secret_env_takes_several_variables_newest_first_and_no_secret_is_ever_logged() {
    let receiver = Recorder::start(&[], 200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[spool]\ndir = \"{}\"\n\
             [[apps]]\nprovider = \"zego\"\napp_id = \"{ZEGO_APP}\"\nsecret_env = [\"CONTRACT_ZEGO_NEW\", \"CONTRACT_ZEGO_OLD\"]\n\
             [[sinks]]\nkind = \"log\"\n{}",
            dir.path().join("spool").display(),
            http_sink(Some("hooks"), &receiver.url(), "")
        ),
    )
    .unwrap();
    let mut cmd = hookrelay_cmd(&["serve", "--config"]);
    cmd.arg(&config)
        .env("CONTRACT_ZEGO_NEW", "zego-new-secret-5e1f")
        .env("CONTRACT_ZEGO_OLD", "zego-old-secret-9a7c")
        .env("RUST_LOG", "trace");
    let served = Served::start(cmd);
    let client = reqwest::Client::new();
    let post = |secret: &'static str, id: &'static str| {
        let payload = sign_lower(
            json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": id}),
            secret,
            now_secs(),
        );
        client.post(served.url(STREAM)).json(&payload).send()
    };
    assert_eq!(
        post("zego-new-secret-5e1f", "new").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("zego-old-secret-9a7c", "old").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("zego-other-secret", "other").await.unwrap().status(),
        401
    );
    receiver.wait_for_success(Duration::from_secs(20)).await;

    let metrics = client
        .get(served.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for position in [0, 1] {
        assert_eq!(
            series(
                &metrics,
                &format!(
                    "hookrelay_secret_matches_total{{provider=\"zego\",app_id=\"{ZEGO_APP}\",position=\"{position}\"}}"
                )
            ),
            Some(1.0),
            "position {position}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = served.lines();
    assert!(lines.len() > 5, "trace logging produced output");
    let key = WHSEC.trim_start_matches("whsec_");
    for secret in ["zego-new-secret-5e1f", "zego-old-secret-9a7c", key] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "a secret reached the logs"
        );
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_finds_the_port_in_the_config_named_by_hookrelay_config() {
    // As the container runs it: no --url, the config from HOOKRELAY_CONFIG.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let app = spawn_app_in(dir, &text).await;
    assert_eq!(app.addr.port(), port);
    let config = app.dir.path().join("hookrelay.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("healthcheck")
        .env("HOOKRELAY_CONFIG", &config)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _dir = app.stop().await; // kept: the config file must outlive the server
    let status = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("healthcheck")
        .env("HOOKRELAY_CONFIG", &config)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "nothing listens any more");
}

#[tokio::test]
async fn an_env_override_of_an_app_the_file_lacks_names_the_variable() {
    // config/container.toml has no [[apps]] yet suggests HOOKRELAY_APPS__0__SECRET.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-apps.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let out = hookrelay_cmd(&["check-config", "--config"])
        .arg(&config)
        .env("HOOKRELAY_APPS__0__SECRET", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HOOKRELAY_APPS__0__SECRET"),
        "{}",
        stderr(&out)
    );
}
