//! Before a new owner lists its predecessor's segments, it makes sure each one is where
//! its playlists point: in its own data dir or in S3. A segment that cannot be found was
//! never in a playlist S3 viewers saw (the uploader puts a segment before the playlist
//! that lists it), so it is listed as a gap; the sequence numbers still only go forward.
//!
//! A takeover's viewers wait for this check, so S3 is asked as little as can be: Redis
//! says up to which segment S3 has each rendition (the uploader notes every media
//! playlist it puts), and the newest segments can be made again from their parts in
//! Redis ([`super::parts`]). Only what is left goes to S3, as a listing of the
//! rendition's folder (one request each, all at once), with [`S3_WAIT`] to answer. The
//! files in S3 are copied here afterwards, newest first, while the stream goes on;
//! until one lands, HTTP passes it on from S3.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};

use super::Cluster;
use super::parts::{self, Rebuilt};
use crate::delivery::local::write_atomic;
use crate::delivery::s3::S3Target;
use crate::hls::packager::Output;
use crate::hls::resume::{PathState, RenditionState, SegmentRecord};

/// Larger than any segment Kawa cuts (8 MiB messages, a few seconds each).
const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;
/// Files fetched at once.
const PARALLEL_FETCHES: usize = 8;
/// The most keys a rendition's listing reads: its folder holds the window and what
/// waits to be deleted (a few dozen). A folder with more is checked file by file.
const MAX_LISTED: usize = 4096;

/// How long a claim waits for S3 to say which of the predecessor's segments it has. The
/// path's viewers wait for the claim: in a 30 s S3 freeze a claim waited for the S3
/// request timeout (the chaos benchmark saw a reader's gap of 4.1 s). Past it, what is
/// not in the data dir is left out (gaps), as if S3 had not got it: a segment S3 may
/// lack is never listed, and a viewer at the live edge loses nothing.
const S3_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Where the predecessor's files can be found besides the local data dir.
pub struct Sources<'a> {
    /// `DATA_DIR/hls/{path}`.
    pub local: PathBuf,
    pub s3: Option<(&'a S3Target, &'a str)>,
    /// The path in the cluster: what its owners noted in Redis (the segments in S3,
    /// their newest parts).
    pub cluster: Option<(&'a Cluster, &'a str)>,
}

/// What a claim found of its predecessor's files.
#[derive(Debug, Default)]
pub struct Restored {
    /// Segments left out (listed as gaps).
    pub dropped: usize,
    /// Files listed again that are in S3 but not here: `(rendition, name)`, newest first.
    pub to_fetch: Vec<(String, String)>,
    /// Segments made again from their parts (now in the data dir), for S3.
    pub rebuilt: Vec<Output>,
    /// How long finding (and rebuilding) the predecessor's files took.
    pub finding: std::time::Duration,
}

/// Where a rendition's file is.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Found {
    Here,
    InS3,
    Nowhere,
}

/// The names a directory holds (none if it cannot be read).
async fn local_names(dir: PathBuf) -> HashSet<String> {
    let mut names = HashSet::new();
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return names;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if let Ok(name) = entry.file_name().into_string() {
            names.insert(name);
        }
    }
    names
}

/// The names in a rendition's S3 folder; `None` if the listing failed or was cut short.
async fn s3_names(s3: &S3Target, stream: &str, rendition: &str) -> Option<HashSet<String>> {
    let prefix = s3.object_key(stream, &format!("{rendition}/"));
    match s3.list_keys(&prefix, MAX_LISTED).await {
        Ok(keys) if keys.len() < MAX_LISTED => Some(
            keys.iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(str::to_owned)
                .collect(),
        ),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list a predecessor's segments; checking each");
            None
        }
    }
}

/// Where `name` is, when the rendition's S3 folder could not be listed.
async fn find_one(s3: Option<(&S3Target, &str)>, rendition: &str, name: &str) -> Found {
    let Some((s3, stream)) = s3 else {
        return Found::Nowhere;
    };
    let key = s3.object_key(stream, &format!("{rendition}/{name}"));
    match s3.etag(&key).await {
        Ok(Some(_)) => Found::InS3,
        Ok(None) => Found::Nowhere,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find a predecessor's segment");
            Found::Nowhere
        }
    }
}

/// Where each of `names` (files of one rendition not found otherwise) is in S3: one
/// listing of the rendition's folder, or file by file if that fails. What S3 has not
/// said by `deadline` is taken as nowhere.
async fn find_in_s3(
    sources: &Sources<'_>,
    rendition: &str,
    names: Vec<String>,
    deadline: tokio::time::Instant,
) -> HashMap<String, Found> {
    let Some((s3, stream)) = sources.s3.filter(|_| !names.is_empty()) else {
        return names.into_iter().map(|n| (n, Found::Nowhere)).collect();
    };
    let asked = async {
        let listed = s3_names(s3, stream, rendition).await;
        let checks = names.iter().map(|name| {
            let listed = &listed;
            async move {
                match listed {
                    Some(listed) if listed.contains(name) => Found::InS3,
                    Some(_) => Found::Nowhere,
                    None => find_one(sources.s3, rendition, name).await,
                }
            }
        });
        stream::iter(checks)
            .buffered(PARALLEL_FETCHES)
            .collect::<Vec<Found>>()
            .await
    };
    let found = match tokio::time::timeout_at(deadline, asked).await {
        Ok(found) => found,
        Err(_) => {
            tracing::warn!(
                rendition,
                "S3 did not answer in time: the predecessor's segments not here are left out"
            );
            vec![Found::Nowhere; names.len()]
        }
    };
    names.into_iter().zip(found).collect()
}

/// Keeps, per rendition, the segments (and their init segments) that are present or in
/// S3. One that is in neither is made again from its parts in Redis when they are all
/// there ([`parts`](super::parts)); else it stays listed as a gap (`EXT-X-GAP`), so that
/// no media sequence number a viewer saw names another segment.
/// So does the segment the predecessor had open, unless its parts are in Redis: then it
/// is listed, cut where the predecessor died.
///
/// What S3 has is known without asking it up to the newest segment of a playlist the
/// predecessor put there (noted in Redis, `kawa:stored:{path}`): S3 is asked only about
/// newer segments that are neither here nor in Redis, which happens when its uploads
/// fell behind. A claim under load used to wait for S3 listings up to [`S3_WAIT`] and
/// then leave the whole window out (the chaos benchmark).
pub async fn keep_present(state: &mut PathState, sources: &Sources<'_>) -> Restored {
    let began = tokio::time::Instant::now();
    let deadline = began + S3_WAIT;
    let stored = match sources.cluster {
        Some((cluster, path)) => {
            match tokio::time::timeout(S3_WAIT, cluster.load_stored(path)).await {
                Ok(Ok(stored)) => stored,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read which segments S3 has; asking S3");
                    HashMap::new()
                }
                Err(_) => HashMap::new(),
            }
        }
        None => HashMap::new(),
    };
    let restored = futures_util::future::join_all(state.renditions.iter_mut().map(|r| {
        let mark = stored.get(&r.name).cloned();
        restore(r, mark, sources, deadline)
    }))
    .await;
    let mut total = Restored::default();
    for r in restored {
        total.dropped += r.dropped;
        total.to_fetch.extend(r.to_fetch);
        total.rebuilt.extend(r.rebuilt);
    }
    // Newest first across renditions: a player at the live edge asks for those.
    total.to_fetch = interleave(total.to_fetch);
    total.finding = began.elapsed();
    total
}

/// One rendition's part of [`keep_present`]; `stored`: the newest segment S3 has.
async fn restore(
    rendition: &mut RenditionState,
    stored: Option<String>,
    sources: &Sources<'_>,
    deadline: tokio::time::Instant,
) -> Restored {
    let here = local_names(sources.local.join(&rendition.name)).await;
    let mut known: HashMap<String, Found> = HashMap::new();
    let listed = |s: &&SegmentRecord| !s.gap;
    for segment in rendition.segments.iter().filter(listed) {
        for name in [&segment.init, &segment.uri] {
            if here.contains(name) {
                known.insert(name.clone(), Found::Here);
            }
        }
    }
    let through = stored.and_then(|m| rendition.segments.iter().position(|s| s.uri == m));
    if let Some(through) = through {
        for segment in rendition.segments[..=through].iter().filter(listed) {
            for name in [&segment.init, &segment.uri] {
                known.entry(name.clone()).or_insert(Found::InS3);
            }
        }
    }
    // Segments not here and newer than what S3 is known to have: from their parts.
    let mut restored = Restored::default();
    for (msn, segment) in (rendition.media_sequence..).zip(&rendition.segments) {
        if segment.gap || known.contains_key(&segment.uri) {
            continue;
        }
        let whole =
            |r: &Rebuilt| r.closed && r.record.uri == segment.uri && r.record.init == segment.init;
        if let Some(r) = rebuilt(sources, &rendition.name, msn).await
            && whole(&r)
            && stored_here(&r, sources, &rendition.name).await
        {
            known.insert(segment.uri.clone(), Found::Here);
            restored.rebuilt.push(r.into_output(&rendition.name));
        }
    }
    // What is still not known, S3 is asked.
    let mut unknown: Vec<String> = Vec::new();
    for segment in rendition.segments.iter().filter(listed) {
        for name in [&segment.init, &segment.uri] {
            if !known.contains_key(name) && !unknown.contains(name) {
                unknown.push(name.clone());
            }
        }
    }
    known.extend(find_in_s3(sources, &rendition.name, unknown, deadline).await);
    let at = |name: &String| known.get(name).copied().unwrap_or(Found::Nowhere);
    let present = |s: &SegmentRecord| {
        s.gap || (at(&s.init) != Found::Nowhere && at(&s.uri) != Found::Nowhere)
    };
    // Each segment found nowhere is listed as a gap, alone: those after it that are
    // found stay (an S3 backlog after an outage left whole windows of gaps, segments
    // rebuilt from their parts included).
    let missing: Vec<usize> = (rendition.segments.iter().enumerate())
        .filter(|(_, s)| !present(s))
        .map(|(i, _)| i)
        .collect();
    restored.dropped = missing.len();
    if let Some(first) = missing.first().map(|i| &rendition.segments[*i]) {
        // Why viewers behind the live edge lose these: where each place was asked.
        let (segment, init) = (at(&first.uri), at(&first.init));
        tracing::warn!(
            rendition = %rendition.name,
            segment = %first.uri,
            ?segment,
            ?init,
            stored_through = ?through,
            gaps = restored.dropped,
            "a predecessor's segment is nowhere: listed as a gap"
        );
    }
    let mut fetch: Vec<String> = Vec::new();
    for (i, segment) in rendition.segments.iter().enumerate().rev() {
        if segment.gap || missing.contains(&i) {
            continue;
        }
        for name in [&segment.init, &segment.uri] {
            if at(name) == Found::InS3 && !fetch.contains(name) {
                fetch.push(name.clone());
            }
        }
    }
    restored.to_fetch = (fetch.into_iter())
        .map(|n| (rendition.name.clone(), n))
        .collect();
    for i in missing {
        rendition.segments[i].gap = true;
    }
    // What the predecessor cut after its last saved state: a segment it closed (the
    // state not saved yet), then the one it had open.
    let mut open_listed = false;
    for _ in 0..2 {
        let Some(r) = rebuilt(sources, &rendition.name, rendition.next_msn()).await else {
            break;
        };
        let init = &r.record.init;
        if !(here.contains(init) || at(init) != Found::Nowhere)
            || !stored_here(&r, sources, &rendition.name).await
        {
            break;
        }
        let closed = r.closed;
        rendition.segments.push(r.record.clone());
        restored.rebuilt.push(r.into_output(&rendition.name));
        if !closed {
            open_listed = true;
            break;
        }
    }
    if !open_listed {
        rendition.skip_open_segment();
    }
    rendition.pass_window_start();
    restored
}

/// Segment `msn` of `rendition` made again from its parts in Redis, if they are there.
async fn rebuilt(sources: &Sources<'_>, rendition: &str, msn: u64) -> Option<Rebuilt> {
    let (cluster, path) = sources.cluster?;
    match tokio::time::timeout(S3_WAIT, cluster.load_parts(path, rendition, msn)).await {
        Ok(Ok(elements)) => parts::rebuild(msn, &elements),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read a predecessor's parts");
            None
        }
        Err(_) => {
            tracing::warn!("Redis did not give a predecessor's parts in time");
            None
        }
    }
}

/// Writes a rebuilt segment into the data dir, where the playlists will point.
async fn stored_here(segment: &Rebuilt, sources: &Sources<'_>, rendition: &str) -> bool {
    let dir = sources.local.join(rendition);
    let (name, data) = (segment.record.uri.clone(), segment.data.to_vec());
    let written = tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &data)).await;
    let ok = matches!(written, Ok(Ok(())));
    if !ok {
        tracing::warn!("cannot keep a predecessor's rebuilt segment in the data dir");
    }
    ok
}

/// The files of each rendition (each newest first), taken in turns across renditions.
fn interleave(files: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut by_rendition: Vec<std::collections::VecDeque<(String, String)>> = Vec::new();
    for file in files {
        match by_rendition.iter_mut().find(|q| q[0].0 == file.0) {
            Some(queue) => queue.push_back(file),
            None => by_rendition.push([file].into()),
        }
    }
    let mut out = Vec::new();
    while by_rendition.iter().any(|q| !q.is_empty()) {
        for queue in &mut by_rendition {
            out.extend(queue.pop_front());
        }
    }
    out
}

/// Copies `files` from S3 into the local data dir, several at a time, started in the
/// order given (newest first).
pub async fn fetch(files: Vec<(String, String)>, sources: Sources<'_>) {
    let Some((s3, stream)) = sources.s3 else {
        return;
    };
    let local = &sources.local;
    let copies = files.into_iter().map(|(rendition, name)| async move {
        let key = s3.object_key(stream, &format!("{rendition}/{name}"));
        match s3.get(&key, MAX_SEGMENT_BYTES).await {
            Ok(Some(data)) => {
                let dir = local.join(&rendition);
                let written =
                    tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &data)).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::warn!("cannot keep a predecessor's segment in the data dir");
                }
            }
            Ok(None) => tracing::warn!("a predecessor's segment left S3 before it was fetched"),
            Err(e) => tracing::warn!(error = %e, "cannot fetch a predecessor's segment"),
        }
    });
    stream::iter(copies)
        .buffer_unordered(PARALLEL_FETCHES)
        .collect::<()>()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        (list.iter())
            .map(|(r, n)| (r.to_string(), n.to_string()))
            .collect()
    }

    #[test]
    fn fetches_take_turns_across_renditions() {
        let order = interleave(files(&[
            ("source", "s3"),
            ("source", "s2"),
            ("source", "s1"),
            ("180p", "l3"),
            ("180p", "l2"),
        ]));
        assert_eq!(
            order,
            files(&[
                ("source", "s3"),
                ("180p", "l3"),
                ("source", "s2"),
                ("180p", "l2"),
                ("source", "s1"),
            ])
        );
    }
}
