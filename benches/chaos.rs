//! Chaos under load: a 3-node cluster (one Redis, one moto bucket, a TCP balancer in
//! front of the RTMP ports) with 20 streams, each with a small ladder, a publisher that
//! reconnects, and a reader polling its playlist on a random node. During the run:
//! random actor panics (every kind, through the fault hook), FFmpeg SIGKILLs, a Redis
//! restart, a 30 s S3 freeze, and a node SIGKILL every 2 minutes (node 0 is spared, so
//! its RSS slope covers the whole run). It prints the longest gap a reader saw (between
//! new parts, as an LL-HLS player sees it, and between new segments), each gap over 3 s
//! with the faults just before it, segments lost (locally: listed but served by no node;
//! in S3: listed but missing), playlists that broke a rule, how long publishes waited to
//! claim their path, node 0's RSS slope (also with the streams it holds factored out),
//! and the actors and tasks alive at the end.
//!
//! `cargo bench --features fault-injection --bench chaos` (env: KAWA_CHAOS_SECONDS,
//! default 600; KAWA_CHAOS_STREAMS, default 20). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Balancer, ReconnectingPublisher, node_builder};
use common::s3::{BUCKET, PREFIX, s3_has, s3_playlist};
use common::{
    Kawa, MotoServer, RedisServer, SMALL_LADDER, create_stream, env_number, ffmpeg_children_of,
    metrics_text, rss_kib,
};
use m3u8_rs::MediaPlaylist;

const KINDS: [&str; 5] = [
    "session",
    "registry",
    "transcoder",
    "uploader",
    "connection",
];

/// A small random number generator (no dependency for a benchmark's dice).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// How long readers waited for something new: a whole segment (a player that loads
/// segments) or a part (an LL-HLS player, which follows parts).
#[derive(Default)]
struct Gaps {
    longest: Duration,
    /// Every gap over 3 s (the goal): stream, seconds, when it ended (s into the run).
    over: Vec<(String, f64, f64)>,
}

impl Gaps {
    fn saw(&mut self, stream: &str, gap: Duration, ended: f64) {
        self.longest = self.longest.max(gap);
        if gap > Duration::from_secs(3) {
            self.over
                .push((stream.to_owned(), gap.as_secs_f64(), ended));
        }
    }

    /// Prints the gaps over 3 s, each with the faults of the 10 s before it began.
    fn print(&self, what: &str, events: &[(u64, String)]) {
        println!(
            "  longest gap between new {what}: {:.1} s; gaps over 3 s: {}",
            self.longest.as_secs_f64(),
            self.over.len()
        );
        for (stream, gap, ended) in &self.over {
            let began = ended - gap;
            let near: Vec<&str> = (events.iter())
                .filter(|(t, _)| (began - 10.0..=*ended).contains(&(*t as f64)))
                .map(|(_, e)| e.as_str())
                .collect();
            let near = if near.is_empty() {
                "no fault".to_owned()
            } else {
                near.join("; ")
            };
            println!("    {stream}: {gap:.1} s, {began:.0}..{ended:.0} s (near: {near})");
        }
    }
}

#[derive(Default)]
struct Seen {
    segments: Gaps,
    parts: Gaps,
    /// Segments a playlist listed that could not be fetched.
    unserved: Vec<String>,
    /// Segments the node that listed them did not serve (another node did, or none).
    retried: u64,
    /// Rules broken: the media sequence went back, a number changed its segment, the
    /// discontinuity sequence went back, the target duration changed.
    broken: Vec<String>,
    /// Where each rule was broken: the stream, the node that answered, the wall clock.
    broken_at: Vec<(String, usize, time::OffsetDateTime)>,
    polls: u64,
    errors: u64,
}

/// What one reader remembers of its stream's playlist.
struct Track {
    uris: BTreeMap<u64, String>,
    /// Numbers listed as `EXT-X-GAP` (a dead owner's unsaved segments): players never
    /// fetch them, and neither does the reader.
    gaps: std::collections::HashSet<u64>,
    media_sequence: u64,
    discontinuity_sequence: u64,
    target: Option<u64>,
    /// Every part URI listed so far (`EXT-X-PART`, which m3u8-rs does not parse).
    parts: std::collections::HashSet<String>,
}

/// Whether the playlist lists a part `track` has not seen.
fn new_part(track: &mut Track, playlist: &[u8]) -> bool {
    let text = String::from_utf8_lossy(playlist);
    let mut new = false;
    for line in text.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
        let uri = line
            .split("URI=\"")
            .nth(1)
            .and_then(|u| u.split('"').next());
        if let Some(uri) = uri {
            new |= track.parts.insert(uri.to_owned());
        }
    }
    new
}

/// `stream`: the stream's name, with when and from which node this playlist came.
fn check(track: &mut Track, p: &MediaPlaylist, stream: &str, seen: &mut Seen) -> bool {
    let mut new = false;
    if p.media_sequence < track.media_sequence {
        seen.broken.push(format!(
            "{stream}: media sequence {} -> {}",
            track.media_sequence, p.media_sequence
        ));
    }
    if p.discontinuity_sequence < track.discontinuity_sequence {
        seen.broken.push(format!(
            "{stream}: discontinuity sequence {} -> {}",
            track.discontinuity_sequence, p.discontinuity_sequence
        ));
    }
    if track.target.is_some_and(|t| t != p.target_duration) {
        seen.broken.push(format!(
            "{stream}: target duration changed to {}",
            p.target_duration
        ));
    }
    track.target = Some(p.target_duration);
    track.media_sequence = track.media_sequence.max(p.media_sequence);
    track.discontinuity_sequence = track.discontinuity_sequence.max(p.discontinuity_sequence);
    for (n, s) in (p.media_sequence..).zip(&p.segments) {
        if s.unknown_tags.iter().any(|t| t.tag == "X-GAP") {
            track.gaps.insert(n);
        }
        match track.uris.insert(n, s.uri.clone()) {
            None => new = true,
            Some(old) if old != s.uri => {
                seen.broken
                    .push(format!("{stream}: segment {n} was {old}, now {}", s.uri));
            }
            Some(_) => {}
        }
    }
    new
}

/// Reads `stream` as a player would, from a random node each time, until `until`.
async fn reader(
    stream: String,
    nodes: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Seen>>,
    started: Instant,
    until: Instant,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut dice = Dice(stream.bytes().map(u64::from).sum::<u64>() * 7919 + 1);
    let mut track = Track {
        uris: BTreeMap::new(),
        gaps: Default::default(),
        media_sequence: 0,
        discontinuity_sequence: 0,
        target: None,
        parts: Default::default(),
    };
    let (mut last_segment, mut last_part): (Option<Instant>, Option<Instant>) = (None, None);
    while Instant::now() < until {
        // Four times a second, so that a gap is measured within a quarter second.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (node, base) = {
            let nodes = nodes.lock().unwrap();
            let node = dice.below(nodes.len());
            (node, nodes[node].clone())
        };
        let url = format!("{base}/hls/{stream}/source/index.m3u8");
        let playlist = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        let parsed = playlist
            .as_deref()
            .and_then(|b| m3u8_rs::parse_media_playlist_res(b).ok());
        let Some(p) = parsed else {
            seen.lock().unwrap().errors += 1;
            continue;
        };
        let before = track.uris.keys().next_back().copied();
        if new_part(&mut track, playlist.as_deref().unwrap_or_default()) {
            if let Some(at) = last_part {
                let t = started.elapsed().as_secs_f64();
                seen.lock().unwrap().parts.saw(&stream, at.elapsed(), t);
            }
            last_part = Some(Instant::now());
        }
        let new = {
            let mut seen = seen.lock().unwrap();
            seen.polls += 1;
            let at = started.elapsed().as_secs_f64();
            let from = format!("{stream} (node {node}, {at:.0} s)");
            let rules_broken = seen.broken.len();
            let new = check(&mut track, &p, &from, &mut seen);
            if seen.broken.len() > rules_broken {
                let now = time::OffsetDateTime::now_utc();
                seen.broken_at.push((stream.clone(), node, now));
            }
            new
        };
        if new {
            // Fetch what is new, from the same node first; a player retries a failed
            // segment, so a node that died after listing it does not lose it: only a
            // segment no node serves is lost.
            for (n, uri) in track.uris.range(before.map_or(0, |b| b + 1)..) {
                if track.gaps.contains(n) {
                    continue;
                }
                let mut bases = vec![base.clone()];
                bases.extend(
                    nodes
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|b| **b != base)
                        .cloned(),
                );
                for (attempt, base) in bases.iter().enumerate() {
                    let url = format!("{base}/hls/{stream}/source/{uri}");
                    let got = match client.get(&url).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if got {
                        break;
                    }
                    let mut seen = seen.lock().unwrap();
                    if attempt == 0 {
                        seen.retried += 1;
                    }
                    if attempt + 1 == bases.len() {
                        seen.unserved.push(format!("{stream} #{n} {uri}"));
                    }
                }
            }
            if let Some(at) = last_segment {
                let t = started.elapsed().as_secs_f64();
                seen.lock().unwrap().segments.saw(&stream, at.elapsed(), t);
            }
            last_segment = Some(Instant::now());
        }
    }
}

/// The machine's busy and total CPU ticks so far (`/proc/stat`): a starved machine makes
/// gaps no server can avoid, so the benchmark says how busy it was.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = (stat.lines().next().unwrap_or_default().split_whitespace())
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The streams a node has a publisher for (`kawa_live_streams`).
async fn live_streams(node: &Kawa) -> f64 {
    let text = metrics_text(node).await;
    (text.lines())
        .find_map(|l| l.strip_prefix("kawa_live_streams ")?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What is alive on the nodes now.
struct Alive {
    /// Per node, its `kawa_actors_alive`, `kawa_tasks_alive` and
    /// `kawa_redis_connections` lines.
    lines: Vec<String>,
    actors: f64,
    /// Per node, its tasks less its Redis connections (each a task kept for good).
    tasks: Vec<f64>,
}

async fn alive_now(nodes: &[Kawa]) -> Alive {
    let mut alive = Alive {
        lines: Vec::new(),
        actors: 0.0,
        tasks: Vec::new(),
    };
    let value = |l: &&str| l.rsplit(' ').next()?.parse::<f64>().ok();
    for (i, node) in nodes.iter().enumerate() {
        let text = metrics_text(node).await;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("kawa_actors_alive{")
                    || l.starts_with("kawa_tasks_alive{")
                    || l.starts_with("kawa_redis_connections ")
            })
            .collect();
        let sum = |prefix: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.starts_with(prefix))
                .filter_map(value)
                .sum()
        };
        alive.actors += sum("kawa_actors_alive{");
        alive
            .tasks
            .push(sum("kawa_tasks_alive{") - sum("kawa_redis_connections "));
        alive.lines.push(format!("node {i}: {}", lines.join(", ")));
    }
    alive
}

/// Whether a log line names stream `name` (`chaos1`, not `chaos12`).
fn mentions(line: &str, name: &str) -> bool {
    (line.match_indices(name))
        .any(|(at, _)| !line[at + name.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Node 0's RSS (MiB) against time (hours) and the streams it holds, from samples
/// `(hours, streams, MiB)`: the plain slope, and by least squares over both, the MiB per
/// stream held and the slope with the streams held factored out. Node 0 takes over the
/// streams of every killed node, so its plain slope measures takeovers, not leaks.
struct RssFit {
    slope: f64,
    per_stream: f64,
    slope_held_streams: f64,
}

fn fit(samples: &[(f64, f64, f64)]) -> RssFit {
    let n = samples.len().max(1) as f64;
    let mean = |f: fn(&(f64, f64, f64)) -> f64| samples.iter().map(f).sum::<f64>() / n;
    let (mt, ms, mr) = (mean(|s| s.0), mean(|s| s.1), mean(|s| s.2));
    let sum = |f: &dyn Fn(f64, f64, f64) -> f64| -> f64 {
        samples
            .iter()
            .map(|&(t, s, r)| f(t - mt, s - ms, r - mr))
            .sum()
    };
    let (tt, ss, ts) = (
        sum(&|t, _, _| t * t),
        sum(&|_, s, _| s * s),
        sum(&|t, s, _| t * s),
    );
    let (tr, sr) = (sum(&|t, _, r| t * r), sum(&|_, s, r| s * r));
    let det = tt * ss - ts * ts;
    let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
    RssFit {
        slope: ratio(tr, tt),
        per_stream: ratio(tt * sr - ts * tr, det),
        slope_held_streams: ratio(ss * tr - ts * sr, det),
    }
}

async fn arm(kawa: &Kawa, actor: &str) -> bool {
    common::admin_client()
        .post(kawa.url("/debug/faults"))
        .json(&serde_json::json!({ "actor": actor }))
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::NO_CONTENT)
}

fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_number("KAWA_CHAOS_SECONDS", 600);
    let streams = env_number("KAWA_CHAOS_STREAMS", 20) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut redis = RedisServer::start();
        let moto = MotoServer::start();
        moto.public_bucket(BUCKET).await;
        let s3 = moto.client().await;
        let mut nodes: Vec<Kawa> = (0..3)
            .map(|i| {
                node_builder(i, &redis, &moto)
                    .config(SMALL_LADDER)
                    .env("KAWA_HLS__PRESET", "ladder")
                    .env("KAWA_HLS__RETENTION_SECONDS", "30")
                    .env("KAWA_S3__DELETE_GRACE_SECONDS", "10")
                    .env("KAWA_RTMP__MAX_CONNECTIONS_PER_IP", "4096")
                    .env("RUST_LOG", "info")
                    .start()
            })
            .collect();
        let hook = common::admin_client()
            .post(nodes[0].url("/debug/faults"))
            .json(&serde_json::json!({ "actor": "nobody" }))
            .send()
            .await
            .map(|r| r.status().as_u16());
        // With the hook built in, an unknown actor kind is a bad request; without, 404.
        if hook.ok() != Some(400) {
            println!("chaos: the fault hook is missing: run with `--features fault-injection`");
            return;
        }
        let before = alive_now(&nodes).await;
        let balancer = Balancer::start(nodes.iter().map(|k| k.rtmp).collect()).await;
        let urls = Arc::new(Mutex::new(nodes.iter().map(|k| k.url("")).map(|u| u.trim_end_matches('/').to_owned()).collect::<Vec<_>>()));
        let mut publishers = Vec::new();
        let names: Vec<String> = (0..streams).map(|i| format!("chaos{i}")).collect();
        for name in &names {
            let key = create_stream(&nodes[0], name).await;
            publishers.push(ReconnectingPublisher::start(balancer.rtmp_url(&key)));
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let readers: Vec<_> = names
            .iter()
            .map(|n| {
                let reader = reader(n.clone(), Arc::clone(&urls), Arc::clone(&seen), started, until);
                tokio::spawn(reader)
            })
            .collect();
        // Segments S3's playlists listed: when first listed, and whether each was in S3
        // then.
        let s3_listed: Arc<Mutex<HashMap<String, (u64, bool)>>> = Arc::default();
        let mut s3_checks = (0u32, 0u32);

        let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
        let mut events: Vec<(u64, String)> = Vec::new();
        let mut samples = Vec::new();
        // Machine CPU busy, per minute of the run.
        let mut busy = Vec::new();
        let mut minute_start = cpu_ticks();
        let (mut next_panic, mut next_ffmpeg, mut next_node) = (10u64, 15u64, 120u64);
        let (redis_at, s3_at) = (seconds / 3, 2 * seconds / 3);
        let (mut redis_done, mut s3_done) = (false, false);
        let mut victim = 1;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let t = started.elapsed().as_secs();
            if t.is_multiple_of(5) {
                let held = live_streams(&nodes[0]).await;
                samples.push((started.elapsed().as_secs_f64() / 3600.0, held, rss_kib(nodes[0].pid()) as f64 / 1024.0));
            }
            if t / 60 > busy.len() as u64 {
                let now = cpu_ticks();
                let (b, total) = (now.0 - minute_start.0, now.1 - minute_start.1);
                busy.push(100 * b / total.max(1));
                minute_start = now;
            }
            if t >= next_panic {
                let kind = KINDS[dice.below(KINDS.len())];
                let node = dice.below(3);
                if arm(&nodes[node], kind).await {
                    events.push((t, format!("panic armed in a {kind} on node {node}")));
                }
                next_panic += 10 + dice.below(10) as u64;
            }
            if t >= next_ffmpeg {
                let node = dice.below(3);
                let children = ffmpeg_children_of(nodes[node].pid());
                if !children.is_empty() {
                    let pid = children[dice.below(children.len())];
                    signal(pid, "-9");
                    events.push((t, format!("FFmpeg {pid} on node {node} SIGKILLed")));
                }
                next_ffmpeg += 15 + dice.below(15) as u64;
            }
            if t >= next_node {
                nodes[victim].kill();
                events.push((t, format!("node {victim} SIGKILLed")));
                tokio::time::sleep(Duration::from_secs(5)).await;
                nodes[victim].start_again();
                balancer.set_backends(nodes.iter().map(|k| k.rtmp).collect());
                *urls.lock().unwrap() = nodes.iter().map(|k| k.url("").trim_end_matches('/').to_owned()).collect();
                victim = 3 - victim;
                next_node += 120;
            }
            if !redis_done && t >= redis_at {
                redis.kill();
                events.push((t, "Redis SIGKILLed, started again 2 s later".to_owned()));
                tokio::time::sleep(Duration::from_secs(2)).await;
                redis.restart();
                redis_done = true;
            }
            if !s3_done && t >= s3_at {
                signal(moto.pid(), "-STOP");
                events.push((t, "S3 frozen for 30 s".to_owned()));
                for _ in 0..30 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                signal(moto.pid(), "-CONT");
                s3_done = true;
            }
            if t.is_multiple_of(5) {
                // Each segment an S3 playlist lists, checked once, when first listed:
                // the playlist must never point at an object not there (old ones are
                // deleted on purpose, `s3.delete_grace_seconds` after they leave it).
                for name in &names {
                    s3_checks.0 += 1;
                    let Some(p) = s3_playlist(&s3, name).await else {
                        continue;
                    };
                    s3_checks.1 += 1;
                    // A dead owner's unsaved segments are listed as EXT-X-GAP: never
                    // fetched, never there.
                    let listed = p.segments.iter().filter(|s| !s.unknown_tags.iter().any(|t| t.tag == "X-GAP"));
                    for seg in listed {
                        let key = format!("{PREFIX}/{name}/source/{}", seg.uri);
                        if s3_listed.lock().unwrap().contains_key(&key) {
                            continue;
                        }
                        let there = s3_has(&s3, &key).await;
                        s3_listed.lock().unwrap().insert(key, (t, there));
                    }
                }
            }
        }
        for r in readers {
            let _ = r.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        drop(publishers);
        let listed: Vec<String> = s3_listed.lock().unwrap().keys().cloned().collect();
        let mut missing: Vec<(u64, String)> = (s3_listed.lock().unwrap().iter())
            .filter(|(_, (_, there))| !*there)
            .map(|(k, (t, _))| (*t, k.clone()))
            .collect();
        missing.sort();
        // Listed before it was there, or never there at all.
        let mut late = Vec::new();
        for (_, key) in &missing {
            late.push(s3_has(&s3, key).await);
        }
        // Let every stream end: the reconnect grace (10 s), FFmpeg's last output (10 s at
        // most), 30 s of retention, deletes 10 s after the window: about a minute. Then
        // what is still alive is counted every 5 s, up to two minutes after the stop;
        // an actor still there at the end is left over.
        let stopped = Instant::now();
        let mut alive = Alive { lines: Vec::new(), actors: 0.0, tasks: Vec::new() };
        let mut settled = None;
        // Per node, the streams whose series are still there at the last count.
        let mut leftover: Vec<(usize, Vec<String>)> = Vec::new();
        // An idle S3 connection is a task too, closed after 90 s unused.
        while stopped.elapsed() < Duration::from_secs(240) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            leftover.clear();
            alive = alive_now(&nodes).await;
            for (i, node) in nodes.iter().enumerate() {
                let text = metrics_text(node).await;
            let mut paths: Vec<String> = text
                    .lines()
                    .filter(|l| l.starts_with("kawa_stream"))
                    .filter_map(|l| l.split("path=\"").nth(1)?.split('"').next().map(str::to_owned))
                    .collect();
                paths.sort();
                paths.dedup();
                leftover.push((i, paths));
            }
            let extra = alive.tasks.iter().zip(&before.tasks).any(|(now, then)| now > then);
            if alive.actors == 0.0 && !extra {
                settled = Some(stopped.elapsed());
                break;
            }
        }
        let seen = seen.lock().unwrap();
        println!("chaos: 3 nodes, {streams} streams with a small ladder and a reader each, {elapsed:.0} s");
        match settled {
            Some(after) => println!("  every actor and task gone {:.0} s after the publishers stopped", after.as_secs_f64()),
            None => println!("  actors or tasks still alive 240 s after the publishers stopped (below)"),
        }
        for (t, e) in &events {
            println!("  {t:>4} s: {e}");
        }
        let busy: Vec<String> = busy.iter().map(|b| format!("{b} %")).collect();
        println!("  machine CPU busy, per minute: {}", busy.join(", "));
        println!("  playlist polls: {}, {} failed", seen.polls, seen.errors);
        seen.parts.print("parts (an LL-HLS reader)", &events);
        seen.segments.print("segments (a reader of whole segments)", &events);
        println!("  segments lost: {} listed but served by no node ({} not served by the node that listed them); {} of {} listed in S3 missing there ({} there later); S3 playlists found {} of {} times", seen.unserved.len(), seen.retried, missing.len(), listed.len(), late.iter().filter(|l| **l).count(), s3_checks.1, s3_checks.0);
        for u in seen.unserved.iter().take(10) {
            println!("    not served: {u}");
        }
        for ((t, m), late) in missing.iter().zip(&late).take(10) {
            let then = if *late { "there later" } else { "not there at the end: never uploaded, or deleted after leaving the playlist" };
            println!("    not in S3 at {t} s: {m} ({then})");
        }
        // How long each publish waited for its path (lease, state, the predecessor's
        // window): a takeover's readers wait for all of it.
        let mut claims: Vec<u64> = (nodes.iter())
            .flat_map(|n| n.logs().lines().filter(|l| l.contains("owns the path")).filter_map(|l| l.split("claim_ms=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect::<Vec<u64>>())
            .collect();
        claims.sort_unstable();
        if let Some(max) = claims.last() {
            let at = |q: usize| claims[(claims.len() - 1) * q / 100];
            println!("  paths claimed: {}, claim took median {} ms, p90 {} ms, max {max} ms", claims.len(), at(50), at(90));
        }
        println!("  playlists that broke a rule: {}", seen.broken.len());
        for b in seen.broken.iter().take(10) {
            println!("    {b}");
        }
        // What the answering node said about the stream in the 30 s before its first
        // broken rule (its log survives its restarts): where to look for why.
        let mut told = std::collections::HashSet::new();
        for (stream, node, at) in &seen.broken_at {
            if !told.insert((stream.clone(), *node)) || told.len() > 3 {
                continue;
            }
            let stamp = |t: time::OffsetDateTime| {
                let f = time::format_description::well_known::Rfc3339;
                t.format(&f).unwrap_or_default().chars().take(19).collect::<String>()
            };
            let (from, to) = (stamp(*at - Duration::from_secs(30)), stamp(*at + Duration::from_secs(1)));
            let logs = nodes[*node].logs();
            let lines: Vec<&str> = logs
                .lines()
                .filter(|l| mentions(l, stream))
                .filter(|l| l.get(..19).is_some_and(|t| (from.as_str()..=to.as_str()).contains(&t)))
                .collect();
            println!("  node {node}, {stream}: its log in the 30 s before the first broken rule");
            for line in &lines[lines.len().saturating_sub(40)..] {
                println!("    {line}");
            }
        }
        let rss = fit(&samples);
        let (first, last) = (samples.first().copied().unwrap_or_default(), samples.last().copied().unwrap_or_default());
        println!("  node 0 RSS: {:.1} MiB holding {} streams -> {:.1} MiB holding {}; slope {:.1} MB/hour; with the streams it holds factored out (least squares, {:.2} MiB per stream): {:.1} MB/hour", first.2, first.1, last.2, last.1, rss.slope, rss.per_stream, rss.slope_held_streams);
        println!("  alive before the streams started:");
        for a in &before.lines {
            println!("    {a}");
        }
        println!("  alive at the last count:");
        for a in &alive.lines {
            println!("    {a}");
        }
        let left: Vec<String> = (alive.tasks.iter().zip(&before.tasks))
            .map(|(now, then)| format!("{:+}", now - then))
            .collect();
        println!("  tasks left over per node (beyond the start and the Redis connections): {}", left.join(", "));
        if settled.is_none() {
            // What the streams still alive said last: where to look for why they stay.
            for (i, paths) in &leftover {
                let logs = nodes[*i].logs();
                for path in paths {
                    let name = path.rsplit('/').next().unwrap_or(path);
                    let mine: Vec<&str> = logs
                        .lines()
                        .filter(|l| mentions(l, name))
                        .collect();
                    println!("  node {i}, stream {path} still alive; its last log lines:");
                    for line in &mine[mine.len().saturating_sub(25)..] {
                        println!("    {line}");
                    }
                }
            }
        }
    });
}
