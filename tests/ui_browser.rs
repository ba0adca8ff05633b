//! The inspector in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, `fantoccini`). Signs in through the form, sees
//! an event arrive live, opens a dead-lettered event and replays it, and
//! sees a stream go live and end.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's
//! `chromium` and `chromium-driver`). Without them the test says loudly that
//! it skipped, unless `CI` or `UI_REQUIRED` is set: then it fails.
//! `UPDATE_SCREENSHOT=1` writes `docs/inspector.png` (the README's picture).

#[path = "api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;
#[path = "api/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use fantoccini::{Client, ClientBuilder, Locator};
use helpers::*;
use receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

const TOKEN: &str = "browser-admin-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and a browser session; the driver is killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A browser, or None (after saying so) when Chromium is not installed.
async fn browser() -> Option<Browser> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("UI_REQUIRED").is_some();
        assert!(
            !required,
            "CI/UI_REQUIRED is set but {CHROMIUM} or {CHROMEDRIVER} is missing: \
             apt-get install chromium chromium-driver"
        );
        eprintln!(
            "\n\n*** SKIPPED browser tests: install chromium chromium-driver \
             ({CHROMIUM}, {CHROMEDRIVER} not found) ***\n\n"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("tempdir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no WebDriver session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Some(Browser {
        client,
        driver,
        _profile: profile,
    })
}

fn admin(app: &TestApp, path: &str) -> String {
    format!("http://{}{}", app.admin_addr.expect("admin listener"), path)
}

async fn api(app: &TestApp, path: &str) -> Value {
    let resp = app
        .client
        .get(admin(app, path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// Reloads `path` until its HTML satisfies `ok` (20 s at most).
async fn reload_until(c: &Client, url: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(url).await.unwrap();
        let html = c.source().await.unwrap();
        if ok(&html) {
            return html;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never seen at {url}:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn store(app: &TestApp, path: &str, payload: &Value) -> String {
    let resp = app.post_zego(path, payload).await;
    let (status, body) = json_body(resp).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().expect("an event id").to_owned()
}

fn stream_event(kind: &str, stream_id: &str) -> Value {
    let mut payload = json!({
        "event": kind,
        "appid": ZEGO_APP,
        "room_id": "room-ui",
        "stream_id": stream_id,
        "stream_sid": format!("sid-{stream_id}"),
        "stream_seq": "1",
        "user_id": "alice",
        "create_time_ms": now_ms().to_string(),
    });
    if kind == "stream_close" {
        payload["stream_seq"] = json!("2");
        payload["type"] = json!("0");
        payload["destroy_timemillis"] = json!(now_ms().to_string());
    }
    sign_lower(payload, ZEGO_SECRET, now_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_signs_in_shows_live_events_replays_a_dead_letter_and_follows_streams() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    // The sink refuses the first delivery for good (410), then accepts.
    let hooks = TestReceiver::scripted(&[(410, None)], Mode::Status(200)).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{}",
        http_sink(Some("hooks"), &hooks.url(), 2000, "")
    );
    let app = spawn_app_with(&config).await;
    let dead_id = store(&app, STREAM, &stream_event("stream_create", "s-dead")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api(&app, "/api/dead-letters?sink=hooks").await["dead_letters"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task = cloud_play(500, "task-ui-1");
    let headers = netease_headers(&task, NETEASE_SECRET);
    let (status, _) = json_body(app.post_netease(&task, &headers).await).await;
    assert_eq!(status, 200);

    // Sign in through the form.
    c.goto(&admin(&app, "/ui/sign-in")).await.unwrap();
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("events-body"))
        .await
        .expect("the events list after signing in");
    assert!(c.current_url().await.unwrap().path() == "/ui/");
    let html = c.source().await.unwrap();
    assert!(html.contains(&dead_id), "the stored event is listed");
    assert!(html.contains("Events per minute"), "the chart is there");

    // Live: tick the box, wait for the stream to open, store an event.
    c.find(Locator::Id("live"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body[data-live=open]"))
        .await
        .expect("the live stream opens");
    let live_id = store(&app, STREAM, &stream_event("stream_create", "s-live")).await;
    let row = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("tr.new[data-id='{live_id}']")))
        .await
        .expect("the new event appears live");
    assert!(
        row.text()
            .await
            .unwrap()
            .contains("zego/stream/stream_create")
    );

    // The list as rendered by the server, for the picture and the next step.
    c.goto(&admin(&app, "/ui/")).await.unwrap();
    if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let png = c.screenshot().await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inspector.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("wrote {}", path.display());
    }

    // Open the dead-lettered event from the list and replay it.
    c.find(Locator::Css(&format!("a[href='/ui/events/{dead_id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("replay"))
        .await
        .expect("a replay button on a dead-lettered event");
    let html = c.source().await.unwrap();
    assert!(
        html.contains("Raw payload") && html.contains("s-dead"),
        "{html}"
    );
    assert!(html.contains("state-dead"), "{html}");
    c.find(Locator::Id("replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("p.notice"))
        .await
        .expect("the replay is acknowledged");
    let notice = c.find(Locator::Css("p.notice")).await.unwrap();
    assert!(notice.text().await.unwrap().contains("Queued 1"));
    hooks.wait_for_success(Duration::from_secs(20)).await;
    let url = admin(&app, &format!("/ui/events/{dead_id}"));
    let html = reload_until(c, &url, "delivered after replay", |h| {
        h.contains("state-delivered") && !h.contains("state-dead")
    })
    .await;
    assert!(
        !html.contains("id=\"replay\""),
        "no replay button once delivered"
    );

    // Live now: both streams are live, then s-live ends.
    let live = admin(&app, "/ui/live");
    let html = reload_until(c, &live, "s-live live", |h| h.contains("s-live")).await;
    assert!(
        html.contains("room-ui") && html.contains("task-ui-1"),
        "{html}"
    );
    store(&app, STREAM, &stream_event("stream_close", "s-live")).await;
    let html = reload_until(c, &live, "s-live ended", |h| !h.contains("s-live")).await;
    assert!(html.contains("s-dead"), "the other stream is still live");

    // Sinks: backlog and the (now empty) dead letters.
    c.goto(&admin(&app, "/ui/sinks")).await.unwrap();
    let html = c.source().await.unwrap();
    assert!(html.contains(">hooks<"), "{html}");

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}
