//! The typed media values actors pass around.

use std::sync::Arc;

use bytes::Bytes;

use super::aac::{AdtsHeader, AudioSpecificConfig};
use super::avc::AvcDecoderConfig;

/// One H.264 access unit in Annex B form, with AUD, and SPS/PPS before every IDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decode time, 90 kHz, unwrapped.
    pub dts: i64,
    /// Presentation time, 90 kHz: DTS plus the FLV composition offset.
    pub pts: i64,
    /// Holds an IDR picture: a segment may start here.
    pub keyframe: bool,
    pub data: Bytes,
}

/// One AAC frame with its ADTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation (= decode) time, 90 kHz, unwrapped.
    pub pts: i64,
    pub data: Bytes,
}

/// The decoder configuration of a stream's video track.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub avc: AvcDecoderConfig,
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
