//! Acknowledged means stored: restarts, crashes and failing sinks lose nothing.

use crate::helpers::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROUTE: &str = "/callbacks/zego/stream";

/// The real binary, started on `config`; returns once it is listening.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
}

impl Binary {
    pub fn start(config: &Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("HOOKRELAY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "hookrelay listening" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("binary logs its address")
            .parse()
            .expect("a socket address");
        Binary { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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

#[tokio::test]
async fn acknowledged_events_survive_a_kill_9_and_reach_the_file_sink_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, base_config(dir.path(), "[log]\nformat = \"json\"\n")).unwrap();
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
    let resp = client.post(bin.url(ROUTE)).json(&stream_create("crash-0")).send().await.unwrap();
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["duplicate"], json!(false), "a new signature on new content is new");
    drop(bin);
}

#[tokio::test]
async fn a_file_sink_that_cannot_write_keeps_retrying_and_catches_up_without_delaying_acks() {
    let app = spawn_app().await;
    std::fs::create_dir(app.events_path()).unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        let (status, ack) = json_body(app.post_zego(ROUTE, &stream_create(&format!("blocked-{i}"))).await).await;
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
    let app = spawn_app_env(&[("HOOKRELAY_SPOOL__MAX_SIZE_MB", "1")]).await;
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
