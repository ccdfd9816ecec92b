//! What a viewer gets from any node of a cluster (real `redis-server`, moto, `kawa
//! serve` nodes): the path's newest playlist, whichever node it asks, while the path
//! moves between nodes; and a large answer from the owner passed on, not buffered.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{TestCluster, node, node_builder, owner};
use common::s3::BUCKET;
use common::{MotoServer, Publisher, RedisServer, create_stream, fetch_text, rss_kib, wait_for};
use m3u8_rs::MediaPlaylist;

fn media_playlist(text: &str) -> Option<MediaPlaylist> {
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()
}

/// The sequence number of the segment after the playlist's last complete one.
fn next_msn(p: &MediaPlaylist) -> u64 {
    p.media_sequence + p.segments.len() as u64
}

/// A 4 s broadcast of `path` on node-0, ended cleanly: its stream key, and node-0's
/// finished playlist.
async fn ended_on_node_0(c: &TestCluster, path: &str) -> (String, String) {
    let key = create_stream(&c.nodes[0], path).await;
    let mut first = Publisher::start(&c.nodes[0].rtmp_url(&key), 4);
    first
        .wait_exit(Duration::from_secs(30))
        .expect("the first publish ends");
    let playlist = format!("/hls/{path}/source/index.m3u8");
    let finished = wait_for("node-0's ENDLIST", Duration::from_secs(30), || async {
        fetch_text(&c.nodes[0], &playlist)
            .await
            .filter(|p| p.contains("#EXT-X-ENDLIST"))
    })
    .await;
    (key, finished)
}

/// An encoder whose connection drops and that reconnects to another node moves its path
/// there at once (`rtmp.takeover`). The old node's session, in its reconnect grace, only
/// learns of the move at its next lease renewal; until then its edge stays where the
/// drop left it, behind the new owner's. Its viewers get the new owner's playlist (the
/// chaos benchmark saw a reader's media sequence go 9 -> 8 from such an edge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_for_its_publisher_sends_viewers_to_the_new_owner() {
    const PATH: &str = "reconnected";
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    // Node-0 renews its lease every 20 s: for that long it may not know of the move.
    let nodes = [
        node_builder(0, &redis, &moto)
            .env("KAWA_CLUSTER__LEASE_MS", "60000")
            .start(),
        node(1, &redis, &moto),
    ];
    let playlist = format!("/hls/{PATH}/source/index.m3u8");
    let key = create_stream(&nodes[0], PATH).await;
    let mut first = Publisher::start(&nodes[0].rtmp_url(&key), 60);
    wait_for("2 segments on node-0", Duration::from_secs(40), || async {
        let text = fetch_text(&nodes[0], &playlist).await?;
        media_playlist(&text).filter(|p| p.segments.len() >= 2)
    })
    .await;
    // The encoder's connection breaks (no goodbye): node-0 waits for it to come back.
    first.kill();
    wait_for(
        "node-0 to wait for its publisher",
        Duration::from_secs(10),
        || async { nodes[0].logs().contains("publisher lost").then_some(()) },
    )
    .await;
    let left = fetch_text(&nodes[0], &playlist).await.unwrap();
    let left = next_msn(&media_playlist(&left).unwrap());

    let _second = Publisher::start(&nodes[1].rtmp_url(&key), 60);
    let newer = wait_for(
        "node-1's playlist past node-0's edge",
        Duration::from_secs(30),
        || async {
            let text = fetch_text(&nodes[1], &playlist).await?;
            media_playlist(&text).filter(|p| next_msn(p) > left)
        },
    )
    .await;
    assert_eq!(owner(&redis, PATH), Some(1));
    let via_old = fetch_text(&nodes[0], &playlist).await.unwrap();
    // Asked before node-0 learned of the move (else this proves nothing).
    assert!(
        !nodes[0].logs().contains("another node took this path over"),
        "node-0 learned of the move before it was asked"
    );
    let via_old_msn = media_playlist(&via_old).map_or(0, |p| next_msn(&p));
    assert!(
        via_old_msn >= next_msn(&newer),
        "node-0 answered its own edge (next segment {via_old_msn}, node-1's {}):\n{via_old}",
        next_msn(&newer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_session_ended_answers_the_new_owners_playlist() {
    const PATH: &str = "again";
    let c = TestCluster::start(2, false).await;
    let playlist = format!("/hls/{PATH}/source/index.m3u8");
    let (key, _) = ended_on_node_0(&c, PATH).await;
    // Node-0 is asked all along, as players of the ended broadcast would: from the moment
    // node-1 answers a live playlist, node-0 answers that one, never its ENDLIST (a
    // cached "nobody owns it" from the moment before node-1 took the path would).
    let _second = Publisher::start(&c.nodes[1].rtmp_url(&key), 60);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut live: Option<String> = None;
    let mut checked = 0;
    while checked < 20 {
        assert!(
            Instant::now() < deadline,
            "node-1 never answered a live playlist"
        );
        if live.is_none() {
            live = fetch_text(&c.nodes[1], &playlist)
                .await
                .filter(|p| p.contains("#EXT-X-PART") && !p.contains("#EXT-X-ENDLIST"));
        }
        let via_old = fetch_text(&c.nodes[0], &playlist).await.unwrap_or_default();
        if let Some(live) = &live {
            assert!(
                !via_old.contains("#EXT-X-ENDLIST"),
                "node-0 answered its ended session's playlist:\n{via_old}\nnode-1's:\n{live}"
            );
            checked += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(owner(&c.redis, PATH), Some(1));
    let master = fetch_text(&c.nodes[0], &format!("/hls/{PATH}/master.m3u8")).await;
    assert!(master.is_some(), "node-0 has no master for a live stream");
}

/// The path ended on node-0 (ENDLIST), went live again on node-1, and node-1 died. Until
/// a new owner takes the path, no node can name its owner. Node-0 must not answer its
/// ended session's finished playlist meanwhile: a player that saw node-1's would be sent
/// back in time (the chaos benchmark saw 523 -> 514 so). It answers 503; its finished
/// playlist only while that is the newest the path has (the wait for it above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_playlist_the_path_got_past_is_not_answered() {
    const PATH: &str = "again-and-gone";
    let mut c = TestCluster::start(2, false).await;
    let playlist = format!("/hls/{PATH}/source/index.m3u8");
    let (key, finished) = ended_on_node_0(&c, PATH).await;
    let finished = next_msn(&media_playlist(&finished).unwrap());

    let mut second = Publisher::start(&c.nodes[1].rtmp_url(&key), 60);
    let seen = wait_for(
        "node-1's playlist 2 segments past node-0's",
        Duration::from_secs(30),
        || async {
            let text = fetch_text(&c.nodes[1], &playlist).await?;
            media_playlist(&text).filter(|p| next_msn(p) >= finished + 2)
        },
    )
    .await;
    c.nodes[1].kill();
    second.kill();
    wait_for(
        "node-1's lease to lapse",
        Duration::from_secs(20),
        || async { owner(&c.redis, PATH).is_none().then_some(()) },
    )
    .await;

    let answer = reqwest::get(c.nodes[0].url(&playlist)).await.unwrap();
    let (code, text) = (answer.status().as_u16(), answer.text().await.unwrap());
    assert_eq!(
        code,
        503,
        "node-0's ended session answered (node-1's last: next segment {}):\n{text}",
        next_msn(&seen)
    );
}

/// A viewer of a large answer through a node that does not own the stream: the node
/// passes the owner's body on as the viewer takes it, and holds almost none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_viewer_of_a_large_answer_is_streamed_not_buffered() {
    const PATH: &str = "big";
    const SIZE: usize = 50 * 1024 * 1024;
    let c = TestCluster::start(2, false).await;
    let key = create_stream(&c.nodes[0], PATH).await;
    let _publisher = Publisher::start(&c.nodes[0].rtmp_url(&key), 60);
    wait_for(
        "node-0 to own the path",
        Duration::from_secs(20),
        || async { (owner(&c.redis, PATH) == Some(0)).then_some(()) },
    )
    .await;
    // A 50 MB file where the owner serves its segments from.
    let dir = c.nodes[0].data_dir.join(format!("hls/{PATH}/source"));
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("1_1.m4s"), &body).unwrap();

    let proxy = &c.nodes[1];
    // Through the proxy first, at full speed, a few at once (its HTTP workers): its
    // client, connection pool, owner lookup and allocator arenas are not what a viewer
    // holds.
    let url = proxy.url(&format!("/hls/{PATH}/source/1_1.m4s"));
    let warm = (0..4).map(|_| async {
        let answer = reqwest::get(&url).await.unwrap();
        assert_eq!(answer.bytes().await.unwrap().len(), SIZE);
    });
    futures_util::future::join_all(warm).await;
    // Twice: a one-off allocation (an allocator segment, a thread's stack: about 2 MiB,
    // seen once in a loaded run) lands in one measurement, a buffered answer (50 MB) in
    // both.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (got, grew) = paused_viewer(proxy, &format!("/hls/{PATH}/source/1_1.m4s")).await;
        eprintln!("the proxying node grew by {grew} KiB while its viewer paused");
        held.push(grew);
        // The head, then the body in chunks (Transfer-Encoding: chunked): the whole body
        // came, unchanged.
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body_bytes = dechunk(&got[head_end..]);
        assert_eq!(body_bytes.len(), SIZE);
        assert!(body_bytes == body, "the body changed on the way");
    }
    // The node buffered the whole answer before (166 MB of growth, copies included);
    // now it holds about a chunk.
    let least = held.iter().min().copied().unwrap_or(u64::MAX);
    assert!(least < 1024, "the proxying node grew by {held:?} KiB");
}

/// A viewer on a slow link: a small receive window (fixed, so the kernel does not grow
/// it), reading the head and a little of the body, then pausing 3 s (the proxy must not
/// fetch the rest meanwhile), then reading the rest. Answers what it got and how much the
/// node grew while it paused.
async fn paused_viewer(node: &common::Kawa, path: &str) -> (Vec<u8>, u64) {
    let before = rss_kib(node.pid());
    let (mut viewer, mut got) = tokio::task::spawn_blocking({
        let (addr, path) = (node.http, path.to_owned());
        move || {
            use std::io::{Read, Write};
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(32 * 1024).unwrap();
            socket.connect(&addr.into()).unwrap();
            let mut viewer = std::net::TcpStream::from(socket);
            write!(
                viewer,
                "GET {path} HTTP/1.1\r\nHost: kawa\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut got = vec![0u8; 64 * 1024];
            let n = viewer.read(&mut got).unwrap();
            got.truncate(n);
            (viewer, got)
        }
    })
    .await
    .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grew = rss_kib(node.pid()).saturating_sub(before);
    let got = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        viewer.read_to_end(&mut got).unwrap();
        got
    })
    .await
    .unwrap();
    (got, grew)
}

/// An HTTP/1.1 chunked body, decoded.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line]).unwrap().trim(), 16).unwrap();
        data = &data[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
