//! The actors: thin shells that receive a message, call the pure core, send a message.
//!
//! ```text
//! RtmpListener ── RtmpConnection (one per TCP connection; never restarted)
//! StreamRegistry (publish path -> live StreamSession; takeover policy)
//! StreamSession (one per live stream; GOP cache, packager, FFmpeg restart policy)
//! └── Transcoder (one FFmpeg child; the session starts a new one when it dies)
//! ```

pub mod backpressure;
pub mod registry;
pub mod restart;
pub mod rtmp_conn;
pub mod rtmp_listener;
pub mod session;
pub mod transcoder;
pub mod uploader;
