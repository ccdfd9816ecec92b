//! The segment a dead owner had open is not lost with it: its parts are in Redis as the
//! owner cuts them (`cluster.replicate_parts`), and the node that takes the stream over
//! lists that segment, cut where the owner died, serves it and stores it in S3. Before,
//! it was listed as a gap, and a player of whole segments waited a GOP more.

mod common;

use std::time::Duration;

use common::cluster::{Balancer, ReconnectingPublisher, TestCluster, owner};
use common::s3::{PREFIX, s3_rendition_playlist, s3_text};
use common::{create_stream, fetch_text, ffprobe_json, playable_segment, wait_for};

const PATH: &str = "opencut";

/// The open segment's name and the parts it has in a live playlist, from its preload
/// hint (`{epoch}_{msn}_{index}.m4s`: parts 0 to index - 1 are listed).
fn open_segment(playlist: &str) -> Option<(String, u64, u64)> {
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))?
        .strip_suffix(".m4s\"")?;
    let mut fields = hint.split('_');
    let (epoch, msn, index) = (fields.next()?, fields.next()?, fields.next()?);
    Some((epoch.to_owned(), msn.parse().ok()?, index.parse().ok()?))
}

fn is_gap(s: &m3u8_rs::MediaSegment) -> bool {
    s.unknown_tags.iter().any(|t| t.tag == "X-GAP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_open_segment_is_listed_cut_where_it_died() {
    let mut c = TestCluster::start(2, false).await;
    let balancer = Balancer::start(c.nodes.iter().map(|k| k.rtmp).collect()).await;
    let key = create_stream(&c.nodes[0], PATH).await;
    let publisher = ReconnectingPublisher::start(balancer.rtmp_url(&key));
    wait_for("3 segments in S3", Duration::from_secs(40), || async {
        s3_rendition_playlist(&c.s3, PATH, "source")
            .await
            .filter(|p| p.segments.len() >= 3)
    })
    .await;
    let first = owner(&c.redis, PATH).expect("the path's lease in Redis");
    let live = format!("/hls/{PATH}/source/index.m3u8");
    // Kill the owner with two parts of its open segment out.
    let (epoch, msn, parts) = wait_for(
        "an open segment with parts",
        Duration::from_secs(20),
        || async {
            open_segment(&fetch_text(&c.nodes[first], &live).await?).filter(|(_, _, n)| *n == 2)
        },
    )
    .await;
    let mut seen = Vec::new();
    for index in 0..parts {
        let url = c.nodes[first].url(&format!("/hls/{PATH}/source/{epoch}_{msn}_{index}.m4s"));
        let part = reqwest::get(&url).await.unwrap();
        assert_eq!(part.status(), 200, "{url}");
        seen.extend_from_slice(&part.bytes().await.unwrap());
    }
    c.nodes[first].kill();
    let next = 1 - first;

    // The new owner lists it whole, not as a gap, and goes on after it.
    let name = format!("{epoch}_{msn}.m4s");
    let playlist = wait_for(
        "the new owner's own segment",
        Duration::from_secs(30),
        || async {
            let text = fetch_text(&c.nodes[next], &live).await?;
            let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
            let at = p.segments.iter().position(|s| s.uri == name)?;
            (at + 1 < p.segments.len()).then_some(p)
        },
    )
    .await;
    let at = playlist
        .segments
        .iter()
        .position(|s| s.uri == name)
        .unwrap();
    let segment = &playlist.segments[at];
    assert!(!is_gap(segment), "{name} is listed as a gap:\n{playlist:?}");
    assert!(
        segment.duration > 0.0 && segment.duration <= playlist.target_duration as f32,
        "{name} lasts {} s",
        segment.duration
    );
    assert_eq!(
        playlist.media_sequence + at as u64,
        msn,
        "{name} keeps its number"
    );
    let after = &playlist.segments[at + 1];
    assert!(
        after.discontinuity && !after.uri.starts_with(&epoch),
        "{after:?}"
    );

    // Served by the new owner: the parts the dead one gave out, then what it cut after.
    let body = reqwest::get(c.nodes[next].url(&format!("/hls/{PATH}/source/{name}")))
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let body = body.bytes().await.unwrap();
    assert!(
        body.starts_with(&seen),
        "{name} does not begin with its parts"
    );
    let file = playable_segment(
        &c.nodes[next],
        &format!("/hls/{PATH}/source"),
        &playlist,
        at,
    )
    .await;
    let probe = ffprobe_json(
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
        ],
        &file.path().to_string_lossy(),
    );
    let frames: u64 = probe["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(frames > 0, "{name} does not decode: {probe}");

    // And in S3, listed the same way.
    let key = format!("{PREFIX}/{PATH}/source/{name}");
    wait_for("the segment in S3", Duration::from_secs(20), || async {
        let p = s3_rendition_playlist(&c.s3, PATH, "source").await?;
        let listed = p.segments.iter().find(|s| s.uri == name)?;
        assert!(!is_gap(listed), "{name} is a gap in S3");
        (s3_text(&c.s3, &key).await? == body.to_vec()).then_some(())
    })
    .await;
    drop(publisher);
}
