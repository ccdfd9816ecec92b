//! Frames as a fragmented MP4 stream, one `moof`+`mdat` per frame: what FFmpeg reads
//! on its stdin for an AV1 source. MPEG-TS is FFmpeg's input for H.264 and HEVC, but
//! Debian 12's FFmpeg 5.1 reads AV1 from no TS (it sees a data stream), while its MP4
//! demuxer reads `av01` from a pipe, fragment by fragment, as they come.
//!
//! The init segment is made from the frames themselves (the sequence header in every
//! AV1 keyframe, the ADTS header of every AAC frame), so a transcoder worker, which gets
//! frames and no configuration, feeds FFmpeg the same way. Pure.

use super::aac::{self, AudioSpecificConfig};
use super::av1::{self, Av1Config};
use super::cmaf;
use super::fmp4::{self, Fmp4Error};
use super::frame::{Frame, VideoCodec, VideoConfig};
use super::time::TICKS_PER_SECOND;

/// Frames held until both tracks' configurations are known (the first audio frame
/// comes within a few video frames).
const MAX_HELD: usize = 256;
/// A video frame's duration until two frames give a real one: 25 fps.
const DEFAULT_FRAME_TICKS: i64 = TICKS_PER_SECOND / 25;
/// Samples in an AAC frame.
const AAC_FRAME_SAMPLES: i64 = 1024;

/// Writes an AV1 (and AAC) program as fragmented MP4.
#[derive(Debug)]
pub struct Fmp4Feed {
    has_video: bool,
    has_audio: bool,
    video: Option<VideoConfig>,
    audio: Option<AudioSpecificConfig>,
    /// Frames before the init segment could be written.
    held: Vec<Frame>,
    started: bool,
    sequence: u32,
    last_video_dts: Option<i64>,
    video_ticks: i64,
}

impl Fmp4Feed {
    /// A feed for an AV1 video track (when `has_video`) and an AAC track (`has_audio`).
    pub fn av1(has_video: bool, has_audio: bool) -> Self {
        Self {
            has_video,
            has_audio,
            video: None,
            audio: None,
            held: Vec::new(),
            started: false,
            sequence: 0,
            last_video_dts: None,
            video_ticks: DEFAULT_FRAME_TICKS,
        }
    }

    /// Appends what `frame` adds to the stream: nothing while the configurations are
    /// still unknown, then the init segment and the frames held, then one fragment.
    pub fn write_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Fmp4Error> {
        if self.started {
            return self.fragment(frame, out);
        }
        self.learn(frame);
        let video_ready = !self.has_video || self.video.is_some();
        let audio_ready = !self.has_audio || self.audio.is_some();
        // Video before the first keyframe cannot be decoded: it is not kept.
        let useful = match frame {
            Frame::Video(_) => self.video.is_some(),
            Frame::Audio(_) => true,
        };
        if useful && self.held.len() < MAX_HELD {
            self.held.push(frame.clone());
        }
        if !(video_ready && audio_ready) {
            return Ok(());
        }
        out.extend_from_slice(&fmp4::init_segment(
            self.video.as_ref(),
            self.audio.as_ref(),
        )?);
        self.started = true;
        for frame in std::mem::take(&mut self.held) {
            self.fragment(&frame, out)?;
        }
        Ok(())
    }

    fn learn(&mut self, frame: &Frame) {
        match frame {
            Frame::Video(v) if v.keyframe && self.video.is_none() => {
                self.video = av1::sequence_header_of(&v.data)
                    .and_then(|obu| Av1Config::from_sequence_header(obu).ok())
                    .map(VideoConfig::Av1);
            }
            Frame::Audio(a) if self.audio.is_none() => {
                self.audio = aac::config_of_adts(&a.data).ok();
            }
            _ => {}
        }
    }

    fn fragment(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Fmp4Error> {
        let (video_id, audio_id) = fmp4::track_ids(self.has_video, self.has_audio);
        let track = match (frame, video_id, audio_id) {
            (Frame::Video(v), Some(id), _) => {
                if let Some(last) = self.last_video_dts {
                    let step = v.dts - last;
                    if step > 0 && step < TICKS_PER_SECOND {
                        self.video_ticks = step;
                    }
                }
                self.last_video_dts = Some(v.dts);
                let end = v.dts + self.video_ticks;
                let frames = std::slice::from_ref(v);
                cmaf::video_fragment(id, VideoCodec::Av1, frames, end, 0)
            }
            (Frame::Audio(a), _, Some(id)) => {
                let rate = self.audio.as_ref().map_or(48_000, |c| c.sample_rate).max(1);
                let ticks = AAC_FRAME_SAMPLES * TICKS_PER_SECOND / i64::from(rate);
                cmaf::audio_fragment(id, std::slice::from_ref(a), None, ticks, 0)
            }
            _ => None,
        };
        let Some(track) = track else {
            return Ok(());
        };
        self.sequence = self.sequence.wrapping_add(1);
        out.extend_from_slice(&fmp4::media_fragment(self.sequence, &[track])?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mp4_atom::{Any, DecodeMaybe, Moov};

    use super::*;
    use crate::media::demux::{FlvDemuxer, MediaEvent};
    use crate::media::flv::{FlvFileReader, TagKind};

    /// FFmpeg 9's SVT-AV1 (tests/fixtures/av1.flv, video only), through the demuxer.
    fn av1_frames() -> Vec<Frame> {
        let file = include_bytes!("../../tests/fixtures/av1.flv");
        let mut demuxer = FlvDemuxer::new();
        let mut frames = Vec::new();
        for tag in FlvFileReader::new(file).unwrap() {
            let tag = tag.unwrap();
            if tag.kind == TagKind::Video
                && let Ok(MediaEvent::Frame(frame)) =
                    demuxer.video(tag.timestamp_ms, &bytes::Bytes::copy_from_slice(tag.body))
            {
                frames.push(frame);
            }
        }
        frames
    }

    #[test]
    fn an_av1_stream_becomes_an_init_segment_and_one_fragment_per_frame() {
        let frames = av1_frames();
        let mut feed = Fmp4Feed::av1(true, false);
        let mut out = Vec::new();
        for frame in &frames {
            feed.write_frame(frame, &mut out).unwrap();
        }
        let mut buf = &out[..];
        let (mut moov, mut moofs) = (None, 0);
        while let Some(atom) = Any::decode_maybe(&mut buf).unwrap() {
            match atom {
                Any::Moov(m) => moov = Some(m),
                Any::Moof(_) => moofs += 1,
                _ => {}
            }
        }
        let moov: Moov = moov.expect("an init segment");
        let codec = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0];
        let mp4_atom::Codec::Av01(av01) = codec else {
            panic!("not av01: {codec:?}")
        };
        assert_eq!((av01.visual.width, av01.visual.height), (160, 120));
        // From the first keyframe on (the fixture starts with one): every frame.
        assert_eq!(moofs, frames.len());
    }

    #[test]
    fn frames_before_the_first_keyframe_and_audio_config_wait_or_go() {
        let frames = av1_frames();
        let mut feed = Fmp4Feed::av1(true, true);
        let mut out = Vec::new();
        // Video without audio yet: held, nothing written.
        for frame in frames.iter().take(5) {
            feed.write_frame(frame, &mut out).unwrap();
        }
        assert!(out.is_empty());
        // A non-ADTS audio frame teaches nothing; a real ADTS header starts the stream.
        let audio = |data: &'static [u8]| {
            Frame::Audio(crate::media::frame::AudioFrame {
                pts: 0,
                data: bytes::Bytes::from_static(data),
            })
        };
        feed.write_frame(&audio(&[0xFF]), &mut out).unwrap();
        assert!(out.is_empty());
        let adts: &[u8] = &[0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC, 0x21];
        feed.write_frame(&audio(adts), &mut out).unwrap();
        assert!(!out.is_empty(), "the init segment and the held frames");
    }
}
