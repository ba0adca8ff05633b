use crate::helpers::*;
use serde_json::{Value, json};

fn cloud_play(event_type: u32, task: &str) -> String {
    json!({
        "data": {
            "streamUrl": "rtmp://example/live",
            "playTs": 10,
            "idleTimeout": 30,
            "channelId": 1144880576163552u64,
            "taskId": task,
            "code": 200,
            "timestamp": now_ms(),
        },
        "eventType": event_type
    })
    .to_string()
}

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

    let md5 = hookrelay::verify::netease::body_md5(body.as_bytes());
    let old = (now_ms() - 3_600_000).to_string();
    let headers = vec![
        ("AppKey", NETEASE_APP.to_owned()),
        ("CurTime", old.clone()),
        ("MD5", md5.clone()),
        (
            "CheckSum",
            hookrelay::verify::netease::checksum(NETEASE_SECRET, &md5, &old),
        ),
    ];
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
