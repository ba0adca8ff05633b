//! `hookrelay send`: correctly signed callbacks, the way the vendors send them.
//!
//! For trying a running hookrelay by hand (`hookrelay send --kind stream_close`)
//! and for feeding load tools (`--emit N --out FILE` writes N distinct signed
//! requests as JSON Lines instead of sending anything). Payloads follow the
//! vendors' documented shapes with fresh values: unique resource ids (stream
//! ids, PlayerIds, taskIds...), the current time in each field's unit, and a
//! fresh random nonce, so each generated request is a new event that a
//! receiver with timestamp checks accepts.
//!
//! `--body FILE` sends a given payload instead: ZEGO bodies get their signing
//! fields (either casing) replaced by fresh ones; NetEase bodies are sent
//! byte for byte with `MD5`/`CheckSum` computed over exactly those bytes.

use crate::config::{App, Config};
use crate::providers::{FAMILIES, Family, Provider, SampleContext, SignInput};
use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `hookrelay send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Kinds per family:
  stream:       stream_create (default), stream_close, room_login, room_logout,
                room_create, room_close, mix_start, mix_stop, record
  compose:      compose
  cloud-player: player_created (default), player_destroyed, player_status_changed,
                player_exception, upload_succeeded, upload_failed,
                upload_status_changed, upload_cancel_failed, upload_exception,
                upload_expired (or the EventType number)
  cloud-play:   task_created, task_updated, task_destroyed, play_started (default),
                play_finished, play_error, play_paused, play_resumed (or 500-507)

Examples:
  hookrelay send --config config/example.toml
  hookrelay send --config config/example.toml --family cloud-play --kind play_error
  hookrelay send --config config/example.toml --repeat 2        # the second is duplicate:true
  hookrelay send --config config/example.toml --emit 100000 --out /tmp/requests.jsonl")]
pub struct SendArgs {
    /// Config file naming the app and its secret (the first app of the
    /// family's provider is used unless --app-id says otherwise).
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The ZEGO AppID or NetEase AppKey to sign for.
    #[arg(long)]
    pub app_id: Option<String>,
    /// Which callback route to send to.
    #[arg(long, value_parser = parse_family_arg, default_value = "stream")]
    pub family: FamilyArg,
    /// The event kind (see below); defaults to the family's most common one.
    #[arg(long)]
    pub kind: Option<String>,
    /// Base URL of hookrelay; the route path is appended. Defaults to the
    /// config's `server.listen` (a wildcard address becomes 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
    /// Send this payload instead of a generated one (ZEGO: re-signed afresh;
    /// NetEase: sent byte for byte, MD5 and CheckSum computed over it).
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// How many different events to send (each newly generated and signed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Send each request this many times, byte for byte: every repeat after
    /// the first is answered duplicate:true.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
    /// Write this many distinct signed requests to --out as JSON Lines
    /// (`{"route":...,"headers":{...},"body":"..."}`) instead of sending.
    #[arg(long, requires = "out", conflicts_with_all = ["count", "repeat"])]
    pub emit: Option<u64>,
    /// Where --emit writes (`-` for standard output).
    #[arg(long, requires = "emit")]
    pub out: Option<PathBuf>,
    /// Per-request timeout in seconds when sending.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// A callback family named on the command line: its registry name, with
/// `-` or `_` (`stream`, `compose`, `cloud-player`, `cloud-play`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyArg(pub Family);

impl FamilyArg {
    /// The family of that name; panics on a name the registry lacks (tests).
    pub fn named(name: &str) -> FamilyArg {
        parse_family_arg(name).expect("a registered family")
    }

    pub fn family(self) -> Family {
        self.0
    }

    pub fn route(self) -> &'static str {
        self.0.route()
    }

    fn kinds(self) -> &'static [(&'static str, i64)] {
        self.0.def().sample_kinds
    }

    fn default_kind(self) -> &'static str {
        self.kinds().first().map_or("unknown", |(k, _)| k)
    }
}

fn parse_family_arg(name: &str) -> Result<FamilyArg, String> {
    Family::by_name(&name.replace('-', "_"))
        .map(FamilyArg)
        .ok_or_else(|| {
            let names: Vec<String> = FAMILIES
                .iter()
                .map(|f| f.as_str().replace('_', "-"))
                .collect();
            format!("unknown family `{name}`; known: {}", names.join(", "))
        })
}

/// One signed request, ready to send or to hand to a load tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The route path, e.g. `/callbacks/zego/stream`.
    pub route: &'static str,
    /// Header name and value, in sending order.
    pub headers: Vec<(String, String)>,
    /// The exact body text.
    pub body: String,
}

impl SignedRequest {
    /// The JSON Lines form: `{"route":...,"headers":{...},"body":"..."}`.
    pub fn to_json_line(&self) -> String {
        let mut line = Vec::with_capacity(self.body.len() + 256);
        self.write_json_line(&mut line);
        // Only JSON-escaped UTF-8 was written.
        String::from_utf8(line).unwrap_or_default()
    }

    /// Appends the JSON Lines form (without the newline) to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Writing JSON strings into a Vec cannot fail.
        let string = |out: &mut Vec<u8>, s: &str| {
            let _ = serde_json::to_writer(&mut *out, s);
        };
        out.extend_from_slice(b"{\"route\":");
        string(out, self.route);
        out.extend_from_slice(b",\"headers\":{");
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, name);
            out.push(b':');
            string(out, value);
        }
        out.extend_from_slice(b"},\"body\":");
        string(out, &self.body);
        out.push(b'}');
    }
}

/// Makes signed requests of one family and kind for one app.
#[derive(Debug, Clone)]
pub struct Generator {
    family: FamilyArg,
    kind: &'static str,
    app_id: String,
    secret: String,
    /// Distinguishes this generator's ids from every other run's.
    run: String,
    run_num: u64,
    counter: u64,
}

impl Generator {
    /// `kind` is a kind name of `family` (or, for the numbered families, its
    /// number); `None` picks the family's default.
    pub fn new(family: FamilyArg, kind: Option<&str>, app: &App) -> anyhow::Result<Generator> {
        if app.provider != family.family().provider() {
            bail!(
                "app {} is a {} app, but family {:?} is {}",
                app.app_id,
                app.provider.as_str(),
                family,
                family.family().provider().as_str()
            );
        }
        let wanted = kind.unwrap_or(family.default_kind());
        let (kind, _) = family
            .kinds()
            .iter()
            .find(|(name, code)| {
                *name == wanted || (*code != 0 && wanted.parse::<i64>() == Ok(*code))
            })
            .copied()
            .ok_or_else(|| {
                let names: Vec<&str> = family.kinds().iter().map(|(n, _)| *n).collect();
                anyhow!(
                    "unknown kind `{wanted}` for family {:?}; known: {}",
                    family,
                    names.join(", ")
                )
            })?;
        let secret = app
            .secrets
            .first()
            .ok_or_else(|| anyhow!("app {} has no secret", app.app_id))?
            .expose()
            .to_owned();
        let run_num = fastrand::u64(1_000_000_000..10_000_000_000);
        Ok(Generator {
            family,
            kind,
            app_id: app.app_id.clone(),
            secret,
            run: format!("{:08x}", fastrand::u32(..)),
            run_num,
            counter: 0,
        })
    }

    /// The kind name the requests parse to.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// A new event, signed now.
    pub fn next_request(&mut self) -> SignedRequest {
        let i = self.counter;
        self.counter += 1;
        let ctx = SampleContext {
            app_id: self.app_id.clone(),
            run: self.run.clone(),
            run_num: self.run_num,
            now_ms: now_ms(),
        };
        // Every kind of the family's `sample_kinds` has a sample (a test
        // in providers proves it), and `new` only accepts those.
        let payload = (self.family.0.def().sample)(self.kind, i, &ctx).unwrap_or(Value::Null);
        self.sign(SignInput::Generated(payload))
            .unwrap_or_else(|e| unreachable!("a generated payload signs: {e}"))
    }

    /// `body` signed afresh: ZEGO bodies lose any signing fields and get new
    /// ones (the result is compact JSON); NetEase bodies stay byte for byte.
    pub fn resign(&self, body: &[u8]) -> anyhow::Result<SignedRequest> {
        self.sign(SignInput::Given(body))
    }

    fn sign(&self, input: SignInput<'_>) -> anyhow::Result<SignedRequest> {
        let (headers, body) =
            self.family
                .0
                .def()
                .auth
                .sign(input, &self.app_id, &self.secret, now_ms())?;
        Ok(SignedRequest {
            route: self.family.route(),
            headers,
            body,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A ZEGO-style nonce: a random 19-digit number, as text.
/// Runs `hookrelay send`.
pub fn run(args: SendArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(args: SendArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let provider = args.family.family().provider();
    let app = pick_app(&config, provider, args.app_id.as_deref())?;
    let generator = Generator::new(args.family, args.kind.as_deref(), app)?;
    let body = match &args.body {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let mut source = Source { generator, body };

    if let (Some(n), Some(out)) = (args.emit, &args.out) {
        let started = std::time::Instant::now();
        emit(n, out, &source)?;
        eprintln!(
            "wrote {n} signed requests to {} in {:.2} s",
            out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut addr = config.server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let mut requests = Vec::new();
    for _ in 0..args.count {
        requests.push(source.make()?);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(send_all(
        &base,
        &requests,
        args.repeat,
        Duration::from_secs(args.timeout_secs.max(1)),
    ))
}

/// Where requests come from: generated events, or a given body re-signed.
#[derive(Debug, Clone)]
struct Source {
    generator: Generator,
    body: Option<Vec<u8>>,
}

impl Source {
    fn make(&mut self) -> anyhow::Result<SignedRequest> {
        match &self.body {
            Some(bytes) => self.generator.resign(bytes),
            None => Ok(self.generator.next_request()),
        }
    }

    /// An independent source for another thread: same family, kind and app,
    /// ids from a run of its own so no two threads make the same event.
    fn fork(&self) -> Source {
        let mut generator = self.generator.clone();
        generator.run = format!("{:08x}", fastrand::u32(..));
        generator.run_num = fastrand::u64(1_000_000_000..10_000_000_000);
        generator.counter = 0;
        Source {
            generator,
            body: self.body.clone(),
        }
    }
}

fn pick_app<'a>(
    config: &'a Config,
    provider: Provider,
    app_id: Option<&str>,
) -> anyhow::Result<&'a App> {
    let mut apps = config.apps.iter().filter(|a| a.provider == provider);
    match app_id {
        Some(id) => apps.find(|a| a.app_id == id).ok_or_else(|| {
            anyhow!(
                "no {} app `{id}` in the config (check --config / HOOKRELAY_CONFIG)",
                provider.as_str()
            )
        }),
        None => apps.next().ok_or_else(|| {
            anyhow!(
                "no {} app in the config: give --config (or HOOKRELAY_CONFIG) with an [[apps]] entry",
                provider.as_str()
            )
        }),
    }
}

/// Writes `n` requests from `source` to `out` as JSON Lines, generating
/// them on every core (each thread on a [`Source::fork`]) in batches.
fn emit(n: u64, out: &Path, source: &Source) -> anyhow::Result<()> {
    const BATCH: u64 = 2048;
    let sink: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        )
    };
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, sink);
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(8)
        .min(n.div_ceil(BATCH).max(1) as usize);
    let next_batch = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Vec<u8>>>(threads * 2);
        for _ in 0..threads {
            let tx = tx.clone();
            let mut source = source.fork();
            let next_batch = &next_batch;
            scope.spawn(move || {
                loop {
                    let first = next_batch.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
                    if first >= n {
                        return;
                    }
                    let count = BATCH.min(n - first);
                    let mut buf = Vec::with_capacity(count as usize * 2048);
                    let mut result = Ok(());
                    for _ in 0..count {
                        match source.make() {
                            Ok(req) => {
                                req.write_json_line(&mut buf);
                                buf.push(b'\n');
                            }
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    let failed = result.is_err();
                    if tx.send(result.map(|()| buf)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        // Every batch arrives, or a failure stops the writer (the senders
        // then see a closed channel and stop too).
        for batch in rx {
            writer.write_all(&batch?)?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot write {}", out.display()))?;
    writer
        .flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

async fn send_all(
    base: &str,
    requests: &[SignedRequest],
    repeat: u64,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("cannot build the HTTP client")?;
    let mut all_ok = true;
    for request in requests {
        for _ in 0..repeat {
            let url = format!("{base}{}", request.route);
            let mut builder = client.post(&url).body(request.body.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    println!("{} {}", status.as_u16(), text.trim_end());
                    all_ok &= status.is_success();
                }
                Err(e) => {
                    let why = if e.is_connect() {
                        "cannot connect (is hookrelay running there?)"
                    } else if e.is_timeout() {
                        "timed out"
                    } else {
                        "request failed"
                    };
                    eprintln!("error: POST {url}: {why}: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use crate::verify::zego::Casing;
    use crate::verify::{netease, zego};
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use serde_json::json;
    use std::collections::HashSet;

    const SECRET: &str = "send-test-secret";

    fn app(provider: Provider, id: &str) -> App {
        App {
            provider,
            app_id: id.into(),
            secrets: vec![SecretString::new(SECRET)],
        }
    }

    fn app_for(family: FamilyArg) -> App {
        match family.family().provider() {
            Provider::Zego => app(Provider::Zego, "1234567890"),
            Provider::Netease => app(Provider::Netease, "ne-app-key"),
        }
    }

    fn all() -> Vec<FamilyArg> {
        FAMILIES.iter().map(|f| FamilyArg(*f)).collect()
    }

    /// Checks `req` the way the server does and returns its parsed kind.
    fn verify_and_parse(family: FamilyArg, app: &App, req: &SignedRequest) -> (String, Value) {
        assert_eq!(req.route, family.route());
        let now = now_ms() as i64;
        let payload: Value = serde_json::from_str(&req.body).expect("body is JSON");
        match family.family().provider() {
            Provider::Zego => {
                let casing = if family == FamilyArg::named("cloud_player") {
                    Casing::Pascal
                } else {
                    Casing::Lower
                };
                let fields = zego::signing_fields(&payload, casing).expect("signing fields");
                zego::verify((), &fields, &app.secrets, now, 300).expect("verifies, fresh");
                assert_eq!(
                    crate::providers::zego::app_id(&payload).as_deref(),
                    Some(app.app_id.as_str())
                );
            }
            Provider::Netease => {
                let mut map = HeaderMap::new();
                for (k, v) in &req.headers {
                    map.insert(
                        HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    );
                }
                let headers = netease::signing_headers(&map).expect("signing headers");
                assert_eq!(headers.app_key.as_deref(), Some(app.app_id.as_str()));
                netease::verify((), req.body.as_bytes(), &headers, &app.secrets, now, 300)
                    .expect("verifies, fresh");
            }
        }
        let parsed = crate::providers::parse(family.family(), &payload);
        (parsed.kind, payload)
    }

    #[test]
    fn every_kind_verifies_parses_to_itself_and_is_unique() {
        for family in all() {
            let app = app_for(family);
            for (kind, _) in family.kinds() {
                let mut generator = Generator::new(family, Some(kind), &app).unwrap();
                let mut bodies = HashSet::new();
                let mut resources = HashSet::new();
                let mut dedup_keys = HashSet::new();
                for _ in 0..50 {
                    let req = generator.next_request();
                    let (parsed_kind, payload) = verify_and_parse(family, &app, &req);
                    assert_eq!(parsed_kind, *kind, "{family:?} {kind}: {}", req.body);
                    let parsed = crate::providers::parse(family.family(), &payload);
                    assert!(parsed.resource.is_some(), "{kind}: no resource");
                    resources.insert(parsed.resource);
                    dedup_keys.insert(crate::event::dedup_key(
                        family.family().provider(),
                        &app.app_id,
                        &payload,
                        &zego::SIGNING_KEYS,
                    ));
                    assert!(bodies.insert(req.body), "{kind}: a body repeats");
                }
                assert_eq!(dedup_keys.len(), 50, "{family:?} {kind}: dedup keys repeat");
                // Rooms are shared by 16 users each, by design; the rest are unique.
                assert!(resources.len() > 1, "{family:?} {kind}");
            }
        }
    }

    #[test]
    fn generated_events_carry_realistic_times_and_ids() {
        let app = app_for(FamilyArg::named("stream"));
        let mut g = Generator::new(FamilyArg::named("stream"), None, &app).unwrap();
        let (kind, p) = verify_and_parse(FamilyArg::named("stream"), &app, &g.next_request());
        assert_eq!(kind, "stream_create");
        let now = now_ms();
        let ms: u64 = p["create_time_ms"].as_str().unwrap().parse().unwrap();
        assert!(now.abs_diff(ms) < 5_000);
        let ts: u64 = p["timestamp"].as_str().unwrap().parse().unwrap();
        assert!((now / 1000).abs_diff(ts) < 5);
        assert!(p["nonce"].as_str().unwrap().len() >= 19);
        assert_eq!(p["rtmp_url"].as_array().unwrap().len(), 2);
        // Signing fields sit right after appid, as in the vendor's example.
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(
            keys[..5],
            ["event", "appid", "timestamp", "nonce", "signature"]
        );

        let app = app_for(FamilyArg::named("cloud_player"));
        let mut g = Generator::new(FamilyArg::named("cloud_player"), Some("10001"), &app).unwrap();
        let (kind, p) = verify_and_parse(FamilyArg::named("cloud_player"), &app, &g.next_request());
        assert_eq!(kind, "upload_succeeded");
        assert_eq!(p["AppID"], json!(1234567890u64));
        assert!(p["Signature"].is_string() && p.get("signature").is_none());
        assert!(now.abs_diff(p["EventTime"].as_u64().unwrap()) < 5_000);

        let app = app_for(FamilyArg::named("cloud_play"));
        let mut g =
            Generator::new(FamilyArg::named("cloud_play"), Some("play_error"), &app).unwrap();
        let req = g.next_request();
        let (kind, p) = verify_and_parse(FamilyArg::named("cloud_play"), &app, &req);
        assert_eq!(kind, "play_error");
        assert_eq!(p["eventType"], 505);
        assert_eq!(p["data"]["reason"], "open url error");
        let cur: u64 = req.headers[2].1.parse().unwrap();
        assert!(now.abs_diff(cur) < 5_000, "CurTime is in ms");
    }

    #[test]
    fn unknown_kinds_and_wrong_apps_are_refused() {
        let zego = app_for(FamilyArg::named("stream"));
        let err =
            Generator::new(FamilyArg::named("stream"), Some("player_created"), &zego).unwrap_err();
        assert!(err.to_string().contains("stream_create"), "{err}");
        let err = Generator::new(FamilyArg::named("cloud_play"), None, &zego).unwrap_err();
        assert!(err.to_string().contains("netease"), "{err}");
        assert_eq!(
            Generator::new(
                FamilyArg::named("cloud_play"),
                Some("507"),
                &app_for(FamilyArg::named("cloud_play"))
            )
            .unwrap()
            .kind(),
            "play_resumed"
        );
    }

    #[test]
    fn a_given_zego_body_is_resigned_in_its_casing_and_keeps_its_fields() {
        let seed = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seeds/zego_cloud_player_created.json"
        ));
        let app = app(Provider::Zego, "123456789");
        let g = Generator::new(FamilyArg::named("cloud_player"), None, &app).unwrap();
        let first = g.resign(seed.as_bytes()).unwrap();
        let second = g.resign(seed.as_bytes()).unwrap();
        let (kind, p) = verify_and_parse(FamilyArg::named("cloud_player"), &app, &first);
        assert_eq!(kind, "player_created");
        assert_eq!(p["PlayerId"], "XXXXXX");
        assert_ne!(p["Signature"], "XXXXXXX");
        assert_ne!(first.body, second.body, "fresh nonce each time");
        // Same payload apart from signing fields: the server sees a duplicate.
        let p2: Value = serde_json::from_str(&second.body).unwrap();
        let key = |p: &Value| {
            crate::event::dedup_key(Provider::Zego, "123456789", p, &zego::SIGNING_KEYS)
        };
        assert_eq!(key(&p), key(&p2));

        // Lowercase family, body carrying stale fields in both casings.
        let stale = r#"{"event":"stream_create","appid":"123456789","Timestamp":"1","nonce":"2","signature":"x","stream_id":"s1"}"#;
        let g = Generator::new(FamilyArg::named("stream"), None, &app).unwrap();
        let req = g.resign(stale.as_bytes()).unwrap();
        let (kind, p) = verify_and_parse(FamilyArg::named("stream"), &app, &req);
        assert_eq!(kind, "stream_create");
        assert!(p.get("Timestamp").is_none());
        assert_eq!(p["stream_id"], "s1");

        // The vendor's seed names app "1": it is sent as the app we sign for.
        let seed = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seeds/zego_stream_create.json"
        ));
        let req = g.resign(seed.as_bytes()).unwrap();
        let (kind, p) = verify_and_parse(FamilyArg::named("stream"), &app, &req);
        assert_eq!(kind, "stream_create");
        assert_eq!(p["appid"], "123456789");
        assert_eq!(p["stream_sid"], "s-115205136669740000000000104");
    }

    #[test]
    fn a_given_netease_body_is_signed_byte_for_byte() {
        let seed = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seeds/netease_cloud_play_505.json"
        ));
        let app = app_for(FamilyArg::named("cloud_play"));
        let g = Generator::new(FamilyArg::named("cloud_play"), None, &app).unwrap();
        let req = g.resign(seed.as_bytes()).unwrap();
        assert_eq!(req.body, seed, "not reserialized");
        let (kind, _) = verify_and_parse(FamilyArg::named("cloud_play"), &app, &req);
        assert_eq!(kind, "play_error");
    }

    #[test]
    fn emitted_lines_round_trip_and_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("requests.jsonl");
        for family in all() {
            let app = app_for(family);
            let generator = Generator::new(family, None, &app).unwrap();
            // More than one batch, so several threads take part.
            emit(
                5000,
                &out,
                &Source {
                    generator,
                    body: None,
                },
            )
            .unwrap();
            let text = std::fs::read_to_string(&out).unwrap();
            let (mut bodies, mut resources) = (HashSet::new(), HashSet::new());
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["route"], family.route());
                let headers: Vec<(String, String)> = v["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                assert!(headers.iter().any(|(k, _)| k == "Content-Type"));
                let req = SignedRequest {
                    route: family.route(),
                    headers,
                    body: v["body"].as_str().unwrap().to_owned(),
                };
                let (kind, payload) = verify_and_parse(family, &app, &req);
                assert_eq!(kind, family.default_kind());
                let resource = crate::providers::parse(family.family(), &payload).resource;
                assert!(
                    resources.insert(resource),
                    "{family:?}: a resource id repeats"
                );
                assert!(bodies.insert(req.body));
            }
            assert_eq!(bodies.len(), 5000);
        }
    }

    #[test]
    fn the_app_is_picked_by_provider_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[apps]]\nprovider = \"netease\"\napp_id = \"k\"\nsecret = \"s\"\n\
             [[apps]]\nprovider = \"zego\"\napp_id = 1\nsecret = \"a\"\n\
             [[apps]]\nprovider = \"zego\"\napp_id = 2\nsecret = \"b\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(pick_app(&config, Provider::Zego, None).unwrap().app_id, "1");
        assert_eq!(
            pick_app(&config, Provider::Zego, Some("2")).unwrap().app_id,
            "2"
        );
        assert_eq!(
            pick_app(&config, Provider::Netease, None).unwrap().app_id,
            "k"
        );
        assert!(pick_app(&config, Provider::Zego, Some("3")).is_err());
        let empty = Config::load(None, Vec::new()).unwrap();
        let err = pick_app(&empty, Provider::Zego, None).unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
    }
}
