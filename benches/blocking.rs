//! Held playlist requests at scale: 500 viewers of one LL-HLS stream each hold a
//! blocking reload (`_HLS_msn`/`_HLS_part`) for the next part, round after round. For
//! each round it prints how long after the first answer the last one came (every held
//! request is woken by the same part), and Kawa's CPU time per request (its process,
//! minus what the stream alone costs over the same time).
//!
//! `cargo bench --bench blocking` (env: KAWA_BENCH_VIEWERS, default 500;
//! KAWA_BENCH_ROUNDS, default 20). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "cpu.rs"]
mod cpu;
#[path = "source.rs"]
mod source;
#[path = "stats.rs"]
mod stats;

use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, env_number, wait_for};
use stats::percentile;

/// The newest (segment, part) of an LL-HLS playlist, and the segment's part count
/// when it is complete.
fn last_part(text: &str) -> Option<(u64, u64)> {
    let sequence: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?
        .parse()
        .ok()?;
    let (mut complete, mut open_parts) = (0u64, 0u64);
    for line in text.lines() {
        if line.starts_with("#EXTINF:") {
            complete += 1;
            open_parts = 0;
        } else if line.starts_with("#EXT-X-PART:") {
            open_parts += 1;
        }
    }
    // The next part: of the open segment, or the first of the next one.
    Some((sequence + complete, open_parts))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let viewers = env_number("KAWA_BENCH_VIEWERS", 500) as usize;
    let rounds = env_number("KAWA_BENCH_ROUNDS", 20) as usize;
    let dir = tempfile::tempdir().unwrap();
    let input = source::make_source(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kawa = Kawa::builder()
            .env("KAWA_HLS__PRESET", "passthrough")
            .env("RUST_LOG", "warn,kawa::server=info")
            .start();
        let key = create_stream(&kawa, "held").await;
        let _publisher = Publisher::start_file_loop(&kawa.rtmp_url(&key), &input);
        let url = kawa.url("/hls/held/source/index.m3u8");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(viewers)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        wait_for("an LL-HLS playlist", Duration::from_secs(30), || async {
            let text = client.get(&url).send().await.ok()?.text().await.ok()?;
            text.contains("#EXT-X-PART:").then_some(())
        })
        .await;

        // What the stream costs Kawa with no viewers, over the same time.
        let pid = kawa.pid();
        let idle_start = cpu::tree_ticks(pid);
        let idle_started = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_rate =
            (cpu::tree_ticks(pid) - idle_start) as f64 / idle_started.elapsed().as_secs_f64();

        let busy_start = cpu::tree_ticks(pid);
        let busy_started = Instant::now();
        let (mut spreads, mut failed) = (Vec::new(), 0usize);
        for _ in 0..rounds {
            let text = client.get(&url).send().await.unwrap().text().await.unwrap();
            let (msn, part) = last_part(&text).unwrap();
            let query = format!("{url}?_HLS_msn={msn}&_HLS_part={part}");
            let tasks: Vec<_> = (0..viewers)
                .map(|_| {
                    let client = client.clone();
                    let query = query.clone();
                    tokio::spawn(async move {
                        let r = client.get(&query).send().await.ok()?;
                        let ok = r.status().is_success();
                        r.bytes().await.ok()?;
                        ok.then(Instant::now)
                    })
                })
                .collect();
            let mut answered = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Some(at) => answered.push(at),
                    None => failed += 1,
                }
            }
            if let (Some(first), Some(last)) = (answered.iter().min(), answered.iter().max()) {
                spreads.push((*last - *first).as_secs_f64() * 1000.0);
            }
        }
        let busy = busy_started.elapsed().as_secs_f64();
        let ticks = (cpu::tree_ticks(pid) - busy_start) as f64 - idle_rate * busy;
        let requests = (viewers * rounds) as f64;
        spreads.sort_by(f64::total_cmp);
        println!("{viewers} held requests per part, {rounds} parts");
        println!(
            "  first to last answer per part: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            percentile(&spreads, 0.5),
            percentile(&spreads, 0.95),
            spreads.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "  Kawa CPU per request: {:.1} µs (beyond the stream's own {:.1} % of a core); failed: {failed}",
            ticks / 100.0 / requests * 1e6,
            idle_rate
        );
    });
}
