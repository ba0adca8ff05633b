//! Secrets and attacker-controlled text stay out of what hookrelay prints,
//! logs and writes: `check-config`, sink errors, config errors, file modes,
//! operator output; and start-up refuses sinks that would leak.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const ROUTE: &str = "/callbacks/zego/stream";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookrelay(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("HOOKRELAY_CONFIG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `base_config` plus `extra` to `dir/hookrelay.toml`.
fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("hookrelay.toml");
    std::fs::write(&path, base_config(dir, extra)).unwrap();
    path
}

fn http_sink(name: &str, url: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nkind = \"http\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{secret}\"\ntimeout_ms = 1000\n{extra}\n"
    )
}

/// `hookrelay serve` that must refuse to start: its exit status and stderr
/// (panics if it is still running after 20 s).
fn serve_refused(config: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("HOOKRELAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookrelay started with a config it should refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary with every stderr (log) line kept.
struct LoggedBinary {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LoggedBinary {
    fn start(config: &Path) -> LoggedBinary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("HOOKRELAY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
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
            .expect("the binary logs its address")
            .parse()
            .unwrap();
        LoggedBinary { child, addr, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (panics after 20 s).
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.lines().iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LoggedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dead-letters list --json` rows, polled until there are `n` (20 s deadline).
async fn wait_for_dead_letters(config: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = hookrelay(&["dead-letters", "list", "--json"], config);
        let rows: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each row is JSON"))
            .collect();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} dead letters, found {}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn raw_controls(s: &str) -> Vec<char> {
    s.chars().filter(|c| c.is_control() && *c != '\n').collect()
}

#[tokio::test]
async fn check_config_redacts_sink_headers_url_query_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &http_sink(
            "hooks",
            "https://ops:hunter2-pw@hooks.example:8443/in/zego?token=tok-3141&x=1#frag-99",
            WHSEC,
            "headers = { Authorization = \"Bearer bearer-2718\", \"X-Team\" = \"team-1618\" }",
        ),
    );

    let out = hookrelay(&["check-config"], &config);

    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for secret in [
        "hunter2-pw",
        "ops",
        "tok-3141",
        "frag-99",
        "bearer-2718",
        "team-1618",
        WHSEC.trim_start_matches("whsec_"),
        ZEGO_SECRET,
        NETEASE_SECRET,
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let effective: toml::Table = printed.parse().expect("still TOML");
    let sink = &effective["sinks"][1];
    assert_eq!(
        sink["url"].as_str(),
        Some("https://[redacted]@hooks.example:8443/in/zego?[redacted]#[redacted]")
    );
    assert_eq!(
        sink["headers"]["Authorization"].as_str(),
        Some("[redacted]")
    );
    assert_eq!(sink["headers"]["X-Team"].as_str(), Some("[redacted]"));
    assert_eq!(sink["secret"].as_str(), Some("[redacted]"));
    assert_eq!(
        effective["apps"][0]["secrets"][0].as_str(),
        Some("[redacted]")
    );
}

/// Accepts connections, reads the request and hangs up without answering:
/// the client gets a request error (not a connect error or a timeout).
async fn hang_up_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
        }
    });
    addr
}

#[tokio::test]
async fn http_sink_errors_log_and_record_only_scheme_host_and_port() {
    let target = hang_up_server().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{target}/private-path/hook?token=tok-5772");
    let config = write_config(
        dir.path(),
        &format!(
            "{}[log]\nformat = \"json\"\n",
            http_sink("leaky", &url, WHSEC, "max_attempts = 1")
        ),
    );
    let bin = LoggedBinary::start(&config);

    let resp = reqwest::Client::new()
        .post(format!("http://{}{ROUTE}", bin.addr))
        .json(&stream_create("leak-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rows = wait_for_dead_letters(&config, 1).await;
    bin.wait_for_log("event moved to dead letters").await;

    let origin = format!("http://{target}");
    let error = rows[0]["last_error"].as_str().unwrap();
    assert!(error.contains(&origin), "{error}");
    let table = text(&hookrelay(&["dead-letters", "list"], &config).stdout);
    let logs = bin.lines().join("\n");
    for (what, output) in [("dead letter", error), ("table", &table), ("logs", &logs)] {
        assert!(!output.contains("private-path"), "{what}: {output}");
        assert!(!output.contains("tok-5772"), "{what}: {output}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("event moved to dead letters") && l.contains(&origin)),
        "the ERROR line names the target by origin:\n{logs}"
    );
}

#[tokio::test]
async fn a_numeric_secret_variable_is_a_string_and_type_errors_never_quote_a_secret() {
    // The variable's digits are the secret: the app starts and verifies with them.
    let app = spawn_app_env(&[("HOOKRELAY_APPS__0__SECRET", "839201747362")]).await;
    let payload = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "digits"}),
        "839201747362",
        now_secs(),
    );
    assert_eq!(app.post_zego(ROUTE, &payload).await.status(), 200);
    assert_eq!(
        app.post_zego(ROUTE, &stream_create("old-secret"))
            .await
            .status(),
        401
    );
    app.stop().await;

    // A secret of the wrong type in the file: the error names the key only.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = 839201747362\n",
    )
    .unwrap();
    let out = hookrelay(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`apps[0].secret`"), "{err}");
    assert!(!err.contains("839201747362"), "{err}");

    // Same for a sink secret and a sink header.
    for (key, sink) in [
        (
            "secret",
            "[[sinks]]\nkind = \"http\"\nurl = \"https://h.example/\"\nsecret = 5550123\n",
        ),
        (
            "headers",
            "[[sinks]]\nkind = \"http\"\nurl = \"https://h.example/\"\nsecret_env = \"X\"\nheaders = { Authorization = 5550123 }\n",
        ),
    ] {
        std::fs::write(&config, sink).unwrap();
        let out = hookrelay(&["check-config"], &config);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("sinks[0]"), "{key}: {err}");
        assert!(!err.contains("5550123"), "{key}: {err}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_spool_and_the_file_sink_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out/deep/events.jsonl");
    let text = base_config(
        dir.path(),
        &format!(
            "[[sinks]]\nkind = \"file\"\nname = \"private\"\npath = \"{}\"\n",
            out_file.display()
        ),
    );
    let root = dir.path().to_owned();
    let app = spawn_app_in(dir, &text).await;

    assert_eq!(
        app.post_zego(ROUTE, &stream_create("m")).await.status(),
        200
    );
    wait_for_lines(&out_file, 1).await;

    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let spool = root.join("spool");
    assert_eq!(mode(&spool), 0o700, "spool dir");
    assert_eq!(mode(&spool.join("log")), 0o700, "log dir");
    let segments: Vec<_> = std::fs::read_dir(spool.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!segments.is_empty(), "the event log has a segment");
    for segment in &segments {
        assert_eq!(mode(segment), 0o600, "{}", segment.display());
    }
    for name in ["spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm"] {
        assert_eq!(mode(&spool.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&root.join("out")), 0o700, "file sink dir");
    assert_eq!(mode(&root.join("out/deep")), 0o700, "file sink dir");
    assert_eq!(mode(&out_file), 0o600, "file sink output");
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_list_and_events_show_escape_control_characters() {
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let app = spawn_app_with(&http_sink("gone", &receiver.url(), WHSEC, "")).await;
    let config = app.dir.path().join("hookrelay.toml");
    let evil = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{7f}kind";
    let payload = sign_lower(
        json!({"event": evil, "appid": ZEGO_APP, "stream_id": "evil"}),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, ack) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200, "{ack}");
    let id = ack["id"].as_str().unwrap().to_owned();

    let rows = wait_for_dead_letters(&config, 1).await;
    assert_eq!(rows[0]["kind"], evil, "--json keeps the value, escaped");

    let json_out = hookrelay(&["dead-letters", "list", "--json"], &config);
    let table = hookrelay(&["dead-letters", "list"], &config);
    let show = hookrelay(&["events", "show", &id], &config);
    for (what, out) in [("--json", &json_out), ("table", &table), ("show", &show)] {
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        for stream in [text(&out.stdout), text(&out.stderr)] {
            assert_eq!(
                raw_controls(&stream),
                Vec::<char>::new(),
                "{what}: {stream:?}"
            );
        }
    }
    let table = text(&table.stdout);
    assert!(
        table.contains("evil\\u001b[2J\\u001b]0;pwned\\u0007\\u009b31m\\u007fkind"),
        "{table}"
    );
    let shown: Value = serde_json::from_slice(&show.stdout).expect("events show prints JSON");
    assert_eq!(shown["kind"], evil);
    app.stop().await;
}

#[tokio::test]
async fn an_http_sink_secret_with_an_empty_key_is_refused_at_start_up_naming_the_key() {
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &http_sink("hooks", &receiver.url(), "whsec_", ""),
    );

    let (status, err) = serve_refused(&config);

    assert!(!status.success());
    assert!(err.contains("invalid config at `sinks[1].secret`"), "{err}");
    assert!(err.contains("empty"), "{err}");
}

#[tokio::test]
async fn a_plain_http_sink_url_is_refused_unless_loopback_or_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://hooks.example/in",
        "http://10.0.0.7:8080/in",
        "http://127.0.0.1.example.com/in",
    ] {
        let config = write_config(dir.path(), &http_sink("hooks", url, WHSEC, ""));
        let (status, err) = serve_refused(&config);
        assert!(!status.success(), "{url}");
        assert!(
            err.contains("invalid config at `sinks[1].url`"),
            "{url}: {err}"
        );
        assert!(err.contains("allow_plain_http"), "{url}: {err}");

        let config = write_config(
            dir.path(),
            &http_sink("hooks", url, WHSEC, "allow_plain_http = true"),
        );
        let out = hookrelay(&["check-config"], &config);
        assert_eq!(out.status.code(), Some(0), "{url}: {}", text(&out.stderr));
    }
    for url in [
        "http://127.0.0.1:9/in",
        "http://127.8.9.10:9/in",
        "http://[::1]:9/in",
        "http://localhost:9/in",
        "https://hooks.example/in",
    ] {
        let config = write_config(dir.path(), &http_sink("hooks", url, WHSEC, ""));
        let out = hookrelay(&["check-config"], &config);
        assert_eq!(out.status.code(), Some(0), "{url}: {}", text(&out.stderr));
    }
}
