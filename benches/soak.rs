//! Soak: N publishers and an HLS reader per stream for a long run on loopback, printing
//! what weeks of uptime depend on: Kawa's RSS slope (MB/hour), HTTP errors, playlist
//! stalls, and how its CPU spreads over its threads (one arbiter per core).
//!
//! `cargo bench --bench soak` (env: KAWA_SOAK_STREAMS, default 50; KAWA_SOAK_SECONDS,
//! default 600). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, env_number, rss_kib, slope};
use m3u8_rs::Playlist;

/// 20 s of 640x360 at 25 fps, about 1 Mbit/s, 2 s GOPs, AAC: encoded once, copied by
/// every publisher in a loop.
fn make_source(dir: &Path) -> PathBuf {
    let path = dir.join("soak-360p.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "20"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1000k"])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    path
}

fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

/// utime + stime (clock ticks) of each of the process's threads, by thread id.
fn thread_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = head.split_once(" (").map_or("?", |(_, n)| n).to_owned();
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (name, ticks),
        );
    }
    out
}

#[derive(Default)]
struct ReaderStats {
    errors: AtomicU64,
    segments: AtomicU64,
    stalls: AtomicU64,
    longest_gap_ms: AtomicU64,
    /// (stream, seconds into the run, gap in seconds) of every gap over 3 s.
    long_gaps: std::sync::Mutex<Vec<(String, f64, f64)>>,
}

/// How often a reader polls: often enough that a gap is measured within a quarter second.
const POLL: Duration = Duration::from_millis(250);

/// Reads one stream: the playlist every `POLL`, each new segment once.
async fn reader(
    kawa_url: String,
    name: String,
    stats: Arc<ReaderStats>,
    started: Instant,
    until: Instant,
) {
    let client = reqwest::Client::new();
    let playlist_url = format!("{kawa_url}/hls/{name}/source/index.m3u8");
    let mut seen = HashSet::new();
    let mut last_new = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(POLL).await;
        let Ok(response) = client.get(&playlist_url).send().await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if !response.status().is_success() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(body) = response.bytes().await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Ok(Playlist::MediaPlaylist(p)) = m3u8_rs::parse_playlist_res(&body) else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut new = false;
        for s in &p.segments {
            if !seen.insert(s.uri.clone()) {
                continue;
            }
            new = true;
            let url = format!("{kawa_url}/hls/{name}/source/{}", s.uri);
            let fetched = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            let counter = if fetched {
                &stats.segments
            } else {
                &stats.errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if new {
            let gap = last_new.elapsed();
            // A stall: no new segment for longer than a segment (2 s) plus a second and
            // the poll interval (the goal is no gap over segment + 1 s).
            if gap > Duration::from_secs(3) + POLL && seen.len() > p.segments.len() {
                stats.stalls.fetch_add(1, Ordering::Relaxed);
            }
            if gap > Duration::from_secs(3) {
                let at = started.elapsed().as_secs_f64();
                let mut long = stats.long_gaps.lock().unwrap();
                long.push((name.clone(), at, gap.as_secs_f64()));
            }
            stats
                .longest_gap_ms
                .fetch_max(gap.as_millis() as u64, Ordering::Relaxed);
            last_new = Instant::now();
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let streams = env_number("KAWA_SOAK_STREAMS", 50) as usize;
    let seconds = env_number("KAWA_SOAK_SECONDS", 600);
    let dir = tempfile::tempdir().unwrap();
    let source = make_source(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let kawa = Kawa::builder()
            .env("KAWA_HLS__PRESET", "passthrough")
            .env("RUST_LOG", "warn,kawa::server=info")
            // Every publisher comes from 127.0.0.1.
            .env("KAWA_RTMP__MAX_CONNECTIONS_PER_IP", "4096")
            .start();
        let pid = kawa.pid();
        let mut publishers = Vec::new();
        let mut names = Vec::new();
        for i in 0..streams {
            let name = format!("soak{i}");
            let key = create_stream(&kawa, &name).await;
            publishers.push(Publisher::start_file_loop(&kawa.rtmp_url(&key), &source));
            names.push(name);
        }
        // Half a minute for every stream to go live, then RSS without readers.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let rss_unread = rss_mib(pid);
        // Readers from here on; a minute for them and the allocators to settle before
        // the RSS samples and CPU figures start.
        let readers_started = Instant::now();
        let until = readers_started + Duration::from_secs(60 + seconds);
        let stats = Arc::new(ReaderStats::default());
        let base = kawa.url("");
        let base = base.trim_end_matches('/').to_owned();
        let readers: Vec<_> = names
            .iter()
            .map(|n| {
                let stats = Arc::clone(&stats);
                tokio::spawn(reader(base.clone(), n.clone(), stats, readers_started, until))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let started = Instant::now();
        let threads_before = thread_ticks(pid);
        let mut samples = Vec::new();
        while Instant::now() < until {
            samples.push((started.elapsed().as_secs_f64() / 3600.0, rss_mib(pid)));
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        samples.push((started.elapsed().as_secs_f64() / 3600.0, rss_mib(pid)));
        let threads_after = thread_ticks(pid);
        for r in readers {
            let _ = r.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let alive = publishers.iter_mut().map(|p| p.running()).filter(|r| *r).count();

        let mut per_thread: Vec<(String, f64)> = threads_after
            .iter()
            .map(|(tid, (name, after))| {
                let before = threads_before.get(tid).map_or(0, |(_, t)| *t);
                (format!("{name}/{tid}"), (after - before) as f64 / 100.0 / elapsed * 100.0)
            })
            .filter(|(_, pct)| *pct >= 0.5)
            .collect();
        per_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = per_thread.iter().map(|(_, p)| p).sum();

        println!("soak, passthrough, {streams} streams of 1 Mbit/s 360p25 with a reader each, {elapsed:.0} s");
        let half = samples.len() / 2;
        println!("  RSS with every stream live and no reader yet: {rss_unread:.1} MiB");
        println!(
            "  RSS: {:.1} MiB at start, {:.1} MiB half way, {:.1} MiB at end; slope {:.2} MB/hour over {} samples ({:.2} in the first half, {:.2} in the second)",
            samples.first().map_or(0.0, |s| s.1),
            samples.get(half).map_or(0.0, |s| s.1),
            samples.last().map_or(0.0, |s| s.1),
            slope(&samples),
            samples.len(),
            slope(&samples[..=half]),
            slope(&samples[half..]),
        );
        println!(
            "  readers (from a minute before the start): {} segments fetched, {} errors, {} stalls (no new segment for > 3.25 s), longest gap {:.1} s",
            stats.segments.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            stats.stalls.load(Ordering::Relaxed),
            stats.longest_gap_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        for (name, at, gap) in stats.long_gaps.lock().unwrap().iter().take(30) {
            println!("    gap over 3 s: {name} {gap:.2} s, ending {at:.0} s after the readers started");
        }
        println!("  publishers still connected: {alive} of {streams}");
        println!("  kawa CPU (FFmpeg excluded): {total:.1} % of one core; threads over 0.5 %:");
        for (thread, pct) in per_thread.iter().take(12) {
            println!("    {thread}: {pct:.1} %");
        }
    });
}
