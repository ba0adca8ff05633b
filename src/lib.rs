//! hookrelay receives the server callbacks of real-time media clouds (ZEGO
//! and NetEase Yunxin), proves they are genuine, turns them into typed
//! events and delivers them durably to sinks.
//!
//! ```text
//!  vendor ──POST──▶ server ─▶ ingest: authenticate (decode, verify) ─▶ parse
//!                                         │  per family: providers::FAMILIES
//!                                         ▼
//!                    store.append ── durable (SQLite fsync | JetStream PubAck) ──▶ 200
//!                         │
//!       delivery: one worker per sink, reading its store::Feed
//!                         ├─▶ sinks::log
//!                         ├─▶ sinks::file
//!                         ├─▶ sinks::http  (Standard Webhooks)
//!                         └─▶ sinks::nats  (JetStream)
//! ```
//!
//! # Layout
//! - [`config`]: settings, defaults, layering, validation.
//! - [`server`]: listeners, routes, middleware, limits, the application's lifecycle.
//! - [`ingest`]: the one request pipeline; [`error`]: its errors as HTTP.
//! - [`decode`]: body encodings; [`verify`]: signatures and clocks.
//! - [`providers`]: the family registry; each vendor's authentication and
//!   each family's route, typed events, kinds and samples.
//! - [`event`]: the envelope sinks receive, dedup and replay keys.
//! - [`store`]: the boundary to durable storage; [`spool`] is the local
//!   SQLite implementation, [`store::nats`] the JetStream one shared by
//!   replicas ([`nats`]: connecting).
//! - [`delivery`]: workers moving events from the store to [`sinks`].
//! - [`live`]: the live streams and player states derived from stored events.
//! - [`metrics`]: Prometheus metrics; [`send`]: signed test callbacks.
//! - [`clock`], [`telemetry`], [`shutdown`], [`cli`]: process wiring.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod delivery;
pub mod error;
pub mod event;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod nats;
pub mod providers;
pub mod secret;
pub mod send;
pub mod server;
pub mod shutdown;
pub mod sinks;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod verify;
