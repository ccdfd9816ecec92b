//! RTMP/FLV message payloads to typed frames: the one path both the live ingest and
//! `kawa tools remux` take, so the tool checks exactly what the server does.

use std::sync::Arc;

use bytes::Bytes;

use super::aac::{AacError, AudioSpecificConfig};
use super::avc::{AvcDecoderConfig, AvcError, avcc_to_annexb};
use super::flv::{AudioTag, FlvError, VideoTag};
use super::frame::{AudioConfig, AudioFrame, CodecConfig, Frame, VideoConfig, VideoFrame};
use super::time::{TICKS_PER_MS, TimestampUnwrapper};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Avc(#[from] AvcError),
    #[error(transparent)]
    Aac(#[from] AacError),
    #[error("video frame before the AVC sequence header")]
    NoVideoConfig,
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
    pub fn video(&mut self, timestamp_ms: u32, body: &[u8]) -> Result<MediaEvent, DemuxError> {
        match VideoTag::parse(body)? {
            VideoTag::SequenceHeader(record) => {
                let avc = AvcDecoderConfig::parse(record)?;
                let changed = self.config.video.as_ref().is_none_or(|v| v.avc != avc);
                if !changed {
                    return Ok(MediaEvent::Nothing);
                }
                self.config.video = Some(Arc::new(VideoConfig { avc }));
                Ok(MediaEvent::Config(self.config.clone()))
            }
            VideoTag::Nalus {
                composition_time_ms,
                data,
                ..
            } => {
                let video = self
                    .config
                    .video
                    .as_ref()
                    .ok_or(DemuxError::NoVideoConfig)?;
                let (annexb, keyframe) = avcc_to_annexb(data, &video.avc)?;
                let dts = self.clock.unwrap_ticks(timestamp_ms);
                Ok(MediaEvent::Frame(Frame::Video(VideoFrame {
                    dts,
                    pts: dts + i64::from(composition_time_ms) * TICKS_PER_MS,
                    keyframe,
                    data: Bytes::from(annexb),
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
