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
    },
    Master {
        master: MasterPlaylist,
    },
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
                } => {
                    let i = recorder.track(&rendition);
                    recorder.tracks[i].segments.push(MediaSegment {
                        uri,
                        map,
                        duration,
                        discontinuity,
                        program_date_time,
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use m3u8_rs::{MediaPlaylistType, Playlist};

    use super::*;
    use crate::hls::playlist::Variant;

    fn init(rendition: &str, name: &str) -> Output {
        Output::Init {
            rendition: rendition.into(),
            name: name.into(),
            data: Bytes::from_static(&[0; 100]),
        }
    }

    fn segment(rendition: &str, seq: u64, init: &str, duration: f64, disc: bool) -> Output {
        Output::Segment {
            rendition: rendition.into(),
            name: format!("7_{seq}.m4s"),
            data: Bytes::from(vec![0; 1000]),
            duration,
            program_date_time: None,
            init: init.into(),
            discontinuity: disc,
        }
    }

    fn parse(text: &str) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist(text.as_bytes()) {
            Ok((_, Playlist::MediaPlaylist(p))) => p,
            _ => panic!("not a media playlist:\n{text}"),
        }
    }

    #[test]
    fn keeps_each_segment_and_its_init_once_and_lists_all_of_them_at_the_end() {
        let mut recorder = Recorder::default();
        let first = recorder.observe(&[
            init("source", "7_0.mp4"),
            segment("source", 0, "7_0.mp4", 2.0, false),
        ]);
        assert_eq!(
            first.iter().map(RecordingOutput::file).collect::<Vec<_>>(),
            ["source/7_0.mp4", JOURNAL, "source/7_0.m4s", JOURNAL],
            "each kept file, then its journal line"
        );
        // The live window slides (a Remove) and the playlist changes: nothing to keep.
        let second = recorder.observe(&[
            segment("source", 1, "7_0.mp4", 2.0, false),
            Output::Remove {
                rendition: "source".into(),
                name: "7_0.m4s".into(),
            },
        ]);
        assert_eq!(
            second.len(),
            2,
            "a segment and its journal line: {second:?}"
        );
        // A restart: a new init, a discontinuity.
        recorder.observe(&[
            init("source", "7_1.mp4"),
            segment("source", 2, "7_1.mp4", 2.6, true),
        ]);
        let summary = recorder.summary();
        assert!((summary.duration_seconds - 6.6).abs() < 1e-9);
        assert_eq!(summary.segments, 3);
        assert_eq!(summary.bytes, 3 * 1000 + 2 * 100);

        let out = recorder.finish(None);
        assert_eq!(out.len(), 1, "no master without one given");
        let RecordingOutput::Playlist { rendition, text } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(rendition, "source");
        let parsed = parse(text);
        assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(parsed.end_list);
        assert_eq!(parsed.target_duration, 3, "2.6 s rounds to 3");
        assert_eq!(parsed.segments.len(), 3);
        assert!(parsed.segments[2].discontinuity);
        assert_eq!(
            parsed.segments[2].map.as_ref().map(|m| m.uri.as_str()),
            Some("7_1.mp4")
        );
    }

    fn one_variant(uri: &str, bandwidth: u64) -> MasterPlaylist {
        MasterPlaylist {
            variants: vec![Variant {
                uri: uri.into(),
                bandwidth,
                average_bandwidth: None,
                codecs: "avc1.64001f".into(),
                resolution: Some((320, 240)),
                frame_rate: None,
            }],
        }
    }

    #[test]
    fn the_journal_replays_to_the_same_playlists() {
        let mut recorder = Recorder::default();
        let mut journal = Vec::new();
        let mut note = |outputs: Vec<RecordingOutput>| {
            journal.extend(outputs.into_iter().filter_map(|o| match o {
                RecordingOutput::Journal(entry) => Some(entry),
                _ => None,
            }));
        };
        note(recorder.observe(&[
            init("source", "7_0.mp4"),
            segment("source", 0, "7_0.mp4", 2.0, false),
        ]));
        note(
            recorder
                .note_master(one_variant("source/index.m3u8", 900))
                .into_iter()
                .collect(),
        );
        // Same offer, new bandwidth: not written down again so soon.
        assert!(
            recorder
                .note_master(one_variant("source/index.m3u8", 950))
                .is_none()
        );
        note(recorder.observe(&[
            init("source", "7_1.mp4"),
            segment("source", 1, "7_1.mp4", 1.5, true),
        ]));
        // Through JSON, as the journal file has it.
        let lines: Vec<String> = journal
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let entries = lines.iter().map(|l| serde_json::from_str(l).unwrap());
        let (replayed, master) = Recorder::replay(entries);
        assert_eq!(replayed.summary(), recorder.summary());
        assert_eq!(
            replayed.finish(master.clone()),
            recorder.finish(master),
            "the same playlists"
        );
    }

    #[test]
    fn a_replayed_master_offers_only_what_was_recorded() {
        let mut master = one_variant("source/index.m3u8", 900);
        master
            .variants
            .extend(one_variant("360p/index.m3u8", 400).variants);
        let entries = vec![
            JournalEntry::Master { master },
            JournalEntry::Segment {
                rendition: "source".into(),
                uri: "7_0.m4s".into(),
                map: "7_0.mp4".into(),
                duration: 2.0,
                discontinuity: false,
                program_date_time: None,
                bytes: 1,
            },
        ];
        let (_, master) = Recorder::replay(entries);
        let uris: Vec<String> = master
            .unwrap()
            .variants
            .into_iter()
            .map(|v| v.uri)
            .collect();
        assert_eq!(uris, ["source/index.m3u8"]);
    }

    #[test]
    fn a_first_segment_after_a_takeover_starts_the_recording_cleanly() {
        let mut recorder = Recorder::default();
        recorder.observe(&[
            init("source", "9_0.mp4"),
            segment("source", 40, "9_0.mp4", 2.0, true),
        ]);
        let out = recorder.finish(None);
        let RecordingOutput::Playlist { text, .. } = &out[0] else {
            panic!()
        };
        assert!(!text.contains("DISCONTINUITY\n"), "{text}");
    }

    #[test]
    fn every_rendition_gets_a_playlist_and_the_master_comes_last() {
        let mut recorder = Recorder::default();
        assert!(recorder.is_empty());
        recorder.observe(&[
            init("source", "7_0.mp4"),
            segment("source", 0, "7_0.mp4", 2.0, false),
            init("360p", "7_0.mp4"),
            segment("360p", 0, "7_0.mp4", 2.0, false),
        ]);
        assert_eq!(recorder.renditions(), ["source", "360p"]);
        let master = MasterPlaylist {
            variants: vec![Variant {
                uri: "source/index.m3u8".into(),
                bandwidth: 1,
                average_bandwidth: None,
                codecs: "avc1.64001f".into(),
                resolution: None,
                frame_rate: None,
            }],
        };
        let out = recorder.finish(Some(master));
        let files: Vec<String> = out.iter().map(RecordingOutput::file).collect();
        assert_eq!(
            files,
            ["source/index.m3u8", "360p/index.m3u8", "master.m3u8"]
        );
        assert_eq!(recorder.summary().duration_seconds, 2.0, "the source's");
    }
}
