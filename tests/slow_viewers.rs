//! Viewers that pipeline many requests on a connection and never read the answers: the
//! memory they make Kawa hold is bounded, it comes back when they go, and such a
//! connection is closed after `http.send_timeout_ms`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Kawa, Publisher, admin_get, create_stream, env_number, rss_kib, wait_for};
use socket2::{Domain, Socket, Type};

/// A connection that sends `requests` pipelined GETs of `path` and reads nothing, with
/// a small receive window so that little waits on the viewer's side.
fn greedy_viewer(addr: SocketAddr, path: &str, requests: usize) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .ok()?;
    let mut stream: TcpStream = socket.into();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: kawa\r\n\r\n");
    stream.write_all(request.repeat(requests).as_bytes()).ok()?;
    Some(stream)
}

fn http_addr(kawa: &Kawa) -> SocketAddr {
    let url = kawa.url("");
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A 6 s recorded broadcast: (its first live segment's URL, its first recorded
/// segment's URL), both about 200 KB.
async fn segments(kawa: &Kawa) -> (String, String) {
    let key = create_stream(kawa, "vod").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 6);
    publisher
        .wait_exit(Duration::from_secs(30))
        .expect("the publish ends");
    let rec = wait_for("the recording", Duration::from_secs(30), || async {
        let list = admin_get(kawa, "/api/v1/recordings?status=ready").await;
        list["recordings"].as_array()?.first().cloned()
    })
    .await;
    let id = rec["id"].as_u64().unwrap();
    let first = |dir: std::path::PathBuf| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".m4s"))
            .min()
            .expect("a segment")
    };
    let live = first(kawa.data_dir.join("hls/vod/source"));
    let recorded = first(kawa.data_dir.join(format!("recordings/vod/{id}/source")));
    (
        format!("/hls/vod/source/{live}"),
        format!("/recordings/vod/{id}/source/{recorded}"),
    )
}

/// RSS growth (KiB) while `viewers` greedy viewers of `path` hold on, and what is
/// left (KiB over `before`) 5 s after they close.
async fn greedy_crowd(kawa: &Kawa, path: &str, viewers: usize) -> (u64, u64) {
    let addr = http_addr(kawa);
    let pid = kawa.pid();
    let before = rss_kib(pid);
    let started = Instant::now();
    let target = path.to_owned();
    let connections = tokio::task::spawn_blocking(move || {
        (0..viewers)
            .filter_map(|_| greedy_viewer(addr, &target, 100))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(
        connections.len(),
        viewers,
        "every viewer connected and sent"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = rss_kib(pid);
    drop(connections);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    let grew = during.saturating_sub(before);
    eprintln!(
        "{viewers} viewers pipelining 100 GETs of {path} and reading nothing (sent in {:?}): \
         RSS {before} KiB -> {during} KiB (+{grew} KiB, {} B per connection); {after} KiB \
         5 s after they closed",
        started.elapsed(),
        grew * 1024 / viewers as u64
    );
    (grew, after.saturating_sub(before))
}

/// Issue 20's figure: 3000 connections (`TEST_GREEDY_VIEWERS`) with 100 pipelined
/// requests each for a segment, never reading, add at most 64 MB; the memory comes back.
/// Before: 0.84 MB per connection (2.6 GB), kept after they closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_that_pipeline_and_never_read_hold_bounded_memory_and_give_it_back() {
    let viewers = env_number("TEST_GREEDY_VIEWERS", 3000) as usize;
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .start();
    let (live, recorded) = segments(&kawa).await;

    let (grew, left) = greedy_crowd(&kawa, &live, viewers).await;
    assert!(grew <= 64 * 1024, "+{grew} KiB for {viewers} connections");
    assert!(left <= 16 * 1024, "{left} KiB not returned");

    // The same for a recording's segment (a longer URL: more request bytes waiting).
    let (grew, left) = greedy_crowd(&kawa, &recorded, viewers).await;
    assert!(grew <= 64 * 1024, "+{grew} KiB for {viewers} connections");
    assert!(left <= 16 * 1024, "{left} KiB not returned");
}

/// A connection that takes none of its answers for `http.send_timeout_ms` is closed.
#[tokio::test]
async fn a_viewer_that_stops_reading_is_disconnected_after_the_send_timeout() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .env("KAWA_HTTP__SEND_TIMEOUT_MS", "2000")
        .start();
    let (live, _) = segments(&kawa).await;
    let addr = http_addr(&kawa);
    let mut stalled = greedy_viewer(addr, &live, 100).expect("connected");
    // Another viewer pipelines as much and reads all along: it is served in full.
    let mut reading = greedy_viewer(addr, &live, 100).expect("connected");
    let reader = std::thread::spawn(move || {
        let _ = reading.set_read_timeout(Some(Duration::from_secs(5)));
        let (mut total, mut buf) = (0usize, vec![0u8; 1 << 16]);
        while let Ok(n) = reading.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    // The kernel's send buffer fills, then nothing moves for the send timeout.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // A live connection now streams answers as fast as they are read; a closed one
    // gives what its small receive buffer held, then the end or a reset.
    let drain = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (mut total, mut buf) = (0usize, vec![0u8; 65536]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return (total, true),
                Ok(n) => total += n,
            }
        }
        (total, false)
    };
    let (got, ended) = drain(&mut stalled);
    assert!(
        ended,
        "still open after 8 s without reading ({got} bytes read now)"
    );
    assert!(got < 1 << 20, "{got} bytes");
    eprintln!("the stalled viewer was closed; {got} bytes were left in its receive buffer");

    let total = reader.join().unwrap();
    let one = reqwest::get(kawa.url(&live))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        total >= 100 * one.len(),
        "a reading viewer got {total} bytes"
    );
}
