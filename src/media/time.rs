//! RTMP timestamps to MPEG-TS time.
//!
//! RTMP gives each message a millisecond u32 that wraps after 49.7 days (and encoders
//! sometimes start near the top). Kawa unwraps it once, on arrival, into a signed 64-bit
//! count of 90 kHz ticks, the unit of MPEG-TS PTS/DTS, and keeps that on every frame.

/// MPEG-TS clock ticks per millisecond.
pub const TICKS_PER_MS: i64 = 90;
/// MPEG-TS clock ticks per second.
pub const TICKS_PER_SECOND: i64 = 90_000;
/// A step back larger than this is a clock reset, not audio and video interleaving.
pub const MAX_STEP_BACK: i64 = TICKS_PER_SECOND;
/// A step forward larger than this is a jump to a new timeline, not a frame interval or
/// an encoder's stall.
pub const MAX_STEP_FORWARD: i64 = 10 * TICKS_PER_SECOND;

/// Unwraps RTMP millisecond timestamps. Each new value is taken as the nearest one to the
/// previous (a signed 32-bit step), which covers both the wrap at 2^32 and the small
/// backward steps that interleaved audio and video produce.
#[derive(Debug, Clone, Default)]
pub struct TimestampUnwrapper {
    last: Option<(u32, i64)>,
}

impl TimestampUnwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The unwrapped time of `ms` in milliseconds.
    pub fn unwrap_ms(&mut self, ms: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(ms),
            Some((raw, extended)) => extended + i64::from(ms.wrapping_sub(raw) as i32),
        };
        self.last = Some((ms, extended));
        extended
    }

    /// The unwrapped time of `ms` in 90 kHz ticks.
    pub fn unwrap_ticks(&mut self, ms: u32) -> i64 {
        self.unwrap_ms(ms) * TICKS_PER_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_on_through_the_wrap_at_2_32() {
        let mut u = TimestampUnwrapper::new();
        assert_eq!(u.unwrap_ms(u32::MAX - 20), i64::from(u32::MAX) - 20);
        assert_eq!(u.unwrap_ms(u32::MAX), i64::from(u32::MAX));
        assert_eq!(u.unwrap_ms(19), (1i64 << 32) + 19);
        assert_eq!(u.unwrap_ticks(40), ((1i64 << 32) + 40) * 90);
    }

    #[test]
    fn small_backward_steps_stay_backward() {
        let mut u = TimestampUnwrapper::new();
        assert_eq!(u.unwrap_ms(1000), 1000);
        assert_eq!(u.unwrap_ms(990), 990);
        // ...also across the wrap.
        let mut u = TimestampUnwrapper::new();
        u.unwrap_ms(3);
        assert_eq!(u.unwrap_ms(u32::MAX - 1), -2);
    }
}
