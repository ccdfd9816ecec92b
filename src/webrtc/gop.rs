//! A stream's pictures since its latest keyframe, as each shard keeps them: a viewer
//! that needs a picture (a new one, or one whose browser sent a PLI) gets that keyframe
//! and what followed at once, instead of waiting up to a GOP for the next keyframe. The
//! encoder is never asked for one (an RTMP or SRT publisher cannot be).
//!
//! The frames keep their timestamps: a browser maps RTP time to arrival time from the
//! first frames it gets, so a burst of older frames followed by live ones reads as
//! frames that came early; it decodes them and plays them fast up to the live edge. That
//! takes time with many frames (Chromium on a loaded machine took 2 s to catch up from a
//! keyframe 9.8 s old), so the cache is offered only in the first half of a GOP (the
//! last keyframe interval); later the next keyframe is nearer. Pure: frames in, frames
//! out.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// More than this many frames or bytes since the keyframe is not sent in one burst (a
/// long GOP at a high bitrate would flood the viewer's path); such a viewer waits for
/// the next keyframe.
const MAX_FRAMES: usize = 300;
const MAX_BYTES: usize = 2 * 1024 * 1024;
/// A viewer gets the cached pictures at most this often: a browser that keeps losing
/// packets and asking would otherwise get a GOP burst per request.
pub const REPLAY_EVERY: Duration = Duration::from_secs(1);
/// Before a second keyframe tells the GOP's length, a keyframe at most this old (90 kHz).
const FIRST_GOP_REPLAY: i64 = 2 * 90_000;

#[derive(Debug, Clone)]
pub struct CachedFrame {
    pub pts: i64,
    pub data: Arc<[u8]>,
}

#[derive(Debug, Default)]
pub struct GopCache {
    frames: Vec<CachedFrame>,
    bytes: usize,
    /// Past a cap since the last keyframe: nothing to replay until the next.
    overflowed: bool,
    /// The latest keyframe's time, and the interval to the one before (90 kHz).
    keyframe_pts: Option<i64>,
    gop: Option<i64>,
    /// The newest frame's time.
    newest: i64,
}

impl GopCache {
    /// A stream's video frame, in decode order.
    pub fn push(&mut self, pts: i64, keyframe: bool, data: &Arc<[u8]>) {
        if keyframe {
            self.clear();
            if let Some(previous) = self.keyframe_pts {
                self.gop = Some(pts - previous).filter(|g| *g > 0);
            }
            self.keyframe_pts = Some(pts);
        } else if self.frames.is_empty() || self.overflowed {
            // Nothing to build on before the first keyframe.
            return;
        }
        if self.frames.len() >= MAX_FRAMES || self.bytes + data.len() > MAX_BYTES {
            self.clear();
            self.overflowed = true;
            return;
        }
        self.bytes += data.len();
        self.newest = pts;
        self.frames.push(CachedFrame {
            pts,
            data: Arc::clone(data),
        });
    }

    /// Another rendition's frames follow: what is cached does not fit them.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.overflowed = false;
    }

    /// The frames from the latest keyframe on, when there are any and the keyframe is in
    /// the first half of its GOP (within `FIRST_GOP_REPLAY` before the GOP is known).
    pub fn replay(&self) -> Option<&[CachedFrame]> {
        let first = self.frames.first()?;
        let age = self.newest - first.pts;
        let limit = self.gop.map_or(FIRST_GOP_REPLAY, |gop| gop / 2);
        (age <= limit).then_some(&self.frames[..])
    }
}

/// Whether a viewer that needs a picture gets the cache now (`last`: when it last did).
pub fn may_replay(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.duration_since(at) >= REPLAY_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Arc<[u8]> {
        Arc::from(vec![0u8; n])
    }

    #[test]
    fn holds_the_frames_from_the_latest_keyframe() {
        let mut gop = GopCache::default();
        gop.push(0, false, &frame(10));
        assert!(gop.replay().is_none(), "nothing before a keyframe");
        gop.push(3000, true, &frame(100));
        gop.push(6000, false, &frame(10));
        let pts: Vec<i64> = gop.replay().unwrap().iter().map(|f| f.pts).collect();
        assert_eq!(pts, [3000, 6000]);
        gop.push(9000, true, &frame(100));
        let pts: Vec<i64> = gop.replay().unwrap().iter().map(|f| f.pts).collect();
        assert_eq!(pts, [9000]);
        gop.clear();
        assert!(gop.replay().is_none());
    }

    #[test]
    fn only_the_first_half_of_a_gop_is_replayed() {
        let mut gop = GopCache::default();
        // The first GOP: up to 2 s.
        gop.push(0, true, &frame(10));
        gop.push(2 * 90_000, false, &frame(10));
        assert!(gop.replay().is_some());
        gop.push(2 * 90_000 + 3000, false, &frame(10));
        assert!(
            gop.replay().is_none(),
            "2 s and more before the GOP is known"
        );
        // 10 s GOPs: up to 5 s in.
        gop.push(10 * 90_000, true, &frame(10));
        gop.push(15 * 90_000, false, &frame(10));
        assert_eq!(gop.replay().map(<[_]>::len), Some(2));
        gop.push(15 * 90_000 + 3000, false, &frame(10));
        assert!(gop.replay().is_none(), "the next keyframe is nearer");
        // Another rendition: what was cached is gone, the GOP's length stays.
        gop.clear();
        assert!(gop.replay().is_none());
        gop.push(20 * 90_000, true, &frame(10));
        assert!(gop.replay().is_some());
    }

    #[test]
    fn a_gop_past_its_caps_is_not_replayed_until_the_next_keyframe() {
        let mut gop = GopCache::default();
        gop.push(0, true, &frame(MAX_BYTES - 10));
        gop.push(1, false, &frame(20));
        assert!(gop.replay().is_none());
        gop.push(2, false, &frame(1));
        assert!(gop.replay().is_none(), "still past the cap");
        gop.push(3, true, &frame(1));
        assert_eq!(gop.replay().unwrap().len(), 1);
        for i in 0..MAX_FRAMES as i64 {
            gop.push(4 + i, false, &frame(1));
        }
        assert!(gop.replay().is_none(), "{MAX_FRAMES} frames and more");
    }

    #[test]
    fn a_viewer_gets_the_cache_at_most_once_a_second() {
        let now = Instant::now();
        assert!(may_replay(None, now));
        assert!(!may_replay(Some(now), now + Duration::from_millis(500)));
        assert!(may_replay(Some(now), now + REPLAY_EVERY));
    }
}
