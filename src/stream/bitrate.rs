//! The ingest bitrate over the last few seconds, in constant memory: one byte count per
//! second in a ring, however many frames arrive (a list of frames trimmed only when read
//! grew by hundreds of MB a day on a 24/7 stream).

/// Whole seconds the rate is averaged over.
pub const WINDOW_SECONDS: usize = 5;

#[derive(Debug, Default, Clone)]
pub struct BitrateWindow {
    /// Bytes per second; slot `second % len`.
    slots: [u64; WINDOW_SECONDS + 1],
    /// The second the newest slot belongs to.
    newest: u64,
}

impl BitrateWindow {
    /// Counts `bytes` received at `second` (seconds since any fixed start, never going back).
    pub fn record(&mut self, second: u64, bytes: usize) {
        self.advance(second);
        self.slots[(second % self.slots.len() as u64) as usize] += bytes as u64;
    }

    /// Kbit/s over the last [`WINDOW_SECONDS`] whole seconds before `second`.
    pub fn kbps(&mut self, second: u64) -> u64 {
        self.advance(second);
        let len = self.slots.len() as u64;
        let current = (second % len) as usize;
        let bytes: u64 = (0..self.slots.len())
            .filter(|&i| i != current)
            .map(|i| self.slots[i])
            .sum();
        bytes * 8 / 1000 / WINDOW_SECONDS as u64
    }

    /// Clears the slots of the seconds between the newest and `second`.
    fn advance(&mut self, second: u64) {
        if second <= self.newest {
            return;
        }
        let len = self.slots.len() as u64;
        let stale = (second - self.newest).min(len);
        for s in (second + 1 - stale)..=second {
            self.slots[(s % len) as usize] = 0;
        }
        self.newest = second;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate() {
        let mut w = BitrateWindow::default();
        // 3 Mbit/s: 375,000 bytes a second, in 30 frames a second.
        for second in 0..20 {
            for _ in 0..30 {
                w.record(second, 12_500);
            }
        }
        assert_eq!(w.kbps(20), 3000);
    }

    #[test]
    fn silence_empties_the_window() {
        let mut w = BitrateWindow::default();
        w.record(3, 1_000_000);
        assert_eq!(w.kbps(4), 1600);
        assert_eq!(w.kbps(9), 0);
        // A gap longer than the ring clears it all.
        w.record(100, 5000);
        assert_eq!(w.kbps(101), 8);
    }

    #[test]
    fn memory_does_not_grow_with_frames() {
        let mut w = BitrateWindow::default();
        for i in 0..1_000_000u64 {
            w.record(i / 1000, 100);
        }
        assert_eq!(std::mem::size_of_val(&w), 8 * (WINDOW_SECONDS + 2));
        assert_eq!(w.kbps(1000), 800);
    }
}
