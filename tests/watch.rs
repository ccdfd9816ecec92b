//! The player page (`/watch/{path}`) in a real browser (Debian's headless Chromium driven
//! by playwright-core): opened before the stream is live it says it is waiting; once the
//! publisher starts, its video plays at the stream's size and it says live.

mod common;

use std::time::Duration;

use common::{Kawa, Publisher, create_stream, player_dir};

/// Opens `page` in headless Chromium (tests/player/watch.mjs with `args`) until it has
/// played: its report, and the whole output for messages. The page must have played.
async fn watch(page: String, args: &'static [&'static str]) -> (serde_json::Value, String) {
    let mut all = vec![page];
    all.extend(args.iter().map(|a| a.to_string()));
    let (r, report, played) = common::node_report("watch.mjs", all).await;
    assert!(played, "the page did not play: {report}");
    (r, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_waits_for_the_stream_then_plays_it() {
    assert!(
        player_dir().join("node_modules/playwright-core").is_dir(),
        "tests/player needs `npm ci` (scripts/test.sh runs it)"
    );
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "watched").await;
    let viewer = tokio::spawn(watch(kawa.url("/watch/watched"), &["60"]));
    // The page is up and waiting before anything is published.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let (r, report) = viewer.await.unwrap();
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
/// page mid-GOP plays, and how far behind live is printed (the wall clock minus the
/// PROGRAM-DATE-TIME on screen, `hls.playingDate`) is within 1.5 s. It needs parts
/// listed back to a keyframe (hls.js goes on part by part only from an INDEPENDENT one)
/// and audio without holes where a segment is cut without a keyframe (Chromium's MSE
/// ends the buffered range at such a hole, and playing stalls there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_eight_seconds_apart_still_play_near_live() {
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "obs").await;
    let source = common::test_source(30, 70);
    let source: Vec<&str> = source.iter().map(String::as_str).collect();
    let _publisher = Publisher::start_ffmpeg(
        &kawa.rtmp_url(&key),
        &[
            &source[..],
            &[
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
        ]
        .concat(),
    );
    // Joins 5 s into the first GOP, 3.3 s before the next keyframe.
    common::wait_for("the stream", Duration::from_secs(20), || async {
        common::fetch_text(&kawa, "/hls/obs/master.m3u8").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r, report) = watch(kawa.url("/watch/obs"), &["50", "15"]).await;
    let latency = r["latency_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no PROGRAM-DATE-TIME on screen: {report}"));
    eprintln!("8.3 s keyframe interval: {latency:.2} s behind live after 15 s of playing");
    // It plays near live, not at the last keyframe 8 s back.
    assert!(latency < 1.5, "{latency:.2} s behind live: {report}");
}

/// hls.js on the player page, a stream with 2 s GOPs and B-frames (x264's defaults but
/// the keyframe interval, as many OBS setups send): over 20 s of playing, the median of
/// the wall clock minus the PROGRAM-DATE-TIME on screen is at most 1.0 s, and the video
/// never waits for data. The page sets hls.js's sync target and catch-up rate; the
/// playlist's PART-HOLD-BACK stays what every other player reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_plays_within_a_second_of_live() {
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "edge").await;
    let source = common::test_source(25, 90);
    let source: Vec<&str> = source.iter().map(String::as_str).collect();
    let encode = [
        "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac",
    ];
    let _publisher =
        Publisher::start_ffmpeg(&kawa.rtmp_url(&key), &[&source[..], &encode].concat());
    common::wait_for("the stream", Duration::from_secs(20), || async {
        common::fetch_text(&kawa, "/hls/edge/master.m3u8").await
    })
    .await;
    let (r, report) = watch(kawa.url("/watch/edge"), &["40", "8", "20"]).await;
    let median = r["latency_median"]
        .as_f64()
        .unwrap_or_else(|| panic!("no PROGRAM-DATE-TIME on screen: {report}"));
    eprintln!(
        "2 s GOPs: {median:.2} s behind live (median of {} readings over 20 s), {} stalls, \
         seeks to {}",
        r["latency_samples"], r["stalls"], r["seeks_to"]
    );
    assert_eq!(r["stalls"], 0, "{report}");
    assert!(median <= 1.0, "{median:.2} s behind live: {report}");
}
