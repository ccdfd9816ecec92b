//! A publisher that changes resolution and AAC configuration mid-stream, in one
//! connection (what OBS does when its output settings change on the fly, and encoders
//! that restart their pipeline): a new generation starts with a DISCONTINUITY, the master
//! lists only the rungs that still apply with the new codecs, and every rendition plays.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::rtmp::RtmpPublisher;
use common::{Kawa, create_stream, fetch_text, ffprobe_json, wait_for};
use kawa::media::flv::{FlvFileReader, TagKind};

/// A short FLV made by ffmpeg: H.264 at `size`, AAC at `sample_rate` with `channels`.
fn flv(dir: &Path, name: &str, size: &str, sample_rate: u32, channels: u32) -> Vec<u8> {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25"),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=sample_rate={sample_rate}"),
        ])
        .args([
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            &channels.to_string(),
        ])
        .args(["-f", "flv"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// Sends a file's tags in real time from `offset_ms`; returns where it ended.
async fn send(publisher: &mut RtmpPublisher, file: &[u8], offset_ms: u32) -> u32 {
    let started = Instant::now();
    let mut last = offset_ms;
    for tag in FlvFileReader::new(file).unwrap() {
        let tag = tag.unwrap();
        let at = tag.timestamp_ms;
        let due = started + Duration::from_millis(u64::from(at));
        tokio::time::sleep_until(due.into()).await;
        last = offset_ms + at;
        match tag.kind {
            TagKind::Video => publisher.video(last, tag.body).await,
            TagKind::Audio => publisher.audio(last, tag.body).await,
            TagKind::Script => {}
        }
    }
    last + 40
}

#[tokio::test]
async fn resolution_and_aac_changes_mid_stream_start_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let big = flv(dir.path(), "big.flv", "640x480", 44_100, 2);
    let small = flv(dir.path(), "small.flv", "320x240", 48_000, 1);
    let kawa = Kawa::start();
    let key = create_stream(&kawa, "shifty").await;
    let mut publisher = RtmpPublisher::start(kawa.rtmp, &key).await;

    // 640x480: the source and the 360p rung.
    let end = send(&mut publisher, &big, 0).await;
    let before = wait_for(
        "a master with the 360p rung",
        Duration::from_secs(20),
        || async {
            fetch_text(&kawa, "/hls/shifty/master.m3u8")
                .await
                .filter(|m| m.contains("360p/index.m3u8"))
        },
    )
    .await;
    assert!(before.contains("RESOLUTION=640x480"), "{before}");

    // Then 320x240 with 48 kHz mono AAC, in the same connection.
    send(&mut publisher, &small, end).await;
    let after = wait_for(
        "a master for the new picture",
        Duration::from_secs(20),
        || async {
            fetch_text(&kawa, "/hls/shifty/master.m3u8")
                .await
                .filter(|m| m.contains("RESOLUTION=320x240"))
        },
    )
    .await;
    assert!(
        !after.contains("360p"),
        "the rung above the new source is gone: {after}"
    );
    assert!(after.contains("mp4a.40.2"), "{after}");

    // The source rendition continues with a discontinuity, and what follows plays as
    // the new format.
    let playlist = wait_for(
        "segments after the discontinuity",
        Duration::from_secs(20),
        || async {
            fetch_text(&kawa, "/hls/shifty/source/index.m3u8")
                .await
                .filter(|p| {
                    p.split("#EXT-X-DISCONTINUITY\n")
                        .nth(1)
                        .is_some_and(|rest| rest.contains("#EXTINF"))
                })
        },
    )
    .await;
    let Ok((_, m3u8_rs::Playlist::MediaPlaylist(parsed))) =
        m3u8_rs::parse_playlist(playlist.as_bytes())
    else {
        panic!("not a media playlist:\n{playlist}")
    };
    let last = parsed.segments.len() - 1;
    let file = common::playable_segment(&kawa, "/hls/shifty/source", &parsed, last).await;
    let probe = ffprobe_json(
        &[
            "-show_entries",
            "stream=codec_type,width,height,sample_rate,channels",
        ],
        file.path().to_str().unwrap(),
    );
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(audio["sample_rate"], "48000", "{probe}");
    assert_eq!(audio["channels"], 1, "{probe}");
    assert!(
        kawa.logs()
            .contains("codec configuration changed; a new generation starts")
    );
}
