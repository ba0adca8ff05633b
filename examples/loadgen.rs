//! The benchmark's helper (`bench/run.sh` drives it): turns the requests
//! `hookrelay send --emit` writes into wrk's input, sends requests at a fixed
//! rate (open loop), sends a set once, and prints the results table.
//!
//! ```text
//! loadgen wrk-file REQUESTS.jsonl OUT.wrk             # length-prefixed raw HTTP requests for bench/requests.lua
//! loadgen rate --requests R.jsonl --addr 127.0.0.1:18080 --rate 2000 --duration 10 --connections 16
//! loadgen once --requests R.jsonl --addr 127.0.0.1:18080 --connections 8
//! loadgen report RESULTS.txt                          # the Markdown tables and target checks
//! ```
//!
//! `rate` is open loop: request `i` is due at `start + i / rate` whether or
//! not earlier answers came back, each connection (one thread each, blocking
//! sockets, so sleeps are precise to tens of microseconds) takes the next
//! due request when it is free. It reports the latency from sending to the
//! full answer, and also from the due time (which adds any wait for a free
//! connection: the honest figure when the server falls behind).
//!
//! `rate` and `once` print one line `RESULT key=value ...`, like
//! bench/requests.lua does for wrk, which run.sh appends to its results.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

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
    },
    /// Sends every request once, as fast as `connections` allow.
    Once {
        #[arg(long)]
        requests: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// Prints the Markdown results of a run.sh results file.
    Report { results: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::WrkFile {
            input,
            output,
            host,
        } => wrk_file(&input, &output, &host),
        Cmd::Rate {
            requests,
            addr,
            rate,
            duration,
            connections,
        } => {
            let reqs = load(&requests, &addr.to_string())?;
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
        } => {
            let reqs = load(&requests, &addr.to_string())?;
            let summary = drive(&reqs, addr, connections.max(1), None)?;
            summary.print(None);
            Ok(())
        }
        Cmd::Report { results } => report(&results),
    }
}

// ---- requests ---------------------------------------------------------------

/// Reads `send --emit` JSON Lines as raw HTTP/1.1 requests.
fn load(path: &Path, host: &str) -> anyhow::Result<Vec<Vec<u8>>> {
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
        out.push(raw_request(&v, host)?);
    }
    Ok(out)
}

fn raw_request(v: &Value, host: &str) -> anyhow::Result<Vec<u8>> {
    let route = v["route"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no route"))?;
    let body = v["body"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no body"))?;
    let mut head = format!("POST {route} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(headers) = v["headers"].as_object() {
        for (name, value) in headers {
            let value = value.as_str().unwrap_or_default();
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    Ok(raw)
}

/// `<length>\n<raw request>` repeated: what bench/requests.lua reads.
fn wrk_file(input: &Path, output: &Path, host: &str) -> anyhow::Result<()> {
    let reqs = load(input, host)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(output)?);
    for r in &reqs {
        writeln!(w, "{}", r.len())?;
        w.write_all(r)?;
    }
    w.flush()?;
    eprintln!("{} requests -> {}", reqs.len(), output.display());
    Ok(())
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

const CASES: [(&str, &str); 4] = [
    ("baseline", "baseline (bare axum)"),
    ("zego-unique", "ZEGO stream_create, unique, durable"),
    ("zego-dup", "ZEGO stream_create, duplicates only"),
    ("netease", "NetEase cloud-play, unique, durable"),
];

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
    let mut checks: Vec<(String, bool, String)> = Vec::new();

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
        "Saturation (wrk, {} s per run, {} rounds; medians with min–max over rounds):\n",
        sat.first()
            .map_or(0.0, |r| num(r, "duration_us") / 1e6)
            .round(),
        rounds.len()
    );
    println!(
        "| case | conns | req/s | vs baseline | p50 ms | p99 ms | server CPU µs/req | CPU vs baseline | non-2xx / errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &conns {
        let at = |case: &str| -> Vec<&Row> {
            sat.iter()
                .copied()
                .filter(|r| get(r, "case") == case && num(r, "conns") as u64 == *c)
                .collect()
        };
        let base = at("baseline");
        let base_of = |round: &str| base.iter().find(|b| get(b, "round") == round).copied();
        for (case, label) in CASES {
            let rs = at(case);
            if rs.is_empty() {
                continue;
            }
            let rps: Vec<f64> = rs.iter().map(|r| num(r, "rps")).collect();
            let p50: Vec<f64> = rs.iter().map(|r| num(r, "p50_us") / 1000.0).collect();
            let p99: Vec<f64> = rs.iter().map(|r| num(r, "p99_us") / 1000.0).collect();
            let cpu: Vec<f64> = rs.iter().map(|r| cpu_per_req(r)).collect();
            let ratio: Vec<f64> = rs
                .iter()
                .filter_map(|r| Some(num(r, "rps") / num(base_of(&get(r, "round"))?, "rps")))
                .collect();
            let cpu_ratio: Vec<f64> = rs
                .iter()
                .filter_map(|r| Some(cpu_per_req(r) / cpu_per_req(base_of(&get(r, "round"))?)))
                .collect();
            let bad: f64 = rs.iter().map(|r| num(r, "non2xx") + num(r, "errors")).sum();
            let wraps: f64 = rs
                .iter()
                .map(|r| num(r, "wraps"))
                .filter(|x| x.is_finite())
                .sum();
            let mut note = format!("{bad}");
            // The baseline and the duplicates case cycle through their sets by design.
            if case != "zego-dup" && case != "baseline" && wraps > 0.0 {
                note.push_str(" (ran out of unique requests: some repeats)");
            }
            let (ratio_s, cpu_ratio_s) = if case == "baseline" {
                ("1".to_owned(), "1".to_owned())
            } else {
                (stat(&ratio, 2), stat(&cpu_ratio, 2))
            };
            println!(
                "| {label} | {c} | {} | {ratio_s} | {} | {} | {} | {cpu_ratio_s} | {note} |",
                stat(&rps, 0),
                stat(&p50, 2),
                stat(&p99, 2),
                stat(&cpu, 1),
            );
            let m = |v: &Vec<f64>| median(v.clone());
            match (case, *c) {
                ("zego-unique", 64) => {
                    checks.push((
                        "unique durable events at 64 conns: ≥ 40% of baseline req/s (aim 50%)"
                            .into(),
                        m(&ratio) >= 0.40,
                        format!("{:.0}%", m(&ratio) * 100.0),
                    ));
                    checks.push((
                        "unique durable events at 64 conns: p99 ack latency < 10 ms".into(),
                        m(&p99) < 10.0,
                        format!("{:.2} ms", m(&p99)),
                    ));
                    checks.push((
                        "server CPU per unique durable event ≤ 3× baseline CPU per request".into(),
                        m(&cpu_ratio) <= 3.0,
                        format!(
                            "{:.1}× ({:.1} µs vs {:.1} µs)",
                            m(&cpu_ratio),
                            m(&cpu),
                            median(base.iter().map(|r| cpu_per_req(r)).collect())
                        ),
                    ));
                }
                ("zego-dup", 64) => checks.push((
                    "duplicates at 64 conns: ≥ 70% of baseline req/s".into(),
                    m(&ratio) >= 0.70,
                    format!("{:.0}%", m(&ratio) * 100.0),
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
    if !fixed.is_empty() {
        println!(
            "\nFixed rate (open loop, bench loadgen, latency from send to full answer; \"from due\" adds any wait for a free connection):\n"
        );
        println!(
            "| case | target req/s | achieved req/s | conns | p50 ms | p99 ms | p99.9 ms | max ms | p99 from due ms | server CPU µs/req | non-2xx / errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (case, label) in CASES {
            let rs: Vec<&Row> = fixed
                .iter()
                .copied()
                .filter(|r| get(r, "case") == case)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let col = |k: &str, scale: f64| -> Vec<f64> {
                rs.iter().map(|r| num(r, k) / scale).collect()
            };
            let cpu: Vec<f64> = rs.iter().map(|r| cpu_per_req(r)).collect();
            let bad: f64 = rs.iter().map(|r| num(r, "non2xx") + num(r, "errors")).sum();
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {bad} |",
                get(rs[0], "target_rps"),
                stat(&col("rps", 1.0), 0),
                get(rs[0], "conns"),
                stat(&col("p50_us", 1000.0), 2),
                stat(&col("p99_us", 1000.0), 2),
                stat(&col("p999_us", 1000.0), 2),
                stat(&col("max_us", 1000.0), 2),
                stat(&col("due_p99_us", 1000.0), 2),
                stat(&cpu, 1),
            );
            if case == "zego-unique" {
                let p99 = median(col("p99_us", 1000.0));
                checks.push((
                    format!(
                        "unique durable events at a fixed {} req/s: p99 < 5 ms",
                        get(rs[0], "target_rps")
                    ),
                    p99 < 5.0,
                    format!("{p99:.2} ms"),
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
            "| round | hookrelay VmRSS MiB | hookrelay VmHWM MiB | baseline VmHWM MiB | spool MiB | events in the file sink |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        for r in &round_rows {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                get(r, "round"),
                num(r, "rss_kb") / 1024.0,
                num(r, "hwm_kb") / 1024.0,
                num(r, "base_hwm_kb") / 1024.0,
                num(r, "spool_bytes") / 1048576.0,
                get(r, "sink_lines"),
            );
        }
        let hwm: Vec<f64> = round_rows
            .iter()
            .map(|r| num(r, "hwm_kb") / 1024.0)
            .collect();
        let peak = hwm.iter().copied().fold(0.0, f64::max);
        checks.push((
            "peak RSS < 64 MiB".into(),
            peak < 64.0,
            format!("{peak:.1} MiB"),
        ));
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
    for r in of_kind("check") {
        let ok = get(r, "ok") == "true";
        checks.push((
            get(r, "what").replace('_', " "),
            ok,
            get(r, "detail").replace('_', " "),
        ));
    }

    if !checks.is_empty() {
        println!("\nTargets:\n");
        println!("| target | result | measured |");
        println!("|---|---|---|");
        for (what, ok, detail) in &checks {
            println!(
                "| {what} | {} | {detail} |",
                if *ok { "holds" } else { "**misses**" }
            );
        }
    }
    Ok(())
}
