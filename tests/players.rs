//! Real players play what Kawa serves: ffprobe, hls.js in a headless Chromium and
//! GStreamer each play every rendition of a ladder stream and of a passthrough stream,
//! while a real ffmpeg publishes it.
//!
//! Each check proves that pictures and sound were decoded for that very rendition:
//! - ffprobe decodes 3 s of the media playlist and counts the frames of both tracks;
//! - hls.js (tests/player/play.mjs) plays the master with the variant pinned, for 8 s,
//!   and the browser reports how far `currentTime` went, its decoded frames, the
//!   picture's size and its audio decoder's input;
//! - GStreamer (uridecodebin3: hlsdemux2, qtdemux, libav decoders) plays the media
//!   playlist for 10 s into clock-synced fake sinks that log every buffer: raw pictures
//!   of the rendition's size and raw audio, spanning seconds of stream time.
//!
//! The players come from `scripts/deps.sh test` (Debian's chromium and GStreamer, and
//! `npm ci` in tests/player); a missing one fails the test and says so.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, metrics_text, player_dir, wait_for};
use m3u8_rs::{MasterPlaylist, Playlist, VariantStream};
use serde_json::Value;

use common::SMALL_LADDER as LADDER;

/// Seconds each player plays a rendition (hls.js: from its first `playing` event, which
/// play.mjs allows 20 s to come), and how much of the stream it must have played in
/// that time.
const HLSJS_SECONDS: u32 = 8;
const GST_SECONDS: u32 = 10;
const MIN_PLAYED: f64 = 4.0;

const DEPS: &str = "run scripts/deps.sh test to install the players";

/// Fails (never skips) when a player is not installed.
fn require(what: &str, program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{what} is missing (`{program} {}` failed): {DEPS}",
        args.join(" ")
    );
}

fn require_hlsjs() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium (/usr/bin/chromium) is missing: {DEPS}"
    );
    require("Node.js", "node", &["--version"]);
    for package in ["playwright-core", "hls.js"] {
        assert!(
            player_dir().join("node_modules").join(package).is_dir(),
            "tests/player/node_modules/{package} is missing: {DEPS}"
        );
    }
}

fn require_gstreamer() {
    // The launcher, the HTTP source, the HLS demuxer for fMP4 (adaptivedemux2), the MP4
    // demuxer, and H.264 and AAC decoders.
    require("gst-launch-1.0", "gst-launch-1.0", &["--version"]);
    for element in [
        "uridecodebin3",
        "souphttpsrc",
        "hlsdemux2",
        "qtdemux",
        "avdec_h264",
        "avdec_aac",
    ] {
        require(
            &format!("GStreamer's {element}"),
            "gst-inspect-1.0",
            &["--exists", element],
        );
    }
}

/// A Kawa with one stream being published, once every rendition has a few segments.
struct Live {
    kawa: Kawa,
    _publisher: Publisher,
    stream: &'static str,
    master: MasterPlaylist,
}

impl Live {
    fn master_url(&self) -> String {
        self.kawa.url(&format!("/hls/{}/master.m3u8", self.stream))
    }

    fn variant_url(&self, variant: &VariantStream) -> String {
        self.kawa
            .url(&format!("/hls/{}/{}", self.stream, variant.uri))
    }
}

async fn fetch_playlist(kawa: &Kawa, path: &str) -> Option<Playlist> {
    let response = reqwest::get(kawa.url(path)).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let text = response.bytes().await.ok()?;
    match m3u8_rs::parse_playlist_res(&text) {
        Ok(p) => Some(p),
        Err(_) => panic!(
            "invalid playlist {path}:\n{}",
            String::from_utf8_lossy(&text)
        ),
    }
}

/// Publishes `stream` to `kawa` for a minute and waits for its master playlist with
/// `renditions` variants, and for 3 segments in each (what hls.js keeps behind the live
/// edge).
async fn live(kawa: Kawa, stream: &'static str, renditions: &[&str]) -> Live {
    live_via(kawa, stream, renditions, |kawa, key| {
        Publisher::start(&kawa.rtmp_url(key), 60)
    })
    .await
}

/// [`live`] with the publisher `publish` starts for the stream's key.
async fn live_via(
    kawa: Kawa,
    stream: &'static str,
    renditions: &[&str],
    publish: impl FnOnce(&Kawa, &str) -> Publisher,
) -> Live {
    let key = create_stream(&kawa, stream).await;
    let publisher = publish(&kawa, &key);
    let master = wait_for("the master playlist", Duration::from_secs(20), || async {
        match fetch_playlist(&kawa, &format!("/hls/{stream}/master.m3u8")).await? {
            Playlist::MasterPlaylist(m) => Some(m),
            Playlist::MediaPlaylist(_) => panic!("a media playlist where the master belongs"),
        }
    })
    .await;
    let uris: Vec<String> = master.variants.iter().map(|v| v.uri.clone()).collect();
    let mut expected: Vec<String> = renditions
        .iter()
        .map(|r| format!("{r}/index.m3u8"))
        .collect();
    // In the order of their bandwidth: for H.264 that of their size, but an HEVC source
    // may need fewer bits than an H.264 rung.
    let mut sorted = uris.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "the master's variants");
    for uri in &uris {
        wait_for(
            &format!("3 segments of {uri}"),
            Duration::from_secs(20),
            || async {
                match fetch_playlist(&kawa, &format!("/hls/{stream}/{uri}")).await? {
                    Playlist::MediaPlaylist(p) => (p.segments.len() >= 3).then_some(()),
                    Playlist::MasterPlaylist(_) => panic!("a master where {uri} belongs"),
                }
            },
        )
        .await;
    }
    // Again, now that every variant has segments: a source whose headers carry no frame
    // rate (SVT-AV1's) gets its FRAME-RATE once Kawa has measured it (2 s of frames).
    let Some(Playlist::MasterPlaylist(master)) =
        fetch_playlist(&kawa, &format!("/hls/{stream}/master.m3u8")).await
    else {
        panic!("the master playlist went away")
    };
    Live {
        kawa,
        _publisher: publisher,
        stream,
        master,
    }
}

async fn ladder() -> Live {
    live(
        Kawa::builder().config(LADDER).start(),
        "ladder",
        &["source", "180p", "120p"],
    )
    .await
}

async fn passthrough() -> Live {
    live(
        Kawa::builder()
            .env("KAWA_HLS__PRESET", "passthrough")
            .start(),
        "pass",
        &["source"],
    )
    .await
}

/// The variant's RESOLUTION and FRAME-RATE, which every player must agree with.
fn picture(variant: &VariantStream) -> (u64, u64, f64) {
    let r = variant
        .resolution
        .unwrap_or_else(|| panic!("no RESOLUTION for {}", variant.uri));
    let fps = variant
        .frame_rate
        .unwrap_or_else(|| panic!("no FRAME-RATE for {}", variant.uri));
    (r.width, r.height, fps)
}

/// Runs one command per variant at once (each plays in real time, so one after the
/// other would only add up), each stopped by `timeout` after `limit` (exit status 124).
fn run_each<F>(live: &Live, limit: Duration, command: F) -> Vec<(Output, Duration)>
where
    F: Fn(usize, &VariantStream) -> Command + Sync,
{
    std::thread::scope(|scope| {
        let handles: Vec<_> = live
            .master
            .variants
            .iter()
            .enumerate()
            .map(|(i, variant)| {
                let command = &command;
                scope.spawn(move || {
                    let inner = command(i, variant);
                    let mut cmd = Command::new("timeout");
                    // SIGINT: gst-launch then stops the pipeline and flushes what it
                    // printed; Playwright closes its browser. SIGKILL 5 s later if not.
                    cmd.args(["--signal=INT", "--kill-after=5"])
                        .arg(limit.as_secs().to_string())
                        .arg(inner.get_program())
                        .args(inner.get_args());
                    if let Some(dir) = inner.get_current_dir() {
                        cmd.current_dir(dir);
                    }
                    for (k, v) in inner.get_envs() {
                        match v {
                            Some(v) => cmd.env(k, v),
                            None => cmd.env_remove(k),
                        };
                    }
                    let started = Instant::now();
                    let output = cmd.output().expect("run timeout(1)");
                    (output, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The video codec of a variant, as FFmpeg names it, from the master's CODECS.
fn video_codec(variant: &VariantStream) -> &'static str {
    let codecs = variant.codecs.as_deref().unwrap_or_default();
    match codecs.split(',').next().unwrap_or_default().get(..4) {
        Some("hvc1") => "hevc",
        Some("av01") => "av1",
        Some("avc1") => "h264",
        _ => panic!(
            "{}: CODECS {codecs:?} names no video codec Kawa makes",
            variant.uri
        ),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------
// ffprobe

/// ffprobe opens the media playlist, decodes 3 s of it and finds H.264 video of the
/// variant's size and AAC audio, with frames of both actually decoded.
fn ffprobe_plays(live: &Live) {
    let results = run_each(live, Duration::from_secs(30), |_, variant| {
        let mut cmd = Command::new("ffprobe");
        cmd.args(["-v", "error", "-of", "json"])
            .args([
                "-show_entries",
                "stream=codec_type,codec_name,width,height,nb_read_frames",
            ])
            .args(["-count_frames", "-read_intervals", "%+3"])
            .arg(live.variant_url(variant));
        cmd
    });
    for ((output, took), variant) in results.iter().zip(&live.master.variants) {
        let url = live.variant_url(variant);
        assert!(
            output.status.success(),
            "ffprobe {url}: {}\n{}",
            output.status,
            text(&output.stderr)
        );
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        let streams = json["streams"].as_array().unwrap();
        let kinds: Vec<&str> = streams
            .iter()
            .map(|s| s["codec_type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["video", "audio"], "{url}: {json}");
        let (width, height, fps) = picture(variant);
        let video = &streams[0];
        let audio = &streams[1];
        let frames = |s: &Value| -> u64 {
            s["nb_read_frames"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        assert_eq!(video["codec_name"], video_codec(variant), "{url}: {json}");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(width), Some(height)),
            "{url}: {json}"
        );
        assert_eq!(audio["codec_name"], "aac", "{url}: {json}");
        // 3 s read: at least 2 s of pictures and of AAC frames (1024 samples at 44.1 kHz).
        assert!(
            frames(video) as f64 >= 2.0 * fps,
            "{url}: too few video frames decoded: {json}"
        );
        assert!(
            frames(audio) as f64 >= 2.0 * 44100.0 / 1024.0,
            "{url}: too few audio frames decoded: {json}"
        );
        eprintln!(
            "ffprobe {url}: {}x{} video frames={} audio frames={} in {took:.1?}",
            width,
            height,
            frames(video),
            frames(audio)
        );
    }
}

#[tokio::test]
async fn ffprobe_plays_every_ladder_rendition() {
    let live = ladder().await;
    ffprobe_plays(&live);
}

#[tokio::test]
async fn ffprobe_plays_a_passthrough_stream() {
    let live = passthrough().await;
    ffprobe_plays(&live);
}

// ---------------------------------------------------------------------------------
// hls.js in Chromium

/// hls.js (in low-latency mode or not) plays the master for `seconds` with each variant
/// pinned in turn (all at once, one browser each): `currentTime` advances by seconds,
/// the browser decoded pictures of that variant's size (and no other variant's
/// fragments were played) and audio, and hls.js had no fatal error. Returns play.mjs's
/// reports.
fn hlsjs_plays(live: &Live, low_latency: bool, seconds: u32) -> Vec<Value> {
    require_hlsjs();
    let master_url = live.master_url();
    let limit = Duration::from_secs(u64::from(seconds) + 60);
    // Each browser pins its variant by URI: the master's order follows measured
    // bandwidth, which can change between one fetch and the next (an HEVC source can
    // overtake the rung below it).
    let results = run_each(live, limit, |_, variant| {
        let mut cmd = Command::new("node");
        cmd.current_dir(player_dir())
            .env("PLAY_LOW_LATENCY", if low_latency { "1" } else { "0" })
            .arg("play.mjs")
            .arg(&master_url)
            .arg(seconds.to_string())
            .arg(&variant.uri);
        cmd
    });
    let mut reports = Vec::new();
    // hls.js leaves out the variants whose codec the browser's MSE does not take.
    let decodable = |r: &Value, variant: &VariantStream| match video_codec(variant) {
        "hevc" => r["mse_hevc"] == true,
        "av1" => r["mse_av1"] == true,
        _ => true,
    };
    for ((output, took), variant) in results.iter().zip(&live.master.variants) {
        let url = live.variant_url(variant);
        let stdout = text(&output.stdout);
        let report = || {
            format!(
                "{url}: {}\n{stdout}\n{}",
                output.status,
                text(&output.stderr)
            )
        };
        let line = stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{}", report()));
        let r: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{}", report()));
        if !decodable(&r, variant) {
            let codecs = variant.codecs.as_deref().unwrap_or_default();
            assert!(
                r["errors"].to_string().contains("has no level"),
                "hls.js kept a level this browser cannot decode: {}",
                report()
            );
            eprintln!(
                "hls.js {url}: this Chromium's MSE does not take {codecs}; hls.js leaves \
                 the variant out and plays the others"
            );
            continue;
        }
        let mut heights: Vec<u64> = live
            .master
            .variants
            .iter()
            .filter(|v| decodable(&r, v))
            .map(|v| picture(v).1)
            .collect();
        heights.sort();
        assert!(output.status.success(), "hls.js failed: {}", report());
        assert_eq!(r["errors"], serde_json::json!([]), "{}", report());
        let played = r["played_seconds"].as_f64().unwrap();
        assert!(
            played >= MIN_PLAYED.max(f64::from(seconds) / 2.0),
            "hls.js played {played:.2} s of {seconds} s: {}",
            report()
        );
        let (width, height, fps) = picture(variant);
        assert_eq!(
            r["video_size"].as_str(),
            Some(format!("{width}x{height}").as_str()),
            "{}",
            report()
        );
        assert_eq!(r["played_urls"], serde_json::json!([url]), "{}", report());
        assert_eq!(
            r["level_heights"],
            serde_json::json!(heights),
            "{}",
            report()
        );
        let frames = r["decoded_frames"].as_u64().unwrap();
        assert!(
            frames as f64 >= MIN_PLAYED * fps,
            "only {frames} frames decoded: {}",
            report()
        );
        assert!(
            r["audio_decoded_bytes"].as_u64() > Some(0),
            "no audio decoded: {}",
            report()
        );
        eprintln!(
            "hls.js {url} ({}, lowLatencyMode {low_latency}): played {played:.2} s after starting \
             in {:.2} s, {frames} frames, {} stalls, {} non-fatal errors, latency {}, in \
             {took:.1?}",
            video_codec(variant),
            r["start_seconds"].as_f64().unwrap_or(0.0),
            r["stalls"],
            r["warnings"].as_array().map_or(0, Vec::len),
            r["latency"]
        );
        if std::env::var_os("KAWA_TEST_VERBOSE").is_some() {
            eprintln!("{r}");
        }
        reports.push(r);
    }
    reports
}

#[tokio::test]
async fn hlsjs_plays_every_ladder_rendition() {
    require_hlsjs();
    let live = ladder().await;
    hlsjs_plays(&live, true, HLSJS_SECONDS);
}

/// Players without LL-HLS read the same playlists (they skip the parts).
#[tokio::test]
async fn hlsjs_without_low_latency_plays_a_passthrough_stream() {
    require_hlsjs();
    let live = passthrough().await;
    hlsjs_plays(&live, false, HLSJS_SECONDS);
}

/// A viewer with hls.js's defaults (low-latency mode) watches for 30 s without a stall;
/// how far behind live it plays is printed here and measured by
/// `cargo bench --bench viewer_latency`.
#[tokio::test]
async fn hlsjs_plays_low_latency_for_30_seconds_without_a_stall() {
    require_hlsjs();
    let live = passthrough().await;
    let reports = hlsjs_plays(&live, true, 30);
    let r = &reports[0];
    // On a stall, what Kawa saw: frames it dropped, and the log's warnings.
    let dropped: Vec<String> = metrics_text(&live.kawa)
        .await
        .lines()
        .filter(|l| l.contains("dropped") && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let warnings: Vec<String> = live
        .kawa
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    assert_eq!(r["stalls"], 0, "{r}\n{dropped:#?}\n{warnings:#?}");
    let median = r["latency"]["pdt"]["median"].as_f64();
    assert!(median.is_some(), "no latency samples: {r}");
}

// ---------------------------------------------------------------------------------
// GStreamer

/// What one fake sink of a `gst-launch-1.0 -v` run received: its negotiated caps and
/// the presentation times of the buffers it rendered.
#[derive(Debug, Default)]
struct SinkLog {
    caps: String,
    pts: Vec<f64>,
    bytes: Vec<u64>,
}

impl SinkLog {
    fn span(&self) -> f64 {
        match (self.pts.first(), self.pts.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }
}

/// `H:MM:SS.nnnnnnnnn` in seconds.
fn clock_time(s: &str) -> Option<f64> {
    let mut parts = s.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// Reads the `-v` lines of sink `name`: its caps (from its pad or from the caps event it
/// logged), and for each buffer (fakesink with `silent=false` logs each one as its
/// `last-message`)
/// `chain ******* (name:sink) (N bytes, dts: ..., pts: H:MM:SS.n, ...`.
fn sink_log(stdout: &str, name: &str) -> SinkLog {
    let mut log = SinkLog::default();
    let caps_prefix = format!("GstFakeSink:{name}.GstPad:sink: caps = ");
    let chain = format!("({name}:sink) (");
    let caps_event = format!("({name}:sink) E (type: caps ");
    for line in stdout.lines() {
        if let Some((_, caps)) = line.split_once(&caps_prefix) {
            log.caps = caps.to_owned();
        } else if line.contains(&caps_event)
            && let Some((_, caps)) = line.split_once("caps=(GstCaps)\"")
        {
            // The event as fakesink logs it, escaped: `video/x-raw\,\ format\=...";)`.
            let caps = caps.split("\";)").next().unwrap_or(caps);
            log.caps = caps.replace('\\', "");
        } else if line.contains("last-message = chain")
            && let Some((_, rest)) = line.split_once(&chain)
        {
            let bytes = rest.split(' ').next().and_then(|n| n.parse().ok());
            let pts = rest
                .split_once("pts: ")
                .and_then(|(_, p)| p.split(',').next())
                .and_then(clock_time);
            if let (Some(bytes), Some(pts)) = (bytes, pts) {
                log.bytes.push(bytes);
                log.pts.push(pts);
            }
        }
    }
    log
}

/// GStreamer plays each media playlist for 10 s, as playbin3 does it (uridecodebin3:
/// souphttpsrc, hlsdemux2, qtdemux, avdec_h264 and avdec_aac), into fake sinks synced to
/// the clock: the video sink must get raw pictures of the variant's size covering
/// seconds of stream time, the audio sink raw audio covering as much, and no ERROR.
///
/// hlsdemux2, not `hlsdemux`: GStreamer's legacy HLS demuxer (what `playbin` picks)
/// gives live fMP4 a segment starting at the playlist position while qtdemux stamps
/// buffers with the fragments' decode times, so clock-synced sinks wait for running
/// times minutes away and render nothing; ffmpeg's own live fMP4 HLS fares no better
/// there. hlsdemux2 (adaptivedemux2, playbin3's) maps fMP4 times and is GStreamer's HLS
/// client for fMP4.
///
/// uridecodebin3 and not all of playbin3: in one of about a hundred runs (GStreamer
/// 1.22), playbin3's playsink left decoded audio stuck inside its audio converter
/// while the video played; that is the rendering plumbing, not what Kawa serves.
fn gstreamer_plays(live: &Live) {
    require_gstreamer();
    let limit = Duration::from_secs(u64::from(GST_SECONDS));
    let results = run_each(live, limit, |_, variant| {
        let mut cmd = Command::new("gst-launch-1.0");
        cmd.args(["-v", "uridecodebin3", "name=d"])
            .arg(format!("uri={}", live.variant_url(variant)))
            .args(["d.video_0", "!", "queue", "!"])
            .args(["fakesink", "name=vsink", "sync=true", "silent=false"])
            .args(["d.audio_0", "!", "queue", "!"])
            .args(["fakesink", "name=asink", "sync=true", "silent=false"]);
        cmd
    });
    for ((output, took), variant) in results.iter().zip(&live.master.variants) {
        let url = live.variant_url(variant);
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        let tail = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("last-message"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let report = || {
            format!(
                "gst-launch-1.0 uridecodebin3 uri={url}: {}\n{}\n{}",
                output.status,
                tail(&stdout),
                stderr
            )
        };
        // 124: still playing when `timeout` stopped it (an error or an early EOS ends
        // gst-launch by itself).
        assert_eq!(output.status.code(), Some(124), "{}", report());
        assert!(
            !stdout.contains("ERROR:") && !stderr.contains("ERROR:"),
            "{}",
            report()
        );
        let (width, height, fps) = picture(variant);
        let video = sink_log(&stdout, "vsink");
        assert!(
            video.caps.starts_with("video/x-raw")
                && video.caps.contains(&format!("width=(int){width}"))
                && video.caps.contains(&format!("height=(int){height}")),
            "video sink caps {:?}: {}",
            video.caps,
            report()
        );
        // Raw pictures: I420 (what avdec_h264 gives for this stream) is 1.5 bytes a pixel.
        let picture_bytes = width * height * 3 / 2;
        assert!(
            video.caps.contains("format=(string)I420")
                && video.bytes.iter().all(|&b| b == picture_bytes),
            "video buffers are not {width}x{height} I420 pictures: caps {:?}, sizes {:?}",
            video.caps,
            video.bytes
        );
        assert!(
            video.span() >= MIN_PLAYED && video.pts.len() as f64 >= MIN_PLAYED * fps,
            "GStreamer rendered {} pictures over {:.2} s: {}",
            video.pts.len(),
            video.span(),
            report()
        );
        let audio = sink_log(&stdout, "asink");
        assert!(
            audio.caps.starts_with("audio/x-raw"),
            "audio sink caps {:?}: {}",
            audio.caps,
            report()
        );
        assert!(
            audio.span() >= MIN_PLAYED,
            "GStreamer rendered {} audio buffers over {:.2} s: {}",
            audio.pts.len(),
            audio.span(),
            report()
        );
        eprintln!(
            "GStreamer {url}: {} pictures over {:.2} s, {} audio buffers over {:.2} s, in \
             {took:.1?}",
            video.pts.len(),
            video.span(),
            audio.pts.len(),
            audio.span()
        );
    }
}

#[tokio::test]
async fn gstreamer_plays_every_ladder_rendition() {
    require_gstreamer();
    let live = ladder().await;
    gstreamer_plays(&live);
}

#[tokio::test]
async fn gstreamer_plays_a_passthrough_stream() {
    require_gstreamer();
    let live = passthrough().await;
    gstreamer_plays(&live);
}

/// A stream published over SRT (MPEG-TS from FFmpeg's libsrt) plays in every player,
/// its H.264 rungs and its source.
#[tokio::test]
async fn every_player_plays_a_ladder_published_over_srt() {
    require_hlsjs();
    require_gstreamer();
    let live = live_via(
        Kawa::builder().config(LADDER).srt().start(),
        "srt",
        &["source", "180p", "120p"],
        |kawa, key| {
            let stream_id = format!("#!::r=live/{key},m=publish");
            Publisher::start_srt(&kawa.srt_url(&stream_id, None), 60)
        },
    )
    .await;
    ffprobe_plays(&live);
    hlsjs_plays(&live, true, HLSJS_SECONDS);
    gstreamer_plays(&live);
}

// ---------------------------------------------------------------------------------
// Enhanced RTMP: HEVC and AV1 from FFmpeg 9 (Debian's FFmpeg 5.1 cannot publish them)

/// The FFmpeg of the `imageio-ffmpeg` wheel (9.x, with libx265 and SVT-AV1), which
/// scripts/test.sh installs.
fn ffmpeg9() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "imageio-ffmpeg is missing (scripts/test.sh installs it): {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}

/// FFmpeg 9 publishing 320x240 at 25 fps and AAC over Enhanced RTMP with `video` codec
/// arguments, for 60 s.
fn enhanced_publisher(url: &str, video: &[&str]) -> Publisher {
    // Encoded once, faster than real time, then sent in real time and copied: a live
    // SVT-AV1 or x265 encode beside the ladder's decode and three browsers starved the
    // rungs on a loaded 2-core CI machine. The bytes are still the real encoder's.
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.flv");
    let program = ffmpeg9();
    let source = common::test_source(25, 20);
    let mut args = vec!["-hide_banner", "-nostdin", "-v", "error", "-y"];
    args.extend(source.iter().map(String::as_str));
    args.extend_from_slice(&["-pix_fmt", "yuv420p"]);
    args.extend_from_slice(video);
    args.extend_from_slice(&["-c:a", "aac", "-ac", "2", "-b:a", "64k", "-f", "flv"]);
    let status = Command::new(&program)
        .args(&args)
        .arg(&clip)
        .status()
        .unwrap_or_else(|e| panic!("{program} (scripts/test.sh installs it): {e}"));
    assert!(
        status.success(),
        "encoding the publisher's clip with {video:?}"
    );
    Publisher::loop_file(&program, dir, url, &clip, "flv")
}

/// The CODECS of the master's variant `uri`.
fn codecs_of(live: &Live, uri: &str) -> String {
    let variant = live.master.variants.iter().find(|v| v.uri == uri).unwrap();
    variant.codecs.clone().unwrap_or_default()
}

/// HEVC over Enhanced RTMP: the source is packaged as `hvc1` (parameter sets in the
/// sample entry) with its Annex E CODECS, FFmpeg encodes H.264 rungs from it, and
/// ffprobe and hls.js play them (hls.js the HEVC source too, where Chromium decodes it).
#[tokio::test]
async fn an_hevc_publisher_gets_an_hvc1_source_and_h264_rungs_that_play() {
    require_hlsjs();
    let live = live_via(
        Kawa::builder().config(LADDER).start(),
        "hevc",
        &["source", "180p", "120p"],
        |kawa, key| enhanced_publisher(&kawa.rtmp_url(key), &common::X265),
    )
    .await;
    let source = codecs_of(&live, "source/index.m3u8");
    assert!(source.starts_with("hvc1.1.6.L"), "source CODECS {source}");
    assert!(codecs_of(&live, "180p/index.m3u8").starts_with("avc1."));
    ffprobe_plays(&live);
    hlsjs_plays(&live, true, HLSJS_SECONDS);
}

/// AV1 over Enhanced RTMP: the source is packaged as `av01` with `av1C` and its CODECS,
/// FFmpeg (Debian's 5.1, fed fragmented MP4) encodes H.264 rungs from it, and ffprobe
/// and hls.js play every variant.
#[tokio::test]
async fn an_av1_publisher_gets_an_av01_source_and_h264_rungs_that_play() {
    require_hlsjs();
    let live = live_via(
        Kawa::builder().config(LADDER).start(),
        "av1",
        &["source", "180p", "120p"],
        |kawa, key| {
            enhanced_publisher(
                &kawa.rtmp_url(key),
                &[
                    "-c:v",
                    "libsvtav1",
                    "-preset",
                    "12",
                    "-g",
                    "25",
                    "-svtav1-params",
                    "lp=1",
                ],
            )
        },
    )
    .await;
    let source = codecs_of(&live, "source/index.m3u8");
    assert!(source.starts_with("av01.0."), "source CODECS {source}");
    assert!(codecs_of(&live, "120p/index.m3u8").starts_with("avc1."));
    ffprobe_plays(&live);
    hlsjs_plays(&live, true, HLSJS_SECONDS);
}
