//! The test harness: a real hookrelay on 127.0.0.1:0 with a fresh spool, and
//! helpers that sign callbacks the way the vendors do.

// An explicit path: this file is also included by other test binaries via #[path].
#[path = "helpers/binary.rs"]
mod binary;

pub use binary::*;
use hookrelay::config::Config;
use hookrelay::server::Application;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ZEGO_APP: &str = "1234567890";
pub const ZEGO_SECRET: &str = "zego-test-secret";
pub const NETEASE_APP: &str = "ne-app-key";
pub const NETEASE_SECRET: &str = "netease-test-secret";

pub const STREAM: &str = "/callbacks/zego/stream";
pub const CLOUD_PLAYER: &str = "/callbacks/zego/cloud-player";
pub const COMPOSE: &str = "/callbacks/zego/compose";
pub const CLOUD_PLAY: &str = "/callbacks/netease/cloud-play";

/// A second ZEGO app, so that "the only app" fallback cannot hide a misread app id.
pub const ZEGO_APP_2: &str = "222";
pub const ZEGO_SECRET_2: &str = "second-zego-secret";
pub const SECOND_ZEGO_APP: &str =
    "[[apps]]\nprovider = \"zego\"\napp_id = 222\nsecret = \"second-zego-secret\"\n";

pub const NETEASE_APP_2: &str = "ne-second";
pub const NETEASE_SECRET_2: &str = "second-netease-secret";
pub const SECOND_NETEASE_APP: &str = "[[apps]]\nprovider = \"netease\"\napp_id = \"ne-second\"\nsecret = \"second-netease-secret\"\n";

/// The Standard Webhooks secret of every HTTP sink in the tests.
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Test logs are silent unless TEST_LOG is set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber_init();
    }
});

fn tracing_subscriber_init() -> Option<()> {
    hookrelay::telemetry::init(&hookrelay::config::LogConfig {
        format: hookrelay::config::LogFormat::Pretty,
        level: "debug".into(),
    });
    Some(())
}

/// The config every test app starts from; `extra` is appended verbatim.
pub fn base_config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[spool]
dir = "{spool}"
[[apps]]
provider = "zego"
app_id = "{ZEGO_APP}"
secret = "{ZEGO_SECRET}"
[[apps]]
provider = "netease"
app_id = "{NETEASE_APP}"
secret = "{NETEASE_SECRET}"
[[sinks]]
kind = "file"
name = "file"
path = "{events}"
{extra}
"#,
        spool = dir.join("spool").display(),
        events = dir.join("events.jsonl").display(),
    )
}

/// An `[[sinks]]` entry for an HTTP sink signing with [`WHSEC`]; `extra` is appended.
pub fn http_sink(name: Option<&str>, url: &str, timeout_ms: u64, extra: &str) -> String {
    let name = name
        .map(|n| format!("name = \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "[[sinks]]\nkind = \"http\"\n{name}url = \"{url}\"\nsecret = \"{WHSEC}\"\ntimeout_ms = {timeout_ms}\n{extra}\n"
    )
}

/// Writes `dir/hookrelay.toml`: [`base_config`] with JSON logs, plus `extra`.
pub fn json_log_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("hookrelay.toml");
    std::fs::write(
        &path,
        base_config(dir, &format!("[log]\nformat = \"json\"\n{extra}")),
    )
    .unwrap();
    path
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub dir: TempDir,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Starts an app whose config is [`base_config`] plus `extra`.
pub async fn spawn_app_with(extra: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path(), extra);
    spawn_app_in(dir, &text).await
}

/// Starts an app with [`base_config`] overridden by `HOOKRELAY_*` variables
/// (passed to the loader, not set in the process, so tests stay independent).
pub async fn spawn_app_env(env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path(), "");
    spawn_app_in_env(dir, &text, env).await
}

/// Starts an app in `dir` with the config `text`.
pub async fn spawn_app_in(dir: TempDir, text: &str) -> TestApp {
    spawn_app_in_env(dir, text, &[]).await
}

async fn spawn_app_in_env(dir: TempDir, text: &str, env: &[(&str, &str)]) -> TestApp {
    LazyLock::force(&TRACING);
    let path = dir.path().join("hookrelay.toml");
    std::fs::write(&path, text).expect("write config");
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::load(Some(&path), env).expect("test config is valid");
    let app = Application::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        admin_addr,
        dir,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_as(path, "application/json", body).await
    }

    /// A POST whose Content-Type is `ctype`.
    pub async fn post_as(
        &self,
        path: &str,
        ctype: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_zego(&self, family_path: &str, payload: &Value) -> reqwest::Response {
        self.post(family_path, serde_json::to_vec(payload).unwrap())
            .await
    }

    pub async fn post_netease(&self, body: &str, headers: &[(&str, String)]) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(CLOUD_PLAY))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("request sent")
    }

    /// Stops the app cleanly and waits for it.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("app task").expect("app ran");
        }
        self.dir
    }

    /// Waits until the file sink holds `n` lines (or panics after 20 s).
    pub async fn wait_for_events(&self, n: usize) -> Vec<Value> {
        wait_for_lines(&self.events_path(), n).await
    }
}

/// Waits until `path` holds at least `n` JSON lines (or panics after 20 s).
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lines = read_lines(path);
        if lines.len() >= n {
            return lines;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "expected {n} events in {}, found {}",
                path.display(),
                lines.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Adds lowercase timestamp/nonce/signature (stream, compose) signed with `secret` at `ts`.
pub fn sign_lower(mut payload: Value, secret: &str, ts: u64) -> Value {
    let nonce = fastrand::u64(..).to_string();
    let ts = ts.to_string();
    let sig = hookrelay::verify::zego::sign(secret, &ts, &nonce);
    let m = payload.as_object_mut().unwrap();
    m.insert("timestamp".into(), json!(ts));
    m.insert("nonce".into(), json!(nonce));
    m.insert("signature".into(), json!(sig));
    payload
}

/// Adds PascalCase Timestamp/Nonce/Signature (cloud player).
pub fn sign_pascal(mut payload: Value, secret: &str, ts: u64) -> Value {
    let nonce = fastrand::u64(..).to_string();
    let ts = ts.to_string();
    let sig = hookrelay::verify::zego::sign(secret, &ts, &nonce);
    let m = payload.as_object_mut().unwrap();
    m.insert("Timestamp".into(), json!(ts));
    m.insert("Nonce".into(), json!(nonce));
    m.insert("Signature".into(), json!(sig));
    payload
}

/// A stream_create for our test app, signed now.
pub fn stream_create(stream_id: &str) -> Value {
    sign_lower(
        json!({
            "event": "stream_create",
            "appid": ZEGO_APP,
            "room_id": "room1",
            "stream_id": stream_id,
            "stream_sid": format!("sid-{stream_id}"),
            "stream_seq": "01",
            "create_time_ms": now_ms().to_string(),
            "rtmp_url": ["rtmp://example/live/1"],
        }),
        ZEGO_SECRET,
        now_secs(),
    )
}

/// Removes the ZEGO signing fields (either casing) so a payload can be re-signed.
pub fn unsigned(mut payload: Value) -> Value {
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

/// NetEase signing headers for `body`, signed now with `secret`.
pub fn netease_headers(body: &str, secret: &str) -> Vec<(&'static str, String)> {
    netease_signed(body, secret, Some(NETEASE_APP), &now_ms().to_string())
}

/// NetEase signing headers with an explicit AppKey (or none, then it is
/// left out) and CurTime.
pub fn netease_signed(
    body: &str,
    secret: &str,
    app_key: Option<&str>,
    cur_time: &str,
) -> Vec<(&'static str, String)> {
    let md5 = hookrelay::verify::netease::body_md5(body.as_bytes());
    let checksum = hookrelay::verify::netease::checksum(secret, &md5, cur_time);
    let app_key = app_key.map(|key| ("AppKey", key.to_owned()));
    app_key
        .into_iter()
        .chain([
            ("CurTime", cur_time.to_owned()),
            ("MD5", md5),
            ("CheckSum", checksum),
        ])
        .collect()
}

/// A NetEase cloud-play callback body of `event_type` for `task`, timed now.
pub fn cloud_play(event_type: u32, task: &str) -> String {
    json!({
        "data": {
            "streamUrl": "rtmp://example/live",
            "playTs": 10,
            "idleTimeout": 30,
            "channelId": 1144880576163552u64,
            "taskId": task,
            "code": 200,
            "timestamp": now_ms(),
        },
        "eventType": event_type
    })
    .to_string()
}

pub async fn json_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.expect("JSON response");
    (status, body)
}

/// The keys of every envelope, sorted.
pub const ENVELOPE_KEYS: [&str; 10] = [
    "app_id",
    "dedup_key",
    "event",
    "event_time_ms",
    "family",
    "id",
    "kind",
    "provider",
    "raw",
    "received_at",
];

/// The keys of a JSON object, sorted.
pub fn sorted_keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

pub fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GET `url` (a /metrics endpoint), expecting 200; the text exposition.
pub async fn metrics_at(client: &reqwest::Client, url: &str) -> String {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The app's /metrics text.
pub async fn metrics_text(app: &TestApp) -> String {
    metrics_at(&app.client, &app.url("/metrics")).await
}

/// Parses the text exposition into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of one exact series (`name{labels}`), if exported.
pub fn series(text: &str, name: &str) -> Option<f64> {
    parse_metrics(text).get(name).copied()
}

/// Opens a connection that POSTs to `path` declaring a body of `declared`
/// bytes (with `request_id` as X-Request-Id, if given) and sends `sent` of
/// them, then holds it; returns the stream.
pub async fn stalled_body(
    addr: SocketAddr,
    path: &str,
    declared: usize,
    sent: usize,
    request_id: Option<&str>,
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request_id = request_id
        .map(|id| format!("X-Request-Id: {id}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n{request_id}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut body = vec![b' '; sent];
    if let Some(first) = body.first_mut() {
        *first = b'{';
    }
    stream.write_all(&body).await.unwrap();
    stream
}

/// Reads one whole response (headers and a Content-Length body, or until
/// the server closes) from `stream`; `None` if it takes longer than `within`.
pub async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
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
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Sends the head of a request and only part of its body, then waits for the answer.
pub async fn send_partial_body(addr: SocketAddr, path: &str, request_id: &str) -> String {
    let mut stream = stalled_body(addr, path, 100, 5, Some(request_id)).await;
    let response = read_response(&mut stream, Duration::from_secs(10)).await;
    assert!(
        response.is_some(),
        "no answer to a request whose body never came"
    );
    response.unwrap_or_default()
}
