use crate::helpers::*;
use serde_json::json;

const ROUTE: &str = "/callbacks/zego/compose";

#[tokio::test]
async fn the_vendor_compose_example_is_stored_as_kind_compose_with_no_event_time() {
    let app = spawn_app().await;
    let payload = sign_lower(
        json!({
            "appid": ZEGO_APP,
            "event": "compose",
            "replay_url": "replay_url",
            "task_id": "task_id",
            "file_id": "5285890813218549789",
            "code": "0",
            "message": "success"
        }),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, ack) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    let e = &events[0];
    assert_eq!(e["family"], "compose");
    assert_eq!(e["kind"], "compose");
    assert_eq!(e["event_time_ms"], serde_json::Value::Null);
    assert_eq!(e["event"]["task_id"], "task_id");
    assert_eq!(e["event"]["file_id"], "5285890813218549789");
    assert!(
        e["event"].get("signature").is_none(),
        "signing fields stay out of the typed event"
    );
    app.stop().await;
}

#[tokio::test]
async fn compose_callbacks_are_verified_like_every_zego_family() {
    let app = spawn_app().await;
    let payload = sign_lower(
        json!({"appid": ZEGO_APP, "event": "compose", "task_id": "t"}),
        "wrong",
        now_secs(),
    );
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    app.stop().await;
}
