//! Peers without a key, as an attacker on port 1935 would be: each costs Kawa little and
//! ends soon, the process stays up, and a publisher with a valid key still gets in.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::rtmp::handshaken;
use common::{Kawa, Publisher, create_stream, fetch_text, metrics_text, rss_kib, wait_for};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kawa's resident memory in MiB.
fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

/// A TCP connection from `source` (any 127.0.0.0/8 address is this machine) that has done
/// a real RTMP handshake and sent ffmpeg-like `connect` for app `live`.
async fn connected_peer(kawa: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let (mut stream, _) = handshaken(kawa, source).await?;
    let (mut client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut out = Vec::new();
    for r in results {
        if let ClientSessionResult::OutboundResponse(p) = r {
            out.extend(p.bytes);
        }
    }
    if let ClientSessionResult::OutboundResponse(p) =
        client.request_connection("live".into()).unwrap()
    {
        out.extend(p.bytes);
    }
    // Set Chunk Size 65536 on chunk stream 2, as ffmpeg sends: every message below is one
    // chunk.
    out.extend_from_slice(&[2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
    stream.write_all(&out).await?;
    Ok(stream)
}

/// A type-0 chunk header on chunk stream 8 declaring a message of `length` bytes.
fn header(length: u32, type_id: u8) -> Vec<u8> {
    let mut h = vec![8, 0, 0, 0];
    h.extend_from_slice(&length.to_be_bytes()[1..]);
    h.push(type_id);
    h.extend_from_slice(&[1, 0, 0, 0]);
    h
}

/// Waits until Kawa closes `stream` (reading and dropping what it sends); `false` if it
/// is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}

async fn healthy(kawa: &Kawa) -> bool {
    match reqwest::get(kawa.url("/healthz")).await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// `kawa_rtmp_connections_open` from /metrics.
async fn open_rtmp_connections(kawa: &Kawa) -> u64 {
    let text = metrics_text(kawa).await;
    text.lines()
        .find_map(|l| l.strip_prefix("kawa_rtmp_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("kawa_rtmp_connections_open") as u64
}

async fn wait_for_segment(kawa: &Kawa, path: &str) {
    let playlist = format!("/hls/{path}/source/index.m3u8");
    wait_for("a segment", Duration::from_secs(30), || async {
        fetch_text(kawa, &playlist)
            .await
            .filter(|text| text.contains("#EXTINF"))
    })
    .await;
}

#[tokio::test]
async fn deep_amf_and_huge_messages_end_only_their_connection() {
    let kawa = Kawa::start();
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // 50,000 nested strict arrays in one 250 KB command: this overflowed the stack and
    // aborted the whole process. Now the message is over the pre-publish cap at its header.
    let mut nested = Vec::new();
    for _ in 0..50_000 {
        nested.push(0x0A);
        nested.extend_from_slice(&1u32.to_be_bytes());
    }
    nested.push(0x05);
    let mut peer = connected_peer(kawa.rtmp, local).await.unwrap();
    let mut bytes = header(nested.len() as u32, 20);
    bytes.extend_from_slice(&nested);
    let _ = peer.write_all(&bytes).await;
    assert!(closed_within(&mut peer, Duration::from_secs(5)).await);

    // The same nesting within the size cap (800 levels in 4 KB): refused by depth.
    let mut peer = connected_peer(kawa.rtmp, local).await.unwrap();
    let mut bytes = header(800 * 5 + 1, 20);
    bytes.extend_from_slice(&nested[..800 * 5]);
    bytes.push(0x05);
    peer.write_all(&bytes).await.unwrap();
    assert!(closed_within(&mut peer, Duration::from_secs(5)).await);

    // A 16 MB message of nulls after connect.
    let mut peer = connected_peer(kawa.rtmp, local).await.unwrap();
    let _ = peer.write_all(&header(0xFF_FFFF, 20)).await;
    let _ = peer.write_all(&vec![0x05; 1 << 20]).await;
    assert!(closed_within(&mut peer, Duration::from_secs(5)).await);

    assert!(healthy(&kawa).await, "the process is up");
    let logs = kawa.logs();
    assert!(logs.contains("over the limit of 4096"), "{logs}");
    assert!(logs.contains("nested deeper than 8"), "{logs}");
    assert!(!logs.contains("made the RTMP library panic"), "{logs}");
}

#[tokio::test]
async fn large_messages_before_publish_do_not_grow_memory() {
    let kawa = Kawa::start();
    let pid = kawa.pid();
    let before = rss_mib(pid);
    // 30 peers that connect and then start a 16 MB message each: 500 MB of RSS before.
    let mut peers = Vec::new();
    for i in 0..30u8 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i / 10));
        let mut peer = connected_peer(kawa.rtmp, source).await.unwrap();
        let _ = peer.write_all(&header(0xFF_FFFF, 9)).await;
        let _ = peer.write_all(&vec![0u8; 256 * 1024]).await;
        peers.push(peer);
    }
    for peer in &mut peers {
        assert!(closed_within(peer, Duration::from_secs(5)).await);
    }
    let grown = rss_mib(pid) - before;
    eprintln!("RSS after 30 peers with 16 MB messages: +{grown:.1} MiB");
    assert!(grown < 16.0, "RSS grew by {grown:.1} MiB");
    assert!(healthy(&kawa).await);
}

#[tokio::test]
async fn a_thousand_keyless_peers_cost_little_and_a_publisher_still_gets_in() {
    // A long deadline, so the thousand stay connected while the publisher comes.
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RTMP__HANDSHAKE_TIMEOUT_MS", "60000")
        .env("KAWA_RTMP__MAX_CONNECTIONS_PER_IP", "16")
        .start();
    let pid = kawa.pid();
    let key = create_stream(&kawa, "under-siege").await;
    let before = rss_mib(pid);

    // 1000 peers from 63 addresses (16 each, the per-address cap), each connected with a
    // partial command of nearly the size allowed before a publish, holding on.
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + (i / 16) as u8));
        let rtmp = kawa.rtmp;
        tasks.push(tokio::spawn(async move {
            let mut peer = connected_peer(rtmp, source).await?;
            peer.write_all(&header(4000, 20)).await?;
            peer.write_all(&[0x05; 3000]).await?;
            Ok::<_, std::io::Error>(peer)
        }));
    }
    let mut peers = Vec::new();
    for t in tasks {
        peers.push(t.await.unwrap().expect("a keyless peer connects"));
    }
    // Give Kawa a moment to read what they sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_mib(pid) - before;
    eprintln!("RSS with 1000 keyless peers connected: +{grown:.1} MiB");
    assert!(grown < 64.0, "RSS grew by {grown:.1} MiB");

    // One more from an address that has 16 already is closed at once.
    let mut extra = connected_peer(kawa.rtmp, IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)))
        .await
        .map_err(|_| ())
        .ok();
    if let Some(extra) = extra.as_mut() {
        assert!(closed_within(extra, Duration::from_secs(2)).await);
    }

    // The streamer with a valid key is accepted and plays while they are all connected.
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 20);
    wait_for_segment(&kawa, "under-siege").await;
    assert!(publisher.running(), "{}", publisher.stderr());
    let open = open_rtmp_connections(&kawa).await;
    assert!(
        open > 1000,
        "the keyless peers were still connected ({open} open)"
    );
    drop(peers);
    assert!(kawa.logs().contains("ip_limit"));
    publisher.kill();
}

#[tokio::test]
async fn a_peer_that_trickles_bytes_is_closed_at_the_deadline() {
    let kawa = Kawa::builder()
        .env("KAWA_RTMP__HANDSHAKE_TIMEOUT_MS", "1000")
        .start();
    let mut peer = connected_peer(kawa.rtmp, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let started = Instant::now();
    // One byte of a command every 200 ms: never idle, never finished.
    peer.write_all(&header(2000, 20)).await.unwrap();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if peer.write_all(&[0x05]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(200), peer.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling peer is still connected");
    assert!(
        kawa.logs()
            .contains("not publishing within the handshake timeout")
    );
}

#[tokio::test]
async fn grpc_asks_for_the_shared_token() {
    use kawa::grpc::proto::AuthorizePublishRequest;
    use kawa::grpc::proto::key_service_client::KeyServiceClient;
    let kawa = Kawa::builder()
        .env("KAWA_GRPC__TOKEN", "internal-token-2")
        .start();
    let mut client = KeyServiceClient::connect(kawa.grpc_url()).await.unwrap();
    let request = || AuthorizePublishRequest {
        app: "live\nforged log line".into(),
        stream_key: "kawa_sk_guess".into(),
        client_addr: "203.0.113.9".into(),
    };
    let err = client.authorize_publish(request()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(request());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let err = client.authorize_publish(wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut right = tonic::Request::new(request());
    right
        .metadata_mut()
        .insert("authorization", "Bearer internal-token-2".parse().unwrap());
    let reply = client.authorize_publish(right).await.unwrap().into_inner();
    assert!(!reply.allowed);
    assert_eq!(reply.reason, "unknown_app");
    // The caller's newline is logged escaped: no line of the log starts with it.
    let logs = kawa.logs();
    assert!(logs.contains(r"live\nforged log line"), "{logs}");
    assert!(!logs.lines().any(|l| l.starts_with("forged")), "{logs}");
}

#[tokio::test]
async fn an_app_name_with_a_newline_is_logged_escaped() {
    let kawa = Kawa::start();
    let (mut stream, _) = handshaken(kawa.rtmp, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let (mut client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut out = Vec::new();
    let requests = results.into_iter().chain([client
        .request_connection("live\nforged line".into())
        .unwrap()]);
    for r in requests {
        if let ClientSessionResult::OutboundResponse(p) = r {
            out.extend(p.bytes);
        }
    }
    stream.write_all(&out).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    let logs = kawa.logs();
    assert!(logs.contains(r#"app="live\nforged line""#), "{logs}");
    assert!(!logs.lines().any(|l| l.starts_with("forged")), "{logs}");
}
