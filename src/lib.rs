//! Kawa (川, "river"): a live-streaming backend. Encoders publish RTMP, Kawa checks the
//! stream key, and viewers watch an HLS ladder.
//!
//! Module map:
//! - [`config`]: layered settings (`config/default.toml`, `--config`, `KAWA_*`).
//! - [`keys`]: stream keys and their stores (embedded redb, Redis).
//! - [`http`]: the REST API, health checks (actix-web).
//! - [`grpc`]: the internal gRPC API (tonic).
//! - [`media`]: the pure media core (FLV, H.264, AAC, MPEG-TS).
//! - [`server`]: `kawa serve`, wiring it all together.
//! - [`telemetry`]: logging set-up.

pub mod actors;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod grpc;
pub mod hls;
pub mod hooks;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod recordings;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod transcode;
pub mod webrtc;
