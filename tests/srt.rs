//! SRT ingest with real callers: FFmpeg (libsrt) publishing MPEG-TS with each streamid
//! form, with and without a passphrase; wrong keys refused with SRT's reason codes
//! (read by a second, independent SRT stack: srt-tokio as a caller); a flood of keyless
//! callers and half-open handshakes while a keyed publisher gets in.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srt_protocol::packet::{RejectReason, ServerRejectReason};

use common::{Kawa, Publisher, create_stream, ffprobe_json, metric_value, rss_kib, wait_for};

/// The streamid forms encoders use, by name: SRT access control, SRS's, a bare key.
type Form = fn(&str) -> String;
const FORMS: [(&str, Form); 3] = [
    ("access", |key| format!("#!::r=live/{key},m=publish")),
    ("prefixed", |key| format!("publish:live/{key}")),
    ("bare", |key| key.to_owned()),
];

/// Waits until `stream`'s source playlist lists `n` segments.
async fn segments(kawa: &Kawa, stream: &str, n: usize) {
    let path = format!("/hls/{stream}/source/index.m3u8");
    wait_for(
        &format!("{n} segments of {stream}"),
        Duration::from_secs(30),
        || async {
            let text = common::fetch_text(kawa, &path).await?;
            (text.matches("#EXTINF").count() >= n).then_some(())
        },
    )
    .await;
}

/// What ffprobe finds in the stream's source playlist: (video codec, width, height,
/// audio codec).
fn probe(kawa: &Kawa, stream: &str) -> (String, u64, u64, String) {
    let url = kawa.url(&format!("/hls/{stream}/source/index.m3u8"));
    let json = ffprobe_json(&["-show_streams"], &url);
    let streams = json["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    (
        video["codec_name"].as_str().unwrap_or_default().to_owned(),
        video["width"].as_u64().unwrap_or_default(),
        video["height"].as_u64().unwrap_or_default(),
        audio["codec_name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Calls with srt-tokio (not libsrt) and returns how the listener answered.
async fn call(addr: SocketAddr, stream_id: &str) -> Result<(), String> {
    let socket = srt_tokio::SrtSocket::builder()
        .latency(Duration::from_millis(120))
        .call(addr, Some(stream_id))
        .await;
    match socket {
        Ok(socket) => {
            drop(socket);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_streamid_form_publishes_and_plays_and_a_wrong_key_is_refused() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .srt()
        .start();
    let forms = FORMS;
    let mut publishers = Vec::new();
    for (stream, form) in forms {
        let key = create_stream(&kawa, stream).await;
        publishers.push(Publisher::start_srt(&kawa.srt_url(&form(&key), None), 40));
    }
    for (stream, _) in forms {
        segments(&kawa, stream, 3).await;
        assert_eq!(
            probe(&kawa, stream),
            ("h264".into(), 320, 240, "aac".into()),
            "{stream}"
        );
    }

    let srt = kawa.srt.unwrap();
    // SRT_REJX_FORBIDDEN and SRT_REJX_BAD_MODE, as the caller's stack words them.
    let reason = |r| RejectReason::Server(r).to_string();
    let refused = call(srt, "#!::r=live/not-a-key,m=publish").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains(&reason(ServerRejectReason::Forbidden))),
        "a wrong key: {refused:?}"
    );
    let play = call(srt, "#!::r=live/whatever,m=request").await;
    assert!(
        play.as_ref()
            .is_err_and(|e| e.contains(&reason(ServerRejectReason::BadMode))),
        "a player: {play:?}"
    );
    let none = call(srt, "").await;
    assert!(none.is_err(), "no streamid: {none:?}");
    // FFmpeg with a wrong key gets nowhere, and nothing is published.
    let mut wrong = Publisher::start_srt(&kawa.srt_url("live/not-a-key", None), 5);
    assert!(
        wrong.wait_exit(Duration::from_secs(15)).is_some(),
        "FFmpeg with a wrong key still runs"
    );
    let bad_keys = metric_value(&kawa, "kawa_publish_attempts_total{result=\"bad_key\"}")
        .await
        .unwrap_or(0.0);
    assert!(bad_keys >= 3.0, "bad_key attempts: {bad_keys}");
    let logs = kawa.logs();
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains("not-a-key")).collect();
    assert!(leaks.is_empty(), "a key reached the log: {leaks:#?}");
    drop(publishers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_is_required_when_set() {
    let passphrase = "correct-horse-battery";
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_SRT__PASSPHRASE", passphrase)
        .srt()
        .start();
    let key = create_stream(&kawa, "secret").await;
    let sid = format!("#!::r=live/{key},m=publish");
    // Without the passphrase, and with a wrong one: refused by the handshake. Neither
    // takes the path, so the right publisher after them gets it.
    let mut without = Publisher::start_srt(&kawa.srt_url(&sid, None), 5);
    let mut wrong = Publisher::start_srt(&kawa.srt_url(&sid, Some("wrong-passphrase")), 5);
    for caller in [&mut without, &mut wrong] {
        assert!(
            caller.wait_exit(Duration::from_secs(15)).is_some(),
            "a caller without the right passphrase still runs"
        );
    }
    assert!(
        common::fetch_text(&kawa, "/hls/secret/source/index.m3u8")
            .await
            .is_none(),
        "a caller without the passphrase published"
    );
    // Every streamid form with the passphrase, at each AES key length.
    let _right = Publisher::start_srt(&kawa.srt_url(&sid, Some(passphrase)), 40);
    let mut others = Vec::new();
    for ((name, form), key_length) in FORMS.into_iter().skip(1).zip([24, 32]) {
        let stream = format!("secret-{name}");
        let key = create_stream(&kawa, &stream).await;
        let url = kawa.srt_url(&form(&key), Some(passphrase));
        others.push((
            stream,
            Publisher::start_srt(&format!("{url}&pbkeylen={key_length}"), 40),
        ));
    }
    segments(&kawa, "secret", 3).await;
    assert_eq!(
        probe(&kawa, "secret"),
        ("h264".into(), 320, 240, "aac".into())
    );
    for (stream, _) in &others {
        segments(&kawa, stream, 3).await;
    }
    assert!(
        !kawa.logs().contains(passphrase),
        "the passphrase was logged"
    );
}

/// The first datagram FFmpeg's libsrt sends: an induction handshake, to replay from
/// many sockets as callers that never go on.
async fn real_induction() -> Vec<u8> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "srt://{}?streamid=x&connect_timeout=1000",
        trap.local_addr().unwrap()
    );
    let _caller = Publisher::start_srt(&url, 2);
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), trap.recv_from(&mut buf))
        .await
        .expect("FFmpeg sends an induction")
        .unwrap();
    buf.truncate(n);
    buf
}

/// 1000 callers without a valid key (wrong keys over and over, and half-open
/// handshakes that never finish) cost little and keep nobody out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keyless_callers_cost_little_while_a_keyed_one_gets_in() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        // All callers come from 127.0.0.1 here.
        .env("KAWA_RTMP__MAX_CONNECTIONS_PER_IP", "4096")
        .env("RUST_LOG", "info")
        .srt()
        .start();
    let key = create_stream(&kawa, "keyed").await;
    let srt = kawa.srt.unwrap();
    // Settled after start-up, so what is measured is the flood.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(kawa.pid());

    let induction = real_induction().await;
    let mut half_open = Vec::new();
    for _ in 0..500 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&induction, srt).await.unwrap();
        half_open.push(socket);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let flood: Vec<_> = (0..500)
        .map(|i| {
            tokio::spawn(async move {
                let mut refused = 0u32;
                while Instant::now() < deadline {
                    let sid = format!("#!::r=live/bad-{i}-{refused},m=publish");
                    if call(srt, &sid).await.is_err() {
                        refused += 1;
                    }
                    // An encoder retrying with a wrong key (OBS waits seconds; this
                    // is ten times a second).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _publisher = Publisher::start_srt(
        &kawa.srt_url(&format!("#!::r=live/{key},m=publish"), None),
        40,
    );
    segments(&kawa, "keyed", 2).await;
    let mut peak = rss_kib(kawa.pid());
    let mut most_open = 0.0f64;
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(kawa.pid()));
        let open = metric_value(&kawa, "kawa_srt_connections_open").await;
        most_open = most_open.max(open.unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut refusals = 0;
    for task in flood {
        peak = peak.max(rss_kib(kawa.pid()));
        refusals += task.await.unwrap();
    }
    peak = peak.max(rss_kib(kawa.pid()));
    let grown = peak.saturating_sub(before) / 1024;
    println!(
        "1000 keyless callers ({refusals} refused handshakes, 500 half-open): \
         RSS {} -> {} MiB at the peak (+{grown} MiB), at most {most_open} SRT connections open",
        before / 1024,
        peak / 1024
    );
    assert!(refusals >= 500, "refusals: {refusals}");
    assert!(grown <= 64, "RSS grew by {grown} MiB");
    // The keyed stream went on through it.
    segments(&kawa, "keyed", 4).await;
    let open = metric_value(&kawa, "kawa_srt_connections_open").await;
    assert_eq!(open, Some(1.0), "only the publisher is left");
    drop(half_open);
}

/// The stream key is checked once per caller; a takeover over SRT works as on RTMP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_srt_publisher_takes_over_and_the_playlist_goes_on() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .srt()
        .start();
    let key = create_stream(&kawa, "again").await;
    let url = kawa.srt_url(&format!("#!::r=live/{key},m=publish"), None);
    let mut first = Publisher::start_srt(&url, 60);
    segments(&kawa, "again", 3).await;
    let before = common::fetch_text(&kawa, "/hls/again/source/index.m3u8")
        .await
        .unwrap();
    let sequence = |text: &str| -> u64 {
        let (msn, count) = m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .map(|p| (p.media_sequence, p.segments.len() as u64))
            .unwrap();
        msn + count
    };
    // The encoder dies without a word (SIGKILL: no SRT shutdown); a new one comes in
    // before the old connection timed out, and takes the stream over.
    first.kill();
    let _second = Publisher::start_srt(&url, 60);
    let after = wait_for("the playlist goes on", Duration::from_secs(30), || async {
        let text = common::fetch_text(&kawa, "/hls/again/source/index.m3u8").await?;
        (sequence(&text) >= sequence(&before) + 3).then_some(text)
    })
    .await;
    assert!(after.contains("#EXT-X-DISCONTINUITY"), "{after}");
    assert!(!after.contains("#EXT-X-ENDLIST"), "{after}");
    let msn = |text: &str| {
        m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .unwrap()
            .media_sequence
    };
    assert!(msn(&after) >= msn(&before), "the sequence went back");
}

/// A caller with a good key whose connection stays up (SRT keepalives) but that sends no
/// media is closed after `rtmp.idle_timeout_ms`, as an RTMP publisher is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_caller_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RTMP__IDLE_TIMEOUT_MS", "2000")
        .srt()
        .start();
    let key = create_stream(&kawa, "silent").await;
    let socket = srt_tokio::SrtSocket::builder()
        .latency(Duration::from_millis(120))
        .call(
            kawa.srt.unwrap(),
            Some(&format!("#!::r=live/{key},m=publish")),
        )
        .await
        .expect("a good key is accepted");
    wait_for(
        "the connection to count",
        Duration::from_secs(5),
        || async {
            (metric_value(&kawa, "kawa_srt_connections_open").await == Some(1.0)).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    wait_for(
        "the idle caller to be closed",
        Duration::from_secs(10),
        || async {
            (metric_value(&kawa, "kawa_srt_connections_open").await == Some(0.0)).then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let timeouts = metric_value(
        &kawa,
        "kawa_srt_connections_closed_total{result=\"timeout\"}",
    )
    .await;
    assert_eq!(timeouts, Some(1.0));
    drop(socket);
}

/// OBS's HEVC over SRT (here Debian's FFmpeg with libx265 and libsrt): the source keeps
/// HEVC as `hvc1`, with a configuration built from the in-band parameter sets, and the
/// ladder's rungs are H.264 encoded from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_over_srt_is_packaged_as_hvc1_with_h264_rungs() {
    let kawa = Kawa::builder()
        .config("[[hls.rungs]]\nname = \"120p\"\nheight = 120\nvideo_kbps = 200\n")
        .srt()
        .start();
    let key = create_stream(&kawa, "hevc").await;
    let url = kawa.srt_url(&format!("#!::r=live/{key},m=publish"), None);
    let source = common::test_source(25, 30);
    let mut args = vec!["-hide_banner", "-nostdin", "-v", "error", "-re"];
    args.extend(source.iter().map(String::as_str));
    args.extend_from_slice(&["-pix_fmt", "yuv420p"]);
    args.extend_from_slice(&common::X265);
    args.extend_from_slice(&["-c:a", "aac", "-f", "mpegts", &url]);
    let _publisher = Publisher::start_program("ffmpeg", &args);
    segments(&kawa, "hevc", 3).await;
    assert_eq!(
        probe(&kawa, "hevc"),
        ("hevc".into(), 320, 240, "aac".into())
    );
    let master = wait_for(
        "the rung in the master",
        Duration::from_secs(20),
        || async {
            let text = common::fetch_text(&kawa, "/hls/hevc/master.m3u8").await?;
            text.contains("120p/index.m3u8").then_some(text)
        },
    )
    .await;
    assert!(master.contains("CODECS=\"hvc1.1.6.L"), "{master}");
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let rung = ffprobe_json(&["-show_streams"], &kawa.url("/hls/hevc/120p/index.m3u8"));
    assert_eq!(rung["streams"][0]["codec_name"], "h264", "{rung}");
}
