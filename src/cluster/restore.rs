//! Before a new owner lists its predecessor's segments, it makes sure each one is where
//! its playlists point: in its own data dir (fetched from S3 when another node wrote it).
//! A segment that cannot be found was never in a playlist S3 viewers saw (the uploader
//! puts a segment before the playlist that lists it), so it and every later one are
//! left out; the sequence numbers still only go forward.

use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};

use crate::delivery::local::write_atomic;
use crate::delivery::s3::S3Target;
use crate::hls::resume::PathState;

/// Larger than any segment Kawa cuts (8 MiB messages, a few seconds each).
const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;
/// Files fetched at once: a takeover waits for its predecessor's window (a dozen files
/// per rendition), which one at a time took seconds of the viewers' gap.
const PARALLEL_FETCHES: usize = 8;

/// Where the predecessor's files can be found besides the local data dir.
pub struct Sources<'a> {
    /// `DATA_DIR/hls/{path}`.
    pub local: PathBuf,
    pub s3: Option<(&'a S3Target, &'a str)>,
}

async fn present(sources: &Sources<'_>, rendition: &str, name: &str) -> bool {
    let dir = sources.local.join(rendition);
    if tokio::fs::try_exists(dir.join(name)).await.unwrap_or(false) {
        return true;
    }
    let Some((s3, stream)) = sources.s3 else {
        return false;
    };
    let key = s3.object_key(stream, &format!("{rendition}/{name}"));
    match s3.get(&key, MAX_SEGMENT_BYTES).await {
        Ok(Some(data)) => {
            let name = name.to_owned();
            let written =
                tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &data)).await;
            matches!(written, Ok(Ok(())))
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot fetch a predecessor's segment");
            false
        }
    }
}

/// Keeps, per rendition, the segments (and their init segments) that are present or
/// could be fetched, up to the first that could not; those after it stay listed as gaps
/// (`EXT-X-GAP`), and so does the segment the predecessor had open, so that no media
/// sequence number a viewer saw names another segment. Returns how many were left out.
pub async fn keep_present(state: &mut PathState, sources: &Sources<'_>) -> usize {
    // Every file each rendition's window names, once, in order: fetched several at a
    // time across all renditions (one rendition after another took a round trip each).
    let names: Vec<Vec<String>> = (state.renditions.iter())
        .map(|rendition| {
            let mut names: Vec<String> = Vec::new();
            for segment in &rendition.segments {
                for name in [&segment.init, &segment.uri] {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            names
        })
        .collect();
    let renditions: Vec<String> = state.renditions.iter().map(|r| r.name.clone()).collect();
    let fetches = (renditions.iter().zip(&names))
        .flat_map(|(r, names)| names.iter().map(move |n| present(sources, r, n)));
    let mut found = stream::iter(fetches).buffered(PARALLEL_FETCHES);
    let mut dropped = 0;
    for (rendition, names) in state.renditions.iter_mut().zip(&names) {
        let mut here = Vec::with_capacity(names.len());
        for _ in names {
            here.push(found.next().await.unwrap_or(false));
        }
        let ok = |file: &String| {
            names
                .iter()
                .position(|n| n == file)
                .is_some_and(|i| here[i])
        };
        let kept = rendition
            .segments
            .iter()
            .take_while(|s| ok(&s.init) && ok(&s.uri))
            .count();
        dropped += rendition.segments.len() - kept;
        rendition.gaps_from(kept);
        rendition.skip_open_segment();
        rendition.pass_window_start();
    }
    dropped
}
