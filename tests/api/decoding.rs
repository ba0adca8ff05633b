//! How bodies are read: form or JSON by the body itself, whatever the
//! Content-Type says; numbers sent as strings typed; 64-bit ids and nonces
//! kept to the digit; JSON values kept verbatim.

use crate::helpers::*;
use hookrelay::verify::zego::sign;
use serde_json::json;

#[tokio::test]
async fn room_events_take_their_event_time_and_keep_u64_ids_exact() {
    let app = spawn_app().await;
    // room_create sends numbers: appid, timestamp, a UInt64 room_session_id above 2^53.
    let ts = now_secs();
    let nonce: u64 = 7254119327986670314;
    let create_ms = now_ms();
    let sig = sign(ZEGO_SECRET, &ts.to_string(), &nonce.to_string());
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
    let sig = sign(ZEGO_SECRET, &ts, nonce);
    let event_time = now_ms();
    let body = format!(
        "AppID={ZEGO_APP}&EventType=1&EventTime={event_time}&PlayerId=form-player&RoomId=room_12&PlayerName=my+player%21&Timestamp={ts}&Nonce={nonce}&Signature={sig}"
    );
    let resp = app
        .post_as(CLOUD_PLAYER, "application/x-www-form-urlencoded", body)
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
    let resp = app
        .post_as(
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
        sign(ZEGO_SECRET, &ts, nonce)
    );
    let (status, ack) = json_body(app.post_as(STREAM, "application/json", body).await).await;
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
