use crate::helpers::*;
use serde_json::json;

const ROUTE: &str = "/callbacks/zego/cloud-player";

#[tokio::test]
async fn every_documented_event_type_gets_its_kind_and_unknown_types_are_kept() {
    let app = spawn_app().await;
    let cases = [
        (1, "player_created"),
        (2, "player_destroyed"),
        (3, "player_status_changed"),
        (4, "player_exception"),
        (10001, "upload_succeeded"),
        (10002, "upload_failed"),
        (10003, "upload_status_changed"),
        (10004, "upload_cancel_failed"),
        (10005, "upload_exception"),
        (10006, "upload_expired"),
        (77, "unknown"),
    ];
    let base_time = now_ms();
    for (i, (event_type, _)) in cases.iter().enumerate() {
        let mut payload = json!({
            "AppID": ZEGO_APP.parse::<u64>().unwrap(),
            "EventType": event_type,
            "EventTime": base_time + i as u64,
            "Detail": {},
            "SomethingNew": "kept in raw",
        });
        if *event_type >= 10000 {
            payload["UploadTaskId"] = json!(format!("task-{i}"));
        } else {
            payload["PlayerId"] = json!(format!("player-{i}"));
            payload["RoomId"] = json!("room_12");
        }
        let signed = sign_pascal(payload, ZEGO_SECRET, now_secs());
        let (status, ack) = json_body(app.post_zego(ROUTE, &signed).await).await;
        assert_eq!(status, 200, "EventType {event_type}: {ack}");
    }
    let events = app.wait_for_events(cases.len()).await;
    for (i, (e, (event_type, kind))) in events.iter().zip(&cases).enumerate() {
        assert_eq!(e["kind"], *kind, "EventType {event_type}");
        assert_eq!(e["family"], "cloud_player");
        assert_eq!(e["app_id"], ZEGO_APP);
        assert_eq!(e["event_time_ms"].as_u64(), Some(base_time + i as u64));
        assert_eq!(e["raw"]["SomethingNew"], "kept in raw");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_vendor_upload_example_with_numbers_as_strings_is_accepted() {
    let app = spawn_app().await;
    let payload = sign_pascal(
        json!({
            "AppID": ZEGO_APP,
            "Detail": {},
            "EventTime": "1737451074593",
            "EventType": 10001,
            "StreamUrl": "https://your_streamurl",
            "Title": "720.mp4",
            "UploadTaskId": "678f663727b2d80007000001"
        }),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, ack) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["kind"], "upload_succeeded");
    assert_eq!(events[0]["event_time_ms"], 1737451074593i64);
    app.stop().await;
}

#[tokio::test]
async fn pascal_case_signing_fields_win_over_lowercase_decoys() {
    let app = spawn_app().await;
    let mut payload = sign_pascal(
        json!({"AppID": ZEGO_APP, "EventType": 1, "PlayerId": "p", "EventTime": now_ms()}),
        ZEGO_SECRET,
        now_secs(),
    );
    payload["signature"] = json!("0000000000000000000000000000000000000000");
    payload["timestamp"] = json!("1");
    payload["nonce"] = json!("decoy");
    let (status, ack) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200, "{ack}");
    app.stop().await;
}
