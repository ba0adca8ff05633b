//! Command-line interface: `serve`, the operator verbs on a spool, and
//! `check-config`. Exit codes scripts can rely on: 0 success, 1 failure or
//! nothing found, 2 usage error (from clap).

use crate::config::Config;
use crate::spool::admin::Admin;
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
    /// Exit 0 if a local hookrelay answers /healthz (for container HEALTHCHECKs; no curl needed).
    Healthcheck {
        /// The health URL. Default: http://127.0.0.1:<port of server.listen>/healthz.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
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
            eprintln!("error: {e:#}");
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
            print!("{}", toml::to_string_pretty(&config)?);
            eprintln!(
                "config is valid: {} app(s), {} sink(s)",
                config.apps.len(),
                config.sinks.len()
            );
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
            let admin = Admin::open(&config.spool.dir)?;
            let rows = admin.dead_letters(sink.as_deref())?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
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
                        r.event_id,
                        r.sink,
                        r.kind,
                        r.attempts,
                        status,
                        r.dead_at,
                        r.last_error,
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
            let mut admin = Admin::open(&config.spool.dir)?;
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
            let admin = Admin::open(&config.spool.dir)?;
            let Some(envelope) = admin.event(&id)? else {
                eprintln!("no event with id {id} in the spool (it may have been pruned)");
                return Ok(ExitCode::from(1));
            };
            let value: serde_json::Value = serde_json::from_str(&envelope)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            for (sink, state) in admin.event_status(&id)? {
                eprintln!("sink {sink}: {state}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_sink(config: &Config, sink: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = sink
        && !config.sinks.iter().any(|s| s.name() == name)
    {
        let known: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        anyhow::bail!(
            "no sink named `{name}` in the config (sinks: {})",
            known.join(", ")
        );
    }
    Ok(())
}
