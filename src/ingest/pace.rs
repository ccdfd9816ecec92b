//! Keeps a publisher to real time. An encoder sends media as it is made; one that sends
//! faster (a file pushed without `-re`, a broken or hostile client) would have Kawa
//! package, store and upload minutes of media in seconds. The connection stops reading
//! its socket for as long as the media is further ahead of the wall clock than a little
//! lead (TCP then holds the publisher back); nothing is buffered for it. Pure: media
//! time and instants in, how long to pause out.

use std::time::{Duration, Instant};

use crate::media::time::{MAX_STEP_FORWARD, TICKS_PER_SECOND};

/// How far ahead of the wall clock a publisher may run: an encoder's start-up burst and
/// network jitter fit in it.
pub const LEAD: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct Pacer {
    /// Media time `dts` was seen at `when`.
    anchor: Option<(i64, Instant)>,
    newest: i64,
}

impl Pacer {
    /// A frame with decode time `dts` (90 kHz) was read at `now`: how long to stop
    /// reading, if the publisher is ahead of real time by more than [`LEAD`].
    pub fn on_frame(&mut self, dts: i64, now: Instant) -> Option<Duration> {
        let Some((start, when)) = self.anchor else {
            self.anchor = Some((dts, now));
            self.newest = dts;
            return None;
        };
        // A step larger than a timeline jump, either way, is a new timeline, not speed.
        if (dts - self.newest).abs() > MAX_STEP_FORWARD {
            // The timestamps started over or jumped (a new timeline): measure afresh.
            self.anchor = Some((dts, now));
            self.newest = dts;
            return None;
        }
        self.newest = self.newest.max(dts);
        let media =
            Duration::from_secs_f64((self.newest - start).max(0) as f64 / TICKS_PER_SECOND as f64);
        let wall = now.saturating_duration_since(when);
        let ahead = media.saturating_sub(wall);
        (ahead > LEAD).then(|| ahead - LEAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = TICKS_PER_SECOND;

    #[test]
    fn a_real_time_publisher_is_never_paused() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        for n in 0..3000 {
            let now = t0 + Duration::from_millis(n * 40);
            assert_eq!(pacer.on_frame(n as i64 * S / 25, now), None, "frame {n}");
        }
    }

    #[test]
    fn a_publisher_faster_than_real_time_is_paused_to_the_lead() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        // 10 s of media in the first second.
        let mut paused = Duration::ZERO;
        for n in 0..250 {
            let now = t0 + Duration::from_millis(n * 4) + paused;
            if let Some(pause) = pacer.on_frame(n as i64 * S / 25, now) {
                paused += pause;
            }
        }
        // Media reached 9.96 s; it may lead the wall clock by 3 s at most.
        let wall = Duration::from_millis(249 * 4) + paused;
        assert!(wall >= Duration::from_millis(6900), "{wall:?}");
    }

    #[test]
    fn a_jump_in_the_timestamps_measures_afresh() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(pacer.on_frame(0, t0), None);
        assert_eq!(
            pacer.on_frame(3600 * S, t0 + Duration::from_millis(40)),
            None
        );
        assert_eq!(
            pacer.on_frame(3600 * S + S, t0 + Duration::from_secs(1)),
            None
        );
        // Back to zero (a new connection's clock).
        assert_eq!(pacer.on_frame(0, t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn timestamps_that_do_not_move_are_not_paced() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        for n in 0..1000 {
            assert_eq!(pacer.on_frame(5 * S, t0 + Duration::from_micros(n)), None);
        }
    }
}
