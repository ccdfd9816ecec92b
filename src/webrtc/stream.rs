//! A live stream's state in one shard: its viewers, what it offers, its clock against
//! the wall clock (for RTCP's sender reports: audio and video on one clock keep lips in
//! sync), continuous Opus timestamps, and the GOP so far for viewers that need a
//! picture now.

use std::time::{Duration, Instant};

use super::feed::Offer;
use super::gop::GopCache;
use super::metrics::StreamSeries;
use crate::media::opus::RTP_CLOCK;

/// A stream's clock more than this off the wall clock starts again (a new timeline).
const JUMP: Duration = Duration::from_secs(5);

/// A live stream's state here.
pub struct Stream {
    pub offer: Offer,
    pub viewers: Vec<u64>,
    /// Media time (90 kHz) against the wall clock, for RTCP's sender reports: audio and
    /// video on one clock keep lips in sync.
    clock: Option<(Instant, i64)>,
    pub audio_clock: AudioClock,
    /// The pictures since the latest keyframe, for viewers that need one now.
    pub gop: GopCache,
    pub series: StreamSeries,
}

/// Opus RTP timestamps (48 kHz) that advance by exactly each packet's samples. FFmpeg
/// stamps its Opus packets from the AAC input's clock, a millisecond off either way;
/// a browser's jitter buffer takes such steps for gaps and overlaps and fills 40 % of
/// the time with concealment. A step over 100 ms is a real jump: followed.
#[derive(Debug, Default)]
pub struct AudioClock {
    next: Option<u64>,
}

impl AudioClock {
    const RESYNC: u64 = RTP_CLOCK as u64 / 10;

    pub fn next(&mut self, pts: i64, samples: u32) -> u64 {
        let stamped = (pts.max(0) as u64) * RTP_CLOCK as u64 / 90_000;
        let ticks = match self.next {
            Some(next) if next.abs_diff(stamped) <= Self::RESYNC => next,
            _ => stamped,
        };
        self.next = Some(ticks + u64::from(samples));
        ticks
    }
}

impl Stream {
    pub fn new(path: &str) -> Self {
        Self {
            offer: Offer::Pending,
            viewers: Vec::new(),
            clock: None,
            audio_clock: AudioClock::default(),
            gop: GopCache::default(),
            series: StreamSeries::new(path),
        }
    }

    pub fn wallclock(&mut self, pts: i64, now: Instant) -> Instant {
        let (at, base) = *self.clock.get_or_insert((now, pts));
        let offset = Duration::from_micros(((pts - base).max(0) as u64) * 100 / 9);
        let wall = at + offset;
        // A new timeline (a restart, a jump): start the clock again.
        if wall > now + JUMP || wall + JUMP < now {
            self.clock = Some((now, pts));
            return now;
        }
        wall
    }

    /// When `pts` was on the stream's clock, without starting the clock again (for
    /// frames replayed from the cache, which are older than the live one).
    pub fn wallclock_of(&self, pts: i64, now: Instant) -> Instant {
        let Some((at, base)) = self.clock else {
            return now;
        };
        let offset = |ticks: i64| Duration::from_micros(ticks.unsigned_abs() * 100 / 9);
        if pts >= base {
            at + offset(pts - base)
        } else {
            at.checked_sub(offset(base - pts)).unwrap_or(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_timestamps_advance_by_samples_and_follow_a_jump() {
        let mut clock = AudioClock::default();
        // FFmpeg's stamps for 20 ms packets: 1800 ticks apart, give or take 70.
        let stamps = [1845, 3645, 5514, 7295, 9075, 10875];
        let ticks: Vec<u64> = stamps.iter().map(|p| clock.next(*p, 960)).collect();
        assert_eq!(ticks, [984, 1944, 2904, 3864, 4824, 5784]);
        // A new timeline five seconds on.
        assert_eq!(clock.next(460_000, 960), 245_333);
    }
}
