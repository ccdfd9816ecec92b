//! The supervision tree under injected panics (the fault-injection hook that
//! `scripts/test.sh` builds in): a session that panics is restarted from its checkpoint
//! while its publisher stays connected; past its restart intensity the stream ends as a
//! clean stop would; a registry panic leaves every stream live, and one on a publisher's
//! drop leaves no session behind; a transcoder that panics is restarted by its session.

mod common;

use std::time::{Duration, Instant};

use common::{
    Kawa, Publisher, SMALL_LADDER, create_stream, fetch_text, inject_panic, metric_value,
    metrics_text, stream_info, wait_for,
};
use m3u8_rs::MediaPlaylist;

async fn playlist_text(kawa: &Kawa, path: &str) -> Option<String> {
    fetch_text(kawa, &format!("/hls/{path}/source/index.m3u8")).await
}

async fn media_playlist(kawa: &Kawa, path: &str, rendition: &str) -> Option<MediaPlaylist> {
    let text = fetch_text(kawa, &format!("/hls/{path}/{rendition}/index.m3u8")).await?;
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()
}

fn last_msn(p: &MediaPlaylist) -> u64 {
    p.media_sequence + p.segments.len() as u64 - 1
}

/// The segments of `p` from `msn` on, with their numbers.
fn from_msn(p: &MediaPlaylist, msn: u64) -> Vec<(u64, &m3u8_rs::MediaSegment)> {
    (p.media_sequence..)
        .zip(&p.segments)
        .filter(|(n, _)| *n >= msn)
        .collect()
}

async fn panics_and_restarts(kawa: &Kawa, actor: &str) -> (f64, f64) {
    let panics = metric_value(
        kawa,
        &format!("kawa_actor_panics_total{{actor=\"{actor}\"}}"),
    )
    .await;
    let restarts = metric_value(
        kawa,
        &format!("kawa_actor_restarts_total{{actor=\"{actor}\"}}"),
    )
    .await;
    (panics.unwrap_or(-1.0), restarts.unwrap_or(-1.0))
}

/// A passthrough Kawa with two streams of 60 s: "doomed" (to be panicked) and "steady".
async fn doomed_and_steady() -> (Kawa, Publisher, Publisher) {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let doomed_key = create_stream(&kawa, "doomed").await;
    let steady_key = create_stream(&kawa, "steady").await;
    let doomed = Publisher::start(&kawa.rtmp_url(&doomed_key), 60);
    let steady = Publisher::start(&kawa.rtmp_url(&steady_key), 60);
    (kawa, doomed, steady)
}

#[tokio::test]
async fn a_session_that_panics_mid_stream_restarts_and_its_publisher_stays() {
    let (kawa, mut doomed, mut steady) = doomed_and_steady().await;
    let before = wait_for("three segments", Duration::from_secs(30), || async {
        media_playlist(&kawa, "doomed", "source")
            .await
            .filter(|p| p.segments.len() >= 3)
    })
    .await;
    assert!(before.segments.iter().all(|s| !s.discontinuity));

    inject_panic(&kawa, "session", Some("doomed")).await;
    // A viewer polls all along: the playlist never goes back, never ends, never fails.
    let mut seen = before.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let p = media_playlist(&kawa, "doomed", "source")
            .await
            .expect("the playlist answers all along");
        assert!(
            p.media_sequence >= seen.media_sequence,
            "the window went back"
        );
        assert!(
            last_msn(&p) >= last_msn(&seen),
            "the media sequence went back"
        );
        assert!(!p.end_list, "the stream ended");
        seen = p;
        if last_msn(&seen) >= last_msn(&before) + 3 {
            break seen;
        }
        assert!(Instant::now() < deadline, "no new segments after the panic");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = kawa.logs();
    assert_eq!(
        logs.matches("stream session restarted from its checkpoint")
            .count(),
        1,
        "{logs}"
    );
    // One DISCONTINUITY, on the first segment after the restart; the segments listed
    // before are listed still, under the same numbers.
    let new = from_msn(&after, last_msn(&before) + 1);
    let marked: Vec<u64> = new
        .iter()
        .filter(|(_, s)| s.discontinuity)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(marked.len(), 1, "{after:?}");
    for (n, s) in from_msn(&after, after.media_sequence) {
        if n <= last_msn(&before) {
            let old = &before.segments[(n - before.media_sequence) as usize];
            assert_eq!(s.uri, old.uri, "segment {n} kept its name");
        }
    }
    assert!(
        doomed.running(),
        "the publisher stayed connected: {}",
        doomed.stderr()
    );
    assert_eq!(stream_info(&kawa, "doomed").await["live"], true);
    assert_eq!(panics_and_restarts(&kawa, "session").await, (1.0, 1.0));
    // The other stream never noticed.
    let other = media_playlist(&kawa, "steady", "source").await.unwrap();
    assert!(other.segments.iter().all(|s| !s.discontinuity));
    assert!(steady.running(), "{}", steady.stderr());
}

#[tokio::test]
async fn a_session_past_its_restart_intensity_ends_its_stream_cleanly() {
    let (kawa, mut doomed, mut steady) = doomed_and_steady().await;
    wait_for("a segment", Duration::from_secs(30), || async {
        playlist_text(&kawa, "doomed")
            .await
            .filter(|p| p.contains("#EXTINF"))
    })
    .await;
    // Three restarts a minute are allowed; the fourth panic escalates.
    for _ in 0..4 {
        inject_panic(&kawa, "session", Some("doomed")).await;
    }
    let ended = wait_for(
        "ENDLIST on the doomed stream",
        Duration::from_secs(30),
        || async {
            playlist_text(&kawa, "doomed")
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
    assert!(logs.contains("stream session exceeded its restart intensity; ending the stream"));
    assert_eq!(panics_and_restarts(&kawa, "session").await, (4.0, 3.0));
    assert_eq!(stream_info(&kawa, "doomed").await["live"], false);
    let metrics = metrics_text(&kawa).await;
    assert!(
        !metrics.contains("\"doomed\""),
        "the stream's series are gone"
    );
    assert!(metrics.contains("\"steady\""));

    // The other stream carried on.
    let before = playlist_text(&kawa, "steady").await.unwrap_or_default();
    wait_for(
        "a new segment on the steady stream",
        Duration::from_secs(10),
        || async {
            playlist_text(&kawa, "steady")
                .await
                .filter(|p| *p != before && !p.contains("#EXT-X-ENDLIST"))
        },
    )
    .await;
    assert!(steady.running(), "{}", steady.stderr());
}

#[tokio::test]
async fn a_registry_panic_leaves_every_stream_live() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let mut publishers = Vec::new();
    for path in ["one", "two"] {
        let key = create_stream(&kawa, path).await;
        publishers.push(Publisher::start(&kawa.rtmp_url(&key), 60));
    }
    let mut before = Vec::new();
    for path in ["one", "two"] {
        before.push(
            wait_for("a segment", Duration::from_secs(30), || async {
                media_playlist(&kawa, path, "source")
                    .await
                    .filter(|p| !p.segments.is_empty())
            })
            .await,
        );
    }
    // The next registry message panics: here, the API's question about a stream.
    inject_panic(&kawa, "registry", None).await;
    let _ = stream_info(&kawa, "one").await;
    assert!(
        kawa.logs()
            .contains("stream registry handler panicked; the registry goes on")
    );
    assert_eq!(panics_and_restarts(&kawa, "registry").await.0, 1.0);
    // Both streams go on, continuous, and the registry still knows both publishers.
    for (path, before) in ["one", "two"].into_iter().zip(&before) {
        let after = wait_for("two new segments", Duration::from_secs(20), || async {
            media_playlist(&kawa, path, "source")
                .await
                .filter(|p| last_msn(p) >= last_msn(before) + 2)
        })
        .await;
        assert!(!after.end_list);
        assert!(after.segments.iter().all(|s| !s.discontinuity), "{after:?}");
        assert_eq!(stream_info(&kawa, path).await["live"], true);
    }
    for publisher in &mut publishers {
        assert!(publisher.running(), "{}", publisher.stderr());
    }
    let kicked = common::admin_client()
        .post(kawa.url("/api/v1/streams/one/kick"))
        .send()
        .await
        .unwrap();
    assert!(kicked.status().is_success());
    assert!(publishers[0].wait_exit(Duration::from_secs(10)).is_some());
}

#[tokio::test]
async fn a_registry_panic_on_a_publish_fails_only_that_publish() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let cursed_key = create_stream(&kawa, "cursed").await;
    let fine_key = create_stream(&kawa, "fine").await;
    inject_panic(&kawa, "registry", Some("cursed")).await;
    let mut cursed = Publisher::start(&kawa.rtmp_url(&cursed_key), 20);
    let status = cursed
        .wait_exit(Duration::from_secs(10))
        .expect("the publish is refused");
    assert!(!status.success());
    let _fine = Publisher::start(&kawa.rtmp_url(&fine_key), 20);
    wait_for(
        "a segment on the next stream",
        Duration::from_secs(20),
        || async {
            playlist_text(&kawa, "fine")
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

/// The registry's handler of a publisher's drop panics: the drop must still be handled
/// (else the session lives on with nobody publishing, for good). Here the stream waits
/// out its reconnect grace and ends, as after any drop, and its session is gone.
#[tokio::test]
async fn a_registry_panic_on_a_drop_leaves_no_session_behind() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RTMP__RECONNECT_GRACE_MS", "1000")
        .env("KAWA_HLS__RETENTION_SECONDS", "1")
        .start();
    let key = create_stream(&kawa, "dropped").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for("a segment", Duration::from_secs(30), || async {
        media_playlist(&kawa, "dropped", "source")
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;
    // The registry's next message about the path panics: the drop of the connection.
    inject_panic(&kawa, "registry", Some("dropped")).await;
    publisher.kill();
    wait_for("the registry's panic", Duration::from_secs(10), || async {
        (panics_and_restarts(&kawa, "registry").await.0 == 1.0).then_some(())
    })
    .await;
    assert!(kawa.logs().contains("unpublish"), "{}", kawa.logs());
    let ended = wait_for(
        "ENDLIST after the grace",
        Duration::from_secs(20),
        || async {
            media_playlist(&kawa, "dropped", "source")
                .await
                .filter(|p| p.end_list)
        },
    )
    .await;
    assert!(!ended.segments.is_empty());
    let series = r#"kawa_actors_alive{actor="session"}"#;
    wait_for("no session left", Duration::from_secs(10), || async {
        (metric_value(&kawa, series).await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_transcoder_that_panics_is_restarted_by_its_session() {
    let kawa = Kawa::builder().config(SMALL_LADDER).start();
    let key = create_stream(&kawa, "ladder").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let before = wait_for("the rung's segments", Duration::from_secs(30), || async {
        media_playlist(&kawa, "ladder", "180p")
            .await
            .filter(|p| p.segments.len() >= 2)
    })
    .await;
    let ffmpeg = kawa.ffmpeg_children();
    inject_panic(&kawa, "transcoder", None).await;
    let after = wait_for(
        "the rung again, after a discontinuity",
        Duration::from_secs(30),
        || async {
            media_playlist(&kawa, "ladder", "180p").await.filter(|p| {
                let new = from_msn(p, last_msn(&before) + 1);
                new.iter().any(|(_, s)| s.discontinuity)
                    && new.last().is_some_and(|(_, s)| !s.discontinuity)
            })
        },
    )
    .await;
    assert!(!after.end_list);
    assert_eq!(panics_and_restarts(&kawa, "transcoder").await, (1.0, 1.0));
    let now = kawa.ffmpeg_children();
    assert_eq!(now.len(), 1, "one FFmpeg, not two");
    assert_ne!(now, ffmpeg, "the old FFmpeg was killed");
    let source = media_playlist(&kawa, "ladder", "source").await.unwrap();
    assert!(
        source.segments.iter().all(|s| !s.discontinuity),
        "the source never noticed"
    );
    assert!(publisher.running(), "{}", publisher.stderr());
    assert_eq!(
        metric_value(&kawa, "kawa_transcoders_alive").await,
        Some(1.0)
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
        playlist_text(&kawa, "again")
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
    let text = playlist_text(&kawa, "again").await.unwrap();
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    assert!(kawa.logs().matches("stream ended").count() >= 1);
}
