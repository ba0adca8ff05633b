//! Vendors and their callback families.
//!
//! Each family module owns one callback family's wire format and typed
//! events: `parse` never fails — an event type or field the vendor adds
//! later lands in an `Unknown` variant or is ignored, because rejecting an
//! authentic callback would lose it (the vendors retry only a few times).
//! [`FAMILIES`] is the registry: the server's routes, the metrics' series,
//! `allowed_ips` and `send` all come from it.

pub mod lenient;
pub mod netease;
pub mod zego;

use serde::{Deserialize, Serialize};

/// Who sent a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Zego,
    Netease,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Zego => "zego",
            Provider::Netease => "netease",
        }
    }
}

/// One callback family, described once, in its provider's folder: the
/// server routes it, `metrics` pre-registers its kinds, `allowed_ips` and
/// `send` find it, all by iterating [`FAMILIES`].
///
/// Adding a family is its own module with a `pub static FAMILY: FamilyDef`
/// plus one line in [`FAMILIES`].
pub struct FamilyDef {
    /// The envelope's `family`, e.g. `stream`.
    pub name: &'static str,
    pub provider: Provider,
    /// The POST route, e.g. `/callbacks/zego/stream`.
    pub route: &'static str,
    /// Every kind [`FamilyDef::parse`] can produce, `unknown` included: the
    /// closed set metric labels come from (any other kind text is counted as
    /// `unknown`). A test proves the parser stays inside it.
    pub kinds: &'static [&'static str],
    /// How a request of this family proves it came from the vendor.
    pub auth: &'static dyn Authenticate,
    /// The family's typed event; never fails (unknown events are kept).
    pub parse: fn(&serde_json::Value) -> Parsed,
    /// A realistic payload of `kind` (without signing fields), for
    /// `hookrelay send` and tests; `None` for a kind it cannot make.
    pub sample: fn(kind: &str, i: u64, ctx: &SampleContext) -> Option<serde_json::Value>,
    /// The kinds `send` can generate, with their vendor number where the
    /// family numbers them (0 otherwise); the first is the default.
    pub sample_kinds: &'static [(&'static str, i64)],
}

impl FamilyDef {
    /// The vendor's number for sample kind `kind` (`EventType`, `eventType`).
    pub fn sample_code(&self, kind: &str) -> Option<i64> {
        self.sample_kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, code)| *code)
    }
}

/// What a sample generator needs to make distinct, realistic payloads.
#[derive(Debug, Clone)]
pub struct SampleContext {
    /// The app the payload names.
    pub app_id: String,
    /// Distinguishes one run's ids from every other run's (8 hex digits).
    pub run: String,
    /// A 10-digit number, unique per run, for numeric ids.
    pub run_num: u64,
    /// Unix ms.
    pub now_ms: u64,
}

impl SampleContext {
    /// The app id as a JSON number when it is one (the numeric-typed
    /// callbacks send it so), else as a string.
    pub fn app_id_value(&self) -> serde_json::Value {
        match self.app_id.parse::<u64>() {
            Ok(n) => serde_json::json!(n),
            Err(_) => serde_json::json!(self.app_id),
        }
    }
}

/// A random id above 2^53, as ZEGO's session ids are.
pub fn big_id() -> u64 {
    fastrand::u64(100_000_000_000_000_000..9_223_372_036_854_775_807)
}

/// A callback family: a handle to its [`FamilyDef`] in the registry.
#[derive(Clone, Copy)]
pub struct Family(&'static FamilyDef);

/// Every callback family hookrelay serves: the registry.
pub static FAMILIES: [Family; 4] = [
    Family(&zego::cloud_player::FAMILY),
    Family(&zego::stream::FAMILY),
    Family(&zego::compose::FAMILY),
    Family(&netease::cloud_play::FAMILY),
];

impl Family {
    /// The family named `name` (`stream`, `cloud_play`, ...).
    pub fn by_name(name: &str) -> Option<Family> {
        FAMILIES.iter().copied().find(|f| f.as_str() == name)
    }

    /// The family served at `route`.
    pub fn by_route(route: &str) -> Option<Family> {
        FAMILIES.iter().copied().find(|f| f.0.route == route)
    }

    pub fn def(self) -> &'static FamilyDef {
        self.0
    }

    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    pub fn provider(self) -> Provider {
        self.0.provider
    }

    pub fn route(self) -> &'static str {
        self.0.route
    }

    pub fn kinds(self) -> &'static [&'static str] {
        self.0.kinds
    }

    /// The `kind` label of an event: the kind itself when the family knows
    /// it, else `unknown`. The envelope keeps the vendor's text; a metric
    /// label must not, or one signed callback with a made-up 600 KB `event`
    /// adds a 600 KB series to every scrape, for good.
    pub fn kind_label(self, kind: &str) -> &'static str {
        self.kinds()
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("unknown")
    }

    /// Parses a decoded payload of this family into its typed event.
    pub fn parse(self, payload: &serde_json::Value) -> Parsed {
        (self.0.parse)(payload)
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Family) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Family {}

impl std::hash::Hash for Family {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

/// What a request proved about itself: which app sent it and what it says.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The configured app whose secret verified it.
    pub app_id: String,
    /// The decoded payload.
    pub payload: serde_json::Value,
    /// The key a one-time credential is remembered under, to refuse its reuse
    /// with another payload (ZEGO signatures do not cover the body).
    pub replay_key: Option<String>,
    /// Top-level keys that change on every re-signed retry: the dedup key
    /// ignores them, so a retry is recognised as the same event.
    pub volatile_keys: &'static [&'static str],
    /// Top-level keys that are credentials: never stored or delivered.
    pub credential_keys: &'static [&'static str],
    /// A console's address check: answered 200, nothing stored.
    pub probe: bool,
}

/// A vendor app whose callbacks we accept (`[[apps]]`).
#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub provider: Provider,
    /// ZEGO AppID or NetEase AppKey, as text.
    pub app_id: String,
    /// Newest first; any of them verifies (rotation without a window of rejections).
    pub secrets: Vec<crate::secret::SecretString>,
}

/// The app whose callbacks carry `app_id`, or — when the callback names no
/// app — the provider's only app if exactly one is configured.
pub fn find_app<'a>(apps: &'a [App], provider: Provider, app_id: Option<&str>) -> Option<&'a App> {
    match app_id {
        Some(id) => apps
            .iter()
            .find(|a| a.provider == provider && a.app_id == id),
        None => {
            let mut it = apps.iter().filter(|a| a.provider == provider);
            let only = it.next()?;
            it.next().is_none().then_some(only)
        }
    }
}

/// What authentication needs of the config in force: the apps and the
/// timestamp tolerance.
#[derive(Debug, Clone, Copy)]
pub struct AuthContext<'a> {
    pub apps: &'a [App],
    pub tolerance_secs: u64,
}

impl AuthContext<'_> {
    pub fn find_app(&self, provider: Provider, app_id: Option<&str>) -> Option<&App> {
        find_app(self.apps, provider, app_id)
    }
}

/// How one vendor proves a request genuine (one implementation per vendor,
/// shared by its families): headers + body → the app, the payload and a
/// replay key, or the error to answer.
pub trait Authenticate: Sync {
    fn authenticate(
        &self,
        context: AuthContext<'_>,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<crate::verify::Verified<Authenticated>, crate::error::IngestError>;

    /// Signs a payload the way the vendor does (for `hookrelay send` and
    /// tests): the headers and the exact body to send.
    fn sign(
        &self,
        input: SignInput<'_>,
        app_id: &str,
        secret: &str,
        now_ms: u64,
    ) -> anyhow::Result<(Vec<(String, String)>, String)>;
}

/// What [`Authenticate::sign`] signs.
#[derive(Debug)]
pub enum SignInput<'a> {
    /// A generated payload (a family's `sample`).
    Generated(serde_json::Value),
    /// A body given by the operator, signed as it is where the vendor signs
    /// the bytes, re-signed where the signing fields are in the body.
    Given(&'a [u8]),
}

/// What the envelope needs from any family's typed event.
pub trait TypedEvent: Serialize {
    /// The envelope's `kind`, e.g. `player_created`, `stream_create`, `play_error`, `unknown`.
    fn kind(&self) -> &str;
    /// When the event happened at the vendor, in Unix milliseconds, if the family says.
    fn event_time_ms(&self) -> Option<i64>;
    /// The resource whose events must stay in order for a sink (PlayerId, stream_id, taskId...).
    fn resource(&self) -> Option<String>;
}

/// A family's event reduced to what the envelope stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub kind: String,
    pub event_time_ms: Option<i64>,
    pub resource: Option<String>,
    /// The typed event serialized: known fields normalized (numbers as numbers).
    pub event: serde_json::Value,
}

impl Parsed {
    pub fn from_typed<E: TypedEvent>(event: &E) -> Parsed {
        Parsed {
            kind: event.kind().to_owned(),
            event_time_ms: event.event_time_ms(),
            resource: event.resource(),
            // Serializing our own derive(Serialize) structs into a Value cannot fail:
            // they hold no maps with non-string keys.
            event: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// `serialize_with` for an `Unknown { tag, raw }` variant's tag field: the
/// event serializes as the raw payload it kept, whatever the tag's type.
pub fn serialize_raw<T, S: serde::Serializer>(
    _tag: &T,
    raw: &serde_json::Value,
    s: S,
) -> Result<S::Ok, S::Error> {
    raw.serialize(s)
}

/// Parses a decoded payload of `family` into its typed event.
pub fn parse(family: Family, payload: &serde_json::Value) -> Parsed {
    family.parse(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_unique_name_and_route_and_knows_unknown() {
        let mut names = std::collections::HashSet::new();
        let mut routes = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(names.insert(f.as_str()), "{f:?} twice");
            assert!(routes.insert(f.route()), "{} twice", f.route());
            assert!(f.kinds().contains(&"unknown"), "{f:?}");
            assert_eq!(Family::by_name(f.as_str()), Some(f));
            assert_eq!(Family::by_route(f.route()), Some(f));
        }
    }

    #[test]
    fn every_kind_a_sample_produces_parses_to_itself_and_is_in_the_family_list() {
        for f in FAMILIES {
            assert!(!f.def().sample_kinds.is_empty(), "{f:?} has no samples");
            let ctx = SampleContext {
                app_id: "1".into(),
                run: "abcdef01".into(),
                run_num: 1_234_567_890,
                now_ms: 1_700_000_000_000,
            };
            for (kind, _) in f.def().sample_kinds {
                assert!(f.kinds().contains(kind), "{f:?}: {kind}");
                let sample = (f.def().sample)(kind, 1, &ctx)
                    .unwrap_or_else(|| panic!("{f:?} has no sample for {kind}"));
                assert_eq!(f.parse(&sample).kind, *kind, "{f:?}");
            }
        }
    }

    #[test]
    fn kinds_outside_the_list_are_labelled_unknown() {
        let stream = Family::by_name("stream").unwrap();
        assert_eq!(stream.kind_label("stream_create"), "stream_create");
        assert_eq!(stream.kind_label("made_up"), "unknown");
    }
}
