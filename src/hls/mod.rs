//! HLS as Kawa publishes it: typed playlists with one writer ([`playlist`]) and the
//! packager that turns FFmpeg's segments into Kawa's canonical playlists ([`packager`]).
//! Both are pure: the session actor performs the writes they ask for.

pub mod low_latency;
pub mod packager;
pub mod playlist;
pub mod recording;
#[cfg(test)]
mod recording_tests;
mod rendition;
pub mod resume;
#[cfg(test)]
pub(crate) mod rules_tests;
