//! The policy when a consumer falls behind: drop video up to the next keyframe (a
//! decoder cannot use frames that reference dropped ones), keep audio while there is
//! room, and count every drop. Used wherever frames meet a bounded queue.

use crate::media::frame::Frame;

#[derive(Debug, Default)]
pub struct DropToKeyframe {
    /// Dropping video until the next keyframe.
    waiting_for_keyframe: bool,
    pub dropped: u64,
}

impl DropToKeyframe {
    /// Whether `frame` may be queued now; `has_room` says whether the queue can take it.
    /// Call `rejected` if the queue then refuses it anyway.
    pub fn admit(&mut self, frame: &Frame, has_room: bool) -> bool {
        if let Frame::Video(v) = frame {
            if self.waiting_for_keyframe && !v.keyframe {
                self.dropped += 1;
                return false;
            }
            self.waiting_for_keyframe = false;
        }
        if !has_room {
            self.rejected(frame);
            return false;
        }
        true
    }

    /// The queue refused `frame`: count it, and skip video to the next keyframe.
    pub fn rejected(&mut self, frame: &Frame) {
        self.dropped += 1;
        if matches!(frame, Frame::Video(_)) {
            self.waiting_for_keyframe = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::media::frame::{AudioFrame, VideoForm, VideoFrame};

    fn video(keyframe: bool) -> Frame {
        Frame::Video(VideoFrame {
            dts: 0,
            pts: 0,
            keyframe,
            data: Bytes::new(),
            form: VideoForm::AnnexB,
        })
    }

    #[test]
    fn a_full_queue_drops_video_to_the_next_keyframe_but_not_audio() {
        let mut p = DropToKeyframe::default();
        assert!(p.admit(&video(true), true));
        assert!(!p.admit(&video(false), false), "queue full");
        assert!(
            !p.admit(&video(false), true),
            "room again, but no keyframe yet"
        );
        let audio = Frame::Audio(AudioFrame {
            pts: 0,
            data: Bytes::new(),
        });
        assert!(p.admit(&audio, true), "audio goes on");
        assert!(p.admit(&video(true), true));
        assert!(p.admit(&video(false), true));
        assert_eq!(p.dropped, 2);
    }
}
