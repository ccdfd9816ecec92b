//! When a new codec configuration (an RTMP sequence header) means encoding starts again.

use crate::media::frame::CodecConfig;

/// What changed between the configuration in use and a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigChange {
    /// New SPS/PPS: resolution, profile or level.
    pub video: bool,
    /// New AudioSpecificConfig, or the first one after encoding started without audio.
    pub audio: bool,
}

impl ConfigChange {
    pub fn between(old: &CodecConfig, new: &CodecConfig) -> Self {
        Self {
            video: old.video.is_some() && new.video != old.video,
            audio: new.audio.is_some() && new.audio != old.audio,
        }
    }

    /// A running FFmpeg must be replaced (at the next keyframe, a new generation with a
    /// DISCONTINUITY and an updated master): its input format changed under it.
    pub fn restarts_encoding(self) -> bool {
        self.video || self.audio
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::demux::{FlvDemuxer, MediaEvent};

    /// The configuration an AAC sequence header (FLV audio tag) gives.
    fn audio(asc: &[u8]) -> CodecConfig {
        let tag = [&[0xAF, 0][..], asc].concat();
        match FlvDemuxer::new().audio(0, &tag).unwrap() {
            MediaEvent::Config(config) => config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_aac_config_or_a_late_one_restarts_the_same_one_does_not() {
        let lc_44k = audio(&[0x12, 0x10]);
        let lc_48k = audio(&[0x11, 0x90]);
        let none = CodecConfig::default();
        assert!(ConfigChange::between(&lc_44k, &lc_48k).restarts_encoding());
        assert!(
            ConfigChange::between(&none, &lc_44k).audio,
            "audio after video"
        );
        assert!(!ConfigChange::between(&lc_44k, &lc_44k).restarts_encoding());
        assert!(!ConfigChange::between(&lc_44k, &none).restarts_encoding());
    }
}
