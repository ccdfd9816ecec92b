//! Live pipeline figures, measured end to end with real ffmpeg publishers:
//!
//! (a) glass-to-playlist latency: for each segment, the time from when its last media
//!     reached Kawa (PROGRAM-DATE-TIME + duration, from Kawa's ingest clock; the
//!     publisher sends in real time with `-re`) to when the served playlist lists it;
//! (b) Kawa's own CPU (FFmpeg children excluded) and memory with N concurrent
//!     passthrough streams of 3 Mbit/s.
//!
//! `cargo bench --bench live` (env: KAWA_BENCH_STREAMS, default 4; KAWA_BENCH_SECONDS,
//! default 20; KAWA_BENCH_INGEST, the front doors to measure one after the other,
//! default `rtmp,srt`). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "source.rs"]
mod source;
#[path = "stats.rs"]
mod stats;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::{Kawa, Publisher, create_stream, env_number, rss_kib};
use m3u8_rs::Playlist;
use stats::percentile;

/// Kawa's utime + stime in clock ticks (children not included).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    // `cargo bench` passes --bench. Anything else (a test runner listing or running
    // targets) gets no benchmark: this one takes a minute and needs ffmpeg.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let streams = env_number("KAWA_BENCH_STREAMS", 4) as usize;
    let seconds = env_number("KAWA_BENCH_SECONDS", 20);
    let dir = tempfile::tempdir().unwrap();
    let source = source::make_source(dir.path());

    let ingests = std::env::var("KAWA_BENCH_INGEST").unwrap_or_else(|_| "rtmp,srt".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for ingest in ingests.split(',') {
        runtime.block_on(run(ingest, streams, seconds, &source));
    }
}

async fn run(ingest: &str, streams: usize, seconds: u64, source: &std::path::Path) {
    {
        let kawa = Kawa::builder()
            .env("KAWA_HLS__PRESET", "passthrough")
            .env("RUST_LOG", "warn,kawa::server=info")
            .srt()
            .start();
        let mut publishers = Vec::new();
        let mut names = Vec::new();
        for i in 0..streams {
            let name = format!("bench{i}");
            let key = create_stream(&kawa, &name).await;
            let (url, format) = kawa.ingest_url(ingest, &key);
            publishers.push(Publisher::start_file_loop_as(&url, source, format));
            names.push(name);
        }
        // Warm up until every stream has a playlist.
        let client = reqwest::Client::new();
        let warmup = Instant::now();
        for name in &names {
            loop {
                let url = kawa.url(&format!("/hls/{name}/source/index.m3u8"));
                if client
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
                {
                    break;
                }
                assert!(
                    warmup.elapsed() < Duration::from_secs(30),
                    "{name} never started"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        let pid = kawa.pid();
        let ticks_per_second = 100.0; // USER_HZ on Linux
        let cpu_start = cpu_ticks(pid);
        let started = Instant::now();
        let mut seen: HashMap<(String, String), ()> = HashMap::new();
        let mut latencies = Vec::new();
        let mut peak_rss = 0;
        while started.elapsed() < Duration::from_secs(seconds) {
            for name in &names {
                let url = kawa.url(&format!("/hls/{name}/source/index.m3u8"));
                let Ok(response) = client.get(&url).send().await else {
                    continue;
                };
                let Ok(body) = response.bytes().await else {
                    continue;
                };
                let now = SystemTime::now();
                let Ok(Playlist::MediaPlaylist(p)) = m3u8_rs::parse_playlist_res(&body) else {
                    continue;
                };
                for s in &p.segments {
                    if seen.insert((name.clone(), s.uri.clone()), ()).is_some() {
                        continue;
                    }
                    // Only segments that appeared while we watched.
                    if started.elapsed() < Duration::from_millis(500) {
                        continue;
                    }
                    let Some(pdt) = s.program_date_time else {
                        continue;
                    };
                    let media_end = SystemTime::from(pdt) + Duration::from_secs_f32(s.duration);
                    if let Ok(latency) = now.duration_since(media_end) {
                        latencies.push(latency.as_secs_f64());
                    }
                }
            }
            peak_rss = peak_rss.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_seconds = (cpu_ticks(pid) - cpu_start) as f64 / ticks_per_second;
        let cpu_percent = cpu_seconds / elapsed * 100.0;
        latencies.sort_by(f64::total_cmp);

        for p in &mut publishers {
            assert!(p.running(), "a publisher stopped: {}", p.stderr());
        }
        println!(
            "live pipeline over {ingest}, passthrough, {streams} streams of 3 Mbit/s 720p30, {elapsed:.0} s"
        );
        println!(
            "  glass-to-playlist latency (segment of 2 s): p50 {:.3} s, p95 {:.3} s, max {:.3} s over {} segments",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            latencies.last().copied().unwrap_or(f64::NAN),
            latencies.len()
        );
        println!(
            "  kawa CPU (FFmpeg excluded): {cpu_percent:.2} % of one core in all, {:.2} % per stream",
            cpu_percent / streams as f64
        );
        println!(
            "  kawa memory: peak RSS {:.1} MiB in all, {:.1} MiB per stream",
            peak_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0 / streams as f64
        );
    }
}
