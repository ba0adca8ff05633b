//! `kind = "http"`: POSTs each envelope as JSON to a URL, signed per the
//! Standard Webhooks specification.
//!
//! Headers: `webhook-id` (the envelope id, stable across retries, so
//! receivers can drop repeats), `webhook-timestamp` (Unix seconds of this
//! attempt) and `webhook-signature` = `v1,` + base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")), key = the base64-decoded part of the secret
//! after `whsec_`.
//!
//! Every response is classified in [`classify`], once: a request that was
//! sent is not a request that was delivered.

use super::{Deliver, Outcome, RetryPolicy, SinkKind};
use crate::secret::SecretString;
use crate::spool::StoredEvent;
use anyhow::{anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// `kind = "http"`: POST each envelope, signed per Standard Webhooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Defaults to `http-{index}`.
    pub name: Option<String>,
    /// Where to POST (http or https).
    pub url: String,
    /// `whsec_<base64>`; signs every request. Or give `secret_env`. Read
    /// into [`HttpSinkConfig::key`] by `validate`, then cleared.
    #[serde(skip_serializing)]
    pub secret: Option<SecretString>,
    /// Name of an environment variable holding the `whsec_` secret; read
    /// into [`HttpSinkConfig::key`] by `validate`, then cleared.
    #[serde(skip_serializing)]
    pub secret_env: Option<String>,
    /// The key every request is signed with, decoded once from `secret` or
    /// `secret_env` by `validate`. Written back (by `check-config`) as
    /// `secret = "[redacted]"`.
    #[serde(
        skip_deserializing,
        rename(serialize = "secret"),
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<SigningKey>,
    /// Per-request timeout in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before an event moves to dead letters. Default 12.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests in flight at once. Default 8. An older name of
    /// `max_in_flight`, still accepted; `max_in_flight` wins.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests in flight at once (default: `concurrency`, 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Allow an `http://` URL to a host that is not loopback (events and
    /// signatures then cross the network in clear text). Default false.
    #[serde(default)]
    pub allow_plain_http: bool,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_attempts() -> u32 {
    12
}
fn default_concurrency() -> usize {
    8
}

impl SinkKind for HttpSinkConfig {
    const KIND: &'static str = "http";
    type Sink = HttpSink;

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn name_mut(&mut self) -> &mut Option<String> {
        &mut self.name
    }

    /// Checks every key and reads the secret (from `secret` or the variable
    /// `secret_env` names) into [`HttpSinkConfig::key`].
    fn validate(&mut self, i: usize) -> anyhow::Result<()> {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" => {
                if !self.allow_plain_http && !is_loopback(&u) {
                    bail!(
                        "invalid config at `sinks[{i}].url`: plain http:// is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); use https:// or set `allow_plain_http = true`"
                    );
                }
            }
            Ok(_) => bail!("invalid config at `sinks[{i}].url`: must be an http or https URL"),
            Err(e) => bail!("invalid config at `sinks[{i}].url`: {e}"),
        }
        let secret = match (self.secret.take(), self.secret_env.take()) {
            (Some(secret), None) => secret,
            (None, Some(var)) => std::env::var(&var).map(SecretString::new).map_err(|_| {
                anyhow!("invalid config at `sinks[{i}].secret_env`: environment variable `{var}` is not set")
            })?,
            _ => bail!(
                "invalid config at `sinks[{i}]`: give exactly one of `secret` or `secret_env` (every request is signed)"
            ),
        };
        let key = SigningKey::parse(&secret)
            .map_err(|e| anyhow!("invalid config at `sinks[{i}].secret`: {e}"))?;
        self.key = Some(key);
        if self.timeout_ms == 0 {
            bail!("invalid config at `sinks[{i}].timeout_ms`: must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("invalid config at `sinks[{i}].max_attempts`: must be at least 1");
        }
        if self.concurrency == 0 {
            bail!("invalid config at `sinks[{i}].concurrency`: must be at least 1");
        }
        if self.max_in_flight == Some(0) {
            bail!("invalid config at `sinks[{i}].max_in_flight`: must be at least 1");
        }
        for (k, v) in &self.headers {
            if HeaderName::from_bytes(k.as_bytes()).is_err() || HeaderValue::from_str(v).is_err() {
                bail!("invalid config at `sinks[{i}].headers.{k}`: not a valid HTTP header");
            }
        }
        Ok(())
    }

    fn build(&self, name: &str) -> anyhow::Result<HttpSink> {
        HttpSink::new(name, self)
    }
}

impl HttpSinkConfig {
    /// Requests in flight at once: `max_in_flight`, else `concurrency`.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(self.concurrency).max(1)
    }
}

/// Whether `url` points at this machine: 127.0.0.0/8, `::1` or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed (`[::1]`); the url crate has already
    // normalised IPv4 forms such as `127.1` to dotted quads.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost."),
    }
}

/// A Standard Webhooks signing key: the decoded bytes of a `whsec_<base64>`
/// secret. `Debug` and `Serialize` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Box<[u8]>);

impl SigningKey {
    /// Decodes a `whsec_...` secret: the one place its prefix and base64 are read.
    pub fn parse(secret: &SecretString) -> Result<SigningKey, &'static str> {
        let b64 = secret
            .expose()
            .strip_prefix("whsec_")
            .ok_or("must start with `whsec_` (Standard Webhooks)")?;
        let key = BASE64
            .decode(b64)
            .map_err(|_| "the part after `whsec_` must be base64")?;
        if key.is_empty() {
            return Err("the key after `whsec_` is empty");
        }
        Ok(SigningKey(key.into_boxed_slice()))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serializes as `[redacted]`: `check-config` prints configs, never keys.
impl Serialize for SigningKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

pub struct HttpSink {
    name: String,
    max_attempts: u32,
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `scheme://host:port` of `url`: the only part of it that reaches logs
    /// and dead letters (paths and queries often carry tokens).
    origin: String,
    key: Option<SigningKey>,
    headers: HeaderMap,
    concurrency: Arc<Semaphore>,
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &SigningKey, id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The one place where a response becomes an outcome: 2xx delivered; 408,
/// 429 and 5xx except 501 retried (honouring `Retry-After`); anything else
/// (410, other 4xx, 501, redirects) rejected to dead letters.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        Outcome::Delivered
    } else if code == 408 || code == 429 || (status.is_server_error() && code != 501) {
        Outcome::Retry {
            reason: format!("HTTP {code}"),
            status: Some(code),
            after: retry_after,
        }
    } else {
        Outcome::Reject {
            reason: format!("HTTP {code}"),
            status: Some(code),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date; capped at an hour so a
/// downstream cannot park a sink for days.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
            .ok()?;
        let secs = (at - time::OffsetDateTime::now_utc())
            .whole_seconds()
            .max(0) as u64;
        Duration::from_secs(secs)
    };
    Some(d.min(Duration::from_secs(3600)))
}

impl HttpSink {
    /// A sink for a validated `config` (its key already decoded).
    pub fn new(name: &str, config: &HttpSinkConfig) -> anyhow::Result<HttpSink> {
        let key = config.key.clone();
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("sink `{name}`: invalid url: {e}"))?;
        let origin = origin(&url);
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name_h = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| anyhow::anyhow!("sink `{name}`: invalid header name `{k}`"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| anyhow::anyhow!("sink `{name}`: invalid value for header `{k}`"))?;
            headers.insert(name_h, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .pool_max_idle_per_host(config.in_flight())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpSink {
            name: name.to_owned(),
            max_attempts: config.max_attempts,
            inner: Arc::new(Inner {
                client,
                url,
                origin,
                key,
                headers,
                concurrency: Arc::new(Semaphore::new(config.in_flight())),
            }),
        })
    }
}

impl Deliver for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// 1 s doubling to 10 min: a few seconds' outage is probed again within
    /// seconds; a long one costs the downstream a request per 10 min.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            max_attempts: Some(self.max_attempts),
        }
    }

    /// Sends `events` with bounded concurrency, keeping the events of one
    /// resource in order: they go one after another, and once one of them
    /// fails the rest of that resource wait for the next try.
    async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_resource: HashMap<&str, usize> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            match e.resource.as_deref() {
                Some(r) => {
                    let g = *by_resource.entry(r).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[g].push(i);
                }
                None => groups.push(vec![i]),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for group in groups {
            let inner = Arc::clone(&self.inner);
            let events = Arc::clone(&events);
            tasks.spawn(async move {
                let mut out = Vec::with_capacity(group.len());
                let mut blocked = false;
                for i in group {
                    if blocked {
                        out.push((i, Outcome::Deferred));
                        continue;
                    }
                    let outcome = {
                        let _permit = inner.concurrency.acquire().await;
                        inner.send(&events[i]).await
                    };
                    blocked = matches!(outcome, Outcome::Retry { .. });
                    out.push((i, outcome));
                }
                out
            });
        }
        let mut outcomes = vec![Outcome::Deferred; events.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok(results) = joined {
                for (i, o) in results {
                    outcomes[i] = o;
                }
            }
        }
        outcomes
    }
}

impl Inner {
    async fn send(&self, event: &StoredEvent) -> Outcome {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = &self.key {
            request = request.header(
                "webhook-signature",
                signature(key, &event.id, timestamp, event.envelope.as_bytes()),
            );
        }
        match request.body(event.envelope.clone()).send().await {
            Ok(response) => {
                let after = retry_after(response.headers());
                let outcome = classify(response.status(), after);
                // Drain the body so the connection goes back to the pool.
                let _ = response.bytes().await;
                outcome
            }
            Err(e) => Outcome::Retry {
                reason: self.describe(e),
                status: None,
                after: None,
            },
        }
    }
}

impl Inner {
    /// A failed request in words, naming the target by its origin only:
    /// reqwest's `Display` includes the whole URL, so it is dropped first.
    fn describe(&self, e: reqwest::Error) -> String {
        let origin = &self.origin;
        if e.is_timeout() {
            return format!("timed out ({origin})");
        }
        if e.is_connect() {
            return format!("connection to {origin} failed");
        }
        let e = e.without_url();
        let mut text = format!("request to {origin} failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        // Belt and braces: no cause may carry the full URL either.
        text.replace(self.url.as_str(), origin)
    }
}

/// `scheme://host:port` (the port explicit even when it is the default).
pub fn origin(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified_in_one_place() {
        let c = |code: u16| classify(StatusCode::from_u16(code).unwrap(), None);
        for ok in [200, 201, 204, 299] {
            assert_eq!(c(ok), Outcome::Delivered, "{ok}");
        }
        for retry in [408, 429, 500, 502, 503, 504, 599] {
            assert!(matches!(c(retry), Outcome::Retry { .. }), "{retry}");
        }
        for reject in [301, 400, 401, 403, 404, 410, 422, 501] {
            assert!(matches!(c(reject), Outcome::Reject { .. }), "{reject}");
        }
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        h.insert("retry-after", HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn signatures_follow_standard_webhooks_and_verify_with_its_library() {
        let secret = SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let key = SigningKey::parse(&secret).unwrap();
        let body = br#"{"id":"msg_p5jXN8AQM9LWM0D4loKWxJek","kind":"x"}"#;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body);
        assert!(sig.starts_with("v1,"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", sig.parse().unwrap());
        let wh = standardwebhooks::Webhook::new(secret.expose()).unwrap();
        wh.verify(body, &headers)
            .expect("a Standard Webhooks library verifies it");
    }

    #[test]
    fn the_origin_keeps_scheme_host_and_port_only() {
        let o = |u: &str| origin(&reqwest::Url::parse(u).unwrap());
        assert_eq!(
            o("https://user:pw@hooks.example/a/b?token=x#f"),
            "https://hooks.example:443"
        );
        assert_eq!(o("http://127.0.0.1:8080/x?y=1"), "http://127.0.0.1:8080");
        assert_eq!(o("http://[::1]:9/x"), "http://[::1]:9");
    }

    #[test]
    fn secrets_without_the_whsec_prefix_or_base64_are_refused() {
        let parse = |s: &str| SigningKey::parse(&SecretString::new(s));
        assert!(parse("plain").is_err());
        assert!(parse("whsec_***").is_err());
        assert!(parse("whsec_").is_err());
        let key = parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(
            toml::Value::try_from(&key).unwrap().as_str(),
            Some("[redacted]")
        );
    }

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config(extra: &str) -> HttpSinkConfig {
        toml::from_str(&format!("url = \"https://h.example/in\"\n{extra}")).unwrap()
    }

    fn refusal(mut c: HttpSinkConfig) -> String {
        c.validate(1).unwrap_err().to_string()
    }

    #[test]
    fn max_in_flight_wins_over_its_older_name_concurrency() {
        let with = |extra: &str| config(&format!("secret = \"{WHSEC}\"\n{extra}"));
        assert_eq!(with("").in_flight(), 8);
        assert_eq!(with("concurrency = 3").in_flight(), 3);
        assert_eq!(with("max_in_flight = 2").in_flight(), 2);
        assert_eq!(with("concurrency = 3\nmax_in_flight = 5").in_flight(), 5);
    }

    #[test]
    fn validation_decodes_the_secret_once_and_names_each_bad_key() {
        let mut c = config(&format!("secret = \"{WHSEC}\""));
        c.validate(1).unwrap();
        assert!(c.secret.is_none() && c.secret_env.is_none());
        assert_eq!(
            c.key,
            Some(SigningKey::parse(&SecretString::new(WHSEC)).unwrap())
        );
        let printed = toml::Value::try_from(&c).unwrap();
        assert_eq!(printed["secret"].as_str(), Some("[redacted]"));
        assert!(printed.get("secret_env").is_none());

        let with = |extra: &str| config(&format!("secret = \"{WHSEC}\"\n{extra}"));
        let mut c = with("");
        c.url = "ftp://h/".to_owned();
        assert_eq!(
            refusal(c),
            "invalid config at `sinks[1].url`: must be an http or https URL"
        );
        let mut c = with("");
        c.url = "http://hooks.example/".to_owned();
        assert!(refusal(c).starts_with("invalid config at `sinks[1].url`: plain http://"));
        let mut c = with("allow_plain_http = true");
        c.url = "http://hooks.example/".to_owned();
        c.validate(1).unwrap();
        assert_eq!(
            refusal(config("")),
            "invalid config at `sinks[1]`: give exactly one of `secret` or `secret_env` (every request is signed)"
        );
        assert_eq!(
            refusal(config(&format!("secret = \"{WHSEC}\"\nsecret_env = \"X\""))),
            "invalid config at `sinks[1]`: give exactly one of `secret` or `secret_env` (every request is signed)"
        );
        assert_eq!(
            refusal(config("secret_env = \"HOOKRELAY_TEST_SURELY_UNSET_9F2C\"")),
            "invalid config at `sinks[1].secret_env`: environment variable `HOOKRELAY_TEST_SURELY_UNSET_9F2C` is not set"
        );
        assert_eq!(
            refusal(config("secret = \"whsec_\"")),
            "invalid config at `sinks[1].secret`: the key after `whsec_` is empty"
        );
        assert_eq!(
            refusal(config("secret = \"plain\"")),
            "invalid config at `sinks[1].secret`: must start with `whsec_` (Standard Webhooks)"
        );
        for key in ["timeout_ms", "max_attempts", "concurrency", "max_in_flight"] {
            assert_eq!(
                refusal(with(&format!("{key} = 0"))),
                format!("invalid config at `sinks[1].{key}`: must be at least 1")
            );
        }
        assert_eq!(
            refusal(with("headers = { \"a b\" = \"x\" }")),
            "invalid config at `sinks[1].headers.a b`: not a valid HTTP header"
        );
    }
}
