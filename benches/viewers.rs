//! LL-HLS viewers per core (Kawa in its passthrough preset: delivery, not encoding, is
//! measured): viewers that behave like hls.js in low-latency mode hold a
//! blocking playlist request for the next part (`_HLS_msn`/`_HLS_part`), fetch that part
//! as soon as the playlist lists it, and ask for the next one, each viewer on its own
//! connection: HTTP/1.1 keep-alive, or HTTP/2 over TLS (as Safari plays LL-HLS). For 1,
//! 10 and 50 streams (a 720p30 3 Mbit/s source with 2 s GOPs, copied by each publisher)
//! and growing viewer counts spread over them, it prints the server's CPU and memory per
//! viewer (less what the same streams cost with no viewer), the time from a part's
//! availability to its last byte at the viewer (p50 and p99), the same from the first
//! viewer's delivery of each part (the server's own share, whatever the publisher's
//! timing), each fetch's time from request to last byte, and errors. A part is available
//! when its last frame has reached Kawa: its segment's PROGRAM-DATE-TIME (the first
//! frame's ingest time) plus the durations of the parts up to and including it.
//!
//! In the same run, nginx-rtmp serves the same streams as plain HLS from disk (2 s
//! fragments) to as many viewers polling the playlist every target duration and fetching
//! each new segment: the cheapest way to serve HLS. Plain HLS has no availability
//! deadline (a viewer sees a segment up to a target duration late by design), so its
//! rows give the fetch times only.
//!
//! The viewers run in this process, on the same two cores: their CPU is printed beside
//! the server's.
//!
//! `cargo bench --bench viewers` (env: KAWA_VIEWERS_STREAMS, default `1,10,50`;
//! KAWA_VIEWERS, default `100,300,1000`; KAWA_VIEWERS_SECONDS, default 20;
//! KAWA_VIEWERS_SERVERS, default `h1,h2,nginx`). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "viewers_support/h2_client.rs"]
mod h2_client;
#[path = "viewers_support/plain_hls.rs"]
mod plain_hls;
#[path = "source.rs"]
mod source;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kawa, Publisher, env_number, rss_kib, wait_for};

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
    /// Every part (or plain HLS segment) fetched: request to last byte, seconds.
    fetches: Mutex<Vec<f64>>,
    errors: AtomicU64,
    parts: AtomicU64,
}

/// A viewer's own HTTP/1.1 connection.
fn h1_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A viewer's connection: HTTP/1.1 keep-alive, or HTTP/2 over TLS.
enum Http {
    H1(reqwest::Client),
    H2(h2_client::H2),
}

impl Http {
    async fn get(&mut self, url: &str) -> Option<(u16, bytes::Bytes)> {
        match self {
            Self::H1(client) => {
                let response = client.get(url).send().await.ok()?;
                let status = response.status().as_u16();
                Some((status, response.bytes().await.ok()?))
            }
            Self::H2(h2) => h2.get(url).await,
        }
    }

    /// A new stream's key, from the admin API at `base`.
    async fn create_stream(&mut self, base: &str, name: &str) -> String {
        let url = format!("{base}/api/v1/streams");
        let json = serde_json::json!({ "publish_path": name }).to_string();
        let body = match self {
            Self::H1(client) => (client.post(&url))
                .bearer_auth(common::ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(json)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            Self::H2(h2) => {
                h2.post_json(&url, common::ADMIN_TOKEN, json)
                    .await
                    .unwrap()
                    .1
            }
        };
        let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
        created["stream_key"].as_str().expect("a key").to_owned()
    }

    /// The body of a 2xx answer.
    async fn ok(&mut self, url: &str) -> Option<bytes::Bytes> {
        self.get(url)
            .await
            .filter(|(status, _)| (200..300).contains(status))
            .map(|(_, body)| body)
    }
}

/// One viewer of `playlist` (a rendition's URL) until `stop`.
async fn viewer(
    stream: usize,
    playlist: String,
    mut client: Http,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let base = playlist.rsplit_once('/').map_or("", |(b, _)| b).to_owned();
    let mut next: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let url = match next {
            Some((msn, part)) => format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}"),
            None => playlist.clone(),
        };
        let text = (client.ok(&url).await).and_then(|b| String::from_utf8(b.to_vec()).ok());
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
        let asked = Instant::now();
        let got = client.ok(&format!("{base}/{}", part.uri)).await.is_some();
        if got {
            tally.parts.fetch_add(1, Ordering::Relaxed);
            (tally.fetches.lock().unwrap()).push(asked.elapsed().as_secs_f64());
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

/// A process and the children of any of its threads (nginx's workers, an FFmpeg Kawa
/// started).
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    pids
}

fn tree_cpu(pid: u32) -> f64 {
    tree(pid).iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

fn tree_rss_mib(pid: u32) -> f64 {
    tree(pid).iter().map(|p| rss_kib(*p) as f64).sum::<f64>() / 1024.0
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

/// Which server a row measures.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// Kawa's LL-HLS, HTTP/1.1.
    KawaH1,
    /// Kawa's LL-HLS, HTTP/2 over TLS.
    KawaH2,
    /// nginx-rtmp's plain HLS from disk.
    Nginx,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Self::KawaH1 => "Kawa LL-HLS, HTTP/1.1",
            Self::KawaH2 => "Kawa LL-HLS, HTTP/2 + TLS",
            Self::Nginx => "nginx plain HLS, HTTP/1.1",
        }
    }
}

/// What the viewers of one step are given.
#[derive(Clone)]
struct Target {
    server: Server,
    playlists: Vec<String>,
    /// Where HTTP/2 viewers connect, and their TLS settings.
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

fn ms(sorted: &[f64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    format!("{:.0}", percentile(sorted, p) * 1000.0)
}

/// The steps for one server: its cost with no viewer, then each viewer count.
async fn steps(pid: u32, streams: usize, viewer_counts: &[usize], seconds: u64, target: Target) {
    let label = target.server.label();
    let (cpu0, at0) = (tree_cpu(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (tree_cpu(pid) - cpu0) / at0.elapsed().as_secs_f64() * 100.0;
    let idle_rss = tree_rss_mib(pid);
    println!("| {label} | {streams} | 0 | {idle_cpu:.1} | | {idle_rss:.0} | | | | | | | | | | |");
    for &viewers in viewer_counts {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..viewers)
            .map(|v| {
                let stream = v % target.playlists.len();
                let playlist = target.playlists[stream].clone();
                let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
                match target.server {
                    Server::KawaH1 => {
                        let client = Http::H1(h1_client());
                        tokio::spawn(viewer(stream, playlist, client, tally, stop))
                    }
                    Server::KawaH2 => {
                        let (addr, config) = (target.addr, Arc::clone(&target.tls));
                        tokio::spawn(async move {
                            match h2_client::H2::connect(addr, config).await {
                                Ok(h2) => viewer(stream, playlist, Http::H2(h2), tally, stop).await,
                                Err(_) => {
                                    tally.errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        })
                    }
                    Server::Nginx => {
                        let every = Duration::from_secs(2);
                        tokio::spawn(plain_hls::viewer(playlist, every, tally, stop))
                    }
                }
            })
            .collect();
        // Everyone joined and settled: then the window.
        tokio::time::sleep(Duration::from_secs(3)).await;
        tally.delays.lock().unwrap().clear();
        tally.deliveries.lock().unwrap().clear();
        tally.fetches.lock().unwrap().clear();
        tally.parts.store(0, Ordering::Relaxed);
        tally.errors.store(0, Ordering::Relaxed);
        let (cpu0, me0, at0) = (tree_cpu(pid), cpu_seconds("self"), Instant::now());
        let mut rss = Vec::new();
        while at0.elapsed() < Duration::from_secs(seconds) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss.push(tree_rss_mib(pid));
        }
        let elapsed = at0.elapsed().as_secs_f64();
        let cpu = (tree_cpu(pid) - cpu0) / elapsed * 100.0;
        let mine = (cpu_seconds("self") - me0) / elapsed * 100.0;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        let mut delays = std::mem::take(&mut *tally.delays.lock().unwrap());
        delays.sort_by(f64::total_cmp);
        let spread = spread(std::mem::take(&mut *tally.deliveries.lock().unwrap()));
        let mut fetches = std::mem::take(&mut *tally.fetches.lock().unwrap());
        fetches.sort_by(f64::total_cmp);
        let rss_mean = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
        let per_viewer_cpu = (cpu - idle_cpu) / viewers as f64;
        let per_viewer_kb = (rss_mean - idle_rss) * 1024.0 / viewers as f64;
        println!(
            "| {label} | {streams} | {viewers} | {cpu:.1} | {per_viewer_cpu:.4} | {rss_mean:.0} | {per_viewer_kb:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {mine:.0} |",
            ms(&delays, 0.5),
            ms(&delays, 0.99),
            ms(&spread, 0.5),
            ms(&spread, 0.99),
            ms(&fetches, 0.5),
            ms(&fetches, 0.99),
            tally.parts.load(Ordering::Relaxed),
            tally.errors.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Kawa with `streams` publishers (HTTPS when `tls` gives a certificate and key), and its
/// playlists' URLs.
async fn start_kawa(
    streams: usize,
    input: &std::path::Path,
    tls: Option<(&str, &str, Arc<rustls::ClientConfig>)>,
) -> (Kawa, Vec<Publisher>, Vec<String>) {
    // Passthrough: this measures delivery. A ladder's FFmpeg per stream would take the
    // two cores from ten streams on (encoding is `cargo bench --bench ladder`'s).
    let mut builder = Kawa::builder().env("KAWA_HLS__PRESET", "passthrough");
    if let Some((cert, key, _)) = &tls {
        builder = builder
            .env("KAWA_HTTP__TLS_CERT", cert)
            .env("KAWA_HTTP__TLS_KEY", key);
    }
    let kawa = builder.start();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", kawa.http);
    let mut client = match &tls {
        Some((_, _, config)) => Http::H2(
            h2_client::H2::connect(kawa.http, Arc::clone(config))
                .await
                .unwrap(),
        ),
        None => Http::H1(h1_client()),
    };
    let mut publishers = Vec::new();
    let mut playlists = Vec::new();
    for i in 0..streams {
        let name = format!("v{i}");
        let key = client.create_stream(&base, &name).await;
        publishers.push(Publisher::start_file_loop(&kawa.rtmp_url(&key), input));
        playlists.push(format!("{base}/hls/{name}/source/index.m3u8"));
    }
    for url in &playlists {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = client
                .ok(url)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if text.is_some_and(|t| parts(&t).len() > 3) {
                break;
            }
            assert!(Instant::now() < deadline, "no playlist at {url}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    (kawa, publishers, playlists)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let stream_counts = list("KAWA_VIEWERS_STREAMS", "1,10,50");
    let viewer_counts = list("KAWA_VIEWERS", "100,300,1000");
    let seconds = env_number("KAWA_VIEWERS_SECONDS", 20);
    let servers = std::env::var("KAWA_VIEWERS_SERVERS").unwrap_or_else(|_| "h1,h2,nginx".into());
    let dir = tempfile::tempdir().unwrap();
    let input = source::make_source(dir.path());
    let (cert, key) = common::make_certificate(dir.path());
    let tls_config = h2_client::tls_config(&std::fs::read(&cert).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "Viewers per core, {seconds} s a step, default configuration but Kawa's preset: passthrough"
    );
    println!(
        "| server | streams | viewers | server CPU % (of a core) | per viewer | RSS MB | per viewer KB | availability to delivery p50 ms | p99 ms | after the first viewer p50 ms | p99 ms | fetch p50 ms | p99 ms | parts or segments | errors | viewers' CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        for &streams in &stream_counts {
            for server in [Server::KawaH1, Server::KawaH2] {
                let wanted = match server {
                    Server::KawaH1 => "h1",
                    _ => "h2",
                };
                if !servers.split(',').any(|s| s == wanted) {
                    continue;
                }
                let tls = (server == Server::KawaH2)
                    .then(|| (cert.as_str(), key.as_str(), Arc::clone(&tls_config)));
                let (kawa, publishers, playlists) = start_kawa(streams, &input, tls).await;
                let target = Target {
                    server,
                    playlists,
                    addr: kawa.http,
                    tls: Arc::clone(&tls_config),
                };
                steps(kawa.pid(), streams, &viewer_counts, seconds, target).await;
                drop(publishers);
                drop(kawa);
            }
            if !servers.split(',').any(|s| s == "nginx") {
                continue;
            }
            let nginx_dir = tempfile::tempdir().unwrap();
            let Some(nginx) = plain_hls::Nginx::start(nginx_dir.path(), 2) else {
                println!("| nginx plain HLS | {streams} | not installed (apt-get install nginx libnginx-mod-rtmp) |");
                continue;
            };
            let names: Vec<String> = (0..streams).map(|i| format!("v{i}")).collect();
            let publishers: Vec<_> = (names.iter())
                .map(|n| Publisher::start_file_loop(&nginx.rtmp_url(n), &input))
                .collect();
            let playlists: Vec<String> = names.iter().map(|n| nginx.playlist(n)).collect();
            for url in &playlists {
                wait_for("nginx's playlist", Duration::from_secs(30), || async {
                    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                    (text.matches("#EXTINF").count() >= 3).then_some(())
                })
                .await;
            }
            let target = Target {
                server: Server::Nginx,
                playlists,
                addr: ([127, 0, 0, 1], nginx.http_port).into(),
                tls: Arc::clone(&tls_config),
            };
            steps(nginx.pid(), streams, &viewer_counts, seconds, target).await;
            drop(publishers);
            drop(nginx);
        }
    });
}
