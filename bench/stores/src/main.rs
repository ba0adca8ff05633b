//! Compares candidate stores for hookrelay's spool (issue 12) in one run:
//! C producer threads in a closed loop hand events to one writer thread,
//! which drains whatever is waiting into one batch and group-commits it,
//! like src/spool/writer.rs. See README.md.

mod payload;
mod stores;

use payload::{Ev, Generator};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use stores::{Kind, Outcome};

/// Most events in one commit (writer.rs MAX_BATCH).
const MAX_BATCH: usize = 1024;

struct Args {
    events: usize,
    rounds: usize,
    concurrency: Vec<usize>,
    kinds: Vec<Kind>,
    dir: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-stores [--events N] [--rounds R] [--concurrency 1,16,64] \
         [--stores harness,raw,a,b,c,d] [--dir DIR] [--print-sample]\n\
         N is the event count at the highest concurrency; a run at concurrency C \
         stores N*C/max(C) events (at least 500)."
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 200_000,
        rounds: 3,
        concurrency: vec![1, 16, 64],
        kinds: Kind::all().to_vec(),
        dir: PathBuf::from("/work/tmp-stores"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--events" => args.events = val().parse().unwrap_or_else(|_| usage()),
            "--rounds" => args.rounds = val().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => {
                args.concurrency = val()
                    .split(',')
                    .map(|c| c.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--stores" => {
                args.kinds = val()
                    .split(',')
                    .map(|k| {
                        Kind::all()
                            .into_iter()
                            .find(|x| x.key() == k.trim())
                            .unwrap_or_else(|| usage())
                    })
                    .collect()
            }
            "--dir" => args.dir = PathBuf::from(val()),
            "--print-sample" => {
                for envelope in [false, true] {
                    let ev = Generator::new(7, envelope).next(0);
                    println!("{}", String::from_utf8_lossy(&ev.body));
                }
                std::process::exit(0);
            }
            _ => usage(),
        }
    }
    if args.concurrency.is_empty() || args.kinds.is_empty() || args.rounds == 0 {
        usage();
    }
    args
}

/// Removes the run directory however the process leaves.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ----------------------------------------------------------- measurements

fn rusage(who: libc::c_int) -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Process CPU (user + sys, all threads).
fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU of the calling thread.
fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// `write_bytes` of /proc/self/io: bytes this process caused to be sent
/// to storage (counted when pages are dirtied; all threads).
fn io_write_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Busy CPU time of the whole machine (all CPUs, from /proc/stat): catches
/// kernel threads (jbd2, kworkers) the process figures miss, and anything
/// else running on the machine.
fn host_busy() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(busy * 1_000_000 / hz))
}

/// The 1-minute load average (how busy the shared machine was).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Disk space the files under `dir` take (allocated blocks, so sparse or
/// preallocated files count for what they hold on disk).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let list = std::env::var_os("BENCH_LIST_FILES").is_some();
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                if list {
                    eprintln!("  {} len {} allocated {}", e.path().display(), m.len(), m.blocks() * 512);
                }
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// One run of one store at one concurrency.
#[derive(Clone, Debug)]
struct Sample {
    events: usize,
    events_per_s: f64,
    /// Process CPU from the start until the store is closed, per event.
    cpu_us: f64,
    /// Process CPU until the last ack, per event.
    cpu_ack_us: f64,
    /// The writer thread's CPU (until its last commit), per event.
    writer_us: f64,
    host_us: Option<f64>,
    file_bytes: f64,
    write_bytes: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    batch: f64,
    stored: usize,
}

fn run(kind: Kind, conc: usize, events: usize, base: &Path, tag: &str) -> Sample {
    let dir = base.join(format!("{}-c{conc}-{tag}", kind.key()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create run dir");
    let guard = TempDir(dir.clone());
    let mut store = kind.open(&dir);

    let (tx, rx) = mpsc::channel::<Ev>();
    let mut acks = Vec::with_capacity(conc);
    let mut ack_rxs = Vec::with_capacity(conc);
    for _ in 0..conc {
        let (a, r) = mpsc::channel::<Outcome>();
        acks.push(a);
        ack_rxs.push(r);
    }

    // The writer: block for one command, drain what else is waiting, commit once.
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let cpu0 = thread_cpu();
            let mut batch: Vec<Ev> = Vec::with_capacity(MAX_BATCH);
            let mut out = Vec::with_capacity(MAX_BATCH);
            let (mut batches, mut stored) = (0usize, 0usize);
            while let Ok(ev) = rx.recv() {
                batch.push(ev);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(ev) => batch.push(ev),
                        Err(_) => break,
                    }
                }
                out.clear();
                store.commit(&batch, &mut out);
                assert_eq!(out.len(), batch.len());
                batches += 1;
                for (ev, o) in batch.drain(..).zip(out.drain(..)) {
                    if matches!(o, Outcome::Stored(_)) {
                        stored += 1;
                    }
                    let _ = acks[ev.producer].send(o);
                }
            }
            let writer_cpu = thread_cpu() - cpu0;
            store.close();
            (writer_cpu, batches, stored)
        })
        .expect("spawn writer");

    let start = Arc::new(Barrier::new(conc + 1));
    let mut producers = Vec::with_capacity(conc);
    for (p, ack) in ack_rxs.into_iter().enumerate() {
        let n = events / conc + usize::from(p < events % conc);
        let tx = tx.clone();
        let start = Arc::clone(&start);
        let seed = fastrand::u64(..);
        let envelope = kind.wants_envelope();
        producers.push(std::thread::spawn(move || {
            let mut generator = Generator::new(seed, envelope);
            let mut lat = Vec::with_capacity(n);
            start.wait();
            for _ in 0..n {
                let ev = generator.next(p);
                let t = Instant::now();
                tx.send(ev).expect("writer gone");
                ack.recv().expect("no ack");
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    drop(tx);

    let (io0, host0, cpu0) = (io_write_bytes(), host_busy(), process_cpu());
    let t0 = Instant::now();
    start.wait();
    let mut lat: Vec<u32> = Vec::with_capacity(events);
    for p in producers {
        lat.extend(p.join().expect("producer panicked"));
    }
    let wall = t0.elapsed();
    let cpu_ack = process_cpu() - cpu0;
    let (writer_cpu, batches, stored) = writer.join().expect("writer panicked");
    let cpu = process_cpu() - cpu0;
    let host = host_busy().zip(host0).map(|(b, a)| b.saturating_sub(a));
    let io = io_write_bytes().zip(io0).map(|(b, a)| b.saturating_sub(a));
    let file_bytes = dir_bytes(&dir);
    drop(guard);

    lat.sort_unstable();
    let pct = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)] as f64 / 1000.0;
    let n = events as f64;
    Sample {
        events,
        events_per_s: n / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n,
        cpu_ack_us: cpu_ack.as_secs_f64() * 1e6 / n,
        writer_us: writer_cpu.as_secs_f64() * 1e6 / n,
        host_us: host.map(|h| h.as_secs_f64() * 1e6 / n),
        file_bytes: file_bytes as f64 / n,
        write_bytes: io.map(|b| b as f64 / n),
        p50_ms: pct(50),
        p99_ms: pct(99),
        batch: n / batches.max(1) as f64,
        stored,
    }
}

// ---------------------------------------------------------------- report

fn stat(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (med, v[0], v[v.len() - 1])
}

fn fmt_num(x: f64) -> String {
    if x >= 1000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "n/a".into();
    }
    let (m, lo, hi) = stat(xs);
    if xs.len() == 1 {
        fmt_num(m)
    } else {
        format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi))
    }
}

fn main() {
    let args = parse_args();
    let cmax = *args.concurrency.iter().max().expect("a concurrency");
    let events_at = |c: usize| (args.events * c / cmax).max(500);
    std::fs::create_dir_all(&args.dir).expect("create base dir");
    let base = args.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create run dir");
    let _base_guard = TempDir(base.clone());

    // Sizes of what is stored.
    let mut g = Generator::new(1, false);
    let raw = g.next(0).body.len();
    let mut g = Generator::new(1, true);
    let env = g.next(0).body.len();
    eprintln!(
        "payloads: raw body {raw} B (+{} B key header in a/b/c), envelope {env} B (d)",
        stores::HEADER
    );

    let load_before = loadavg();
    let mut results: Vec<Vec<Vec<Sample>>> =
        vec![vec![Vec::new(); args.kinds.len()]; args.concurrency.len()];
    let started = Instant::now();
    for round in 0..args.rounds {
        for (ci, &c) in args.concurrency.iter().enumerate() {
            for (ki, &kind) in args.kinds.iter().enumerate() {
                let s = run(kind, c, events_at(c), &base, &format!("r{round}"));
                // Let writeback and the discard of the deleted files settle
                // outside the measured window.
                // SAFETY: sync has no preconditions.
                unsafe { libc::sync() };
                eprintln!(
                    "[{:>5.0}s] round {} C={c:<3} {:<36} {:>8.0} ev/s  cpu {:>6.1} µs/ev  writer {:>6.1} µs/ev  file {:>6.0} B/ev  io {:>6.0} B/ev  batch {:>6.1}  p50 {:.2} ms  p99 {:.2} ms",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    kind.label(),
                    s.events_per_s,
                    s.cpu_us,
                    s.writer_us,
                    s.file_bytes,
                    s.write_bytes.unwrap_or(f64::NAN),
                    s.batch,
                    s.p50_ms,
                    s.p99_ms
                );
                assert_eq!(s.stored, s.events, "every event is new");
                results[ci][ki].push(s);
            }
        }
    }

    println!(
        "Stores for {} events at the highest concurrency (N×C/{cmax} below it), {} round(s) interleaved, \
         medians (min–max); raw body {raw} B (+{} B key header in a/b/c), envelope {env} B; {} CPUs; \
         load average {load_before} before, {} after; total {:.0} s.\n",
        args.events,
        args.rounds,
        stores::HEADER,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "| store | C | events | events/s | CPU µs/event | writer thread µs/event | host CPU µs/event | disk bytes/event | write_bytes/event | p50 ms | p99 ms | events/commit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (ci, &c) in args.concurrency.iter().enumerate() {
        for (ki, &kind) in args.kinds.iter().enumerate() {
            let ss = &results[ci][ki];
            let col = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
                ss.iter().filter_map(f).collect()
            };
            println!(
                "| {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.label(),
                ss[0].events,
                cell(&col(&|s| Some(s.events_per_s))),
                cell(&col(&|s| Some(s.cpu_us))),
                cell(&col(&|s| Some(s.writer_us))),
                cell(&col(&|s| s.host_us)),
                cell(&col(&|s| Some(s.file_bytes))),
                cell(&col(&|s| s.write_bytes)),
                cell(&col(&|s| Some(s.p50_ms))),
                cell(&col(&|s| Some(s.p99_ms))),
                cell(&col(&|s| Some(s.batch))),
            );
        }
    }
    println!();
    println!("CPU µs/event until the last ack (before close: SQLite's final checkpoint, fjall's final flush):\n");
    println!("| store | C | CPU µs/event at last ack |");
    println!("|---|---|---|");
    for (ci, &c) in args.concurrency.iter().enumerate() {
        for (ki, &kind) in args.kinds.iter().enumerate() {
            let v: Vec<f64> = results[ci][ki].iter().map(|s| s.cpu_ack_us).collect();
            println!("| {} | {c} | {} |", kind.label(), cell(&v));
        }
    }
}
