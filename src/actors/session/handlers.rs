//! The StreamSession's message handlers: each hands its event to the core (under the
//! panic guard) and performs the actions that come back.

use actix::prelude::*;
use time::OffsetDateTime;

use super::StreamSession;
use super::messages::*;
use crate::stream::core::Phase;

impl StreamSession {
    fn on_ingest(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        if self.publisher != Some(msg.conn_id) || self.core.phase != Phase::Live {
            return;
        }
        let actions = match msg.input {
            IngestInput::Metadata { has_video } => {
                self.checkpoint.expect_video = Some(has_video);
                self.core.set_expect_video(has_video);
                Vec::new()
            }
            IngestInput::Config(config) => {
                self.checkpoint.config = config.clone();
                self.core.on_config(config)
            }
            IngestInput::Frame(frame) => {
                self.record_ingest(&frame);
                self.thumbnail(&frame, ctx);
                self.webrtc_source(&frame);
                self.core.on_frame(frame, OffsetDateTime::now_utc())
            }
        };
        self.perform(actions, ctx);
    }
}

impl Handler<Ingest> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| this.on_ingest(msg, ctx));
    }
}

impl Handler<PublisherChanged> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: PublisherChanged, ctx: &mut Context<Self>) {
        // The new connection's timestamps start again from zero: packaging starts over
        // at its first keyframe, with a discontinuity.
        self.publisher = Some(msg.conn_id);
        self.edge.set_awaiting_publisher(false);
        self.guarded(ctx, |this, ctx| {
            let actions = this.core.on_publisher_reset();
            this.perform(actions, ctx);
        });
    }
}

impl Handler<Unpublished> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: Unpublished, ctx: &mut Context<Self>) {
        if self.core.phase != Phase::Live {
            return;
        }
        tracing::info!(parent: &self.span, reason = msg.reason, "unpublished");
        self.publisher = None;
        self.guarded(ctx, |this, ctx| {
            let actions = this.core.on_unpublished();
            this.perform(actions, ctx);
        });
    }
}

impl Handler<PublisherLost> for StreamSession {
    type Result = ();

    fn handle(&mut self, _: PublisherLost, ctx: &mut Context<Self>) {
        tracing::info!(parent: &self.span, "publisher lost; waiting for it to reconnect");
        self.publisher = None;
        // Viewers are sent to the path's lease holder, should that be another node now.
        self.edge.set_awaiting_publisher(true);
        self.guarded(ctx, |this, ctx| {
            let actions = this.core.on_publisher_reset();
            this.perform(actions, ctx);
        });
    }
}

impl Handler<Superseded> for StreamSession {
    type Result = ();

    fn handle(&mut self, _: Superseded, _: &mut Context<Self>) {
        self.superseded = true;
    }
}

impl Handler<Encoded> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: Encoded, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| {
            if this
                .encoder
                .as_ref()
                .is_some_and(|e| e.generation == msg.generation)
            {
                this.webrtc_rungs(&msg.frames);
            }
            let actions = this.core.on_encoded(msg.generation, msg.frames);
            this.perform(actions, ctx);
        });
    }
}

impl Handler<TranscoderExited> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: TranscoderExited, ctx: &mut Context<Self>) {
        let current = self
            .encoder
            .as_ref()
            .is_some_and(|e| e.generation == msg.generation);
        tracing::info!(parent: &self.span, generation = msg.generation, status = %msg.status, current, "FFmpeg exited");
        if current {
            self.encoder = None;
            self.worker_lost = msg.worker_lost;
            self.metrics.ffmpeg_running.set(0);
            if self.core.phase == Phase::Live {
                tracing::warn!(parent: &self.span, generation = msg.generation, "FFmpeg died mid-stream; restarting");
            }
        }
        self.guarded(ctx, |this, ctx| {
            let actions = this.core.on_encoder_exited(msg.generation);
            this.perform(actions, ctx);
        });
    }
}

impl Handler<GetStatus> for StreamSession {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let ingest_kbps = self.kbps();
        let config = &self.core.config;
        MessageResult(LiveStatus {
            since: self
                .since
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            ingest_kbps,
            renditions: self.core.packager.rendition_names(),
            video: config.video.as_ref().map(|v| {
                format!(
                    "{} {}x{}",
                    v.codec_string(),
                    v.info().width,
                    v.info().height
                )
            }),
            audio: config.audio.as_ref().map(|a| {
                format!(
                    "{} {} Hz {} ch",
                    a.asc.codec_string(),
                    a.asc.sample_rate,
                    a.asc.channels()
                )
            }),
            frames_dropped: self.metrics.frames_dropped.get(),
            transcoder_restarts: self.total_restarts,
            transcoder_running: self.encoder.is_some(),
        })
    }
}

impl Handler<LeaseLost> for StreamSession {
    type Result = ();

    fn handle(&mut self, _: LeaseLost, ctx: &mut Context<Self>) {
        self.lease_lost(ctx);
    }
}
