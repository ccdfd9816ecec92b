//! A session's thumbnail, on demand: when a viewer has asked for a newer picture
//! (`delivery::thumbnail`), the next source keyframe is turned into `thumbnail.jpg` (off
//! the session's thread), which goes to the live edge and where the playlists go: the
//! data dir and S3. No viewer, no FFmpeg.

use actix::prelude::*;
use bytes::Bytes;

use super::StreamSession;
use crate::hls::packager::Output;
use crate::media::frame::Frame;
use crate::transcode::thumbnail;

/// Whether a picture is being made.
#[derive(Default)]
pub(super) struct Thumbnails {
    busy: bool,
}

impl StreamSession {
    /// A source frame came in: make a picture of it if it is a keyframe and a viewer
    /// asked for one.
    pub(super) fn thumbnail(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        let Frame::Video(video) = frame else { return };
        if self.context.settings.hls.thumbnail_seconds == 0
            || !video.keyframe
            || self.thumbnails.busy
            || !self.edge.thumbnail.take_wanted()
        {
            return;
        }
        self.thumbnails.busy = true;
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
