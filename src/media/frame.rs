//! The typed media values actors pass around.

use std::sync::Arc;

use bytes::Bytes;

use super::aac::{AdtsHeader, AudioSpecificConfig};
use super::av1::Av1Config;
use super::avc::{AvcDecoderConfig, SpsInfo};
use super::hevc::HevcDecoderConfig;

/// One video access unit. H.264 and HEVC: as `form` says. AV1: one temporal unit of
/// OBUs with size fields, without temporal delimiters, and the sequence header in every
/// keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decode time, 90 kHz, unwrapped.
    pub dts: i64,
    /// Presentation time, 90 kHz: DTS plus the FLV composition offset.
    pub pts: i64,
    /// Holds an IDR picture: a segment may start here.
    pub keyframe: bool,
    pub data: Bytes,
    pub form: VideoForm,
}

/// How an H.264 or HEVC frame's bytes hold its NAL units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoForm {
    /// Annex B: start codes, an AUD first, the parameter sets before every keyframe.
    /// What FFmpeg, MPEG-TS and RTP read; what FFmpeg and SRT publishers send. AV1
    /// frames are always this form.
    #[default]
    AnnexB,
    /// An MP4 sample: 4-byte lengths, no AUD, no parameter sets (they are in the
    /// stream's decoder configuration). RTMP's AVCC passed through
    /// (`media::sample`).
    Sample,
}

/// One AAC frame with its ADTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation (= decode) time, 90 kHz, unwrapped.
    pub pts: i64,
    pub data: Bytes,
}

/// The video codecs Kawa packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    #[default]
    Avc,
    Hevc,
    Av1,
}

impl VideoCodec {
    /// Its name in logs, the worker protocol and FFmpeg's `-f`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avc => "h264",
            Self::Hevc => "hevc",
            Self::Av1 => "av1",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Avc, Self::Hevc, Self::Av1]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// The decoder configuration of a stream's video track.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoConfig {
    Avc(AvcDecoderConfig),
    Hevc(HevcDecoderConfig),
    Av1(Av1Config),
}

impl VideoConfig {
    pub fn codec(&self) -> VideoCodec {
        match self {
            Self::Avc(_) => VideoCodec::Avc,
            Self::Hevc(_) => VideoCodec::Hevc,
            Self::Av1(_) => VideoCodec::Av1,
        }
    }

    /// The picture size and frame rate.
    pub fn info(&self) -> &SpsInfo {
        match self {
            Self::Avc(c) => &c.info,
            Self::Hevc(c) => &c.info,
            Self::Av1(c) => &c.info,
        }
    }

    /// The RFC 6381 string for HLS `CODECS`.
    pub fn codec_string(&self) -> String {
        match self {
            Self::Avc(c) => c.codec_string(),
            Self::Hevc(c) => c.codec_string(),
            Self::Av1(c) => c.codec_string(),
        }
    }
}

/// The decoder configuration of a stream's audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub asc: AudioSpecificConfig,
    pub adts: AdtsHeader,
}

/// What a stream carries, as far as known. Shared cheaply between actors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodecConfig {
    pub video: Option<Arc<VideoConfig>>,
    pub audio: Option<Arc<AudioConfig>>,
}

/// A frame of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Video(VideoFrame),
    Audio(AudioFrame),
}

impl Frame {
    /// The frame's bytes (Annex B or ADTS).
    pub fn data(&self) -> &Bytes {
        match self {
            Self::Video(v) => &v.data,
            Self::Audio(a) => &a.data,
        }
    }
}
