//! One integration binary: the real server over real HTTP.
mod helpers;
mod receiver;

mod admin_api;
mod config;
mod decoding;
mod durability;
mod http_sink;
mod http_surface;
mod limits;
mod logs;
mod metrics;
mod nats_harness;
mod nats_store;
mod netease_cloud_play;
mod operations;
mod routing;
mod secrets;
mod security;
mod zego_cloud_player;
mod zego_compose;
mod zego_signing;
mod zego_stream;
