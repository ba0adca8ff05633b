//! The test harness: a real hookrelay on 127.0.0.1:0 with a fresh spool, and
//! helpers that sign callbacks the way the vendors do.

use hookrelay::config::Config;
use hookrelay::server::Application;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ZEGO_APP: &str = "1234567890";
pub const ZEGO_SECRET: &str = "zego-test-secret";
pub const NETEASE_APP: &str = "ne-app-key";
pub const NETEASE_SECRET: &str = "netease-test-secret";

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
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
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
            .post(self.url("/callbacks/netease/cloud-play"))
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

/// NetEase signing headers for `body`, signed now with `secret`.
pub fn netease_headers(body: &str, secret: &str) -> Vec<(&'static str, String)> {
    let md5 = hookrelay::verify::netease::body_md5(body.as_bytes());
    let cur = now_ms().to_string();
    let checksum = hookrelay::verify::netease::checksum(secret, &md5, &cur);
    vec![
        ("AppKey", NETEASE_APP.to_owned()),
        ("CurTime", cur),
        ("MD5", md5),
        ("CheckSum", checksum),
    ]
}

pub async fn json_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.expect("JSON response");
    (status, body)
}

/// The real binary, started on `config`; returns once it is listening.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    /// Every line the binary wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn start(config: &Path) -> Binary {
        Binary::start_with_env(config, &[])
    }

    /// Starts with extra environment variables (config overrides).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("HOOKRELAY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "hookrelay listening"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("binary logs its address")
            .parse()
            .expect("a socket address");
        Binary { child, addr, log }
    }

    /// The stderr lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A line of /proc/<pid>/status in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, HUP, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit by itself (panics after `within`).
    pub fn wait_exit(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
