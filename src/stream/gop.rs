//! The GOP cache: the frames since the last keyframe, so that packaging and a new
//! FFmpeg always start at a keyframe with the whole group behind it.

use time::OffsetDateTime;

use crate::media::frame::{CodecConfig, Frame};

/// Cap on the cache: an encoder with a huge keyframe interval must not grow it without
/// bound. 64 MiB is a 20 s GOP at 25 Mbit/s.
pub const MAX_GOP_BYTES: usize = 64 * 1024 * 1024;
/// Audio-only streams: every frame is a random access point; keep about a second.
const AUDIO_ONLY_FRAMES: usize = 50;

#[derive(Debug, Default)]
pub struct GopCache {
    frames: Vec<Frame>,
    bytes: usize,
    /// When the first cached frame was ingested.
    started_at: Option<OffsetDateTime>,
}

impl GopCache {
    pub fn remember(&mut self, frame: &Frame, config: &CodecConfig, now: OffsetDateTime) {
        let starts_gop = match frame {
            Frame::Video(v) => v.keyframe,
            Frame::Audio(_) => config.video.is_none() && self.frames.len() >= AUDIO_ONLY_FRAMES,
        };
        if starts_gop {
            self.clear();
        }
        let size = frame.data().len();
        if self.bytes + size > MAX_GOP_BYTES {
            // Too long a GOP to keep: a start waits for the next keyframe instead.
            self.clear();
            return;
        }
        let usable = !self.frames.is_empty() || starts_gop || config.video.is_none();
        if usable {
            if self.frames.is_empty() {
                self.started_at = Some(now);
            }
            self.frames.push(frame.clone());
            self.bytes += size;
        }
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.started_at = None;
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn started_at(&self) -> Option<OffsetDateTime> {
        self.started_at
    }

    /// Whether the cache starts where packaging or encoding can: a keyframe with its
    /// configuration, or audio when the stream is known to be audio-only.
    pub fn can_start(&self, config: &CodecConfig, expect_video: Option<bool>) -> bool {
        match self.frames.first() {
            Some(Frame::Video(v)) => v.keyframe && config.video.is_some(),
            Some(Frame::Audio(_)) => {
                config.audio.is_some() && config.video.is_none() && expect_video == Some(false)
            }
            None => false,
        }
    }
}
