//! One rendition of a stream: its segmenter, its init segments, and the sliding window
//! of segments its media playlist lists.
//!
//! A rendition is started (again) whenever its timing or decoder configuration starts
//! over: the source on a new publish, a codec change or a clock jump; an encoded rung on
//! every FFmpeg start. A restart after the first segment marks the next segment with
//! `EXT-X-DISCONTINUITY`; a new decoder configuration gets a new init segment.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::low_latency::{LivePlaylist, LiveSegment, OpenSegment, PartInfo};
use super::packager::{Output, RenditionInfo};
use super::playlist::{MediaPlaylist, MediaSegment};
use super::resume::{RenditionState, SegmentRecord};
use crate::media::annexb;
use crate::media::chunks::Chunks;
use crate::media::cmaf::{Part, Segmenter, SegmenterSettings};
use crate::media::fmp4::{self, Fmp4Error};
use crate::media::frame::{AudioConfig, Frame, VideoConfig};
use crate::media::time::TICKS_PER_SECOND;

/// Segments shorter than this say little about the bitrate (the last one of a stream).
const MIN_SECONDS_FOR_PEAK: f64 = 0.5;
/// The last complete segments whose parts the live playlist lists, besides the open
/// one's. Players fetch parts only near the live edge (PART-HOLD-BACK is three parts);
/// RFC 8216bis §4.4.4.9 wants none older than three target durations. One segment keeps
/// the edge in memory small (its parts are what a stream holds beyond the GOP cache).
const SEGMENTS_WITH_PARTS: usize = 1;

/// Where a stream's media time meets the wall clock: PDT of media time `dts` is `wall`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub dts: i64,
    pub wall: OffsetDateTime,
}

impl Anchor {
    fn wall_clock_of(&self, dts: i64) -> OffsetDateTime {
        self.wall + time::Duration::seconds_f64((dts - self.dts) as f64 / TICKS_PER_SECOND as f64)
    }
}

impl Entry {
    fn segment(&self) -> MediaSegment {
        MediaSegment {
            uri: self.name.clone(),
            map: self.init.clone(),
            duration: self.duration,
            discontinuity: self.discontinuity,
            program_date_time: self.program_date_time,
            independent: self.independent,
            gap: self.gap,
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    name: String,
    init: String,
    duration: f64,
    discontinuity: bool,
    program_date_time: Option<OffsetDateTime>,
    independent: bool,
    /// Listed for its number only (`EXT-X-GAP`): a predecessor's, never stored.
    gap: bool,
    parts: Vec<PartInfo>,
}

/// What a (re)start gives a rendition.
#[derive(Debug, Clone)]
pub struct Start {
    /// Known up front for the source; `None` for an encoded rung, whose configuration is
    /// read from its first keyframe.
    pub video: Option<VideoConfig>,
    pub audio: Option<Arc<AudioConfig>>,
    pub anchor: Anchor,
}

#[derive(Debug)]
pub struct Rendition {
    pub info: RenditionInfo,
    /// In the current ladder. A rung the ladder dropped (the source's resolution fell
    /// below it) keeps its playlist but leaves the master.
    pub active: bool,
    epoch: u64,
    settings: SegmenterSettings,
    start: Option<Start>,
    segmenter: Option<Segmenter>,
    /// The current init segment's name.
    init: Option<String>,
    inits: u64,
    open: Vec<Part>,
    /// The next segment follows a restart.
    discontinuity_pending: bool,
    window: VecDeque<Entry>,
    retired: VecDeque<String>,
    pub next_seq: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    bits: u64,
    seconds: f64,
    peak_bps: u64,
}

impl Rendition {
    pub fn new(info: RenditionInfo, epoch: u64, settings: SegmenterSettings) -> Self {
        Self {
            info,
            active: true,
            epoch,
            settings,
            start: None,
            segmenter: None,
            init: None,
            inits: 0,
            open: Vec::new(),
            discontinuity_pending: false,
            window: VecDeque::new(),
            retired: VecDeque::new(),
            next_seq: 0,
            media_sequence: 0,
            discontinuity_sequence: 0,
            bits: 0,
            seconds: 0.0,
            peak_bps: 0,
        }
    }

    /// Forgets the measured bitrate (the ladder changed: a new picture).
    pub fn reset_bitrate(&mut self) {
        self.bits = 0;
        self.seconds = 0.0;
        self.peak_bps = 0;
    }

    /// Starts the rendition over; what was open is finished first.
    pub fn restart(&mut self, start: Start, out: &mut Vec<Output>) -> Result<(), Fmp4Error> {
        self.finish(out)?;
        if self.next_seq > 0 {
            self.discontinuity_pending = true;
        }
        self.segmenter = None;
        self.start = Some(start);
        if self.has_video_config() || !self.info.has_video {
            self.begin(out)?;
        }
        Ok(())
    }

    fn has_video_config(&self) -> bool {
        self.start.as_ref().is_some_and(|s| s.video.is_some())
    }

    /// Writes the init segment and makes the segmenter, once the configuration is known.
    fn begin(&mut self, out: &mut Vec<Output>) -> Result<(), Fmp4Error> {
        let Some(start) = &self.start else {
            return Ok(());
        };
        let video = start.video.as_ref();
        let asc = start.audio.as_ref().map(|a| &a.asc);
        let data = fmp4::init_segment(video, asc)?;
        if let Some(v) = video {
            self.info.video_codec = Some(v.codec_string());
            let info = v.info();
            self.info.resolution = Some((info.width, info.height));
            self.info.frame_rate = self.info.frame_rate.or(info.frame_rate);
        }
        let name = format!("{}_{}.mp4", self.epoch, self.inits);
        self.inits += 1;
        out.push(Output::Init {
            rendition: self.info.name.clone(),
            name: name.clone(),
            data: Bytes::from(data),
        });
        self.init = Some(name);
        self.segmenter = Some(Segmenter::new(
            self.settings,
            video.map(VideoConfig::codec),
            asc.map(|a| a.sample_rate),
        ));
        Ok(())
    }

    pub fn push(&mut self, frame: Frame, out: &mut Vec<Output>) -> Result<(), Fmp4Error> {
        if self.segmenter.is_none() {
            // An encoded rung: its decoder configuration is in its first keyframe.
            let Frame::Video(v) = &frame else {
                return Ok(());
            };
            let Some(start) = self.start.as_mut() else {
                return Ok(());
            };
            if !v.keyframe {
                return Ok(());
            }
            let Ok(config) = annexb::decoder_config(&v.data) else {
                return Ok(());
            };
            start.video = Some(VideoConfig::Avc(config));
            self.begin(out)?;
        }
        let part = match self.segmenter.as_mut() {
            Some(s) => s.push(frame)?,
            None => None,
        };
        if let Some(part) = part {
            self.take_part(part, out);
        }
        Ok(())
    }

    /// Finishes the open segment (the input ended or starts over).
    pub fn finish(&mut self, out: &mut Vec<Output>) -> Result<(), Fmp4Error> {
        let part = match self.segmenter.as_mut() {
            Some(s) => s.flush()?,
            None => None,
        };
        if let Some(part) = part {
            self.take_part(part, out);
        }
        Ok(())
    }

    fn take_part(&mut self, part: Part, out: &mut Vec<Output>) {
        let ends = part.ends_segment;
        out.push(Output::Part {
            rendition: self.info.name.clone(),
            name: self.part_name(self.next_seq, self.open.len()),
            data: part.data.clone(),
        });
        self.open.push(part);
        if ends {
            self.close_segment(out);
        }
    }

    /// The open segment is complete: its parts joined are the segment.
    fn close_segment(&mut self, out: &mut Vec<Output>) {
        let parts = std::mem::take(&mut self.open);
        let (Some(first), Some(init)) = (parts.first(), self.init.clone()) else {
            return;
        };
        let start = first.start;
        let independent = first.independent;
        let ticks: i64 = parts.iter().map(|p| p.duration).sum();
        let duration = ticks as f64 / TICKS_PER_SECOND as f64;
        let data = Chunks::new(parts.iter().map(|p| p.data.clone()).collect());
        let bits = data.len() as u64 * 8;
        self.bits += bits;
        self.seconds += duration;
        if duration >= MIN_SECONDS_FOR_PEAK {
            self.peak_bps = self.peak_bps.max((bits as f64 / duration) as u64);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let name = format!("{}_{seq}.m4s", self.epoch);
        let parts = self.part_infos(seq, &parts);
        let program_date_time = self.start.as_ref().map(|s| s.anchor.wall_clock_of(start));
        let discontinuity = std::mem::take(&mut self.discontinuity_pending);
        out.push(Output::Segment {
            rendition: self.info.name.clone(),
            name: name.clone(),
            data,
            duration,
            program_date_time,
            init: init.clone(),
            discontinuity,
            independent,
        });
        self.window.push_back(Entry {
            seq,
            name,
            init,
            duration,
            discontinuity,
            program_date_time,
            independent,
            gap: false,
            parts,
        });
    }

    /// Parts are named after their segment: `{epoch}_{msn}_{index}.m4s`.
    fn part_name(&self, msn: u64, index: usize) -> String {
        format!("{}_{msn}_{index}.m4s", self.epoch)
    }

    fn part_infos(&self, msn: u64, parts: &[Part]) -> Vec<PartInfo> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartInfo {
                uri: self.part_name(msn, i),
                duration: p.duration as f64 / TICKS_PER_SECOND as f64,
                independent: p.independent,
            })
            .collect()
    }

    /// The first segment of the window whose parts the live playlist lists: the last
    /// [`SEGMENTS_WITH_PARTS`], or, when the encoder's keyframes are further apart than
    /// that, from the segment before the newest part that starts with one. An LL-HLS
    /// player starts at an `INDEPENDENT` part and goes on part by part only while each
    /// part follows one it loaded as a part (hls.js: `getNextPart`); without the parts
    /// back to a keyframe it loads whole segments, and waits for each to complete.
    /// That keeps parts listed past the three target durations RFC 8216bis §6.2.2 says
    /// they SHOULD go after, but only for encoders that leave nothing else to start at.
    /// The window bounds it, and the parts of a segment that left memory are served from
    /// its file, so it costs no memory.
    fn first_segment_with_parts(&self) -> usize {
        let newest = self.window.len().saturating_sub(SEGMENTS_WITH_PARTS);
        if self.open.iter().any(|p| p.independent) {
            return newest;
        }
        let keyframe = self
            .window
            .iter()
            .rposition(|e| e.parts.iter().any(|p| p.independent));
        match keyframe {
            // The segment before it too: hls.js loads parts only once its buffer
            // reaches past the first listed part (`shouldLoadParts`).
            Some(k) => newest.min(k.saturating_sub(1)),
            // None to start at: players may start at any part (hls.js does when no part
            // is INDEPENDENT), so the usual few suffice.
            None => newest,
        }
    }

    /// The longest part this rendition cuts, once its frame duration is known.
    pub fn part_target(&self) -> Option<i64> {
        self.segmenter.as_ref().and_then(Segmenter::part_target)
    }

    /// The playlist with parts, for LL-HLS viewers (`part_target` in seconds).
    pub fn live_playlist(
        &self,
        target_duration: u64,
        part_target: f64,
        ended: bool,
    ) -> LivePlaylist {
        let with_parts = self.first_segment_with_parts();
        let segments = self
            .window
            .iter()
            .enumerate()
            .map(|(i, e)| LiveSegment {
                segment: e.segment(),
                parts: if i >= with_parts {
                    e.parts.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let open = match (self.open.first(), &self.init) {
            (Some(first), Some(init)) if !ended => Some(OpenSegment {
                segment: MediaSegment {
                    uri: format!("{}_{}.m4s", self.epoch, self.next_seq),
                    map: init.clone(),
                    duration: 0.0,
                    discontinuity: self.discontinuity_pending,
                    program_date_time: self
                        .start
                        .as_ref()
                        .map(|s| s.anchor.wall_clock_of(first.start)),
                    independent: first.independent,
                    gap: false,
                },
                parts: self.part_infos(self.next_seq, &self.open),
            }),
            _ => None,
        };
        LivePlaylist {
            target_duration,
            part_target,
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            segments,
            open,
            preload_hint: (!ended && self.segmenter.is_some())
                .then(|| self.part_name(self.next_seq, self.open.len())),
            ended,
        }
    }

    /// Slides the window to `size` segments; what leaves it is deleted a window later
    /// (players that loaded the previous playlist may still fetch it).
    pub fn slide(&mut self, size: usize, out: &mut Vec<Output>) {
        while self.window.len() > size {
            let Some(gone) = self.window.pop_front() else {
                break;
            };
            self.media_sequence = gone.seq + 1;
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
            self.retired.push_back(gone.name);
            let init_still_listed = self.window.iter().any(|e| e.init == gone.init)
                || self.init.as_deref() == Some(gone.init.as_str());
            if !init_still_listed && !self.retired.contains(&gone.init) {
                self.retired.push_back(gone.init);
            }
        }
        while self.retired.len() > size {
            let Some(name) = self.retired.pop_front() else {
                break;
            };
            out.push(Output::Remove {
                rendition: self.info.name.clone(),
                name,
            });
        }
    }

    pub fn playlist(&self, target_duration: u64, ended: bool) -> MediaPlaylist {
        MediaPlaylist {
            target_duration,
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            segments: self.window.iter().map(Entry::segment).collect(),
            ended,
            vod: false,
        }
    }

    /// What a successor needs to continue this playlist.
    pub fn snapshot(&self) -> RenditionState {
        RenditionState {
            name: self.info.name.clone(),
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            segments: self
                .window
                .iter()
                .map(|e| SegmentRecord {
                    uri: e.name.clone(),
                    init: e.init.clone(),
                    duration: e.duration,
                    discontinuity: e.discontinuity,
                    program_date_time: e.program_date_time,
                    independent: e.independent,
                    gap: e.gap,
                })
                .collect(),
        }
    }

    /// Continues a predecessor's playlist (before this rendition's first start): its
    /// segments stay listed, the sequence numbers go on, and this rendition's first
    /// segment is marked with a discontinuity.
    pub fn resume(&mut self, state: &RenditionState) {
        self.media_sequence = state.media_sequence;
        self.discontinuity_sequence = state.discontinuity_sequence;
        self.window = state
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| Entry {
                seq: state.media_sequence + i as u64,
                name: s.uri.clone(),
                init: s.init.clone(),
                duration: s.duration,
                discontinuity: s.discontinuity,
                program_date_time: s.program_date_time,
                independent: s.independent,
                gap: s.gap,
                parts: Vec::new(),
            })
            .collect();
        self.next_seq = state.next_msn();
        self.discontinuity_pending = self.next_seq > 0;
    }

    pub fn has_segments(&self) -> bool {
        !self.window.is_empty()
    }

    /// Peak and average bits per second over the segments since the last reset.
    pub fn bandwidth(&self) -> (u64, Option<u64>) {
        let average = (self.seconds > 0.0).then(|| (self.bits as f64 / self.seconds) as u64);
        (self.peak_bps.max(average.unwrap_or(0)), average)
    }

    /// Every file this rendition wrote that may still be on disk.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .window
            .iter()
            .flat_map(|e| [e.name.clone(), e.init.clone()])
            .chain(self.retired.iter().cloned())
            .chain(self.init.clone())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
