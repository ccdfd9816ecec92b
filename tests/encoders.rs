//! Real encoders are not tidy: keyframes at scene cuts or far apart, timestamp gaps,
//! one track only. Every playlist polled while such a stream is live keeps HLS's rules
//! (RFC 8216bis: a fixed target duration bounding every EXTINF, parts within a fixed
//! PART-TARGET, a media sequence number naming one segment, INDEPENDENT only where a
//! keyframe starts the media), and the result plays in ffprobe.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Kawa, Publisher, create_stream, ffprobe_json, wait_for};

/// What the rules need to remember across polls.
#[derive(Default)]
struct Rules {
    target_duration: Option<String>,
    part_target: Option<String>,
    names: HashMap<u64, String>,
    polls: usize,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split(',').next()
}

impl Rules {
    fn check(&mut self, text: &str) {
        self.polls += 1;
        let mut part_target = None;
        let mut sequence = None;
        let mut uris = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                let known = self.target_duration.get_or_insert_with(|| t.to_owned());
                assert_eq!(known, t, "TARGETDURATION changed:\n{text}");
            } else if let Some(t) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
                let known = self.part_target.get_or_insert_with(|| t.to_owned());
                assert_eq!(known, t, "PART-TARGET changed:\n{text}");
                part_target = Some(t.parse::<f64>().unwrap());
            } else if let Some(s) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                sequence = Some(s.parse::<u64>().unwrap());
            } else if let Some(d) = line.strip_prefix("#EXTINF:") {
                let d: f64 = d.trim_end_matches(',').parse().unwrap();
                let target: f64 = self.target_duration.as_ref().unwrap().parse().unwrap();
                assert!(d.round() <= target, "EXTINF {d} over {target}:\n{text}");
            } else if line.starts_with("#EXT-X-PART:") {
                let d: f64 = attribute(line, "DURATION").unwrap().parse().unwrap();
                let target = part_target.unwrap();
                assert!(d <= target + 1e-9, "part {d} over {target}:\n{text}");
            } else if !line.starts_with('#') && !line.is_empty() {
                uris.push(line.to_owned());
            }
        }
        let sequence = sequence.expect("EXT-X-MEDIA-SEQUENCE");
        for (i, uri) in uris.into_iter().enumerate() {
            let msn = sequence + i as u64;
            let known = self.names.entry(msn).or_insert_with(|| uri.clone());
            assert_eq!(*known, uri, "MSN {msn} names two segments:\n{text}");
        }
    }
}

/// Polls `path` every 100 ms while `publisher` runs, checking every playlist.
async fn poll_while_live(kawa: &Kawa, path: &str, publisher: &mut Publisher) -> Rules {
    let mut rules = Rules::default();
    let client = reqwest::Client::new();
    while publisher.running() {
        if let Ok(answer) = client.get(kawa.url(path)).send().await
            && answer.status().is_success()
        {
            rules.check(&answer.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rules
}

/// hls.js in Chromium (tests/player/play.mjs) plays `url` for `seconds`, in the
/// background: its report, once done.
fn hlsjs_play(url: String, seconds: u32) -> tokio::task::JoinHandle<serde_json::Value> {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("node")
            .current_dir(common::player_dir())
            .args(["play.mjs", &url, &seconds.to_string()])
            .output()
            .expect("node (scripts/test.sh installs it)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let line = stdout.lines().last().unwrap_or_else(|| panic!("{report}"));
        serde_json::from_str(line).unwrap_or_else(|_| panic!("{report}"))
    })
}

/// hls.js played at least `seconds` without a fatal error.
fn assert_played(name: &str, report: &serde_json::Value, seconds: f64) {
    assert_eq!(report["errors"], serde_json::json!([]), "{name}: {report}");
    let played = report["played_seconds"].as_f64().unwrap_or(0.0);
    eprintln!(
        "{name}: hls.js played {played:.1} s, {} stalls, {} frames decoded",
        report["stalls"], report["decoded_frames"]
    );
    assert!(
        played >= seconds,
        "{name}: hls.js played {played:.1} s: {report}"
    );
}

/// Frames and seconds ffprobe decodes from a playlist.
fn decoded(kawa: &Kawa, path: &str, stream: &str) -> (u64, f64) {
    let probe = ffprobe_json(
        &[
            "-select_streams",
            stream,
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames:format=duration",
        ],
        &kawa.url(path),
    );
    let frames = probe["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let seconds = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (frames, seconds)
}

async fn ended(kawa: &Kawa, path: &str) -> String {
    wait_for("ENDLIST", Duration::from_secs(30), || async {
        common::fetch_text(kawa, path)
            .await
            .filter(|t| t.contains("#EXT-X-ENDLIST"))
    })
    .await
}

/// Keyframes at 0, 1, 3, 9, 10 and 12 s (scene cuts, a long GOP) and 1.5 s of missing
/// timestamps at 5 s (an encoder stall): 2 s segments cut without keyframes where they
/// must be, parts that end where the timestamps stop, and all of it plays (hls.js while
/// live, ffprobe after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irregular_keyframes_and_a_timestamp_gap_keep_the_rules() {
    // The whole broadcast stays listed, for ffprobe at the end.
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__PLAYLIST_SEGMENTS", "20")
        .start();
    let key = create_stream(&kawa, "irregular").await;
    // Quoted: a comma would end the filter.
    let shift = "'PTS+gte(T,5)*1.5/TB'";
    let source = common::test_source(25, 20);
    let mut args: Vec<&str> = source.iter().map(String::as_str).collect();
    let (video_shift, audio_shift) = (format!("setpts={shift}"), format!("asetpts={shift}"));
    args.extend_from_slice(&[
        "-vf",
        &video_shift,
        "-af",
        &audio_shift,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "10000",
        "-sc_threshold",
        "0",
        "-force_key_frames",
        "0,1,3,9,10,12",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
    ]);
    let mut publisher = Publisher::start_ffmpeg(&kawa.rtmp_url(&key), &args);
    let path = "/hls/irregular/source/index.m3u8";
    wait_for("the master", Duration::from_secs(20), || async {
        common::fetch_text(&kawa, "/hls/irregular/master.m3u8").await
    })
    .await;
    let player = hlsjs_play(kawa.url("/hls/irregular/master.m3u8"), 14);
    let mut rules = poll_while_live(&kawa, path, &mut publisher).await;
    assert_played("irregular", &player.await.unwrap(), 6.0);
    assert!(rules.polls > 50, "only {} playlists polled", rules.polls);
    assert_eq!(rules.target_duration.as_deref(), Some("2"));
    let text = ended(&kawa, path).await;
    rules.check(&text);
    // A segment cut without a keyframe: the playlist does not claim independence.
    assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
    // `-t 20` counts output time, gap included: 18.5 s of frames (462).
    let (frames, seconds) = decoded(&kawa, path, "v:0");
    assert!(frames >= 440, "{frames} frames decoded of 462\n{text}");
    assert!(seconds >= 18.0, "{seconds} s\n{text}");
    assert!(
        kawa.logs().contains("Keyframe Interval"),
        "no keyframe-interval warning in the log"
    );
}

/// A radio stream (OBS with no video source) and a camera with no microphone play,
/// with CODECS for the tracks present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_and_video_only_streams_play() {
    let kawa = Kawa::builder().start();
    for (name, args, codecs, stream) in [
        (
            "radio",
            vec![
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-t",
                "8",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ],
            "mp4a.40.2",
            "a:0",
        ),
        (
            "camera",
            vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "8",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "50",
            ],
            "avc1.",
            "v:0",
        ),
    ] {
        let key = create_stream(&kawa, name).await;
        let mut publisher = Publisher::start_ffmpeg(&kawa.rtmp_url(&key), &args);
        let master_path = format!("/hls/{name}/master.m3u8");
        let master = wait_for("a master playlist", Duration::from_secs(20), || async {
            common::fetch_text(&kawa, &master_path).await
        })
        .await;
        let variant = master
            .lines()
            .find(|l| l.starts_with("#EXT-X-STREAM-INF"))
            .unwrap_or_else(|| panic!("{name}: no variant\n{master}"));
        let codecs_listed = attribute(variant, "CODECS").unwrap().trim_matches('"');
        assert!(
            codecs_listed.starts_with(codecs) && !codecs_listed.contains(','),
            "{name}: CODECS {codecs_listed}\n{master}"
        );
        let uri = master.lines().find(|l| l.ends_with(".m3u8")).unwrap();
        let path = format!("/hls/{name}/{uri}");
        let rules = poll_while_live(&kawa, &path, &mut publisher).await;
        assert!(rules.part_target.is_some(), "{name}: no LL-HLS parts");
        ended(&kawa, &path).await;
        let (frames, seconds) = decoded(&kawa, &path, stream);
        assert!(seconds >= 6.0, "{name}: {seconds} s, {frames} frames");
        assert!(frames > 0, "{name}: nothing decoded");
    }
}

/// A publisher with a valid key that sends one keyframe, then 1 MB non-keyframes (33 ms
/// apart in its timestamps) as fast as the socket takes them, for 30 s: Kawa paces it
/// to real time, stays up, holds its memory, and viewers keep a live playlist that keeps
/// the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_keyframes_faster_than_real_time_is_bounded() {
    use common::rtmp::RtmpPublisher;
    use kawa::media::flv::{FlvFileReader, TagKind};

    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "broken").await;
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video_only.flv"),
    )
    .unwrap();
    // The fixture's sequence header and first keyframe (FLV video tag bodies).
    let mut tags = FlvFileReader::new(&fixture)
        .unwrap()
        .map(|t| t.unwrap())
        .filter(|t| t.kind == TagKind::Video);
    let header = tags.next().unwrap().body.to_vec();
    let keyframe = tags.next().unwrap().body.to_vec();
    assert_eq!((header[0], header[1]), (0x17, 0), "a sequence header first");
    assert_eq!((keyframe[0], keyframe[1]), (0x17, 1), "then a keyframe");
    // A 1 MB inter frame: FLV AVC NALU packet, one slice NAL (type 1) of zeros.
    let size = 1 << 20;
    let mut inter = vec![0x27, 1, 0, 0, 0];
    inter.extend_from_slice(&(size as u32).to_be_bytes());
    inter.extend_from_slice(&[0x41, 0x9a]);
    inter.resize(9 + size, 0);

    let baseline = common::rss_kib(kawa.pid()) as f64 / 1024.0;
    let mut publisher = RtmpPublisher::start(kawa.rtmp, &key).await;
    publisher.video(0, &header).await;
    publisher.video(0, &keyframe).await;
    let sender = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut ms = 0u32;
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(30) {
            ms += 33;
            publisher.video(ms, &inter).await;
            sent += 1;
        }
        sent
    });
    let mut rules = Rules::default();
    let mut peak = baseline;
    let started = std::time::Instant::now();
    let path = "/hls/broken/source/index.m3u8";
    let mut without_playlist = Duration::ZERO;
    let mut last_ok = std::time::Instant::now();
    while !sender.is_finished() {
        peak = peak.max(common::rss_kib(kawa.pid()) as f64 / 1024.0);
        match common::fetch_text(&kawa, path).await {
            Some(text) => {
                rules.check(&text);
                last_ok = std::time::Instant::now();
            }
            None if started.elapsed() > Duration::from_secs(5) => {
                without_playlist = without_playlist.max(last_ok.elapsed());
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frames = sender.await.unwrap();
    let grew = peak - baseline;
    eprintln!(
        "broken publisher: {frames} frames of 1 MB in 30 s, RSS {baseline:.0} -> peak \
         {peak:.0} MiB (+{grew:.0}), {} playlists polled",
        rules.polls
    );
    // Real time: 30 s of 33 ms frames, 3 s of lead, not the gigabytes the socket takes.
    assert!(frames < 1100, "{frames} frames: not paced");
    assert!(grew <= 64.0, "RSS grew {grew:.0} MiB");
    assert!(rules.polls > 100, "only {} playlists", rules.polls);
    assert!(
        without_playlist < Duration::from_secs(5),
        "no live playlist for {without_playlist:?}"
    );
    let metrics = common::metrics_text(&kawa).await;
    assert!(
        metrics.contains("kawa_stream_keyframe_interval_too_long{stream=\"broken\"} 1"),
        "no keyframe warning in the metrics"
    );
    assert!(common::fetch_text(&kawa, "/healthz").await.is_some());
}

/// Encoders as their users leave them: x264 with its defaults (a keyframe every 250
/// frames, scene cuts at the hue changes) from ffmpeg, and GStreamer's `x264enc` with
/// its defaults into `rtmp2sink`. Every playlist keeps the rules, the operator is told
/// about the keyframe interval, and both play (hls.js while live, ffprobe after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x264_and_gstreamer_defaults_keep_the_rules() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__PLAYLIST_SEGMENTS", "20")
        .start();
    for name in ["x264", "gstreamer"] {
        let key = create_stream(&kawa, name).await;
        let url = kawa.rtmp_url(&key);
        let mut publisher = match name {
            "x264" => Publisher::start_ffmpeg(
                &url,
                &[
                    &common::test_source(25, 12)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()[..],
                    &[
                        "-vf",
                        "hue=h=floor(t/3.7)*120",
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-pix_fmt",
                        "yuv420p",
                        "-c:a",
                        "aac",
                    ],
                ]
                .concat(),
            ),
            _ => Publisher::start_program(
                "gst-launch-1.0",
                &[
                    "-q",
                    "videotestsrc",
                    "is-live=true",
                    "num-buffers=300",
                    "!",
                    "video/x-raw,width=320,height=240,framerate=25/1",
                    "!",
                    "x264enc",
                    "!",
                    "h264parse",
                    "!",
                    "flvmux",
                    "name=mux",
                    "streamable=true",
                    "!",
                    "rtmp2sink",
                    &format!("location={url}"),
                    "audiotestsrc",
                    "is-live=true",
                    "num-buffers=520",
                    "!",
                    "audioconvert",
                    "!",
                    "avenc_aac",
                    "!",
                    "aacparse",
                    "!",
                    "mux.",
                ],
            ),
        };
        let path = format!("/hls/{name}/source/index.m3u8");
        let master = format!("/hls/{name}/master.m3u8");
        wait_for("the master", Duration::from_secs(20), || async {
            common::fetch_text(&kawa, &master).await
        })
        .await;
        let player = hlsjs_play(kawa.url(&master), 6);
        let mut rules = poll_while_live(&kawa, &path, &mut publisher).await;
        assert_played(name, &player.await.unwrap(), 4.0);
        assert!(
            rules.polls > 40,
            "{name}: only {} playlists polled; publisher log:\n{}",
            rules.polls,
            std::fs::read_to_string(&publisher.stderr_path).unwrap_or_default()
        );
        let text = ended(&kawa, &path).await;
        rules.check(&text);
        let (frames, seconds) = decoded(&kawa, &path, "v:0");
        assert!(
            frames >= 250,
            "{name}: {frames} frames decoded of 300\n{text}"
        );
        assert!(seconds >= 10.0, "{name}: {seconds} s\n{text}");
    }
    let warnings = kawa.logs().matches("Keyframe Interval").count();
    assert_eq!(warnings, 2, "one keyframe-interval warning per stream");
}
