//! H.264 and HEVC access units in sample form: NAL units behind 4-byte lengths, without
//! AUDs and parameter sets, exactly what an `avc1`/`hvc1` sample holds. What an RTMP
//! publisher sends (AVCC) is nearly always that already, so ingest passes the received
//! bytes through and CMAF copies them once, into the part. Annex B, which FFmpeg, MPEG-TS
//! and RTP read, is made only for them ([`to_annexb`]).
//!
//! Written here rather than taken from `h264-reader`: its AVCC reader yields NAL units,
//! but deciding that a received buffer already *is* a sample (and slicing it) is ours.

use bytes::Bytes;

use super::avc::{self, AvcError, AvccNals, MAX_NALS_PER_ACCESS_UNIT};
use super::frame::{VideoCodec, VideoConfig, VideoForm, VideoFrame};
use super::hevc::{self, HevcError};

/// The length field a sample's NAL units carry.
pub const LENGTH_SIZE: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Avc(#[from] AvcError),
    #[error(transparent)]
    Hevc(#[from] HevcError),
    #[error("{0} frames have no sample form here")]
    Codec(&'static str),
    #[error("a sample-form frame without the stream's decoder configuration")]
    NoConfig,
}

/// A length-prefixed access unit (`unit`, a slice of a received buffer, lengths of
/// `length_size` bytes) in sample form, and whether it holds a picture decoding can
/// start at (H.264 IDR, HEVC IRAP). Without a copy when it is in that form already.
pub fn from_length_prefixed(
    unit: &Bytes,
    length_size: u8,
    codec: VideoCodec,
) -> Result<(Bytes, bool), SampleError> {
    let (mut key, mut as_is, mut count, mut kept) = (false, length_size == LENGTH_SIZE, 0, 0);
    for nal in AvccNals::new(unit, length_size) {
        let nal = nal?;
        count += 1;
        if count > MAX_NALS_PER_ACCESS_UNIT {
            return Err(AvcError::TooManyNals.into());
        }
        match kind(codec, nal)? {
            NalKind::Dropped => as_is = false,
            NalKind::Key => key = true,
            NalKind::Other => {}
        }
        kept += 4 + nal.len();
    }
    if as_is {
        return Ok((unit.clone(), key));
    }
    let mut out = Vec::with_capacity(kept);
    for nal in AvccNals::new(unit, length_size) {
        let nal = nal?;
        if kind(codec, nal)? != NalKind::Dropped {
            // Frames are capped far below 4 GiB at ingest.
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
    }
    Ok((Bytes::from(out), key))
}

#[derive(Debug, PartialEq, Eq)]
enum NalKind {
    /// Not in a sample: AUD, parameter sets, an empty unit.
    Dropped,
    /// A picture decoding can start at.
    Key,
    Other,
}

fn kind(codec: VideoCodec, nal: &[u8]) -> Result<NalKind, SampleError> {
    let Some(&header) = nal.first() else {
        return Ok(NalKind::Dropped);
    };
    Ok(match codec {
        VideoCodec::Avc => match header & 0x1F {
            avc::nal_type::AUD | avc::nal_type::SPS | avc::nal_type::PPS => NalKind::Dropped,
            avc::nal_type::IDR => NalKind::Key,
            _ => NalKind::Other,
        },
        VideoCodec::Hevc => match hevc::nal_type::of(nal) {
            Some(
                hevc::nal_type::AUD
                | hevc::nal_type::VPS
                | hevc::nal_type::SPS
                | hevc::nal_type::PPS,
            ) => NalKind::Dropped,
            Some(t) if hevc::nal_type::IRAP.contains(&t) => NalKind::Key,
            _ => NalKind::Other,
        },
        VideoCodec::Av1 => return Err(SampleError::Codec("AV1")),
    })
}

/// A sample-form access unit in Annex B, as [`avc::avcc_to_annexb`] makes it: an AUD
/// first, and the configuration's parameter sets before a keyframe's first slice.
pub fn to_annexb(sample: &[u8], config: &VideoConfig) -> Result<Vec<u8>, SampleError> {
    match config {
        VideoConfig::Avc(c) => Ok(avc::length_prefixed_to_annexb(sample, LENGTH_SIZE, c)?.0),
        VideoConfig::Hevc(c) => Ok(hevc::length_prefixed_to_annexb(sample, LENGTH_SIZE, c)?.0),
        VideoConfig::Av1(_) => Err(SampleError::Codec("AV1")),
    }
}

/// The frame in Annex B: itself when it is in that form, else converted with the
/// stream's `config`.
pub fn annexb_frame(
    frame: &VideoFrame,
    config: Option<&VideoConfig>,
) -> Result<VideoFrame, SampleError> {
    if frame.form == VideoForm::AnnexB {
        return Ok(frame.clone());
    }
    let config = config.ok_or(SampleError::NoConfig)?;
    Ok(VideoFrame {
        data: Bytes::from(to_annexb(&frame.data, config)?),
        form: VideoForm::AnnexB,
        ..frame.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::avcc_to_annexb;
    use crate::media::cmaf::{Segmenter, SegmenterSettings};
    use crate::media::demux::{FlvDemuxer, MediaEvent};
    use crate::media::flv::{FlvFileReader, TagKind, VideoTag};
    use crate::media::frame::{CodecConfig, Frame};

    /// Every frame of an FLV fixture (FFmpeg's x264 or x265) as ingest makes it, each with
    /// the tag's AVCC bytes, and the stream's configuration.
    fn frames(file: &[u8]) -> (Vec<(Frame, Bytes)>, CodecConfig) {
        let mut demuxer = FlvDemuxer::new();
        let mut out = Vec::new();
        for tag in FlvFileReader::new(file).unwrap() {
            let tag = tag.unwrap();
            let body = Bytes::copy_from_slice(tag.body);
            let event = match tag.kind {
                TagKind::Video => demuxer.video(tag.timestamp_ms, &body),
                TagKind::Audio => demuxer.audio(tag.timestamp_ms, &body),
                TagKind::Script => continue,
            };
            if let MediaEvent::Frame(frame) = event.unwrap() {
                out.push((frame, body));
            }
        }
        (out, demuxer.config().clone())
    }

    fn avcc_of(body: &Bytes) -> Bytes {
        match VideoTag::parse(body).unwrap() {
            VideoTag::Nalus { data, .. } => body.slice_ref(data),
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn an_encoders_avcc_is_passed_through_without_a_copy() {
        let (frames, config) = frames(include_bytes!(
            "../../tests/fixtures/high_bframes_aac48k_mono.flv"
        ));
        let Some(VideoConfig::Avc(avc)) = config.video.as_deref() else {
            panic!("H.264 fixture");
        };
        let mut videos = 0;
        for (frame, body) in &frames {
            let Frame::Video(v) = frame else { continue };
            videos += 1;
            let avcc = avcc_of(body);
            assert_eq!(v.form, VideoForm::Sample);
            // The same memory, not equal bytes: x264 sends no AUD and no in-band
            // parameter sets with a global header.
            assert_eq!(v.data.as_ptr(), avcc.as_ptr());
            assert_eq!(v.data.len(), avcc.len());
            // Annex B from the sample is what ingest made before.
            let (before, key) = avcc_to_annexb(&avcc, avc).unwrap();
            assert_eq!(key, v.keyframe);
            assert_eq!(
                to_annexb(&v.data, config.video.as_deref().unwrap()).unwrap(),
                before
            );
        }
        assert!(videos > 20, "{videos} frames");
    }

    #[test]
    fn hevc_frames_are_samples_too() {
        let (frames, config) = frames(include_bytes!("../../tests/fixtures/hevc_aac.flv"));
        let Some(VideoConfig::Hevc(hevc)) = config.video.as_deref() else {
            panic!("HEVC fixture");
        };
        let mut keys = 0;
        for (frame, body) in &frames {
            let Frame::Video(v) = frame else { continue };
            let (before, key) = hevc::to_annexb(&avcc_of(body), hevc).unwrap();
            assert_eq!(key, v.keyframe);
            keys += usize::from(key);
            assert_eq!(v.form, VideoForm::Sample);
            assert_eq!(
                to_annexb(&v.data, config.video.as_deref().unwrap()).unwrap(),
                before
            );
        }
        assert!(keys > 0);
    }

    /// The CMAF parts of sample-form frames are byte for byte those of the same frames
    /// in Annex B (the path SRT and FFmpeg's rungs take).
    #[test]
    fn parts_are_the_same_from_either_form() {
        for file in [
            &include_bytes!("../../tests/fixtures/high_bframes_aac48k_mono.flv")[..],
            include_bytes!("../../tests/fixtures/baseline_aac44k_stereo.flv"),
            include_bytes!("../../tests/fixtures/hevc_aac.flv"),
        ] {
            let (frames, config) = frames(file);
            let video = config.video.as_deref().unwrap();
            let settings = SegmenterSettings::from_seconds(2.0, 0.2);
            let sample_rate = config.audio.as_ref().map(|a| a.asc.sample_rate);
            let mut as_samples = Segmenter::new(settings, Some(video.codec()), sample_rate);
            let mut as_annexb = Segmenter::new(settings, Some(video.codec()), sample_rate);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (frame, _) in frames {
                let converted = match &frame {
                    Frame::Video(v) => Frame::Video(annexb_frame(v, Some(video)).unwrap()),
                    audio => audio.clone(),
                };
                a.extend(as_samples.push(frame).unwrap().map(|p| p.data));
                b.extend(as_annexb.push(converted).unwrap().map(|p| p.data));
            }
            assert!(a.len() > 3, "{} parts", a.len());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn aud_parameter_sets_and_short_lengths_are_rewritten() {
        let sps = [0x67, 1, 2];
        let idr = [0x65, 9, 9, 9];
        let sei = [0x06, 5];
        // 2-byte lengths: AUD, SPS, an empty unit, SEI, IDR.
        let mut unit = Vec::new();
        for nal in [&[0x09, 0xF0][..], &sps, &[], &sei, &idr] {
            unit.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            unit.extend_from_slice(nal);
        }
        let unit = Bytes::from(unit);
        let (sample, key) = from_length_prefixed(&unit, 2, VideoCodec::Avc).unwrap();
        assert!(key);
        assert_eq!(
            &sample[..],
            &[0, 0, 0, 2, 0x06, 5, 0, 0, 0, 4, 0x65, 9, 9, 9][..]
        );
        // Already a sample: the same bytes back.
        let (again, _) = from_length_prefixed(&sample, 4, VideoCodec::Avc).unwrap();
        assert_eq!(again.as_ptr(), sample.as_ptr());
    }

    #[test]
    fn broken_units_are_errors() {
        let overrun = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
        assert!(from_length_prefixed(&overrun, 4, VideoCodec::Avc).is_err());
        let cut = Bytes::from_static(&[0, 0]);
        assert!(from_length_prefixed(&cut, 4, VideoCodec::Hevc).is_err());
        let many: Vec<u8> = std::iter::repeat_n([0u8, 0, 0, 1, 0x41], MAX_NALS_PER_ACCESS_UNIT + 1)
            .flatten()
            .collect();
        assert_eq!(
            from_length_prefixed(&Bytes::from(many), 4, VideoCodec::Avc),
            Err(SampleError::Avc(AvcError::TooManyNals))
        );
        assert!(from_length_prefixed(&Bytes::new(), 4, VideoCodec::Av1).is_ok());
        let frame = VideoFrame {
            dts: 0,
            pts: 0,
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            form: VideoForm::Sample,
        };
        assert_eq!(annexb_frame(&frame, None), Err(SampleError::NoConfig));
    }
}
