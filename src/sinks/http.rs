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

use super::Outcome;
use crate::config::HttpSinkConfig;
use crate::secret::SecretString;
use crate::spool::StoredEvent;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

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
    key: Option<Vec<u8>>,
    headers: HeaderMap,
    concurrency: Arc<Semaphore>,
}

/// Decodes a `whsec_...` secret into its HMAC key.
pub fn signing_key(secret: &SecretString) -> Result<Vec<u8>, String> {
    let text = secret.expose();
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_` (Standard Webhooks)")?;
    let key = BASE64
        .decode(b64)
        .map_err(|_| "the part after `whsec_` must be base64".to_owned())?;
    if key.is_empty() {
        return Err("the key after `whsec_` is empty".to_owned());
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
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
    pub fn new(name: &str, config: &HttpSinkConfig) -> anyhow::Result<HttpSink> {
        let key = match &config.secret {
            Some(s) => {
                Some(signing_key(s).map_err(|e| anyhow::anyhow!("sink `{name}` secret: {e}"))?)
            }
            None => None,
        };
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
            .pool_max_idle_per_host(config.concurrency)
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
                concurrency: Arc::new(Semaphore::new(config.concurrency.max(1))),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Sends `events` with bounded concurrency, keeping the events of one
    /// resource in order: they go one after another, and once one of them
    /// fails the rest of that resource wait for the next try.
    pub async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
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
        let key = signing_key(&secret).unwrap();
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
        assert!(signing_key(&SecretString::new("plain")).is_err());
        assert!(signing_key(&SecretString::new("whsec_***")).is_err());
        assert!(signing_key(&SecretString::new("whsec_")).is_err());
    }
}
