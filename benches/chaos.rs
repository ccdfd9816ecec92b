//! Chaos under load: a 3-node cluster (one Redis, one moto bucket, a TCP balancer in
//! front of the RTMP ports) with 20 streams, each with a small ladder, a publisher that
//! reconnects, and a reader polling its playlist on a random node. During the run:
//! random actor panics (every kind, through the fault hook), FFmpeg SIGKILLs, a Redis
//! restart, a 30 s S3 freeze, and a node SIGKILL every 2 minutes (node 0 is spared, so
//! its RSS slope covers the whole run). It prints the longest gap a reader saw (between
//! new parts, as an LL-HLS player sees it, and between new segments), each gap over 3 s
//! with the faults just before it, segments lost (locally: listed but served by no node;
//! in S3: listed but missing, audited beside the faults), playlists that broke a rule,
//! how long publishes waited to claim their path, node 0's RSS slope (also at a steady
//! load), and the actors and tasks alive at the end.
//!
//! `cargo bench --features fault-injection --bench chaos` (env: KAWA_CHAOS_SECONDS,
//! default 600; KAWA_CHAOS_STREAMS, default 20; KAWA_CHAOS_LOGS, a directory to keep
//! the nodes' logs in). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "chaos_support/reader.rs"]
mod reader;
#[path = "chaos_support/rss.rs"]
mod rss;
#[path = "chaos_support/s3_audit.rs"]
mod s3_audit;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Balancer, ReconnectingPublisher, node_builder};
use common::s3::BUCKET;
use common::{
    Kawa, MotoServer, RedisServer, SMALL_LADDER, create_stream, env_number, ffmpeg_children_of,
    metrics_text, rss_kib,
};
use reader::{Dice, Seen, reader};
use s3_audit::{S3Audit, Verdict, audit_s3};

const KINDS: [&str; 5] = [
    "session",
    "registry",
    "transcoder",
    "uploader",
    "connection",
];

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

/// The streams a node has a publisher for (`kawa_live_streams`), and the MiB live on
/// its heap (`kawa_heap_live_bytes`).
async fn load_and_heap(node: &Kawa) -> (u32, f64) {
    let text = metrics_text(node).await;
    let value =
        |name: &str| (text.lines()).find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok());
    let held = value("kawa_live_streams ").unwrap_or(0.0) as u32;
    (
        held,
        value("kawa_heap_live_bytes ").unwrap_or(0.0) / 1048576.0,
    )
}

/// Node 0's RSS and live heap in MiB, now.
async fn memory_now(node: &Kawa) -> (f64, f64) {
    (
        rss_kib(node.pid()) as f64 / 1024.0,
        load_and_heap(node).await.1,
    )
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
                    || l.starts_with("kawa_live_edges ")
            })
            .collect();
        let sum = |prefix: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.starts_with(prefix))
                .filter_map(value)
                .sum()
        };
        // An edge outlives its session only for the retention.
        alive.actors += sum("kawa_actors_alive{") + sum("kawa_live_edges ");
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
        let idle_before = memory_now(&nodes[0]).await;
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
        let audit = Arc::new(Mutex::new(S3Audit::default()));
        let auditor = tokio::spawn(audit_s3(s3.clone(), names.clone(), started, until, Arc::clone(&audit)));

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
                let (held, heap) = load_and_heap(&nodes[0]).await;
                let secs = started.elapsed().as_secs_f64();
                samples.push(rss::Sample { secs, held, mib: rss_kib(nodes[0].pid()) as f64 / 1024.0, heap });
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
        }
        for r in readers {
            let _ = r.await;
        }
        let _ = auditor.await;
        let elapsed = started.elapsed().as_secs_f64();
        drop(publishers);
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
                    .filter_map(|l| l.split("stream=\"").nth(1)?.split('"').next().map(str::to_owned))
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
        let idle_after = memory_now(&nodes[0]).await;
        // `KAWA_CHAOS_LOGS=dir` keeps every node's log (all its starts) for a closer look.
        if let Ok(dir) = std::env::var("KAWA_CHAOS_LOGS") {
            for (i, node) in nodes.iter().enumerate() {
                let path = std::path::Path::new(&dir).join(format!("node{i}.log"));
                if let Err(e) = std::fs::write(&path, node.logs()) {
                    println!("  cannot keep node {i}'s log in {}: {e}", path.display());
                }
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
        let audit = audit.lock().unwrap();
        println!("  segments lost: {} listed but served by no node ({} not served by the node that listed them)", seen.unserved.len(), seen.retried);
        for u in seen.unserved.iter().take(10) {
            println!("    not served: {u}");
            // What each node logged of that segment (its name is unique): where it was
            // cut, uploaded, or left out.
            let name = u.rsplit(' ').next().unwrap_or(u);
            for (i, node) in nodes.iter().enumerate() {
                for line in node.logs().lines().filter(|l| l.contains(name)).take(10) {
                    println!("      node {i}: {line}");
                }
            }
        }
        println!(
            "  S3: {} segments listed; {} missing (still listed, not there 3 s later), {} listed before they were there, {} left the window before the audit got to them; S3 playlists found {} of {} times",
            audit.listed.len(), audit.count(Verdict::Missing), audit.count(Verdict::Late), audit.count(Verdict::LeftFirst), audit.found, audit.asked
        );
        for (verdict, what) in [(Verdict::Missing, "missing"), (Verdict::Late, "listed before it was there")] {
            for (t, key) in audit.keys(verdict).iter().take(10) {
                println!("    {what}, first listed at {t} s: {key}");
            }
        }
        // How long each publish waited for its path (lease, state, the predecessor's
        // window): a takeover's readers wait for all of it.
        let mut claims: Vec<(u64, usize, String)> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            for line in node.logs().lines().filter(|l| l.contains("owns the path")) {
                let ms = line.split("claim_ms=").nth(1).and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
                if let Some(ms) = ms {
                    claims.push((ms, i, line.to_owned()));
                }
            }
        }
        claims.sort_unstable();
        if let Some((max, _, _)) = claims.last() {
            let at = |q: usize| claims[(claims.len() - 1) * q / 100].0;
            println!("  paths claimed: {}, claim took median {} ms, p90 {} ms, max {max} ms; the slowest:", claims.len(), at(50), at(90));
            for (_, node, line) in claims.iter().rev().take(5) {
                println!("    node {node}: {line}");
            }
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
        let (first, last) = (samples.first().copied().unwrap_or_default(), samples.last().copied().unwrap_or_default());
        println!("  node 0 RSS: {:.1} MiB holding {} streams -> {:.1} MiB holding {}; slope {:.1} MB/hour (it takes over killed nodes' streams)", first.mib, first.held, last.mib, last.held, rss::slope(&samples));
        match rss::steady_slope(&samples) {
            Some((slope, covered)) => println!("  node 0 RSS slope at a steady load (stretches holding the same streams, {covered:.0} s of the run): {slope:.1} MB/hour"),
            None => println!("  node 0 RSS slope at a steady load: no stretch of 80 s holding the same streams"),
        }
        // The curve itself, a sample a minute: MiB (streams held).
        let curve: Vec<String> = (samples.iter().step_by(12)).map(|s| format!("{:.1} ({})", s.mib, s.held)).collect();
        println!("  node 0 RSS per minute, MiB (streams held): {}", curve.join(", "));
        if let Some((slope, error, per_stream)) = rss::slope_beside_load(&samples) {
            println!("  node 0 RSS slope with the streams it holds taken out (MiB = a + b*hours + c*streams): {slope:.1} ± {error:.1} MB/hour, {per_stream:.2} MiB per stream");
        }
        let peaks = rss::with_peak_load(&samples);
        if let Some((slope, error, per_stream)) = rss::slope_beside_load(&peaks) {
            println!("  node 0 RSS slope with the most streams it held so far taken out (allocator high water): {slope:.1} ± {error:.1} MB/hour, {per_stream:.2} MiB per stream");
        }
        let (after, span) = rss::since_peak(&samples);
        if span >= 300.0 {
            let heap_after = rss::heap_as_mib(after);
            println!("  node 0 since it first held its most streams ({:.0} s): RSS slope {:.1} MB/hour, live heap slope {:.1} MB/hour", span, rss::slope(after), rss::slope(&heap_after));
        }
        let heap = rss::heap_as_mib(&samples);
        let curve: Vec<String> = (heap.iter().step_by(12)).map(|s| format!("{:.1} ({})", s.mib, s.held)).collect();
        println!("  node 0 live heap per minute, MiB (streams held): {}", curve.join(", "));
        if let Some((slope, error, per_stream)) = rss::slope_beside_load(&heap) {
            println!("  node 0 live heap slope with the streams it holds taken out: {slope:.1} ± {error:.1} MB/hour, {per_stream:.2} MiB per stream");
        }
        println!(
            "  node 0 idle, before the streams and once every stream ended: RSS {:.1} -> {:.1} MiB, live heap {:.1} -> {:.1} MiB",
            idle_before.0, idle_after.0, idle_before.1, idle_after.1
        );
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
        let series: Vec<String> = leftover.iter().map(|(_, paths)| paths.len().to_string()).collect();
        println!("  streams with metric series left per node: {}", series.join(", "));
        for (i, paths) in leftover.iter().filter(|(_, p)| !p.is_empty()) {
            println!("    node {i}: {}", paths.join(", "));
        }
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
