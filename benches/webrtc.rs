//! CPU and memory per WebRTC viewer: one 720p 3 Mbit/s stream (OBS-like, no B-frames,
//! so its source is what viewers get) and N WHEP viewers on loopback. The viewers are
//! str0m clients in this process (full ICE, DTLS, SRTP, like a browser's stack without
//! the decoder), each on its own UDP socket and thread. Kawa's own CPU (FFmpeg children
//! excluded) is measured without viewers, then with them; the difference per viewer is
//! the figure. Passthrough: no FFmpeg, so no Opus: video only (audio adds 50 small
//! packets a second per viewer).
//!
//! `cargo bench --bench webrtc` (env: KAWA_WEBRTC_VIEWERS, default 200;
//! KAWA_BENCH_SECONDS, default 15). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "source.rs"]
mod source;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, env_number, rss_kib};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Kawa's utime + stime in clock ticks (children not included).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// What the viewers received, together.
#[derive(Default)]
struct Received {
    frames: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicU64,
}

/// One viewer: offers, takes Kawa's answer, then receives until `stop`.
fn viewer(
    whep: String,
    http: tokio::runtime::Handle,
    received: Arc<Received>,
    stop: Arc<AtomicBool>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut sdp = rtc.sdp_api();
    sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = sdp.apply().unwrap();
    let answer = http.block_on(async {
        let answer = reqwest::Client::new()
            .post(&whep)
            .header("Content-Type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 201, "WHEP offer refused");
        answer.text().await.unwrap()
    });
    let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) && rtc.is_alive() {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    received.connected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    received.frames.fetch_add(1, Ordering::Relaxed);
                    received
                        .bytes
                        .fetch_add(data.data.len() as u64, Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = timeout.saturating_duration_since(Instant::now());
        socket
            .set_read_timeout(Some(
                wait.clamp(Duration::from_millis(1), Duration::from_millis(100)),
            ))
            .unwrap();
        let input = match socket.recv_from(&mut buf) {
            Ok((n, source)) => Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents: buf[..n].try_into().unwrap(),
                },
            ),
            Err(_) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let viewers = env_number("KAWA_WEBRTC_VIEWERS", 200) as usize;
    let seconds = env_number("KAWA_BENCH_SECONDS", 15);
    let dir = tempfile::tempdir().unwrap();
    let source = source::make_source(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__THUMBNAIL_SECONDS", "0")
        .env("KAWA_WEBRTC__UDP_ADDR", "127.0.0.1:0")
        .env("KAWA_WEBRTC__MAX_SESSIONS", &(viewers + 10).to_string())
        // Every client here comes from 127.0.0.1, all at once.
        .env(
            "KAWA_WEBRTC__MAX_PENDING_PER_IP",
            &(viewers + 10).to_string(),
        )
        .env("RUST_LOG", "warn,kawa::server=info")
        .start();
    let key = runtime.block_on(create_stream(&kawa, "rtc"));
    let _publisher = Publisher::start_file_loop_as(&kawa.rtmp_url(&key), &source, "flv");
    runtime.block_on(common::wait_for(
        "the stream",
        Duration::from_secs(30),
        || async { common::fetch_text(&kawa, "/hls/rtc/master.m3u8").await },
    ));
    let pid = kawa.pid();
    let tick = 100.0; // USER_HZ
    let measure = |what: &str| {
        let (cpu, rss, at) = (cpu_ticks(pid), rss_kib(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(seconds));
        let used = (cpu_ticks(pid) - cpu) as f64 / tick / at.elapsed().as_secs_f64();
        println!(
            "  {what}: Kawa {:.1} % of a core, RSS {} KiB",
            used * 100.0,
            rss_kib(pid)
        );
        (used, rss)
    };
    let (idle_cpu, idle_rss) = measure("no viewer");

    let received = Arc::new(Received::default());
    let stop = Arc::new(AtomicBool::new(false));
    let whep = kawa.url("/whep/rtc");
    let threads: Vec<_> = (0..viewers)
        .map(|_| {
            let (whep, received, stop) = (whep.clone(), Arc::clone(&received), Arc::clone(&stop));
            let http = runtime.handle().clone();
            std::thread::spawn(move || viewer(whep, http, received, stop))
        })
        .collect();
    let joined = Instant::now();
    while (received.connected.load(Ordering::Relaxed) as usize) < viewers
        && joined.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let connected = received.connected.load(Ordering::Relaxed);
    // Every viewer starts at a keyframe (2 s GOPs).
    std::thread::sleep(Duration::from_secs(3));
    let (frames, bytes) = (
        received.frames.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed),
    );
    let series = |name: &str| {
        let metric = format!("{name}{{stream=\"rtc\"}}");
        runtime
            .block_on(common::metric_value(&kawa, &metric))
            .unwrap_or(0.0)
    };
    let requests = series("kawa_webrtc_keyframe_requests_total");
    let (cpu, _) = measure(&format!("{viewers} viewers"));
    let rss = rss_kib(pid);
    println!(
        "  keyframe requests (PLI/FIR) while measured: {:.0}; NACKs in all: {:.0}",
        series("kawa_webrtc_keyframe_requests_total") - requests,
        series("kawa_webrtc_nacks_total")
    );
    let frames = received.frames.load(Ordering::Relaxed) - frames;
    let bytes = received.bytes.load(Ordering::Relaxed) - bytes;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let per_viewer = (cpu - idle_cpu) / viewers as f64;
    println!(
        "webrtc: {viewers} viewers of one 720p 3 Mbit/s stream ({connected} connected in \
         {:.1} s): {:.3} % of a core and {} KiB per viewer; each got {:.1} frames/s, \
         {:.2} Mbit/s",
        joined.elapsed().as_secs_f64().min(60.0),
        per_viewer * 100.0,
        rss.saturating_sub(idle_rss) / viewers as u64,
        frames as f64 / viewers as f64 / seconds as f64,
        bytes as f64 * 8.0 / viewers as f64 / seconds as f64 / 1e6,
    );
}
