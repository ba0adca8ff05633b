//! Routes, methods, and the shape of every answer: JSON bodies, request ids,
//! event ids.

use crate::helpers::*;
use serde_json::{Value, json};

const ROUTES: [&str; 4] = [CLOUD_PLAYER, STREAM, COMPOSE, CLOUD_PLAY];

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

#[tokio::test]
async fn every_callback_route_answers_other_methods_with_405_json() {
    let app = spawn_app().await;
    for route in ROUTES {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
            reqwest::Method::PATCH,
        ] {
            let resp = app
                .client
                .request(method.clone(), app.url(route))
                .send()
                .await
                .unwrap();
            assert!(
                content_type(&resp).starts_with("application/json"),
                "{method} {route}"
            );
            let (status, body) = json_body(resp).await;
            assert_eq!(
                (status, body),
                (405, json!({"ok": false, "error": "method_not_allowed"})),
                "{method} {route}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_get_404_json_whatever_the_method() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::GET, "/"),
        (reqwest::Method::GET, "/callbacks/zego/stream/extra"),
        (reqwest::Method::POST, "/callbacks/netease/cloud-player"),
        (reqwest::Method::POST, "/callbacks/zego/Stream"),
        (reqwest::Method::DELETE, "/callbacks"),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{method} {path}"
        );
        let (status, body) = json_body(resp).await;
        assert_eq!(
            (status, body),
            (404, json!({"ok": false, "error": "not_found"})),
            "{method} {path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn acks_errors_and_health_answers_are_json() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;

    let resp = app.post_zego(STREAM, &stream_create("ct")).await;
    assert!(content_type(&resp).starts_with("application/json"));
    let (status, ack) = json_body(resp).await;
    assert_eq!(status, 200);
    assert_eq!(sorted_keys(&ack), ["duplicate", "id", "ok"], "{ack}");
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["duplicate"], false);
    assert!(ack["id"].is_string());

    let cases: [(&str, String, u16, &str); 3] = [
        (STREAM, "{}".to_owned(), 401, "missing_signature"),
        (COMPOSE, "just text".to_owned(), 400, "malformed_body"),
        (CLOUD_PLAYER, "x".repeat(600), 413, "payload_too_large"),
    ];
    for (route, body, want_status, code) in cases {
        let resp = app.post(route, body).await;
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{code}"
        );
        let (status, body) = json_body(resp).await;
        assert_eq!(
            (status, body),
            (want_status, json!({"ok": false, "error": code}))
        );
    }

    for path in ["/readyz", "/healthz"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            content_type(&resp).starts_with("application/json"),
            "{path}"
        );
        assert_eq!(resp.json::<Value>().await.unwrap()["ok"], true, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_given_request_id_is_echoed_on_every_kind_of_error() {
    let app = spawn_app_env(&[("HOOKRELAY_SERVER__MAX_BODY_BYTES", "512")]).await;
    let cases: [(reqwest::Method, &str, String, u16); 5] = [
        (reqwest::Method::POST, STREAM, "{}".into(), 401),
        (reqwest::Method::POST, COMPOSE, "plain text".into(), 400),
        (reqwest::Method::POST, CLOUD_PLAY, "x".repeat(600), 413),
        (reqwest::Method::POST, "/nowhere", "{}".into(), 404),
        (reqwest::Method::GET, CLOUD_PLAY, String::new(), 405),
    ];
    for (i, (method, path, body, status)) in cases.into_iter().enumerate() {
        let id = format!("contract-rid-{i}");
        let resp = app
            .client
            .request(method, app.url(path))
            .header("x-request-id", &id)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(
            resp.headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap()),
            Some(id.as_str()),
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn event_ids_are_uuids_in_the_order_the_events_arrived() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, ack) = json_body(
            app.post_zego(STREAM, &stream_create(&format!("ord-{i}")))
                .await,
        )
        .await;
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        uuid::Uuid::parse_str(id).expect("a UUID");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort in arrival order");
    app.stop().await;
}
