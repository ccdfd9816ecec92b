//! A stream session under its supervisor, the registry. A handler that panics does not
//! end the stream: the session asks the registry, which restarts it (up to its restart
//! intensity) from the session's checkpoint, in place. The publisher's connection keeps
//! the same address and goes on sending; viewers see one DISCONTINUITY and the media
//! sequence goes forward. Past the intensity, the stream ends as a clean stop would.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use time::OffsetDateTime;

use super::StreamSession;
use crate::actors::registry::{SessionCrashed, SessionEnded, SessionVerdict};
use crate::actors::supervision::{ActorKind, fault_point, guard, restarted};
use crate::stream::backpressure::DropToKeyframe;
use crate::stream::core::Phase;

impl StreamSession {
    /// Runs a handler under the panic guard (and the crash tests' fault point).
    pub(super) fn guarded(
        &mut self,
        ctx: &mut Context<Self>,
        handler: impl FnOnce(&mut Self, &mut Context<Self>),
    ) {
        let path = self.path.clone();
        let result = guard(ActorKind::Session, || {
            fault_point(ActorKind::Session, path.as_str());
            handler(self, ctx)
        });
        if let Err(detail) = result {
            self.crashed(detail, ctx);
        }
    }

    fn crashed(&mut self, detail: String, ctx: &mut Context<Self>) {
        // The encode belonged to the crashed state; a restart starts its own.
        self.kill_encoder();
        if self.core.phase != Phase::Live {
            tracing::error!(parent: &self.span, panic = %detail, "stream session panicked while ending; ending the stream");
            self.end_after_crash(ctx);
            return;
        }
        tracing::error!(parent: &self.span, panic = %detail, "stream session panicked; its supervisor decides");
        let ask = self.registry.send(SessionCrashed {
            path: self.path.clone(),
            session_id: self.id,
        });
        // Holds the mailbox: no frame reaches the crashed state.
        ctx.wait(
            ask.into_actor(self)
                .map(|verdict, this, ctx| match verdict {
                    Ok(SessionVerdict::Restart) => this.restart(ctx),
                    _ => this.end_after_crash(ctx),
                }),
        );
    }

    fn restart(&mut self, ctx: &mut Context<Self>) {
        restarted(ActorKind::Session);
        let files_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (core, actions) = self.checkpoint.restart(
            self.context.settings.hls.clone(),
            files_epoch,
            &self.core,
            OffsetDateTime::now_utc(),
        );
        self.core = core;
        // A fresh live edge: the old one holds parts of a segment the checkpoint does
        // not list, under sequence numbers the restarted core gives out again.
        self.edge = self.context.live.open(self.path.as_str());
        self.sink.set_edge(Arc::clone(&self.edge));
        self.edge.set_awaiting_publisher(self.publisher.is_none());
        self.to_transcoder = DropToKeyframe::default();
        self.drops_reported = 0;
        self.thumbnails = Default::default();
        let next_msn = self
            .checkpoint
            .state
            .as_ref()
            .and_then(|s| s.renditions.first())
            .map(|r| r.next_msn());
        tracing::warn!(parent: &self.span, ?next_msn, "stream session restarted from its checkpoint");
        self.guarded(ctx, |this, ctx| this.perform(actions, ctx));
    }

    /// Ends the stream as a clean stop would (ENDLIST), and the registry disconnects the
    /// publisher. Should even that panic, the session just stops.
    fn end_after_crash(&mut self, ctx: &mut Context<Self>) {
        self.publisher = None;
        if let Err(detail) = guard(ActorKind::Session, || self.end_now(ctx)) {
            tracing::error!(parent: &self.span, panic = %detail, "stream session cannot end cleanly; stopping it");
            self.registry.do_send(SessionEnded {
                path: self.path.clone(),
                session_id: self.id,
            });
            ctx.stop();
        }
    }
}
