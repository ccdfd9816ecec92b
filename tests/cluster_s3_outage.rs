//! A takeover while S3 hangs (moto frozen with SIGSTOP: connections are accepted, nothing
//! answers), in a cluster of two `kawa serve` nodes with real `redis-server` and moto,
//! behind a TCP balancer, with an encoder that reconnects as OBS does.

mod common;

use std::collections::HashSet;
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
/// vouch for are gaps, and once S3 is back its playlist lists only what it has.
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
    wait_for("3 segments in S3", Duration::from_secs(40), || async {
        s3_rendition_playlist(&s3, PATH, "source")
            .await
            .filter(|p| p.segments.len() >= 3)
    })
    .await;
    let first = owner(&redis, PATH).expect("the path's lease in Redis");
    let next = 1 - first;
    let starts = publisher.start_count();

    moto.freeze();
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
            let inherited = p.segments.iter().filter(|s| is_gap(s)).count();
            (inherited > 0 && text.contains("#EXT-X-PART:")).then_some(p)
        },
    )
    .await;
    // The dead owner's segments it listed: gaps, never a name S3 might lack.
    let new_epoch = live
        .segments
        .last()
        .map(|s| s.uri.split('_').next().unwrap_or("").to_owned());
    for s in &live.segments {
        let epoch = s.uri.split('_').next().map(str::to_owned);
        assert!(
            is_gap(s) || epoch == new_epoch,
            "an unchecked segment of the dead owner listed: {}",
            s.uri
        );
    }
    moto.thaw();

    // Back: S3's playlist goes on with the successor's segments, and lists nothing it
    // does not have.
    let after = wait_for(
        "the successor's segments in S3",
        Duration::from_secs(60),
        || async {
            let p = s3_rendition_playlist(&s3, PATH, "source").await?;
            let epochs: HashSet<&str> = (p.segments.iter())
                .filter(|s| !is_gap(s))
                .filter_map(|s| s.uri.split('_').next())
                .collect();
            new_epoch
                .as_deref()
                .is_some_and(|e| epochs.contains(e))
                .then_some(p.clone())
        },
    )
    .await;
    for s in after.segments.iter().filter(|s| !is_gap(s)) {
        for name in std::iter::once(&s.uri).chain(s.map.as_ref().map(|m| &m.uri)) {
            let key = format!("{PREFIX}/{PATH}/source/{name}");
            assert!(s3_has(&s3, &key).await, "S3 lists {name} but lacks it");
        }
    }
}
