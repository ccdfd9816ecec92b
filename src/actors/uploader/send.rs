//! One spooled item to S3: a put, a copy or a delete; for a cluster's playlists, fenced
//! so an old owner's playlist never lands over the new owner's. Pure async work, no
//! actor state: the uploader hands an item over and handles the answer.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::delivery::fencing::{FenceError, FenceStep, Fenced, put_playlist};
use crate::delivery::s3::S3Target;
use crate::delivery::spool::ItemKind;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: 50 % to 100 % of min(start * 2^n, max).
pub(super) fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(BACKOFF_MAX);
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    let fraction = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX) / 2.0;
    ceiling.mul_f64(fraction)
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    Done,
    /// A playlist of a cluster's path: written, or not (and why).
    Playlist(Fenced),
    /// A copy whose source is gone: dropped (retrying cannot bring it back).
    Missing,
}

/// What a media playlist in S3 says to note in Redis.
#[derive(Debug, PartialEq)]
pub(super) struct Stored {
    /// From its key, `{rendition}/index.m3u8`.
    pub rendition: String,
    /// The newest segment it lists: once it is in S3, so is every segment it lists.
    pub newest: String,
    /// The media sequence numbers of the segments it lists (their parts can go).
    pub msns: Vec<u64>,
}

pub(super) fn stored(key: &str, playlist: &[u8]) -> Option<Stored> {
    let rendition = key.strip_suffix("/index.m3u8")?;
    if rendition.contains('/') {
        return None;
    }
    let text = std::str::from_utf8(playlist).ok()?;
    let segments: Vec<&str> = (text.lines().map(str::trim))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let msns = (segments.iter())
        .filter_map(|s| crate::cluster::parts::msn_of(s))
        .collect();
    Some(Stored {
        rendition: rendition.to_owned(),
        newest: segments.last()?.to_string(),
        msns,
    })
}

/// How a playlist is fenced against another node's writes.
pub(super) enum Fence {
    /// Not in a cluster (or not a playlist).
    None,
    /// `s3.conditional_writes = false`: the lease is checked in Redis first.
    Check(Arc<Cluster>, u64),
    Conditional(Arc<Cluster>, u64, FenceStep),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum UploadError {
    #[error(transparent)]
    S3(#[from] crate::delivery::s3::S3Error),
    #[error("cannot check the path's lease: {0}")]
    Fence(crate::cluster::ClusterError),
}

impl From<FenceError> for UploadError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::S3(e) => UploadError::S3(e),
            FenceError::Lease(e) => UploadError::Fence(e),
        }
    }
}

/// One item of `stream` to `key` (`body`: its bytes; for a copy, the name to copy from).
pub(super) async fn send(
    target: S3Target,
    stream: String,
    key: String,
    kind: ItemKind,
    body: Vec<u8>,
    fence: Fence,
) -> Result<Sent, UploadError> {
    match fence {
        Fence::Conditional(cluster, token, step) => {
            let written = put_playlist(&target, &cluster, &stream, &key, kind, body, token, step);
            Ok(Sent::Playlist(written.await?))
        }
        Fence::Check(cluster, token) => match cluster.is_current(&stream, token).await {
            Ok(true) => Ok(target.put(&key, kind, body).await.map(|()| Sent::Done)?),
            Ok(false) => Ok(Sent::Playlist(Fenced::Lost)),
            Err(e) => Err(UploadError::Fence(e)),
        },
        Fence::None => Ok(match kind {
            ItemKind::Delete => target.delete(&key).await.map(|()| Sent::Done),
            ItemKind::Copy => {
                let from = target.object_key(&stream, &String::from_utf8_lossy(&body));
                (target.copy(&from, &key, kind).await)
                    .map(|found| if found { Sent::Done } else { Sent::Missing })
            }
            _ => target.put(&key, kind, body).await.map(|()| Sent::Done),
        }?),
    }
}

#[cfg(test)]
mod tests {
    use super::{Stored, stored};

    #[test]
    fn a_media_playlist_names_its_newest_segment() {
        let playlist = b"#EXTM3U\n#EXT-X-MAP:URI=\"1_0.mp4\"\n#EXTINF:2.0,\n1_4.m4s\n#EXTINF:1.5,\n1_5.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            stored("180p/index.m3u8", playlist),
            Some(Stored {
                rendition: "180p".into(),
                newest: "1_5.m4s".into(),
                msns: vec![4, 5],
            })
        );
        assert_eq!(stored("master.m3u8", playlist), None);
        assert_eq!(stored("a/b/index.m3u8", playlist), None);
        assert_eq!(stored("source/index.m3u8", b"#EXTM3U\n"), None);
    }
}
