//! The admin API and UI on the admin listener: auth (token, cookie, CSRF),
//! events with filters and paging, one event, sinks, dead letters and
//! their replay, the SSE stream, and `hookrelay tail` against it.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";

fn admin_config(extra: &str) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{extra}")
}

async fn spawn_admin_app(extra: &str) -> TestApp {
    spawn_app_with(&admin_config(extra)).await
}

fn admin_url(app: &TestApp, path: &str) -> String {
    format!("http://{}{}", app.admin_addr.expect("admin listener"), path)
}

async fn get_api(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(admin_url(app, path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    json_body(resp).await
}

/// Stores `stream_create` events for these stream ids, in order, and waits until the file sink has them.
async fn store_streams(app: &TestApp, ids: &[&str]) -> Vec<String> {
    let mut event_ids = Vec::new();
    for id in ids {
        let (status, body) = json_body(app.post_zego(STREAM, &stream_create(id)).await).await;
        assert_eq!(status, 200, "{body}");
        event_ids.push(body["id"].as_str().expect("an event id").to_owned());
    }
    event_ids
}

/// Polls the event until every sink has delivered it (the cursor is
/// committed just after the sink wrote it).
async fn wait_delivered(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, detail) = get_api(app, &format!("/api/events/{id}")).await;
        let all = detail["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["state"] == "delivered"));
        if all {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_api_refuses_requests_without_the_token_and_probes_need_none() {
    let app = spawn_admin_app("").await;
    let resp = app
        .client
        .get(admin_url(&app, "/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(resp).await,
        (
            401,
            serde_json::json!({"ok": false, "error": "unauthorized"})
        )
    );
    let resp = app
        .client
        .get(admin_url(&app, "/api/sinks"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(resp).await.0, 401);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let resp = app.client.get(admin_url(&app, probe)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{probe}");
    }
    // The UI answers its sign-in form instead.
    let resp = app
        .client
        .get(admin_url(&app, "/ui/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let page = resp.text().await.unwrap();
    assert!(page.contains("action=\"/ui/sign-in\""), "{page}");
    assert!(!page.contains(TOKEN));
    // The API is not on the public listener.
    let resp = app
        .client
        .get(app.url("/api/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn events_are_listed_newest_first_with_filters_and_paging() {
    let app = spawn_admin_app("").await;
    let ids = store_streams(&app, &["s-a", "s-b", "s-c"]).await;
    let body = cloud_play(501, "task-9");
    let resp = app
        .post_netease(&body, &netease_headers(&body, NETEASE_SECRET))
        .await;
    assert_eq!(resp.status(), 200);
    app.wait_for_events(4).await;
    wait_delivered(&app, &ids[2]).await;

    let (status, page) = get_api(&app, "/api/events?family=stream&limit=2").await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let first = &events[0];
    assert_eq!(first["provider"], "zego");
    assert_eq!(first["family"], "stream");
    assert_eq!(first["kind"], "stream_create");
    assert_eq!(first["app_id"], ZEGO_APP);
    assert_eq!(first["resource"], "s-c");
    assert!(first["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["deliveries"]["file"], "delivered");
    let next = page["next"].as_str().expect("a next page");
    assert_eq!(next, ids[1]);

    let (_, page2) = get_api(
        &app,
        &format!("/api/events?family=stream&limit=2&before={next}"),
    )
    .await;
    let got: Vec<&str> = page2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[0].as_str()]);
    assert!(page2["next"].is_null());

    let (_, all) = get_api(&app, "/api/events").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 4);
    assert_eq!(all["events"][0]["provider"], "netease");
    let (_, by_q) = get_api(&app, "/api/events?q=s-b").await;
    assert_eq!(by_q["events"].as_array().unwrap().len(), 1);
    assert_eq!(by_q["events"][0]["id"], ids[1].as_str());
    let (_, by_id) = get_api(&app, &format!("/api/events?q={}", ids[0])).await;
    assert_eq!(by_id["events"][0]["resource"], "s-a");
    let (_, by_app) = get_api(&app, &format!("/api/events?app_id={NETEASE_APP}")).await;
    assert_eq!(by_app["events"].as_array().unwrap().len(), 1);
    let (_, by_kind) = get_api(&app, "/api/events?kind=stream_create&family=").await;
    assert_eq!(by_kind["events"].as_array().unwrap().len(), 3);
    let (status, _) = get_api(&app, "/api/events?limit=zero").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn an_event_shows_its_envelope_and_each_sinks_delivery_and_an_unknown_id_is_404() {
    let app = spawn_admin_app("").await;
    let ids = store_streams(&app, &["s-one"]).await;
    let detail = wait_delivered(&app, &ids[0]).await;
    assert_eq!(detail["envelope"]["id"], ids[0].as_str());
    assert_eq!(detail["envelope"]["kind"], "stream_create");
    let d = &detail["deliveries"][0];
    assert_eq!(d["sink"], "file");
    assert_eq!(d["state"], "delivered");
    for key in [
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    ] {
        assert!(d.get(key).is_some(), "{key} missing in {d}");
    }
    let (status, body) = get_api(&app, "/api/events/0190c0de-0000-7000-8000-000000000000").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_replayed_from_the_api_are_delivered_again() {
    let receiver = TestReceiver::scripted(&[(400, None)], Mode::Status(200)).await;
    let app = spawn_admin_app(&http_sink(Some("hooks"), &receiver.url(), 2000, "")).await;
    let ids = store_streams(&app, &["s-dead"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let (_, body) = get_api(&app, "/api/dead-letters?sink=hooks").await;
        if !body["dead_letters"].as_array().unwrap().is_empty() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["id"], ids[0].as_str());
    assert_eq!(letter["sink"], "hooks");
    assert_eq!(letter["kind"], "stream_create");
    assert_eq!(letter["last_status"], 400);
    assert!(letter["dead_at"].is_string());
    let (_, detail) = get_api(&app, &format!("/api/events/{}", ids[0])).await;
    let hooks = detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == "hooks")
        .unwrap()
        .clone();
    assert_eq!(hooks["state"], "dead");
    assert_eq!(hooks["last_status"], 400);
    let (_, list) = get_api(&app, "/api/events").await;
    assert_eq!(list["events"][0]["deliveries"]["hooks"], "dead");
    let (_, sinks) = get_api(&app, "/api/sinks").await;
    let row = sinks["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hooks")
        .unwrap()
        .clone();
    assert_eq!(row["kind"], "http");
    assert_eq!(row["dead_letters"], 1);
    for key in [
        "pending",
        "oldest_pending_seconds",
        "failing_since",
        "next_attempt_at",
        "last_error",
    ] {
        assert!(row.get(key).is_some(), "{key} missing in {row}");
    }
    let (status, _) = get_api(&app, "/api/dead-letters?sink=nope").await;
    assert_eq!(status, 400);

    let resp = app
        .client
        .post(admin_url(&app, "/api/dead-letters/replay"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"ids": [ids[0]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(resp).await,
        (200, serde_json::json!({"replayed": 1}))
    );
    let delivered = receiver.wait_for_success(Duration::from_secs(20)).await;
    let body: Value = serde_json::from_slice(&delivered.last().unwrap().body).unwrap();
    assert_eq!(body["id"], ids[0].as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get_api(&app, "/api/dead-letters").await;
        if body["dead_letters"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed dead letter stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = app
        .client
        .post(admin_url(&app, "/api/dead-letters/replay"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"all": true, "sink": "hooks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(resp).await,
        (200, serde_json::json!({"replayed": 0}))
    );
    let resp = app
        .client
        .post(admin_url(&app, "/api/dead-letters/replay"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(resp).await.0, 400);
    app.stop().await;
}

/// Signs in through the UI's form; returns the session cookie pair and the page's CSRF token.
async fn sign_in(app: &TestApp) -> (String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(admin_url(app, "/ui/sign-in"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(!set_cookie.contains(TOKEN), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(admin_url(app, "/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf token on the page")
        .to_owned();
    (cookie, csrf)
}

#[tokio::test]
async fn the_ui_session_cookie_opens_the_api_and_its_posts_need_the_csrf_token() {
    let app = spawn_admin_app("").await;
    let resp = app
        .client
        .post(admin_url(&app, "/ui/sign-in"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());

    let (cookie, csrf) = sign_in(&app).await;
    let resp = app
        .client
        .get(admin_url(&app, "/api/sinks"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .get(admin_url(&app, "/api/sinks"))
        .header("cookie", "hookrelay_session=made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let replay = |headers: Vec<(&'static str, String)>| {
        let mut req = app
            .client
            .post(admin_url(&app, "/api/dead-letters/replay"))
            .header("cookie", &cookie)
            .json(&serde_json::json!({"all": true}));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let (status, body) = json_body(replay(vec![]).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("csrf_refused"))
    );
    let (status, _) = json_body(replay(vec![("x-csrf-token", "nope".into())]).await.unwrap()).await;
    assert_eq!(status, 403);
    let cross = vec![
        ("x-csrf-token", csrf.clone()),
        ("origin", "https://evil.example".into()),
    ];
    assert_eq!(json_body(replay(cross).await.unwrap()).await.0, 403);
    let fetch_cross = vec![
        ("x-csrf-token", csrf.clone()),
        ("sec-fetch-site", "cross-site".into()),
    ];
    assert_eq!(json_body(replay(fetch_cross).await.unwrap()).await.0, 403);
    let same = vec![
        ("x-csrf-token", csrf.clone()),
        ("origin", format!("http://{}", app.admin_addr.unwrap())),
        ("sec-fetch-site", "same-origin".into()),
    ];
    assert_eq!(
        json_body(replay(same).await.unwrap()).await,
        (200, serde_json::json!({"replayed": 0}))
    );
    // A bearer-token script needs no CSRF token, but is refused cross-site.
    let resp = app
        .client
        .post(admin_url(&app, "/api/dead-letters/replay"))
        .bearer_auth(TOKEN)
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Signing out ends the session.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(admin_url(&app, "/ui/sign-out"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = app
        .client
        .get(admin_url(&app, "/api/sinks"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

/// Reads SSE `envelope` events (id, data) from `resp` until `n` arrived.
pub async fn read_sse(resp: &mut reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            let mut event = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                assert_eq!(event.as_deref(), Some("envelope"));
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_event_stream_sends_new_events_and_resumes_after_last_event_id() {
    let app = spawn_admin_app("").await;
    let before = store_streams(&app, &["s-old"]).await;
    let mut resp = app
        .client
        .get(admin_url(&app, "/api/events/stream?family=stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let ids = store_streams(&app, &["s-1", "s-2"]).await;
    let body = cloud_play(501, "filtered-out");
    app.post_netease(&body, &netease_headers(&body, NETEASE_SECRET))
        .await;
    let got = read_sse(&mut resp, 2).await;
    assert_eq!(got[0].0, ids[0]);
    assert_eq!(got[1].0, ids[1]);
    assert_eq!(got[1].1["id"], ids[1].as_str());
    assert!(
        !got.iter().any(|(id, _)| id == &before[0]),
        "only events stored after connecting"
    );
    drop(resp);

    // Reconnect after the first: the second and everything newer come again.
    let later = store_streams(&app, &["s-3"]).await;
    let mut resp = app
        .client
        .get(admin_url(&app, "/api/events/stream?family=stream"))
        .bearer_auth(TOKEN)
        .header("last-event-id", &ids[0])
        .send()
        .await
        .unwrap();
    let got = read_sse(&mut resp, 2).await;
    let got: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(got, [ids[1].as_str(), later[0].as_str()]);
    let resp = app
        .client
        .get(admin_url(&app, "/api/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_a_line_per_event_and_exits_non_zero_on_a_wrong_token_or_no_server() {
    let app = spawn_admin_app("").await;
    let base = admin_url(&app, "");
    let mut child = hookrelay_cmd(&[
        "tail",
        "--url",
        &base,
        "--token-env",
        "TAIL_TEST_TOKEN",
        "--family",
        "stream",
    ])
    .env("TAIL_TEST_TOKEN", TOKEN)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // tail connects in the background: store until a line comes.
    let mut stored = Vec::new();
    let line = loop {
        stored.extend(store_streams(&app, &["tail-me"]).await);
        if let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            break line;
        }
        assert!(stored.len() < 40, "tail printed nothing");
    };
    assert!(line.contains("zego/stream/stream_create"), "{line}");
    assert!(line.contains(&format!("app {ZEGO_APP}")), "{line}");
    assert!(line.contains("tail-me"), "{line}");
    assert!(
        stored.iter().any(|id| line.ends_with(id.as_str())),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();

    let out = hookrelay_cmd(&["tail", "--url", &base, "--token-env", "TAIL_TEST_TOKEN"])
        .env("TAIL_TEST_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = app.admin_addr.unwrap();
    app.stop().await;
    let out = hookrelay_cmd(&["tail", "--url", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_nats_store_events_list_show_and_stream() {
    let Some(nats) = crate::nats_harness::NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = crate::nats_store::replica_config(dir.path(), &[nats.url()], &receiver.url(), "");
    let text = std::fs::read_to_string(path).unwrap() + &admin_config("");
    let app = spawn_app_in(dir, &text).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app
        .client
        .get(admin_url(&app, "/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = app
        .client
        .get(admin_url(&app, "/api/events/stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let ids = store_streams(&app, &["n-1", "n-2", "n-3"]).await;
    let got = read_sse(&mut stream, 3).await;
    let got: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());

    let (status, page) = get_api(&app, "/api/events?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page["events"][0]["resource"], "n-3");
    let next = page["next"].as_str().expect("a next page").to_owned();
    let (_, page2) = get_api(&app, &format!("/api/events?limit=2&before={next}")).await;
    assert_eq!(page2["events"][0]["id"], ids[0].as_str());
    assert!(page2["next"].is_null());
    let (_, by_q) = get_api(&app, "/api/events?q=n-2").await;
    assert_eq!(by_q["events"].as_array().unwrap().len(), 1);
    // The inspector's chart counts them from the stream too.
    let html = app
        .client
        .get(admin_url(&app, "/ui/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("3 events in the last hour"), "{html}");
    assert!(html.contains("stream: 3"), "{html}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, detail) = get_api(&app, &format!("/api/events/{}", ids[0])).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["envelope"]["id"], ids[0].as_str());
        assert_eq!(detail["deliveries"][0]["sink"], "hooks");
        if detail["deliveries"][0]["state"] == "delivered" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get_api(&app, "/api/events/0190c0de-0000-7000-8000-000000000000").await;
    assert_eq!(status, 404);
    drop(stream);
    app.stop().await;
}

/// Polls `path` until `done` accepts its JSON.
async fn wait_api(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get_api(app, path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never became as expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stream_event(kind: &str, stream_id: &str, sid: &str, seq: &str) -> Value {
    let mut payload = serde_json::json!({
        "event": kind,
        "appid": ZEGO_APP,
        "room_id": "room-live",
        "stream_id": stream_id,
        "stream_sid": sid,
        "stream_seq": seq,
        "user_id": "u1",
        "create_time_ms": now_ms().to_string(),
    });
    if kind == "stream_close" {
        payload["type"] = serde_json::json!("0");
        payload["destroy_timemillis"] = serde_json::json!(now_ms().to_string());
    }
    sign_lower(payload, ZEGO_SECRET, now_secs())
}

#[tokio::test]
async fn live_streams_and_players_are_derived_whatever_the_order_and_survive_a_restart() {
    let app = spawn_admin_app("").await;
    // s1 is created; s2's close arrives before its create: it never goes live.
    for payload in [
        stream_event("stream_create", "s1", "sid-1", "1"),
        stream_event("stream_close", "s2", "sid-2", "2"),
        stream_event("stream_create", "s2", "sid-2", "1"),
    ] {
        assert_eq!(app.post_zego(STREAM, &payload).await.status(), 200);
    }
    // A cloud player: created, then its status event sent earlier arrives later.
    let player = |event_type: u64, at: u64, detail: Value| {
        sign_pascal(
            serde_json::json!({"AppID": ZEGO_APP.parse::<u64>().unwrap(), "EventType": event_type,
                "EventTime": at, "PlayerId": "p-live", "RoomId": "room-live", "Detail": detail}),
            ZEGO_SECRET,
            now_secs(),
        )
    };
    let t = now_ms();
    for payload in [
        player(3, t + 2000, serde_json::json!({"Status": 4})),
        player(1, t, serde_json::json!({})),
    ] {
        let resp = app
            .post_zego("/callbacks/zego/cloud-player", &payload)
            .await;
        assert_eq!(resp.status(), 200);
    }

    let body = wait_api(&app, "/api/state/streams?room_id=room-live", |b| {
        b["streams"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    let live = &body["streams"][0];
    assert_eq!(live["stream_id"], "s1");
    assert_eq!(live["app_id"], ZEGO_APP);
    assert_eq!(live["stream_sid"], "sid-1");
    for key in ["room_id", "stream_seq", "user_id", "since_ms"] {
        assert!(live.get(key).is_some(), "{key} in {live}");
    }
    let players = wait_api(
        &app,
        &format!("/api/state/players?app_id={ZEGO_APP}"),
        |b| b["players"].as_array().is_some_and(|p| !p.is_empty()),
    )
    .await;
    let p = &players["players"][0];
    assert_eq!(p["id"], "p-live");
    assert_eq!(p["provider"], "zego");
    assert_eq!(
        p["last_kind"], "player_status_changed",
        "the latest EventTime wins: {p}"
    );

    // s1 ends; after a restart the state is derived again from the store.
    let close = stream_event("stream_close", "s1", "sid-1", "2");
    assert_eq!(app.post_zego(STREAM, &close).await.status(), 200);
    wait_api(&app, "/api/state/streams", |b| {
        b["streams"].as_array().is_some_and(|s| s.is_empty())
    })
    .await;
    let reopened = stream_event("stream_create", "s3", "sid-3", "1");
    assert_eq!(app.post_zego(STREAM, &reopened).await.status(), 200);
    let dir = app.stop().await;
    let text = std::fs::read_to_string(dir.path().join("hookrelay.toml")).unwrap();
    let app = spawn_app_in(dir, &text).await;
    let body = wait_api(&app, "/api/state/streams", |b| {
        b["streams"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    assert_eq!(body["streams"][0]["stream_id"], "s3");
    let players = wait_api(&app, "/api/state/players", |b| {
        b["players"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(players["players"][0]["last_kind"], "player_status_changed");
    app.stop().await;
}

#[tokio::test]
async fn inspector_pages_escape_event_text_and_form_posts_need_the_csrf_field() {
    let receiver = TestReceiver::scripted(&[(410, None)], Mode::Status(200)).await;
    let app = spawn_admin_app(&http_sink(Some("hooks"), &receiver.url(), 2000, "")).await;
    let evil = "<script>alert(1)</script>";
    let ids = store_streams(&app, &[evil]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get_api(&app, "/api/dead-letters?sink=hooks").await.1["dead_letters"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cookie, csrf) = sign_in(&app).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String| {
        client
            .get(admin_url(&app, &path))
            .header("cookie", &cookie)
            .send()
    };
    for path in [
        "/ui/".to_owned(),
        format!("/ui/?family=stream&q={}", ids[0]),
        format!("/ui/events/{}", ids[0]),
        "/ui/sinks".to_owned(),
        "/ui/live".to_owned(),
    ] {
        let resp = get(path.clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let html = resp.text().await.unwrap();
        assert!(
            !html.contains(evil),
            "{path} carries the raw script: {html}"
        );
        assert!(html.contains("/ui/assets/ui.css"), "{path}");
        if path != "/ui/sinks" {
            assert!(
                html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}: {html}"
            );
        }
    }
    let page = get(format!("/ui/events/{}", ids[0])).await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("state-dead") && html.contains("name=\"csrf\""),
        "{html}"
    );
    let resp = get("/ui/events/0190c0de-0000-7000-8000-000000000000".into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    for (asset, kind) in [("ui.css", "text/css"), ("ui.js", "text/javascript")] {
        let resp = app
            .client
            .get(admin_url(&app, &format!("/ui/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(content_type(&resp).starts_with(kind), "{asset}");
    }

    let replay = |token: &str, origin: Option<String>| {
        let mut req = client
            .post(admin_url(&app, &format!("/ui/events/{}/replay", ids[0])))
            .header("cookie", &cookie)
            .form(&[("csrf", token)]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(replay("nope", None).await.unwrap().status(), 403);
    let evil_origin = Some("https://evil.example".to_owned());
    assert_eq!(replay(&csrf, evil_origin).await.unwrap().status(), 403);
    let same = Some(format!("http://{}", app.admin_addr.unwrap()));
    let resp = replay(&csrf, same).await.unwrap();
    assert_eq!(resp.status(), 303);
    let to = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, format!("/ui/events/{}?replayed=1", ids[0]));
    receiver.wait_for_success(Duration::from_secs(20)).await;
    wait_delivered(&app, &ids[0]).await;
    app.stop().await;
}

#[tokio::test]
async fn without_a_token_only_a_loopback_host_name_is_served() {
    // A loopback listener may run without a token; a page on another name
    // resolving to 127.0.0.1 (DNS rebinding) must still be refused.
    let app = spawn_app_with("[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    let url = admin_url(&app, "/api/sinks");
    let local = app.client.get(&url).send().await.unwrap();
    assert_eq!(local.status(), 200);
    let rebound = app
        .client
        .get(&url)
        .header("host", "rebind.example:9090")
        .send()
        .await
        .unwrap();
    let (status, body) = json_body(rebound).await;
    assert_eq!(
        (status, body),
        (
            401,
            serde_json::json!({"ok": false, "error": "unauthorized"})
        )
    );
    app.stop().await;
}
