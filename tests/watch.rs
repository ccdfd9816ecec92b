//! The player page (`/watch/{path}`) in a real browser (Debian's headless Chromium driven
//! by playwright-core): opened before the stream is live it says it is waiting; once the
//! publisher starts, its video plays at the stream's size and it says live.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Kawa, Publisher, create_stream, player_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_waits_for_the_stream_then_plays_it() {
    assert!(
        player_dir().join("node_modules/playwright-core").is_dir(),
        "tests/player needs `npm ci` (scripts/test.sh runs it)"
    );
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "watched").await;
    let page = kawa.url("/watch/watched");
    let viewer = std::thread::spawn(move || {
        Command::new("node")
            .current_dir(player_dir())
            .args(["watch.mjs", &page, "60"])
            .output()
            .expect("node")
    });
    // The page is up and waiting before anything is published.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let output = tokio::task::spawn_blocking(move || viewer.join().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().last().unwrap_or_else(|| panic!("{report}"));
    let r: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{report}"));
    assert!(output.status.success(), "the page did not play: {report}");
    assert!(
        r["first_status"].as_str().unwrap().starts_with("offline"),
        "{report}"
    );
    assert_eq!(r["status"], "live", "{report}");
    assert_eq!(r["resolution"], "320x240", "{report}");
    assert!(
        r["latency"].as_str().unwrap().ends_with("behind live"),
        "{report}"
    );
    assert_eq!(r["page_errors"], serde_json::json!([]), "{report}");
}

/// OBS's default keyframe interval (250 frames: 8.3 s at 30 fps): a viewer who opens the
/// page mid-GOP plays within 1.5 s of live, measured as the wall clock minus the
/// PROGRAM-DATE-TIME on screen (`hls.playingDate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_eight_seconds_apart_still_play_close_to_live() {
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "obs").await;
    let _publisher = Publisher::start_ffmpeg(
        &kawa.rtmp_url(&key),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "70",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "250",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    // Joins 5 s into the first GOP, 3.3 s before the next keyframe.
    common::wait_for("the stream", Duration::from_secs(20), || async {
        common::fetch_text(&kawa, "/hls/obs/master.m3u8").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = kawa.url("/watch/obs");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(player_dir())
            .args(["watch.mjs", &page, "50", "15"])
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().last().unwrap_or_else(|| panic!("{report}"));
    let r: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{report}"));
    assert!(output.status.success(), "the page did not play: {report}");
    let latency = r["latency_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no PROGRAM-DATE-TIME on screen: {report}"));
    eprintln!("8.3 s keyframe interval: {latency:.2} s behind live after 15 s of playing");
    assert!(latency <= 1.5, "{latency:.2} s behind live: {report}");
}
