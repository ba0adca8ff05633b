use crate::helpers::*;
use serde_json::{Value, json};

const ROUTE: &str = "/callbacks/zego/stream";

#[tokio::test]
async fn signed_stream_create_is_stored_acknowledged_and_reaches_the_file_sink() {
    let app = spawn_app().await;
    let payload = stream_create("s1");
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["duplicate"], false);
    let id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let events = app.wait_for_events(1).await;
    let e = &events[0];
    assert_eq!(sorted_keys(e), ENVELOPE_KEYS);
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["provider"], "zego");
    assert_eq!(e["family"], "stream");
    assert_eq!(e["kind"], "stream_create");
    assert_eq!(e["app_id"], ZEGO_APP);
    assert_eq!(
        e["event_time_ms"].as_i64().unwrap().to_string(),
        payload["create_time_ms"].as_str().unwrap()
    );
    assert!(
        e["dedup_key"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_hexdigit())
    );
    assert_eq!(e["event"]["stream_id"], "s1");
    assert_eq!(e["event"]["stream_seq"], 1, "numbers are normalized");
    let mut received = payload.clone();
    received.as_object_mut().unwrap().remove("signature");
    assert_eq!(
        e["raw"], received,
        "raw is the payload as received, without its signature (a credential)"
    );
    time::OffsetDateTime::parse(
        e["received_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("received_at is RFC 3339");
    app.stop().await;
}

#[tokio::test]
async fn a_repeat_is_answered_duplicate_with_the_first_id_and_not_delivered_again() {
    let app = spawn_app().await;
    let payload = stream_create("s-dup");
    let (_, first) = json_body(app.post_zego(ROUTE, &payload).await).await;
    let (status, second) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(status, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["id"], first["id"]);

    // A vendor retry is re-signed (new timestamp and nonce): still the same event.
    let resigned = sign_lower(unsigned(payload.clone()), ZEGO_SECRET, now_secs() - 1);
    let (status, third) = json_body(app.post_zego(ROUTE, &resigned).await).await;
    assert_eq!(status, 200);
    assert_eq!(third["duplicate"], true);
    assert_eq!(third["id"], first["id"]);

    // Only one line reaches the sink: send a marker event and check what arrived.
    let (_, marker) = json_body(app.post_zego(ROUTE, &stream_create("marker")).await).await;
    let events = app.wait_for_events(2).await;
    let ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, [&first["id"], &marker["id"]]);
    app.stop().await;
}

#[tokio::test]
async fn a_captured_signature_carrying_another_body_is_refused_as_replayed() {
    let app = spawn_app().await;
    let payload = stream_create("genuine");
    assert_eq!(app.post_zego(ROUTE, &payload).await.status(), 200);
    let mut forged = payload.clone();
    forged["stream_id"] = json!("attacker_stream");
    let (status, body) = json_body(app.post_zego(ROUTE, &forged).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "replayed_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_signature_is_refused_with_401_bad_signature() {
    let app = spawn_app().await;
    let payload = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "x"}),
        "not-the-secret",
        now_secs(),
    );
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_correctly_signed_but_old_callback_is_refused_as_stale() {
    let app = spawn_app().await;
    let payload = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "x"}),
        ZEGO_SECRET,
        now_secs() - 3600,
    );
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "stale_timestamp"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_callback_without_signing_fields_is_refused_as_missing_signature() {
    let app = spawn_app().await;
    let payload =
        json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": "x", "timestamp": "1"});
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_callback_for_an_unconfigured_app_is_refused_as_unknown_app() {
    let app = spawn_app().await;
    let payload = sign_lower(
        json!({"event": "stream_create", "appid": "999", "stream_id": "x"}),
        ZEGO_SECRET,
        now_secs(),
    );
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_neither_json_nor_form_is_refused_as_malformed() {
    let app = spawn_app().await;
    for body in ["not json at all", "", "{\"event\": ", "a=1&&b"] {
        let (status, resp) = json_body(app.post(ROUTE, body).await).await;
        assert_eq!(
            (status, resp),
            (400, json!({"ok": false, "error": "malformed_body"})),
            "body {body:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "1024")]).await;
    let mut payload = stream_create("big");
    payload["extra_info"] = json!("x".repeat(2000));
    let (status, body) = json_body(app.post_zego(ROUTE, &payload).await).await;
    assert_eq!(
        (status, body),
        (413, json!({"ok": false, "error": "payload_too_large"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn form_encoded_callbacks_are_decoded_with_plus_as_space() {
    let app = spawn_app().await;
    let ts = now_secs().to_string();
    let nonce = "7254119327986670314";
    let sig = hookrelay::verify::zego::sign(ZEGO_SECRET, &ts, nonce);
    let body = format!(
        "event=stream_create&appid={ZEGO_APP}&stream_id=form1&title=my+title%2B1&rtmp_url[]=rtmp%3A%2F%2Fa&rtmp_url[]=rtmp%3A%2F%2Fb&timestamp={ts}&nonce={nonce}&signature={sig}"
    );
    let resp = app
        .post_as(ROUTE, "application/x-www-form-urlencoded", body)
        .await;
    let (status, ack) = json_body(resp).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["raw"]["title"], "my title+1");
    assert_eq!(events[0]["raw"]["nonce"], nonce);
    assert_eq!(
        events[0]["event"]["rtmp_url"],
        json!(["rtmp://a", "rtmp://b"])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_percent_encoded_json_body_is_decoded_once() {
    let app = spawn_app().await;
    let payload = stream_create("pct");
    let json_text = serde_json::to_string(&payload).unwrap();
    let encoded: String = json_text
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, ack) = json_body(app.post(ROUTE, encoded).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    let mut received = payload.clone();
    received.as_object_mut().unwrap().remove("signature");
    assert_eq!(events[0]["raw"], received);
    app.stop().await;
}

#[tokio::test]
async fn a_nineteen_digit_numeric_nonce_verifies_exactly() {
    let app = spawn_app().await;
    let ts = now_secs();
    let nonce: u64 = 7254119327986670314;
    let sig = hookrelay::verify::zego::sign(ZEGO_SECRET, &ts.to_string(), &nonce.to_string());
    let body = format!(
        r#"{{"event":"stream_close","appid":{ZEGO_APP},"stream_id":"n19","type":"0","timestamp":{ts},"nonce":{nonce},"signature":"{sig}"}}"#
    );
    let (status, ack) = json_body(app.post(ROUTE, body).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["kind"], "stream_close");
    assert_eq!(events[0]["raw"]["nonce"].as_u64(), Some(nonce));
    app.stop().await;
}

#[tokio::test]
async fn stream_siblings_and_unknown_events_keep_their_event_name_as_kind() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"event": "stream_close", "appid": ZEGO_APP, "stream_id": "c1", "type": "1", "destroy_timemillis": "1666786067123"}),
            "stream_close",
            Some(1666786067123i64),
        ),
        (
            json!({"event": "room_login", "appid": ZEGO_APP, "room_id": "r1", "login_time": "1499676978027", "session_id": "6085791336856668982"}),
            "room_login",
            Some(1499676978027),
        ),
        (
            json!({"event": "mix_start", "appid": ZEGO_APP, "task_id": "t:1", "seq": "3"}),
            "mix_start",
            None,
        ),
        (
            json!({"event": "brand_new_event", "appid": ZEGO_APP, "whatever": {"nested": 1}}),
            "brand_new_event",
            None,
        ),
    ];
    for (payload, _, _) in &cases {
        let signed = sign_lower(payload.clone(), ZEGO_SECRET, now_secs());
        let (status, ack) = json_body(app.post_zego(ROUTE, &signed).await).await;
        assert_eq!(status, 200, "{ack}");
    }
    let events = app.wait_for_events(cases.len()).await;
    for (e, (_, kind, time)) in events.iter().zip(&cases) {
        assert_eq!(e["kind"], *kind);
        assert_eq!(e["event_time_ms"].as_i64(), *time, "{kind}");
    }
    assert_eq!(events[3]["event"]["whatever"], json!({"nested": 1}));
    app.stop().await;
}
