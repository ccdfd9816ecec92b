//! Which of a stream's renditions WebRTC viewers get. Pure: frames in, decisions out.
//!
//! Browsers' WebRTC H.264 decoders take no B-frames, and WebRTC carries no AAC. Kawa's
//! rungs are encoded without B-frames (x264 `zerolatency`) by an FFmpeg that also
//! makes the Opus audio, so the top rung always fits. The source is sent as it is when
//! it is H.264 without B-frames (OBS with `bframes=0`): one rung less of delay and the
//! full picture. A frame whose presentation time differs from its decode time shows
//! B-frames; from the first one on the source is no longer offered.

use crate::media::frame::{VideoCodec, VideoFrame};

/// What a stream offers WebRTC viewers, for the WHEP endpoint to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Frames of this rendition go to viewers.
    Rendition(String),
    /// No video frame seen yet.
    Pending,
    /// Nothing WebRTC can play: the reason, for the player.
    Unfit(&'static str),
}

/// The choice for one stream, updated by its frames.
#[derive(Debug, Clone)]
pub struct FeedChoice {
    /// The highest scaled rung, when FFmpeg makes any.
    top_rung: Option<String>,
    /// `None` until the first source video frame.
    source_fit: Option<bool>,
    codec: VideoCodec,
}

pub const PASSTHROUGH_WITH_BFRAMES: &str = "this stream's video has B-frames, which WebRTC \
     cannot play, and the stream is not transcoded: set the encoder's B-frames to 0 \
     (OBS: Settings > Output > Advanced, x264 options bframes=0) or use hls.preset = \
     \"ladder\"";
pub const NOT_H264: &str = "this stream's video is not H.264 and the stream is not \
     transcoded: WebRTC viewers need hls.preset = \"ladder\"";

impl FeedChoice {
    pub fn new(top_rung: Option<String>) -> Self {
        Self {
            top_rung,
            source_fit: None,
            codec: VideoCodec::Avc,
        }
    }

    /// A source video frame: whether WebRTC viewers get it. `changed` is set when the
    /// offer changed with it.
    pub fn source_frame(
        &mut self,
        frame: &VideoFrame,
        codec: VideoCodec,
        changed: &mut bool,
    ) -> bool {
        let fit = codec == VideoCodec::Avc && frame.pts == frame.dts;
        let before = self.offer();
        self.codec = codec;
        self.source_fit = Some(self.source_fit.unwrap_or(true) && fit);
        *changed = self.offer() != before;
        self.source_fit == Some(true)
    }

    /// Whether a frame of `rung` goes to WebRTC viewers.
    pub fn rung_frame(&self, rung: &str) -> bool {
        self.offer() == Offer::Rendition(rung.to_owned())
    }

    /// The top rung changed (a new plan once the source's size is known).
    pub fn set_top_rung(&mut self, top_rung: Option<String>) -> bool {
        let before = self.offer();
        self.top_rung = top_rung;
        self.offer() != before
    }

    pub fn offer(&self) -> Offer {
        match (self.source_fit, &self.top_rung) {
            (None, _) => Offer::Pending,
            (Some(true), _) => Offer::Rendition(crate::transcode::SOURCE.to_owned()),
            (Some(false), Some(rung)) => Offer::Rendition(rung.clone()),
            (Some(false), None) => Offer::Unfit(Self::unfit_reason(self.codec)),
        }
    }

    /// Why a source that is not transcoded cannot be sent.
    fn unfit_reason(codec: VideoCodec) -> &'static str {
        if codec == VideoCodec::Avc {
            PASSTHROUGH_WITH_BFRAMES
        } else {
            NOT_H264
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::VideoForm;
    use bytes::Bytes;

    fn frame(dts: i64, pts: i64) -> VideoFrame {
        VideoFrame {
            dts,
            pts,
            keyframe: false,
            data: Bytes::new(),
            form: VideoForm::AnnexB,
        }
    }

    #[test]
    fn a_source_without_b_frames_is_sent_as_it_is() {
        let mut feed = FeedChoice::new(Some("720p".into()));
        assert_eq!(feed.offer(), Offer::Pending);
        let mut changed = false;
        assert!(feed.source_frame(&frame(0, 0), VideoCodec::Avc, &mut changed));
        assert!(changed);
        assert!(feed.source_frame(&frame(3000, 3000), VideoCodec::Avc, &mut changed));
        assert!(!changed);
        assert!(!feed.rung_frame("720p"));
        assert_eq!(feed.offer(), Offer::Rendition("source".into()));
    }

    #[test]
    fn b_frames_move_viewers_to_the_top_rung_for_good() {
        let mut feed = FeedChoice::new(Some("720p".into()));
        let mut changed = false;
        assert!(feed.source_frame(&frame(0, 0), VideoCodec::Avc, &mut changed));
        // The first reordered frame.
        assert!(!feed.source_frame(&frame(3000, 9000), VideoCodec::Avc, &mut changed));
        assert!(changed);
        assert!(!feed.source_frame(&frame(6000, 6000), VideoCodec::Avc, &mut changed));
        assert!(feed.rung_frame("720p"));
        assert!(!feed.rung_frame("360p"));
    }

    #[test]
    fn without_a_rung_b_frames_or_hevc_leave_nothing_to_play() {
        let mut feed = FeedChoice::new(None);
        let mut changed = false;
        assert!(!feed.source_frame(&frame(0, 3000), VideoCodec::Avc, &mut changed));
        assert_eq!(feed.offer(), Offer::Unfit(PASSTHROUGH_WITH_BFRAMES));
        let mut hevc = FeedChoice::new(Some("360p".into()));
        assert!(!hevc.source_frame(&frame(0, 0), VideoCodec::Hevc, &mut changed));
        assert_eq!(hevc.offer(), Offer::Rendition("360p".into()));
        assert!(hevc.set_top_rung(None));
        assert_eq!(hevc.offer(), Offer::Unfit(NOT_H264));
    }
}
