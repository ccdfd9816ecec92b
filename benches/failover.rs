//! Failover times of a Kawa cluster: three nodes on one Redis and one moto bucket, a
//! TCP balancer in front of their RTMP ports, an ffmpeg encoder that reconnects 200 ms
//! after its connection breaks. The owner of the stream is killed with SIGKILL, again
//! and again (each killed node is started again before the next kill); for each kill it
//! prints how long until the encoder reconnected, until another node held the path's
//! lease, and until that node's live playlist listed a part of the new session (the
//! stream is live again), counted from the reconnect.
//!
//! Then transcoder workers: a node encodes a small ladder on one of two `kawa
//! transcoder` workers; the busy worker is killed, again and again (and started again),
//! and it prints how long until both rungs had a new encoder's init segment.
//!
//! `cargo bench --bench failover` (env: KAWA_BENCH_KILLS, default 10;
//! KAWA_BENCH_WORKER_KILLS, default 5). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "stats.rs"]
mod stats;

use std::time::{Duration, Instant};

use common::cluster::{Balancer, ReconnectingPublisher, Worker, ladder_node, maps, node, owner};
use common::s3::BUCKET;
use common::{
    MotoServer, Publisher, RedisServer, create_stream, env_number, ffmpeg_children_of, wait_for,
};
use stats::percentile;

const PATH: &str = "failover";

/// Every URI a playlist names (segments, parts, maps, hints).
fn uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| match l.strip_prefix('#') {
        Some(tag) => tag.split("URI=\"").nth(1).and_then(|r| r.split('"').next()),
        None => Some(l),
    })
}

/// `{epoch}_...`: which session wrote it.
fn epoch(uri: &str) -> Option<&str> {
    uri.split('_')
        .next()
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

async fn live_playlist(kawa: &common::Kawa) -> String {
    let url = kawa.url(&format!("/hls/{PATH}/source/index.m3u8"));
    match reqwest::get(url).await {
        Ok(a) => a.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Whether `kawa`'s live playlist lists a part of a session not in `seen`.
async fn live_after(kawa: &common::Kawa, seen: &[String]) -> bool {
    let text = live_playlist(kawa).await;
    text.lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(|l| uris(l).next())
        .filter_map(epoch)
        .any(|e| !seen.iter().any(|s| s == e))
}

/// The sessions (epochs) `kawa`'s playlist names.
async fn epochs(kawa: &common::Kawa) -> Vec<String> {
    let text = live_playlist(kawa).await;
    let mut epochs: Vec<String> = uris(&text).filter_map(epoch).map(str::to_owned).collect();
    epochs.sort();
    epochs.dedup();
    epochs
}

/// Kills the busy worker `kills` times; seconds until both rungs were back, each time.
async fn worker_kills(redis: &RedisServer, kills: usize) -> Vec<f64> {
    const LADDER: &str = "ladder";
    let mut workers = [Worker::start(0, redis), Worker::start(1, redis)];
    let kawa = ladder_node(redis);
    let key = create_stream(&kawa, LADDER).await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 3600);
    let mut times = Vec::new();
    for kill in 0..kills {
        let busy = wait_for("a busy worker", Duration::from_secs(60), || async {
            workers
                .iter()
                .position(|w| !ffmpeg_children_of(w.pid()).is_empty())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = [
            maps(&kawa, LADDER, "180p").await,
            maps(&kawa, LADDER, "120p").await,
        ];
        workers[busy].kill();
        let killed = Instant::now();
        for (rung, before) in ["180p", "120p"].iter().zip(&before) {
            wait_for("the rungs back", Duration::from_secs(60), || async {
                let now = maps(&kawa, LADDER, rung).await;
                now.last().filter(|m| !before.contains(m)).map(|_| ())
            })
            .await;
        }
        let back = killed.elapsed().as_secs_f64();
        println!(
            "worker kill {:>2}: worker-{busy} killed; both rungs back after {back:.2} s",
            kill + 1
        );
        times.push(back);
        workers[busy] = Worker::start(busy, redis);
    }
    times
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let kills = env_number("KAWA_BENCH_KILLS", 10) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let redis = RedisServer::start();
        let moto = MotoServer::start();
        moto.public_bucket(BUCKET).await;
        let mut nodes: Vec<_> = (0..3).map(|i| node(i, &redis, &moto)).collect();
        let balancer = Balancer::start(nodes.iter().map(|k| k.rtmp).collect()).await;
        let key = create_stream(&nodes[0], PATH).await;
        let publisher = ReconnectingPublisher::start(balancer.rtmp_url(&key));
        let mut rows = Vec::new();
        for kill in 0..kills {
            // Steady state: an owner whose playlist has parts.
            let first = wait_for("an owner", Duration::from_secs(60), || async {
                owner(&redis, PATH)
            })
            .await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            let seen = epochs(&nodes[first]).await;
            let starts = publisher.start_count();
            nodes[first].kill();
            let killed = Instant::now();
            wait_for("the reconnect", Duration::from_secs(30), || async {
                (publisher.start_count() > starts).then_some(())
            })
            .await;
            let next = wait_for("a new owner", Duration::from_secs(30), || async {
                owner(&redis, PATH).filter(|o| *o != first)
            })
            .await;
            let leased = killed.elapsed();
            wait_for("live again", Duration::from_secs(30), || async {
                live_after(&nodes[next], &seen).await.then_some(())
            })
            .await;
            let reconnected = publisher.last_start();
            let live = reconnected.elapsed();
            let row = (
                (reconnected - killed).as_secs_f64(),
                leased.as_secs_f64(),
                live.as_secs_f64(),
            );
            println!(
                "kill {:>2}: node-{first} -> node-{next}: reconnect after {:.2} s, lease taken \
                 {:.2} s after the kill, live again {:.2} s after the reconnect",
                kill + 1,
                row.0,
                row.1,
                row.2
            );
            rows.push(row);
            nodes[first].start_again();
            balancer.set_backends(nodes.iter().map(|k| k.rtmp).collect());
        }
        let mut live: Vec<f64> = rows.iter().map(|r| r.2).collect();
        live.sort_by(f64::total_cmp);
        let mut total: Vec<f64> = rows.iter().map(|r| r.0 + r.2).collect();
        total.sort_by(f64::total_cmp);
        println!(
            "{} kills: live again after the reconnect: median {:.2} s, p95 {:.2} s, max {:.2} s; \
             from the kill: median {:.2} s, max {:.2} s",
            rows.len(),
            percentile(&live, 0.5),
            percentile(&live, 0.95),
            live.last().copied().unwrap_or(0.0),
            percentile(&total, 0.5),
            total.last().copied().unwrap_or(0.0),
        );
        drop(publisher);

        let mut back =
            worker_kills(&redis, env_number("KAWA_BENCH_WORKER_KILLS", 5) as usize).await;
        back.sort_by(f64::total_cmp);
        if !back.is_empty() {
            println!(
                "{} worker kills: rungs back after median {:.2} s, max {:.2} s",
                back.len(),
                percentile(&back, 0.5),
                back.last().copied().unwrap_or(0.0)
            );
        }
    });
}
