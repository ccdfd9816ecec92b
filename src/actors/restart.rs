//! The FFmpeg restart policy: exponential backoff, and a cap on restarts per window.
//! Pure (the caller passes the clock), so it is tested without waiting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// 250 ms doubled five times.
const MAX_BACKOFF_DOUBLINGS: u32 = 5;

#[derive(Debug)]
pub struct RestartPolicy {
    max_per_window: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartPolicy {
    pub fn new(max_per_window: usize, window: Duration) -> Self {
        Self {
            max_per_window,
            window,
            recent: VecDeque::new(),
        }
    }

    /// How long to wait before the next restart, after a failure at `now`: 250 ms
    /// doubling to 8 s; once `max_per_window` restarts fall in the window, until the
    /// oldest of them leaves it. The second value says whether the cap was hit.
    pub fn delay(&mut self, now: Instant) -> (Duration, bool) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        let doublings = (self.recent.len() as u32).min(MAX_BACKOFF_DOUBLINGS);
        let backoff = FIRST_DELAY * 2u32.pow(doublings);
        match self.recent.front() {
            Some(oldest) if self.recent.len() >= self.max_per_window => {
                let until_free = self.window.saturating_sub(now.duration_since(*oldest));
                (backoff.max(until_free), true)
            }
            _ => (backoff, false),
        }
    }

    /// A restart happened at `now`.
    pub fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_the_cap_waits_for_the_window() {
        let mut policy = RestartPolicy::new(3, Duration::from_secs(60));
        let start = Instant::now();
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..3 {
            let (delay, capped) = policy.delay(now);
            assert!(!capped);
            delays.push(delay);
            now += delay;
            policy.record(now);
        }
        assert_eq!(
            delays,
            [
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_secs(1)
            ]
        );
        // Three restarts in the window: the fourth waits until the first leaves it.
        let (delay, capped) = policy.delay(now);
        assert!(capped);
        let first_restart = start + Duration::from_millis(250);
        assert_eq!(now + delay, first_restart + Duration::from_secs(60));
        // A minute later the slate is clean again.
        let later = now + Duration::from_secs(120);
        assert_eq!(policy.delay(later), (Duration::from_millis(250), false));
    }

    #[test]
    fn backoff_stops_growing_at_8_seconds() {
        let mut policy = RestartPolicy::new(100, Duration::from_secs(600));
        let now = Instant::now();
        for _ in 0..20 {
            policy.record(now);
        }
        assert_eq!(policy.delay(now), (Duration::from_secs(8), false));
    }
}
