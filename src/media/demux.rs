//! RTMP/FLV message payloads to typed frames: the one path both the live ingest and
//! `kawa tools remux` take, so the tool checks exactly what the server does.

use std::sync::Arc;

use bytes::Bytes;

use super::aac::{AacError, AudioSpecificConfig};
use super::av1::{self, Av1Config, Av1Error};
use super::avc::{AvcDecoderConfig, AvcError};
use super::flv::{AudioTag, FlvError, VideoTag};
use super::frame::{
    AudioConfig, AudioFrame, CodecConfig, Frame, VideoCodec, VideoConfig, VideoForm, VideoFrame,
};
use super::hevc::{HevcDecoderConfig, HevcError};
use super::sample::{self, SampleError};
use super::time::{TICKS_PER_MS, TimestampUnwrapper};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Avc(#[from] AvcError),
    #[error(transparent)]
    Hevc(#[from] HevcError),
    #[error(transparent)]
    Av1(#[from] Av1Error),
    #[error(transparent)]
    Aac(#[from] AacError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error("video frame before the video sequence header")]
    NoVideoConfig,
    #[error("{frame} video frame in a {config} stream")]
    CodecMismatch {
        frame: &'static str,
        config: &'static str,
    },
    #[error("audio frame before the AAC sequence header")]
    NoAudioConfig,
}

/// What one payload turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// A sequence header set or changed a track's configuration.
    Config(CodecConfig),
    Frame(Frame),
    /// Nothing to pass on (end of sequence, command frames).
    Nothing,
}

/// Turns video and audio message payloads of one publish into frames.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    config: CodecConfig,
    clock: TimestampUnwrapper,
}

impl FlvDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// One RTMP video message (an FLV VIDEODATA body) with its millisecond timestamp.
    pub fn video(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<MediaEvent, DemuxError> {
        match VideoTag::parse(body)? {
            VideoTag::SequenceHeader(codec, record) => {
                let video = match codec {
                    VideoCodec::Avc => VideoConfig::Avc(AvcDecoderConfig::parse(record)?),
                    VideoCodec::Hevc => VideoConfig::Hevc(HevcDecoderConfig::parse(record)?),
                    VideoCodec::Av1 => VideoConfig::Av1(Av1Config::parse(record)?),
                };
                if self.config.video.as_deref() == Some(&video) {
                    return Ok(MediaEvent::Nothing);
                }
                self.config.video = Some(Arc::new(video));
                Ok(MediaEvent::Config(self.config.clone()))
            }
            VideoTag::Nalus {
                codec,
                keyframe,
                composition_time_ms,
                data,
            } => {
                let video = self
                    .config
                    .video
                    .as_ref()
                    .ok_or(DemuxError::NoVideoConfig)?;
                // H.264 and HEVC stay length-prefixed, as received: CMAF copies them
                // once, into a part; Annex B is made for FFmpeg and RTP only.
                let (data, keyframe, form) = match (video.as_ref(), codec) {
                    (VideoConfig::Avc(avc), VideoCodec::Avc) => {
                        let unit = body.slice_ref(data);
                        let (data, key) =
                            sample::from_length_prefixed(&unit, avc.nal_length_size, codec)?;
                        (data, key, VideoForm::Sample)
                    }
                    (VideoConfig::Hevc(config), VideoCodec::Hevc) => {
                        let unit = body.slice_ref(data);
                        let length_size = config.hvcc.length_size_minus_one + 1;
                        let (data, key) = sample::from_length_prefixed(&unit, length_size, codec)?;
                        (data, key, VideoForm::Sample)
                    }
                    // An AV1 keyframe is what the tag says (a key frame has a sequence
                    // header and a KEY_FRAME shown frame; encoders flag exactly those).
                    (VideoConfig::Av1(config), VideoCodec::Av1) => {
                        let header = keyframe.then_some(&config.sequence_header[..]);
                        let data = Bytes::from(av1::to_frame(data, header)?);
                        (data, keyframe, VideoForm::AnnexB)
                    }
                    (config, frame) => {
                        return Err(DemuxError::CodecMismatch {
                            frame: frame.name(),
                            config: config.codec().name(),
                        });
                    }
                };
                let dts = self.clock.unwrap_ticks(timestamp_ms);
                Ok(MediaEvent::Frame(Frame::Video(VideoFrame {
                    dts,
                    pts: dts + i64::from(composition_time_ms) * TICKS_PER_MS,
                    keyframe,
                    data,
                    form,
                })))
            }
            VideoTag::EndOfSequence | VideoTag::Command | VideoTag::OtherTrack(_) => {
                Ok(MediaEvent::Nothing)
            }
        }
    }

    /// One RTMP audio message (an FLV AUDIODATA body) with its millisecond timestamp.
    pub fn audio(&mut self, timestamp_ms: u32, body: &[u8]) -> Result<MediaEvent, DemuxError> {
        match AudioTag::parse(body)? {
            AudioTag::SequenceHeader(asc) => {
                let asc = AudioSpecificConfig::parse(asc)?;
                let adts = asc.adts()?;
                let changed = self.config.audio.as_ref().is_none_or(|a| a.asc != asc);
                if !changed {
                    return Ok(MediaEvent::Nothing);
                }
                self.config.audio = Some(Arc::new(AudioConfig { asc, adts }));
                Ok(MediaEvent::Config(self.config.clone()))
            }
            AudioTag::Raw(raw) => {
                let audio = self
                    .config
                    .audio
                    .as_ref()
                    .ok_or(DemuxError::NoAudioConfig)?;
                let mut data = Vec::new();
                audio.adts.write_frame(raw, &mut data)?;
                Ok(MediaEvent::Frame(Frame::Audio(AudioFrame {
                    pts: self.clock.unwrap_ticks(timestamp_ms),
                    data: Bytes::from(data),
                })))
            }
        }
    }
}
