//! Puts the frames of two tracks back in time order. An MPEG-TS muxer may send one
//! track well ahead of the other (FFmpeg's holds audio back up to 0.7 s and sends it in
//! batches), while the rest of Kawa takes frames as RTMP gives them: interleaved, each
//! track's frames arriving about when their time comes. A track that falls silent holds
//! the other back for at most [`MAX_WAIT`].

use std::collections::VecDeque;

use super::frame::Frame;
use super::time::TICKS_PER_SECOND;

/// How far the newest frame may get ahead of one still held for the other track.
pub const MAX_WAIT: i64 = TICKS_PER_SECOND;
/// Frames held at most (more than a second of any real stream).
pub const MAX_HELD: usize = 512;

fn time(frame: &Frame) -> i64 {
    match frame {
        Frame::Video(v) => v.dts,
        Frame::Audio(a) => a.pts,
    }
}

#[derive(Debug, Default)]
pub struct Interleaver {
    video: VecDeque<Frame>,
    audio: VecDeque<Frame>,
    newest: Option<i64>,
}

impl Interleaver {
    pub fn push(&mut self, frame: Frame) {
        let t = time(&frame);
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        match frame {
            Frame::Video(_) => self.video.push_back(frame),
            Frame::Audio(_) => self.audio.push_back(frame),
        }
    }

    pub fn len(&self) -> usize {
        self.video.len() + self.audio.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long the oldest held frame has waited, in stream time.
    pub fn waited(&self) -> i64 {
        let oldest = [self.video.front(), self.audio.front()]
            .into_iter()
            .flatten()
            .map(time)
            .min();
        match (oldest, self.newest) {
            (Some(oldest), Some(newest)) => newest - oldest,
            _ => 0,
        }
    }

    /// Passes on, in time order, every frame that cannot be overtaken any more: with
    /// `both` tracks expected, a frame goes once the other track has one as old, or
    /// once it has waited [`MAX_WAIT`]; `all` passes everything (the input changes).
    pub fn drain(&mut self, both: bool, all: bool, out: &mut impl FnMut(Frame)) {
        loop {
            let overdue = all || self.len() > MAX_HELD;
            let newest = self.newest.unwrap_or(i64::MIN);
            let may_go = |f: &Frame| !both || overdue || newest - time(f) >= MAX_WAIT;
            let video_next = match (self.video.front(), self.audio.front()) {
                (Some(v), Some(a)) => time(v) <= time(a),
                (Some(v), None) if may_go(v) => true,
                (None, Some(a)) if may_go(a) => false,
                _ => return,
            };
            let next = if video_next {
                self.video.pop_front()
            } else {
                self.audio.pop_front()
            };
            if let Some(frame) = next {
                out(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{AudioFrame, VideoForm, VideoFrame};
    use bytes::Bytes;

    fn video(dts: i64) -> Frame {
        Frame::Video(VideoFrame {
            dts,
            pts: dts,
            keyframe: false,
            data: Bytes::new(),
            form: VideoForm::AnnexB,
        })
    }

    fn audio(pts: i64) -> Frame {
        Frame::Audio(AudioFrame {
            pts,
            data: Bytes::new(),
        })
    }

    fn drained(i: &mut Interleaver, both: bool, all: bool) -> Vec<i64> {
        let mut out = Vec::new();
        i.drain(both, all, &mut |f| out.push(time(&f)));
        out
    }

    #[test]
    fn audio_sent_late_in_batches_comes_out_in_time_order() {
        let mut i = Interleaver::default();
        // Video every 40 ms (3600 ticks) runs 0.5 s ahead, then audio for it arrives.
        for n in 0..13 {
            i.push(video(n * 3600));
        }
        assert_eq!(drained(&mut i, true, false), Vec::<i64>::new());
        for n in 0..10 {
            i.push(audio(n * 1920 * 2));
        }
        let out = drained(&mut i, true, false);
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
        // Video up to the newest audio went; the rest waits for more audio.
        assert_eq!(*out.last().unwrap(), 9 * 3840);
        let rest = i.len();
        assert!(rest > 0);
        assert_eq!(drained(&mut i, true, true).len(), rest);
    }

    #[test]
    fn a_silent_track_holds_the_other_back_for_a_second_at_most() {
        let mut i = Interleaver::default();
        for n in 0..=25 {
            i.push(video(n * 3600));
        }
        // 25 frames = 1 s: the first has waited MAX_WAIT and goes; the rest wait on.
        assert_eq!(drained(&mut i, true, false), vec![0]);
        // One track only: nothing waits.
        assert_eq!(drained(&mut i, false, false).len(), 25);
    }

    #[test]
    fn never_holds_more_than_its_cap() {
        let mut i = Interleaver::default();
        for _ in 0..=MAX_HELD {
            i.push(video(0));
        }
        assert_eq!(drained(&mut i, true, false).len(), 1);
        assert_eq!(i.len(), MAX_HELD);
    }
}
