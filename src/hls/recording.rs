//! A recording of one broadcast: every segment the stream's renditions made, kept after
//! it leaves the live window, and the VOD playlists (`EXT-X-PLAYLIST-TYPE:VOD`) that list
//! them all once the broadcast ends.
//!
//! Pure: fed the packager's outputs in order, the [`Recorder`] says which of the stream's
//! files to keep, and at the end what playlists to write. The recording's files mirror
//! the stream's layout (`{rendition}/{name}`, `{rendition}/index.m3u8`, `master.m3u8`),
//! so the segments are kept under their own names (a hard link locally, a server-side
//! copy in S3) and nothing is muxed twice.
//!
//! What is kept is also written down as it happens, in a journal beside the recording
//! ([`JournalEntry`], one JSON line each): a recording whose node died before the
//! broadcast ended is finished from it when the node starts again ([`Recorder::replay`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::packager::Output;
use super::playlist::{MasterPlaylist, MediaPlaylist, MediaSegment};

/// The journal's file name inside a recording.
pub const JOURNAL: &str = "journal.jsonl";
/// The master is written down again after this many unchanged ones (its bandwidths are
/// measured as the broadcast goes on).
const MASTER_EVERY: u32 = 30;

/// One line of a recording's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    Init {
        rendition: String,
        name: String,
        bytes: u64,
    },
    Segment {
        rendition: String,
        uri: String,
        map: String,
        duration: f64,
        discontinuity: bool,
        #[serde(with = "time::serde::rfc3339::option", default)]
        program_date_time: Option<OffsetDateTime>,
        bytes: u64,
        /// Starts with an IDR frame (journals written before Kawa said: taken as not).
        #[serde(default)]
        independent: bool,
    },
    Master {
        master: MasterPlaylist,
    },
}

/// A rendition's name as Kawa makes them (`source`, `360p`).
fn is_rendition(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A file name Kawa writes (`{epoch}_{n}.m4s`): nothing that leaves its folder.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl JournalEntry {
    /// Whether an entry another node wrote (in a cluster, read from Redis) is one Kawa
    /// could have written: names of its own shape, sane numbers, nothing that would put
    /// a line of its own into a playlist.
    pub fn is_sound(&self) -> bool {
        match self {
            Self::Init {
                rendition, name, ..
            } => is_rendition(rendition) && is_file_name(name),
            Self::Segment {
                rendition,
                uri,
                map,
                duration,
                ..
            } => {
                is_rendition(rendition)
                    && is_file_name(uri)
                    && is_file_name(map)
                    && duration.is_finite()
                    && (0.0..=3600.0).contains(duration)
            }
            Self::Master { master } => {
                master.variants.len() <= 32
                    && master.variants.iter().all(|v| {
                        v.uri.strip_suffix("/index.m3u8").is_some_and(is_rendition)
                            && v.codecs.len() <= 128
                            && v.codecs
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b',')
                            && v.frame_rate.is_none_or(|f| f.is_finite() && f > 0.0)
                    })
            }
        }
    }
}

/// The entries whose files are still to be had (`present(rendition, name)`): a node
/// that died took the files it had not uploaded yet with it. A segment after one that
/// is gone is marked with a discontinuity. Also gives how many segments were left out.
pub fn keep_present(
    entries: Vec<JournalEntry>,
    present: impl Fn(&str, &str) -> bool,
) -> (Vec<JournalEntry>, usize) {
    let mut gap_in: Vec<String> = Vec::new();
    let mut dropped = 0;
    let kept = entries
        .into_iter()
        .filter_map(|entry| match entry {
            JournalEntry::Init {
                ref rendition,
                ref name,
                ..
            } => present(rendition, name).then_some(entry),
            JournalEntry::Segment {
                rendition,
                uri,
                map,
                duration,
                discontinuity,
                program_date_time,
                bytes,
                independent,
            } => {
                if !(present(&rendition, &uri) && present(&rendition, &map)) {
                    dropped += 1;
                    if !gap_in.contains(&rendition) {
                        gap_in.push(rendition);
                    }
                    return None;
                }
                let after_gap = gap_in
                    .iter()
                    .position(|r| *r == rendition)
                    .map(|i| gap_in.swap_remove(i));
                Some(JournalEntry::Segment {
                    discontinuity: discontinuity || after_gap.is_some(),
                    rendition,
                    uri,
                    map,
                    duration,
                    program_date_time,
                    bytes,
                    independent,
                })
            }
            master @ JournalEntry::Master { .. } => Some(master),
        })
        .collect();
    (kept, dropped)
}

/// What a recording asks its sinks to do, in order, after the stream's own outputs of
/// the same batch.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingOutput {
    /// Keep the stream's `{rendition}/{name}` (just stored) in the recording.
    Keep { rendition: String, name: String },
    /// The recording's `{rendition}/index.m3u8`.
    Playlist { rendition: String, text: String },
    /// The recording's `master.m3u8`.
    Master { text: String },
    /// A line for the recording's journal (kept locally only).
    Journal(JournalEntry),
}

impl RecordingOutput {
    /// Where it goes inside the recording.
    pub fn file(&self) -> String {
        match self {
            Self::Keep { rendition, name } => format!("{rendition}/{name}"),
            Self::Playlist { rendition, .. } => format!("{rendition}/index.m3u8"),
            Self::Master { .. } => "master.m3u8".to_owned(),
            Self::Journal(_) => JOURNAL.to_owned(),
        }
    }
}

/// A recording's outputs for one batch of the stream's: `id` names the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingBatch {
    pub id: u64,
    pub outputs: Vec<RecordingOutput>,
}

/// What a recording holds so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingSummary {
    /// Seconds of the first rendition (the source).
    pub duration_seconds: f64,
    /// Segments of every rendition.
    pub segments: u64,
    /// Bytes of every kept file.
    pub bytes: u64,
    pub renditions: Vec<String>,
}

#[derive(Debug)]
struct Track {
    rendition: String,
    segments: Vec<MediaSegment>,
    /// Init segments kept so far.
    inits: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Recorder {
    tracks: Vec<Track>,
    /// Sizes of the init segments written but not kept yet: (rendition, name, bytes).
    init_sizes: Vec<(String, String, u64)>,
    bytes: u64,
    /// The master last written to the journal, and how many came since.
    journaled_master: Option<MasterPlaylist>,
    masters_since: u32,
}

/// A variant's URI, CODECS and RESOLUTION.
type VariantShape<'a> = (&'a str, &'a str, Option<(u32, u32)>);

/// What a master says but its bandwidths: what players need to pick a variant.
fn shape(master: &MasterPlaylist) -> Vec<VariantShape<'_>> {
    master
        .variants
        .iter()
        .map(|v| (v.uri.as_str(), v.codecs.as_str(), v.resolution))
        .collect()
}

impl Recorder {
    /// Takes note of a batch of the stream's outputs: what of it to keep.
    pub fn observe(&mut self, outputs: &[Output]) -> Vec<RecordingOutput> {
        let mut keep = Vec::new();
        for output in outputs {
            match output {
                Output::Init {
                    rendition,
                    name,
                    data,
                } => self
                    .init_sizes
                    .push((rendition.clone(), name.clone(), data.len() as u64)),
                Output::Segment {
                    rendition,
                    name,
                    data,
                    duration,
                    program_date_time,
                    init,
                    discontinuity,
                    independent,
                } => {
                    let index = self.track(rendition);
                    if !self.tracks[index].inits.contains(init) {
                        let bytes = match self
                            .init_sizes
                            .iter()
                            .position(|(r, n, _)| r == rendition && n == init)
                        {
                            Some(i) => self.init_sizes.swap_remove(i).2,
                            None => 0,
                        };
                        self.bytes += bytes;
                        self.tracks[index].inits.push(init.clone());
                        keep.push(RecordingOutput::Keep {
                            rendition: rendition.clone(),
                            name: init.clone(),
                        });
                        keep.push(RecordingOutput::Journal(JournalEntry::Init {
                            rendition: rendition.clone(),
                            name: init.clone(),
                            bytes,
                        }));
                    }
                    let track = &mut self.tracks[index];
                    track.segments.push(MediaSegment {
                        uri: name.clone(),
                        map: init.clone(),
                        duration: *duration,
                        // A recording starts with its own first segment, whatever came
                        // before it on the path.
                        discontinuity: *discontinuity && !track.segments.is_empty(),
                        program_date_time: *program_date_time,
                        independent: *independent,
                        gap: false,
                    });
                    self.bytes += data.len() as u64;
                    let segment = track.segments.last().cloned();
                    keep.push(RecordingOutput::Keep {
                        rendition: rendition.clone(),
                        name: name.clone(),
                    });
                    if let Some(s) = segment {
                        keep.push(RecordingOutput::Journal(JournalEntry::Segment {
                            rendition: rendition.clone(),
                            uri: s.uri,
                            map: s.map,
                            duration: s.duration,
                            discontinuity: s.discontinuity,
                            program_date_time: s.program_date_time,
                            bytes: data.len() as u64,
                            independent: s.independent,
                        }));
                    }
                }
                _ => {}
            }
        }
        keep
    }

    fn track(&mut self, rendition: &str) -> usize {
        match self.tracks.iter().position(|t| t.rendition == rendition) {
            Some(i) => i,
            None => {
                self.tracks.push(Track {
                    rendition: rendition.to_owned(),
                    segments: Vec::new(),
                    inits: Vec::new(),
                });
                self.tracks.len() - 1
            }
        }
    }

    /// The stream's master now (over the recorded renditions): written to the journal
    /// when what it offers changed, and every so often for its bandwidths.
    pub fn note_master(&mut self, master: MasterPlaylist) -> Option<RecordingOutput> {
        self.masters_since += 1;
        let changed = self
            .journaled_master
            .as_ref()
            .is_none_or(|m| shape(m) != shape(&master));
        if master.variants.is_empty() || !(changed || self.masters_since >= MASTER_EVERY) {
            return None;
        }
        self.masters_since = 0;
        self.journaled_master = Some(master.clone());
        Some(RecordingOutput::Journal(JournalEntry::Master { master }))
    }

    /// A recorder as the journal left it, and the last master it wrote down: to finish
    /// a recording whose broadcast never got to end.
    pub fn replay(
        entries: impl IntoIterator<Item = JournalEntry>,
    ) -> (Self, Option<MasterPlaylist>) {
        let mut recorder = Self::default();
        let mut master = None;
        for entry in entries {
            match entry {
                JournalEntry::Init {
                    rendition,
                    name,
                    bytes,
                } => {
                    let i = recorder.track(&rendition);
                    recorder.tracks[i].inits.push(name);
                    recorder.bytes += bytes;
                }
                JournalEntry::Segment {
                    rendition,
                    uri,
                    map,
                    duration,
                    discontinuity,
                    program_date_time,
                    bytes,
                    independent,
                } => {
                    let i = recorder.track(&rendition);
                    recorder.tracks[i].segments.push(MediaSegment {
                        uri,
                        map,
                        duration,
                        discontinuity,
                        program_date_time,
                        independent,
                        gap: false,
                    });
                    recorder.bytes += bytes;
                }
                JournalEntry::Master { master: m } => master = Some(m),
            }
        }
        // Only what was recorded is offered.
        recorder.tracks.retain(|t| !t.segments.is_empty());
        let names = recorder.renditions();
        let master = master.map(|mut m| {
            m.variants.retain(|v| {
                v.uri
                    .strip_suffix("/index.m3u8")
                    .is_some_and(|r| names.iter().any(|n| n == r))
            });
            m
        });
        (recorder, master)
    }

    /// When the last segment of the first rendition ended (by its program date time).
    pub fn ended_at(&self) -> Option<OffsetDateTime> {
        let last = self.tracks.first()?.segments.last()?;
        Some(last.program_date_time? + time::Duration::seconds_f64(last.duration))
    }

    /// Bytes of every kept file so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// No segment recorded yet.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    pub fn summary(&self) -> RecordingSummary {
        RecordingSummary {
            duration_seconds: self
                .tracks
                .first()
                .map_or(0.0, |t| t.segments.iter().map(|s| s.duration).sum()),
            segments: self.tracks.iter().map(|t| t.segments.len() as u64).sum(),
            bytes: self.bytes,
            renditions: self.renditions(),
        }
    }

    /// The renditions with recorded segments, in the order they first had one.
    pub fn renditions(&self) -> Vec<String> {
        self.tracks.iter().map(|t| t.rendition.clone()).collect()
    }

    /// The broadcast ended: every rendition's VOD playlist, then `master` (the stream's
    /// master over the recorded renditions) when there is one.
    pub fn finish(&self, master: Option<MasterPlaylist>) -> Vec<RecordingOutput> {
        let mut out: Vec<RecordingOutput> = self
            .tracks
            .iter()
            .map(|t| RecordingOutput::Playlist {
                rendition: t.rendition.clone(),
                text: vod_playlist(&t.segments).render(),
            })
            .collect();
        if let Some(master) = master.filter(|m| !m.variants.is_empty()) {
            out.push(RecordingOutput::Master {
                text: master.render(),
            });
        }
        out
    }
}

fn vod_playlist(segments: &[MediaSegment]) -> MediaPlaylist {
    MediaPlaylist {
        // RFC 8216 §4.3.3.1: every EXTINF, rounded, at most the target duration.
        target_duration: segments
            .iter()
            .map(|s| s.duration.round() as u64)
            .max()
            .unwrap_or(1)
            .max(1),
        media_sequence: 0,
        discontinuity_sequence: 0,
        segments: segments.to_vec(),
        ended: true,
        vod: true,
    }
}
