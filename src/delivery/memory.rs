//! The live edge in memory, for Low-Latency HLS: each rendition's live playlist and the
//! bytes of the init segments and parts it lists. The session writes (a map insert under
//! a lock, no I/O), HTTP reads; a watch channel wakes the requests held for the next
//! part, so a held request costs a waker, not a thread.
//!
//! Bounded: a rendition keeps the bytes of what its live playlist lists (the parts of
//! its open and last complete segment) and what the playlist before it listed. An older
//! part is still served, as its byte range of the segment in the data directory: the
//! edge remembers the part sizes of the last segments (a few numbers each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::hls::low_latency::{Directives, LivePlaylist, Readiness, RenditionReport};
use crate::hls::packager::Output;

/// Every live stream's edge, by publish path.
#[derive(Default)]
pub struct LiveStore {
    streams: RwLock<HashMap<String, Arc<LiveStream>>>,
}

impl LiveStore {
    /// A new session's edge for `path` (a previous one is closed).
    pub fn open(&self, path: &str) -> Arc<LiveStream> {
        let stream = Arc::new(LiveStream::default());
        let old = write(&self.streams).insert(path.to_owned(), stream.clone());
        if let Some(old) = old {
            old.close();
        }
        stream
    }

    /// The session ended: requests fall back to the data directory.
    pub fn close(&self, path: &str, stream: &Arc<LiveStream>) {
        stream.close();
        let mut streams = write(&self.streams);
        if streams.get(path).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            streams.remove(path);
        }
    }

    pub fn get(&self, path: &str) -> Option<Arc<LiveStream>> {
        read(&self.streams).get(path).cloned()
    }
}

/// A poisoned lock only means a writer panicked mid-insert; the maps stay usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

pub struct LiveStream {
    state: RwLock<State>,
    changed: watch::Sender<u64>,
}

impl Default for LiveStream {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            changed: watch::Sender::new(0),
        }
    }
}

#[derive(Default)]
struct State {
    renditions: BTreeMap<String, RenditionEdge>,
    closed: bool,
}

#[derive(Default)]
struct RenditionEdge {
    playlist: Option<LivePlaylist>,
    files: HashMap<String, Bytes>,
    /// What the previous playlist listed.
    listed_before: HashSet<String>,
    /// The newest init segment (listed once the first part that needs it is).
    init: Option<String>,
    /// Part sizes of the last segments, by sequence number: where each part lies in its
    /// segment's file.
    part_sizes: BTreeMap<u64, Vec<u32>>,
}

/// A playlist request's answer, now.
#[derive(Debug, PartialEq)]
pub enum PlaylistLookup {
    Ready(String),
    /// Not there yet: wait for a change, up to the deadline.
    Wait {
        target_duration: u64,
    },
    Refuse(crate::hls::low_latency::DirectiveError),
    /// Not live here (ended, or not started): the data directory has it, or nothing.
    Missing,
}

/// A file request's answer, now.
#[derive(Debug, PartialEq)]
pub enum FileLookup {
    /// The body, in pieces (a complete segment is its parts).
    Found(Vec<Bytes>),
    /// A part that left memory: bytes `offset..offset + len` of `segment`, a file of the
    /// data directory.
    InSegment {
        segment: String,
        offset: u64,
        len: u64,
    },
    /// The part the playlist hints at: it is being made.
    Wait {
        target_duration: u64,
    },
    Missing,
}

impl LiveStream {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn close(&self) {
        write(&self.state).closed = true;
        self.notify();
    }

    /// Takes what the packager made for the edge (parts and live playlists, and a copy of
    /// each init segment), wakes the held requests if a playlist changed, and gives back
    /// the rest, in order, for the data directory and S3.
    pub fn take(&self, outputs: Vec<Output>) -> Vec<Output> {
        let mut changed = false;
        let mut rest = Vec::with_capacity(outputs.len());
        {
            let mut state = write(&self.state);
            for output in outputs {
                match output {
                    Output::Init {
                        ref rendition,
                        ref name,
                        ref data,
                    } => {
                        let edge = state.renditions.entry(rendition.clone()).or_default();
                        edge.files.insert(name.clone(), data.clone());
                        edge.init = Some(name.clone());
                        rest.push(output);
                    }
                    Output::Part {
                        rendition,
                        name,
                        data,
                    } => {
                        let edge = state.renditions.entry(rendition).or_default();
                        if let Some((_, msn, index)) = parse_part(&name) {
                            edge.remember_size(msn, index, data.len());
                        }
                        edge.files.insert(name, data);
                    }
                    Output::Live {
                        rendition,
                        playlist,
                    } => {
                        let edge = state.renditions.entry(rendition).or_default();
                        let before = std::mem::replace(&mut edge.listed_before, listed(&playlist));
                        let now = &edge.listed_before;
                        let open_msn = playlist.open_msn();
                        let init = edge.init.as_deref();
                        edge.files.retain(|name, _| {
                            now.contains(name)
                                || before.contains(name)
                                || init == Some(name.as_str())
                                || part_msn(name).is_some_and(|msn| msn >= open_msn)
                        });
                        edge.playlist = Some(*playlist);
                        changed = true;
                    }
                    other => rest.push(other),
                }
            }
        }
        if changed {
            self.notify();
        }
        rest
    }

    /// A rendition's playlist for a request with `directives`.
    pub fn playlist(&self, rendition: &str, directives: &Directives) -> PlaylistLookup {
        let state = read(&self.state);
        if state.closed {
            return PlaylistLookup::Missing;
        }
        let Some(playlist) = state
            .renditions
            .get(rendition)
            .and_then(|e| e.playlist.as_ref())
        else {
            return PlaylistLookup::Missing;
        };
        match playlist.ready(directives) {
            Readiness::Ready => {}
            Readiness::Wait => {
                return PlaylistLookup::Wait {
                    target_duration: playlist.target_duration,
                };
            }
            Readiness::Refuse(e) => return PlaylistLookup::Refuse(e),
        }
        let reports: Vec<RenditionReport> = state
            .renditions
            .iter()
            .filter(|(name, _)| name.as_str() != rendition)
            .filter_map(|(name, edge)| {
                let p = edge.playlist.as_ref().filter(|p| !p.ended)?;
                let (last_msn, last_part) = p.last_position()?;
                Some(RenditionReport {
                    uri: format!("../{name}/index.m3u8"),
                    last_msn,
                    last_part,
                })
            })
            .collect();
        PlaylistLookup::Ready(playlist.render(directives.skip, &reports))
    }

    /// An init segment, a part or a complete segment of the live edge.
    pub fn file(&self, rendition: &str, name: &str) -> FileLookup {
        let state = read(&self.state);
        let Some(edge) = state.renditions.get(rendition).filter(|_| !state.closed) else {
            return FileLookup::Missing;
        };
        if let Some(data) = edge.files.get(name) {
            return FileLookup::Found(vec![data.clone()]);
        }
        let Some(playlist) = &edge.playlist else {
            return FileLookup::Missing;
        };
        if playlist.preload_hint.as_deref() == Some(name) {
            return FileLookup::Wait {
                target_duration: playlist.target_duration,
            };
        }
        if let Some((epoch, msn, index)) = parse_part(name)
            && msn < playlist.open_msn()
            && let Some(sizes) = edge.part_sizes.get(&msn)
            && index < sizes.len()
        {
            let offset = sizes[..index].iter().map(|&n| u64::from(n)).sum();
            return FileLookup::InSegment {
                segment: format!("{epoch}_{msn}.m4s"),
                offset,
                len: u64::from(sizes[index]),
            };
        }
        // A complete segment whose parts are all still here.
        let segment = playlist
            .segments
            .iter()
            .find(|s| s.segment.uri == name && !s.parts.is_empty());
        if let Some(segment) = segment {
            let pieces: Option<Vec<Bytes>> = segment
                .parts
                .iter()
                .map(|p| edge.files.get(&p.uri).cloned())
                .collect();
            if let Some(pieces) = pieces {
                return FileLookup::Found(pieces);
            }
        }
        FileLookup::Missing
    }
}

/// Every name a live playlist lists: init segments and parts.
fn listed(playlist: &LivePlaylist) -> HashSet<String> {
    let segments = playlist
        .segments
        .iter()
        .map(|s| (&s.segment, &s.parts))
        .chain(playlist.open.iter().map(|o| (&o.segment, &o.parts)));
    let mut names = HashSet::new();
    for (segment, parts) in segments {
        names.insert(segment.map.clone());
        names.extend(parts.iter().map(|p| p.uri.clone()));
    }
    names
}

/// Segments whose part sizes a rendition remembers (more than a live window).
const SIZED_SEGMENTS: usize = 32;

impl RenditionEdge {
    fn remember_size(&mut self, msn: u64, index: usize, len: usize) {
        let sizes = self.part_sizes.entry(msn).or_default();
        // Parts come in order; a repeat (a restart reusing the number) starts over.
        if index <= sizes.len() {
            sizes.truncate(index);
            sizes.push(u32::try_from(len).unwrap_or(u32::MAX));
        }
        while self.part_sizes.len() > SIZED_SEGMENTS {
            self.part_sizes.pop_first();
        }
    }
}

/// A part's name: `{epoch}_{msn}_{index}.m4s`.
fn parse_part(name: &str) -> Option<(&str, u64, usize)> {
    let mut fields = name.strip_suffix(".m4s")?.split('_');
    let epoch = fields.next()?;
    let msn = fields.next()?.parse().ok()?;
    let index = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((epoch, msn, index))
}

/// The segment a part belongs to.
fn part_msn(name: &str) -> Option<u64> {
    parse_part(name).map(|(_, msn, _)| msn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::low_latency::{LiveSegment, OpenSegment, PartInfo};
    use crate::hls::playlist::MediaSegment;

    fn part_name(msn: u64, i: usize) -> String {
        format!("1_{msn}_{i}.m4s")
    }

    fn parts(msn: u64, n: usize) -> Vec<PartInfo> {
        (0..n)
            .map(|i| PartInfo {
                uri: part_name(msn, i),
                duration: 0.5,
                independent: i == 0,
            })
            .collect()
    }

    fn segment(msn: u64) -> MediaSegment {
        MediaSegment {
            uri: format!("1_{msn}.m4s"),
            map: "1_0.mp4".into(),
            duration: 1.0,
            discontinuity: false,
            program_date_time: None,
        }
    }

    /// Segments `0..complete` (parts listed for those in `with_parts`), and `open`
    /// parts of the next.
    fn live(rendition: &str, complete: u64, with_parts: u64, open: usize) -> Output {
        Output::Live {
            rendition: rendition.into(),
            playlist: Box::new(LivePlaylist {
                target_duration: 1,
                part_target: 0.5,
                media_sequence: 0,
                discontinuity_sequence: 0,
                segments: (0..complete)
                    .map(|msn| LiveSegment {
                        segment: segment(msn),
                        parts: if msn + with_parts >= complete {
                            parts(msn, 2)
                        } else {
                            Vec::new()
                        },
                    })
                    .collect(),
                open: (open > 0).then(|| OpenSegment {
                    segment: segment(complete),
                    parts: parts(complete, open),
                }),
                preload_hint: Some(part_name(complete, open)),
                ended: false,
            }),
        }
    }

    fn part(rendition: &str, msn: u64, i: usize) -> Output {
        Output::Part {
            rendition: rendition.into(),
            name: part_name(msn, i),
            data: Bytes::from(vec![i as u8; 4]),
        }
    }

    #[test]
    fn the_edge_serves_listed_parts_holds_the_hinted_one_and_forgets_old_ones() {
        let stream = LiveStore::default().open("live/a");
        let init = Output::Init {
            rendition: "source".into(),
            name: "1_0.mp4".into(),
            data: Bytes::from_static(b"init"),
        };
        let rest = stream.take(vec![
            init.clone(),
            part("source", 0, 0),
            part("source", 0, 1),
            live("source", 0, 0, 2),
        ]);
        // Parts and playlists stay here; the init segment also goes to disk and S3.
        assert_eq!(rest, vec![init]);
        let found = |name: &str| matches!(stream.file("source", name), FileLookup::Found(_));
        assert!(found("1_0.mp4") && found("1_0_1.m4s"));
        assert_eq!(
            stream.file("source", "1_0_2.m4s"),
            FileLookup::Wait { target_duration: 1 }
        );
        assert_eq!(stream.file("source", "1_9_0.m4s"), FileLookup::Missing);

        // Segment 0 completes: it is served as its two parts.
        stream.take(vec![part("source", 1, 0), live("source", 1, 1, 1)]);
        let FileLookup::Found(pieces) = stream.file("source", "1_0.m4s") else {
            panic!("segment 0 is not served from its parts")
        };
        assert_eq!(pieces.len(), 2);

        // Segment 0's parts leave the playlist, then the one after it: gone.
        stream.take(vec![live("source", 3, 1, 1)]);
        assert!(found("1_0_0.m4s"), "the previous playlist still listed it");
        stream.take(vec![live("source", 3, 1, 1)]);
        assert!(!found("1_0_0.m4s") && found("1_0.mp4"));
        assert_eq!(stream.file("source", "1_0.m4s"), FileLookup::Missing);
        // ... but still served, from the segment's file: part 1 follows part 0's 4 bytes.
        assert_eq!(
            stream.file("source", "1_0_1.m4s"),
            FileLookup::InSegment {
                segment: "1_0.m4s".into(),
                offset: 4,
                len: 4
            }
        );
        assert_eq!(stream.file("source", "1_0_2.m4s"), FileLookup::Missing);
    }

    #[test]
    fn playlists_report_the_other_renditions_until_the_stream_closes() {
        let store = LiveStore::default();
        let stream = store.open("live/b");
        let changes = stream.subscribe();
        stream.take(vec![live("source", 2, 1, 1), live("180p", 2, 1, 0)]);
        assert!(changes.has_changed().unwrap());
        let PlaylistLookup::Ready(text) = stream.playlist("source", &Directives::default()) else {
            panic!("no playlist")
        };
        assert!(
            text.contains(
                "#EXT-X-RENDITION-REPORT:URI=\"../180p/index.m3u8\",LAST-MSN=1,LAST-PART=1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("../source/"));
        let ahead = Directives {
            msn: Some(3),
            part: None,
            skip: false,
        };
        assert_eq!(
            stream.playlist("source", &ahead),
            PlaylistLookup::Wait { target_duration: 1 }
        );
        assert_eq!(
            stream.playlist("720p", &Directives::default()),
            PlaylistLookup::Missing
        );
        // A new publish of the path replaces the edge; the old session's close leaves
        // the new one alone.
        let newer = store.open("live/b");
        store.close("live/b", &stream);
        assert!(store.get("live/b").is_some_and(|s| Arc::ptr_eq(&s, &newer)));
        assert_eq!(
            stream.playlist("source", &Directives::default()),
            PlaylistLookup::Missing
        );
        store.close("live/b", &newer);
        assert!(store.get("live/b").is_none());
    }
}
