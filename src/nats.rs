//! Connecting to NATS: the options shared by the `[nats]` store and the
//! `nats` sink, and the one function that turns them into a client.
//!
//! The client is created with `retry_on_initial_connect`, so a hookrelay
//! started before NATS comes up runs (answering 503 and `/readyz` 503) and
//! connects as soon as NATS is there, instead of exiting; after that the
//! client reconnects forever by itself.

use crate::secret::SecretString;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Declares a config struct holding the NATS connection keys (`servers`,
/// `creds_file`, `token`, `token_env`, `user`, `password`, `password_env`,
/// `tls_ca_file`, `tls_cert_file`, `tls_key_file`) beside its own, with
/// `connection()` to get them as a [`NatsConnection`]. (serde's `flatten`
/// cannot be combined with `deny_unknown_fields`, and a typo in a
/// connection key must stop start-up like any other.)
#[macro_export]
macro_rules! nats_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Server URLs, e.g. `["nats://127.0.0.1:4222"]` (or one string, commas between).
            #[serde(default, deserialize_with = "crate::nats::one_or_many")]
            pub servers: Vec<String>,
            /// A `.creds` file (JWT + NKey seed).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub creds_file: Option<std::path::PathBuf>,
            /// A token, or the variable holding it.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub token: Option<$crate::secret::SecretString>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub token_env: Option<String>,
            /// User and password (or the variable holding the password).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub user: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub password: Option<$crate::secret::SecretString>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub password_env: Option<String>,
            /// TLS: the CA of the servers' certificates; a client certificate
            /// and key for mutual TLS.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tls_ca_file: Option<std::path::PathBuf>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tls_cert_file: Option<std::path::PathBuf>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tls_key_file: Option<std::path::PathBuf>,
        }

        impl $name {
            /// The connection keys.
            pub fn connection(&self) -> $crate::nats::NatsConnection {
                $crate::nats::NatsConnection {
                    servers: self.servers.clone(),
                    creds_file: self.creds_file.clone(),
                    token: self.token.clone(),
                    token_env: self.token_env.clone(),
                    user: self.user.clone(),
                    password: self.password.clone(),
                    password_env: self.password_env.clone(),
                    tls_ca_file: self.tls_ca_file.clone(),
                    tls_cert_file: self.tls_cert_file.clone(),
                    tls_key_file: self.tls_key_file.clone(),
                }
            }
        }
    };
}

/// How to reach and authenticate to NATS. Every credential is optional.
#[derive(Debug, Clone, Default)]
pub struct NatsConnection {
    pub servers: Vec<String>,
    pub creds_file: Option<PathBuf>,
    pub token: Option<SecretString>,
    pub token_env: Option<String>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub password_env: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

#[doc(hidden)]
pub fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        // "nats://a:4222,nats://b:4222" is one string in an env variable.
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

impl NatsConnection {
    /// Checks the options; `at` names the table in messages (`nats`, `sinks[2]`).
    pub fn validate(&self, at: &str) -> anyhow::Result<()> {
        if self.servers.is_empty() {
            bail!("invalid config at `{at}.servers`: give at least one NATS server URL");
        }
        if self.token.is_some() && self.token_env.is_some() {
            bail!("invalid config at `{at}.token`: give token or token_env, not both");
        }
        if self.password.is_some() && self.password_env.is_some() {
            bail!("invalid config at `{at}.password`: give password or password_env, not both");
        }
        if (self.password.is_some() || self.password_env.is_some()) && self.user.is_none() {
            bail!("invalid config at `{at}.user`: a password needs a user");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            bail!(
                "invalid config at `{at}.tls_cert_file`: give tls_cert_file and tls_key_file together"
            );
        }
        Ok(())
    }

    /// A client that connects in the background and reconnects forever.
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats: disconnected"),
                    other => tracing::debug!(event = %other, "nats"),
                }
            });
        let token = match (&self.token, &self.token_env) {
            (Some(t), _) => Some(t.expose().to_owned()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .with_context(|| format!("environment variable `{var}` is not set"))?,
            ),
            (None, None) => None,
        };
        if let Some(token) = token {
            options = options.token(token);
        }
        let password = match (&self.password, &self.password_env) {
            (Some(p), _) => Some(p.expose().to_owned()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .with_context(|| format!("environment variable `{var}` is not set"))?,
            ),
            (None, None) => None,
        };
        if let (Some(user), Some(password)) = (&self.user, password) {
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(creds) = &self.creds_file {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("cannot read the NATS creds file {}", creds.display()))?;
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
            .connect(self.servers.clone())
            .await
            .context("cannot set up the NATS connection")
    }
}

/// A subject token from arbitrary text: `.`, `*`, `>` and whitespace (which
/// NATS gives meaning to) become `_`, and an empty text becomes `_`.
pub fn subject_token(text: &str) -> String {
    let token: String = text
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    if token.is_empty() { "_".into() } else { token }
}

/// A name JetStream accepts for a consumer or a KV key part: letters,
/// digits, `-` and `_` kept, anything else hex-escaped as `=XX`... kept
/// readable for ordinary sink names and unique for any.
pub fn name_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_carry_no_wildcards_separators_or_spaces() {
        assert_eq!(subject_token("stream_create"), "stream_create");
        assert_eq!(subject_token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(subject_token(""), "_");
    }

    #[test]
    fn name_tokens_are_safe_and_distinct() {
        assert_eq!(name_token("http-0"), "http-0");
        assert_eq!(name_token("a.b"), "a=2Eb");
        assert_ne!(name_token("a.b"), name_token("a_b"));
    }

    crate::nats_config! {
        pub struct Probe {
            pub other: Option<u32>,
        }
    }

    #[test]
    fn servers_may_be_one_comma_separated_string_and_unknown_keys_are_refused() {
        let c: Probe = toml::from_str("servers = \"nats://a:4222, nats://b:4222\"").unwrap();
        assert_eq!(c.servers, ["nats://a:4222", "nats://b:4222"]);
        let c: Probe = toml::from_str("servers = [\"nats://a:4222\"]\nother = 1").unwrap();
        assert_eq!(c.connection().servers, ["nats://a:4222"]);
        assert!(c.connection().validate("nats").is_ok());
        assert!(toml::from_str::<Probe>("servers = []\nserverz = 1").is_err());
        let none = NatsConnection::default();
        assert!(format!("{:#}", none.validate("nats").unwrap_err()).contains("nats.servers"));
    }
}
