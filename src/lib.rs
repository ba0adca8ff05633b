//! hookrelay receives the server callbacks of real-time media clouds (ZEGO
//! and NetEase Yunxin), proves they are genuine, turns them into typed
//! events and delivers them durably to sinks.
//!
//! ```text
//!  vendor ──POST──▶ server ─▶ ingest: decode ─▶ verify ─▶ parse ─▶ spool.append ──▶ 200
//!                                                                    │ (committed, fsynced)
//!                                             delivery workers ◀─────┘
//!                                               ├─▶ sinks::log
//!                                               └─▶ sinks::file
//! ```
//!
//! # Layout
//! - [`config`]: settings, defaults, layering, validation.
//! - [`server`]: routes, middleware, the application's lifecycle.
//! - [`ingest`]: the request pipeline; [`error`]: its errors as HTTP.
//! - [`decode`]: body encodings; [`verify`]: signatures and clocks.
//! - [`providers`]: each vendor family's typed events.
//! - [`event`]: the envelope sinks receive, and dedup keys.
//! - [`spool`]: durability (SQLite WAL, group commit).
//! - [`delivery`]: workers moving events from the spool to [`sinks`].
//! - [`metrics`]: Prometheus metrics; [`send`]: signed test callbacks.
//! - [`telemetry`], [`shutdown`], [`cli`]: process wiring.

pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod delivery;
pub mod error;
pub mod event;
pub mod ingest;
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
