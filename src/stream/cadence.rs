//! How often the publisher's encoder sends keyframes, against `hls.segment_seconds`.
//!
//! Segments start at keyframes; an encoder whose keyframes come further apart than a
//! segment may last (OBS's default "Keyframe Interval 0" is x264's 250 frames: 8.3 s at
//! 30 fps) gets segments cut between keyframes, and players that join wait for the next
//! one. The operator is told once per stream, with the setting that fixes it. Pure.

use crate::media::cmaf::SegmenterSettings;
use crate::media::time::TICKS_PER_SECOND;

#[derive(Debug)]
pub struct KeyframeCadence {
    segment_seconds: f64,
    /// Longer than this between keyframes and segments are cut without one.
    limit: i64,
    last: Option<i64>,
    told: bool,
}

/// What the operator should read, once.
#[derive(Debug, Clone, PartialEq)]
pub struct CadenceWarning {
    /// Seconds between keyframes (at least this, when none came since).
    pub interval: f64,
    pub segment_seconds: f64,
}

impl CadenceWarning {
    pub fn message(&self) -> String {
        format!(
            "the encoder sends a keyframe every {:.1} s, but segments are {} s: segments are \
             cut between keyframes and viewers join later; set the encoder's keyframe interval \
             to {} s (OBS: Settings > Output > Keyframe Interval; ffmpeg/x264: -g {} at 30 fps)",
            self.interval,
            self.segment_seconds,
            self.segment_seconds,
            (self.segment_seconds * 30.0).round()
        )
    }
}

impl KeyframeCadence {
    pub fn new(settings: &SegmenterSettings) -> Self {
        Self {
            segment_seconds: settings.segment as f64 / TICKS_PER_SECOND as f64,
            limit: settings.max_segment(),
            last: None,
            told: false,
        }
    }

    /// A video frame of the source. Returns a warning the first time keyframes are (or
    /// have been, since the last one) further apart than a segment may last.
    pub fn observe(&mut self, dts: i64, keyframe: bool) -> Option<CadenceWarning> {
        if self.told {
            return None;
        }
        let Some(last) = self.last else {
            if keyframe {
                self.last = Some(dts);
            }
            return None;
        };
        let since = dts - last;
        if keyframe {
            self.last = Some(dts);
        }
        // Twice the limit without a keyframe says as much as a long interval does.
        let too_long = (keyframe && since > self.limit) || since > 2 * self.limit;
        if !too_long {
            return None;
        }
        self.told = true;
        Some(CadenceWarning {
            interval: since as f64 / TICKS_PER_SECOND as f64,
            segment_seconds: self.segment_seconds,
        })
    }

    /// The publisher's timestamps start again (a new connection, a clock jump).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Whether the operator was told.
    pub fn told(&self) -> bool {
        self.told
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = TICKS_PER_SECOND;

    fn cadence() -> KeyframeCadence {
        KeyframeCadence::new(&SegmenterSettings::from_seconds(2.0, 0.2))
    }

    #[test]
    fn a_keyframe_every_segment_or_more_often_is_fine() {
        let mut c = cadence();
        for n in 0..600 {
            // 30 fps, keyframes every 1 s then every 2 s.
            let every = if n < 300 { 30 } else { 60 };
            assert_eq!(c.observe(n * S / 30, n % every == 0), None, "frame {n}");
        }
        assert!(!c.told());
    }

    #[test]
    fn obs_default_interval_is_reported_once() {
        let mut c = cadence();
        let mut warnings = Vec::new();
        for n in 0..1000 {
            warnings.extend(c.observe(n * S / 30, n % 250 == 0));
        }
        // No keyframe for twice the 2.5 s limit is reported before the 8.3 s one comes.
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].interval >= 5.0, "{warnings:?}");
        assert!(warnings[0].message().contains("Keyframe Interval"));
    }

    #[test]
    fn a_long_interval_between_two_keyframes_is_reported() {
        let mut c = cadence();
        assert_eq!(c.observe(0, true), None);
        assert_eq!(c.observe(S, false), None);
        let w = c.observe(3 * S, true).unwrap();
        assert!((w.interval - 3.0).abs() < 1e-9);
        assert_eq!(c.observe(10 * S, true), None);
    }

    #[test]
    fn a_reset_forgets_the_last_keyframe() {
        let mut c = cadence();
        c.observe(0, true);
        c.reset();
        assert_eq!(c.observe(100 * S, false), None);
        assert_eq!(c.observe(101 * S, true), None);
    }
}
