//! Configuration: where it is read from (--config, HOOKRELAY_CONFIG, the
//! built-in defaults, HOOKRELAY_* variables), secrets from the environment,
//! sink names, and errors that name the key or the variable, at
//! check-config and at start-up.

use crate::helpers::*;
use crate::receiver::{Mode, TestReceiver};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn check_config_exit_codes_and_where_it_reads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();

    // HOOKRELAY_CONFIG instead of --config.
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("check-config")
        .env("HOOKRELAY_CONFIG", &good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective: toml::Table = stdout(&out).parse().expect("TOML on stdout");
    assert_eq!(effective["apps"][0]["app_id"].as_str(), Some(ZEGO_APP));

    // Neither: the built-in defaults, listening on 0.0.0.0:8080 with no apps.
    let out = hookrelay_cmd(&["check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let defaults: toml::Table = stdout(&out).parse().unwrap();
    assert_eq!(defaults["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(
        defaults["server"]["max_body_bytes"].as_integer(),
        Some(65_536)
    );
    assert_eq!(
        defaults["server"]["timestamp_tolerance_secs"].as_integer(),
        Some(300)
    );
    assert_eq!(
        defaults["spool"]["dedup_window_hours"].as_integer(),
        Some(24)
    );
    assert_eq!(defaults["spool"]["retention_hours"].as_integer(), Some(72));
    assert_eq!(defaults["server"]["drain_delay_secs"].as_integer(), Some(0));
    assert_eq!(
        defaults["server"]["shutdown_grace_secs"].as_integer(),
        Some(25)
    );
    assert!(
        defaults
            .get("apps")
            .and_then(|a| a.as_array())
            .is_none_or(|a| a.is_empty())
    );

    // A missing file, a bad value, an app with two secrets: exit 1 naming the problem.
    let missing = dir.path().join("missing.toml");
    let out = cli(&["check-config"], &missing);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[spool]\nretention_hours = \"soon\"\n").unwrap();
    let out = cli(&["check-config"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("spool.retention_hours"),
        "{}",
        stderr(&out)
    );

    let two = dir.path().join("two.toml");
    std::fs::write(
        &two,
        "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = \"a\"\nsecret_env = \"B\"\n",
    )
    .unwrap();
    let out = cli(&["check-config"], &two);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("apps[0]"), "{}", stderr(&out));

    // Bad usage is clap's exit 2.
    let out = hookrelay_cmd(&["check-config", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn environment_variable_errors_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();
    for (var, value) in [
        ("HOOKRELAY_SERVER__MAX_BODY_BYTES", "lots"),
        ("HOOKRELAY_SERVER__LISTN", "127.0.0.1:1"),
        ("HOOKRELAY_NOSUCH__KEY", "1"),
        ("HOOKRELAY_SERVER", "1"),
        ("HOOKRELAY_APPS__7__SECRET", "x"),
        ("HOOKRELAY_LOG__FORMAT", "xml"),
    ] {
        let out = hookrelay_cmd(&["check-config", "--config"])
            .arg(&good)
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn an_unknown_key_from_the_environment_names_its_own_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base_config(dir.path(), "")).unwrap();
    let out = hookrelay_cmd(&["check-config", "--config"])
        .arg(&good)
        .env("HOOKRELAY_SINKS__0__PATH", dir.path().join("other.jsonl"))
        .env("HOOKRELAY_SINKS__0__ZZZ", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("zzz"), "{err}");
    assert!(err.contains("HOOKRELAY_SINKS__0__ZZZ"), "{err}");
}

#[tokio::test]
async fn an_env_override_of_an_app_the_file_lacks_names_the_variable() {
    // config/container.toml has no [[apps]] yet suggests HOOKRELAY_APPS__0__SECRET.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-apps.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let out = hookrelay_cmd(&["check-config", "--config"])
        .arg(&config)
        .env("HOOKRELAY_APPS__0__SECRET", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HOOKRELAY_APPS__0__SECRET"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_zero_tolerance_is_refused_at_start_up_naming_the_key() {
    // Without a freshness check a signature verifies forever, so once the
    // replay guard forgot it, it could carry any body: 0 is not a setting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    std::fs::write(&path, base_config(dir.path(), "")).unwrap();
    let env = [(
        "HOOKRELAY_SERVER__TIMESTAMP_TOLERANCE_SECS".to_string(),
        "0".to_string(),
    )];
    let err =
        hookrelay::config::Config::load(Some(&path), env).expect_err("a zero tolerance is refused");
    assert!(
        format!("{err:#}").contains("server.timestamp_tolerance_secs"),
        "{err:#}"
    );
}

#[tokio::test]
async fn serve_takes_its_config_from_hookrelay_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = json_log_config(dir.path(), "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.arg("serve").env("HOOKRELAY_CONFIG", &config);
    let served = Binary::spawn(cmd);
    let resp = reqwest::Client::new()
        .post(served.url(STREAM))
        .json(&stream_create("from-env-config"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the apps of the file are configured");
    wait_for_lines(&dir.path().join("events.jsonl"), 1).await;
}

#[tokio::test]
async fn serve_without_a_config_refuses_every_callback_and_says_so_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hookrelay_cmd(&["serve"]);
    cmd.current_dir(dir.path())
        .env("HOOKRELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("HOOKRELAY_LOG__FORMAT", "json")
        .env("HOOKRELAY_SPOOL__DIR", dir.path().join("spool"));
    let served = Binary::spawn(cmd);
    let said_so = served.log_lines().iter().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("unknown_app"))
        })
    });
    assert!(said_so, "no start-up warning in {:?}", served.log_lines());
    let client = reqwest::Client::new();
    let resp = client
        .post(served.url(STREAM))
        .json(&stream_create("nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"ok": false, "error": "unknown_app"})
    );
    let body = cloud_play(500, "nobody");
    let mut req = client.post(served.url(CLOUD_PLAY)).body(body.clone());
    for (k, v) in netease_headers(&body, NETEASE_SECRET) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unknown_app");
}

#[tokio::test]
async fn serve_with_an_invalid_config_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    for (text, key) in [
        (
            "[spool]\nretention_hours = \"soon\"\n",
            "spool.retention_hours",
        ),
        (
            "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecert = \"typo\"\n",
            "secert",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = cli(&["serve"], &config);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_finds_the_port_in_the_config_named_by_hookrelay_config() {
    // As the container runs it: no --url, the config from HOOKRELAY_CONFIG.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let app = spawn_app_in(dir, &text).await;
    assert_eq!(app.addr.port(), port);
    let config = app.dir.path().join("hookrelay.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("healthcheck")
        .env("HOOKRELAY_CONFIG", &config)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _dir = app.stop().await; // kept: the config file must outlive the server
    let status = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("healthcheck")
        .env("HOOKRELAY_CONFIG", &config)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "nothing listens any more");
}

#[tokio::test]
async fn secret_env_takes_several_variables_newest_first_and_no_secret_is_ever_logged() {
    let receiver = TestReceiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[spool]\ndir = \"{}\"\n\
             [[apps]]\nprovider = \"zego\"\napp_id = \"{ZEGO_APP}\"\nsecret_env = [\"CONTRACT_ZEGO_NEW\", \"CONTRACT_ZEGO_OLD\"]\n\
             [[sinks]]\nkind = \"log\"\n{}",
            dir.path().join("spool").display(),
            http_sink(Some("hooks"), &receiver.url(), 1000, "")
        ),
    )
    .unwrap();
    let mut cmd = hookrelay_cmd(&["serve", "--config"]);
    cmd.arg(&config)
        .env("CONTRACT_ZEGO_NEW", "zego-new-secret-5e1f")
        .env("CONTRACT_ZEGO_OLD", "zego-old-secret-9a7c")
        .env("RUST_LOG", "trace");
    let served = Binary::spawn(cmd);
    let client = reqwest::Client::new();
    let post = |secret: &'static str, id: &'static str| {
        let payload = sign_lower(
            json!({"event": "stream_create", "appid": ZEGO_APP, "stream_id": id}),
            secret,
            now_secs(),
        );
        client.post(served.url(STREAM)).json(&payload).send()
    };
    assert_eq!(
        post("zego-new-secret-5e1f", "new").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("zego-old-secret-9a7c", "old").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("zego-other-secret", "other").await.unwrap().status(),
        401
    );
    receiver.wait_for_success(Duration::from_secs(20)).await;

    let metrics = served.metrics_text().await;
    for position in [0, 1] {
        assert_eq!(
            series(
                &metrics,
                &format!(
                    "hookrelay_secret_matches_total{{provider=\"zego\",app_id=\"{ZEGO_APP}\",position=\"{position}\"}}"
                )
            ),
            Some(1.0),
            "position {position}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = served.log_lines();
    assert!(lines.len() > 5, "trace logging produced output");
    let key = WHSEC.trim_start_matches("whsec_");
    for secret in ["zego-new-secret-5e1f", "zego-old-secret-9a7c", key] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "a secret reached the logs"
        );
    }
}

#[tokio::test]
async fn unnamed_sinks_are_named_kind_dash_index_from_zero() {
    // base_config's file sink is sinks[0] (named "file"); these are [1] and [2].
    let extra = format!(
        "[[sinks]]\nkind = \"log\"\n{}",
        http_sink(None, "http://127.0.0.1:9/hook", 1000, "")
    );
    let app = spawn_app_with(&extra).await;
    let text = metrics_text(&app).await;
    for sink in ["file", "log-1", "http-2"] {
        assert!(
            series(
                &text,
                &format!("hookrelay_spool_pending{{sink=\"{sink}\"}}")
            )
            .is_some(),
            "no series for sink {sink} in\n{text}"
        );
    }
    let config = app.dir.path().join("hookrelay.toml");
    let out = cli(&["dead-letters", "list", "--sink", "http-2"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    app.stop().await;
}
