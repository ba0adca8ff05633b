use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn healthz_answers_200_while_serving() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = spawn_app().await;
    let (status, body) = json_body(app.post("/callbacks/zego/nope", "{}").await).await;
    assert_eq!(
        (status, body),
        (404, json!({"ok": false, "error": "not_found"}))
    );
    let resp = app
        .client
        .get(app.url("/callbacks/zego/stream"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_body(resp).await;
    assert_eq!(
        (status, body),
        (405, json!({"ok": false, "error": "method_not_allowed"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_echoed() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().get("x-request-id").is_some());
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    app.stop().await;
}

#[tokio::test]
async fn with_no_apps_configured_every_callback_is_refused_as_unknown_app() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n",
        dir.path().join("spool").display()
    );
    let app = spawn_app_in(dir, &text).await;
    let (status, body) = json_body(
        app.post_zego("/callbacks/zego/stream", &stream_create("x"))
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}
