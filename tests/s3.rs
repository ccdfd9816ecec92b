//! S3 delivery against a real S3-compatible server (moto), through outages and crashes.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::s3::{BUCKET, PREFIX, s3_has, s3_playlist, with_s3};
use common::{
    Kawa, MotoServer, Publisher, TcpRelay, create_stream, metric_value, metrics_text, wait_for,
};
use m3u8_rs::{MediaPlaylist, Playlist};

async fn local_playlist(kawa: &Kawa, stream: &str) -> Option<MediaPlaylist> {
    let url = kawa.url(&format!("/hls/{stream}/source/index.m3u8"));
    let body = reqwest::get(url).await.ok()?.bytes().await.ok()?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(Playlist::MediaPlaylist(p)) => Some(p),
        _ => None,
    }
}

/// Every segment an S3 playlist lists is in S3: the invariant a CDN viewer relies on.
async fn assert_s3_playlist_complete(client: &aws_sdk_s3::Client, stream: &str) {
    if let Some(p) = s3_playlist(client, stream).await {
        for s in &p.segments {
            let key = format!("{PREFIX}/{stream}/source/{}", s.uri);
            assert!(
                s3_has(client, &key).await,
                "S3 playlist lists {key}, which is not in S3"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_is_delivered_to_s3_and_plays_from_there() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = with_s3(Kawa::builder(), &moto.endpoint()).start();
    let key = create_stream(&kawa, "cdn").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 7);
    // A viewer's ask makes the stream's picture, which goes to the bucket too.
    wait_for("a thumbnail", Duration::from_secs(20), || async {
        let answer = reqwest::get(kawa.url("/hls/cdn/thumbnail.jpg"))
            .await
            .ok()?;
        (answer.status().is_success() && answer.headers()["content-type"] == "image/jpeg")
            .then_some(())
    })
    .await;
    assert!(
        publisher
            .wait_exit(Duration::from_secs(30))
            .unwrap()
            .success()
    );

    let ended = wait_for("ENDLIST in S3", Duration::from_secs(30), || async {
        s3_playlist(&client, "cdn").await.filter(|p| p.end_list)
    })
    .await;
    assert!(ended.segments.len() >= 3);
    assert_s3_playlist_complete(&client, "cdn").await;

    // Content-Type and Cache-Control on each kind of object.
    let listed = client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}/cdn/"))
        .send()
        .await
        .unwrap();
    let keys: BTreeSet<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert!(keys.contains("live/cdn/master.m3u8"), "{keys:?}");
    assert!(keys.contains("live/cdn/source/index.m3u8"));
    for (key, content_type, cache) in [
        (
            "live/cdn/master.m3u8".to_owned(),
            "application/vnd.apple.mpegurl",
            "max-age=1",
        ),
        (
            "live/cdn/source/index.m3u8".to_owned(),
            "application/vnd.apple.mpegurl",
            "max-age=1",
        ),
        (
            format!("live/cdn/source/{}", ended.segments[0].uri),
            "video/mp4",
            "immutable",
        ),
        // The picture a viewer asked for goes to the bucket too.
        (
            "live/cdn/thumbnail.jpg".to_owned(),
            "image/jpeg",
            "max-age=5",
        ),
    ] {
        let head = client
            .head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some(content_type), "{key}");
        assert!(
            head.cache_control().unwrap_or_default().contains(cache),
            "{key}"
        );
    }

    // A player reads the master straight from the S3 server's HTTP endpoint.
    let url = format!("{}/{BUCKET}/{PREFIX}/cdn/master.m3u8", moto.endpoint());
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            &url,
        ])
        .output()
        .unwrap();
    let types = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success() && types.contains("video") && types.contains("audio"),
        "{types}"
    );
}

#[tokio::test]
async fn an_s3_outage_loses_nothing_and_never_pauses_local_viewers() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let mut relay = TcpRelay::start(SocketAddr::from(([127, 0, 0, 1], moto.port))).await;
    let kawa = with_s3(Kawa::builder(), &relay.endpoint()).start();
    let key = create_stream(&kawa, "outage").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 90);
    wait_for("segments in S3", Duration::from_secs(30), || async {
        s3_playlist(&client, "outage")
            .await
            .filter(|p| p.segments.len() >= 2)
    })
    .await;

    // The S3 endpoint dies for 20 s.
    relay.down().await;
    let outage_started = Instant::now();
    let mut listed_during_outage = BTreeSet::new();
    let mut last_local = 0;
    let mut last_progress = Instant::now();
    while outage_started.elapsed() < Duration::from_secs(20) {
        if let Some(p) = local_playlist(&kawa, "outage").await {
            let last = p.media_sequence + p.segments.len() as u64;
            if last > last_local {
                last_local = last;
                last_progress = Instant::now();
            }
            listed_during_outage.extend(p.segments.iter().map(|s| s.uri.clone()));
        }
        // Kawa's own HLS keeps going: a new segment at least every 2 s segment + slack.
        assert!(
            last_progress.elapsed() < Duration::from_secs(5),
            "local playlist paused during the S3 outage"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = metrics_text(&kawa).await;
    let depth_line = metrics
        .lines()
        .find(|l| l.starts_with("kawa_upload_queue_depth{") && l.contains("stream=\"outage\""))
        .expect("queue depth series");
    let depth: f64 = depth_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(depth >= 5.0, "work queued during the outage: {depth_line}");
    assert!(metrics.contains("kawa_upload_failures_total{sink=\"s3\",stream=\"outage\"}"));

    // S3 comes back: everything listed locally during the outage reaches the bucket, and
    // at no time does the bucket's playlist list a missing segment.
    relay.up().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_s3_playlist_complete(&client, "outage").await;
        let mut missing = 0;
        for uri in &listed_during_outage {
            if !s3_has(&client, &format!("{PREFIX}/outage/source/{uri}")).await {
                missing += 1;
            }
        }
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} segments never reached S3"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(listed_during_outage.len() >= 8, "{listed_during_outage:?}");
    assert!(publisher.running());
}

#[tokio::test]
async fn uploads_spilled_before_a_crash_complete_after_the_restart() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let mut relay = TcpRelay::start(SocketAddr::from(([127, 0, 0, 1], moto.port))).await;
    let mut kawa = with_s3(Kawa::builder(), &relay.endpoint()).start();
    let key = create_stream(&kawa, "crash").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for("a segment in S3", Duration::from_secs(30), || async {
        s3_playlist(&client, "crash")
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;

    relay.down().await;
    let before_crash = wait_for(
        "segments during the outage",
        Duration::from_secs(20),
        || async {
            let p = local_playlist(&kawa, "crash").await?;
            (p.segments.len() >= 5).then_some(p)
        },
    )
    .await;
    let pending: Vec<String> = before_crash
        .segments
        .iter()
        .map(|s| s.uri.clone())
        .collect();

    // SIGKILL during the outage; Kawa comes back, then S3 does.
    kawa.kill_and_restart();
    relay.up().await;
    wait_for("the spilled uploads", Duration::from_secs(60), || async {
        for uri in &pending {
            if !s3_has(&client, &format!("{PREFIX}/crash/source/{uri}")).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_s3_playlist_complete(&client, "crash").await;
    assert!(kawa.logs().contains("resuming pending uploads"));
}

/// The uploader cannot open its spool (a file stands where its folder goes: a removed
/// or full disk looks the same to it): it is restarted until it can, and then delivers
/// everything the stream made meanwhile, from its first segment.
#[tokio::test]
async fn an_uploader_without_its_spool_is_restarted_and_delivers_everything() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = with_s3(Kawa::builder(), &moto.endpoint()).start();
    let blocker = kawa.data_dir.join("spool/s3/nospool");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a folder").unwrap();
    let key = create_stream(&kawa, "nospool").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for("three local segments", Duration::from_secs(20), || async {
        local_playlist(&kawa, "nospool")
            .await
            .filter(|p| p.segments.len() >= 3)
    })
    .await;
    assert!(s3_playlist(&client, "nospool").await.is_none());
    let restarts = |text: String| {
        text.lines()
            .find(|l| l.starts_with("kawa_actor_restarts_total{actor=\"uploader\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        restarts(metrics_text(&kawa).await) >= 2,
        "restarted while it could not open"
    );

    std::fs::remove_file(&blocker).unwrap();
    // Everything made while the spool was away reaches S3 (held in memory meanwhile).
    let local = local_playlist(&kawa, "nospool").await.unwrap();
    for segment in &local.segments {
        let key = format!("{PREFIX}/nospool/source/{}", segment.uri);
        wait_for(&key, Duration::from_secs(30), || async {
            s3_has(&client, &key).await.then_some(())
        })
        .await;
    }
    wait_for("the playlist in S3", Duration::from_secs(20), || {
        s3_playlist(&client, "nospool")
    })
    .await;
}

/// An uploader that panics (the fault hook) is restarted from its spool: every segment
/// the stream made reaches S3, in order.
#[tokio::test]
async fn an_uploader_that_panics_is_restarted_and_delivers_everything() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = with_s3(Kawa::builder(), &moto.endpoint()).start();
    let key = create_stream(&kawa, "shaky").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 12);
    wait_for("the stream in S3", Duration::from_secs(20), || async {
        s3_playlist(&client, "shaky")
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;
    for _ in 0..2 {
        common::inject_panic(&kawa, "uploader", Some("shaky")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    publisher
        .wait_exit(Duration::from_secs(30))
        .expect("the publish ends");
    let local = wait_for("the local ENDLIST", Duration::from_secs(20), || async {
        local_playlist(&kawa, "shaky").await.filter(|p| p.end_list)
    })
    .await;
    let s3 = wait_for("the S3 ENDLIST", Duration::from_secs(30), || async {
        s3_playlist(&client, "shaky").await.filter(|p| p.end_list)
    })
    .await;
    let uris = |p: &MediaPlaylist| p.segments.iter().map(|s| s.uri.clone()).collect::<Vec<_>>();
    assert_eq!(uris(&s3), uris(&local));
    assert_s3_playlist_complete(&client, "shaky").await;
    let metrics = metrics_text(&kawa).await;
    assert!(
        metrics.contains(r#"kawa_actor_panics_total{actor="uploader"} 2"#)
            && metrics.contains(r#"kawa_actor_restarts_total{actor="uploader"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn segments_that_left_the_window_are_deleted_after_the_grace() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    // 1 s segments (the test publisher makes a keyframe every second), a 1 s grace.
    let kawa = with_s3(Kawa::builder(), &moto.endpoint())
        .env("KAWA_HLS__SEGMENT_SECONDS", "1")
        .env("KAWA_S3__DELETE_GRACE_SECONDS", "1")
        .start();
    let key = create_stream(&kawa, "window").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 40);
    // A segment leaves the 6-segment playlist, then Kawa keeps it for another window
    // before asking for its removal, then S3 waits out the grace.
    let first = wait_for(
        "the first segment in S3",
        Duration::from_secs(20),
        || async {
            s3_playlist(&client, "window")
                .await?
                .segments
                .first()
                .map(|s| s.uri.clone())
        },
    )
    .await;
    let first_key = format!("{PREFIX}/window/source/{first}");
    wait_for(
        "the first segment deleted",
        Duration::from_secs(40),
        || async { (!s3_has(&client, &first_key).await).then_some(()) },
    )
    .await;
    // What the playlist lists is still there.
    assert_s3_playlist_complete(&client, "window").await;
}

/// An uploader that panics again and again as it queues new segments into its spool,
/// while the stream goes on: every segment an S3 playlist lists is in S3. A restart used
/// to reopen the spool while the write of the new items went on: it missed them, and
/// gave their numbers out again (the chaos benchmark saw one segment listed in S3 and
/// never there).
#[tokio::test]
async fn an_uploader_panicking_again_and_again_loses_no_segment() {
    const PATH: &str = "restless";
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = with_s3(Kawa::builder(), &moto.endpoint())
        .env("KAWA_HLS__SEGMENT_SECONDS", "1")
        .start();
    let key = create_stream(&kawa, PATH).await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 30);
    wait_for("the stream in S3", Duration::from_secs(20), || async {
        s3_playlist(&client, PATH)
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;
    // Each segment, checked as soon as a playlist lists it (it leaves S3 a while after
    // it leaves the window).
    let audit = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut seen, mut missing) = (BTreeSet::new(), Vec::new());
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(p) = s3_playlist(&client, PATH).await else {
                    continue;
                };
                for s in &p.segments {
                    let key = format!("{PREFIX}/{PATH}/source/{}", s.uri);
                    if seen.insert(key.clone()) && !s3_has(&client, &key).await {
                        missing.push(key);
                    }
                }
                if p.end_list {
                    return (seen.len(), missing);
                }
            }
        })
    };
    let mut injected = 0;
    while publisher.running() {
        common::inject_panic_during(&kawa, "uploader", Some(PATH), Some("deliver")).await;
        injected += 1;
        // Past 5 restarts a minute, the next waits 10 s: a slower pace hits more work.
        tokio::time::sleep(Duration::from_millis(2000)).await;
    }
    let (checked, missing) = tokio::time::timeout(Duration::from_secs(60), audit)
        .await
        .expect("the S3 playlist's ENDLIST")
        .unwrap();
    // Listed before it was there would be as wrong; still not there now is lost.
    let mut lost = Vec::new();
    for key in &missing {
        if !s3_has(&client, key).await {
            lost.push(key);
        }
    }
    let panics = metric_value(&kawa, r#"kawa_actor_panics_total{actor="uploader"}"#).await;
    eprintln!("{injected} panics armed, {panics:?} fired; {checked} segments checked");
    assert!(panics.unwrap_or(0.0) >= 10.0, "too few panics: {panics:?}");
    assert!(
        missing.is_empty(),
        "listed in S3 before they were there: {missing:?}; never there: {lost:?}"
    );
}
