//! Hostile and broken RTMP peers next to a live stream: each ends only its own
//! connection; the process, the listener and the live stream carry on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream};
use m3u8_rs::Playlist;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

async fn last_sequence(kawa: &Kawa, stream: &str) -> Option<u64> {
    let url = kawa.url(&format!("/hls/{stream}/source/index.m3u8"));
    let text = reqwest::get(url).await.ok()?.bytes().await.ok()?;
    match m3u8_rs::parse_playlist_res(&text) {
        Ok(Playlist::MediaPlaylist(p)) if !p.segments.is_empty() => {
            Some(p.media_sequence + p.segments.len() as u64 - 1)
        }
        _ => None,
    }
}

async fn wait_for_sequence_beyond(
    kawa: &Kawa,
    stream: &str,
    beyond: Option<u64>,
    limit: Duration,
) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(seq) = last_sequence(kawa, stream).await
            && beyond.is_none_or(|b| seq > b)
        {
            return seq;
        }
        assert!(Instant::now() < deadline, "no new segment on {stream}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP connection that has done a real RTMP handshake with Kawa.
fn handshaken(kawa: &Kawa) -> TcpStream {
    let mut socket = TcpStream::connect(kawa.rtmp).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut handshake = Handshake::new(PeerType::Client);
    socket
        .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "kawa closed during the handshake");
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).unwrap();
                return socket;
            }
        }
    }
}

/// One RTMP chunk (type 0 header on chunk stream 3) carrying a whole message.
fn chunk(message_type: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![
        0x03,
        0,
        0,
        0,
        len[1],
        len[2],
        len[3],
        message_type,
        0,
        0,
        0,
        0,
    ];
    out.extend_from_slice(payload);
    out
}

/// Reads until Kawa closes the connection; fails if it stays open past `limit`.
fn assert_closed_within(mut socket: TcpStream, limit: Duration, what: &str) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{what}: connection still open");
    }
}

#[tokio::test]
async fn garbage_and_broken_peers_do_not_disturb_a_live_stream() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "steady").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 40);
    let before = wait_for_sequence_beyond(&kawa, "steady", None, Duration::from_secs(20)).await;

    // Random bytes instead of a handshake.
    let mut garbage = TcpStream::connect(kawa.rtmp).unwrap();
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = garbage.write_all(&noise);
    assert_closed_within(garbage, Duration::from_secs(5), "garbage");

    // A handshake cut short, then a hang-up.
    let mut truncated = TcpStream::connect(kawa.rtmp).unwrap();
    truncated.write_all(&[3]).unwrap();
    truncated.write_all(&[0u8; 700]).unwrap();
    drop(truncated);

    // After a good handshake: an AMF0 command whose string overruns the message.
    let mut broken_amf = handshaken(&kawa);
    broken_amf
        .write_all(&chunk(20, &[0x02, 0x00, 0x07, b'c', b'o', b'n']))
        .unwrap();
    assert_closed_within(broken_amf, Duration::from_secs(5), "broken AMF command");

    // A short onMetaData (rml_rtmp 0.8 has panicked on these).
    let mut short_meta = handshaken(&kawa);
    let mut meta = vec![0x02, 0x00, 0x0d];
    meta.extend_from_slice(b"@setDataFrame");
    meta.extend_from_slice(&[0x02, 0x00, 0x0a]);
    meta.extend_from_slice(b"onMetaData");
    meta.extend_from_slice(&[0x08, 0x00, 0x00]);
    let _ = short_meta.write_all(&chunk(18, &meta));
    let _ = short_meta.write_all(&chunk(20, &[0x02]));
    let _ = short_meta.write_all(&chunk(20, &[]));
    let _ = short_meta.write_all(&[0xC3; 64]);
    drop(short_meta);

    // A chunk header that claims a message far larger than anything sent.
    let mut liar = handshaken(&kawa);
    let _ = liar.write_all(&[0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 0, 0, 0, 0, 1, 2, 3]);
    drop(liar);

    // The live stream keeps producing segments and its publisher stays connected.
    let after =
        wait_for_sequence_beyond(&kawa, "steady", Some(before + 1), Duration::from_secs(20)).await;
    assert!(after > before + 1);
    assert!(publisher.running(), "{}", publisher.stderr());
    let health = reqwest::get(kawa.url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
    // New publishers are still welcome.
    let other = create_stream(&kawa, "newcomer").await;
    let _second = Publisher::start(&kawa.rtmp_url(&other), 10);
    wait_for_sequence_beyond(&kawa, "newcomer", None, Duration::from_secs(20)).await;
    // Each was refused with its own error, before rml_rtmp could panic on it.
    let logs = kawa.logs();
    assert!(logs.contains("AMF0 data ends inside a value"), "{logs}");
    assert!(logs.contains("over the limit of 4096"), "{logs}");
    assert!(!logs.contains("made the RTMP library panic"), "{logs}");
}

#[tokio::test]
async fn silent_connections_time_out_and_the_connection_limit_holds() {
    let kawa = Kawa::builder()
        .env("KAWA_RTMP__HANDSHAKE_TIMEOUT_MS", "500")
        .env("KAWA_RTMP__MAX_CONNECTIONS", "2")
        .start();
    // Says nothing: closed after the handshake timeout.
    let silent = TcpStream::connect(kawa.rtmp).unwrap();
    assert_closed_within(silent, Duration::from_secs(5), "silent connection");

    // Two connections hold the two places; a third is closed at once.
    let _a = handshaken(&kawa);
    let _b = TcpStream::connect(kawa.rtmp).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let third = TcpStream::connect(kawa.rtmp).unwrap();
    assert_closed_within(third, Duration::from_secs(2), "connection over the limit");
    assert!(kawa.logs().contains("refused on accept"));
}
