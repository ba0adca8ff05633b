//! The /metrics exposition: every contracted series from start-up, with its
//! type and the build version, and the counts known traffic leaves.

use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn every_listed_metric_is_exported_from_start_up() {
    let app = spawn_app().await;
    let text = metrics_text(&app).await;
    for name in [
        "hookrelay_requests_total{family=\"stream\",status=\"200\"}",
        "hookrelay_events_total{provider=\"zego\",family=\"stream\",kind=\"stream_create\"}",
        "hookrelay_rejections_total{family=\"cloud_play\",reason=\"bad_signature\"}",
        "hookrelay_duplicates_total{family=\"compose\"}",
        "hookrelay_ack_seconds_count",
        "hookrelay_spool_pending{sink=\"file\"}",
        "hookrelay_spool_oldest_pending_seconds{sink=\"file\"}",
        "hookrelay_deliveries_total{sink=\"file\",outcome=\"delivered\"}",
        "hookrelay_delivery_seconds_count{sink=\"file\"}",
        "hookrelay_dead_letters{sink=\"file\"}",
        "hookrelay_build_info{version=\"",
        "hookrelay_secret_matches_total{provider=\"zego\",app_id=\"1234567890\",position=\"0\"}",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let app = spawn_app().await;
    let first = stream_create("m1");
    app.post_zego(STREAM, &first).await;
    app.post_zego(STREAM, &stream_create("m2")).await;
    app.post_zego(STREAM, &first).await; // duplicate
    let forged = sign_lower(
        json!({"event": "stream_create", "appid": ZEGO_APP}),
        "wrong",
        now_secs(),
    );
    assert_eq!(app.post_zego(STREAM, &forged).await.status(), 401);
    app.wait_for_events(2).await;
    // Delivery progress is published right after the sink's write.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = parse_metrics(&metrics_text(&app).await);
        if m["hookrelay_spool_pending{sink=\"file\"}"] == 0.0 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no series {k}"));
    assert_eq!(
        get("hookrelay_requests_total{family=\"stream\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        get("hookrelay_requests_total{family=\"stream\",status=\"401\"}"),
        1.0
    );
    assert_eq!(
        get("hookrelay_events_total{provider=\"zego\",family=\"stream\",kind=\"stream_create\"}"),
        2.0,
        "repeats are not events"
    );
    assert_eq!(get("hookrelay_duplicates_total{family=\"stream\"}"), 1.0);
    assert_eq!(
        get("hookrelay_rejections_total{family=\"stream\",reason=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(get("hookrelay_ack_seconds_count"), 3.0);
    assert_eq!(get("hookrelay_spool_pending{sink=\"file\"}"), 0.0);
    assert_eq!(
        get("hookrelay_spool_oldest_pending_seconds{sink=\"file\"}"),
        0.0
    );
    assert_eq!(
        get("hookrelay_deliveries_total{sink=\"file\",outcome=\"delivered\"}"),
        2.0
    );
    assert_eq!(get("hookrelay_delivery_seconds_count{sink=\"file\"}"), 2.0);
    assert_eq!(get("hookrelay_dead_letters{sink=\"file\"}"), 0.0);
    assert_eq!(
        get(
            "hookrelay_secret_matches_total{provider=\"zego\",app_id=\"1234567890\",position=\"0\"}"
        ),
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_have_the_contracted_types_and_build_version() {
    let app = spawn_app().await;
    let text = metrics_text(&app).await;
    for (name, kind) in [
        ("hookrelay_requests", "counter"),
        ("hookrelay_events", "counter"),
        ("hookrelay_rejections", "counter"),
        ("hookrelay_duplicates", "counter"),
        ("hookrelay_ack_seconds", "histogram"),
        ("hookrelay_spool_pending", "gauge"),
        ("hookrelay_spool_oldest_pending_seconds", "gauge"),
        ("hookrelay_deliveries", "counter"),
        ("hookrelay_delivery_seconds", "histogram"),
        ("hookrelay_dead_letters", "gauge"),
        ("hookrelay_build", "info"),
        ("hookrelay_secret_matches", "counter"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "{name} should be a {kind} in\n{text}"
        );
    }
    let build = format!(
        "hookrelay_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(series(&text, &build), Some(1.0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("hookrelay_delivery_seconds_bucket{")
                && l.contains("sink=\"file\"")
                && l.contains("le=\"+Inf\"")),
        "delivery_seconds is a histogram per sink: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_probe_is_a_request_but_not_an_event_and_rejections_count_by_code() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;
    let (status, _) = json_body(
        app.post_netease("{}", &netease_headers("{}", NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.post(COMPOSE, "x".repeat(600)).await.status(), 413);
    assert_eq!(app.post(COMPOSE, "not a form").await.status(), 400);
    let text = metrics_text(&app).await;
    assert_eq!(
        series(
            &text,
            "hookrelay_requests_total{family=\"cloud_play\",status=\"200\"}"
        ),
        Some(1.0)
    );
    let cloud_play_events: f64 = text
        .lines()
        .filter(|l| l.starts_with("hookrelay_events_total{") && l.contains("family=\"cloud_play\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(cloud_play_events, 0.0, "a probe stores nothing");
    assert_eq!(
        series(
            &text,
            "hookrelay_rejections_total{family=\"compose\",reason=\"payload_too_large\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "hookrelay_rejections_total{family=\"compose\",reason=\"malformed_body\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "hookrelay_requests_total{family=\"compose\",status=\"413\"}"
        ),
        Some(1.0)
    );
    app.stop().await;
}
