//! Settings: their shape, defaults, layering and validation.
//!
//! Layers, later wins: the documented defaults embedded from
//! `config/default.toml`, then the TOML file given with `--config` /
//! `HOOKRELAY_CONFIG`, then environment variables `HOOKRELAY_<SECTION>__<KEY>`
//! (`__` separates levels; a numeric level indexes an array, e.g.
//! `HOOKRELAY_APPS__0__SECRET`). Every struct denies unknown fields, so a typo
//! in the file or in a variable name stops start-up with a message naming the
//! key instead of being silently ignored.

use crate::providers::Provider;
pub use crate::providers::{App, AuthContext};
use crate::secret::SecretString;
/// `[[sinks]]` entries: each kind's config, validation and sink live in [`crate::sinks`].
pub use crate::sinks::SinkConfig;
pub use crate::store::Backend;
pub use crate::store::nats::NatsStoreConfig;
use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The documented defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variables with this prefix override file settings.
pub const ENV_PREFIX: &str = "HOOKRELAY_";

/// Variables with the prefix that are not settings.
const ENV_NOT_SETTINGS: [&str; 1] = ["HOOKRELAY_CONFIG"];

/// The whole effective configuration, validated. Serializes (for
/// `check-config`) with every secret as `[redacted]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub spool: SpoolConfig,
    pub admin: AdminConfig,
    /// `[nats]`: the shared store, with `[spool] backend = "nats"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsStoreConfig>,
    pub apps: Vec<App>,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    log: LogConfig,
    spool: SpoolConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    nats: Option<NatsStoreConfig>,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    sinks: Vec<SinkConfig>,
}

/// `[server]`: the HTTP surface.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes; larger gets 413. Default 64 KiB
    /// (callbacks are a few KB).
    pub max_body_bytes: usize,
    /// Total bytes of request bodies being received at once; past it a new
    /// callback is answered 503 `overloaded` at once. Default 32 MiB.
    pub max_inflight_body_bytes: usize,
    /// A body must arrive within this many seconds of its headers (408 past
    /// it). Default 5.
    pub body_timeout_secs: u64,
    /// How far a callback's timestamp may be from our clock, in seconds; at
    /// least 1. Default 300.
    pub timestamp_tolerance_secs: u64,
    /// Whole-request deadline in seconds (408 past it). Default 10.
    pub request_timeout_secs: u64,
    /// A connection must send its request headers within this many seconds. Default 10.
    pub header_read_timeout_secs: u64,
    /// Requests handled at once; more are shed with 503. Default 1024.
    pub concurrency_limit: usize,
    /// After SIGTERM, keep accepting this long (seconds) while /readyz says
    /// draining, so the load balancer stops sending first. Default 0.
    pub drain_delay_secs: u64,
    /// Then wait at most this long (seconds) for in-flight requests. Default 25.
    pub shutdown_grace_secs: u64,
    /// Source addresses allowed to post callbacks (CIDR): a list for every
    /// provider, or a table per provider (`{ zego = [...], netease = [...] }`).
    /// Absent = everyone. A refused address gets 403 `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<AllowedIps>,
    /// Take the client address from the rightmost `X-Forwarded-For` entry
    /// (the one our load balancer appended). Default false.
    pub trust_forwarded_for: bool,
}

/// `server.allowed_ips`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AllowedIps {
    All(Vec<Cidr>),
    PerProvider(PerProviderIps),
}

/// `allowed_ips = { zego = [...], netease = [...] }`: a list per provider
/// (any provider of the registry; an unknown name stops start-up), and a
/// provider left out is not restricted.
pub type PerProviderIps = std::collections::BTreeMap<Provider, Vec<Cidr>>;

impl AllowedIps {
    /// Whether `ip` may post callbacks of `provider`.
    pub fn allows(&self, provider: Provider, ip: IpAddr) -> bool {
        let list = match self {
            AllowedIps::All(list) => Some(list),
            AllowedIps::PerProvider(p) => p.get(&provider),
        };
        list.is_none_or(|l| l.iter().any(|c| c.contains(ip)))
    }
}

/// An address block such as `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[log]`: structured logs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` (human) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `hookrelay=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `[spool]`: the durable store every event passes through.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Where acknowledged events are stored: `local` (the embedded SQLite
    /// spool, the default) or `nats` (a JetStream stream shared by every
    /// replica, configured in `[nats]`).
    #[serde(default)]
    pub backend: Backend,
    /// Directory holding `spool.sqlite3`. Default `data/spool`.
    pub dir: PathBuf,
    /// How long a dedup key (and a ZEGO signature) is remembered, in hours. Default 24.
    pub dedup_window_hours: u64,
    /// How long delivered events are kept for `events show`, in hours. Default 72.
    pub retention_hours: u64,
    /// Largest spool file in MiB; when full, callbacks get 503 instead of the
    /// disk filling up. 0 = no limit (the default).
    pub max_size_mb: u64,
}

/// `[admin]`: a second listener for the operator's endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// When set, `/metrics` and `/readyz` are served only here (`/healthz`
    /// on both), so the public port exposes callbacks and `/healthz` alone.
    /// `server.allowed_ips` never applies here. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The bearer token of `/api/` and `/ui/` (and the UI's sign-in).
    /// Required, or `token_env`, unless `listen` is a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretString>,
    /// The environment variable holding the token, read at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl AdminConfig {
    /// Resolves `token_env` into `token` and checks that a listener that
    /// is not loopback-only has a token.
    fn resolve(mut self) -> anyhow::Result<AdminConfig> {
        if self.token.is_some() && self.token_env.is_some() {
            bail!("invalid config at `admin.token`: give token or token_env, not both");
        }
        if let Some(name) = &self.token_env {
            let value = std::env::var(name).map_err(|_| {
                anyhow!(
                    "invalid config at `admin.token_env`: environment variable `{name}` is not set"
                )
            })?;
            self.token = Some(SecretString::new(value));
        }
        if self.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            bail!("invalid config at `admin.token`: must not be empty");
        }
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
            && self.token.is_none()
        {
            bail!(
                "invalid config at `admin.token`: the admin listener {addr} is not loopback-only, \
                 so `admin.token` or `admin.token_env` is required"
            );
        }
        Ok(self)
    }
}

impl Config {
    /// How long a used ZEGO signature is remembered: the dedup window, and
    /// never less than twice the timestamp tolerance (a timestamp up to the
    /// tolerance in the past or the future verifies, so a signature can stay
    /// usable for 2 × tolerance after we first saw it).
    pub fn signature_window(&self) -> Duration {
        let fresh = Duration::from_secs(self.server.timestamp_tolerance_secs.saturating_mul(2));
        self.spool.dedup_window().max(fresh)
    }
}

impl SpoolConfig {
    pub fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.dedup_window_hours * 3600)
    }
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours * 3600)
    }
}

/// One `[[apps]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    provider: Provider,
    app_id: StringOrNumber,
    secret: Option<SecretString>,
    secrets: Option<Vec<SecretString>>,
    secret_env: Option<OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(u64),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Config {
    /// Loads defaults, then `path` if given, then `HOOKRELAY_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = DEFAULTS.parse().context("built-in defaults are invalid")?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| anyhow!("{}: {}", path.display(), e.message()))
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut table, file);
        }
        let from_env = apply_env(&mut table, env)?;
        Self::from_table(table, &from_env)
    }

    /// `from_env` maps a key path (`server.listen`) to the variable that set it,
    /// so an error in a value that came from the environment names the variable.
    fn from_table(table: toml::Table, from_env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut secrets = Vec::new();
        collect_secret_values(&table, false, &mut secrets);
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let var = env_var_for(from_env, &path, e.inner().message())
                    .map(|v| format!(" (set by environment variable `{v}`)"))
                    .unwrap_or_default();
                let mut message = e.into_inner().message().to_owned();
                let segments: Vec<String> = path
                    .split(['.', '[', ']'])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                // serde quotes strings as "…" (Debug) and other values as `…`.
                let quotes = |s: &String| {
                    message.contains(&format!("{s:?}")) || message.contains(&format!("`{s}`"))
                };
                if is_secret_path(&segments) || secrets.iter().any(quotes) {
                    message = without_value(&message);
                }
                anyhow!("invalid config at `{path}`{var}: {message}")
            })?;
        raw.validate()
    }
}

impl RawConfig {
    fn validate(self) -> anyhow::Result<Config> {
        if self.server.max_body_bytes == 0 {
            bail!("invalid config at `server.max_body_bytes`: must be at least 1");
        }
        if self.server.concurrency_limit == 0 {
            bail!("invalid config at `server.concurrency_limit`: must be at least 1");
        }
        if self.server.shutdown_grace_secs == 0 {
            bail!("invalid config at `server.shutdown_grace_secs`: must be at least 1");
        }
        if self.server.header_read_timeout_secs == 0 {
            bail!("invalid config at `server.header_read_timeout_secs`: must be at least 1");
        }
        if self.server.request_timeout_secs == 0 {
            bail!("invalid config at `server.request_timeout_secs`: must be at least 1");
        }
        if self.server.body_timeout_secs == 0 {
            bail!("invalid config at `server.body_timeout_secs`: must be at least 1");
        }
        if self.server.max_inflight_body_bytes == 0 {
            bail!("invalid config at `server.max_inflight_body_bytes`: must be at least 1");
        }
        if self.server.timestamp_tolerance_secs == 0 {
            // Without a freshness check a signature verifies forever, and
            // would be replayable with another body once the replay guard
            // has forgotten it.
            bail!(
                "invalid config at `server.timestamp_tolerance_secs`: must be at least 1 \
                 (0 would let a captured signature be replayed once forgotten)"
            );
        }
        if self.spool.dedup_window_hours == 0 {
            bail!("invalid config at `spool.dedup_window_hours`: must be at least 1");
        }
        match (&self.spool.backend, &self.nats) {
            (Backend::Nats, None) => bail!(
                "invalid config at `spool.backend`: \"nats\" needs a [nats] section with servers"
            ),
            (Backend::Nats, Some(nats)) => nats.validate(self.spool.retention())?,
            (Backend::Local, _) => {}
        }
        let mut apps = Vec::with_capacity(self.apps.len());
        let mut seen = HashSet::new();
        for (i, raw) in self.apps.into_iter().enumerate() {
            let app = raw.resolve(i)?;
            if !seen.insert((app.provider, app.app_id.clone())) {
                bail!(
                    "invalid config at `apps[{i}].app_id`: {} app {} is configured twice",
                    app.provider.as_str(),
                    app.app_id
                );
            }
            apps.push(app);
        }
        let mut sinks = self.sinks;
        crate::sinks::validate(&mut sinks)?;
        Ok(Config {
            server: self.server,
            log: self.log,
            spool: self.spool,
            admin: self.admin.resolve()?,
            nats: self.nats,
            apps,
            sinks,
        })
    }
}

impl RawApp {
    fn resolve(self, i: usize) -> anyhow::Result<App> {
        let app_id = match self.app_id {
            StringOrNumber::String(s) => s,
            StringOrNumber::Number(n) => n.to_string(),
        };
        if app_id.is_empty() {
            bail!("invalid config at `apps[{i}].app_id`: must not be empty");
        }
        let given = [
            self.secret.is_some(),
            self.secrets.is_some(),
            self.secret_env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            bail!(
                "invalid config at `apps[{i}]`: give exactly one of `secret`, `secrets` or `secret_env`"
            );
        }
        let secrets = if let Some(s) = self.secret {
            vec![s]
        } else if let Some(list) = self.secrets {
            list
        } else {
            let names = match self.secret_env {
                Some(OneOrMany::One(n)) => vec![n],
                Some(OneOrMany::Many(v)) => v,
                None => Vec::new(),
            };
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                let value = std::env::var(&name).map_err(|_| {
                    anyhow!(
                        "invalid config at `apps[{i}].secret_env`: environment variable `{name}` is not set"
                    )
                })?;
                out.push(SecretString::new(value));
            }
            out
        };
        if secrets.is_empty() {
            bail!("invalid config at `apps[{i}]`: at least one secret is required");
        }
        if secrets.iter().any(|s| s.expose().is_empty()) {
            bail!("invalid config at `apps[{i}]`: a secret must not be empty");
        }
        Ok(App {
            provider: self.provider,
            app_id,
            secrets,
        })
    }
}

impl Config {
    /// The app whose callbacks carry `app_id`, or — when the callback names
    /// no app — the provider's only app if exactly one is configured.
    pub fn find_app(&self, provider: Provider, app_id: Option<&str>) -> Option<&App> {
        crate::providers::find_app(&self.apps, provider, app_id)
    }

    /// What a vendor's [`crate::providers::Authenticate`] needs of the config.
    pub fn auth_context(&self) -> AuthContext<'_> {
        AuthContext {
            apps: &self.apps,
            tolerance_secs: self.server.timestamp_tolerance_secs,
        }
    }
}

/// The variable behind an error at `path`: the one that set exactly that
/// key, or the unknown field the message names, or a parent it replaced, or
/// the only variable below `path`.
fn env_var_for<'a>(from_env: &'a [(String, String)], path: &str, message: &str) -> Option<&'a str> {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(|field| {
            if path.is_empty() || path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        });
    let exact = |want: &str| {
        from_env
            .iter()
            .find(|(p, _)| p == want)
            .map(|(_, v)| v.as_str())
    };
    if let Some(v) = exact(path) {
        return Some(v);
    }
    if let Some(v) = unknown.as_deref().and_then(exact) {
        return Some(v);
    }
    if let Some((_, v)) = from_env
        .iter()
        .find(|(p, _)| path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}[")))
    {
        return Some(v);
    }
    let below: Vec<&str> = from_env
        .iter()
        .filter(|(p, _)| p.starts_with(&format!("{path}.")) || p.starts_with(&format!("{path}[")))
        .map(|(_, v)| v.as_str())
        .collect();
    match below.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}

/// The text of every value under a secret key or a sink header, to keep
/// them out of error messages (serde quotes the value it could not use).
fn collect_secret_values(table: &toml::Table, secret: bool, out: &mut Vec<String>) {
    for (key, value) in table {
        let secret = secret || is_secret_key(key) || key == "headers";
        collect_secret_value(value, secret, out);
    }
}

fn collect_secret_value(value: &toml::Value, secret: bool, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => collect_secret_values(t, secret, out),
        toml::Value::Array(items) => {
            for item in items {
                collect_secret_value(item, secret, out);
            }
        }
        toml::Value::String(s) if secret && !s.is_empty() => out.push(s.clone()),
        toml::Value::Integer(n) if secret => out.push(n.to_string()),
        toml::Value::Float(f) if secret => out.push(f.to_string()),
        toml::Value::Datetime(d) if secret => out.push(d.to_string()),
        _ => {}
    }
}

/// A serde message without the value it quotes: `invalid type: integer
/// `123`, expected a string` becomes `invalid type (value not shown),
/// expected a string`.
fn without_value(message: &str) -> String {
    match message.rsplit_once(", expected ") {
        Some((what, expected)) => {
            let what = what.split(':').next().unwrap_or("invalid value");
            format!("{what} (value not shown), expected {expected}")
        }
        None => "invalid value (not shown)".to_owned(),
    }
}

/// Deep-merges `over` into `base`: tables merge, everything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Applies `HOOKRELAY_<SECTION>__<KEY>` variables. A value is read as a TOML
/// value when it parses as one (`300`, `true`, `["a","b"]`), else as a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            bail!(
                "invalid environment variable `{name}`: expected HOOKRELAY_<SECTION>__<KEY>, e.g. HOOKRELAY_SERVER__LISTEN"
            );
        }
        let parsed = if is_secret_path(&path) {
            parse_env_secret(&value)
        } else {
            parse_env_value(&value)
        };
        set_path(table, &path, parsed)
            .map_err(|e| anyhow!("invalid environment variable `{name}`: {e}"))?;
        let dotted = path.iter().fold(String::new(), |mut acc, part| {
            if part.parse::<usize>().is_ok() {
                acc.push_str(&format!("[{part}]"));
            } else {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(part);
            }
            acc
        });
        applied.push((dotted, name));
    }
    Ok(applied)
}

/// Whether a key names a secret (`secret*`, `token*`, `password*`): its
/// value is never read as a number or boolean, never quoted in an error,
/// and `check-config` prints it redacted. Sink header values get the same
/// treatment (see [`is_secret_path`]): they often carry credentials.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password"]
        .iter()
        .any(|p| key.starts_with(p))
}

/// Whether a key path (`["apps", "0", "secret"]`) names a secret or a sink header.
fn is_secret_path(path: &[String]) -> bool {
    let named: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .filter(|p| p.parse::<usize>().is_err())
        .collect();
    match named.as_slice() {
        [.., "headers", _] => true,
        [.., last] => is_secret_key(last),
        [] => false,
    }
}

/// A secret variable is a string, whatever it looks like
/// (`839201747362` is a secret, not a number), except a TOML array of
/// strings (`["new","old"]` for `secrets`).
fn parse_env_secret(value: &str) -> toml::Value {
    if value.trim_start().starts_with('[')
        && let toml::Value::Array(items) = parse_env_value(value)
        && items.iter().all(toml::Value::is_str)
    {
        return toml::Value::Array(items);
    }
    toml::Value::String(value.to_owned())
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if let Some((next, _)) = rest.split_first()
        && next.parse::<usize>().is_ok()
        && !matches!(table.get(first.as_str()), Some(toml::Value::Array(_)))
    {
        return Err(format!(
            "`{first}` has no entry {next} in the config file (variables can only change entries the file defines)"
        ));
    }
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(entry, rest, value)
}

fn set_in_value(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => set_path(t, path, value),
        toml::Value::Array(items) => {
            let (first, rest) = path.split_first().ok_or("empty key")?;
            let index: usize = first
                .parse()
                .map_err(|_| format!("`{first}` must be an array index"))?;
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("there is no entry {index} in the file"))?;
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, rest, value)
            }
        }
        _ => Err("the key above it is not a table".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_alone_are_valid_and_refuse_every_app() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.server.max_body_bytes, 65_536);
        assert_eq!(c.server.timestamp_tolerance_secs, 300);
        assert_eq!(c.spool.dedup_window_hours, 24);
        assert_eq!(c.spool.retention_hours, 72);
        assert!(c.apps.is_empty());
        assert!(c.sinks.is_empty());
    }

    #[test]
    fn the_kubernetes_manifests_carry_valid_configs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        for name in ["kubernetes.yaml", "kubernetes-nats.yaml"] {
            let text = std::fs::read_to_string(root.join(name)).unwrap();
            // The ConfigMap's `hookrelay.toml: |` block, indented by four.
            let start = text.find("hookrelay.toml: |").expect("a config block") + 17;
            let block: String = text[start..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    ") || l.is_empty())
                .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
                .collect();
            // Secrets come from the pod's environment: stand them in.
            let block = block
                .replace("secret_env = \"ZEGO_CALLBACK_SECRET\"", "secret = \"z\"")
                .replace("secret_env = \"NETEASE_APP_SECRET\"", "secret = \"n\"")
                .replace("token_env = \"HOOKRELAY_ADMIN_TOKEN\"", "token = \"t\"")
                .replace(
                    "secret_env = \"HOOKS_WHSEC\"",
                    "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
                );
            load_str(&block, &[]).unwrap_or_else(|e| panic!("deploy/{name}: {e:#}"));
        }
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["example.toml", "container.toml", "default.toml"] {
            Config::load(Some(&root.join(name)), Vec::new())
                .unwrap_or_else(|e| panic!("config/{name}: {e:#}"));
        }
    }

    #[test]
    fn unknown_key_in_the_file_is_an_error_naming_it() {
        let err = load_str("[server]\nlisten_port = 1\n", &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("listen_port"), "{msg}");
        assert!(msg.contains("server"), "{msg}");
    }

    #[test]
    fn unknown_environment_variable_is_an_error_naming_it() {
        let err = load_str("", &[("HOOKRELAY_SERVER__LISTN", "1.2.3.4:1")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("HOOKRELAY_SERVER__LISTN"),
            "{err:#}"
        );
        let err = load_str(
            "[[sinks]]\nkind = \"file\"\npath = \"x\"\n",
            &[
                ("HOOKRELAY_SINKS__0__ZZZ", "1"),
                ("HOOKRELAY_SINKS__0__PATH", "y"),
            ],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("HOOKRELAY_SINKS__0__ZZZ"),
            "{err:#}"
        );
        let err = load_str("", &[("HOOKRELAY_APPS__0__SECRET", "s")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("HOOKRELAY_APPS__0__SECRET"),
            "{err:#}"
        );
        let err = load_str("", &[("HOOKRELAY_NOSUCHSECTION__KEY", "1")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("HOOKRELAY_NOSUCHSECTION__KEY"),
            "{err:#}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\ntimestamp_tolerance_secs = 5\n",
            &[
                ("HOOKRELAY_SERVER__LISTEN", "127.0.0.1:2"),
                ("HOOKRELAY_SERVER__TIMESTAMP_TOLERANCE_SECS", "7"),
                ("HOOKRELAY_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.server.timestamp_tolerance_secs, 7);
    }

    #[test]
    fn environment_can_set_a_secret_of_an_app_from_the_file() {
        let c = load_str(
            "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = \"file\"\n",
            &[("HOOKRELAY_APPS__0__SECRET", "from-env")],
        )
        .unwrap();
        assert_eq!(c.apps[0].secrets[0].expose(), "from-env");
    }

    #[test]
    fn an_app_needs_exactly_one_way_to_give_its_secret() {
        let err = load_str(
            "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = \"a\"\nsecrets = [\"b\"]\n",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("apps[0]"), "{err:#}");
        let err = load_str("[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("exactly one"), "{err:#}");
    }

    #[test]
    fn numeric_app_ids_and_secret_lists_are_accepted() {
        let c = load_str(
            "[[apps]]\nprovider = \"zego\"\napp_id = 123\nsecrets = [\"new\", \"old\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.apps[0].app_id, "123");
        assert_eq!(c.apps[0].secrets.len(), 2);
        assert!(c.find_app(Provider::Zego, Some("123")).is_some());
        assert!(c.find_app(Provider::Zego, None).is_some());
        assert!(c.find_app(Provider::Netease, None).is_none());
        assert!(!format!("{c:?}").contains("new"));
    }

    #[test]
    fn sinks_get_default_names_and_duplicates_are_refused() {
        let c = load_str(
            "[[sinks]]\nkind = \"log\"\n[[sinks]]\nkind = \"file\"\npath = \"x.jsonl\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.sinks[0].name(), "log-0");
        assert_eq!(c.sinks[1].name(), "file-1");
        let err = load_str(
            "[[sinks]]\nkind = \"log\"\nname = \"a\"\n[[sinks]]\nkind = \"log\"\nname = \"a\"\n",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("sinks[1].name"), "{err:#}");
    }

    #[test]
    fn allowed_ips_take_a_list_or_a_table_per_provider() {
        let c = load_str(
            "[server]\nallowed_ips = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n",
            &[],
        )
        .unwrap();
        let a = c.server.allowed_ips.unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(a.allows(Provider::Zego, ip("10.1.2.3")));
        assert!(a.allows(Provider::Netease, ip("::ffff:10.1.2.3")));
        assert!(a.allows(Provider::Zego, ip("2001:db8::1")));
        assert!(a.allows(Provider::Zego, ip("192.0.2.7")));
        assert!(!a.allows(Provider::Zego, ip("192.0.2.8")));
        assert!(!a.allows(Provider::Zego, ip("11.0.0.1")));
        let c = load_str(
            "[server]\nallowed_ips = { zego = [\"127.0.0.0/8\"] }\n",
            &[],
        )
        .unwrap();
        let a = c.server.allowed_ips.unwrap();
        assert!(a.allows(Provider::Zego, ip("127.0.0.1")));
        assert!(!a.allows(Provider::Zego, ip("10.0.0.1")));
        assert!(
            a.allows(Provider::Netease, ip("10.0.0.1")),
            "netease not restricted"
        );
        assert!(load_str("[server]\nallowed_ips = { zeg = [\"1.2.3.4\"] }\n", &[]).is_err());
        assert!(load_str("[server]\nallowed_ips = [\"10.0.0.0/33\"]\n", &[]).is_err());
        let all = load_str("[server]\nallowed_ips = [\"0.0.0.0/0\"]\n", &[]).unwrap();
        assert!(
            all.server
                .allowed_ips
                .unwrap()
                .allows(Provider::Zego, ip("8.8.8.8"))
        );
    }

    #[test]
    fn secret_variables_stay_strings_and_errors_about_them_never_quote_them() {
        let file = "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecret = \"x\"\n";
        let c = load_str(file, &[("HOOKRELAY_APPS__0__SECRET", "839201747362")]).unwrap();
        assert_eq!(c.apps[0].secrets[0].expose(), "839201747362");
        let c = load_str(file, &[("HOOKRELAY_APPS__0__SECRET", "true")]).unwrap();
        assert_eq!(c.apps[0].secrets[0].expose(), "true");
        let file = "[[apps]]\nprovider = \"zego\"\napp_id = \"1\"\nsecrets = [\"x\"]\n";
        let c = load_str(file, &[("HOOKRELAY_APPS__0__SECRETS", "[\"n\", \"o\"]")]).unwrap();
        assert_eq!(c.apps[0].secrets[1].expose(), "o");
        let err = load_str(file, &[("HOOKRELAY_APPS__0__SECRETS", "[1, 2]")]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("apps[0].secrets"), "{msg}");
        assert!(!msg.contains("[1, 2]"), "{msg}");
        let err = load_str(
            "[[sinks]]\nkind = \"http\"\nurl = \"https://h/\"\nsecret = 4242\n",
            &[],
        )
        .unwrap_err();
        assert!(!format!("{err:#}").contains("4242"), "{err:#}");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let err = load_str("[admin]\nlisten = \"0.0.0.0:9090\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("admin.token"), "{err:#}");
        let ok = load_str("[admin]\nlisten = \"127.0.0.1:9090\"\n", &[]).unwrap();
        assert!(ok.admin.token.is_none());
        let ok = load_str(
            "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t0ken-value\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(ok.admin.token.unwrap().expose(), "t0ken-value");
        let err = load_str(
            "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"a\"\ntoken_env = \"B\"\n",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not both"), "{err:#}");
        let err = load_str(
            "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_env = \"HOOKRELAY_TEST_UNSET_ADMIN_TOKEN\"\n",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("is not set"), "{err:#}");
    }

    #[test]
    fn plain_http_sinks_are_for_loopback_unless_allowed() {
        let sink = |url: &str, extra: &str| {
            load_str(
                &format!(
                    "[[sinks]]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n{extra}"
                ),
                &[],
            )
        };
        for ok in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://LOCALHOST:9/",
            "https://example.com/",
        ] {
            sink(ok, "").unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for bad in [
            "http://example.com/",
            "http://[::2]/",
            "http://localhost.example/",
        ] {
            let err = sink(bad, "").unwrap_err();
            assert!(
                format!("{err:#}").contains("`sinks[0].url`"),
                "{bad}: {err:#}"
            );
            sink(bad, "allow_plain_http = true\n").unwrap();
        }
        let err = load_str(
            "[[sinks]]\nkind = \"http\"\nurl = \"https://h/\"\nsecret = \"whsec_\"\n",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("`sinks[0].secret`"), "{err:#}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load_str("[spool]\nretention_hours = \"soon\"\n", &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("spool.retention_hours"),
            "{err:#}"
        );
        let err = load_str("[[sinks]]\nkind = \"carrier-pigeon\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("sinks[0]"), "{err:#}");
    }
}
