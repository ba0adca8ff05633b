//! The real binary as the operator runs it: `serve` with its stderr kept,
//! signals, and the operator verbs (`dead-letters`, `events`, `check-config`).

use super::metrics_at;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary with `args` and no HOOKRELAY_CONFIG from the environment.
pub fn hookrelay_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.args(args).env_remove("HOOKRELAY_CONFIG");
    cmd
}

/// Runs an operator verb with `--config` appended.
pub fn cli(args: &[&str], config: &Path) -> Output {
    hookrelay_cmd(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dead-letters list --json` rows for `sink`.
pub fn dead_letters(config: &Path, sink: &str) -> Vec<Value> {
    let out = cli(&["dead-letters", "list", "--sink", sink, "--json"], config);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each row is JSON"))
        .collect()
}

/// Polls [`dead_letters`] until `sink` has `n` (or panics after 20 s).
pub async fn wait_for_dead_letters(config: &Path, sink: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = dead_letters(config, sink);
        if rows.len() >= n {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} dead letters for {sink}, found {}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real binary, started on `config`; returns once it is listening.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    /// Every line the binary wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn start(config: &Path) -> Binary {
        Binary::start_with_env(config, &[])
    }

    /// Starts with extra environment variables (config overrides).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Binary {
        let mut cmd = hookrelay_cmd(&["serve", "--config"]);
        cmd.arg(config).envs(env.iter().copied());
        Binary::spawn(cmd)
    }

    /// Starts `cmd` (a `serve` with JSON logs), with RUST_LOG=info unless it
    /// sets RUST_LOG itself.
    pub fn spawn(mut cmd: Command) -> Binary {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "hookrelay listening"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary logs its address as JSON")
            .parse()
            .expect("a socket address");
        Binary { child, addr, log }
    }

    /// The stderr lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A line of /proc/<pid>/status in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The binary's /metrics text.
    pub async fn metrics_text(&self) -> String {
        metrics_at(&reqwest::Client::new(), &self.url("/metrics")).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, HUP, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit by itself (panics after `within`).
    pub fn wait_exit(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
