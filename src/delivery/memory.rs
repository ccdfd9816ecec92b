//! The live edge in memory, for Low-Latency HLS: each rendition's live playlist and the
//! bytes of the init segments and parts it lists. The session writes (a map insert under
//! a lock, no I/O), HTTP reads; a watch channel wakes the requests held for the next
//! part, so a held request costs a waker, not a thread.
//!
//! Bounded: a rendition keeps the bytes of what its live playlist lists (the parts of
//! its open and last complete segment) and what the playlist before it listed. An older
//! part is still served, as its byte range of the segment in the data directory: the
//! edge remembers the part sizes of the last segments (a few numbers each).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::thumbnail::ThumbnailSlot;
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
        match old {
            Some(old) => old.close(),
            None => crate::metrics::METRICS.live_edges.inc(),
        }
        stream
    }

    /// The session ended: requests fall back to the data directory.
    pub fn close(&self, path: &str, stream: &Arc<LiveStream>) {
        stream.close();
        let mut streams = write(&self.streams);
        if streams.get(path).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            streams.remove(path);
            crate::metrics::METRICS.live_edges.dec();
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
    /// The stream's picture, made when a viewer asks.
    pub thumbnail: ThumbnailSlot,
    /// Its session lost its publisher and waits for it (the reconnect grace): in a
    /// cluster the encoder may already publish to another node, whose edge is newer.
    awaiting_publisher: AtomicBool,
}

impl Default for LiveStream {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            changed: watch::Sender::new(0),
            thumbnail: ThumbnailSlot::default(),
            awaiting_publisher: AtomicBool::new(false),
        }
    }
}

#[derive(Default)]
struct State {
    renditions: BTreeMap<String, RenditionEdge>,
    /// The newest master playlist (also written to the data directory, for after the
    /// stream): players ask for it often, and it changes rarely.
    master: Option<Bytes>,
    closed: bool,
    /// Its session ended (ENDLIST written, or the path moved away): kept for the
    /// retention, but in a cluster a newer session elsewhere has the path's playlists.
    ended: bool,
}

#[derive(Default)]
struct RenditionEdge {
    playlist: Option<LivePlaylist>,
    files: HashMap<String, Bytes>,
    /// The newest init segment (listed once the first part that needs it is).
    init: Option<String>,
    /// Part sizes of the last segments, by sequence number: where each part lies in its
    /// segment's file.
    part_sizes: BTreeMap<u64, Vec<u32>>,
    /// The newest segment stored in the data directory: its parts (and older ones) are
    /// served from there, not kept here, but for its last part (see [`KeepRule`]).
    stored: Option<u64>,
    /// The playlist as last rendered, without and with a delta update (`_HLS_skip`):
    /// every viewer waiting on a part gets the same bytes, rendered once per change of
    /// any of the stream's playlists (the rendition reports name the others).
    rendered: [OnceLock<Bytes>; 2],
}

/// Which parts stay in memory once the edge's `stored` segment is on disk:
/// parts of later segments, and the stored segment's last part until the open segment
/// has two parts. Players at the live edge all fetch that part as the segment closes,
/// just when every stream cutting at once writes its files: read from disk then, it
/// reached some viewers 0.1 to 0.5 s after others (`cargo bench --bench viewers`, 10
/// streams). Two parts into the next segment no player at the edge wants it any more,
/// so a stream holds it for 0.4 s of every segment, not the whole segment.
#[derive(Clone, Copy)]
struct KeepRule {
    stored: Option<u64>,
    /// The stored segment's last part, while it stays.
    last: Option<usize>,
}

impl KeepRule {
    fn of(edge: &RenditionEdge) -> Self {
        let stored = edge.stored;
        let open_parts = (edge.playlist.as_ref())
            .and_then(|p| p.open.as_ref())
            .map_or(0, |o| o.parts.len());
        let last = stored
            .and_then(|s| edge.part_sizes.get(&s))
            .map(|sizes| sizes.len().saturating_sub(1))
            .filter(|_| open_parts < 2);
        Self { stored, last }
    }

    fn kept(self, name: &str) -> bool {
        let (Some((_, msn, index)), Some(stored)) = (parse_part(name), self.stored) else {
            return true;
        };
        msn > stored || (msn == stored && Some(index) == self.last)
    }
}

/// A playlist request's answer, now.
#[derive(Debug, PartialEq)]
pub enum PlaylistLookup {
    Ready(Bytes),
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

    /// Its session ended; the edge still serves what it made until the retention ends.
    pub fn end(&self) {
        write(&self.state).ended = true;
    }

    pub fn ended(&self) -> bool {
        read(&self.state).ended
    }

    pub fn set_awaiting_publisher(&self, awaiting: bool) {
        self.awaiting_publisher.store(awaiting, Ordering::Relaxed);
    }

    pub fn awaiting_publisher(&self) -> bool {
        self.awaiting_publisher.load(Ordering::Relaxed)
    }

    /// Takes what the packager made for the edge (parts and live playlists, and a copy of
    /// each init segment), wakes the held requests if a playlist changed, and gives back
    /// the rest, in order, for the data directory and S3.
    pub fn take(&self, outputs: Vec<Output>) -> Vec<Output> {
        let (mut changed, mut playlists_changed) = (false, false);
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
                        let before = edge.playlist.replace(*playlist);
                        let rule = KeepRule::of(edge);
                        let now = edge.playlist.as_ref().map(Listed::of);
                        let before = before.as_ref().map(Listed::of);
                        let init = edge.init.as_deref();
                        edge.files.retain(|name, _| {
                            rule.kept(name)
                                && (init == Some(name.as_str())
                                    || now.as_ref().is_some_and(|l| l.lists(name))
                                    || before.as_ref().is_some_and(|l| l.lists(name)))
                        });
                        changed = true;
                        playlists_changed = true;
                    }
                    Output::Thumbnail { ref data } => {
                        self.thumbnail.made(data.clone());
                        changed = true;
                        rest.push(output);
                    }
                    Output::Master { ref text } => {
                        state.master = Some(Bytes::from(text.clone()));
                        rest.push(output);
                    }
                    other => rest.push(other),
                }
            }
            if playlists_changed {
                for edge in state.renditions.values_mut() {
                    edge.rendered = Default::default();
                }
            }
        }
        if changed {
            self.notify();
        }
        rest
    }

    /// `rendition`'s segment `name` (`{epoch}_{msn}.m4s`) is in the data directory now:
    /// its parts leave memory and are served as byte ranges of the file, so a stream
    /// holds only its open segment's parts (the data directory writes each segment as it
    /// closes, a few milliseconds later).
    pub fn segment_stored(&self, rendition: &str, name: &str) {
        let Some(msn) = name
            .strip_suffix(".m4s")
            .and_then(|stem| stem.rsplit_once('_'))
            .and_then(|(_, msn)| msn.parse::<u64>().ok())
        else {
            return;
        };
        let mut state = write(&self.state);
        let Some(edge) = state.renditions.get_mut(rendition) else {
            return;
        };
        if edge.stored.is_some_and(|s| s >= msn) {
            return;
        }
        edge.stored = Some(msn);
        let rule = KeepRule::of(edge);
        edge.files.retain(|name, _| rule.kept(name));
    }

    /// A rendition's playlist for a request with `directives`.
    /// The master playlist, while the stream is live here.
    pub fn master(&self) -> Option<Bytes> {
        let state = read(&self.state);
        if state.closed {
            return None;
        }
        state.master.clone()
    }

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
        let Some(edge) = state.renditions.get(rendition) else {
            return PlaylistLookup::Missing;
        };
        let text = edge.rendered[usize::from(directives.skip)].get_or_init(|| {
            let reports: Vec<RenditionReport> = (state.renditions.iter())
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
            Bytes::from(playlist.render(directives.skip, &reports))
        });
        PlaylistLookup::Ready(text.clone())
    }

    /// Whether the rendition's live playlist lists `name` as a segment or an init
    /// segment (not a gap).
    pub fn lists(&self, rendition: &str, name: &str) -> bool {
        let state = read(&self.state);
        (state.renditions.get(rendition))
            .and_then(|e| e.playlist.as_ref())
            .is_some_and(|p| {
                (p.segments.iter())
                    .any(|s| !s.segment.gap && (s.segment.uri == name || s.segment.map == name))
            })
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

/// What a live playlist lists, for which files stay in memory: the parts of every
/// segment from `parts_from` on (a segment's number is the media sequence plus its
/// place, as in `open_msn`), and the init segments its segments name. Asked for each
/// file at each part: no set of names is built (building one at each part made
/// `LiveStream::take` 6 % of a passthrough stream's CPU samples, against 2.9 % now).
struct Listed<'a> {
    playlist: &'a LivePlaylist,
    parts_from: u64,
}

impl<'a> Listed<'a> {
    fn of(playlist: &'a LivePlaylist) -> Self {
        let parts_from = (playlist.segments.iter())
            .position(|s| !s.parts.is_empty())
            .map_or(playlist.open_msn(), |i| playlist.media_sequence + i as u64);
        Self {
            playlist,
            parts_from,
        }
    }

    fn lists(&self, name: &str) -> bool {
        if let Some(msn) = part_msn(name) {
            return msn >= self.parts_from;
        }
        let segments = self.playlist.segments.iter().map(|s| &s.segment);
        let open = self.playlist.open.iter().map(|o| &o.segment);
        segments.chain(open).any(|s| s.map == name)
    }
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
#[path = "memory_tests.rs"]
mod tests;
