//! Kawa's HLS for one stream: every rendition packaged as CMAF from typed frames (the
//! source's from ingest, the encoded rungs' from FFmpeg's output), and the playlists
//! that list them. Kawa's media sequence counts on across restarts; a rendition that
//! starts over marks its next segment with `EXT-X-DISCONTINUITY`.
//!
//! Pure: calls return [`Output`]s that the session performs in order (a segment is
//! always written before the playlist that lists it).

use bytes::Bytes;
use time::OffsetDateTime;

use super::low_latency::LivePlaylist;
use super::playlist::{MasterPlaylist, MediaPlaylist, Variant};
use super::rendition::Rendition;
pub use super::rendition::{Anchor, Start};
use super::resume::PathState;
use crate::media::chunks::Chunks;
use crate::media::cmaf::SegmenterSettings;
use crate::media::fmp4::Fmp4Error;
use crate::media::frame::Frame;

/// What the packager asks its caller to do, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Store an init segment under `{rendition}/{name}`.
    Init {
        rendition: String,
        name: String,
        data: Bytes,
    },
    /// Store a media segment under `{rendition}/{name}`.
    Segment {
        rendition: String,
        name: String,
        /// Its parts, as served at the live edge.
        data: Chunks,
        /// Seconds.
        duration: f64,
        /// Ingest time of its first frame.
        program_date_time: Option<OffsetDateTime>,
        /// The init segment it needs (`EXT-X-MAP`), in the same rendition.
        init: String,
        /// It follows a restart of its rendition (`EXT-X-DISCONTINUITY`).
        discontinuity: bool,
        /// It starts with an IDR frame.
        independent: bool,
    },
    /// A part of `{rendition}`'s open segment, named `{epoch}_{msn}_{index}.m4s`: for
    /// the live edge in memory only (the segment it goes into is stored whole).
    Part {
        rendition: String,
        name: String,
        data: Bytes,
    },
    /// `{rendition}`'s playlist with parts changed: for the live edge in memory.
    Live {
        rendition: String,
        playlist: Box<LivePlaylist>,
    },
    /// Store `{rendition}/index.m3u8` (the plain playlist: no parts).
    Playlist { rendition: String, text: String },
    /// Store `master.m3u8`.
    Master { text: String },
    /// Store `thumbnail.jpg`: a picture of the stream now.
    Thumbnail { data: Bytes },
    /// Delete `{rendition}/{name}`: it left the playlist a whole window ago.
    Remove { rendition: String, name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("unknown rendition `{0}`")]
    UnknownRendition(String),
    #[error("rendition `{rendition}`: {source}")]
    Mux {
        rendition: String,
        source: Fmp4Error,
    },
}

/// What is known of a rendition before its first frame.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionInfo {
    pub name: String,
    /// The video part of CODECS (`avc1.64001f`): from the source's SPS, or from an
    /// encoded rung's own first keyframe.
    pub video_codec: Option<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    pub has_video: bool,
}

/// Kawa's playlists for one stream.
#[derive(Debug)]
pub struct Packager {
    epoch: u64,
    settings: SegmenterSettings,
    window: usize,
    /// Fixed by configuration before the first playlist (the segmenter keeps every
    /// segment within it); a predecessor's, when this stream continues its playlists.
    target_duration: u64,
    /// PART-TARGET in seconds: the first rendition's longest part, fixed for the
    /// stream's life (the rungs share its frame rate).
    part_target: Option<f64>,
    audio_codec: Option<String>,
    renditions: Vec<Rendition>,
    /// A predecessor's playlists, continued by the renditions of the same name as they
    /// are declared.
    resumed: Option<PathState>,
    ended: bool,
    /// The master as last written: it is written again only when what it says changes
    /// (a segment of each rendition used to rewrite it, a file and an upload each).
    written_master: Option<MasterPlaylist>,
    /// Segments longer than the target duration (the encoder's keyframe interval grew).
    pub overlong_segments: u64,
}

impl Packager {
    /// `epoch` makes this stream's file names unique across publishes of the same path
    /// (CDNs cache segments as immutable).
    pub fn new(epoch: u64, settings: SegmenterSettings, window: usize) -> Self {
        Self {
            epoch,
            settings,
            window,
            target_duration: settings.target_duration(),
            part_target: None,
            audio_codec: None,
            renditions: Vec::new(),
            resumed: None,
            ended: false,
            written_master: None,
            overlong_segments: 0,
        }
    }

    /// Declares the ladder (at the first start, and again when it changes). Known
    /// renditions keep their playlists.
    pub fn set_renditions(&mut self, infos: Vec<RenditionInfo>, audio_codec: Option<String>) {
        self.audio_codec = audio_codec;
        for r in &mut self.renditions {
            r.active = infos.iter().any(|i| i.name == r.info.name);
        }
        for info in infos {
            match self
                .renditions
                .iter_mut()
                .find(|r| r.info.name == info.name)
            {
                Some(r) => {
                    r.info.has_video = info.has_video;
                    r.info.frame_rate = info.frame_rate.or(r.info.frame_rate);
                    r.reset_bitrate();
                }
                None => {
                    let mut r = Rendition::new(info, self.epoch, self.settings);
                    if let Some(state) = self
                        .resumed
                        .as_ref()
                        .and_then(|s| s.rendition(&r.info.name))
                    {
                        r.resume(state);
                    }
                    self.renditions.push(r);
                }
            }
        }
    }

    /// The frame rate measured from timestamps, for renditions whose SPS did not say
    /// (encoders may leave out the VUI timing info): FRAME-RATE belongs on every variant.
    pub fn fill_frame_rate(&mut self, fps: f64) {
        for r in &mut self.renditions {
            if r.info.has_video && r.info.frame_rate.is_none() {
                r.info.frame_rate = Some(fps);
            }
        }
    }

    /// Whether any video rendition still lacks a frame rate.
    pub fn needs_frame_rate(&self) -> bool {
        self.renditions
            .iter()
            .any(|r| r.info.has_video && r.info.frame_rate.is_none())
    }

    /// Continues `state`'s playlists (call before the first frame): the same target
    /// duration, and each rendition of the same name goes on from its sequence numbers
    /// and listed segments.
    pub fn resume(&mut self, state: PathState) {
        // The tag may never change for a playlist that goes on; a predecessor with a
        // shorter one (configured differently) cannot bound this node's segments, so the
        // longer of the two holds.
        if let Some(theirs) = state.target_duration {
            self.target_duration = self.target_duration.max(theirs);
        }
        for r in &mut self.renditions {
            if let Some(s) = state.rendition(&r.info.name) {
                r.resume(s);
            }
        }
        self.resumed = Some(state);
    }

    /// What a successor needs to continue these playlists.
    pub fn snapshot(&self) -> PathState {
        PathState {
            // The session says which recording goes on.
            recording: None,
            target_duration: Some(self.target_duration),
            renditions: self
                .renditions
                .iter()
                .map(Rendition::snapshot)
                .chain(
                    // A predecessor's renditions this ladder has not declared (yet).
                    self.resumed.iter().flat_map(|s| {
                        s.renditions
                            .iter()
                            .filter(|p| !self.renditions.iter().any(|r| r.info.name == p.name))
                            .cloned()
                    }),
                )
                .collect(),
        }
    }

    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// The renditions of the current ladder.
    pub fn rendition_names(&self) -> Vec<String> {
        self.renditions
            .iter()
            .filter(|r| r.active)
            .map(|r| r.info.name.clone())
            .collect()
    }

    fn index(&self, name: &str) -> Result<usize, PackagerError> {
        self.renditions
            .iter()
            .position(|r| r.info.name == name)
            .ok_or_else(|| PackagerError::UnknownRendition(name.to_owned()))
    }

    /// Runs `step` on one rendition, then lists what it completed.
    fn with_rendition(
        &mut self,
        name: &str,
        step: impl FnOnce(&mut Rendition, &mut Vec<Output>) -> Result<(), Fmp4Error>,
    ) -> Result<Vec<Output>, PackagerError> {
        let i = self.index(name)?;
        let mut out = Vec::new();
        let result = step(&mut self.renditions[i], &mut out);
        self.announce(i, &mut out);
        result.map_err(|source| PackagerError::Mux {
            rendition: name.to_owned(),
            source,
        })?;
        Ok(out)
    }

    /// Starts `rendition` (again): a new init segment when its configuration is known,
    /// and a discontinuity before its next segment if it had any.
    pub fn start(&mut self, rendition: &str, start: Start) -> Result<Vec<Output>, PackagerError> {
        self.with_rendition(rendition, |r, out| r.restart(start, out))
    }

    /// One frame of `rendition`.
    pub fn push(&mut self, rendition: &str, frame: Frame) -> Result<Vec<Output>, PackagerError> {
        self.with_rendition(rendition, |r, out| r.push(frame, out))
    }

    /// After new parts, the live playlist; after new segments, the window slides, and
    /// the playlist (and the master, once every rendition can be described) are written
    /// after the segments.
    fn announce(&mut self, i: usize, out: &mut Vec<Output>) {
        if self.part_target.is_none() {
            // Written in milliseconds, rounded up: no part may be longer.
            self.part_target = self.renditions[i]
                .part_target()
                .map(|ticks| (ticks as f64 / 90.0).ceil() / 1000.0);
        }
        let new_parts = out.iter().any(|o| matches!(o, Output::Part { .. }));
        self.announce_segments(i, out);
        if new_parts {
            self.announce_live(i, out);
        }
    }

    /// The live playlist appears with the rendition's first complete segment.
    fn announce_live(&self, i: usize, out: &mut Vec<Output>) {
        let rendition = &self.renditions[i];
        if let (true, Some(part_target)) = (rendition.has_segments(), self.part_target) {
            out.push(Output::Live {
                rendition: rendition.info.name.clone(),
                playlist: Box::new(rendition.live_playlist(
                    self.target_duration,
                    part_target,
                    self.ended,
                )),
            });
        }
    }

    fn announce_segments(&mut self, i: usize, out: &mut Vec<Output>) {
        let target = self.target_duration;
        let new_segments: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Segment { duration, .. } => Some(*duration),
                _ => None,
            })
            .collect();
        if new_segments.is_empty() {
            return;
        }
        // None, by the segmenter's rules; counted so that a broken rule shows.
        self.overlong_segments += new_segments
            .iter()
            .filter(|d| d.round() as u64 > target)
            .count() as u64;
        let window = self.window;
        self.renditions[i].slide(window, out);
        if let Some(text) = self.media_playlist(i).map(|p| p.render()) {
            out.push(Output::Playlist {
                rendition: self.renditions[i].info.name.clone(),
                text,
            });
        }
        if let Some(master) = self.master_playlist()
            && master_changed(self.written_master.as_ref(), &master)
        {
            out.push(Output::Master {
                text: master.render(),
            });
            self.written_master = Some(master);
        }
    }

    fn media_playlist(&self, i: usize) -> Option<MediaPlaylist> {
        Some(self.renditions[i].playlist(self.target_duration, self.ended))
    }

    /// The stream ended: the open segments are finished, and every playlist written
    /// again with `EXT-X-ENDLIST`.
    pub fn end(&mut self) -> Vec<Output> {
        // Renditions a predecessor (or the checkpoint a restart went on from) listed and
        // this packager never started end too, as they were: else their last playlist
        // would stay without ENDLIST.
        let unstarted: Vec<_> = (self.resumed.iter())
            .flat_map(|s| s.renditions.iter())
            .filter(|p| !self.renditions.iter().any(|r| r.info.name == p.name))
            .cloned()
            .collect();
        for state in unstarted {
            let info = RenditionInfo {
                name: state.name.clone(),
                video_codec: None,
                resolution: None,
                frame_rate: None,
                has_video: false,
            };
            let mut r = Rendition::new(info, self.epoch, self.settings);
            r.resume(&state);
            self.renditions.push(r);
        }
        let mut out = Vec::new();
        for i in 0..self.renditions.len() {
            let name = self.renditions[i].info.name.clone();
            match self.with_rendition(&name, |r, out| r.finish(out)) {
                Ok(o) => out.extend(o),
                Err(e) => tracing::warn!(error = %e, "last segment lost"),
            }
        }
        self.ended = true;
        for i in 0..self.renditions.len() {
            if !self.renditions[i].has_segments() {
                continue;
            }
            if let Some(playlist) = self.media_playlist(i) {
                out.push(Output::Playlist {
                    rendition: self.renditions[i].info.name.clone(),
                    text: playlist.render(),
                });
            }
            self.announce_live(i, &mut out);
        }
        out
    }

    /// Every file still on disk, for clean-up after the stream.
    pub fn files(&self) -> Vec<(String, String)> {
        self.renditions
            .iter()
            .flat_map(|r| r.files().into_iter().map(|n| (r.info.name.clone(), n)))
            .collect()
    }

    /// A rendition's current playlist.
    pub fn playlist_of(&self, rendition: &str) -> Option<MediaPlaylist> {
        self.media_playlist(self.index(rendition).ok()?)
    }

    /// The master playlist, once every rendition of the ladder has a segment and known
    /// codecs.
    pub fn master_playlist(&self) -> Option<MasterPlaylist> {
        let mut variants = Vec::new();
        for r in self.renditions.iter().filter(|r| r.active) {
            variants.push(self.variant(r)?);
        }
        Some(Self::sorted(variants))
    }

    /// A master over `names` (a recording's renditions), ladder or not; those that
    /// cannot be described are left out.
    pub fn master_of(&self, names: &[String]) -> MasterPlaylist {
        let variants = self
            .renditions
            .iter()
            .filter(|r| names.contains(&r.info.name))
            .filter_map(|r| self.variant(r))
            .collect();
        Self::sorted(variants)
    }

    /// A rendition as the master lists it, once it has a segment and known codecs.
    fn variant(&self, r: &Rendition) -> Option<Variant> {
        if r.next_seq == 0 || (r.info.has_video && r.info.video_codec.is_none()) {
            return None;
        }
        let codecs: Vec<&str> = r
            .info
            .video_codec
            .as_deref()
            .into_iter()
            .chain(self.audio_codec.as_deref())
            .collect();
        let (bandwidth, average_bandwidth) = r.bandwidth();
        Some(Variant {
            uri: format!("{}/index.m3u8", r.info.name),
            bandwidth,
            average_bandwidth,
            codecs: codecs.join(","),
            resolution: r.info.resolution,
            frame_rate: r.info.frame_rate,
        })
    }

    /// Players start with the first variant: the highest bitrate goes first.
    fn sorted(mut variants: Vec<Variant>) -> MasterPlaylist {
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        MasterPlaylist { variants }
    }
}

/// Whether `new` says something `old` does not: another ladder or codecs, a peak above
/// the BANDWIDTH written (it must stay an upper bound), or an average more than 10 %
/// away from the one written. Players read the master once; small drifts are not news.
fn master_changed(old: Option<&MasterPlaylist>, new: &MasterPlaylist) -> bool {
    let Some(old) = old else {
        return true;
    };
    if old.variants.len() != new.variants.len() {
        return true;
    }
    new.variants.iter().any(|n| {
        let Some(o) = old.variants.iter().find(|o| o.uri == n.uri) else {
            return true;
        };
        let drifted = match (o.average_bandwidth, n.average_bandwidth) {
            (Some(a), Some(b)) => a.abs_diff(b) * 10 > a,
            (a, b) => a != b,
        };
        o.codecs != n.codecs
            || o.resolution != n.resolution
            || o.frame_rate != n.frame_rate
            || n.bandwidth > o.bandwidth
            || drifted
    })
}

/// A frame rate measured from millisecond timestamps, snapped to the nearest standard
/// rate within 0.5 % (RTMP's 33/34 ms steps make 29.97 look like 29.96), else rounded to
/// three decimals as FRAME-RATE is written.
pub fn nominal_frame_rate(measured: f64) -> f64 {
    const STANDARD: [f64; 10] = [
        23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 120.0,
    ];
    STANDARD
        .iter()
        .copied()
        .filter(|rate| (measured - rate).abs() / rate < 0.005)
        .min_by(|a, b| (measured - a).abs().total_cmp(&(measured - b).abs()))
        .unwrap_or((measured * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(bandwidth: u64, average: u64) -> MasterPlaylist {
        MasterPlaylist {
            variants: vec![Variant {
                uri: "source/index.m3u8".into(),
                bandwidth,
                average_bandwidth: Some(average),
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((320, 240)),
                frame_rate: Some(25.0),
            }],
        }
    }

    #[test]
    fn the_master_is_written_again_only_when_it_says_something_new() {
        let written = master(1_000_000, 800_000);
        assert!(master_changed(None, &written));
        // A lower peak and a small drift: nothing new.
        assert!(!master_changed(Some(&written), &master(990_000, 840_000)));
        // A peak above what is written, or the average 10 % off.
        assert!(master_changed(Some(&written), &master(1_000_001, 800_000)));
        assert!(master_changed(Some(&written), &master(900_000, 700_000)));
        let mut other = written.clone();
        other.variants[0].resolution = Some((640, 480));
        assert!(master_changed(Some(&written), &other));
    }
}
