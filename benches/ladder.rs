//! What the ladder costs: Kawa's whole process tree (Kawa and its FFmpeg children)
//! making the 480p and 360p rungs of a 720p stream and packaging all three renditions
//! (and the thumbnails its FFmpeg makes every 5 s, which a dashboard reads),
//! against a bare FFmpeg making the same rungs from the same input with the same encoder
//! settings (the floor: what encoding alone costs).
//!
//! Both sides get their input the same way: an `ffmpeg -re -c copy` publisher sends the
//! file in real time (to Kawa over RTMP; to the bare FFmpeg as FLV through a pipe), so
//! both encoders share the machine with the same neighbour. The publisher is measured in
//! neither. Bare and Kawa take turns, KAWA_BENCH_ROUNDS times, so drift in the machine's
//! speed falls on both.
//!
//! `cargo bench --bench ladder` (env: KAWA_BENCH_STREAMS, default 1; KAWA_BENCH_SECONDS,
//! default 30, after a 10 s warm-up; KAWA_BENCH_ROUNDS, default 2). Figures are printed,
//! never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "cpu.rs"]
mod cpu;
#[path = "source.rs"]
mod source;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, env_number};
use kawa::config::Settings;
use kawa::media::demux::{FlvDemuxer, MediaEvent};
use kawa::media::flv::{FlvFileReader, TagKind};
use kawa::transcode::TranscodePlan;

const WARM_UP: Duration = Duration::from_secs(10);

/// CPU of the trees under `roots`, in % of one core, over `seconds` after the warm-up.
fn measure(roots: &[u32], seconds: u64) -> f64 {
    std::thread::sleep(WARM_UP);
    let start: u64 = roots.iter().map(|r| cpu::tree_ticks(*r)).sum();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let end: u64 = roots.iter().map(|r| cpu::tree_ticks(*r)).sum();
    (end - start) as f64 / 100.0 / started.elapsed().as_secs_f64() * 100.0
}

/// The bare FFmpeg: Kawa's own rung command line, reading FLV from a real-time
/// publisher through a pipe instead of Kawa's TS, writing its TS to /dev/null. Returns
/// the publisher and the encoder.
fn bare_ffmpeg(
    plan: &TranscodePlan,
    settings: &Settings,
    input: &std::path::Path,
) -> (Child, Child) {
    let mut publisher = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(input)
        .args(["-c", "copy", "-f", "flv", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let flv = publisher.stdout.take().unwrap();
    let mut args = plan.ffmpeg_args(&settings.hls, kawa::transcode::Extras::NONE);
    let at = args.iter().position(|a| a == "-f").unwrap();
    // `-f mpegts -i pipe:0` -> `-f flv -i pipe:0`
    args[at + 1] = "flv".to_owned();
    let last = args.len() - 1;
    args[last] = "/dev/null".to_owned();
    let encoder = Command::new("ffmpeg")
        .arg("-y")
        .args(&args)
        .stdin(Stdio::from(flv))
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    (publisher, encoder)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let streams = env_number("KAWA_BENCH_STREAMS", 1) as usize;
    let seconds = env_number("KAWA_BENCH_SECONDS", 30);
    let dir = tempfile::tempdir().unwrap();
    let input = source::make_source(dir.path());

    // The plan Kawa makes for this source.
    let flv = std::fs::read(&input).unwrap();
    let mut demuxer = FlvDemuxer::new();
    for tag in FlvFileReader::new(&flv).unwrap().flatten().take(10) {
        let _: Option<MediaEvent> = match tag.kind {
            TagKind::Video => demuxer
                .video(tag.timestamp_ms, &bytes::Bytes::copy_from_slice(tag.body))
                .ok(),
            TagKind::Audio => demuxer.audio(tag.timestamp_ms, tag.body).ok(),
            TagKind::Script => None,
        };
    }
    // Not `load`: the bench's own KAWA_BENCH_* variables are no settings.
    let settings = Settings::defaults().unwrap();
    let plan = TranscodePlan::new(demuxer.config(), &settings.hls);
    let rungs: Vec<&str> = plan.scaled().map(|r| r.name.as_str()).collect();

    let rounds = env_number("KAWA_BENCH_ROUNDS", 2) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut bare_total, mut kawa_total) = (0.0, 0.0);
    println!(
        "ladder {rungs:?} of a 3 Mbit/s 720p30 source, {streams} stream(s), {seconds} s after a {} s warm-up, {rounds} round(s)",
        WARM_UP.as_secs()
    );
    for round in 1..=rounds {
        let bare_cpu = measure_bare(&plan, &settings, &input, streams, seconds);
        let kawa_cpu = runtime.block_on(measure_kawa(&input, streams, seconds, round));
        println!(
            "  round {round}: bare FFmpeg {:.1} %, Kawa's process tree {:.1} % of one core per stream (ratio {:.3})",
            bare_cpu / streams as f64,
            kawa_cpu / streams as f64,
            kawa_cpu / bare_cpu
        );
        bare_total += bare_cpu;
        kawa_total += kawa_cpu;
    }
    let n = (rounds * streams) as f64;
    println!(
        "  bare FFmpeg making the rungs:       {:.1} % of one core per stream",
        bare_total / n
    );
    println!(
        "  Kawa's process tree (rungs + CMAF): {:.1} % of one core per stream",
        kawa_total / n
    );
    println!("  ratio Kawa / bare FFmpeg: {:.3}", kawa_total / bare_total);
}

fn measure_bare(
    plan: &TranscodePlan,
    settings: &Settings,
    input: &std::path::Path,
    streams: usize,
    seconds: u64,
) -> f64 {
    let mut bare: Vec<(Child, Child)> = (0..streams)
        .map(|_| bare_ffmpeg(plan, settings, input))
        .collect();
    let pids: Vec<u32> = bare.iter().map(|(_, encoder)| encoder.id()).collect();
    let cpu = measure(&pids, seconds);
    for (publisher, encoder) in &mut bare {
        for child in [publisher, encoder] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    cpu
}

async fn measure_kawa(input: &std::path::Path, streams: usize, seconds: u64, round: usize) -> f64 {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "ladder")
        .env("RUST_LOG", "warn,kawa::server=info")
        .start();
    let mut publishers = Vec::new();
    for i in 0..streams {
        let key = create_stream(&kawa, &format!("ladder{round}x{i}")).await;
        publishers.push(Publisher::start_file_loop(&kawa.rtmp_url(&key), input));
    }
    // A dashboard looking at every stream. The ladder's FFmpeg makes a thumbnail every
    // hls.thumbnail_seconds (5) whether or not anyone looks; its work counts in Kawa's
    // tree, and so would any picture made on demand.
    let thumbnails: Vec<String> = (0..streams)
        .map(|i| kawa.url(&format!("/hls/ladder{round}x{i}/thumbnail.jpg")))
        .collect();
    let dashboard = tokio::spawn(async move {
        loop {
            for url in &thumbnails {
                let _ = reqwest::get(url).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let pid = kawa.pid();
    let cpu = tokio::task::spawn_blocking(move || measure(&[pid], seconds))
        .await
        .unwrap();
    dashboard.abort();
    assert_eq!(
        kawa.ffmpeg_children().len(),
        streams,
        "one FFmpeg per stream"
    );
    for p in &mut publishers {
        assert!(p.running(), "a publisher stopped: {}", p.stderr());
    }
    cpu
}
