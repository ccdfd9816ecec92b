//! Pure parts of a live stream's bookkeeping, kept out of the session actor so they can be
//! tested without actors.

pub mod backpressure;
pub mod bitrate;
pub mod cadence;
pub mod checkpoint;
pub mod config;
pub mod core;
#[cfg(test)]
mod core_tests;
pub mod gop;
pub mod timeline;
