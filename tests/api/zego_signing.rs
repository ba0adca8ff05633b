//! ZEGO verification across the families: which app a callback names (under
//! each spelling, as a string or a number), timestamps in seconds or
//! milliseconds, signatures in either case, replays across routes, and
//! re-sent or re-signed retries that are duplicates, not replays.

use crate::helpers::*;
use hookrelay::verify::zego::sign;
use serde_json::json;

#[tokio::test]
async fn a_zego_appid_sent_as_a_json_number_selects_its_app() {
    let app = spawn_app_with(SECOND_ZEGO_APP).await;
    let ts = now_secs().to_string();
    let nonce = "31337";
    let body = format!(
        r#"{{"event":"stream_create","appid":{ZEGO_APP_2},"stream_id":"num-app","timestamp":"{ts}","nonce":"{nonce}","signature":"{}"}}"#,
        sign(ZEGO_SECRET_2, &ts, nonce)
    );
    let (status, ack) = json_body(app.post(STREAM, body).await).await;
    assert_eq!(status, 200, "{ack}");

    let body = format!(
        r#"{{"event":"stream_create","appid":999,"stream_id":"num-app","timestamp":"{ts}","nonce":"{nonce}","signature":"{}"}}"#,
        sign(ZEGO_SECRET_2, &ts, nonce)
    );
    let (status, err) = json_body(app.post(STREAM, body).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );

    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["app_id"], json!(ZEGO_APP_2), "app_id is a string");
    assert_eq!(
        events[0]["raw"]["appid"],
        json!(222),
        "raw keeps the number as sent"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_app_id_is_read_under_each_documented_spelling() {
    // With two ZEGO apps there is no "only app" to fall back on: a misread
    // app id would be refused as unknown_app.
    let app = spawn_app_with(SECOND_ZEGO_APP).await;
    for (i, key) in ["AppID", "AppId", "appid"].into_iter().enumerate() {
        let mut payload =
            json!({"EventType": 1, "PlayerId": format!("p-{key}"), "EventTime": now_ms()});
        payload[key] = json!(ZEGO_APP_2);
        let signed = sign_pascal(payload, ZEGO_SECRET_2, now_secs());
        let (status, ack) = json_body(app.post_zego(CLOUD_PLAYER, &signed).await).await;
        assert_eq!(status, 200, "{key}: {ack}");
        let events = app.wait_for_events(i + 1).await;
        assert_eq!(events[i]["app_id"], ZEGO_APP_2, "{key}");
        assert_eq!(events[i]["kind"], "player_created", "{key}");
    }
    let signed = sign_pascal(
        json!({"AppId": "31415", "EventType": 1}),
        ZEGO_SECRET_2,
        now_secs(),
    );
    let (status, err) = json_body(app.post_zego(CLOUD_PLAYER, &signed).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn zego_timestamps_in_milliseconds_are_understood() {
    let app = spawn_app().await;
    let fresh = sign_lower(unsigned(stream_create("ms-fresh")), ZEGO_SECRET, now_ms());
    let (status, ack) = json_body(app.post_zego(STREAM, &fresh).await).await;
    assert_eq!(status, 200, "{ack}");
    for (label, ts) in [
        ("an hour ago", now_ms() - 3_600_000),
        ("an hour ahead", now_ms() + 3_600_000),
    ] {
        let stale = sign_lower(
            unsigned(stream_create(&format!("ms-{label}"))),
            ZEGO_SECRET,
            ts,
        );
        let (status, err) = json_body(app.post_zego(STREAM, &stale).await).await;
        assert_eq!(
            (status, err),
            (401, json!({"ok": false, "error": "stale_timestamp"})),
            "{label}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_uppercase_hex_signature_verifies_and_is_remembered_against_replay() {
    let app = spawn_app().await;
    let mut payload = stream_create("upper");
    let lower = payload["signature"].as_str().unwrap().to_owned();
    payload["signature"] = json!(lower.to_ascii_uppercase());
    let (status, ack) = json_body(app.post_zego(STREAM, &payload).await).await;
    assert_eq!(status, 200, "{ack}");

    // The captured signature, in either case, cannot carry another body.
    for sig in [lower.clone(), lower.to_ascii_uppercase()] {
        let mut forged = payload.clone();
        forged["stream_id"] = json!("forged");
        forged["signature"] = json!(sig);
        let (status, err) = json_body(app.post_zego(STREAM, &forged).await).await;
        assert_eq!(
            (status, err),
            (401, json!({"ok": false, "error": "replayed_signature"}))
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_captured_signature_cannot_be_reused_on_another_zego_route() {
    let app = spawn_app().await;
    let genuine = stream_create("cross-route");
    assert_eq!(app.post_zego(STREAM, &genuine).await.status(), 200);
    let mut forged = json!({"event": "compose", "appid": ZEGO_APP, "task_id": "evil"});
    for k in ["timestamp", "nonce", "signature"] {
        forged[k] = genuine[k].clone();
    }
    let (status, err) = json_body(app.post_zego(COMPOSE, &forged).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "replayed_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resent_callback_with_reordered_keys_is_a_duplicate_not_a_replay() {
    let app = spawn_app().await;
    let ts = now_secs().to_string();
    let nonce = "918273645";
    let sig = sign(ZEGO_SECRET, &ts, nonce);
    let first = format!(
        r#"{{"event":"stream_close","appid":"{ZEGO_APP}","stream_id":"reorder","type":"0","timestamp":"{ts}","nonce":"{nonce}","signature":"{sig}"}}"#
    );
    let reordered = format!(
        r#"{{ "signature" : "{sig}", "nonce":"{nonce}", "timestamp":"{ts}", "type":"0", "stream_id":"reorder", "appid":"{ZEGO_APP}", "event":"stream_close" }}"#
    );
    let (_, a) = json_body(app.post(STREAM, first).await).await;
    let (status, b) = json_body(app.post(STREAM, reordered).await).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["duplicate"], true);
    assert_eq!(b["id"], a["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_resigned_cloud_player_retry_is_a_duplicate_with_the_first_id() {
    let app = spawn_app().await;
    let payload = json!({"AppID": ZEGO_APP, "EventType": 3, "PlayerId": "dup-p", "EventTime": now_ms(), "Detail": {"Status": 2}});
    let (_, first) = json_body(
        app.post_zego(
            CLOUD_PLAYER,
            &sign_pascal(payload.clone(), ZEGO_SECRET, now_secs()),
        )
        .await,
    )
    .await;
    let (status, again) = json_body(
        app.post_zego(
            CLOUD_PLAYER,
            &sign_pascal(payload, ZEGO_SECRET, now_secs() - 2),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);
    app.stop().await;
}
