//! Vendors and their callback families.
//!
//! Each family module owns one callback family's wire format and typed
//! events: `parse` never fails — an event type or field the vendor adds
//! later lands in an `Unknown` variant or is ignored, because rejecting an
//! authentic callback would lose it (the vendors retry only a few times).
//! The HTTP routes live in [`crate::server`]; this module knows nothing of HTTP.

pub mod lenient;
pub mod netease;
pub mod zego;

use serde::{Deserialize, Serialize};

/// Who sent a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// One callback family: one route, one wire format, one event enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// ZEGO cloud player and upload tasks (`EventType` 1-4, 10001-10006).
    CloudPlayer,
    /// ZEGO stream / room / mix / CDN callbacks (`event` = `stream_create`, ...).
    Stream,
    /// ZEGO media compose (`event` = `compose`).
    Compose,
    /// NetEase NERTC cloud-play events (`eventType` 500-507).
    CloudPlay,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::CloudPlayer,
        Family::Stream,
        Family::Compose,
        Family::CloudPlay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::CloudPlayer => "cloud_player",
            Family::Stream => "stream",
            Family::Compose => "compose",
            Family::CloudPlay => "cloud_play",
        }
    }

    pub fn provider(self) -> Provider {
        match self {
            Family::CloudPlayer | Family::Stream | Family::Compose => Provider::Zego,
            Family::CloudPlay => Provider::Netease,
        }
    }
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

/// Parses a decoded payload of `family` into its typed event.
pub fn parse(family: Family, payload: &serde_json::Value) -> Parsed {
    match family {
        Family::CloudPlayer => Parsed::from_typed(&zego::cloud_player::Event::parse(payload)),
        Family::Stream => Parsed::from_typed(&zego::stream::Event::parse(payload)),
        Family::Compose => Parsed::from_typed(&zego::compose::Event::parse(payload)),
        Family::CloudPlay => Parsed::from_typed(&netease::cloud_play::Event::parse(payload)),
    }
}
