//! What the ladder costs: Kawa's whole process tree (Kawa and its FFmpeg children)
//! making the 480p and 360p rungs of a 720p stream and packaging all three renditions,
//! against a bare FFmpeg making the same rungs from the same input with the same encoder
//! settings (the floor: what encoding alone costs).
//!
//! `cargo bench --bench ladder` (env: KAWA_BENCH_STREAMS, default 1; KAWA_BENCH_SECONDS,
//! default 30, after a 10 s warm-up). Figures are printed, never asserted.

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

/// The bare FFmpeg: Kawa's own rung command line, reading the FLV file in real time
/// instead of Kawa's TS pipe, writing its TS to /dev/null.
fn bare_ffmpeg(plan: &TranscodePlan, settings: &Settings, input: &std::path::Path) -> Child {
    let mut args = plan.ffmpeg_args(&settings.hls);
    let at = args.iter().position(|a| a == "-f").unwrap();
    // `-f mpegts -i pipe:0` -> `-re -stream_loop -1 -i FILE`
    args.splice(
        at..at + 4,
        [
            "-re".to_owned(),
            "-stream_loop".to_owned(),
            "-1".to_owned(),
            "-i".to_owned(),
            input.display().to_string(),
        ],
    );
    let last = args.len() - 1;
    args[last] = "/dev/null".to_owned();
    Command::new("ffmpeg")
        .arg("-y")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg")
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
            TagKind::Video => demuxer.video(tag.timestamp_ms, tag.body).ok(),
            TagKind::Audio => demuxer.audio(tag.timestamp_ms, tag.body).ok(),
            TagKind::Script => None,
        };
    }
    let settings = Settings::load(None).unwrap();
    let plan = TranscodePlan::new(demuxer.config(), &settings.hls);
    let rungs: Vec<&str> = plan.scaled().map(|r| r.name.as_str()).collect();

    let mut bare: Vec<Child> = (0..streams)
        .map(|_| bare_ffmpeg(&plan, &settings, &input))
        .collect();
    let pids: Vec<u32> = bare.iter().map(Child::id).collect();
    let bare_cpu = measure(&pids, seconds);
    for child in &mut bare {
        let _ = child.kill();
        let _ = child.wait();
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kawa_cpu = runtime.block_on(async {
        let kawa = Kawa::builder()
            .env("KAWA_HLS__PRESET", "ladder")
            .env("RUST_LOG", "warn,kawa::server=info")
            .start();
        let mut publishers = Vec::new();
        for i in 0..streams {
            let key = create_stream(&kawa, &format!("ladder{i}")).await;
            publishers.push(Publisher::start_file_loop(&kawa.rtmp_url(&key), &input));
        }
        let pid = kawa.pid();
        let cpu = tokio::task::spawn_blocking(move || measure(&[pid], seconds))
            .await
            .unwrap();
        assert_eq!(
            kawa.ffmpeg_children().len(),
            streams,
            "one FFmpeg per stream"
        );
        for p in &mut publishers {
            assert!(p.running(), "a publisher stopped: {}", p.stderr());
        }
        cpu
    });

    println!(
        "ladder {rungs:?} of a 3 Mbit/s 720p30 source, {streams} stream(s), {seconds} s after a {} s warm-up",
        WARM_UP.as_secs()
    );
    println!(
        "  bare FFmpeg making the rungs:       {:.1} % of one core per stream",
        bare_cpu / streams as f64
    );
    println!(
        "  Kawa's process tree (rungs + CMAF): {:.1} % of one core per stream",
        kawa_cpu / streams as f64
    );
    println!("  ratio Kawa / bare FFmpeg: {:.3}", kawa_cpu / bare_cpu);
}
