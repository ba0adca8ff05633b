//! The keys every `[[sinks]]` entry takes whatever its kind: `match` (which
//! events the sink is for) and `max_per_second` (the pace it can take).
//!
//! They are read off the entry before the kind's own keys (see
//! [`super::SinkConfig`]), so each kind's config stays `deny_unknown_fields`.
//! The delivery worker applies both: an event `match` does not accept is
//! never offered to the sink and counts as `filtered`; `max_per_second`
//! paces what is offered.
//!
//! `match` is checked against the family registry at start-up: a provider,
//! family or kind that does not exist (or not where the entry puts it) is
//! refused with the key and the value, so a typo cannot silently route
//! nothing.

use crate::providers::{FAMILIES, Family};
use anyhow::bail;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `match` and `max_per_second`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// Which events the sink receives; `None` = every event.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub route: Option<MatchConfig>,
    /// Events offered per second at most (a token bucket holding one
    /// second's worth); `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
}

impl SinkCommon {
    /// Removes `match` and `max_per_second` from a `[[sinks]]` entry,
    /// leaving the kind's own keys; a bad value is reported with its key.
    pub fn take_from(table: &mut toml::Table) -> Result<SinkCommon, toml::de::Error> {
        fn at(key: &str, e: toml::de::Error) -> toml::de::Error {
            de::Error::custom(format!("`{key}`: {}", e.message()))
        }
        let mut common = SinkCommon::default();
        if let Some(v) = table.remove("match") {
            common.route = Some(MatchConfig::deserialize(v).map_err(|e| at("match", e))?);
        }
        if let Some(v) = table.remove("max_per_second") {
            common.max_per_second = Some(u32::deserialize(v).map_err(|e| at("max_per_second", e))?);
        }
        Ok(common)
    }

    /// Checks `match` against the family registry and `max_per_second`.
    pub fn validate(&self, i: usize) -> anyhow::Result<()> {
        if self.max_per_second == Some(0) {
            bail!("invalid config at `sinks[{i}].max_per_second`: must be at least 1");
        }
        if let Some(route) = &self.route {
            route.validate(i)?;
        }
        Ok(())
    }

    /// What the sink receives, in words: `zego stream stream_create from app 1`,
    /// `everything`.
    pub fn describe(&self) -> String {
        self.route
            .as_ref()
            .map_or_else(|| "everything".to_owned(), MatchConfig::describe)
    }
}

/// `match = { provider, family, kind, app_id, fields }`: every key given
/// must match; each value is one string or a list, any of which may match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(
        default,
        deserialize_with = "some_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "some_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub family: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "some_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Vec<String>>,
    /// A number is taken as its decimal text (app ids are stored as text).
    #[serde(
        default,
        deserialize_with = "some_strings",
        skip_serializing_if = "Option::is_none"
    )]
    pub app_id: Option<Vec<String>>,
    /// Equality on fields of the typed `event`, by dotted path
    /// (`"data.taskId"`); a number segment indexes an array.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldValues>,
}

impl MatchConfig {
    fn validate(&self, i: usize) -> anyhow::Result<()> {
        let at = |key: &str| format!("invalid config at `sinks[{i}].match.{key}`");
        for (key, list) in [
            ("provider", &self.provider),
            ("family", &self.family),
            ("kind", &self.kind),
            ("app_id", &self.app_id),
        ] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                bail!(
                    "{}: an empty list would match nothing; leave the key out to match everything",
                    at(key)
                );
            }
        }
        let mut providers: Vec<&str> = FAMILIES.iter().map(|f| f.provider().as_str()).collect();
        providers.dedup();
        for p in self.provider.iter().flatten() {
            if !providers.contains(&p.as_str()) {
                bail!(
                    "{}: unknown provider `{p}` (expected one of {})",
                    at("provider"),
                    quoted(providers.iter().copied())
                );
            }
        }
        // The families the entry can mean: those of the providers given.
        let in_provider = |f: &Family| {
            self.provider
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p == f.provider().as_str()))
        };
        let mut scope: Vec<Family> = FAMILIES.iter().copied().filter(in_provider).collect();
        if let Some(families) = &self.family {
            for name in families {
                match Family::by_name(name) {
                    Some(f) if in_provider(&f) => {}
                    Some(f) => bail!(
                        "{}: family `{name}` belongs to provider `{}`, not to {}",
                        at("family"),
                        f.provider().as_str(),
                        quoted(self.provider.iter().flatten().map(String::as_str))
                    ),
                    None => bail!(
                        "{}: unknown family `{name}` (expected one of {})",
                        at("family"),
                        quoted(scope.iter().map(|f| f.as_str()))
                    ),
                }
            }
            scope.retain(|f| families.iter().any(|n| n == f.as_str()));
        }
        for kind in self.kind.iter().flatten() {
            if !scope.iter().any(|f| f.kinds().contains(&kind.as_str())) {
                let mut known: Vec<&str> = scope.iter().flat_map(|f| f.kinds()).copied().collect();
                known.sort_unstable();
                known.dedup();
                bail!(
                    "{}: unknown kind `{kind}` for {} (expected one of {})",
                    at("kind"),
                    scope
                        .iter()
                        .map(|f| format!("{} {}", f.provider().as_str(), f.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    quoted(known.into_iter())
                );
            }
        }
        for a in self.app_id.iter().flatten() {
            if a.is_empty() {
                bail!("{}: must not be empty", at("app_id"));
            }
        }
        for (path, values) in &self.fields {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                bail!(
                    "{}: `{path}` is not a dotted path such as `room_id` or `data.taskId`",
                    at("fields")
                );
            }
            if values.0.is_empty() {
                bail!(
                    "{}: an empty list would match nothing",
                    at(&format!("fields.{path}"))
                );
            }
        }
        Ok(())
    }

    /// `zego stream stream_create|stream_close from app 1234567890 where room_id = room-a|room-b`.
    pub fn describe(&self) -> String {
        let join = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.join("|"));
        let what: Vec<String> = [join(&self.provider), join(&self.family), join(&self.kind)]
            .into_iter()
            .flatten()
            .collect();
        let mut out = if what.is_empty() {
            "everything".to_owned()
        } else {
            what.join(" ")
        };
        if let Some(apps) = join(&self.app_id) {
            out.push_str(&format!(" from app {apps}"));
        }
        let conditions: Vec<String> = self
            .fields
            .iter()
            .map(|(path, values)| {
                let values: Vec<String> = values.0.iter().map(FieldValue::to_string).collect();
                format!("{path} = {}", values.join("|"))
            })
            .collect();
        if !conditions.is_empty() {
            out.push_str(&format!(" where {}", conditions.join(" and ")));
        }
        out
    }
}

/// `` `a`, `b` ``.
fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One value of `fields`: strings compare exactly, numbers as numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl FieldValue {
    /// Whether the typed event's value `v` equals this one.
    fn matches(&self, v: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, v) {
            (FieldValue::String(s), Value::String(t)) => s == t,
            (FieldValue::Bool(b), Value::Bool(c)) => b == c,
            (FieldValue::Integer(i), Value::Number(n)) => {
                n.as_i64() == Some(*i) || (n.is_f64() && n.as_f64() == Some(*i as f64))
            }
            (FieldValue::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
            _ => false,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::String(s) => f.write_str(s),
            FieldValue::Integer(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// One value or a list of them, any of which may match.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct FieldValues(pub Vec<FieldValue>);

impl<'de> Deserialize<'de> for FieldValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldValues, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<FieldValue>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![FieldValue::String(v.to_owned())])
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(vec![FieldValue::Integer(v)])
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(|i| vec![FieldValue::Integer(i)])
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_nan() {
                    return Err(E::custom("NaN matches nothing"));
                }
                Ok(vec![FieldValue::Float(v)])
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(vec![FieldValue::Bool(v)])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(one) = seq.next_element::<FieldValues>()? {
                    if one.0.len() != 1 {
                        return Err(de::Error::custom("lists cannot be nested"));
                    }
                    out.extend(one.0);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V).map(FieldValues)
    }
}

/// A string (or a number, taken as its decimal text) or a list of them.
fn some_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(one) = seq.next_element::<Scalar>()? {
                out.push(one.0);
            }
            Ok(out)
        }
    }
    struct Scalar(String);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
            struct S;
            impl<'de> Visitor<'de> for S {
                type Value = String;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                    Ok(v.to_owned())
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                    Ok(v.to_string())
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                    Ok(v.to_string())
                }
            }
            d.deserialize_any(S).map(Scalar)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// A `match` ready to apply to envelopes.
#[derive(Debug, Clone)]
pub struct Route {
    config: MatchConfig,
    fields: Vec<(Vec<String>, Vec<FieldValue>)>,
}

/// The envelope fields a route looks at.
#[derive(Debug, Deserialize)]
pub struct EnvelopeHead {
    pub provider: String,
    pub family: String,
    pub kind: String,
    pub app_id: String,
    /// Read only when the route has `fields`.
    #[serde(default)]
    pub event: serde_json::Value,
}

/// Only the keys, for a route without `fields` (the typed event is skipped).
#[derive(Deserialize)]
struct Keys {
    provider: String,
    family: String,
    kind: String,
    app_id: String,
}

impl Route {
    /// The route of a validated `match`; `None` when every event goes.
    pub fn new(config: Option<&MatchConfig>) -> Option<Route> {
        let config = config?;
        let fields = config
            .fields
            .iter()
            .map(|(path, values)| {
                (
                    path.split('.').map(str::to_owned).collect(),
                    values.0.clone(),
                )
            })
            .collect();
        Some(Route {
            config: config.clone(),
            fields,
        })
    }

    /// Whether the stored envelope (JSON text) is for this sink. An envelope
    /// that cannot be read is not (it stays in the store, `events show`
    /// finds it).
    pub fn accepts(&self, envelope: &str) -> bool {
        let head = if self.fields.is_empty() {
            serde_json::from_str::<Keys>(envelope).map(|k| EnvelopeHead {
                provider: k.provider,
                family: k.family,
                kind: k.kind,
                app_id: k.app_id,
                event: serde_json::Value::Null,
            })
        } else {
            serde_json::from_str::<EnvelopeHead>(envelope)
        };
        match head {
            Ok(head) => self.accepts_head(&head),
            Err(e) => {
                tracing::warn!(error = %e, "an envelope without provider/family/kind/app_id is filtered");
                false
            }
        }
    }

    pub fn accepts_head(&self, head: &EnvelopeHead) -> bool {
        let any = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == value))
        };
        // The envelope keeps the vendor's text of a kind the parser does not
        // know; the family's list calls it `unknown`, and so does `match`.
        let kind =
            Family::by_name(&head.family).map_or(head.kind.as_str(), |f| f.kind_label(&head.kind));
        any(&self.config.provider, &head.provider)
            && any(&self.config.family, &head.family)
            && any(&self.config.kind, kind)
            && any(&self.config.app_id, &head.app_id)
            && self.fields.iter().all(|(path, values)| {
                lookup(&head.event, path).is_some_and(|v| values.iter().any(|x| x.matches(v)))
            })
    }
}

/// The value at a dotted path (object keys; a number indexes an array).
fn lookup<'a>(mut v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    for segment in path {
        v = match v {
            serde_json::Value::Object(m) => m.get(segment)?,
            serde_json::Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(text: &str) -> SinkCommon {
        toml::from_str(text).unwrap()
    }

    fn refusal(text: &str) -> String {
        common(text).validate(2).unwrap_err().to_string()
    }

    fn envelope(
        provider: &str,
        family: &str,
        kind: &str,
        app: &str,
        event: serde_json::Value,
    ) -> String {
        json!({"id": "x", "provider": provider, "family": family, "kind": kind, "app_id": app, "event": event})
            .to_string()
    }

    #[test]
    fn each_key_takes_one_value_or_a_list_and_all_given_keys_must_match() {
        let c = common(
            r#"match = { provider = "zego", family = "stream", kind = ["stream_create", "stream_close"], app_id = 1234567890 }"#,
        );
        c.validate(0).unwrap();
        assert_eq!(
            c.describe(),
            "zego stream stream_create|stream_close from app 1234567890"
        );
        let r = Route::new(c.route.as_ref()).unwrap();
        let ev = |k: &str, app: &str| envelope("zego", "stream", k, app, json!({}));
        assert!(r.accepts(&ev("stream_create", "1234567890")));
        assert!(r.accepts(&ev("stream_close", "1234567890")));
        assert!(!r.accepts(&ev("unknown", "1234567890")));
        assert!(!r.accepts(&ev("brand_new", "1234567890")));
        let unknown = common(r#"match = { kind = "unknown" }"#);
        let u = Route::new(unknown.route.as_ref()).unwrap();
        assert!(
            u.accepts(&ev("brand_new", "1")),
            "a kind the parser does not know is `unknown`"
        );
        assert!(!u.accepts(&ev("stream_create", "1")));
        assert!(!r.accepts(&ev("stream_create", "222")));
        assert!(!r.accepts(&envelope(
            "zego",
            "compose",
            "compose",
            "1234567890",
            json!({})
        )));
        assert!(!r.accepts("not json"));
        assert_eq!(SinkCommon::default().describe(), "everything");
        assert!(Route::new(None).is_none());
    }

    #[test]
    fn fields_compare_strings_exactly_and_numbers_as_numbers_along_dotted_paths() {
        let c = common(
            "[match]\nfamily = \"cloud_play\"\n[match.fields]\n\"data.taskId\" = [\"t-1\", \"t-2\"]\n\"data.code\" = 200\n",
        );
        c.validate(0).unwrap();
        assert_eq!(
            c.describe(),
            "cloud_play where data.code = 200 and data.taskId = t-1|t-2"
        );
        let r = Route::new(c.route.as_ref()).unwrap();
        let ev = |event| envelope("netease", "cloud_play", "play_start", "a", event);
        assert!(r.accepts(&ev(json!({"data": {"taskId": "t-2", "code": 200}}))));
        assert!(!r.accepts(&ev(json!({"data": {"taskId": "t-3", "code": 200}}))));
        assert!(!r.accepts(&ev(json!({"data": {"taskId": "t-1", "code": "200"}}))));
        assert!(!r.accepts(&ev(json!({"data": {"taskId": "T-1", "code": 200}}))));
        assert!(!r.accepts(&ev(json!({"taskId": "t-1", "code": 200}))));
        let big = common("match = { fields = { \"ids.1\" = 9007199254740993 } }");
        let r = Route::new(big.route.as_ref()).unwrap();
        assert!(r.accepts(&ev(json!({"ids": [0, 9007199254740993u64]}))));
        assert!(!r.accepts(&ev(json!({"ids": [0, 9007199254740992u64]}))));
    }

    #[test]
    fn validation_names_the_key_and_the_value() {
        assert_eq!(
            refusal(r#"match = { provider = "zgo" }"#),
            "invalid config at `sinks[2].match.provider`: unknown provider `zgo` (expected one of `zego`, `netease`)"
        );
        assert_eq!(
            refusal(r#"match = { family = "strem" }"#),
            "invalid config at `sinks[2].match.family`: unknown family `strem` (expected one of `cloud_player`, `stream`, `compose`, `cloud_play`)"
        );
        assert_eq!(
            refusal(r#"match = { provider = "zego", family = "cloud_play" }"#),
            "invalid config at `sinks[2].match.family`: family `cloud_play` belongs to provider `netease`, not to `zego`"
        );
        let e = refusal(r#"match = { family = "stream", kind = "stream_crate" }"#);
        assert!(
            e.starts_with(
                "invalid config at `sinks[2].match.kind`: unknown kind `stream_crate` for zego stream (expected one of "
            ),
            "{e}"
        );
        let e = refusal(r#"match = { family = "compose", kind = "play_started" }"#);
        assert!(
            e.contains("unknown kind `play_started` for zego compose"),
            "{e}"
        );
        let e = refusal(r#"match = { provider = "netease", kind = "stream_create" }"#);
        assert!(e.contains("`sinks[2].match.kind`"), "{e}");
        assert!(e.contains("for netease cloud_play"), "{e}");
        assert!(
            refusal("match = { kind = [] }")
                .starts_with("invalid config at `sinks[2].match.kind`: an empty list")
        );
        assert_eq!(
            refusal("max_per_second = 0"),
            "invalid config at `sinks[2].max_per_second`: must be at least 1"
        );
        assert!(
            refusal("match = { fields = { \"a..b\" = 1 } }").contains("`sinks[2].match.fields`")
        );
        // `unknown` is a kind of every family.
        common(r#"match = { kind = "unknown" }"#)
            .validate(0)
            .unwrap();
        assert!(toml::from_str::<SinkCommon>("match = { kinds = \"x\" }").is_err());
        assert!(toml::from_str::<SinkCommon>("match = { fields = { a = { b = 1 } } }").is_err());
    }
}
