//! A session's thumbnail, which goes to the live edge and where the playlists go (the
//! data dir and S3). A ladder's FFmpeg, which decodes the source anyway, makes one every
//! `hls.thumbnail_seconds`. Otherwise (passthrough, a source with no rung below it, an
//! encode on a transcoder worker) it is made on demand: when a viewer has asked for a
//! newer picture (`delivery::thumbnail`), the next source keyframe is turned into
//! `thumbnail.jpg` (off the session's thread). No viewer, no FFmpeg.

use actix::prelude::*;
use bytes::Bytes;

use super::{EncodedThumbnail, StreamSession};
use crate::hls::packager::Output;
use crate::media::frame::Frame;
use crate::media::sample::annexb_frame;
use crate::transcode::thumbnail;

#[derive(Default)]
pub(super) struct Thumbnails {
    /// A picture is being made on demand.
    busy: bool,
    /// When the ladder's FFmpeg last gave one.
    from_ladder: Option<std::time::Instant>,
}

impl Handler<EncodedThumbnail> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: EncodedThumbnail, _: &mut Context<Self>) {
        if self.encoder.as_ref().map(|e| e.generation) != Some(msg.generation) {
            return;
        }
        self.thumbnails.from_ladder = Some(std::time::Instant::now());
        self.apply(vec![Output::Thumbnail { data: msg.jpeg }]);
    }
}

impl StreamSession {
    /// A source frame came in: make a picture of it if it is a keyframe, a viewer asked
    /// for one, and the ladder's FFmpeg is not making them.
    pub(super) fn thumbnail(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        let Frame::Video(video) = frame else { return };
        let every = self.context.settings.hls.thumbnail_seconds;
        // Two intervals without one from the ladder: its FFmpeg is gone or elsewhere.
        let ladder_makes_them = self
            .thumbnails
            .from_ladder
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2 * every));
        if every == 0
            || ladder_makes_them
            || !video.keyframe
            || self.thumbnails.busy
            || !self.edge.thumbnail.take_wanted()
        {
            return;
        }
        let Some(config) = self.core.config.video.as_deref() else {
            return;
        };
        let video = match annexb_frame(video, Some(config)) {
            Ok(video) => video,
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "no thumbnail");
                return;
            }
        };
        let (format, keyframe) = thumbnail::input(config, &video.data);
        self.thumbnails.busy = true;
        let program = self.context.settings.hls.ffmpeg_path.clone();
        let make =
            async move { thumbnail::jpeg(&program, format, &keyframe, thumbnail::HEIGHT).await };
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
