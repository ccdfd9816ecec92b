//! A live stream's thumbnail, made on demand: nothing runs per stream on a timer.
//!
//! A viewer's request for `thumbnail.jpg` finds the latest picture here; when it is older
//! than `hls.thumbnail_seconds` (or there is none), the request asks for one and waits.
//! The session looks at the ask at each source keyframe (a flag it pulls: data still
//! flows one way, from the session out) and makes a JPEG of that keyframe, which goes
//! here, to the data directory and to S3 like any output. So a stream nobody looks at
//! costs no FFmpeg at all, and one that many look at costs at most one decode every
//! `thumbnail_seconds`.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Default)]
pub struct ThumbnailSlot {
    wanted: AtomicBool,
    latest: RwLock<Option<(Bytes, Instant)>>,
}

impl ThumbnailSlot {
    /// The latest picture, if made within `max_age`.
    pub fn fresh(&self, max_age: Duration) -> Option<Bytes> {
        self.latest()
            .filter(|(_, made)| made.elapsed() < max_age)
            .map(|(jpeg, _)| jpeg)
    }

    /// The latest picture and when it was made.
    pub fn latest(&self) -> Option<(Bytes, Instant)> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A viewer wants a newer picture.
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// The session, at a keyframe: whether to make a picture of it (the ask is taken).
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }

    pub(super) fn made(&self, jpeg: Bytes) {
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some((jpeg, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_is_taken_once_and_a_picture_is_fresh_for_its_age() {
        let slot = ThumbnailSlot::default();
        assert!(!slot.take_wanted());
        slot.want();
        slot.want();
        assert!(slot.take_wanted());
        assert!(!slot.take_wanted());
        assert_eq!(slot.fresh(Duration::from_secs(5)), None);
        slot.made(Bytes::from_static(b"jpeg"));
        assert_eq!(
            slot.fresh(Duration::from_secs(5)),
            Some(Bytes::from_static(b"jpeg"))
        );
        assert_eq!(slot.fresh(Duration::ZERO), None);
        assert!(slot.latest().is_some());
    }
}
