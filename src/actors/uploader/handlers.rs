//! The uploader's messages: the packager's outputs, the stream's end, and a kick to go
//! on with the queue. Each runs under [`Uploader::guarded`].

use actix::prelude::*;

use super::{Uploader, now_ms};
use crate::delivery::objects::{recording_item, stream_item};
use crate::hls::packager::Output;
use crate::hls::recording::RecordingBatch;

/// The packager's outputs for this stream, in order; `fence`: the session's lease token
/// in a cluster.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub outputs: Vec<Output>,
    pub fence: Option<u64>,
    /// What a recording keeps of these outputs (queued after them).
    pub recording: Option<RecordingBatch>,
}

/// The stream ended: once the queue is empty, its upload series can go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamEnded;

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Kick;

impl Handler<Deliver> for Uploader {
    type Result = ();

    fn handle(
        &mut self,
        Deliver {
            outputs,
            fence,
            recording,
        }: Deliver,
        ctx: &mut Context<Self>,
    ) {
        self.guarded(ctx, "deliver", |this, ctx| {
            this.deliver(outputs, fence, recording, ctx)
        });
    }
}

impl Uploader {
    fn deliver(
        &mut self,
        outputs: Vec<Output>,
        fence: Option<u64>,
        recording: Option<RecordingBatch>,
        ctx: &mut Context<Self>,
    ) {
        self.stream_live = true;
        if self.spool.is_some() {
            self.tick(ctx);
        }
        let grace = self.delete_grace;
        let now = now_ms();
        let recorded = recording.into_iter().flat_map(|batch| {
            let id = batch.id;
            batch
                .outputs
                .into_iter()
                .filter_map(move |o| recording_item(id, o))
        });
        let items = outputs
            .into_iter()
            .filter_map(|o| stream_item(o, grace, fence, now))
            .chain(recorded)
            .collect();
        self.queue(items, ctx);
    }
}

impl Handler<StreamEnded> for Uploader {
    type Result = ();

    fn handle(&mut self, _: StreamEnded, _: &mut Context<Self>) {
        self.stream_live = false;
        self.update_depth();
    }
}

impl Handler<Kick> for Uploader {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.guarded(ctx, "kick", Self::kick);
    }
}
