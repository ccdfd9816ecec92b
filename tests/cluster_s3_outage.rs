//! A takeover while S3 hangs (moto frozen with SIGSTOP: connections are accepted, nothing
//! answers), in a cluster of two `kawa serve` nodes with real `redis-server` and moto,
//! behind a TCP balancer, with an encoder that reconnects as OBS does.

mod common;

use std::time::Duration;

use common::cluster::{Balancer, ReconnectingPublisher, node_builder, owner};
use common::s3::{BUCKET, PREFIX, s3_has, s3_rendition_playlist};
use common::{MotoServer, RedisServer, create_stream, fetch_text, wait_for};

/// Whether a segment is listed as `EXT-X-GAP` (m3u8-rs keeps the tag as unknown).
fn is_gap(s: &m3u8_rs::MediaSegment) -> bool {
    s.unknown_tags.iter().any(|t| t.tag == "X-GAP")
}

/// The owner dies while S3 is frozen. The successor's claim asks S3 which of the dead
/// owner's segments it has; S3 does not answer, and requests may take 10 s (the default
/// `s3.request_timeout_ms`). The claim goes on without S3 after a bound: the stream is
/// live on the successor while S3 is still frozen, the dead owner's segments it cannot
/// vouch for are gaps (those S3 is known to have, and those made again from their parts
/// in Redis, are not), and once S3 is back its playlist lists only what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_while_s3_hangs_does_not_wait_for_it() {
    const PATH: &str = "s3-frozen";
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let s3 = moto.client().await;
    let mut nodes = [0, 1].map(|i| {
        node_builder(i, &redis, &moto)
            .env("KAWA_S3__REQUEST_TIMEOUT_MS", "10000")
            .start()
    });
    let balancer = Balancer::start(nodes.iter().map(|k| k.rtmp).collect()).await;
    let key = create_stream(&nodes[0], PATH).await;
    let publisher = ReconnectingPublisher::start(balancer.rtmp_url(&key));
    // A whole window: more than the newest segments, whose parts are in Redis.
    let before = wait_for("6 segments in S3", Duration::from_secs(40), || async {
        s3_rendition_playlist(&s3, PATH, "source")
            .await
            .filter(|p| p.segments.len() >= 6)
    })
    .await;
    let old_epoch = before.segments[0].uri.split('_').next().unwrap().to_owned();
    let first = owner(&redis, PATH).expect("the path's lease in Redis");
    let next = 1 - first;
    let starts = publisher.start_count();
    moto.freeze();
    // Three segments the owner cannot upload, then it dies.
    tokio::time::sleep(Duration::from_secs(6)).await;
    nodes[first].kill();
    wait_for(
        "the encoder to reconnect",
        Duration::from_secs(20),
        || async { (publisher.start_count() > starts).then_some(()) },
    )
    .await;
    let claim_ms = wait_for("the claim", Duration::from_secs(30), || async {
        let logs = nodes[next].logs();
        let line = logs.lines().find(|l| l.contains("owns the path"))?;
        let ms = line.split("claim_ms=").nth(1)?;
        ms.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u64>()
            .ok()
    })
    .await;
    // Waiting for S3 it would take the request timeout (10 s) at least.
    assert!(
        claim_ms < 5000,
        "the claim waited {claim_ms} ms for a frozen S3"
    );
    let playlist = format!("/hls/{PATH}/source/index.m3u8");
    let live = wait_for(
        "the successor's new parts, S3 still frozen",
        Duration::from_secs(20),
        || async {
            let text = fetch_text(&nodes[next], &playlist).await?;
            let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
            let new_part = (text.lines())
                .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
                .filter_map(|l| l.split("URI=\"").nth(1))
                .any(|uri| !uri.starts_with(&old_epoch));
            new_part.then_some(p)
        },
    )
    .await;
    // The dead owner's segments listed without a gap: only those S3 is known to have
    // (noted in Redis after each playlist put) or that were made again from their parts
    // in Redis (the successor uploads those); never one S3 might lack.
    let inherited: Vec<String> = (live.segments.iter())
        .filter(|s| !is_gap(s) && s.uri.starts_with(&old_epoch))
        .map(|s| s.uri.clone())
        .collect();
    // With S3 frozen, the claim knew from Redis which of them S3 has: all that its
    // playlist listed before the freeze (but the newest, whose note may have been late).
    let stored = &before.segments[..before.segments.len() - 1];
    for s in stored
        .iter()
        .filter(|s| live.segments.iter().any(|l| l.uri == s.uri))
    {
        assert!(
            inherited.contains(&s.uri),
            "{} is in S3, yet listed as a gap:\n{live:?}",
            s.uri
        );
    }
    // Its newest segments, which S3 never got, were made again from their parts, kept
    // in Redis until a playlist in S3 lists them: none is a gap but the number of the
    // segment it had open, when that had no part yet.
    let old: Vec<&m3u8_rs::MediaSegment> = (live.segments.iter())
        .filter(|s| s.uri.starts_with(&old_epoch))
        .collect();
    for s in &old[..old.len() - 1] {
        assert!(!is_gap(s), "{} is a gap:\n{live:?}", s.uri);
    }
    let rebuilt: usize = (nodes[next].logs().lines())
        .filter_map(|l| l.split("rebuilt_segments=").nth(1))
        .filter_map(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        rebuilt >= 3,
        "{rebuilt} segments rebuilt after a 6 s S3 freeze"
    );
    moto.thaw();
    // Back: S3's playlist goes on with the successor's segments, and lists nothing it
    // does not have.
    let after = wait_for(
        "the successor's segments in S3",
        Duration::from_secs(60),
        || async {
            let p = s3_rendition_playlist(&s3, PATH, "source").await?;
            let new = (p.segments.iter())
                .filter(|s| !is_gap(s))
                .any(|s| !s.uri.starts_with(&old_epoch));
            new.then_some(p)
        },
    )
    .await;
    for s in after.segments.iter().filter(|s| !is_gap(s)) {
        for name in std::iter::once(&s.uri).chain(s.map.as_ref().map(|m| &m.uri)) {
            let key = format!("{PREFIX}/{PATH}/source/{name}");
            assert!(s3_has(&s3, &key).await, "S3 lists {name} but lacks it");
        }
    }
    for name in &inherited {
        let key = format!("{PREFIX}/{PATH}/source/{name}");
        wait_for(
            "the inherited segments in S3",
            Duration::from_secs(30),
            || async { s3_has(&s3, &key).await.then_some(()) },
        )
        .await;
    }
    drop(publisher);
}
