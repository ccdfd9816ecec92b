//! How far behind live a viewer plays: hls.js (low-latency mode, its defaults) in
//! headless Chromium plays a 720p30 stream with 2 s GOPs from Kawa for 30 s, and reports
//! its latency every 250 ms: hls.js's own `latency`, and the wall clock minus the
//! PROGRAM-DATE-TIME of the frame on screen (Kawa's PDT is the frame's ingest time).
//!
//! `cargo bench --bench viewer_latency` (env: KAWA_BENCH_RUNS, default 3;
//! KAWA_BENCH_SECONDS, default 30; KAWA_BENCH_INGEST, the front doors to measure one
//! after the other, default `rtmp,srt`; over SRT, PDT is stamped when Kawa receives the
//! frame, after SRT's 120 ms receive latency; KAWA_BENCH_PART_SECONDS, default 0.2). Needs `scripts/deps.sh test` (chromium, npm ci in
//! tests/player). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "source.rs"]
mod source;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Kawa, Publisher, create_stream, env_number, wait_for};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs = env_number("KAWA_BENCH_RUNS", 3);
    let seconds = env_number("KAWA_BENCH_SECONDS", 30);
    let dir = tempfile::tempdir().unwrap();
    let input = source::make_source(dir.path());
    let player = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/player");

    let ingests = std::env::var("KAWA_BENCH_INGEST").unwrap_or_else(|_| "rtmp,srt".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for ingest in ingests.split(',') {
        runtime.block_on(measure(ingest, runs, seconds, &input, &player));
    }
}

async fn measure(ingest: &str, runs: u64, seconds: u64, input: &Path, player: &Path) {
    {
        // Kawa starts with a clean environment: the part length is passed on here.
        let part = std::env::var("KAWA_BENCH_PART_SECONDS").unwrap_or_else(|_| "0.2".into());
        let kawa = Kawa::builder()
            .env("KAWA_HLS__PRESET", "passthrough")
            .env("KAWA_HLS__PART_SECONDS", &part)
            .env("RUST_LOG", "warn,kawa::server=info")
            .srt()
            .start();
        let key = create_stream(&kawa, "latency").await;
        let (url, format) = kawa.ingest_url(ingest, &key);
        let _publisher = Publisher::start_file_loop_as(&url, input, format);
        let master = kawa.url("/hls/latency/master.m3u8");
        wait_for("the master playlist", Duration::from_secs(30), || async {
            let r = reqwest::get(&master).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        println!(
            "hls.js (lowLatencyMode, defaults) playing a 720p30 2 s-GOP stream in {part} s parts, published over {ingest} for {seconds} s"
        );
        println!("run  start_s  stalls  hlsjs_median  hlsjs_p95  pdt_median  pdt_p95");
        let (mut hlsjs, mut pdt) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let output = Command::new("node")
                .current_dir(player)
                .arg("play.mjs")
                .arg(&master)
                .arg(seconds.to_string())
                .output()
                .expect("node (scripts/deps.sh test installs it)");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(r) = stdout
                .lines()
                .last()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            else {
                println!(
                    "{run}: no report: {stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                continue;
            };
            let get = |kind: &str, q: &str| r["latency"][kind][q].as_f64().unwrap_or(f64::NAN);
            println!(
                "{run:>3}  {:>7.2}  {:>6}  {:>12.3}  {:>9.3}  {:>10.3}  {:>7.3}",
                r["start_seconds"].as_f64().unwrap_or(f64::NAN),
                r["stalls"],
                get("hlsjs", "median"),
                get("hlsjs", "p95"),
                get("pdt", "median"),
                get("pdt", "p95"),
            );
            hlsjs.push(get("hlsjs", "median"));
            pdt.push(get("pdt", "median"));
        }
        println!(
            "median of the runs' medians: hls.js latency {:.3} s, behind the wall clock {:.3} s",
            median(hlsjs),
            median(pdt)
        );
    }
}
