//! The stream list for dashboards: `GET /api/v1/streams?live=true` with paging, each
//! stream's viewers (distinct playlist readers over the last 30 s, also in `/metrics`)
//! and its thumbnail (a JPEG of a recent keyframe, checked with ffprobe).

mod common;

use std::time::Duration;

use common::{Kawa, Publisher, admin_get, create_stream, ffprobe_json, metrics_text, wait_for};
use serde_json::Value;

async fn list(kawa: &Kawa, query: &str) -> Value {
    admin_get(kawa, &format!("/api/v1/streams?{query}")).await
}

fn paths(list: &Value) -> Vec<&str> {
    list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["publish_path"].as_str().unwrap())
        .collect()
}

/// Reads the stream's playlist as a player would, with this user agent and claiming this
/// address in `X-Forwarded-For`.
async fn read_playlist(kawa: &Kawa, agent: &str, forwarded: &str) {
    let answer = reqwest::Client::new()
        .get(kawa.url("/hls/on-air/source/index.m3u8"))
        .header("user-agent", agent)
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

#[tokio::test]
async fn the_live_list_pages_and_counts_viewers() {
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "on-air").await;
    for path in ["off-air", "quiet"] {
        create_stream(&kawa, path).await;
    }
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for("the live playlist", Duration::from_secs(20), || async {
        let url = kawa.url("/hls/on-air/source/index.m3u8");
        reqwest::get(url)
            .await
            .ok()
            .filter(|a| a.status().is_success())
            .map(|_| ())
    })
    .await;

    // One client changing its user agent and the address it claims: still one viewer
    // (no proxy in front is trusted).
    for i in 0..50 {
        read_playlist(&kawa, &format!("viewer-{i}"), &format!("198.51.100.{i}")).await;
    }

    let live = list(&kawa, "live=true").await;
    assert_eq!(paths(&live), ["on-air"], "{live}");
    assert_eq!(live["streams"][0]["viewers"], 1, "{live}");
    assert_eq!(live["streams"][0]["live"], true);

    let offline = list(&kawa, "live=false&limit=1").await;
    assert_eq!(paths(&offline), ["off-air"], "{offline}");
    assert_eq!(offline["next"], "off-air");
    let rest = list(&kawa, "live=false&limit=1&after=off-air").await;
    assert_eq!(paths(&rest), ["quiet"], "{rest}");
    assert_eq!(rest["next"], Value::Null);

    let metrics = metrics_text(&kawa).await;
    assert!(
        metrics.contains("kawa_stream_viewers{stream=\"on-air\"} 1"),
        "{metrics}"
    );

    // The live stream links its thumbnail; the others have none.
    let url = live["streams"][0]["thumbnail_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.ends_with("/hls/on-air/thumbnail.jpg"), "{url}");
    assert_eq!(offline["streams"][0]["thumbnail_url"], Value::Null);
    let first = wait_for("the thumbnail", Duration::from_secs(20), || async {
        let answer = reqwest::get(&url).await.ok()?;
        (answer.status().is_success() && answer.headers()["content-type"] == "image/jpeg")
            .then_some(())?;
        answer.bytes().await.ok()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let jpeg = dir.path().join("thumbnail.jpg");
    std::fs::write(&jpeg, &first).unwrap();
    let probe = ffprobe_json(
        &["-show_entries", "stream=codec_name,width,height"],
        jpeg.to_str().unwrap(),
    );
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg", "{probe}");
    assert_eq!(probe["streams"][0]["width"], 320, "{probe}");
    assert_eq!(probe["streams"][0]["height"], 240, "{probe}");
    // A newer picture a few seconds later (the test source's clock moves).
    wait_for("a newer thumbnail", Duration::from_secs(15), || async {
        let now = reqwest::get(&url).await.ok()?.bytes().await.ok()?;
        (now != first).then_some(())
    })
    .await;
}
