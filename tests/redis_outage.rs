//! A Redis outage in a cluster (Redis frozen with SIGSTOP: connections stay open and
//! nothing answers). The stream goes on in S3, its playlists fenced by conditional writes
//! instead of Redis, for at most `cluster.redis_outage_ms`; past that the node gives the
//! stream up.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::node_builder;
use common::s3::{BUCKET, PREFIX, s3_has, s3_playlist};
use common::{Kawa, MotoServer, Publisher, RedisServer, create_stream, wait_for};
use m3u8_rs::MediaPlaylist;

fn last_msn(p: &MediaPlaylist) -> u64 {
    p.media_sequence + p.segments.len() as u64 - 1
}

/// Every segment a playlist lists, by media sequence number.
fn remember(seen: &mut BTreeMap<u64, String>, p: &MediaPlaylist) {
    for (n, s) in (p.media_sequence..).zip(&p.segments) {
        let old = seen.insert(n, s.uri.clone());
        assert!(
            old.is_none_or(|o| o == s.uri),
            "segment {n} changed its name"
        );
    }
}

/// A one-node cluster (passthrough, one more setting) on its own Redis and bucket,
/// publishing `path` for `seconds`.
async fn one_node(
    path: &str,
    seconds: u32,
    (key, value): (&str, &str),
) -> (RedisServer, MotoServer, aws_sdk_s3::Client, Kawa, Publisher) {
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = node_builder(0, &redis, &moto)
        .env("KAWA_HLS__PRESET", "passthrough")
        .env(key, value)
        .start();
    let stream_key = create_stream(&kawa, path).await;
    let publisher = Publisher::start(&kawa.rtmp_url(&stream_key), seconds);
    (redis, moto, client, kawa, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_20_s_redis_outage_the_s3_playlist_advances_and_nothing_is_lost() {
    let (redis, _moto, client, kawa, mut publisher) =
        one_node("steady", 40, ("KAWA_RECORDINGS__ENABLED", "true")).await;
    let before = wait_for("two segments in S3", Duration::from_secs(30), || async {
        s3_playlist(&client, "steady")
            .await
            .filter(|p| p.segments.len() >= 2)
    })
    .await;
    let mut seen = BTreeMap::new();
    remember(&mut seen, &before);

    redis.freeze();
    let frozen = Instant::now();
    let mut last = before.clone();
    let mut changed = Instant::now();
    let mut longest_still = Duration::ZERO;
    while frozen.elapsed() < Duration::from_secs(20) {
        if let Some(p) = s3_playlist(&client, "steady").await {
            remember(&mut seen, &p);
            if last_msn(&p) > last_msn(&last) {
                changed = Instant::now();
                last = p;
            }
        }
        longest_still = longest_still.max(changed.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    redis.thaw();
    let advanced = last_msn(&last) - last_msn(&before);
    eprintln!(
        "during 20 s without Redis: {advanced} new segments in S3, the playlist stood still at most {longest_still:?}"
    );
    // 2 s segments: about ten in 20 s.
    assert!(
        advanced >= 8,
        "the S3 playlist advanced by {advanced} segments only"
    );
    assert!(
        longest_still < Duration::from_secs(5),
        "it stood still {longest_still:?}"
    );
    assert!(
        kawa.logs()
            .contains("cannot renew the path's lease; the stream goes on")
    );

    // The stream ends normally; every segment it made is in S3 (a viewer polls on
    // until the end, so that every segment listed is seen).
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        if let Some(p) = s3_playlist(&client, "steady").await {
            remember(&mut seen, &p);
            if p.end_list {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "no ENDLIST in S3");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(publisher.wait_exit(Duration::from_secs(5)).is_some());
    remember(&mut seen, &ended);
    let numbers: Vec<u64> = seen.keys().copied().collect();
    let first = numbers[0];
    assert_eq!(
        numbers,
        (first..first + numbers.len() as u64).collect::<Vec<_>>(),
        "a hole in the media sequence"
    );
    for (n, uri) in &seen {
        let key = format!("{PREFIX}/steady/source/{uri}");
        assert!(
            s3_has(&client, &key).await,
            "segment {n} ({key}) is not in S3"
        );
    }
    assert!(ended.segments.iter().all(|s| !s.discontinuity));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_cluster_redis_outage_ms_a_node_gives_its_stream_up() {
    let (redis, _moto, client, kawa, mut publisher) =
        one_node("bounded", 60, ("KAWA_CLUSTER__REDIS_OUTAGE_MS", "4000")).await;
    wait_for("a segment in S3", Duration::from_secs(30), || async {
        s3_playlist(&client, "bounded")
            .await
            .filter(|p| !p.segments.is_empty())
    })
    .await;
    redis.freeze();
    let frozen = Instant::now();
    // The bound counts from the last renewal (at most a third of the lease before).
    publisher
        .wait_exit(Duration::from_secs(15))
        .expect("the publisher is let go");
    let after = frozen.elapsed();
    eprintln!("publisher let go {after:?} after Redis froze (bound 4 s)");
    assert!(after >= Duration::from_secs(3), "let go after {after:?}");
    assert!(kawa.logs().contains(
        "Redis unreachable for longer than cluster.redis_outage_ms; giving the stream up"
    ));
    // Nothing more is written to the path.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = s3_playlist(&client, "bounded").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s3_playlist(&client, "bounded").await.unwrap(), stopped);
    redis.thaw();
}

/// A viewer of node 0 watching a stream node 1 owns (proxied) goes on watching while
/// Redis is down: node 0 cannot ask who owns the path, and sends the viewer to the owner
/// Redis named last. Before, it answered the viewer itself, without the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_viewer_keeps_the_stream_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let nodes = [0, 1].map(|i| {
        node_builder(i, &redis, &moto)
            .env("KAWA_HLS__PRESET", "passthrough")
            .start()
    });
    let key = create_stream(&nodes[0], "elsewhere").await;
    let _publisher = Publisher::start(&nodes[1].rtmp_url(&key), 40);
    let url = nodes[0].url("/hls/elsewhere/source/index.m3u8");
    let playlist = || async {
        let answer = reqwest::get(&url).await.ok()?;
        let status = answer.status();
        let text = answer.text().await.ok()?;
        Some((status, text))
    };
    let newest = |text: &str| {
        m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .ok()
            .map(|p| last_msn(&p))
    };
    let before = wait_for(
        "the stream through node 0",
        Duration::from_secs(30),
        || async {
            let (status, text) = playlist().await?;
            (status == 200).then(|| newest(&text)).flatten()
        },
    )
    .await;
    redis.kill();
    // 6 s without Redis (three segments), asked four times a second.
    let down = Instant::now();
    let mut last = before;
    while down.elapsed() < Duration::from_secs(6) {
        let (status, text) = playlist().await.expect("node 0 answers");
        assert_eq!(status, 200, "node 0 without Redis answered:\n{text}");
        last = newest(&text).expect("a media playlist");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        last >= before + 2,
        "the stream stood still for a viewer of node 0: segment {before} -> {last}"
    );
    let logs = nodes[0].logs();
    assert!(logs.contains("cannot look up a stream's owner"), "{logs}");
}
