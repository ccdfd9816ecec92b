//! LL-HLS viewers per core: viewers that behave like hls.js in low-latency mode hold a
//! blocking playlist request for the next part (`_HLS_msn`/`_HLS_part`), fetch that part
//! as soon as the playlist lists it, and ask for the next one, each on its own HTTP/1.1
//! keep-alive connection. For 1, 10 and 50 streams (a 720p30 3 Mbit/s source with 2 s
//! GOPs, copied by each publisher) and growing viewer counts spread over them, it
//! prints Kawa's CPU and memory per viewer (less what the same streams cost with no
//! viewer), the time from a part's availability to its last byte at the viewer (p50 and
//! p99), the same from the first viewer's delivery of each part (the server's own share,
//! whatever the publisher's timing), and errors. A part is available when its last frame has reached Kawa: its
//! segment's PROGRAM-DATE-TIME (the first frame's ingest time) plus the durations of
//! the parts up to and including it.
//!
//! The viewers run in this process, on the same two cores: their CPU is printed beside
//! Kawa's. HTTP/2 and the nginx comparison are not measured yet.
//!
//! `cargo bench --bench viewers` (env: KAWA_VIEWERS_STREAMS, default `1,10,50`;
//! KAWA_VIEWERS, default `100,300,1000`; KAWA_VIEWERS_SECONDS, default 20). Figures are
//! printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "source.rs"]
mod source;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kawa, Publisher, create_stream, env_number, rss_kib, wait_for};

/// One part a playlist lists: where it is, and when it was available (Unix seconds).
struct ListedPart {
    msn: u64,
    index: u64,
    uri: String,
    available: f64,
}

/// The parts an LL-HLS playlist lists, with their availability times.
fn parts(text: &str) -> Vec<ListedPart> {
    let mut out = Vec::new();
    let mut msn = 0u64;
    let (mut index, mut offset) = (0u64, 0.0f64);
    let mut pdt: Option<f64> = None;
    let mut extinf: Option<f64> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            let format = time::format_description::well_known::Rfc3339;
            pdt = time::OffsetDateTime::parse(v.trim(), &format)
                .ok()
                .map(|t| t.unix_timestamp_nanos() as f64 / 1e9);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let duration = attribute(v, "DURATION").and_then(|d| d.parse::<f64>().ok());
            if let (Some(d), Some(uri), Some(start)) = (duration, attribute(v, "URI"), pdt) {
                out.push(ListedPart {
                    msn,
                    index,
                    uri: uri.to_owned(),
                    available: start + offset + d,
                });
                offset += d;
            }
            index += 1;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = v.split(',').next().and_then(|d| d.parse().ok());
        } else if !line.starts_with('#') && !line.is_empty() {
            // A whole segment: the next one starts where it ends.
            pdt = pdt.zip(extinf).map(|(p, d)| p + d);
            msn += 1;
            (index, offset, extinf) = (0, 0.0, None);
        }
    }
    out
}

/// `NAME=value` or `NAME="value"` in an attribute list.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim_matches('"'))
    })
}

/// For each delivery, how long after the first viewer of the same part it came (sorted):
/// the server's own share of the delay, whatever the publisher's timing (a part's
/// first viewer was already waiting on a blocking request when it was made).
fn spread(deliveries: Vec<(PartId, f64)>) -> Vec<f64> {
    let mut first = std::collections::HashMap::new();
    for (part, at) in &deliveries {
        let earliest = first.entry(*part).or_insert(*at);
        *earliest = f64::min(*earliest, *at);
    }
    let mut spread: Vec<f64> = (deliveries.iter())
        .map(|(part, at)| at - first[part])
        .collect();
    spread.sort_by(f64::total_cmp);
    spread
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A part of one stream: (the viewer's playlist, its msn, its index).
type PartId = (usize, u64, u64);

#[derive(Default)]
struct Tally {
    delays: Mutex<Vec<f64>>,
    /// Every part delivered: (playlist, msn, part index) and when its last byte came.
    deliveries: Mutex<Vec<(PartId, f64)>>,
    errors: AtomicU64,
    parts: AtomicU64,
}

/// One viewer of `playlist` (a rendition's URL) until `stop`.
async fn viewer(stream: usize, playlist: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = playlist.rsplit_once('/').map_or("", |(b, _)| b).to_owned();
    let mut next: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let url = match next {
            Some((msn, part)) => format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}"),
            None => playlist.clone(),
        };
        let text = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let Some(text) = text else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            next = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let listed = parts(&text);
        // The part asked for, or the next segment's first (what the server answers past
        // a segment's last part); at the start, or lost, the newest.
        let find = |msn: u64, index: u64| listed.iter().find(|p| p.msn == msn && p.index == index);
        let part = next
            .and_then(|(msn, index)| find(msn, index).or_else(|| find(msn + 1, 0)))
            .or(listed.last());
        let Some(part) = part else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let got = match client.get(format!("{base}/{}", part.uri)).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        if got {
            tally.parts.fetch_add(1, Ordering::Relaxed);
            if next.is_some() {
                let now = unix_now();
                tally.delays.lock().unwrap().push(now - part.available);
                (tally.deliveries.lock().unwrap()).push(((stream, part.msn, part.index), now));
            }
        } else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        // The part after it: past a segment's last part, the server takes it as part 0
        // of the next segment (RFC 8216bis 6.2.5.2).
        next = Some((part.msn, part.index + 1));
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    // After the name: state is field 3; utime and stime are 14 and 15.
    let ticks: u64 = (after.split(' ').skip(11).take(2))
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let stream_counts = list("KAWA_VIEWERS_STREAMS", "1,10,50");
    let viewer_counts = list("KAWA_VIEWERS", "100,300,1000");
    let seconds = env_number("KAWA_VIEWERS_SECONDS", 20);
    let dir = tempfile::tempdir().unwrap();
    let input = source::make_source(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "LL-HLS viewers (blocking playlist + part, HTTP/1.1 keep-alive), {seconds} s a step, default configuration"
    );
    println!(
        "| streams | viewers | Kawa CPU % (of a core) | per viewer | RSS MB | per viewer KB | p50 ms | p99 ms | after the first viewer p50 ms | p99 ms | parts | errors | viewers' CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        for &streams in &stream_counts {
            let kawa = Kawa::start();
            let mut publishers = Vec::new();
            let mut playlists = Vec::new();
            for i in 0..streams {
                let name = format!("v{i}");
                let key = create_stream(&kawa, &name).await;
                publishers.push(Publisher::start_file_loop(&kawa.rtmp_url(&key), &input));
                playlists.push(kawa.url(&format!("/hls/{name}/source/index.m3u8")));
            }
            for url in &playlists {
                wait_for("the stream's playlist", Duration::from_secs(30), || async {
                    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                    (parts(&text).len() > 3).then_some(())
                })
                .await;
            }
            let pid = kawa.pid().to_string();
            // What the streams cost with no viewer.
            let (cpu0, at0) = (cpu_seconds(&pid), Instant::now());
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle_cpu = (cpu_seconds(&pid) - cpu0) / at0.elapsed().as_secs_f64() * 100.0;
            let idle_rss = rss_kib(kawa.pid()) as f64 / 1024.0;
            println!(
                "| {streams} | 0 | {idle_cpu:.1} | | {idle_rss:.0} | | | | | | | | |"
            );
            for &viewers in &viewer_counts {
                let tally = Arc::new(Tally::default());
                let stop = Arc::new(AtomicBool::new(false));
                let tasks: Vec<_> = (0..viewers)
                    .map(|v| {
                        let playlist = playlists[v % playlists.len()].clone();

                        let stream = v % playlists.len();
                        tokio::spawn(viewer(stream, playlist, Arc::clone(&tally), Arc::clone(&stop)))
                    })
                    .collect();
                // Everyone joined and settled: then the window.
                tokio::time::sleep(Duration::from_secs(3)).await;
                tally.delays.lock().unwrap().clear();
                tally.deliveries.lock().unwrap().clear();
                let (cpu0, me0, at0) = (cpu_seconds(&pid), cpu_seconds("self"), Instant::now());
                let mut rss = Vec::new();
                while at0.elapsed() < Duration::from_secs(seconds) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    rss.push(rss_kib(kawa.pid()) as f64 / 1024.0);
                }
                let elapsed = at0.elapsed().as_secs_f64();
                let cpu = (cpu_seconds(&pid) - cpu0) / elapsed * 100.0;
                let mine = (cpu_seconds("self") - me0) / elapsed * 100.0;
                stop.store(true, Ordering::Relaxed);
                for t in tasks {
                    t.abort();
                }
                let mut delays = std::mem::take(&mut *tally.delays.lock().unwrap());
                delays.sort_by(f64::total_cmp);
                let spread = spread(std::mem::take(&mut *tally.deliveries.lock().unwrap()));
                let rss_mean = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
                let per_viewer_cpu = (cpu - idle_cpu) / viewers as f64;
                let per_viewer_kb = (rss_mean - idle_rss) * 1024.0 / viewers as f64;
                println!(
                    "| {streams} | {viewers} | {cpu:.1} | {per_viewer_cpu:.4} | {rss_mean:.0} | {per_viewer_kb:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {mine:.0} |",
                    percentile(&delays, 0.5) * 1000.0,
                    percentile(&delays, 0.99) * 1000.0,
                    percentile(&spread, 0.5) * 1000.0,
                    percentile(&spread, 0.99) * 1000.0,
                    delays.len(),
                    tally.errors.load(Ordering::Relaxed),
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            drop(publishers);
        }
    });
}
