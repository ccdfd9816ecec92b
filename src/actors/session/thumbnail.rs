//! A session's thumbnail: every `hls.thumbnail_seconds`, the next source keyframe is
//! turned into `thumbnail.jpg` (off the session's thread), which goes where the
//! playlists go: the data dir and S3.

use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use super::StreamSession;
use crate::hls::packager::Output;
use crate::media::frame::Frame;
use crate::transcode::thumbnail;

/// When the last thumbnail was started, and whether one is being made.
#[derive(Default)]
pub(super) struct Thumbnails {
    last: Option<Instant>,
    busy: bool,
}

impl StreamSession {
    /// A source frame came in: start a thumbnail from it if it is a keyframe and one
    /// is due.
    pub(super) fn thumbnail(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        let every = self.context.settings.hls.thumbnail_seconds;
        let Frame::Video(video) = frame else { return };
        let due = self
            .thumbnails
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(every));
        if every == 0 || !video.keyframe || self.thumbnails.busy || !due {
            return;
        }
        self.thumbnails.busy = true;
        self.thumbnails.last = Some(Instant::now());
        let program = self.context.settings.hls.ffmpeg_path.clone();
        let keyframe = video.data.clone();
        let make = async move { thumbnail::jpeg(&program, &keyframe, thumbnail::HEIGHT).await };
        ctx.spawn(make.into_actor(self).map(|made, this, _| {
            this.thumbnails.busy = false;
            match made {
                Ok(jpeg) => this.apply(vec![Output::Thumbnail {
                    data: Bytes::from(jpeg),
                }]),
                Err(e) => tracing::warn!(parent: &this.span, error = %e, "no thumbnail"),
            }
        }));
    }
}
