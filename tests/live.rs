//! The live pipeline end to end: a real ffmpeg publishes RTMP to a real `kawa serve`,
//! which runs a real FFmpeg ladder; ffprobe and HTTP play what viewers would.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ADMIN_TOKEN, Kawa, Publisher, admin_client, create_stream, ffprobe_json, stream_info, wait_for,
};
use m3u8_rs::{MasterPlaylist, MediaPlaylist, Playlist};
use reqwest::StatusCode;
use serde_json::Value;

use common::SMALL_LADDER as LADDER;

async fn get(kawa: &Kawa, path: &str) -> Option<reqwest::Response> {
    let r = reqwest::Client::new()
        .get(kawa.url(path))
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::OK).then_some(r)
}

/// A served playlist, parsed; `None` while it does not exist. Fails on invalid text.
async fn playlist(kawa: &Kawa, path: &str) -> Option<Playlist> {
    let text = get(kawa, path).await?.bytes().await.ok()?;
    match m3u8_rs::parse_playlist_res(&text) {
        Ok(p) => Some(p),
        Err(_) => panic!(
            "invalid playlist {path}:\n{}",
            String::from_utf8_lossy(&text)
        ),
    }
}

async fn media_playlist(kawa: &Kawa, stream: &str, rendition: &str) -> Option<MediaPlaylist> {
    match playlist(kawa, &format!("/hls/{stream}/{rendition}/index.m3u8")).await? {
        Playlist::MediaPlaylist(p) => Some(p),
        Playlist::MasterPlaylist(_) => panic!("a master playlist where a media playlist belongs"),
    }
}

async fn master_playlist(kawa: &Kawa, stream: &str) -> Option<MasterPlaylist> {
    match playlist(kawa, &format!("/hls/{stream}/master.m3u8")).await? {
        Playlist::MasterPlaylist(p) => Some(p),
        Playlist::MediaPlaylist(_) => panic!("a media playlist where the master belongs"),
    }
}

/// The number of the last segment listed (media sequence + count - 1).
fn last_sequence(p: &MediaPlaylist) -> u64 {
    p.media_sequence + p.segments.len() as u64 - 1
}

/// A passthrough Kawa with one stream published for a minute, once `segments` of it
/// are listed.
struct LiveStream {
    kawa: Kawa,
    key: String,
    publisher: Publisher,
    playlist: MediaPlaylist,
}

async fn live_stream(builder: common::KawaBuilder, stream: &str, segments: usize) -> LiveStream {
    let kawa = builder.env("KAWA_HLS__PRESET", "passthrough").start();
    let key = create_stream(&kawa, stream).await;
    let publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let playlist = wait_for("the first segments", Duration::from_secs(20), || async {
        media_playlist(&kawa, stream, "source")
            .await
            .filter(|p| p.segments.len() >= segments)
    })
    .await;
    LiveStream {
        kawa,
        key,
        publisher,
        playlist,
    }
}

/// A process's nice value (`/proc/PID/stat`, field 19).
fn nice(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(16)?.parse().ok()
}

#[tokio::test]
async fn a_published_stream_plays_as_an_hls_ladder() {
    let kawa = Kawa::builder().config(LADDER).start();
    let key = create_stream(&kawa, "alice").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 12);

    // Live status while publishing.
    let status: Value = wait_for("live status", Duration::from_secs(15), || async {
        let v = stream_info(&kawa, "alice").await;
        (v["live"] == true && v["live_status"]["ingest_kbps"].as_u64() > Some(0)).then_some(v)
    })
    .await;
    assert!(
        status["live_status"]["video"]
            .as_str()
            .unwrap()
            .contains("320x240"),
        "{status}"
    );

    let master = wait_for("master playlist", Duration::from_secs(20), || {
        master_playlist(&kawa, "alice")
    })
    .await;
    let names: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(
        names,
        ["source/index.m3u8", "180p/index.m3u8", "120p/index.m3u8"]
    );
    for (variant, (w, h)) in master
        .variants
        .iter()
        .zip([(320, 240), (240, 180), (160, 120)])
    {
        assert!(variant.bandwidth > 0);
        let average = variant.average_bandwidth.unwrap();
        assert!(average > 0 && average <= variant.bandwidth, "{variant:?}");
        let codecs = variant.codecs.as_deref().unwrap();
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{codecs}"
        );
        let r = variant.resolution.unwrap();
        assert_eq!((r.width, r.height), (w, h));
        assert_eq!(variant.frame_rate, Some(25.0));
    }

    // The ladder's FFmpeg makes the thumbnails, every `thumbnail_seconds`, with no viewer
    // asking (a picture made on demand needs a request for thumbnail.jpg; none was sent).
    let thumbnail = kawa.data_dir.join("hls/alice/thumbnail.jpg");
    let first = wait_for(
        "the ladder's thumbnail",
        Duration::from_secs(10),
        || async { std::fs::read(&thumbnail).ok() },
    )
    .await;
    let probe = ffprobe_json(
        &["-show_entries", "stream=codec_name,height"],
        thumbnail.to_str().unwrap(),
    );
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg", "{probe}");
    assert_eq!(probe["streams"][0]["height"], 240, "{probe}");
    wait_for("the next thumbnail", Duration::from_secs(8), || async {
        std::fs::read(&thumbnail).ok().filter(|now| *now != first)
    })
    .await;

    assert!(
        publisher
            .wait_exit(Duration::from_secs(30))
            .unwrap()
            .success(),
        "{}",
        publisher.stderr()
    );
    let mut playlists = Vec::new();
    for rendition in ["source", "180p", "120p"] {
        let p = wait_for("ENDLIST", Duration::from_secs(20), || async {
            media_playlist(&kawa, "alice", rendition)
                .await
                .filter(|p| p.end_list)
        })
        .await;
        playlists.push((rendition, p));
    }
    let counts: Vec<usize> = playlists.iter().map(|(_, p)| p.segments.len()).collect();
    for (rendition, p) in &playlists {
        assert!(
            p.segments.len() >= 5,
            "{rendition}: 12 s makes at least 5 segments of 2 s"
        );
        assert_eq!(
            p.segments.len(),
            counts[0],
            "all renditions cut alike: {:?}\n{}",
            playlists
                .iter()
                .map(|(r, p)| (r, p.segments.iter().map(|s| s.duration).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
            kawa.logs()
                .lines()
                .filter(|l| !l.contains("DEBUG") || l.contains("FFmpeg upload"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for s in &p.segments {
            assert!(
                (s.duration.round() as u64) <= p.target_duration,
                "{rendition}: {s:?}"
            );
            assert!(s.program_date_time.is_some());
        }
        // The rendition decodes, with audio and video.
        let url = kawa.url(&format!("/hls/alice/{rendition}/index.m3u8"));
        let streams = ffprobe_json(&["-show_entries", "stream=codec_type,width,height"], &url);
        let types: Vec<&str> = streams["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"video") && types.contains(&"audio"),
            "{rendition}: {streams}"
        );
        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(decode.status.success(), "{rendition} does not decode");

        // Every segment, with its init segment, starts with a keyframe and decodes on
        // its own; audio and video start together.
        let base = format!("/hls/alice/{rendition}");
        for index in 0..3 {
            let file = common::playable_segment(&kawa, &base, p, index).await;
            let path = file.path().to_str().unwrap();
            let packets = ffprobe_json(
                &[
                    "-show_entries",
                    "packet=codec_type,pts_time,flags",
                    "-read_intervals",
                    "%+#40",
                ],
                path,
            );
            let packets = packets["packets"].as_array().unwrap();
            let first_video = packets.iter().find(|p| p["codec_type"] == "video").unwrap();
            assert!(
                first_video["flags"].as_str().unwrap().starts_with('K'),
                "{rendition} segment {index}"
            );
            let decode = Command::new("ffmpeg")
                .args(["-v", "error", "-i", path, "-f", "null", "-"])
                .output()
                .unwrap();
            assert!(
                decode.status.success() && decode.stderr.is_empty(),
                "{rendition} segment {index}: {}",
                String::from_utf8_lossy(&decode.stderr)
            );
            if index == 0 {
                let starts = ffprobe_json(&["-show_entries", "stream=codec_type,start_time"], path);
                let times: Vec<f64> = starts["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["start_time"].as_str().unwrap().parse().unwrap())
                    .collect();
                assert!(
                    (times[0] - times[1]).abs() <= 0.1,
                    "{rendition}: audio/video start {times:?}"
                );
            }
        }
    }

    // What players and CDNs see in the headers.
    let playlist = get(&kawa, "/hls/alice/source/index.m3u8").await.unwrap();
    let h = playlist.headers();
    assert_eq!(h["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["cache-control"].to_str().unwrap().contains("max-age=1"));
    let segment_path = format!("/hls/alice/source/{}", playlists[0].1.segments[0].uri);
    let segment = get(&kawa, &segment_path).await.unwrap();
    assert_eq!(segment.headers()["content-type"], "video/mp4");
    assert!(
        segment.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let gz = reqwest::Client::new()
        .get(kawa.url("/hls/alice/source/index.m3u8"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");

    // After the stream ended the API says so.
    let shown = stream_info(&kawa, "alice").await;
    assert_eq!(shown["live"], false);
}

/// With `hls.ffmpeg_nice = 10`, FFmpeg runs nicer than Kawa: encoders that fill the
/// cores leave Kawa's ingest and viewers on time. (Apart from the ladder test above,
/// which runs the default: a niced FFmpeg on a loaded CI machine lags, by design.)
#[tokio::test]
async fn ffmpeg_nice_runs_the_ladder_nicer_than_kawa() {
    let kawa = Kawa::builder()
        .config(LADDER)
        .env("KAWA_HLS__FFMPEG_NICE", "10")
        .start();
    let key = create_stream(&kawa, "nice").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 8);
    let ffmpeg = wait_for("the ladder's FFmpeg", Duration::from_secs(15), || async {
        Some(kawa.ffmpeg_children()).filter(|pids| !pids.is_empty())
    })
    .await;
    // An FFmpeg that just exited has no nice value left to read.
    let values: Vec<(u32, i64)> = ffmpeg
        .into_iter()
        .filter_map(|pid| Some((pid, nice(pid)?)))
        .collect();
    assert!(!values.is_empty(), "the ladder's FFmpeg runs");
    let kawa_nice = nice(kawa.pid()).unwrap();
    for (pid, value) in values {
        assert_eq!(value, kawa_nice + 10, "FFmpeg {pid}'s nice value");
    }
    // And the niced ladder still makes its rungs.
    wait_for("a 120p segment", Duration::from_secs(20), || async {
        media_playlist(&kawa, "nice", "120p")
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;
}

#[tokio::test]
async fn wrong_rotated_and_deleted_keys_are_refused_within_two_seconds() {
    let kawa = Kawa::start();
    let http = admin_client();
    let rotated_away = create_stream(&kawa, "rot").await;
    http.post(kawa.url("/api/v1/streams/rot/rotate"))
        .send()
        .await
        .unwrap();
    let deleted = create_stream(&kawa, "del").await;
    http.delete(kawa.url("/api/v1/streams/del"))
        .send()
        .await
        .unwrap();
    for key in [
        "kawa_sk_not-a-real-key",
        rotated_away.as_str(),
        deleted.as_str(),
    ] {
        let started = Instant::now();
        let mut publisher = Publisher::start(&kawa.rtmp_url(key), 10);
        let status = publisher.wait_exit(Duration::from_secs(5));
        let status = status.unwrap_or_else(|| panic!("publisher still running after 5 s"));
        assert!(!status.success(), "a refused publish must fail");
        println!("refused in {:?}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    let logs = kawa.logs();
    assert!(logs.contains("publish refused"), "{logs}");
    for secret in [rotated_away.as_str(), deleted.as_str(), ADMIN_TOKEN] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
    // Nothing became live.
    assert!(get(&kawa, "/hls/rot/master.m3u8").await.is_none());
}

#[tokio::test]
async fn two_publishers_on_two_keys_both_play() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let a = create_stream(&kawa, "one").await;
    let b = create_stream(&kawa, "two").await;
    let _pa = Publisher::start(&kawa.rtmp_url(&a), 8);
    let _pb = Publisher::start(&kawa.rtmp_url(&b), 8);
    for stream in ["one", "two"] {
        wait_for("two segments", Duration::from_secs(20), || async {
            media_playlist(&kawa, stream, "source")
                .await
                .filter(|p| p.segments.len() >= 2)
        })
        .await;
    }
}

#[tokio::test]
async fn a_reconnecting_publisher_takes_over_and_the_playlist_goes_on() {
    let LiveStream {
        kawa,
        key,
        publisher: mut first,
        playlist: before,
    } = live_stream(Kawa::builder(), "obs", 2).await;
    // The encoder's network drops; it reconnects before Kawa noticed.
    first.kill();
    let mut second = Publisher::start(&kawa.rtmp_url(&key), 60);
    let after = wait_for("a discontinuity", Duration::from_secs(20), || async {
        media_playlist(&kawa, "obs", "source")
            .await
            .filter(|p| p.segments.iter().any(|s| s.discontinuity))
    })
    .await;
    assert!(
        second.running(),
        "the newcomer was accepted: {}",
        second.stderr()
    );
    assert!(after.media_sequence >= before.media_sequence);
    assert!(last_sequence(&after) > last_sequence(&before));
    assert!(!after.end_list);
    assert!(
        kawa.logs().contains("publisher taken over") || kawa.logs().contains("connection closed")
    );
}

/// An encoder whose network drops twice within the reconnect grace keeps its stream: the
/// first drop's grace ends while the encoder is away after its second drop, and must not
/// end the stream (the second drop has a grace of its own).
#[tokio::test]
async fn an_encoder_that_drops_twice_within_the_grace_keeps_its_stream() {
    let grace = Duration::from_secs(6);
    let LiveStream {
        kawa,
        key,
        publisher: mut first,
        playlist: before,
    } = live_stream(
        Kawa::builder().env("KAWA_RTMP__RECONNECT_GRACE_MS", "6000"),
        "flaky",
        2,
    )
    .await;
    let reconnected = |n: usize| {
        let kawa = &kawa;
        move || async move { (kawa.logs().matches("publisher reconnected").count() >= n).then_some(()) }
    };
    let since_first_drop = |at: std::time::Instant, d: Duration| async move {
        tokio::time::sleep(d.saturating_sub(at.elapsed())).await
    };
    // Killed: no goodbye, so Kawa waits for the encoder to come back.
    first.kill();
    let dropped_at = std::time::Instant::now();
    since_first_drop(dropped_at, Duration::from_millis(500)).await;
    let mut second = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for(
        "the first reconnect",
        Duration::from_secs(3),
        reconnected(1),
    )
    .await;
    since_first_drop(dropped_at, Duration::from_secs(3)).await;
    second.kill();
    // Away when the first drop's grace ends (6 s), back within the second's (9 s).
    since_first_drop(dropped_at, grace + Duration::from_millis(500)).await;
    let mut third = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for(
        "the second reconnect",
        Duration::from_secs(2),
        reconnected(2),
    )
    .await;
    let after = wait_for("new segments", Duration::from_secs(10), || async {
        media_playlist(&kawa, "flaky", "source")
            .await
            .filter(|p| last_sequence(p) > last_sequence(&before) + 2)
    })
    .await;
    assert!(!after.end_list, "the stream ended");
    assert!(after.media_sequence >= before.media_sequence, "{after:?}");
    assert!(third.running(), "{}", third.stderr());
    assert_eq!(
        kawa.logs().matches("stream session started").count(),
        1,
        "one session throughout"
    );
}

/// Publish, stop, publish again: when the first session's retention ends, its cleanup
/// removes only its own segments. The live stream's master, playlist and thumbnail keep
/// answering, and its files stay in the data directory.
#[tokio::test]
async fn an_old_sessions_cleanup_leaves_a_republished_path_alone() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__RETENTION_SECONDS", "6")
        .start();
    let key = create_stream(&kawa, "again").await;
    let mut first = Publisher::start(&kawa.rtmp_url(&key), 4);
    assert!(
        first
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    wait_for("ENDLIST", Duration::from_secs(10), || async {
        media_playlist(&kawa, "again", "source")
            .await
            .filter(|p| p.end_list)
    })
    .await;
    let ended = std::time::Instant::now();
    let _second = Publisher::start(&kawa.rtmp_url(&key), 60);
    wait_for("the new session", Duration::from_secs(10), || async {
        media_playlist(&kawa, "again", "source")
            .await
            .filter(|p| !p.end_list && !p.segments.is_empty())
    })
    .await;
    let urls = ["master.m3u8", "source/index.m3u8", "thumbnail.jpg"]
        .map(|name| kawa.url(&format!("/hls/again/{name}")));
    let dir = kawa.data_dir.join("hls/again");
    let files = ["master.m3u8", "source/index.m3u8"].map(|f| dir.join(f));
    let mut written = false;
    // Through the first session's expiry (6 s after it ended) and past it.
    while ended.elapsed() < Duration::from_secs(9) {
        for url in &urls {
            let status = reqwest::get(url).await.unwrap().status();
            assert!(status.is_success(), "{url}: {status}");
        }
        // Once the new session wrote its files, they stay.
        let present = files.iter().filter(|f| f.exists()).count();
        written |= present == files.len();
        assert!(
            !written || present == files.len(),
            "{:?} after the first session ended, a file of the live one is gone",
            ended.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "the new session wrote its files");
}

#[tokio::test]
async fn takeover_off_refuses_the_newcomer() {
    let LiveStream {
        kawa,
        key,
        publisher: mut first,
        ..
    } = live_stream(
        Kawa::builder().env("KAWA_RTMP__TAKEOVER", "false"),
        "solo",
        1,
    )
    .await;
    let mut second = Publisher::start(&kawa.rtmp_url(&key), 30);
    let status = second
        .wait_exit(Duration::from_secs(5))
        .expect("the newcomer is refused");
    assert!(!status.success());
    assert!(first.running());
}

#[tokio::test]
async fn passthrough_runs_no_ffmpeg() {
    let LiveStream {
        kawa,
        playlist,
        publisher: _publisher,
        ..
    } = live_stream(Kawa::builder(), "plain", 2).await;
    assert!(playlist.segments.len() >= 2);
    assert!(
        kawa.ffmpeg_children().is_empty(),
        "the source rendition never goes through FFmpeg"
    );
    let status = stream_info(&kawa, "plain").await;
    assert_eq!(
        status["live_status"]["transcoder_running"],
        false,
        "{status}\n{}",
        kawa.logs()
    );
}

#[tokio::test]
async fn killing_ffmpeg_mid_stream_restarts_it_with_a_discontinuity_on_the_rungs_only() {
    let kawa = Kawa::builder().config(LADDER).start();
    ffmpeg_killed_mid_stream(kawa, |kawa, key| Publisher::start(&kawa.rtmp_url(key), 60)).await;
}

/// The same with the publisher on SRT: one pipeline behind both front doors.
#[tokio::test]
async fn killing_ffmpeg_under_an_srt_publisher_restarts_it_on_the_rungs_only() {
    let kawa = Kawa::builder().config(LADDER).srt().start();
    ffmpeg_killed_mid_stream(kawa, |kawa, key| {
        let stream_id = format!("#!::r=live/{key},m=publish");
        Publisher::start_srt(&kawa.srt_url(&stream_id, None), 60)
    })
    .await;
}

async fn ffmpeg_killed_mid_stream(kawa: Kawa, publish: impl FnOnce(&Kawa, &str) -> Publisher) {
    let key = create_stream(&kawa, "crashy").await;
    let mut publisher = publish(&kawa, &key);
    let before = wait_for(
        "the rungs' first segments",
        Duration::from_secs(20),
        || async {
            media_playlist(&kawa, "crashy", "180p")
                .await
                .filter(|p| p.segments.len() >= 2)
        },
    )
    .await;
    let children = kawa.ffmpeg_children();
    assert_eq!(children.len(), 1, "one FFmpeg per stream");
    Command::new("kill")
        .args(["-9", &children[0].to_string()])
        .status()
        .unwrap();

    let mut last_seen = last_sequence(&before);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = media_playlist(&kawa, "crashy", "180p").await {
            assert!(
                last_sequence(&p) >= last_seen,
                "the media sequence went back"
            );
            assert!(p.media_sequence >= before.media_sequence);
            last_seen = last_sequence(&p);
            let restarted = p.segments.iter().any(|s| s.discontinuity);
            if restarted && p.segments.last().is_some_and(|s| !s.discontinuity) {
                // The new FFmpeg's rung has its own init segment after the marker.
                let maps = common::segment_maps(&p);
                let at = p.segments.iter().position(|s| s.discontinuity).unwrap();
                assert_ne!(maps[at], maps[0], "a new EXT-X-MAP after the restart");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the FFmpeg restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The source never went through FFmpeg: it goes on untouched.
    let source = media_playlist(&kawa, "crashy", "source").await.unwrap();
    assert!(
        source.segments.iter().all(|s| !s.discontinuity),
        "the source rendition must not notice an FFmpeg crash"
    );
    assert!(publisher.running(), "the publisher was not disturbed");
    let now = kawa.ffmpeg_children();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], children[0], "a new FFmpeg");
    let status = stream_info(&kawa, "crashy").await;
    assert_eq!(status["live_status"]["transcoder_restarts"], 1, "{status}");
    // The new FFmpeg got the whole GOP cache: not one frame was dropped on the replay.
    assert_eq!(status["live_status"]["frames_dropped"], 0, "{status}");
    publisher.kill();
}

#[tokio::test]
async fn kick_disconnects_the_publisher_and_ends_the_stream() {
    let LiveStream {
        kawa,
        mut publisher,
        ..
    } = live_stream(Kawa::builder(), "kicked", 1).await;
    let http = admin_client();
    let r = http
        .post(kawa.url("/api/v1/streams/kicked/kick"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    assert!(
        publisher.wait_exit(Duration::from_secs(10)).is_some(),
        "publisher disconnected"
    );
    wait_for("ENDLIST", Duration::from_secs(15), || async {
        media_playlist(&kawa, "kicked", "source")
            .await
            .filter(|p| p.end_list)
    })
    .await;
    let again = http
        .post(kawa.url("/api/v1/streams/kicked/kick"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hls_requests_cannot_leave_the_hls_folder() {
    let kawa = Kawa::start();
    std::fs::write(kawa.data_dir.join("secret.txt"), "x").unwrap();
    for path in [
        "/hls/../secret.txt",
        "/hls/%2e%2e/secret.txt",
        "/hls/alice/..%2f..%2fsecret.txt",
        "/hls/alice/source/..%2f..%2f..%2fsecret.txt",
        "/hls/alice/%2e%2e/%2e%2e/keys.redb",
        "/hls/nobody/master.m3u8",
        "/hls/alice/source/index.m3u8",
    ] {
        let r = reqwest::Client::new()
            .get(kawa.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn files_are_removed_after_the_retention() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__RETENTION_SECONDS", "1")
        .start();
    let key = create_stream(&kawa, "brief").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 3);
    assert!(
        publisher
            .wait_exit(Duration::from_secs(20))
            .unwrap()
            .success()
    );
    wait_for("ENDLIST", Duration::from_secs(15), || async {
        media_playlist(&kawa, "brief", "source")
            .await
            .filter(|p| p.end_list)
    })
    .await;
    let dir = kawa.data_dir.join("hls/brief");
    wait_for("files removed", Duration::from_secs(10), || async {
        (!dir.exists()).then_some(())
    })
    .await;
    assert!(get(&kawa, "/hls/brief/master.m3u8").await.is_none());
}

#[tokio::test]
async fn an_ingest_node_checks_keys_with_the_key_manager_over_grpc() {
    // With the shared token the internal API asks for across hosts.
    let manager = Kawa::builder()
        .env("KAWA_GRPC__TOKEN", "internal-token-1")
        .start();
    let ingest = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RTMP__KEY_SERVICE_URL", &manager.grpc_url())
        .env("KAWA_GRPC__TOKEN", "internal-token-1")
        .start();
    // The key lives in the manager's store only.
    let key = create_stream(&manager, "remote").await;
    let _publisher = Publisher::start(&ingest.rtmp_url(&key), 10);
    wait_for(
        "a segment on the ingest node",
        Duration::from_secs(20),
        || media_playlist(&ingest, "remote", "source"),
    )
    .await;
    let mut wrong = Publisher::start(&ingest.rtmp_url("kawa_sk_wrong"), 10);
    let status = wrong.wait_exit(Duration::from_secs(5)).expect("refused");
    assert!(!status.success());
    assert!(
        ingest
            .logs()
            .contains("checked by the key manager over gRPC")
    );
}

#[tokio::test]
async fn rotating_a_live_key_disconnects_its_publisher() {
    let LiveStream {
        kawa,
        key,
        mut publisher,
        ..
    } = live_stream(Kawa::builder(), "leaked", 1).await;
    let rotated = admin_client()
        .post(kawa.url("/api/v1/streams/leaked/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    assert!(
        publisher.wait_exit(Duration::from_secs(10)).is_some(),
        "whoever held the leaked key is disconnected"
    );
    // ...and cannot come back with it.
    let mut again = Publisher::start(&kawa.rtmp_url(&key), 10);
    assert!(
        !again
            .wait_exit(Duration::from_secs(5))
            .expect("refused")
            .success()
    );
}

#[tokio::test]
async fn a_clean_shutdown_ends_live_streams_with_endlist() {
    let LiveStream {
        mut kawa,
        publisher: _publisher,
        ..
    } = live_stream(Kawa::builder(), "shutdown", 1).await;
    // SIGTERM: Kawa ends the stream before it exits.
    kawa.stop();
    let playlist =
        std::fs::read_to_string(kawa.data_dir.join("hls/shutdown/source/index.m3u8")).unwrap();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let logs = kawa.logs();
    assert!(logs.contains("ending live streams"), "{logs}");
}
