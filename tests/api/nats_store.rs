//! `[spool] backend = "nats"`: replicas behind a load balancer share one
//! JetStream and hold nothing themselves. Every test starts its own real
//! `nats-server` (or a 3-node cluster) on 127.0.0.1 and real hookrelay
//! processes.

use crate::helpers::*;
use crate::nats_harness::{NatsCluster, NatsServer};
use crate::receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "/callbacks/zego/stream";

/// A replica's config: NATS store, JSON logs, one HTTP sink to `receiver`.
pub fn replica_config(
    dir: &Path,
    servers: &[String],
    receiver: &str,
    extra: &str,
) -> std::path::PathBuf {
    replica_config_with_sink(dir, servers, receiver, extra, "")
}

/// [`replica_config`] with `sink_extra` appended to its sink `hooks`.
pub fn replica_config_with_sink(
    dir: &Path,
    servers: &[String],
    receiver: &str,
    extra: &str,
    sink_extra: &str,
) -> std::path::PathBuf {
    let servers = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[spool]
backend = "nats"
dir = "{spool}"
[log]
format = "json"
[nats]
servers = [{servers}]
failover_secs = 3
{extra}
[[apps]]
provider = "zego"
app_id = "{ZEGO_APP}"
secret = "{ZEGO_SECRET}"
[[apps]]
provider = "netease"
app_id = "{NETEASE_APP}"
secret = "{NETEASE_SECRET}"
{sink}
"#,
        spool = dir.join("unused-spool").display(),
        sink = http_sink(Some("hooks"), receiver, 2000, sink_extra),
    );
    let path = dir.join("hookrelay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Two replicas on the same NATS, both ready, each with its own directory.
struct Replicas {
    a: Binary,
    b: Binary,
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Replicas {
    async fn start(servers: &[String], receiver: &str, extra: &str) -> Replicas {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Binary::start(&replica_config(da.path(), servers, receiver, extra));
        let b = Binary::start(&replica_config(db.path(), servers, receiver, extra));
        wait_ready(&a).await;
        wait_ready(&b).await;
        Replicas {
            a,
            b,
            dirs: (da, db),
        }
    }
}

/// Polls `/readyz` until the replica reports NATS ready.
pub async fn wait_ready(bin: &Binary) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(bin.url("/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "the replica never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(bin: &Binary, payload: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(bin.url(STREAM))
        .json(payload)
        .send()
        .await
        .expect("answered");
    json_body(resp).await
}

/// Messages in `stream` of the server at `url`.
async fn stream_messages(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

/// The stream_ids the receiver was given (each delivery once per element).
fn delivered_ids(receiver: &TestReceiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_store_a_repeat_once_and_deliver_it_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let Replicas { a, b, .. } = Replicas::start(&[nats.url()], &receiver.url(), "").await;

    let payload = stream_create("across-replicas");
    let (status, first) = post(&a, &payload).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    let (status, second) = post(&b, &payload).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(second["id"], first["id"], "the first event's id");
    // A re-signed retry of the same payload, at either replica, too.
    let mut resigned = payload.clone();
    for key in ["timestamp", "nonce", "signature"] {
        resigned.as_object_mut().unwrap().remove(key);
    }
    let resigned = sign_lower(resigned, ZEGO_SECRET, now_secs());
    let (status, third) = post(&b, &resigned).await;
    assert_eq!(
        (status, &third["id"], &third["duplicate"]),
        (200, &first["id"], &json!(true))
    );

    assert_eq!(stream_messages(&nats.url(), "HOOKRELAY").await, 1);
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap()["id"],
        first["id"]
    );
    // Bounded check that no second copy follows (delivery is one pinned replica).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered_ids(&receiver), [first["id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_used_on_one_replica_cannot_carry_another_body_on_the_other() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let Replicas { a, b, .. } = Replicas::start(&[nats.url()], &receiver.url(), "").await;

    let genuine = stream_create("genuine");
    assert_eq!(post(&a, &genuine).await.0, 200);
    let mut forged = genuine.clone();
    forged["stream_id"] = json!("forged");
    let (status, err) = post(&b, &forged).await;
    assert_eq!(
        (status, err),
        (401, json!({"ok": false, "error": "replayed_signature"}))
    );
    // And on the replica that saw it first, too.
    let (status, _) = post(&a, &forged).await;
    assert_eq!(status, 401);
    assert_eq!(stream_messages(&nats.url(), "HOOKRELAY").await, 1);
}

/// Sends unique signed events to `targets` in turn until `stop`, recording
/// the ids answered 200 and the statuses seen.
async fn load(
    targets: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
    acked: Arc<Mutex<Vec<String>>>,
    statuses: Arc<Mutex<HashSet<u16>>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut i = 0u64;
    while !stop.is_cancelled() {
        let url = &targets[(i as usize) % targets.len()];
        i += 1;
        let payload = stream_create(&format!("load-{i}-{}", fastrand::u32(..)));
        let Ok(resp) = client.post(url).json(&payload).send().await else {
            continue; // the replica is gone: the vendor would retry elsewhere
        };
        let status = resp.status().as_u16();
        statuses.lock().unwrap().insert(status);
        if status == 200
            && let Ok(ack) = resp.json::<Value>().await
            && ack["duplicate"] == false
        {
            acked
                .lock()
                .unwrap()
                .push(ack["id"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every id in `acked` reached the receiver; panics after `within`.
async fn all_delivered(receiver: &TestReceiver, acked: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got: HashSet<String> = delivered_ids(receiver).into_iter().collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never reached the sink, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_delivering_replica_is_killed_another_delivers_every_acknowledged_event() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A starts first and delivers the first event: it holds the pin.
    let a = Binary::start(&replica_config(
        da.path(),
        &[nats.url()],
        &receiver.url(),
        "",
    ));
    wait_ready(&a).await;
    assert_eq!(post(&a, &stream_create("pin-a")).await.0, 200);
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let b = Binary::start(&replica_config(
        db.path(),
        &[nats.url()],
        &receiver.url(),
        "",
    ));
    wait_ready(&b).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(HashSet::new()));
    // Load goes to B only while A, the deliverer, dies.
    let loader = tokio::spawn(load(
        vec![b.url(STREAM)],
        stop.clone(),
        Arc::clone(&acked),
        Arc::clone(&statuses),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    loader.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the load did not get going: {statuses:?}");
    // failover_secs (3) + 30 s.
    all_delivered(&receiver, &acked, Duration::from_secs(33)).await;
    eprintln!(
        "{} events acknowledged around the kill, all delivered {:.1} s after it",
        acked.len(),
        killed.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_callbacks_get_503_and_both_replicas_recover_by_themselves() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let Replicas { a, b, .. } = Replicas::start(&[nats.url()], &receiver.url(), "").await;

    let stop = tokio_util::sync::CancellationToken::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(HashSet::new()));
    let loader = tokio::spawn(load(
        vec![a.url(STREAM), b.url(STREAM)],
        stop.clone(),
        Arc::clone(&acked),
        Arc::clone(&statuses),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.stop();
    // While it is down: 503 spool_unavailable, and /readyz says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(&a, &stream_create("while-down")).await;
        if status == 503 {
            assert_eq!(body, json!({"ok": false, "error": "spool_unavailable"}));
            break;
        }
        assert!(Instant::now() < deadline, "never 503 while NATS is down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = reqwest::get(b.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "spool_unavailable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let seen_before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < seen_before + 10 {
        assert!(Instant::now() < deadline, "the replicas did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    loader.await.unwrap();
    assert!(statuses.lock().unwrap().contains(&503));
    // Every event answered 200 was stored: all reach the sink.
    let acked = acked.lock().unwrap().clone();
    all_delivered(&receiver, &acked, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_three_node_cluster_loses_no_acknowledged_event() {
    let Some(mut cluster) = NatsCluster::start(3).await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let Replicas { a, b, .. } =
        Replicas::start(&cluster.urls(), &receiver.url(), "replicas = 3\n").await;

    let stop = tokio_util::sync::CancellationToken::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(HashSet::new()));
    let loader = tokio::spawn(load(
        vec![a.url(STREAM), b.url(STREAM)],
        stop.clone(),
        Arc::clone(&acked),
        Arc::clone(&statuses),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster
        .stream_leader("HOOKRELAY")
        .await
        .expect("the stream has a leader");
    cluster.kill(leader);
    // Load continues through the election and after it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    loader.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the load did not get going: {statuses:?}");
    all_delivered(&receiver, &acked, Duration::from_secs(40)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_events_show_work_against_jetstream() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    // 410: the sink rejects the event, which becomes a dead letter at once.
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = replica_config(dir.path(), &[nats.url()], &receiver.url(), "");
    let a = Binary::start(&config);
    wait_ready(&a).await;
    let (status, ack) = post(&a, &stream_create("dead-in-nats")).await;
    assert_eq!(status, 200, "{ack}");
    let id = ack["id"].as_str().unwrap().to_owned();

    // No spool directory exists: the CLI reads JetStream.
    assert!(!dir.path().join("unused-spool").exists());
    let rows = wait_for_dead_letters(&config, "hooks", 1).await;
    assert_eq!(rows[0]["event_id"], id.as_str());
    assert_eq!(rows[0]["kind"], "stream_create");
    assert_eq!(rows[0]["last_status"], 410);

    let out = cli(&["events", "show", &id], &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let envelope: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    assert!(
        stderr(&out).contains("sink hooks: dead-letter"),
        "{}",
        stderr(&out)
    );

    // The sink is fixed; a replay delivers it and the dead letter is gone.
    receiver.set_mode(Mode::Status(200));
    let out = cli(
        &["dead-letters", "replay", "--all", "--sink", "hooks"],
        &config,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap()["id"],
        id.as_str()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead_letters(&config, "hooks").is_empty() {
        assert!(Instant::now() < deadline, "the replayed dead letter stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = cli(&["events", "show", &id], &config);
    assert!(
        stderr(&out).contains("sink hooks: delivered"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_sink_publishes_envelopes_with_their_dedup_key_and_retries_an_outage() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nkind = \"nats\"\nname = \"bus\"\nservers = [\"{}\"]\nstream = \"EVENTS\"\ncreate_stream = true\ntimeout_ms = 1000\n",
        nats.url()
    );
    let text = base_config(dir.path(), &sink);
    let app = spawn_app_in(dir, &text).await;
    let (status, ack) = json_body(app.post_zego(STREAM, &stream_create("to-the-bus")).await).await;
    assert_eq!(status, 200, "{ack}");

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Ok(stream) = js.get_stream("EVENTS").await
            && let Ok(m) = stream.get_raw_message(1).await
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the envelope never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(envelope["id"], ack["id"]);
    assert_eq!(
        message.subject.as_str(),
        "hookrelay.zego.stream.stream_create"
    );
    assert_eq!(
        message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        envelope["dedup_key"].as_str()
    );

    // An outage: the event acknowledged meanwhile is published once NATS is back.
    nats.stop();
    let (status, later) =
        json_body(app.post_zego(STREAM, &stream_create("after-outage")).await).await;
    assert_eq!(
        status, 200,
        "the vendor's answer never waits on a sink: {later}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = js.get_stream("EVENTS").await
            && let Ok(m) = stream.get_raw_message(2).await
        {
            let envelope: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(envelope["id"], later["id"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event was not retried after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_id_with_line_breaks_is_stored_and_delivered_intact() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let Replicas { a, .. } = Replicas::start(&[nats.url()], &receiver.url(), "").await;
    // Vendor text ends up in a message header: it must not break the publish.
    let (status, ack) = post(&a, &stream_create("line\r\nbreak %41")).await;
    assert_eq!(status, 200, "{ack}");
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let envelope: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(envelope["id"], ack["id"]);
    assert_eq!(envelope["event"]["stream_id"], "line\r\nbreak %41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_delivered_once_whatever_the_number_of_replicas() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let receiver = TestReceiver::start(Mode::Status(410)).await;
    let replicas = Replicas::start(&[nats.url()], &receiver.url(), "").await;
    let (status, ack) = post(&replicas.a, &stream_create("replayed-once")).await;
    assert_eq!(status, 200, "{ack}");
    let config = replicas.dirs.0.path().join("hookrelay.toml");
    wait_for_dead_letters(&config, "hooks", 1).await;
    let rejected = receiver.attempts().len();

    receiver.set_mode(Mode::Status(200));
    let out = cli(
        &["dead-letters", "replay", "--all", "--sink", "hooks"],
        &config,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    receiver.wait_for(1, Duration::from_secs(20)).await;
    // Both replicas scan for replays every second: give the other one a
    // few rounds to (wrongly) deliver it too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = receiver.received();
    assert_eq!(delivered.len(), 1, "one replay, one delivery");
    assert_eq!(receiver.attempts().len(), rejected + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead_letters(&config, "hooks").is_empty() {
        assert!(Instant::now() < deadline, "the replayed dead letter stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
