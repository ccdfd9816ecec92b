//! What keeping the newest parts in Redis costs (`cluster.replicate_parts`): a one-node
//! cluster (real `redis-server` and moto) with passthrough streams from real ffmpeg
//! publishers (a 320x240 clip with 2 s GOPs, sent as it is), run once without and once
//! with replication. For each it prints Kawa's CPU (its whole process tree), Redis's
//! CPU, the bytes Redis received and the memory it used, over the same stretch.
//!
//! `cargo bench --bench replication` (env: KAWA_BENCH_STREAMS, default 10;
//! KAWA_BENCH_SECONDS, default 60). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "cpu.rs"]
mod cpu;

use std::process::Command;
use std::time::Duration;

use common::cluster::{ReconnectingPublisher, node_builder};
use common::s3::BUCKET;
use common::{MotoServer, RedisServer, create_stream, env_number};

/// Clock ticks per second (`getconf CLK_TCK` on Linux).
const TICKS: f64 = 100.0;
/// Streams settle (playlists, GOP caches, first uploads) before the measure.
const WARM_UP: Duration = Duration::from_secs(10);

/// A field of `redis-cli INFO`, as a number.
fn info(redis: &RedisServer, section: &str, field: &str) -> f64 {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "INFO", section])
        .output()
        .expect("redis-cli (installed with redis-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    (text.lines())
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Figures {
    kawa_cpu: f64,
    redis_cpu: f64,
    redis_in_mb: f64,
    redis_mib: f64,
}

async fn run(replicate: bool, streams: usize, seconds: u64) -> Figures {
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let kawa = node_builder(0, &redis, &moto)
        .env("KAWA_HLS__PRESET", "passthrough")
        .env(
            "KAWA_CLUSTER__REPLICATE_PARTS",
            if replicate { "true" } else { "false" },
        )
        .start();
    let mut publishers = Vec::new();
    for i in 0..streams {
        let key = create_stream(&kawa, &format!("cost{i}")).await;
        // A clip encoded once, sent as it is (`-c copy`): the publishers cost little.
        publishers.push(ReconnectingPublisher::start(kawa.rtmp_url(&key)));
    }
    tokio::time::sleep(WARM_UP).await;
    let ticks = || (cpu::tree_ticks(kawa.pid()), cpu::tree_ticks(redis.pid()));
    let (kawa_0, redis_0) = ticks();
    let input_0 = info(&redis, "stats", "total_net_input_bytes");
    let mut memory: f64 = 0.0;
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        memory = memory.max(info(&redis, "memory", "used_memory"));
    }
    let (kawa_1, redis_1) = ticks();
    let input_1 = info(&redis, "stats", "total_net_input_bytes");
    drop(publishers);
    let per = |a: u64, b: u64| (b - a) as f64 / TICKS / seconds as f64 * 100.0;
    Figures {
        kawa_cpu: per(kawa_0, kawa_1),
        redis_cpu: per(redis_0, redis_1),
        redis_in_mb: (input_1 - input_0) / 1e6,
        redis_mib: memory / (1 << 20) as f64,
    }
}

fn main() {
    let streams = env_number("KAWA_BENCH_STREAMS", 10) as usize;
    let seconds = env_number("KAWA_BENCH_SECONDS", 60);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "replication: one node, {streams} passthrough streams (320x240), {seconds} s measured"
    );
    for replicate in [false, true] {
        let f = runtime.block_on(run(replicate, streams, seconds));
        println!(
            "  cluster.replicate_parts = {replicate}: Kawa CPU {:.1} % of a core, Redis CPU {:.1} %, Redis received {:.1} MB ({:.2} MB/s), Redis memory at most {:.1} MiB",
            f.kawa_cpu,
            f.redis_cpu,
            f.redis_in_mb,
            f.redis_in_mb / seconds as f64,
            f.redis_mib
        );
    }
}
