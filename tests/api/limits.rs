//! Request limits: the body size limit to the byte, request timeouts for
//! bodies that never arrive, and the in-flight body budget shared by every
//! route.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

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

/// An app whose body budget fits `callback` alone, with a slow body (100
/// declared bytes) held on the stream route until the request timeout (3 s)
/// answers it.
async fn app_with_a_held_body(callback: &Value) -> (TestApp, JoinHandle<String>) {
    let budget = (serde_json::to_string(callback).unwrap().len() + 50).to_string();
    let app = spawn_app_env(&[
        ("HOOKRELAY_SERVER__MAX_INFLIGHT_BODY_BYTES", budget.as_str()),
        ("HOOKRELAY_SERVER__REQUEST_TIMEOUT_SECS", "3"),
    ])
    .await;
    let addr = app.addr;
    let holder = tokio::spawn(async move { send_partial_body(addr, STREAM, "holder").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (app, holder)
}

#[tokio::test]
async fn beyond_the_body_budget_requests_are_shed_with_503_json() {
    // A slow body holds its share (100 declared bytes) of
    // server.max_inflight_body_bytes, not a unit of concurrency_limit, which
    // only the work after the body takes. The budget fits this callback
    // alone, not beside the slow one.
    let payload = stream_create("shed");
    let (app, holder) = app_with_a_held_body(&payload).await;
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
    let (app, holder) = app_with_a_held_body(&compose).await;
    let status = app.post_zego(COMPOSE, &compose).await.status();
    holder.await.unwrap();
    assert_eq!(
        status, 503,
        "one body is in flight on the stream route, so one on the compose route is shed"
    );
    app.stop().await;
}
