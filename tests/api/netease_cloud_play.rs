//! NetEase cloud-play callbacks: every event type, the console probe,
//! signing headers (checked before the body), CurTime in milliseconds or
//! seconds, retries with a new CurTime, several apps.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn every_cloud_play_event_type_gets_its_kind() {
    let app = spawn_app().await;
    let cases = [
        (500, "task_created"),
        (501, "task_updated"),
        (502, "task_destroyed"),
        (503, "play_started"),
        (504, "play_finished"),
        (505, "play_error"),
        (506, "play_paused"),
        (507, "play_resumed"),
        (999, "unknown"),
    ];
    let mut sent = Vec::new();
    for (event_type, _) in cases {
        let body = cloud_play(event_type, &format!("task-{event_type}"));
        let resp = app
            .post_netease(&body, &netease_headers(&body, NETEASE_SECRET))
            .await;
        let (status, ack) = json_body(resp).await;
        assert_eq!(status, 200, "{event_type}: {ack}");
        assert_eq!(ack["duplicate"], false);
        sent.push(serde_json::from_str::<Value>(&body).unwrap());
    }
    let events = app.wait_for_events(cases.len()).await;
    for ((e, (event_type, kind)), body) in events.iter().zip(cases).zip(&sent) {
        assert_eq!(e["kind"], kind, "{event_type}");
        assert_eq!(e["provider"], "netease");
        assert_eq!(e["family"], "cloud_play");
        assert_eq!(e["app_id"], NETEASE_APP);
        assert_eq!(e["event_time_ms"], body["data"]["timestamp"]);
        assert_eq!(e["raw"], *body);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_console_probe_is_answered_200_and_stores_nothing() {
    let app = spawn_app().await;
    for body in ["{}", ""] {
        let (status, ack) = json_body(
            app.post_netease(body, &netease_headers(body, NETEASE_SECRET))
                .await,
        )
        .await;
        assert_eq!(
            (status, ack),
            (200, json!({"ok": true, "id": null, "duplicate": false})),
            "{body:?}"
        );
    }
    // Only the marker reaches the sink.
    let body = cloud_play(503, "marker");
    app.post_netease(&body, &netease_headers(&body, NETEASE_SECRET))
        .await;
    let events = app.wait_for_events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["taskId"], "marker");
    app.stop().await;
}

#[tokio::test]
async fn an_authentic_body_that_is_not_json_is_stored_as_unknown_with_its_text() {
    let app = spawn_app().await;
    let body = include_str!("../fixtures/seeds/netease_cloud_play_505_invalid.txt");
    let (status, ack) = json_body(
        app.post_netease(body, &netease_headers(body, NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["kind"], "unknown");
    assert_eq!(events[0]["raw"], Value::String(body.to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn a_body_changed_in_transit_is_refused_with_bad_signature() {
    let app = spawn_app().await;
    let body = cloud_play(502, "t");
    let headers = netease_headers(&body, NETEASE_SECRET);
    let tampered = body.replace("\"t\"", "\"evil\"");
    let (status, ack) = json_body(app.post_netease(&tampered, &headers).await).await;
    assert_eq!(
        (status, ack),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );

    // Recomputing the MD5 does not help without the secret.
    let mut headers = netease_headers(&tampered, "guess");
    headers.retain(|(k, _)| *k != "AppKey");
    headers.push(("AppKey", NETEASE_APP.to_owned()));
    let (status, ack) = json_body(app.post_netease(&tampered, &headers).await).await;
    assert_eq!(
        (status, ack),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_signing_headers_stale_time_and_unknown_app_are_refused() {
    let app = spawn_app().await;
    let body = cloud_play(503, "t");
    let (status, ack) = json_body(app.post_netease(&body, &[]).await).await;
    assert_eq!(
        (status, ack),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );

    let old = (now_ms() - 3_600_000).to_string();
    let headers = netease_signed(&body, NETEASE_SECRET, Some(NETEASE_APP), &old);
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, ack),
        (401, json!({"ok": false, "error": "stale_timestamp"}))
    );

    let mut headers = netease_headers(&body, NETEASE_SECRET);
    headers[0].1 = "other-app".into();
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, ack),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn without_an_appkey_header_the_only_netease_app_is_used_and_header_case_does_not_matter() {
    let app = spawn_app().await;
    let body = cloud_play(506, "no-key");
    let headers: Vec<(&str, String)> = netease_headers(&body, NETEASE_SECRET)
        .into_iter()
        .filter(|(k, _)| *k != "AppKey")
        .map(|(k, v)| match k {
            "CurTime" => ("curtime", v),
            "MD5" => ("md5", v),
            _ => ("checksum", v),
        })
        .collect();
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(status, 200, "{ack}");
    let (status, dup) = json_body(
        app.post_netease(&body, &netease_headers(&body, NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["id"], ack["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_netease_retry_with_a_new_curtime_is_answered_duplicate_with_the_first_id() {
    let app = spawn_app().await;
    let body = cloud_play(503, "retried");
    let first_time = (now_ms() - 10_000).to_string();
    let (status, first) = json_body(
        app.post_netease(
            &body,
            &netease_signed(&body, NETEASE_SECRET, Some(NETEASE_APP), &first_time),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    for cur_time in [now_ms().to_string(), (now_ms() + 1_000).to_string()] {
        let (status, again) = json_body(
            app.post_netease(
                &body,
                &netease_signed(&body, NETEASE_SECRET, Some(NETEASE_APP), &cur_time),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], first["id"]);
    }
    // Nothing new was delivered: only the marker follows the first event.
    let marker = cloud_play(504, "marker");
    let (_, m) = json_body(
        app.post_netease(&marker, &netease_headers(&marker, NETEASE_SECRET))
            .await,
    )
    .await;
    let events = app.wait_for_events(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids: Vec<Value> = read_lines(&app.events_path())
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [first["id"].clone(), m["id"].clone()], "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_netease_curtime_in_seconds_is_understood() {
    let app = spawn_app().await;
    let body = cloud_play(506, "secs");
    let headers = netease_signed(
        &body,
        NETEASE_SECRET,
        Some(NETEASE_APP),
        &now_secs().to_string(),
    );
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(status, 200, "{ack}");
    let body = cloud_play(507, "secs-old");
    let headers = netease_signed(
        &body,
        NETEASE_SECRET,
        Some(NETEASE_APP),
        &(now_secs() - 3600).to_string(),
    );
    let (status, err) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "stale_timestamp"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn netease_numbers_sent_as_strings_are_typed_and_normalized() {
    let app = spawn_app().await;
    let body = r#"{"data":{"taskId":"t-str","playTs":"12","idleTimeout":"30","code":"200","channelId":"1144880576163552","timestamp":"1653470489602"},"eventType":"504"}"#;
    let (status, ack) = json_body(
        app.post_netease(body, &netease_headers(body, NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    let e = &events[0];
    assert_eq!(e["kind"], "play_finished");
    assert_eq!(e["event_time_ms"], json!(1653470489602i64));
    assert_eq!(e["event"]["playTs"], json!(12));
    assert_eq!(e["event"]["code"], json!(200));
    assert_eq!(e["event"]["channelId"], json!(1144880576163552i64));
    assert_eq!(e["raw"]["eventType"], "504", "raw is as received");
    app.stop().await;
}

#[tokio::test]
async fn without_an_appkey_two_netease_apps_leave_the_app_unknown() {
    let app = spawn_app_with(SECOND_NETEASE_APP).await;
    let body = cloud_play(500, "which-app");
    let headers = netease_signed(&body, NETEASE_SECRET, None, &now_ms().to_string());
    let (status, err) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    let headers = netease_signed(
        &body,
        NETEASE_SECRET_2,
        Some(NETEASE_APP_2),
        &now_ms().to_string(),
    );
    let (status, ack) = json_body(app.post_netease(&body, &headers).await).await;
    assert_eq!(status, 200, "{ack}");
    let events = app.wait_for_events(1).await;
    assert_eq!(events[0]["app_id"], NETEASE_APP_2);
    app.stop().await;
}

#[tokio::test]
async fn on_the_netease_route_the_headers_are_checked_before_the_body() {
    let app = spawn_app().await;
    let (status, err) = json_body(app.post_netease("not json at all", &[]).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );
    let headers = netease_headers("something else", NETEASE_SECRET);
    let (status, err) = json_body(app.post_netease("not json at all", &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_netease_probe_must_still_be_signed() {
    let app = spawn_app().await;
    let (status, err) = json_body(app.post_netease("{}", &[]).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "missing_signature"}))
    );
    let (status, err) = json_body(
        app.post_netease("{}", &netease_headers("{}", "wrong-secret"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "bad_signature"}))
    );
    let headers = netease_signed("{}", NETEASE_SECRET, Some("nobody"), &now_ms().to_string());
    let (status, err) = json_body(app.post_netease("{}", &headers).await).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "unknown_app"}))
    );
    app.stop().await;
}
