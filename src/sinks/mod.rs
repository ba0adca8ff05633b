//! Destinations. Each sink receives envelopes read back from the spool, in
//! spool order, and answers one [`Outcome`] per event; the delivery worker
//! (in [`crate::delivery`]) owns retries, backoff and progress.
//!
//! Each sink kind is one module that owns everything about it: its
//! `[[sinks]]` config type and `kind` string ([`SinkKind`]), the validation
//! of that config (error messages name keys such as `sinks[0].url`), the
//! construction of the sink, its retry policy and its delivery ([`Deliver`]).
//! This module only dispatches: adding a kind is its module plus its line in
//! the `sink_kinds!` list below. [`crate::config`] imports from here, never
//! the other way round.

pub mod file;
pub mod http;
pub mod log;
pub mod nats;
pub mod routing;

use crate::spool::StoredEvent;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use routing::{Route, SinkCommon};

/// A kind of sink, implemented by its `[[sinks]]` config type.
pub trait SinkKind: Sized + for<'de> Deserialize<'de> + Serialize {
    /// The `kind = "…"` that selects this config. Written only here: it is
    /// also the prefix of default names (`{KIND}-{index}`) and the kind the
    /// spool records for the sink.
    const KIND: &'static str;
    /// The sink this config builds.
    type Sink: Deliver;

    /// `name` as written; `None` until [`validate`] names it `{KIND}-{index}`.
    fn name(&self) -> Option<&str>;
    fn name_mut(&mut self) -> &mut Option<String>;
    /// Checks the kind's own keys (`index` is the entry's position in
    /// `[[sinks]]`, for messages such as ``invalid config at `sinks[0].url`: …``)
    /// and resolves what must be read once, such as secrets.
    fn validate(&mut self, index: usize) -> anyhow::Result<()>;
    /// A sink ready to deliver, from a validated config.
    fn build(&self, name: &str) -> anyhow::Result<Self::Sink>;
}

/// A sink ready to deliver.
pub trait Deliver: Send {
    fn name(&self) -> &str;
    /// How the delivery worker retries this sink.
    fn retry_policy(&self) -> RetryPolicy;
    /// Delivers `events` (in spool order); one outcome per event, same order.
    fn deliver(&mut self, events: Arc<[StoredEvent]>) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// What became of one event at one sink. Every failure is classified here,
/// once, as worth retrying or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A transient failure: try again later (no sooner than `after`, if the sink said).
    Retry {
        reason: String,
        status: Option<u16>,
        after: Option<Duration>,
    },
    /// A permanent failure: straight to dead letters.
    Reject {
        reason: String,
        status: Option<u16>,
    },
    /// Not attempted (an earlier event of the same resource is pending):
    /// offered again later without counting an attempt.
    Deferred,
}

/// How a sink wants to be retried when it fails.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff step; doubles per consecutive failure.
    pub base: Duration,
    /// Largest backoff step.
    pub cap: Duration,
    /// Attempts before an event goes to dead letters; `None` = retry forever
    /// (local sinks, whose failures an operator fixes, lose nothing by waiting).
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// For local sinks: failures are a full disk or a bad path an operator
    /// fixes; probe often so they catch up soon after, and never give up.
    pub const LOCAL: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
        max_attempts: None,
    };
}

/// Names every unnamed sink `{kind}-{index}`, refuses empty and repeated
/// names, then validates each entry's own keys.
pub fn validate(sinks: &mut [SinkConfig]) -> anyhow::Result<()> {
    let mut names = HashSet::new();
    for (i, sink) in sinks.iter_mut().enumerate() {
        let kind = sink.kind();
        let name = sink.name_mut().get_or_insert_with(|| format!("{kind}-{i}"));
        if name.is_empty() {
            anyhow::bail!("invalid config at `sinks[{i}].name`: must not be empty");
        }
        if !names.insert(name.clone()) {
            anyhow::bail!("invalid config at `sinks[{i}].name`: sink name `{name}` is used twice");
        }
        sink.validate(i)?;
    }
    Ok(())
}

/// Generates, from the list of `Variant(config type)`, the two enums and
/// every `match` over them.
macro_rules! sink_kinds {
    ($($variant:ident($config:ty)),* $(,)?) => {
        /// One `[[sinks]]` entry: a table whose `kind` picks the kind's config,
        /// whose `match` and `max_per_second` every
        /// kind takes, and whose other keys are that kind's config.
        /// Serializes the same way.
        #[derive(Debug, Clone)]
        pub struct SinkConfig {
            /// `match` and `max_per_second`.
            pub common: SinkCommon,
            /// The kind's own keys.
            pub own: KindConfig,
        }

        /// The config of one kind of sink.
        #[derive(Debug, Clone)]
        pub enum KindConfig {
            $($variant($config),)*
        }

        /// A configured sink, ready to deliver.
        pub enum Sink {
            $($variant(<$config as SinkKind>::Sink),)*
        }

        /// Every `kind`, in the order of the list.
        const KINDS: &[&str] = &[$(<$config as SinkKind>::KIND),*];

        impl SinkConfig {
            pub fn kind(&self) -> &'static str {
                match &self.own {
                    $(KindConfig::$variant(_) => <$config as SinkKind>::KIND,)*
                }
            }

            /// The sink's name (after validation, never empty).
            pub fn name(&self) -> &str {
                match &self.own {
                    $(KindConfig::$variant(c) => c.name().unwrap_or_default(),)*
                }
            }

            fn name_mut(&mut self) -> &mut Option<String> {
                match &mut self.own {
                    $(KindConfig::$variant(c) => c.name_mut(),)*
                }
            }

            fn validate(&mut self, index: usize) -> anyhow::Result<()> {
                match &mut self.own {
                    $(KindConfig::$variant(c) => c.validate(index)?,)*
                }
                self.common.validate(index)
            }

            /// The config of `kind` from the entry's other keys: first the
            /// keys every kind takes, then the kind's own (which refuse any
            /// key they do not know).
            fn from_table(kind: &str, mut table: toml::Table) -> Result<SinkConfig, toml::de::Error> {
                let common = SinkCommon::take_from(&mut table)?;
                $(if kind == <$config as SinkKind>::KIND {
                    return <$config>::deserialize(toml::Value::Table(table))
                        .map(|c| SinkConfig { common, own: KindConfig::$variant(c) });
                })*
                Err(de::Error::unknown_variant(kind, KINDS))
            }
        }

        impl Serialize for SinkConfig {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match &self.own {
                    $(KindConfig::$variant(c) => Tagged { kind: self.kind(), config: c, common: &self.common }.serialize(serializer),)*
                }
            }
        }

        impl Sink {
            pub fn build(config: &SinkConfig) -> anyhow::Result<Sink> {
                Ok(match &config.own {
                    $(KindConfig::$variant(c) => Sink::$variant(c.build(config.name())?),)*
                })
            }

            pub fn name(&self) -> &str {
                match self {
                    $(Sink::$variant(s) => s.name(),)*
                }
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $(Sink::$variant(_) => <$config as SinkKind>::KIND,)*
                }
            }

            pub fn retry_policy(&self) -> RetryPolicy {
                match self {
                    $(Sink::$variant(s) => s.retry_policy(),)*
                }
            }

            /// Delivers `events` (in spool order); one outcome per event, same order.
            pub async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
                match self {
                    $(Sink::$variant(s) => s.deliver(events).await,)*
                }
            }
        }
    };
}

// The one list of sink kinds, `Variant(config type)`: the `SinkConfig` and
// `Sink` enums, the accepted `kind` names, deserialization, validation,
// construction and delivery are all generated from it.
sink_kinds! {
    Log(log::LogSinkConfig),
    File(file::FileSinkConfig),
    Http(http::HttpSinkConfig),
    Nats(nats::NatsSinkConfig),
}

/// A config serialized with its `kind` first, as `[[sinks]]` writes it,
/// and the keys every kind takes last.
#[derive(Serialize)]
struct Tagged<'a, C> {
    kind: &'static str,
    #[serde(flatten)]
    config: &'a C,
    #[serde(flatten)]
    common: &'a SinkCommon,
}

/// Reads a `[[sinks]]` table as serde's internally tagged enums do (same
/// messages, and a bad `kind` is reported at `sinks[i].kind`), but matching
/// `kind` against each [`SinkKind::KIND`] instead of a literal per variant.
impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SinkConfig, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = SinkConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("internally tagged enum SinkConfig")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SinkConfig, A::Error> {
        let mut kind = None;
        let mut rest = toml::Table::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "kind" {
                if kind.is_some() {
                    return Err(de::Error::duplicate_field("kind"));
                }
                kind = Some(map.next_value_seed(KindName)?);
            } else {
                let value: toml::Value = map.next_value()?;
                rest.insert(key, value);
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        SinkConfig::from_table(kind, rest).map_err(|e| de::Error::custom(e.message()))
    }
}

/// The value of `kind`: one of [`KINDS`].
struct KindName;

impl<'de> DeserializeSeed<'de> for KindName {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<&'static str, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KindName {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<&'static str, E> {
        KINDS
            .iter()
            .find(|k| **k == value)
            .copied()
            .ok_or_else(|| E::unknown_variant(value, KINDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Result<Vec<SinkConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            sinks: Vec<SinkConfig>,
        }
        let table: toml::Table = text.parse().unwrap();
        serde_path_to_error::deserialize::<_, Doc>(toml::Value::Table(table))
            .map(|d| d.sinks)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))
    }

    #[test]
    fn kind_picks_the_config_and_is_written_back_first() {
        let mut sinks = entries(
            "[[sinks]]\nkind = \"log\"\n[[sinks]]\nkind = \"file\"\npath = \"x\"\nname = \"f\"\n",
        )
        .unwrap();
        validate(&mut sinks).unwrap();
        assert_eq!(
            sinks.iter().map(SinkConfig::kind).collect::<Vec<_>>(),
            [log::LogSinkConfig::KIND, file::FileSinkConfig::KIND]
        );
        assert_eq!(sinks[0].name(), "log-0");
        assert_eq!(sinks[1].name(), "f");
        let unnamed = SinkConfig {
            common: SinkCommon::default(),
            own: KindConfig::Log(log::LogSinkConfig { name: None }),
        };
        assert_eq!(
            toml::to_string(&unnamed).unwrap(),
            "kind = \"log\"\n",
            "an unset option is left out, as before"
        );
        let back = toml::Value::try_from(&sinks[1]).unwrap();
        assert_eq!(back["kind"].as_str(), Some("file"));
        assert_eq!(back["name"].as_str(), Some("f"));
        assert_eq!(back["path"].as_str(), Some("x"));
    }

    #[test]
    fn a_bad_kind_is_reported_as_serde_reports_a_tagged_enum() {
        assert_eq!(
            entries("[[sinks]]\nkind = \"carrier-pigeon\"\n").unwrap_err(),
            "sinks[0].kind: unknown variant `carrier-pigeon`, expected one of `log`, `file`, `http`, `nats`"
        );
        assert_eq!(
            entries("[[sinks]]\nkind = 5\n").unwrap_err(),
            "sinks[0].kind: invalid type: integer `5`, expected variant identifier"
        );
        assert_eq!(
            entries("[[sinks]]\nname = \"a\"\n").unwrap_err(),
            "sinks[0]: missing field `kind`"
        );
        assert_eq!(
            entries("sinks = [5]\n").unwrap_err(),
            "sinks[0]: invalid type: integer `5`, expected internally tagged enum SinkConfig"
        );
        assert_eq!(
            entries("[[sinks]]\nkind = \"log\"\nzzz = 1\n").unwrap_err(),
            "sinks[0]: unknown field `zzz`, expected `name`"
        );
    }

    #[test]
    fn names_default_to_kind_dash_index_and_must_be_unique_and_non_empty() {
        let mut sinks =
            entries("[[sinks]]\nkind = \"log\"\n[[sinks]]\nkind = \"log\"\nname = \"log-0\"\n")
                .unwrap();
        assert_eq!(
            validate(&mut sinks).unwrap_err().to_string(),
            "invalid config at `sinks[1].name`: sink name `log-0` is used twice"
        );
        let mut sinks = entries("[[sinks]]\nkind = \"log\"\nname = \"\"\n").unwrap();
        assert_eq!(
            validate(&mut sinks).unwrap_err().to_string(),
            "invalid config at `sinks[0].name`: must not be empty"
        );
    }
}
