//! Whether one connection's frame times run on, or restart (an encoder that reset its
//! clock, a jump over a gap): a restart begins a new generation, tagged
//! `EXT-X-DISCONTINUITY`, because FFmpeg and players need timestamps that run on.
//!
//! Frames come in arrival order with DTS unwrapped by [`crate::media::time`]; audio and
//! video interleave, so small steps back are normal.

pub use crate::media::time::{MAX_STEP_BACK, MAX_STEP_FORWARD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The first frame.
    Start,
    Continuous,
    /// Timing restarts at this frame.
    Jump,
}

/// The latest DTS seen on a connection, in constant memory.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    newest: Option<i64>,
}

impl Timeline {
    /// Places a frame's DTS (90 kHz, unwrapped).
    pub fn observe(&mut self, dts: i64) -> Continuity {
        let result = match self.newest {
            None => Continuity::Start,
            Some(newest) if dts < newest - MAX_STEP_BACK || dts > newest + MAX_STEP_FORWARD => {
                Continuity::Jump
            }
            Some(_) => Continuity::Continuous,
        };
        self.newest = Some(match (result, self.newest) {
            (Continuity::Continuous, Some(newest)) => newest.max(dts),
            _ => dts,
        });
        result
    }

    /// A new connection: its clock starts wherever it starts.
    pub fn reset(&mut self) {
        self.newest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::time::{TICKS_PER_SECOND, TimestampUnwrapper};
    use crate::stream::bitrate::BitrateWindow;

    #[test]
    fn interleaving_is_continuous_resets_and_gaps_are_jumps() {
        let mut t = Timeline::default();
        assert_eq!(t.observe(0), Continuity::Start);
        // Video at 40 ms, audio 300 ms behind it: normal interleaving.
        assert_eq!(t.observe(3600), Continuity::Continuous);
        assert_eq!(t.observe(3600 - 27_000), Continuity::Continuous);
        assert_eq!(t.observe(5 * TICKS_PER_SECOND), Continuity::Continuous);
        // The encoder restarts its clock.
        assert_eq!(t.observe(0), Continuity::Jump);
        assert_eq!(t.observe(3600), Continuity::Continuous);
        // A jump of a minute.
        assert_eq!(t.observe(3600 + 60 * TICKS_PER_SECOND), Continuity::Jump);
        t.reset();
        assert_eq!(t.observe(5), Continuity::Start);
    }

    /// 30 days of a 30 fps stream with 48 kHz AAC, as RTMP delivers it: millisecond u32
    /// timestamps starting a day before their wrap at 2^32 (49.7 days), through the
    /// unwrapper, the timeline and the bitrate window. Timestamps stay monotonic (no false
    /// jump at RTMP's 32-bit wrap), the 33-bit MPEG-TS time (the low bits the TS muxer
    /// writes) wraps 27 times, and the state stays the same size.
    #[test]
    fn thirty_days_of_timestamps() {
        const DAY_MS: u64 = 86_400_000;
        let start_ms = u64::from(u32::MAX) - DAY_MS;
        let mut unwrapper = TimestampUnwrapper::new();
        let mut timeline = Timeline::default();
        let mut bitrate = BitrateWindow::default();
        let sizes = (
            std::mem::size_of_val(&unwrapper),
            std::mem::size_of_val(&timeline),
            std::mem::size_of_val(&bitrate),
        );
        let mut last_video = i64::MIN;
        let mut pts_wraps = 0;
        let mut last_pts33 = 0i64;
        // One video frame every 33.3 ms and one audio frame every 21.3 ms, in time order;
        // stepped a second at a time through the quiet hours to keep the test quick.
        let mut video_ms = 0f64;
        let mut audio_ms = 0f64;
        let end_ms = 30.0 * DAY_MS as f64;
        let mut frames = 0u64;
        while video_ms < end_ms {
            let (is_video, at) = if video_ms <= audio_ms {
                (true, video_ms)
            } else {
                (false, audio_ms)
            };
            let raw = ((start_ms + at as u64) % (1u64 << 32)) as u32;
            let dts = unwrapper.unwrap_ticks(raw);
            let continuity = timeline.observe(dts);
            assert_ne!(continuity, Continuity::Jump, "false jump at {at} ms");
            bitrate.record((at / 1000.0) as u64, 10_000);
            if is_video {
                assert!(dts > last_video, "video DTS went back at {at} ms");
                last_video = dts;
                let pts33 = dts & ((1 << 33) - 1);
                if pts33 < last_pts33 {
                    pts_wraps += 1;
                }
                last_pts33 = pts33;
                // Dense near the RTMP wrap and each day's start, sparse elsewhere.
                let near_wrap = (start_ms as f64 + at - u32::MAX as f64).abs() < 60_000.0;
                let in_first_minute = (at as u64 % DAY_MS) < 60_000;
                video_ms += if near_wrap || in_first_minute {
                    1000.0 / 30.0
                } else {
                    1000.0
                };
            } else {
                audio_ms = if video_ms - audio_ms > 1024.0 / 48.0 {
                    video_ms - 5.0
                } else {
                    audio_ms + 1024.0 / 48.0
                };
            }
            frames += 1;
        }
        assert!(frames > 5_000_000, "{frames} frames");
        // RTMP wrapped once; the unwrapped time went on past 2^32 ms.
        assert!(last_video > i64::from(u32::MAX) * 90);
        // 30 days / 26.5 hours.
        assert_eq!(pts_wraps, 27);
        assert_eq!(
            sizes,
            (
                std::mem::size_of_val(&unwrapper),
                std::mem::size_of_val(&timeline),
                std::mem::size_of_val(&bitrate),
            )
        );
    }
}
