//! In a cluster, a finished playlist (`EXT-X-ENDLIST`) this node holds may be behind the
//! path: an ended session's edge here, or its copy in the data directory, while the path
//! was published again through another node since. When that node's owner cannot be
//! named for a moment (it was just killed, its lease is lapsing, a successor is still
//! claiming), the copy here is all a request finds; answered, it would send a player that
//! saw the newer playlist back in time (the chaos benchmark saw MEDIA-SEQUENCE 724 -> 711).
//! The path's state in Redis, which every owner saves as its segments close, says how far
//! the path got: a copy behind it is not answered.

use std::path::Path;

use actix_web::HttpResponse;
use actix_web::http::header;

use super::proxy::ClusterProxy;
use crate::delivery::memory::{LiveStream, PlaylistLookup};
use crate::hls::low_latency::Directives;
use crate::hls::resume::PathState;
use crate::keys::PublishPath;

/// Whether an ended session's edge here has a finished playlist of `rendition` the
/// path got past (in a cluster).
pub(super) async fn edge_behind(
    proxy: Option<&ClusterProxy>,
    edge: &LiveStream,
    path: &PublishPath,
    rendition: &str,
) -> bool {
    let Some(proxy) = proxy.filter(|_| edge.ended()) else {
        return false;
    };
    match edge.playlist(rendition, &Directives::default()) {
        PlaylistLookup::Ready(text) => behind(proxy, path.as_str(), rendition, &text).await,
        _ => false,
    }
}

/// Whether the data directory's copy of a playlist (`file`) must not be answered, in a
/// cluster: it has not ended, so it is from when this node owned the stream, whose live
/// playlist is elsewhere now with its owner unknown for a moment (a takeover, Redis
/// restarting; the chaos benchmark saw MEDIA-SEQUENCE 194 -> 180 from such a copy); or
/// it has ended and the path got past it. Absent: a 404 follows.
pub(super) async fn copy_stale(
    proxy: Option<&ClusterProxy>,
    file: &Path,
    path: &PublishPath,
    rendition: &str,
) -> bool {
    let Some(proxy) = proxy else {
        return false;
    };
    match tokio::fs::read(file).await {
        Ok(text) => !is_finished(&text) || behind(proxy, path.as_str(), rendition, &text).await,
        Err(_) => false,
    }
}

fn is_finished(text: &[u8]) -> bool {
    memchr::memmem::find(text, b"#EXT-X-ENDLIST").is_some()
}

/// Where a media playlist ends: the sequence number after its last segment, and its
/// discontinuity sequence after its last discontinuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    discontinuity: u64,
    next: u64,
}

impl End {
    /// From a window's discontinuity sequence and how many of its segments start with a
    /// discontinuity.
    fn new(discontinuity_sequence: u64, breaks: usize, next: u64) -> Self {
        Self {
            discontinuity: discontinuity_sequence + breaks as u64,
            next,
        }
    }
}

fn end_of_text(text: &[u8]) -> Option<End> {
    let p = m3u8_rs::parse_media_playlist_res(text).ok()?;
    let breaks = p.segments.iter().filter(|s| s.discontinuity).count();
    let next = p.media_sequence + p.segments.len() as u64;
    Some(End::new(p.discontinuity_sequence, breaks, next))
}

fn end_of_state(state: &PathState, rendition: &str) -> Option<End> {
    let r = state.renditions.iter().find(|r| r.name == rendition)?;
    let breaks = r.segments.iter().filter(|s| s.discontinuity).count();
    Some(End::new(r.discontinuity_sequence, breaks, r.next_msn()))
}

/// Whether the path got past this finished copy of `rendition`'s playlist: published
/// again since, wherever. Unknown (Redis not answering) counts as behind: a player
/// retries a 503, and cannot take back a step back in time.
async fn behind(proxy: &ClusterProxy, path: &str, rendition: &str, text: &[u8]) -> bool {
    let Some(copy) = end_of_text(text) else {
        // Not a playlist Kawa wrote: nothing to compare, nothing newer known.
        return false;
    };
    match proxy.cluster().load_state(path).await {
        Ok(state) => state
            .as_ref()
            .and_then(|s| end_of_state(s, rendition))
            .is_some_and(|newest| is_past(newest, copy)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether a finished playlist is the newest");
            true
        }
    }
}

/// Whether `newest` (the path's state) is past `copy`: either sequence went further.
fn is_past(newest: End, copy: End) -> bool {
    newest.next > copy.next || newest.discontinuity > copy.discontinuity
}

/// The answer for a playlist this node has no current copy of, while the path's owner
/// cannot be named: players retry.
pub(super) fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "1"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body("the stream's owner cannot be reached right now")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINISHED: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:511\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n\
        #EXT-X-MAP:URI=\"1_init.mp4\"\n#EXTINF:2.0,\n1_511.m4s\n#EXTINF:2.0,\n1_512.m4s\n\
        #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"2_init.mp4\"\n#EXTINF:2.0,\n2_513.m4s\n\
        #EXT-X-ENDLIST\n";

    fn state(media_sequence: u64, discontinuity_sequence: u64, breaks: &[bool]) -> PathState {
        let segments = (breaks.iter().enumerate())
            .map(|(i, &discontinuity)| crate::hls::resume::SegmentRecord {
                uri: format!("s_{}.m4s", media_sequence + i as u64),
                init: "s_init.mp4".into(),
                duration: 2.0,
                discontinuity,
                program_date_time: None,
                independent: true,
                gap: false,
            })
            .collect();
        PathState {
            target_duration: Some(2),
            renditions: vec![crate::hls::resume::RenditionState {
                name: "source".into(),
                media_sequence,
                discontinuity_sequence,
                segments,
            }],
            recording: None,
        }
    }

    #[test]
    fn a_finished_copy_ends_where_its_last_segment_does() {
        assert!(is_finished(FINISHED.as_bytes()));
        let end = end_of_text(FINISHED.as_bytes()).unwrap();
        assert_eq!(
            end,
            End {
                discontinuity: 2,
                next: 514
            }
        );
        // The state its own session left: not past it.
        let same = end_of_state(&state(511, 1, &[false, false, true]), "source").unwrap();
        assert_eq!(same, end);
        assert!(!is_past(same, end));
    }

    #[test]
    fn a_path_published_again_is_past_the_copy() {
        let copy = end_of_text(FINISHED.as_bytes()).unwrap();
        // Published again: one more discontinuity, segments on from 514.
        let again = state(512, 1, &[false, true, true, false, false]);
        assert!(is_past(end_of_state(&again, "source").unwrap(), copy));
        // A new window further on, its discontinuities already out of it.
        let further = state(530, 3, &[false, false]);
        assert!(is_past(end_of_state(&further, "source").unwrap(), copy));
        // Another rendition of the ladder says nothing about this one.
        assert_eq!(end_of_state(&again, "360p"), None);
    }

    #[test]
    fn what_is_not_a_playlist_is_not_compared() {
        assert_eq!(end_of_text(b"not a playlist"), None);
        assert!(!is_finished(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"));
    }
}
