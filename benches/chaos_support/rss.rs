//! Node 0's RSS slope in the chaos benchmark. Node 0 is never killed, so it takes over
//! streams of every killed node: its RSS grows with the streams it holds, and its plain
//! slope over the run measures takeovers, not leaks. A leak is growth at a steady load:
//! so the slope is also taken over each stretch in which node 0 held the same number of
//! streams (less its first 20 s, while a new stream's windows fill), and averaged by
//! the stretches' lengths; and over the whole run with the streams held as a second
//! regressor. An allocator keeps what a peak of load made it take (high water), so the
//! slope is also taken with the most streams held so far as that regressor, and over the
//! run after node 0 first held its most streams.

/// One look at node 0: seconds into the run, the streams it held, its RSS in MiB, and
/// the MiB live on its heap (`kawa_heap_live_bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub secs: f64,
    pub held: u32,
    pub mib: f64,
    pub heap: f64,
}

/// The same looks with the live heap in place of RSS, for the same fits: growth in
/// both is memory Kawa holds; in RSS alone, memory the allocator keeps after use.
pub fn heap_as_mib(samples: &[Sample]) -> Vec<Sample> {
    (samples.iter())
        .map(|s| Sample { mib: s.heap, ..*s })
        .collect()
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

/// The slope over the whole run with the streams held taken out: least squares of
/// MiB = a + b·hours + c·streams. Returns b (MiB per hour), its standard error, and c
/// (MiB per stream held). A leak shows in b whatever node 0 takes over; the error says
/// whether the run was long enough to tell 5 MB/hour from nothing.
pub fn slope_beside_load(samples: &[Sample]) -> Option<(f64, f64, f64)> {
    let rows: Vec<[f64; 3]> = (samples.iter())
        .map(|s| [1.0, s.secs / 3600.0, f64::from(s.held)])
        .collect();
    let n = rows.len();
    if n < 4 {
        return None;
    }
    // Normal equations: (XᵀX) β = Xᵀy.
    let mut xtx = [[0.0; 3]; 3];
    let mut xty = [0.0; 3];
    for (row, s) in rows.iter().zip(samples) {
        for i in 0..3 {
            xty[i] += row[i] * s.mib;
            for j in 0..3 {
                xtx[i][j] += row[i] * row[j];
            }
        }
    }
    let inverse = invert(xtx)?;
    let beta: Vec<f64> = (0..3)
        .map(|i| (0..3).map(|j| inverse[i][j] * xty[j]).sum())
        .collect();
    let residual: f64 = (rows.iter().zip(samples))
        .map(|(row, s)| {
            let fit: f64 = (0..3).map(|i| row[i] * beta[i]).sum();
            (s.mib - fit).powi(2)
        })
        .sum();
    let variance = residual / (n - 3) as f64;
    Some((beta[1], (variance * inverse[1][1]).sqrt(), beta[2]))
}

/// A 3×3 inverse (cofactors); `None` when singular (node 0's load never changed, or
/// changed in step with time).
fn invert(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c = |r: usize, k: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (k1, k2) = ((k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    if det.abs() < 1e-9 {
        return None;
    }
    let mut inverse = [[0.0; 3]; 3];
    for (i, row) in inverse.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det;
        }
    }
    Some(inverse)
}

/// The same looks with `held` as the most streams held so far: RSS after a peak of load
/// stays near the peak's (the allocator keeps its pages), the live heap does not.
pub fn with_peak_load(samples: &[Sample]) -> Vec<Sample> {
    let mut most = 0;
    (samples.iter())
        .map(|s| {
            most = most.max(s.held);
            Sample { held: most, ..*s }
        })
        .collect()
}

/// The looks from when node 0 first held its most streams (settled): growth there is
/// not the load's. With how long that is, in seconds.
pub fn since_peak(samples: &[Sample]) -> (&[Sample], f64) {
    let most = samples.iter().map(|s| s.held).max().unwrap_or(0);
    let first = samples.iter().position(|s| s.held == most).unwrap_or(0);
    let start = samples.get(first).map_or(0.0, |s| s.secs + SETTLE_SECS);
    let from = (samples.iter())
        .position(|s| s.secs >= start)
        .unwrap_or(samples.len());
    let rest = &samples[from..];
    let span = rest.last().map_or(0.0, |l| l.secs - rest[0].secs);
    (rest, span)
}
