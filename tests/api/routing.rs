//! Routing (`match`) and pace (`max_per_second`): each sink gets only what
//! it is for, at a pace it can take, from real HTTP receivers.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A signed ZEGO stream-family callback of `event` for app `app`.
fn zego_event(app: &str, event: &str, fields: Value) -> Value {
    let secret = if app == ZEGO_APP_2 {
        ZEGO_SECRET_2
    } else {
        ZEGO_SECRET
    };
    let mut payload = json!({"event": event, "appid": app});
    for (k, v) in fields.as_object().unwrap() {
        payload[k] = v.clone();
    }
    sign_lower(payload, secret, now_secs())
}

async fn post_ok(app: &TestApp, route: &str, payload: &Value) -> String {
    let (status, ack) = json_body(app.post_zego(route, payload).await).await;
    assert_eq!(status, 200, "{ack}");
    ack["id"].as_str().unwrap().to_owned()
}

async fn post_netease_ok(app: &TestApp, body: &str) -> String {
    let (status, ack) = json_body(
        app.post_netease(body, &netease_headers(body, NETEASE_SECRET))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    ack["id"].as_str().unwrap().to_owned()
}

/// The envelope ids a receiver got (2xx), in arrival order.
fn ids(receiver: &TestReceiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| envelope(&r.body)["id"].as_str().unwrap().to_owned())
        .collect()
}

fn envelope(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

fn deliveries(metrics: &str, sink: &str, outcome: &str) -> f64 {
    series(
        metrics,
        &format!("hookrelay_deliveries_total{{sink=\"{sink}\",outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {outcome} series for {sink}"))
}

/// Polls /metrics until `check` holds (or panics after 20 s); the last text.
async fn wait_metrics(app: &TestApp, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_text(app).await;
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stays a while, then checks `receiver` got exactly `expected` (no late extras).
async fn got_exactly(receiver: &TestReceiver, expected: &[&String], name: &str) {
    receiver
        .wait_for(expected.len(), Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = ids(receiver);
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "sink {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_receives_only_what_its_match_accepts_by_every_key_and_their_combinations() {
    // Arrange: one receiver per rule.
    let rules = [
        ("by_provider", r#"match = { provider = "netease" }"#),
        ("by_family", r#"match = { family = "compose" }"#),
        (
            "by_kind",
            r#"match = { kind = ["stream_close", "room_login"] }"#,
        ),
        ("by_app", r#"match = { app_id = "222" }"#),
        (
            "combined",
            r#"match = { provider = "zego", family = "stream", kind = ["stream_create", "stream_close"], app_id = "1234567890" }"#,
        ),
        (
            "unknown",
            r#"match = { family = "stream", kind = "unknown" }"#,
        ),
        (
            "by_field",
            "[sinks.match]\nfamily = \"stream\"\nfields = { \"room_id\" = [\"room-a\", \"room-b\"] }",
        ),
        (
            "nested",
            "[sinks.match]\nfields = { \"whatever.nested\" = 1, \"whatever.tags.1\" = \"blue\" }",
        ),
        ("everything", ""),
    ];
    let mut receivers = HashMap::new();
    let mut extra = SECOND_ZEGO_APP.to_owned();
    for (name, rule) in rules {
        let r = TestReceiver::start(Mode::Status(200)).await;
        extra.push_str(&http_sink(Some(name), &r.url(), 2000, rule));
        receivers.insert(name, r);
    }
    let app = spawn_app_with(&extra).await;

    // Act: one event of each shape.
    let create_a = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "stream_create",
            json!({"stream_id": "s1", "room_id": "room-a"}),
        ),
    )
    .await;
    let create_c = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "stream_create",
            json!({"stream_id": "s2", "room_id": "room-c"}),
        ),
    )
    .await;
    let close_b = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "stream_close",
            json!({"stream_id": "s1", "room_id": "room-b", "type": "1"}),
        ),
    )
    .await;
    let create_222 = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP_2,
            "stream_create",
            json!({"stream_id": "s3", "room_id": "room-a"}),
        ),
    )
    .await;
    let login = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "room_login",
            json!({"room_id": "room-z", "login_time": "1499676978027"}),
        ),
    )
    .await;
    let brand_new = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "brand_new_event",
            json!({"whatever": {"nested": 1, "tags": ["red", "blue"]}}),
        ),
    )
    .await;
    let brand_new_other = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "brand_new_event",
            json!({"whatever": {"nested": 2, "tags": ["red", "blue"]}}),
        ),
    )
    .await;
    let compose = post_ok(
        &app,
        COMPOSE,
        &zego_event(ZEGO_APP, "compose", json!({"task_id": "t1"})),
    )
    .await;
    let netease = post_netease_ok(&app, &cloud_play(503, "task-1")).await;
    let all = [
        &create_a,
        &create_c,
        &close_b,
        &create_222,
        &login,
        &brand_new,
        &brand_new_other,
        &compose,
        &netease,
    ];

    // Assert
    let expected: [(&str, Vec<&String>); 9] = [
        ("by_provider", vec![&netease]),
        ("by_family", vec![&compose]),
        ("by_kind", vec![&close_b, &login]),
        ("by_app", vec![&create_222]),
        ("combined", vec![&create_a, &create_c, &close_b]),
        ("unknown", vec![&brand_new, &brand_new_other]),
        ("by_field", vec![&create_a, &close_b, &create_222]),
        ("nested", vec![&brand_new]),
        ("everything", all.to_vec()),
    ];
    for (name, want) in &expected {
        got_exactly(&receivers[name], want, name).await;
    }
    let text = wait_metrics(&app, "every sink done", |t| {
        expected.iter().all(|(name, want)| {
            series(
                t,
                &format!("hookrelay_deliveries_total{{sink=\"{name}\",outcome=\"filtered\"}}"),
            ) == Some((all.len() - want.len()) as f64)
        })
    })
    .await;
    for (name, want) in &expected {
        assert_eq!(
            deliveries(&text, name, "delivered"),
            want.len() as f64,
            "{name}"
        );
        assert_eq!(
            series(
                &text,
                &format!("hookrelay_delivery_seconds_count{{sink=\"{name}\"}}")
            ),
            Some(want.len() as f64),
            "filtered events are not timed as deliveries ({name})"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_receives_nothing_from_a_busy_family_is_not_held_back_by_it() {
    let quiet = TestReceiver::start(Mode::Status(200)).await;
    let app = spawn_app_with(&http_sink(
        Some("quiet"),
        &quiet.url(),
        2000,
        r#"match = { family = "cloud_play" }"#,
    ))
    .await;
    let filtered_series = "hookrelay_deliveries_total{sink=\"quiet\",outcome=\"filtered\"}";
    let text = metrics_text(&app).await;
    assert_eq!(
        series(&text, filtered_series),
        Some(0.0),
        "registered at start-up"
    );

    let mut stream_ids = Vec::new();
    for i in 0..40 {
        stream_ids.push(post_ok(&app, STREAM, &stream_create(&format!("busy-{i}"))).await);
    }
    app.wait_for_events(40).await;
    let text = wait_metrics(&app, "40 filtered", |t| {
        series(t, filtered_series) == Some(40.0)
    })
    .await;
    assert_eq!(
        series(&text, "hookrelay_spool_pending{sink=\"quiet\"}"),
        Some(0.0),
        "the cursor moved past the filtered events"
    );
    assert_eq!(
        series(
            &text,
            "hookrelay_spool_oldest_pending_seconds{sink=\"quiet\"}"
        ),
        Some(0.0)
    );
    assert_eq!(deliveries(&text, "quiet", "delivered"), 0.0);
    assert_eq!(quiet.hits(), 0, "never offered");

    // What the sink is for still comes through, right after the busy family.
    let wanted = post_netease_ok(&app, &cloud_play(503, "wanted")).await;
    got_exactly(&quiet, &[&wanted], "quiet").await;

    // Nothing acknowledged is lost: an event no sink but the file took is in the store.
    let config = app.dir.path().join("hookrelay.toml");
    let out = cli(&["events", "show", &stream_ids[0]], &config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sink quiet: filtered"),
        "{}",
        stderr(&out)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_paced_at_5_per_second_gets_100_events_at_that_pace_in_order_and_none_lost() {
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let app = spawn_app_with(&http_sink(
        Some("paced"),
        &receiver.url(),
        2000,
        "max_per_second = 5",
    ))
    .await;

    // Ten resources, ten events each, interleaved; `stream_seq` numbers them.
    let posted = Instant::now();
    let mut acked = Vec::new();
    for i in 0..100u32 {
        let payload = zego_event(
            ZEGO_APP,
            "stream_create",
            json!({"stream_id": format!("res-{}", i % 10), "stream_seq": i.to_string(), "room_id": "r"}),
        );
        acked.push(post_ok(&app, STREAM, &payload).await);
    }
    let ack_secs = posted.elapsed().as_secs_f64();
    // The other sink (the file) is not held back by the paced one.
    app.wait_for_events(100).await;
    let file_secs = posted.elapsed().as_secs_f64();
    let text = metrics_text(&app).await;
    let backlog = series(&text, "hookrelay_spool_pending{sink=\"paced\"}").unwrap();
    assert!(
        backlog >= 50.0,
        "the paced sink's backlog is visible: {backlog}"
    );

    let got = receiver.wait_for(100, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.received();
    assert_eq!(got_all.len(), 100, "each event once");
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| envelope(&r.body)["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    acked.sort();
    assert_eq!(ids, acked, "none lost");

    // In order per resource.
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &got {
        let e = envelope(&r.body);
        let res = e["event"]["stream_id"].as_str().unwrap().to_owned();
        let seq = e["event"]["stream_seq"].as_i64().unwrap();
        let prev = last.insert(res.clone(), seq);
        assert!(prev.is_none_or(|p| p < seq), "{res}: {prev:?} then {seq}");
    }

    // The pace: 5 a second, plus at most one bucket (5) of burst.
    let first = got[0].at;
    let span = got[99].at.duration_since(first).as_secs_f64();
    let mut max_in_a_second = 0;
    for (i, r) in got.iter().enumerate() {
        let n = got[i..]
            .iter()
            .take_while(|s| s.at.duration_since(r.at) < Duration::from_secs(1))
            .count();
        max_in_a_second = max_in_a_second.max(n);
    }
    let rate = 95.0 / span;
    eprintln!(
        "pacing: 100 acked in {ack_secs:.2}s, file sink done at {file_secs:.2}s, paced backlog {backlog} then; \
         paced sink first->last {span:.2}s ({rate:.2}/s after the first bucket), at most {max_in_a_second} in any 1 s window"
    );
    assert!(
        (17.5..=22.0).contains(&span),
        "95 events after the first bucket of 5 take ~19 s at 5/s: {span:.2}s"
    );
    assert!(
        max_in_a_second <= 10,
        "at most a bucket plus a second's worth: {max_in_a_second}"
    );
    assert!(
        ack_secs < 10.0 && file_secs < 10.0,
        "acks and the file sink are not paced"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_with_a_changed_match_pending_events_follow_the_new_rule() {
    // Arrange: the sink takes stream_create; the receiver fails for a while.
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |rule: &str| {
        base_config(
            dir.path(),
            &http_sink(Some("hooks"), &receiver.url(), 2000, rule),
        )
    };
    let before = config(r#"match = { kind = "stream_create" }"#);
    let after = config(r#"match = { kind = "stream_close" }"#);
    let path = dir.path().to_owned();
    let app = spawn_app_in(dir, &before).await;
    let create_1 = post_ok(&app, STREAM, &stream_create("one")).await;
    let close_1 = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "stream_close",
            json!({"stream_id": "one", "type": "1"}),
        ),
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    wait_metrics(&app, "close_1 filtered", |t| {
        series(
            t,
            "hookrelay_deliveries_total{sink=\"hooks\",outcome=\"filtered\"}",
        ) == Some(1.0)
    })
    .await;
    // A stream_create that is still pending (retried) when hookrelay stops.
    receiver.set_mode(Mode::Status(503));
    let create_2 = post_ok(&app, STREAM, &stream_create("two")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.attempts().iter().all(|a| a.status != 503) {
        assert!(Instant::now() < deadline, "create_2 was never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = app.stop().await;

    // Act: restart taking stream_close instead.
    receiver.set_mode(Mode::Status(200));
    let app = spawn_app_in(dir, &after).await;
    let close_3 = post_ok(
        &app,
        STREAM,
        &zego_event(
            ZEGO_APP,
            "stream_close",
            json!({"stream_id": "three", "type": "1"}),
        ),
    )
    .await;
    let _create_3 = post_ok(&app, STREAM, &stream_create("three")).await;

    // Assert: create_2 (pending) now follows the new rule and is filtered;
    // close_1 (done under the old rule) is not offered again.
    got_exactly(&receiver, &[&create_1, &close_3], "hooks").await;
    let text = wait_metrics(&app, "create_2 and create_3 filtered", |t| {
        series(
            t,
            "hookrelay_deliveries_total{sink=\"hooks\",outcome=\"filtered\"}",
        ) == Some(2.0)
    })
    .await;
    assert_eq!(
        series(&text, "hookrelay_spool_pending{sink=\"hooks\"}"),
        Some(0.0)
    );
    // Nothing acknowledged is lost: every event is still in the store.
    let config_path = path.join("hookrelay.toml");
    for id in [&create_1, &close_1, &create_2] {
        let out = cli(&["events", "show", id], &config_path);
        assert!(out.status.success(), "{id}: {}", stderr(&out));
    }
    assert!(
        stderr(&cli(&["events", "show", &create_2], &config_path)).contains("sink hooks: filtered")
    );
    app.stop().await;
}

#[test]
fn check_config_refuses_an_unknown_provider_family_or_kind_naming_the_key_and_prints_what_each_sink_receives()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    let write = |sinks: &str| {
        std::fs::write(&path, base_config(dir.path(), sinks)).unwrap();
    };
    let sink = |rule: &str| http_sink(Some("hooks"), "http://127.0.0.1:9/hook", 2000, rule);
    for (rule, message) in [
        (
            r#"match = { provider = "zgo" }"#,
            "invalid config at `sinks[1].match.provider`: unknown provider `zgo`",
        ),
        (
            r#"match = { family = "strem" }"#,
            "invalid config at `sinks[1].match.family`: unknown family `strem`",
        ),
        (
            r#"match = { provider = "netease", family = "stream" }"#,
            "invalid config at `sinks[1].match.family`: family `stream` belongs to provider `zego`, not to `netease`",
        ),
        (
            r#"match = { family = "stream", kind = "stream_crate" }"#,
            "invalid config at `sinks[1].match.kind`: unknown kind `stream_crate` for zego stream",
        ),
        (
            r#"match = { family = "cloud_play", kind = "stream_create" }"#,
            "invalid config at `sinks[1].match.kind`: unknown kind `stream_create` for netease cloud_play",
        ),
        (
            "max_per_second = 0",
            "invalid config at `sinks[1].max_per_second`: must be at least 1",
        ),
        (
            "max_in_flight = 0",
            "invalid config at `sinks[1].max_in_flight`: must be at least 1",
        ),
        (r#"match = { kinds = "x" }"#, "unknown field `kinds`"),
    ] {
        write(&sink(rule));
        let out = cli(&["check-config"], &path);
        assert_eq!(out.status.code(), Some(1), "{rule}");
        assert!(stderr(&out).contains(message), "{rule}: {}", stderr(&out));
    }

    write(&format!(
        "{}{}",
        sink(
            r#"match = { provider = "zego", family = "stream", kind = ["stream_create", "stream_close"], app_id = "1234567890" }
max_per_second = 5
max_in_flight = 2"#
        ),
        "[[sinks]]\nkind = \"log\"\nname = \"all\"\n"
    ));
    let out = cli(&["check-config"], &path);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "sink hooks receives: zego stream stream_create|stream_close from app 1234567890\n"
        ),
        "{err}"
    );
    assert!(err.contains("sink all receives: everything\n"), "{err}");
    assert!(err.contains("sink file receives: everything\n"), "{err}");
    let printed: toml::Table = stdout(&out).parse().expect("stdout stays TOML");
    let hooks = &printed["sinks"].as_array().unwrap()[1];
    assert_eq!(hooks["max_per_second"].as_integer(), Some(5));
    assert_eq!(hooks["max_in_flight"].as_integer(), Some(2));
    assert_eq!(hooks["match"]["kind"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_nats_store_a_sink_gets_only_what_its_match_accepts_and_no_backlog_of_the_rest() {
    let Some(nats) = crate::nats_harness::NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start(&crate::nats_store::replica_config_with_sink(
        dir.path(),
        &[nats.url()],
        &receiver.url(),
        "",
        r#"match = { family = "stream", kind = "stream_close" }"#,
    ));
    crate::nats_store::wait_ready(&bin).await;
    let client = reqwest::Client::new();
    let post = |payload: Value| {
        let client = client.clone();
        let url = bin.url(STREAM);
        async move {
            let resp = client.post(url).json(&payload).send().await.unwrap();
            let (status, ack) = json_body(resp).await;
            assert_eq!(status, 200, "{ack}");
            ack["id"].as_str().unwrap().to_owned()
        }
    };
    let mut closes = Vec::new();
    for i in 0..20 {
        post(stream_create(&format!("n-{i}"))).await;
        if i % 5 == 0 {
            closes.push(
                post(zego_event(
                    ZEGO_APP,
                    "stream_close",
                    json!({"stream_id": format!("n-{i}"), "type": "1"}),
                ))
                .await,
            );
        }
    }
    let want: Vec<&String> = closes.iter().collect();
    got_exactly(&receiver, &want, "hooks").await;
    let metrics_url = bin.url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_at(&client, &metrics_url).await;
        let filtered = series(
            &text,
            "hookrelay_deliveries_total{sink=\"hooks\",outcome=\"filtered\"}",
        );
        let pending = series(&text, "hookrelay_spool_pending{sink=\"hooks\"}");
        if filtered == Some(20.0) && pending == Some(0.0) {
            assert_eq!(deliveries(&text, "hooks", "delivered"), 4.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "filtered {filtered:?}, pending {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
