//! A session's frames for its WebRTC viewers: the rendition [`FeedChoice`] picks (the
//! source without B-frames, else the top rung), sent to the WebRTC server as they come.

use super::StreamSession;
use crate::media::frame::{Frame, VideoCodec};
use crate::media::sample::annexb_frame;
use crate::transcode::TranscodePlan;
use crate::webrtc::WebRtc;
use crate::webrtc::feed::FeedChoice;

/// What the session tells the WebRTC server.
pub(super) struct WebRtcOut {
    hub: WebRtc,
    feed: FeedChoice,
    /// The current FFmpeg's top rung (its first video stream).
    top: Option<String>,
}

impl WebRtcOut {
    pub(super) fn new(hub: WebRtc) -> Self {
        Self {
            hub,
            feed: FeedChoice::new(None),
            top: None,
        }
    }
}

impl StreamSession {
    /// A frame from the publisher.
    pub(super) fn webrtc_source(&mut self, frame: &Frame) {
        let (Some(out), Frame::Video(video)) = (self.webrtc.as_mut(), frame) else {
            return;
        };
        let codec = (self.checkpoint.config.video.as_ref()).map_or(VideoCodec::Avc, |v| v.codec());
        let path = self.path.as_str();
        let mut changed = false;
        let send = out.feed.source_frame(video, codec, &mut changed);
        // What the stream offers first: its first keyframe is then the shards' to keep.
        if changed {
            out.hub.stream(path, out.feed.offer());
        }
        if !send {
            return;
        }
        let config = self.core.config.video.as_deref();
        match annexb_frame(video, config) {
            Ok(video) => out.hub.video(path, video.pts, video.keyframe, &video.data),
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "video frame not sent to WebRTC")
            }
        }
    }

    /// Frames an FFmpeg made (`(rung index in the plan's scaled rungs, frame)`): the top
    /// rung's video goes to viewers when the feed picked it.
    pub(super) fn webrtc_rungs(&mut self, frames: &[(usize, Frame)]) {
        let path = self.path.as_str();
        let Some(out) = self.webrtc.as_ref() else {
            return;
        };
        if !(out.top.as_deref()).is_some_and(|top| out.feed.rung_frame(top)) {
            return;
        }
        for (rung, frame) in frames {
            if let (0, Frame::Video(video)) = (rung, frame) {
                out.hub.video(path, video.pts, video.keyframe, &video.data);
            }
        }
    }

    /// A new FFmpeg starts with `plan`: its top rung (and its Opus) are there for WebRTC.
    pub(super) fn webrtc_plan(&mut self, plan: &TranscodePlan) {
        let path = self.path.as_str();
        let Some(out) = self.webrtc.as_mut() else {
            return;
        };
        let top = plan.scaled().next().map(|r| r.name.clone());
        out.top = top.clone();
        if out.feed.set_top_rung(top) {
            out.hub.stream(path, out.feed.offer());
        }
    }

    /// The stream ended: its WebRTC viewers are closed.
    pub(super) fn webrtc_ended(&mut self) {
        if let Some(out) = self.webrtc.take() {
            out.hub.ended(self.path.as_str());
        }
    }

    /// Where the FFmpeg of a plan sends its Opus packets.
    pub(super) fn webrtc_audio_out(&self) -> Option<(WebRtc, String)> {
        let out = self.webrtc.as_ref()?;
        Some((out.hub.clone(), self.path.as_str().to_owned()))
    }
}
