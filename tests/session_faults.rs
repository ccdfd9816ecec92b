//! A stream session that panics ends its stream as a clean stop would: ENDLIST, its
//! metric series gone, its publisher disconnected, one log line; other streams go on.
//! The panic is injected through `TEST_KAWA_PANIC_PATH`, which only debug builds read.

mod common;

use std::time::Duration;

use common::{Kawa, Publisher, create_stream, fetch_text, metrics_text, stream_info, wait_for};

async fn playlist(kawa: &Kawa, path: &str) -> Option<String> {
    fetch_text(kawa, &format!("/hls/{path}/source/index.m3u8")).await
}

#[tokio::test]
async fn a_panicking_session_ends_its_stream_cleanly() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("TEST_KAWA_PANIC_PATH", "doomed")
        .start();
    let doomed_key = create_stream(&kawa, "doomed").await;
    let steady_key = create_stream(&kawa, "steady").await;
    let mut doomed = Publisher::start(&kawa.rtmp_url(&doomed_key), 60);
    let mut steady = Publisher::start(&kawa.rtmp_url(&steady_key), 60);

    // The 400th frame (about 6 s in) panics the session.
    let ended = wait_for(
        "ENDLIST on the doomed stream",
        Duration::from_secs(30),
        || async {
            playlist(&kawa, "doomed")
                .await
                .filter(|p| p.contains("#EXT-X-ENDLIST"))
        },
    )
    .await;
    assert!(ended.contains("#EXTINF"), "{ended}");
    assert!(
        doomed.wait_exit(Duration::from_secs(10)).is_some(),
        "the publisher was disconnected"
    );
    let logs = kawa.logs();
    assert_eq!(
        logs.matches("stream session panicked").count(),
        1,
        "one log line"
    );
    let info = stream_info(&kawa, "doomed").await;
    assert_eq!(info["live"], false, "{info}");
    let metrics = metrics_text(&kawa).await;
    assert!(
        !metrics.contains("\"doomed\""),
        "the stream's series are gone"
    );
    assert!(metrics.contains("\"steady\""));

    // The other stream carried on.
    let before = playlist(&kawa, "steady").await.unwrap_or_default();
    wait_for(
        "a new segment on the steady stream",
        Duration::from_secs(10),
        || async {
            playlist(&kawa, "steady")
                .await
                .filter(|p| *p != before && !p.contains("#EXT-X-ENDLIST"))
        },
    )
    .await;
    assert!(steady.running(), "{}", steady.stderr());
}

#[tokio::test]
async fn a_panic_in_the_registry_fails_one_publish_and_the_registry_goes_on() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("TEST_KAWA_REGISTRY_PANIC_PATH", "cursed")
        .start();
    let cursed_key = create_stream(&kawa, "cursed").await;
    let fine_key = create_stream(&kawa, "fine").await;
    let mut cursed = Publisher::start(&kawa.rtmp_url(&cursed_key), 20);
    let status = cursed
        .wait_exit(Duration::from_secs(10))
        .expect("the publish is refused");
    assert!(!status.success());
    assert!(
        kawa.logs()
            .contains("stream registry handler panicked; the registry goes on")
    );
    // The registry still runs: health is good and the next publish plays.
    let health = reqwest::get(kawa.url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
    let _fine = Publisher::start(&kawa.rtmp_url(&fine_key), 20);
    wait_for(
        "a segment on the next stream",
        Duration::from_secs(20),
        || async {
            playlist(&kawa, "fine")
                .await
                .filter(|p| p.contains("#EXTINF"))
        },
    )
    .await;
    let metrics = metrics_text(&kawa).await;
    assert!(
        metrics.contains(r#"kawa_publish_attempts_total{result="failed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_published_again_while_ending_keeps_its_files_and_series() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "again").await;
    // A short publish that stops cleanly (deleteStream) after 5 s...
    let mut first = Publisher::start(&kawa.rtmp_url(&key), 5);
    wait_for("a first segment", Duration::from_secs(20), || async {
        playlist(&kawa, "again")
            .await
            .filter(|p| p.contains("#EXTINF"))
    })
    .await;
    first
        .wait_exit(Duration::from_secs(15))
        .expect("the first publish ends");
    // ...and the next one at once, while the first session is still ending.
    let mut second = Publisher::start(&kawa.rtmp_url(&key), 30);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(second.running(), "{}", second.stderr());
    // The first session has ended by now; the successor's playlist has no ENDLIST and its
    // series are still exported and moving.
    let frames = || async {
        let metrics = metrics_text(&kawa).await;
        metrics
            .lines()
            .find(|l| l.starts_with("kawa_stream_ingest_frames_total") && l.contains("\"again\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let before = frames().await.expect("the successor's series is exported");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = frames().await.expect("the successor's series is exported");
    assert!(after > before, "{before} -> {after}");
    let text = playlist(&kawa, "again").await.unwrap();
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    assert!(kawa.logs().matches("stream ended").count() >= 1);
}
