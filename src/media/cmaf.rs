//! Cuts one rendition's frames into CMAF parts and segments.
//!
//! Frames in (decode order, 90 kHz), fragments out: each part is one `moof`+`mdat`,
//! and a segment is its parts joined, so nothing is muxed twice.
//!
//! The rules every playlist relies on hold for any input (RFC 8216bis §4.4.3.1,
//! §4.4.4.9): a segment starts at an IDR frame once it is `segment` long, and is cut
//! without one before its duration would round above the target duration (an encoder
//! with 8 s between keyframes, or none at all, still gets segments of the target
//! length); after such a cut the next IDR starts a segment again. A part is never
//! longer than PART-TARGET: it ends where the timestamps stop, and the next part starts
//! where they resume (a gap is in no part's duration; the last video frame before it
//! lasts across it, so the video track has no hole). Bytes are capped too, so a
//! publisher that never sends a keyframe cannot grow a part or a segment without bound.
//!
//! A sample's duration is the distance to the next sample of its track, so a video frame
//! is held until the next one arrives (one frame of delay); audio frames are held until
//! the video cut that passes them. Pure: no clock, no I/O.

use bytes::Bytes;

use super::annexb;
use super::fmp4::{self, Fmp4Error, SampleInfo, TrackFragment};
use super::frame::{AudioFrame, Frame, VideoCodec, VideoForm, VideoFrame};
use super::hevc;
use super::time::{MAX_STEP_FORWARD, TICKS_PER_MS, TICKS_PER_SECOND};

/// Frames held waiting for a cut; an encoder whose timestamps stop moving forward must
/// not grow a part without bound.
const MAX_HELD_FRAMES: usize = 2048;
/// Bytes of media in one part, and in one segment: far above any real stream (a part
/// of 50 Mbit/s video is about 1.3 MB; a 2 s segment, 12.5 MB), low enough that a publisher
/// sending huge frames without timestamps that move holds little (the live edge keeps
/// about two segments of parts).
pub const MAX_PART_BYTES: usize = 4 << 20;
pub const MAX_SEGMENT_BYTES: usize = 16 << 20;
/// AAC frames are 1024 samples.
const AAC_FRAME_SAMPLES: i64 = 1024;

/// One part: a `moof`+`mdat` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub data: Bytes,
    /// Decode time of its first frame of the cutting track (video, else audio), 90 kHz.
    pub start: i64,
    /// 90 kHz.
    pub duration: i64,
    /// Starts with an IDR frame (or is audio-only).
    pub independent: bool,
    /// The last part of its segment.
    pub ends_segment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterSettings {
    /// Target segment length, 90 kHz ticks.
    pub segment: i64,
    /// Part target, 90 kHz ticks.
    pub part: i64,
}

impl SegmenterSettings {
    pub fn from_seconds(segment: f64, part: f64) -> Self {
        Self {
            segment: (segment * TICKS_PER_SECOND as f64).round() as i64,
            part: (part * TICKS_PER_SECOND as f64).round() as i64,
        }
    }

    /// `EXT-X-TARGETDURATION`, fixed by configuration before the first playlist: the
    /// segment length, rounded up to whole seconds.
    pub fn target_duration(&self) -> u64 {
        let seconds = (self.segment + TICKS_PER_SECOND - 1) / TICKS_PER_SECOND;
        seconds.max(1) as u64
    }

    /// The longest segment: its EXTINF, written with milliseconds, still rounds to the
    /// target duration (2.499, not 2.49999 written as 2.500).
    pub fn max_segment(&self) -> i64 {
        self.target_duration() as i64 * TICKS_PER_SECOND + TICKS_PER_SECOND / 2 - TICKS_PER_MS
    }

    /// The most parts in a segment: twice what the longest segment holds of full parts
    /// (parts cut short by gaps or byte caps), so that a live playlist stays small even
    /// when a publisher's timestamps stop moving.
    pub fn max_parts(&self) -> usize {
        ((self.max_segment() / self.part.max(1) + 1) * 2) as usize
    }
}

/// How parts are cut: `frames` per part (the same number in every part), never
/// longer than `limit` (a dropped frame makes a gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartShape {
    frames: usize,
    limit: i64,
}

impl PartShape {
    /// The whole number of frames of `step` ticks nearest the part target, plus room for
    /// millisecond timestamp jitter: every part of steady frames is at least 85 % of the
    /// limit, whatever the frame rate (even one frame per part).
    fn new(part: i64, step: i64) -> Self {
        let frames = ((part + step / 2) / step).max(1);
        let slack = (step / 8).max(2 * TICKS_PER_MS);
        Self {
            frames: frames as usize,
            limit: frames * step + slack,
        }
    }
}

#[derive(Debug)]
pub struct Segmenter {
    settings: SegmenterSettings,
    /// How a video frame becomes a sample.
    video_codec: VideoCodec,
    video_track: Option<u32>,
    audio_track: Option<u32>,
    /// 1024 samples in 90 kHz ticks, for the last audio frame of a part.
    audio_frame_ticks: i64,
    /// Added to every timestamp so that decode times are never negative (MP4's are
    /// unsigned); zero for any stream that starts at or after zero.
    offset: Option<i64>,
    sequence: u32,
    video: Vec<VideoFrame>,
    audio: Vec<AudioFrame>,
    part_start: Option<i64>,
    /// Ticks of the open segment's completed parts (what its EXTINF adds up).
    segment_ticks: i64,
    /// Bytes of the open segment's completed parts, and of the frames held.
    segment_bytes: usize,
    held_bytes: usize,
    /// Completed parts of the open segment: a publisher whose timestamps do not move
    /// still gets segments of a bounded number of parts.
    segment_parts: usize,
    /// The open segment began with an IDR frame (else it was cut at the maximum length,
    /// and the next IDR starts a segment again).
    segment_independent: bool,
    last_video_duration: i64,
    /// Frames per part and the longest part, once the frame duration is known (fixed
    /// for the stream: PART-TARGET may never change).
    part_shape: Option<PartShape>,
    /// Frames dropped because no segment could start with them (before the first IDR).
    pub dropped: u64,
}

impl Segmenter {
    /// `video`: the video track's codec, when the rendition has video;
    /// `audio_sample_rate`: the AAC core rate, when it has audio.
    pub fn new(
        settings: SegmenterSettings,
        video: Option<VideoCodec>,
        audio_sample_rate: Option<u32>,
    ) -> Self {
        let has_video = video.is_some();
        let (video_track, audio_track) = fmp4::track_ids(has_video, audio_sample_rate.is_some());
        let audio_frame_ticks = audio_sample_rate
            .filter(|r| *r > 0)
            .map_or(0, |r| AAC_FRAME_SAMPLES * TICKS_PER_SECOND / i64::from(r));
        Self {
            settings,
            video_codec: video.unwrap_or_default(),
            video_track,
            audio_track,
            audio_frame_ticks,
            offset: None,
            sequence: 0,
            video: Vec::new(),
            audio: Vec::new(),
            part_start: None,
            segment_ticks: 0,
            segment_bytes: 0,
            held_bytes: 0,
            segment_parts: 0,
            segment_independent: true,
            last_video_duration: TICKS_PER_SECOND / 30,
            // Audio only: the frame duration is known from the sample rate.
            part_shape: (!has_video && audio_frame_ticks > 0)
                .then(|| PartShape::new(settings.part, audio_frame_ticks)),
            dropped: 0,
        }
    }

    /// Takes one frame; returns the part it completed, if any.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Part>, Fmp4Error> {
        match frame {
            Frame::Video(v) if self.video_track.is_some() => self.push_video(v),
            Frame::Audio(a) if self.audio_track.is_some() => self.push_audio(a),
            _ => {
                self.dropped += 1;
                Ok(None)
            }
        }
    }

    fn push_video(&mut self, frame: VideoFrame) -> Result<Option<Part>, Fmp4Error> {
        let Some(part_start) = self.part_start else {
            if !frame.keyframe {
                self.dropped += 1;
                return Ok(None);
            }
            // Audio held from before the first keyframe goes in with it if it is
            // close (an encoder's first audio frame often precedes the first video
            // frame by a few ms); older audio has no segment to go in.
            let earliest = frame.dts - self.settings.part;
            let before = self.audio.len();
            self.audio.retain(|a| a.pts >= earliest);
            self.dropped += (before - self.audio.len()) as u64;
            self.held_bytes = self.audio.iter().map(|a| a.data.len()).sum();
            let first = self
                .audio
                .first()
                .map_or(frame.dts, |a| a.pts.min(frame.dts));
            self.offset.get_or_insert((-first).max(0));
            self.start_segment(true);
            self.part_start = Some(frame.dts);
            self.hold_video(frame);
            return Ok(None);
        };
        // Where the held frames end: at this frame, unless the timestamps stopped for
        // longer than a part (an encoder stall, dropped frames): then one frame after
        // the last, and the next part starts at this frame. Never past the part limit:
        // a late frame shortens the last held frame's duration instead.
        let mut held_end = frame.dts;
        if let Some(last) = self.video.last() {
            let step = frame.dts - last.dts;
            let limit = self.part_limit();
            if step > limit {
                held_end = last.dts + self.last_video_duration.min(limit);
            } else if step > 0 {
                self.last_video_duration = step;
                self.part_shape
                    .get_or_insert_with(|| PartShape::new(self.settings.part, step));
            }
        }
        held_end = self.clamp_end(part_start, held_end);
        // The frame cannot join a part that ends before it.
        let gap = held_end < frame.dts;
        let open = self.segment_ticks + (held_end - part_start);
        // A segment may end half a frame short of the target: RTMP's millisecond
        // timestamps make a 2 s GOP 1.999 s as often as 2.001 s. After a cut without a
        // keyframe, the next keyframe starts a segment as soon as a part has passed.
        let at_keyframe = frame.keyframe
            && if self.segment_independent {
                open >= self.settings.segment - self.last_video_duration / 2
            } else {
                open >= self.settings.part
            };
        // Taking this frame (and its duration) must keep the segment's EXTINF within the
        // target duration, and its bytes within the cap.
        let too_long = open + self.last_video_duration > self.settings.max_segment()
            || self.segment_bytes + self.held_bytes + frame.data.len() > MAX_SEGMENT_BYTES;
        let new_segment =
            at_keyframe || too_long || self.segment_parts + 1 >= self.settings.max_parts();
        let part_full =
            gap || self.part_full(
                self.video.len(),
                frame.dts + self.last_video_duration - part_start,
            ) || self.held_bytes + frame.data.len() > MAX_PART_BYTES;
        let cut = new_segment || part_full || self.video.len() >= MAX_HELD_FRAMES;
        let part = if cut {
            self.cut_at(held_end, frame.dts, new_segment, frame.keyframe)?
        } else {
            None
        };
        self.hold_video(frame);
        Ok(part)
    }

    fn hold_video(&mut self, frame: VideoFrame) {
        self.held_bytes += frame.data.len();
        self.video.push(frame);
    }

    fn start_segment(&mut self, independent: bool) {
        self.segment_ticks = 0;
        self.segment_bytes = 0;
        self.segment_parts = 0;
        self.segment_independent = independent;
    }

    fn push_audio(&mut self, frame: AudioFrame) -> Result<Option<Part>, Fmp4Error> {
        if self.video_track.is_some() {
            if self.audio.len() >= MAX_HELD_FRAMES {
                let gone = self.audio.remove(0);
                self.held_bytes = self.held_bytes.saturating_sub(gone.data.len());
                self.dropped += 1;
            }
            self.held_bytes += frame.data.len();
            self.audio.push(frame);
            return Ok(None);
        }
        // Audio only: every frame is a random access point.
        let Some(part_start) = self.part_start else {
            self.offset.get_or_insert((-frame.pts).max(0));
            self.start_segment(true);
            self.part_start = Some(frame.pts);
            self.held_bytes = frame.data.len();
            self.audio.push(frame);
            return Ok(None);
        };
        let frame_ticks = self.audio_frame_ticks;
        let limit = self.part_limit();
        let mut held_end = frame.pts;
        if let Some(last) = self.audio.last()
            && frame.pts - last.pts > limit
        {
            held_end = last.pts + frame_ticks;
        }
        held_end = self.clamp_end(part_start, held_end);
        let gap = held_end < frame.pts;
        let open = self.segment_ticks + (held_end - part_start);
        let new_segment = open >= self.settings.segment - frame_ticks / 2
            || open + frame_ticks > self.settings.max_segment()
            || self.segment_bytes + self.held_bytes + frame.data.len() > MAX_SEGMENT_BYTES
            || self.segment_parts + 1 >= self.settings.max_parts();
        let part_full = gap
            || self.part_full(self.audio.len(), frame.pts + frame_ticks - part_start)
            || self.held_bytes + frame.data.len() > MAX_PART_BYTES;
        let part = if new_segment || part_full || self.audio.len() >= MAX_HELD_FRAMES {
            self.cut_at(held_end, frame.pts, new_segment, true)?
        } else {
            None
        };
        self.held_bytes += frame.data.len();
        self.audio.push(frame);
        Ok(part)
    }

    /// Ends the open part at `end`; the next part (and maybe segment) begins at `next`
    /// (later than `end` after a gap in the timestamps).
    fn cut_at(
        &mut self,
        end: i64,
        next: i64,
        new_segment: bool,
        next_independent: bool,
    ) -> Result<Option<Part>, Fmp4Error> {
        let part = self.cut(end, end, next, new_segment)?;
        self.part_start = Some(next);
        if new_segment {
            self.start_segment(next_independent);
        } else if let Some(p) = &part {
            self.segment_ticks += p.duration;
            self.segment_bytes += p.data.len();
            self.segment_parts += 1;
        }
        Ok(part)
    }

    /// Where the open part may end at the latest: within the part limit, and within the
    /// longest segment (a frame later than expected shortens the last held frame).
    fn clamp_end(&self, part_start: i64, end: i64) -> i64 {
        let segment_end = part_start - self.segment_ticks + self.settings.max_segment();
        end.min(part_start + self.part_limit()).min(segment_end)
    }

    /// The longest a part may be: PART-TARGET once the frame duration is known.
    fn part_limit(&self) -> i64 {
        self.part_shape
            .map_or(self.settings.part + TICKS_PER_MS, |s| s.limit)
    }

    /// Whether the open part, holding `frames`, is complete: it has its number of frames,
    /// or one more frame would take it to `duration_with_next`, past the limit.
    fn part_full(&self, frames: usize, duration_with_next: i64) -> bool {
        self.part_shape.is_some_and(|s| frames >= s.frames)
            || duration_with_next > self.part_limit()
    }

    /// The longest a part can be (PART-TARGET), once known: after the second frame.
    pub fn part_target(&self) -> Option<i64> {
        self.part_shape.map(|s| s.limit)
    }

    /// The input ended (or its timing restarts): the held frames become the last part,
    /// which ends its segment.
    pub fn flush(&mut self) -> Result<Option<Part>, Fmp4Error> {
        let end = match self.video_track {
            Some(_) => self.video.last().map(|v| v.dts + self.last_video_duration),
            None => self.audio.last().map(|a| a.pts + self.audio_frame_ticks),
        };
        let end = end.map(|end| {
            let start = self.part_start.unwrap_or(end);
            self.clamp_end(start, end)
        });
        let Some(end) = end else {
            // No keyframe came: held audio has no segment to go in.
            self.dropped += self.audio.len() as u64;
            self.audio.clear();
            return Ok(None);
        };
        // Audio that came after the last video frame still belongs to this stream.
        let part = self.cut(end, i64::MAX, end, true);
        self.part_start = None;
        self.audio.clear();
        self.held_bytes = 0;
        part
    }

    /// Makes a part, ending at `end`, of the held video frames and the audio before
    /// `audio_end`. The last video frame lasts until `next_video` (the next frame's
    /// decode time), past `end` when the timestamps stopped: the part's duration in the
    /// playlist stays within PART-TARGET, while the video track has no hole (MSE drops
    /// every frame after a hole of more than two frames until the next keyframe, and
    /// hls.js then stalls for good; the picture holds instead).
    fn cut(
        &mut self,
        end: i64,
        audio_end: i64,
        next_video: i64,
        ends_segment: bool,
    ) -> Result<Option<Part>, Fmp4Error> {
        let Some(start) = self.part_start else {
            return Ok(None);
        };
        let offset = self.offset.unwrap_or(0);
        self.held_bytes = 0;
        let mut tracks = Vec::with_capacity(2);
        let mut independent = true;
        if let Some(track_id) = self.video_track {
            let frames = std::mem::take(&mut self.video);
            independent = frames.first().is_some_and(|f| f.keyframe);
            let video_end = next_video.max(end);
            if let Some(t) = video_fragment(track_id, self.video_codec, &frames, video_end, offset)
            {
                tracks.push(t);
            }
        }
        if let Some(track_id) = self.audio_track {
            let split = match self.video_track {
                Some(_) => self.audio.partition_point(|a| a.pts < audio_end),
                None => self.audio.len(),
            };
            let frames: Vec<AudioFrame> = self.audio.drain(..split).collect();
            self.held_bytes = self.audio.iter().map(|a| a.data.len()).sum();
            // After a gap the audio that follows it may not be here yet: the video that
            // resumes marks where it does, when it is more than a frame away. Otherwise (a
            // segment cut without a keyframe also ends before the next video frame) the
            // last frame keeps its own length: cut short, it would leave a hole before
            // the next part's first frame, and Chromium's MSE ends the buffered range at
            // a hole (playing stalls there).
            let frame_ticks = self.audio_frame_ticks;
            let natural_end = frames.last().map_or(end, |a| a.pts + frame_ticks);
            let next = self
                .audio
                .first()
                .map(|a| a.pts)
                .or((next_video > natural_end + frame_ticks).then_some(next_video));
            if let Some(t) = audio_fragment(track_id, &frames, next, frame_ticks, offset) {
                tracks.push(t);
            }
        }
        if tracks.is_empty() {
            return Ok(None);
        }
        self.sequence = self.sequence.wrapping_add(1);
        Ok(Some(Part {
            data: Bytes::from(fmp4::media_fragment(self.sequence, &tracks)?),
            start,
            duration: (end - start).max(0),
            independent,
            ends_segment,
        }))
    }
}

/// The 32-bit fields of a sample entry, clamped: a broken encoder's timestamps must not
/// wrap a duration into days.
fn ticks_u32(value: i64) -> u32 {
    value.clamp(0, i64::from(u32::MAX)) as u32
}

pub(crate) fn video_fragment(
    track_id: u32,
    codec: VideoCodec,
    frames: &[VideoFrame],
    end: i64,
    offset: i64,
) -> Option<TrackFragment> {
    let first = frames.first()?;
    let mut samples = Vec::with_capacity(frames.len());
    let mut data = Vec::with_capacity(frames.len());
    // Annex B frames converted, one buffer for a run of them.
    let mut converted = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let next = frames.get(i + 1).map_or(end, |n| n.dts);
        if frame.form == VideoForm::AnnexB && codec != VideoCodec::Av1 && converted.is_empty() {
            // Sized once for the run (a sample is at most its Annex B plus a byte a unit).
            converted.reserve(frames[i..].iter().map(|f| f.data.len() + 64).sum());
        }
        let size = match (codec, frame.form) {
            // RTMP's frames and Kawa's AV1 frames are already what a sample holds.
            (_, VideoForm::Sample) | (VideoCodec::Av1, _) => {
                flush(&mut converted, &mut data);
                data.push(frame.data.clone());
                frame.data.len()
            }
            (VideoCodec::Avc, VideoForm::AnnexB) => {
                let before = converted.len();
                annexb::append_sample(&frame.data, &mut converted);
                converted.len() - before
            }
            (VideoCodec::Hevc, VideoForm::AnnexB) => {
                let before = converted.len();
                hevc::append_sample(&frame.data, &mut converted);
                converted.len() - before
            }
        };
        samples.push(SampleInfo {
            duration: ticks_u32(next - frame.dts),
            size: size as u32,
            sync: frame.keyframe,
            composition_offset: (frame.pts - frame.dts)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                as i32,
        });
    }
    flush(&mut converted, &mut data);
    Some(TrackFragment {
        track_id,
        base_decode_time: (first.dts + offset).max(0) as u64,
        samples,
        data,
    })
}

/// Bytes converted so far, as the fragment's next piece.
fn flush(converted: &mut Vec<u8>, data: &mut Vec<Bytes>) {
    if !converted.is_empty() {
        data.push(Bytes::from(std::mem::take(converted)));
    }
}

pub(crate) fn audio_fragment(
    track_id: u32,
    frames: &[AudioFrame],
    next_pts: Option<i64>,
    frame_ticks: i64,
    offset: i64,
) -> Option<TrackFragment> {
    let first = frames.first()?;
    let mut samples = Vec::with_capacity(frames.len());
    let mut data = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let raw = frame.data.slice_ref(super::aac::adts_payload(&frame.data));
        let next = frames.get(i + 1).map(|n| n.pts).or(next_pts);
        // Up to the next frame, across a gap too (the track has no hole for MSE to
        // stop at; the player plays silence there), but never backwards or past a
        // timeline jump (the stream core starts a new timeline there).
        let duration = next
            .map(|n| n - frame.pts)
            .filter(|d| (1..=MAX_STEP_FORWARD).contains(d))
            .unwrap_or(frame_ticks);
        samples.push(SampleInfo {
            duration: ticks_u32(duration),
            size: raw.len() as u32,
            sync: true,
            composition_offset: 0,
        });
        data.push(raw);
    }
    Some(TrackFragment {
        track_id,
        base_decode_time: (first.pts + offset).max(0) as u64,
        samples,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(dts: i64, keyframe: bool) -> Frame {
        Frame::Video(VideoFrame {
            dts,
            pts: dts,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 1]),
            form: VideoForm::AnnexB,
        })
    }

    /// Steady frames at any rate, with RTMP's millisecond rounding: every part is at most
    /// PART-TARGET and, but a segment's last, at least 85 % of it.
    #[test]
    fn parts_fill_the_part_target_at_every_frame_rate() {
        for fps in [5.0f64, 10.0, 15.0, 23.976, 25.0, 29.97, 30.0, 50.0, 60.0] {
            for part_seconds in [0.2, 0.333, 0.5, 1.0] {
                let settings = SegmenterSettings::from_seconds(2.0, part_seconds);
                let mut segmenter = Segmenter::new(settings, Some(VideoCodec::Avc), None);
                let mut parts = Vec::new();
                let gop = (2.0 * fps).round() as u64;
                for n in 0..(gop * 5) {
                    // Millisecond timestamps, as RTMP carries them.
                    let ms = (n as f64 * 1000.0 / fps).round() as i64;
                    parts.extend(
                        segmenter
                            .push(video(ms * TICKS_PER_MS, n % gop == 0))
                            .unwrap(),
                    );
                }
                let target = segmenter.part_target().unwrap();
                // PART-TARGET is written in milliseconds, rounded up.
                let target = (target + TICKS_PER_MS - 1) / TICKS_PER_MS * TICKS_PER_MS;
                assert!(parts.len() > 4, "{fps} {part_seconds}");
                for p in &parts {
                    assert!(
                        p.duration <= target,
                        "{fps} fps, {part_seconds} s: {p:?} > {target}"
                    );
                    if !p.ends_segment {
                        assert!(
                            p.duration * 100 >= target * 85,
                            "{fps} fps, {part_seconds} s: {} < 85 % of {target}",
                            p.duration
                        );
                    }
                }
                // A segment's first part starts with its keyframe.
                for pair in parts.windows(2) {
                    assert_eq!(
                        pair[1].independent, pair[0].ends_segment,
                        "{fps} {part_seconds}"
                    );
                }
            }
        }
    }
}
