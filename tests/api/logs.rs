//! What the logs say about a request, and what they never carry.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_rejection_is_logged_once_at_warn_with_its_code_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = json_log_config(dir.path(), "");
    let mut cmd = hookrelay_cmd(&["serve", "--config"]);
    cmd.arg(&config);
    let served = Binary::spawn(cmd);
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
    let lines = served.log_lines();
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
