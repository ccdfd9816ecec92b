//! Node 0's RSS slope in the chaos benchmark. Node 0 is never killed, so it takes over
//! streams of every killed node: its RSS grows with the streams it holds, and its plain
//! slope over the run measures takeovers, not leaks. A leak is growth at a steady load:
//! so the slope is also taken over each stretch in which node 0 held the same number of
//! streams (less its first 20 s, while a new stream's windows fill), and averaged by
//! the stretches' lengths.

/// One look at node 0: seconds into the run, the streams it held, its RSS in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub secs: f64,
    pub held: u32,
    pub mib: f64,
}

/// A new stream's playlists, GOP cache and parts fill in about this long.
const SETTLE_SECS: f64 = 20.0;
/// A stretch shorter than this (after settling) says too little.
const MIN_STRETCH_SECS: f64 = 60.0;

/// Least-squares slope of MiB over time, in MiB per hour.
pub fn slope(samples: &[Sample]) -> f64 {
    let points: Vec<(f64, f64)> = (samples.iter()).map(|s| (s.secs / 3600.0, s.mib)).collect();
    crate::common::slope(&points)
}

/// The slope at a steady load: per stretch of the same streams held (settled), weighted
/// by its length. Also the seconds of the run those stretches cover.
pub fn steady_slope(samples: &[Sample]) -> Option<(f64, f64)> {
    let (mut weighted, mut covered) = (0.0, 0.0);
    for stretch in samples.chunk_by(|a, b| a.held == b.held) {
        let start = stretch[0].secs + SETTLE_SECS;
        let settled: Vec<Sample> = stretch
            .iter()
            .filter(|s| s.secs >= start)
            .copied()
            .collect();
        let span = settled.last().map_or(0.0, |l| l.secs - settled[0].secs);
        if span >= MIN_STRETCH_SECS {
            weighted += slope(&settled) * span;
            covered += span;
        }
    }
    (covered > 0.0).then(|| (weighted / covered, covered))
}
