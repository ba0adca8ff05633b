//! The benchmark's helper (`bench/run.sh` drives it): turns the requests
//! `hookrelay send --emit` writes into wrk's input, sends requests at a fixed
//! rate (open loop), sends a set once, and prints the results table.
//!
//! ```text
//! loadgen wrk-file REQUESTS.jsonl OUT.wrk             # length-prefixed raw HTTP requests for bench/requests.lua
//! loadgen rate --requests R.jsonl --addr 127.0.0.1:18080 --rate 2000 --duration 10 --connections 16
//! loadgen once --requests R.jsonl --addr 127.0.0.1:18080 --connections 8
//! loadgen wait-ready --addr 127.0.0.1:18080 --since-ns "$(date +%s%N)"   # polls GET /readyz every 10 ms
//! loadgen report RESULTS.txt                          # the Markdown tables and target checks
//! ```
//!
//! `wrk-file`, `rate` and `once` take `--hmac-sha1-secret S` (and
//! `--hmac-header NAME`, default `X-Hub-Signature`): each request then also
//! carries `NAME: sha1=<hex HMAC-SHA1(S, body)>`, the GitHub-style signature
//! adnanh/webhook's `payload-hmac-sha1` rule checks (the `webhook` case).
//!
//! `rate` is open loop: request `i` is due at `start + i / rate` whether or
//! not earlier answers came back, each connection (one thread each, blocking
//! sockets, so sleeps are precise to tens of microseconds) takes the next
//! due request when it is free. It reports the latency from sending to the
//! full answer, and also from the due time (which adds any wait for a free
//! connection: the honest figure when the server falls behind).
//!
//! `rate` and `once` print one line `RESULT key=value ...`, like
//! bench/requests.lua does for wrk, which run.sh appends to its results;
//! `wrk-file` prints `RESULT requests=N body_bytes=B` (the raw bodies'
//! total size) and `wait-ready` prints `RESULT ready_ms=... polls=...`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;

#[derive(Parser)]
#[command(about = "hookrelay benchmark helper")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Converts `send --emit` JSON Lines into length-prefixed raw HTTP/1.1 requests.
    WrkFile {
        input: PathBuf,
        output: PathBuf,
        /// The Host header to write.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[command(flatten)]
        sign: Sign,
    },
    /// Sends requests at a fixed rate (open loop) and reports latency percentiles.
    Rate {
        #[arg(long)]
        requests: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[command(flatten)]
        sign: Sign,
    },
    /// Sends every request once, as fast as `connections` allow.
    Once {
        #[arg(long)]
        requests: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[command(flatten)]
        sign: Sign,
    },
    /// Polls `GET <path>` every `interval-ms` until it answers 200 and prints
    /// the time since `since-ns` (wall clock, ns since the Unix epoch: when
    /// the server was spawned) or since this command started.
    WaitReady {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Start of the measurement, `date +%s%N` taken before the spawn.
        #[arg(long)]
        since_ns: Option<u128>,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Give up early when this process is gone (the server died).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Prints the Markdown results of a run.sh results file.
    Report { results: PathBuf },
}

/// An HMAC-SHA1 signature header over each request's body (adnanh/webhook's
/// `payload-hmac-sha1` rule, GitHub's `X-Hub-Signature`).
#[derive(Args, Clone, Default)]
struct Sign {
    /// Adds `<hmac-header>: sha1=<hex HMAC-SHA1(secret, body)>` to every request.
    #[arg(long)]
    hmac_sha1_secret: Option<String>,
    /// The header that carries the signature.
    #[arg(long, default_value = "X-Hub-Signature", requires = "hmac_sha1_secret")]
    hmac_header: String,
}

impl Sign {
    /// The header line's name and value for `body`, when signing.
    fn header(&self, body: &[u8]) -> Option<(&str, String)> {
        let secret = self.hmac_sha1_secret.as_ref()?;
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(body);
        Some((
            self.hmac_header.as_str(),
            format!("sha1={}", hex::encode(mac.finalize().into_bytes())),
        ))
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::WrkFile {
            input,
            output,
            host,
            sign,
        } => wrk_file(&input, &output, &host, &sign),
        Cmd::Rate {
            requests,
            addr,
            rate,
            duration,
            connections,
            sign,
        } => {
            let reqs = load(&requests, &addr.to_string(), &sign)?;
            let total = (rate * duration).round() as u64;
            anyhow::ensure!(
                rate > 0.0 && total > 0,
                "--rate and --duration must be positive"
            );
            anyhow::ensure!(
                reqs.len() as u64 >= total,
                "{} holds {} requests; {total} are needed (rate x duration)",
                requests.display(),
                reqs.len()
            );
            let summary = drive(
                &reqs[..total as usize],
                addr,
                connections.max(1),
                Some(rate),
            )?;
            summary.print(Some(rate));
            Ok(())
        }
        Cmd::Once {
            requests,
            addr,
            connections,
            sign,
        } => {
            let reqs = load(&requests, &addr.to_string(), &sign)?;
            let summary = drive(&reqs, addr, connections.max(1), None)?;
            summary.print(None);
            Ok(())
        }
        Cmd::WaitReady {
            addr,
            path,
            since_ns,
            interval_ms,
            timeout,
            pid,
        } => wait_ready(addr, &path, since_ns, interval_ms, timeout, pid),
        Cmd::Report { results } => report(&results),
    }
}

// ---- requests ---------------------------------------------------------------

/// Reads `send --emit` JSON Lines as raw HTTP/1.1 requests.
fn load(path: &Path, host: &str, sign: &Sign) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        out.push(raw_request(&v, host, sign)?);
    }
    Ok(out)
}

fn raw_request(v: &Value, host: &str, sign: &Sign) -> anyhow::Result<Vec<u8>> {
    let route = v["route"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no route"))?;
    let body = v["body"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no body"))?;
    let mut head = format!("POST {route} HTTP/1.1\r\nHost: {host}\r\n");
    let signature = sign.header(body.as_bytes());
    if let Some(headers) = v["headers"].as_object() {
        for (name, value) in headers {
            // The signature replaces a header of the same name.
            if signature
                .as_ref()
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let value = value.as_str().unwrap_or_default();
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if let Some((name, value)) = &signature {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    Ok(raw)
}

/// `<length>\n<raw request>` repeated: what bench/requests.lua reads.
/// Prints `RESULT requests=N body_bytes=B` (B: the bodies' total size).
fn wrk_file(input: &Path, output: &Path, host: &str, sign: &Sign) -> anyhow::Result<()> {
    let reqs = load(input, host, sign)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(output)?);
    let mut body_bytes = 0u64;
    for r in &reqs {
        writeln!(w, "{}", r.len())?;
        w.write_all(r)?;
        body_bytes += body_len(r) as u64;
    }
    w.flush()?;
    eprintln!("{} requests -> {}", reqs.len(), output.display());
    println!("RESULT requests={} body_bytes={body_bytes}", reqs.len());
    Ok(())
}

/// The body's length of a raw request built by `raw_request`.
fn body_len(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |head| raw.len() - head - 4)
}

/// Polls `GET path` on `addr` (a new connection each time, `Connection:
/// close`) every `interval_ms` until a 200, and prints the time since
/// `since_ns` (or since the start).
fn wait_ready(
    addr: SocketAddr,
    path: &str,
    since_ns: Option<u128>,
    interval_ms: u64,
    timeout: f64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let started = std::time::SystemTime::now();
    let epoch_ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    };
    let since = since_ns.unwrap_or_else(|| epoch_ns(started));
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut polls = 0u64;
    loop {
        polls += 1;
        let status = (|| -> std::io::Result<u16> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(request.as_bytes())?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            line.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))
        })();
        let last = match status {
            Ok(200) => {
                let ms =
                    (epoch_ns(std::time::SystemTime::now()).saturating_sub(since)) as f64 / 1e6;
                println!("RESULT ready_ms={ms:.1} polls={polls} status=200");
                return Ok(());
            }
            Ok(code) => code.to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
            Err(_) => "error".to_owned(),
        };
        // Gone, or a zombie nobody has reaped yet.
        let gone = pid.is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |st| {
                st.rsplit(") ").next().is_some_and(|f| f.starts_with('Z'))
            })
        });
        if gone || Instant::now() >= deadline {
            let why = if gone { "exited" } else { "timeout" };
            println!("RESULT ready_ms=nan polls={polls} status={last} gave_up={why}");
            anyhow::bail!("{addr}{path} did not answer 200 ({why}; last: {last})");
        }
        std::thread::sleep(Duration::from_millis(interval_ms));
    }
}

// ---- sending ----------------------------------------------------------------

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    New,
    Duplicate,
    /// 2xx that is not a hookrelay ack (the baseline's answer counts as new).
    Status(u16),
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(16 << 10, stream.try_clone()?),
            writer: stream,
            addr,
        })
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        *self = Conn::open(self.addr)?;
        Ok(())
    }

    /// Sends one request and reads its whole answer.
    fn call(&mut self, request: &[u8], body: &mut Vec<u8>) -> std::io::Result<Outcome> {
        self.writer.write_all(request)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(std::io::Error::other("chunked answers are not supported"));
                }
            }
        }
        body.resize(length, 0);
        self.reader.read_exact(body)?;
        if close {
            self.reopen()?;
        }
        Ok(match status {
            200..=299 if contains(body, b"\"duplicate\":true") => Outcome::Duplicate,
            200..=299 => Outcome::New,
            other => Outcome::Status(other),
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Default)]
struct Tally {
    /// Send to full answer, microseconds.
    service: Vec<u32>,
    /// Due time to full answer, microseconds (open loop only).
    from_due: Vec<u32>,
    /// How late sends started, microseconds.
    late: Vec<u32>,
    new: u64,
    dup: u64,
    non2xx: u64,
    errors: u64,
}

struct Summary {
    tally: Tally,
    elapsed: Duration,
}

/// Sends `reqs` over `connections` connections: at `rate` per second from a
/// fixed schedule (open loop), or back to back when `rate` is `None`.
fn drive(
    reqs: &[Vec<u8>],
    addr: SocketAddr,
    connections: usize,
    rate: Option<f64>,
) -> anyhow::Result<Summary> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr).map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?);
    }
    let next = AtomicU64::new(0);
    let start = Instant::now() + Duration::from_millis(20);
    let interval_ns = rate.map(|r| 1e9 / r);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let next = &next;
                scope.spawn(move || {
                    let mut t = Tally::default();
                    let mut body = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(req) = reqs.get(i as usize) else {
                            return t;
                        };
                        let due = match interval_ns {
                            Some(ns) => start + Duration::from_nanos((i as f64 * ns) as u64),
                            None => Instant::now(),
                        };
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let sent = Instant::now();
                        let outcome = conn.call(req, &mut body);
                        let done = Instant::now();
                        match outcome {
                            Ok(o) => {
                                match o {
                                    Outcome::New => t.new += 1,
                                    Outcome::Duplicate => t.dup += 1,
                                    Outcome::Status(_) => t.non2xx += 1,
                                }
                                t.service.push(micros(done - sent));
                                if interval_ns.is_some() {
                                    t.from_due.push(micros(done.saturating_duration_since(due)));
                                    t.late.push(micros(sent.saturating_duration_since(due)));
                                }
                            }
                            Err(_) => {
                                t.errors += 1;
                                let _ = conn.reopen();
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    let mut tally = Tally::default();
    for t in tallies {
        tally.service.extend(t.service);
        tally.from_due.extend(t.from_due);
        tally.late.extend(t.late);
        tally.new += t.new;
        tally.dup += t.dup;
        tally.non2xx += t.non2xx;
        tally.errors += t.errors;
    }
    Ok(Summary { tally, elapsed })
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    fn print(mut self, rate: Option<f64>) {
        let t = &mut self.tally;
        t.service.sort_unstable();
        t.from_due.sort_unstable();
        t.late.sort_unstable();
        let done = t.service.len() as u64;
        let secs = self.elapsed.as_secs_f64();
        let mut line = format!(
            "RESULT requests={done} duration_us={} rps={:.1} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} ok_new={} ok_dup={} non2xx={} errors={}",
            self.elapsed.as_micros(),
            done as f64 / secs,
            percentile(&t.service, 50.0),
            percentile(&t.service, 90.0),
            percentile(&t.service, 99.0),
            percentile(&t.service, 99.9),
            t.service.last().copied().unwrap_or(0),
            t.new,
            t.dup,
            t.non2xx,
            t.errors,
        );
        if let Some(rate) = rate {
            line.push_str(&format!(
                " target_rps={rate} due_p50_us={} due_p99_us={} due_max_us={} late_p99_us={} late_max_us={}",
                percentile(&t.from_due, 50.0),
                percentile(&t.from_due, 99.0),
                t.from_due.last().copied().unwrap_or(0),
                percentile(&t.late, 99.0),
                t.late.last().copied().unwrap_or(0),
            ));
        }
        println!("{line}");
    }
}

// ---- report -----------------------------------------------------------------

type Row = BTreeMap<String, String>;

fn parse_rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn num(row: &Row, key: &str) -> f64 {
    row.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let finite = v.iter().copied().filter(|x| x.is_finite());
    let min = finite.clone().fold(f64::INFINITY, f64::min);
    let max = finite.fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// `median (min–max)` with `digits` decimals.
fn stat(v: &[f64], digits: usize) -> String {
    let m = median(v.to_vec());
    if !m.is_finite() {
        return "–".into();
    }
    let (lo, hi) = spread(v);
    if v.len() > 1 {
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    } else {
        format!("{m:.digits$}")
    }
}

/// CPU microseconds per request of a run (the drained figure when present).
fn cpu_per_req(r: &Row) -> f64 {
    let cpu = r
        .get("cpu_drained_us")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| num(r, "cpu_us"));
    cpu / num(r, "requests")
}

const CASES: [(&str, &str); 5] = [
    ("baseline", "baseline (bare axum)"),
    ("webhook", "adnanh/webhook, HMAC-SHA1 rule, no command"),
    ("zego-unique", "ZEGO stream_create, unique, durable"),
    ("zego-dup", "ZEGO stream_create, duplicates only"),
    ("netease", "NetEase cloud-play, unique, durable"),
];

/// Cases that answer without storing anything: they cycle through a fixed
/// set by design, and their CPU is taken over the load only.
fn is_reference(case: &str) -> bool {
    case == "baseline" || case == "webhook"
}

/// `f(run) / f(the reference case's run of the same round)`, per round.
fn per_round(rs: &[&Row], reference: &[&Row], f: impl Fn(&Row) -> f64) -> Vec<f64> {
    rs.iter()
        .filter_map(|r| {
            let round = r.get("round")?;
            let b = reference.iter().find(|b| b.get("round") == Some(round))?;
            Some(f(r) / f(b))
        })
        .collect()
}

/// A target's outcome: `None` when the run did not measure it.
type Target = (Option<bool>, String);

/// `1234567` as `1,234,567`.
fn thousands(n: f64) -> String {
    if !n.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

fn report(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let rows = parse_rows(&text);
    let of_kind = |kind: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.get("kind").map(String::as_str) == Some(kind))
            .collect()
    };
    let runs = of_kind("run");
    let get = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
    let m = |v: &Vec<f64>| median(v.clone());
    // Correctness and stability checks, printed after the targets.
    let mut checks: Vec<(String, bool, String)> = Vec::new();
    // Issue 12's targets, filled in as the figures come.
    let mut t_unique_rps: Option<Target> = None;
    let mut t_unique_cpu: Option<Target> = None;
    let mut t_dup: Option<Target> = None;
    let mut t_rate_p99: Option<Target> = None;
    let mut t_rss: Option<Target> = None;

    // Saturation.
    let sat: Vec<&Row> = runs
        .iter()
        .copied()
        .filter(|r| get(r, "mode") == "sat")
        .collect();
    let mut conns: Vec<u64> = sat
        .iter()
        .filter_map(|r| r.get("conns")?.parse().ok())
        .collect();
    conns.sort_unstable();
    conns.dedup();
    let rounds: Vec<String> = {
        let mut v: Vec<String> = sat.iter().map(|r| get(r, "round")).collect();
        v.sort();
        v.dedup();
        v
    };
    println!(
        "Saturation (wrk, {} s per run, {} rounds; medians with min–max over rounds; ratios are taken per round, then the median):\n",
        sat.first()
            .map_or(0.0, |r| num(r, "duration_us") / 1e6)
            .round(),
        rounds.len()
    );
    println!(
        "| case | conns | req/s | vs baseline | vs webhook | p50 ms | p99 ms | server CPU µs/req | CPU vs baseline | CPU vs webhook | non-2xx / errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &conns {
        let at = |case: &str| -> Vec<&Row> {
            sat.iter()
                .copied()
                .filter(|r| get(r, "case") == case && num(r, "conns") as u64 == *c)
                .collect()
        };
        let base = at("baseline");
        let hook = at("webhook");
        for (case, label) in CASES {
            let rs = at(case);
            if rs.is_empty() {
                continue;
            }
            let rps: Vec<f64> = rs.iter().map(|r| num(r, "rps")).collect();
            let p50: Vec<f64> = rs.iter().map(|r| num(r, "p50_us") / 1000.0).collect();
            let p99: Vec<f64> = rs.iter().map(|r| num(r, "p99_us") / 1000.0).collect();
            let cpu: Vec<f64> = rs.iter().map(|r| cpu_per_req(r)).collect();
            let ratio = per_round(&rs, &base, |r| num(r, "rps"));
            let cpu_ratio = per_round(&rs, &base, cpu_per_req);
            let ratio_hook = per_round(&rs, &hook, |r| num(r, "rps"));
            let cpu_ratio_hook = per_round(&rs, &hook, cpu_per_req);
            let bad: f64 = rs.iter().map(|r| num(r, "non2xx") + num(r, "errors")).sum();
            let wraps: f64 = rs
                .iter()
                .map(|r| num(r, "wraps"))
                .filter(|x| x.is_finite())
                .sum();
            let mut note = format!("{bad}");
            // The baseline, webhook and the duplicates case cycle through their sets by design.
            if case != "zego-dup" && !is_reference(case) && wraps > 0.0 {
                note.push_str(" (ran out of unique requests: some repeats)");
            }
            let one = |me: &str, v: &Vec<f64>| {
                if case == me {
                    "1".to_owned()
                } else {
                    stat(v, 2)
                }
            };
            println!(
                "| {label} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {note} |",
                stat(&rps, 0),
                one("baseline", &ratio),
                one("webhook", &ratio_hook),
                stat(&p50, 2),
                stat(&p99, 2),
                stat(&cpu, 1),
                one("baseline", &cpu_ratio),
                one("webhook", &cpu_ratio_hook),
            );
            match (case, *c) {
                ("zego-unique", 64) => {
                    t_unique_rps = Some(if hook.is_empty() {
                        (None, "the webhook case did not run".into())
                    } else {
                        let r = m(&ratio_hook);
                        (
                            Some(r >= 1.0),
                            format!(
                                "{r:.2}× webhook ({:.0} vs {:.0} req/s); aim 1.5× {}",
                                m(&rps),
                                median(hook.iter().map(|r| num(r, "rps")).collect()),
                                if r >= 1.5 { "reached" } else { "not reached" }
                            ),
                        )
                    });
                    t_unique_cpu = Some(if base.is_empty() {
                        (None, "the baseline case did not run".into())
                    } else {
                        let r = m(&cpu_ratio);
                        (
                            Some(r <= 4.0),
                            format!(
                                "{r:.1}× ({:.1} µs vs {:.1} µs); aim 3× {}",
                                m(&cpu),
                                median(base.iter().map(|r| cpu_per_req(r)).collect()),
                                if r <= 3.0 { "reached" } else { "not reached" }
                            ),
                        )
                    });
                }
                ("zego-dup", 64) => {
                    t_dup = Some(if base.is_empty() {
                        (None, "the baseline case did not run".into())
                    } else {
                        let r = m(&ratio);
                        (Some(r >= 0.60), format!("{:.0}%", r * 100.0))
                    });
                }
                ("webhook", _) => checks.push((
                    format!("webhook answered 200 to every request at {c} conns"),
                    bad == 0.0,
                    format!("{bad} non-2xx answers or errors"),
                )),
                _ => {}
            }
        }
    }

    // Fixed rate.
    let fixed: Vec<&Row> = runs
        .iter()
        .copied()
        .filter(|r| get(r, "mode") == "rate")
        .collect();
    let mut rate_target = String::new();
    if !fixed.is_empty() {
        println!(
            "\nFixed rate (open loop, bench loadgen, latency from send to full answer; \"from due\" adds any wait for a free connection):\n"
        );
        println!(
            "| case | target req/s | achieved req/s | conns | p50 ms | p99 ms | p99.9 ms | max ms | p99 from due ms | server CPU µs/req | CPU vs baseline | CPU vs webhook | non-2xx / errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let of = |case: &str| -> Vec<&Row> {
            fixed
                .iter()
                .copied()
                .filter(|r| get(r, "case") == case)
                .collect()
        };
        let base = of("baseline");
        let hook = of("webhook");
        for (case, label) in CASES {
            let rs = of(case);
            if rs.is_empty() {
                continue;
            }
            let col = |k: &str, scale: f64| -> Vec<f64> {
                rs.iter().map(|r| num(r, k) / scale).collect()
            };
            let cpu: Vec<f64> = rs.iter().map(|r| cpu_per_req(r)).collect();
            let one = |me: &str, reference: &[&Row]| {
                if case == me {
                    "1".to_owned()
                } else {
                    stat(&per_round(&rs, reference, cpu_per_req), 2)
                }
            };
            let bad: f64 = rs.iter().map(|r| num(r, "non2xx") + num(r, "errors")).sum();
            rate_target = get(rs[0], "target_rps");
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {bad} |",
                get(rs[0], "target_rps"),
                stat(&col("rps", 1.0), 0),
                get(rs[0], "conns"),
                stat(&col("p50_us", 1000.0), 2),
                stat(&col("p99_us", 1000.0), 2),
                stat(&col("p999_us", 1000.0), 2),
                stat(&col("max_us", 1000.0), 2),
                stat(&col("due_p99_us", 1000.0), 2),
                stat(&cpu, 1),
                one("baseline", &base),
                one("webhook", &hook),
            );
            if case == "zego-unique" {
                let p99 = median(col("p99_us", 1000.0));
                t_rate_p99 = Some((Some(p99 < 2.0), format!("{p99:.2} ms")));
            }
            if case == "webhook" {
                checks.push((
                    format!(
                        "webhook answered 200 to every request at a fixed {} req/s",
                        get(rs[0], "target_rps")
                    ),
                    bad == 0.0,
                    format!("{bad} non-2xx answers or errors"),
                ));
            }
        }
    }

    // Memory and spool per round.
    let round_rows = of_kind("round");
    if !round_rows.is_empty() {
        println!(
            "\nMemory and spool after each round (hookrelay process; VmHWM = peak RSS so far):\n"
        );
        println!(
            "| round | hookrelay VmRSS MiB | hookrelay VmHWM MiB | baseline VmHWM MiB | webhook VmHWM MiB | spool MiB | events in the file sink |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for r in &round_rows {
            let hook_hwm = num(r, "webhook_hwm_kb");
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} |",
                get(r, "round"),
                num(r, "rss_kb") / 1024.0,
                num(r, "hwm_kb") / 1024.0,
                num(r, "base_hwm_kb") / 1024.0,
                if hook_hwm.is_finite() {
                    format!("{:.1}", hook_hwm / 1024.0)
                } else {
                    "–".into()
                },
                num(r, "spool_bytes") / 1048576.0,
                get(r, "sink_lines"),
            );
        }
        let hwm: Vec<f64> = round_rows
            .iter()
            .map(|r| num(r, "hwm_kb") / 1024.0)
            .collect();
        let peak = hwm.iter().copied().fold(0.0, f64::max);
        t_rss = Some((Some(peak < 64.0), format!("{peak:.1} MiB")));
        let rss: Vec<f64> = round_rows
            .iter()
            .map(|r| num(r, "rss_kb") / 1024.0)
            .collect();
        if rss.len() >= 2 {
            // Growth from the first round's end to the last's: allocator noise
            // is a few MiB; a leak grows with the events handled.
            let growth = rss[rss.len() - 1] - rss[0];
            let hwm_growth = hwm[hwm.len() - 1] - hwm[0];
            checks.push((
                "no RSS growth across rounds (last − first round, ≤ 4 MiB)".into(),
                growth <= 4.0 && hwm_growth <= 4.0,
                format!("VmRSS {growth:+.1} MiB, VmHWM {hwm_growth:+.1} MiB"),
            ));
        }
    }

    // Delivery.
    let delivery: Vec<&Row> = runs
        .iter()
        .copied()
        .filter(|r| r.contains_key("sink_lag_end"))
        .collect();
    if !delivery.is_empty() {
        let lag: Vec<f64> = delivery.iter().map(|r| num(r, "sink_lag_end")).collect();
        let drain: Vec<f64> = delivery.iter().map(|r| num(r, "drain_ms")).collect();
        let acked: f64 = delivery.iter().map(|r| num(r, "ok_new")).sum();
        let worst_lag = lag.iter().copied().fold(0.0, f64::max);
        let worst_drain = drain.iter().copied().fold(0.0, f64::max);
        println!(
            "\nDelivery to the file sink: over {} runs with new events ({acked} acknowledged), the sink was at most {worst_lag} events behind when the load stopped and caught up within {:.0} ms at worst.",
            delivery.len(),
            worst_drain
        );
        checks.push((
            "the file sink keeps up (backlog at the end of a run drains in < 1 s)".into(),
            worst_drain < 1000.0,
            format!("worst backlog {worst_lag} events, drained in {worst_drain:.0} ms"),
        ));
    }

    // The store at the end: bytes per event, restart.
    let topups = of_kind("topup");
    let disk = of_kind("disk").into_iter().last();
    let restart = of_kind("restart").into_iter().last();
    let mut t_restart: Option<Target> = None;
    let mut t_bytes: Option<Target> = None;
    if disk.is_some() || restart.is_some() || !topups.is_empty() {
        println!("\nThe store after the rounds (the local spool's hookrelay):\n");
    }
    if !topups.is_empty() {
        let sent: f64 = topups.iter().map(|r| num(r, "requests")).sum();
        let new: f64 = topups.iter().map(|r| num(r, "ok_new")).sum();
        let secs: f64 = topups.iter().map(|r| num(r, "duration_us") / 1e6).sum();
        let bad: f64 = topups
            .iter()
            .map(|r| num(r, "non2xx") + num(r, "errors"))
            .sum();
        println!(
            "- Topped up before the restart (fewer than {} events were stored): {} more unique ZEGO stream_create events in {} batches (loadgen once, {} connections, {secs:.0} s), {} stored, {bad} non-2xx / errors; not part of any figure above.",
            thousands(num(topups[0], "goal")),
            thousands(sent),
            topups.len(),
            get(topups[0], "conns"),
            thousands(new),
        );
    }
    if let Some(d) = disk {
        let events = num(d, "events");
        let bytes = num(d, "spool_bytes");
        let per_event = bytes / events;
        let raw = num(d, "zego_body_bytes") / num(d, "zego_bodies");
        let limit = 1.5 * raw + 100.0;
        println!(
            "- Events in the store: {} ({}). Spool directory: {} bytes ({:.1} MiB, database and WAL, server running, delivery caught up) = **{per_event:.0} bytes per event**.",
            thousands(events),
            match get(d, "events_from").as_str() {
                "metrics" =>
                    "events the file sink delivered from it, hookrelay_deliveries_total, after delivery caught up",
                _ => "200 duplicate:false answers; stored but unanswered requests not counted",
            },
            thousands(bytes),
            bytes / 1048576.0,
        );
        println!(
            "- Raw body: {raw:.0} bytes on average over the {} unique ZEGO stream_create requests emitted for the runs that stored events; limit 1.5 × {raw:.0} + 100 = {limit:.0} bytes per event; measured {:.2} × raw.",
            thousands(num(d, "zego_bodies")),
            per_event / raw,
        );
        let ne = num(d, "netease_events");
        let ne_raw = num(d, "netease_body_bytes") / num(d, "netease_bodies");
        if ne.is_finite() && ne > 0.0 && ne_raw.is_finite() {
            let mix = ((events - ne) * raw + ne * ne_raw) / events;
            println!(
                "- The store also holds {} NetEase cloud-play events (200 duplicate:false answers to the netease case; mean raw body {ne_raw:.0} bytes): against the mean raw body of the mix ({mix:.0} bytes) the limit would be {:.0} bytes per event.",
                thousands(ne),
                1.5 * mix + 100.0
            );
        }
        t_bytes = Some((
            Some(per_event <= limit),
            format!("{per_event:.0} B/event vs limit {limit:.0} B (raw body {raw:.0} B)"),
        ));
    }
    if let Some(r) = restart {
        let events = num(r, "events");
        let ready = num(r, "ready_ms");
        println!(
            "- Restart: SIGTERM, the process exited after {:.0} ms{}; spawned again on the same config and spool, GET /readyz answered 200 after **{:.0} ms** (polled every {} ms, {} polls) with {} events in the store. The new process: VmRSS {:.1} MiB, VmHWM {:.1} MiB once ready; spool {:.1} MiB after the clean stop.",
            num(r, "stop_ms"),
            if get(r, "stop") == "killed" {
                " (did not exit within the grace period: killed)"
            } else {
                ""
            },
            ready,
            get(r, "interval_ms"),
            get(r, "polls"),
            thousands(events),
            num(r, "rss_kb") / 1024.0,
            num(r, "hwm_kb") / 1024.0,
            num(r, "spool_bytes_stopped") / 1048576.0,
        );
        let again = num(r, "sink_lines_after_restart");
        if again.is_finite() {
            checks.push((
                "nothing delivered again in the first second after the restart".into(),
                again == 0.0,
                format!("{again} new lines in the file sink"),
            ));
        }
        t_restart = Some(if !ready.is_finite() {
            (Some(false), format!("not ready ({})", get(r, "status")))
        } else if events < 1_000_000.0 {
            (
                None,
                format!(
                    "{:.2} s, but only {} events in the store",
                    ready / 1000.0,
                    thousands(events)
                ),
            )
        } else {
            (
                Some(ready < 3000.0),
                format!("{:.2} s with {} events", ready / 1000.0, thousands(events)),
            )
        });
    }

    for r in of_kind("check") {
        let ok = get(r, "ok") == "true";
        checks.push((
            get(r, "what").replace('_', " "),
            ok,
            get(r, "detail").replace('_', " "),
        ));
    }

    // Issue 12's targets, in its order; a target the run did not measure says so.
    let rate = if rate_target.is_empty() {
        "2,000".to_owned()
    } else {
        thousands(rate_target.parse().unwrap_or(f64::NAN))
    };
    let targets: Vec<(String, Option<Target>)> = vec![
        (
            "unique durable ZEGO stream_create at 64 conns: req/s ≥ webhook's (aim 1.5×)".into(),
            t_unique_rps,
        ),
        (
            "server CPU per unique durable event at 64 conns (delivery to the file sink included) ≤ 4× the baseline's CPU per request (aim 3×)"
                .into(),
            t_unique_cpu,
        ),
        (
            "duplicates at 64 conns: ≥ 60% of baseline req/s".into(),
            t_dup,
        ),
        (
            format!("unique durable events at a fixed {rate} req/s: p99 ack < 2 ms"),
            t_rate_p99,
        ),
        ("peak RSS < 64 MiB".into(), t_rss),
        (
            "restart with 1,000,000 events in the store: ready (GET /readyz 200) in < 3 s".into(),
            t_restart,
        ),
        (
            "bytes on disk per event ≤ 1.5 × raw body + 100 bytes".into(),
            t_bytes,
        ),
    ];
    println!("\nTargets (issue 12):\n");
    println!("| target | result | measured |");
    println!("|---|---|---|");
    for (what, t) in &targets {
        let (result, detail) = match t {
            Some((Some(true), d)) => ("holds", d.clone()),
            Some((Some(false), d)) => ("**misses**", d.clone()),
            Some((None, d)) => ("not measured", d.clone()),
            None => ("not measured", "not in this run's cases".to_owned()),
        };
        println!("| {what} | {result} | {detail} |");
    }

    if !checks.is_empty() {
        println!("\nChecks:\n");
        println!("| check | result | measured |");
        println!("|---|---|---|");
        for (what, ok, detail) in &checks {
            println!(
                "| {what} | {} | {detail} |",
                if *ok { "holds" } else { "**fails**" }
            );
        }
    }
    Ok(())
}
