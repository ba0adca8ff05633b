//! Command-line interface: `serve`, the operator verbs on a spool, and
//! `check-config`. Exit codes scripts can rely on: 0 success, 1 failure or
//! nothing found, 2 usage error (from clap).

use crate::config::Config;
use crate::store::operator::Operator;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "hookrelay",
    version,
    about = "Receives ZEGO and NetEase callbacks, verifies them, stores them durably and delivers them to sinks."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config PATH` (or `HOOKRELAY_CONFIG`); without it, built-in defaults.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file (TOML). Without it, built-in defaults are used.
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), std::env::vars())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ConfigArg),
    /// Inspect and replay events that sinks gave up on.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Look at stored events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Validate a config and print the effective settings, secrets redacted.
    CheckConfig(ConfigArg),
    /// Send (or emit) correctly signed test callbacks for any family.
    Send(crate::send::SendArgs),
    /// Follow newly stored events from a running hookrelay's admin API (Server-Sent Events).
    Tail(TailArgs),
    /// Exit 0 if a local hookrelay answers /healthz (for container HEALTHCHECKs; no curl needed).
    Healthcheck {
        /// The health URL. Default: http://127.0.0.1:<port of server.listen>/healthz.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The admin listener, e.g. http://127.0.0.1:9090 (or the full
    /// .../api/events/stream URL).
    #[arg(long)]
    pub url: String,
    /// The environment variable holding the admin token.
    #[arg(long)]
    pub token_env: Option<String>,
    /// Only events of this family (e.g. stream, cloud_player).
    #[arg(long)]
    pub family: Option<String>,
    /// Only events of this kind (e.g. stream_create).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events of this app id.
    #[arg(long)]
    pub app: Option<String>,
    /// Print each envelope as one JSON line instead of a readable line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters (all sinks, or one).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into delivery.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// The event id to replay.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<String>,
        /// Every dead letter (of --sink, if given).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print an event's envelope and where each sink stands with it.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The event id (as answered to the vendor).
        id: String,
    },
}

/// Runs an operator verb (everything but `serve`).
pub fn run_admin(command: Command) -> ExitCode {
    match admin(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", printable(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn admin(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => anyhow::bail!("serve is not an operator verb"),
        Command::Send(args) => Ok(crate::send::run(args)),
        Command::CheckConfig(config) => {
            let config = config.load()?;
            print!("{}", redacted(&config)?);
            // In words, on stderr: stdout stays parseable TOML.
            for sink in &config.sinks {
                eprintln!(
                    "sink {} receives: {}",
                    printable(sink.name()),
                    printable(&sink.common.describe())
                );
            }
            eprintln!(
                "config is valid: {} app(s), {} sink(s)",
                config.apps.len(),
                config.sinks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tail(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url, config } => {
            let url = match url {
                Some(u) => u,
                None => {
                    let port = config.load()?.server.listen.port();
                    format!("http://127.0.0.1:{port}/healthz")
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = runtime.block_on(async {
                reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()?
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status())
            });
            match status {
                Ok(s) if s.is_success() => Ok(ExitCode::SUCCESS),
                Ok(s) => {
                    eprintln!("unhealthy: {url} answered {s}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => {
                    eprintln!("unhealthy: {url}: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::DeadLetters(DeadLettersCommand::List { config, sink, json }) => {
            let config = config.load()?;
            check_sink(&config, sink.as_deref())?;
            let admin = open_store(&config)?;
            let rows = admin.dead_letters(sink.as_deref())?;
            if json {
                for row in &rows {
                    println!("{}", printable_json(&serde_json::to_string(row)?));
                }
            } else if rows.is_empty() {
                eprintln!("no dead letters");
            } else {
                println!(
                    "{:<36}  {:<12}  {:<22}  {:>8}  {:>6}  {:<24}  ERROR",
                    "EVENT ID", "SINK", "KIND", "ATTEMPTS", "STATUS", "DEAD AT"
                );
                for r in &rows {
                    let status = r.last_status.map_or("-".to_owned(), |s| s.to_string());
                    let pending = if r.replay_pending {
                        " (replay pending)"
                    } else {
                        ""
                    };
                    println!(
                        "{:<36}  {:<12}  {:<22}  {:>8}  {:>6}  {:<24}  {}{}",
                        printable(&r.event_id),
                        printable(&r.sink),
                        printable(&r.kind),
                        r.attempts,
                        status,
                        printable(&r.dead_at),
                        printable(&r.last_error),
                        pending
                    );
                }
                eprintln!("{} dead letter(s)", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLettersCommand::Replay {
            config,
            sink,
            id,
            all: _,
        }) => {
            let config = config.load()?;
            check_sink(&config, sink.as_deref())?;
            let mut admin = open_store(&config)?;
            let candidates = admin.replay_candidates(sink.as_deref(), id.as_deref())?;
            if candidates.is_empty() {
                eprintln!("nothing to replay");
                return Ok(ExitCode::from(1));
            }
            let bar = indicatif::ProgressBar::new(candidates.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("replaying {bar:40} {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut queued = 0;
            for chunk in candidates.chunks(500) {
                queued += admin.request_replay(chunk)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            println!(
                "queued {queued} dead letter(s) for redelivery; a running hookrelay delivers them within seconds"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Events(EventsCommand::Show { config, id }) => {
            let config = config.load()?;
            let admin = open_store(&config)?;
            let Some(envelope) = admin.event(&id)? else {
                eprintln!(
                    "no event with id {} in the spool (it may have been pruned)",
                    printable(&id)
                );
                return Ok(ExitCode::from(1));
            };
            let value: serde_json::Value = serde_json::from_str(&envelope)?;
            println!("{}", printable_json(&serde_json::to_string_pretty(&value)?));
            for (sink, mut state) in admin.event_status(&id)? {
                // Done but never offered: the sink's `match` does not take it
                // (as configured now).
                let route = config
                    .sinks
                    .iter()
                    .find(|s| s.name() == sink)
                    .and_then(|s| crate::sinks::Route::new(s.common.route.as_ref()));
                if state == "delivered" && route.is_some_and(|r| !r.accepts(&envelope)) {
                    state = "filtered".to_owned();
                }
                eprintln!("sink {}: {state}", printable(&sink));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store the config names, for an operator verb.
fn open_store(config: &Config) -> anyhow::Result<Operator> {
    let sinks = config.sinks.iter().map(|s| s.name().to_owned()).collect();
    Operator::open(
        config.spool.backend,
        &config.spool.dir,
        config.nats.as_ref(),
        sinks,
    )
}

/// How long `tail` keeps trying to reconnect after a drop.
const TAIL_RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The event stream's URL for `--url` and the filters.
fn tail_url(args: &TailArgs) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&args.url)
        .map_err(|e| anyhow::anyhow!("--url {}: {e}", printable(&args.url)))?;
    if !url.path().ends_with("/api/events/stream") {
        let path = format!("{}/api/events/stream", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in [
            ("family", &args.family),
            ("kind", &args.kind),
            ("app_id", &args.app),
        ] {
            if let Some(v) = value {
                query.append_pair(name, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// One readable line: time, provider/family/kind, app, resource, id.
fn tail_line(envelope: &serde_json::Value) -> String {
    let field = |name: &str| envelope.get(name).and_then(|v| v.as_str()).unwrap_or("-");
    let resource = crate::providers::Family::by_name(field("family"))
        .and_then(|f| {
            f.parse(envelope.get("raw").unwrap_or(&serde_json::Value::Null))
                .resource
        })
        .unwrap_or_else(|| "-".to_owned());
    let line = format!(
        "{}  {}/{}/{}  app {}  {}  {}",
        field("received_at"),
        field("provider"),
        field("family"),
        field("kind"),
        field("app_id"),
        resource,
        field("id"),
    );
    printable(&line).into_owned()
}

/// Follows the admin API's event stream until interrupted, reconnecting
/// with `Last-Event-ID` after a drop.
async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let token = match &args.token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            anyhow::anyhow!("--token-env {}: the variable is not set", printable(var))
        })?),
        None => None,
    };
    let url = tail_url(&args)?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut last_id: Option<String> = None;
    let mut dropped_at: Option<std::time::Instant> = None;
    loop {
        let mut request = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(t) = &token {
            request = request.bearer_auth(t);
        }
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                match dropped_at {
                    Some(at) if at.elapsed() < TAIL_RECONNECT_FOR => {}
                    Some(_) => anyhow::bail!(
                        "lost the event stream at {url} and could not reconnect for {}s: {e}",
                        TAIL_RECONNECT_FOR.as_secs()
                    ),
                    None => anyhow::bail!("cannot connect to {url}: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        match response.status().as_u16() {
            200 => {}
            401 => anyhow::bail!(
                "{url} refused the admin token (401 unauthorized); set it with --token-env VAR"
            ),
            s => anyhow::bail!("{url} answered {s}"),
        }
        if dropped_at.take().is_some() {
            eprintln!("reconnected");
        }
        follow(response, &mut last_id, args.json).await;
        eprintln!("the event stream dropped; reconnecting");
        dropped_at = Some(std::time::Instant::now());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Reads Server-Sent Events until the response ends, printing every
/// `envelope` event and remembering its id.
async fn follow(mut response: reqwest::Response, last_id: &mut Option<String>, json: bool) {
    let mut pending = Vec::<u8>::new();
    let (mut event, mut id, mut data) = (String::new(), None::<String>, String::new());
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if event == "envelope" && !data.is_empty() {
                    if let Some(i) = id.take() {
                        *last_id = Some(i);
                    }
                    match serde_json::from_str::<serde_json::Value>(&data) {
                        Ok(v) if json => println!("{}", printable_json(&v.to_string())),
                        Ok(v) => println!("{}", tail_line(&v)),
                        Err(_) => eprintln!("skipped an event that is not JSON"),
                    }
                }
                (event, id, data) = (String::new(), None, String::new());
                continue;
            }
            if line.starts_with(':') {
                continue; // heartbeat
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.to_owned()),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

const REDACTED: &str = "[redacted]";

/// The effective config as TOML with nothing an attacker could use: every
/// `secret*`, `token*` and `password*` value at any depth, every header
/// value, and the user-info, query and fragment of every URL.
fn redacted(config: &Config) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(config)?;
    redact(&mut value);
    Ok(toml::to_string_pretty(&value)?)
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                if crate::config::is_secret_key(key) || key == "headers" {
                    redact_all(v);
                } else if (key == "url" || key.ends_with("_url"))
                    && let toml::Value::String(url) = v
                {
                    *url = redact_url(url);
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Replaces every leaf below `value` (a table keeps its keys).
fn redact_all(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| redact_all(v)),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_all),
        leaf => *leaf = toml::Value::String(REDACTED.to_owned()),
    }
}

/// `https://user:pw@host:8443/path?token=x#f` → `https://[redacted]@host:8443/path?[redacted]#[redacted]`.
fn redact_url(text: &str) -> String {
    let Ok(url) = reqwest::Url::parse(text) else {
        return REDACTED.to_owned();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if url.query().is_some() {
        out.push('?');
        out.push_str(REDACTED);
    }
    if url.fragment().is_some() {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// `text` with every control character (C0, DEL, C1) written as a `\u001b`
/// style escape, so data from a callback cannot drive the operator's terminal.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Escapes the control characters serde_json leaves raw (DEL and C1, and
/// none of the C0 ones it already escapes) in JSON text. The JSON stays
/// valid: outside strings there are only `\n` and spaces, kept as they are.
fn printable_json(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.chars().any(|c| c.is_control() && c != '\n') {
        return json.into();
    }
    json.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn check_sink(config: &Config, sink: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = sink
        && !config.sinks.iter().any(|s| s.name() == name)
    {
        let known: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        anyhow::bail!(
            "no sink named `{}` in the config (sinks: {})",
            printable(name),
            printable(&known.join(", "))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_secret_token_and_password_keys_at_any_depth() {
        let mut v: toml::Value = toml::from_str(
            r#"
            plain = "keep"
            [a.b]
            token_x = 1
            password = ["p1", "p2"]
            secret_env = "VAR"
            [a.b.headers]
            Authorization = "Bearer x"
            [[c]]
            url = "http://u:p@h:1/path?q=1"
            "#,
        )
        .unwrap();
        redact(&mut v);
        let text = toml::to_string(&v).unwrap();
        for gone in ["p1", "p2", "Bearer", "VAR", "u:p", "q=1"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert_eq!(v["plain"].as_str(), Some("keep"));
        assert_eq!(v["a"]["b"]["token_x"].as_str(), Some(REDACTED));
        assert_eq!(
            v["c"][0]["url"].as_str(),
            Some("http://[redacted]@h:1/path?[redacted]")
        );
    }

    #[test]
    fn control_characters_are_escaped_and_json_stays_valid() {
        assert_eq!(printable("a\u{1b}[2Jb\u{9b}"), "a\\u001b[2Jb\\u009b");
        assert_eq!(printable("plain"), "plain");
        let json =
            serde_json::to_string_pretty(&serde_json::json!({"k": "x\u{7f}\u{9b}\u{1b}"})).unwrap();
        let escaped = printable_json(&json);
        assert!(!escaped.chars().any(|c| c.is_control() && c != '\n'));
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["k"], "x\u{7f}\u{9b}\u{1b}");
    }
}
