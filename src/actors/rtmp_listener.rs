//! The RTMP listener: accepts TCP connections (bounded by `rtmp.max_connections`) and
//! starts an [`RtmpConnection`] for each.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::rtmp_conn::{IngestContext, RtmpConnection};
use crate::metrics::METRICS;

pub struct RtmpListener {
    listener: Option<TcpListener>,
    context: Arc<IngestContext>,
}

impl RtmpListener {
    pub fn new(listener: TcpListener, context: Arc<IngestContext>) -> Self {
        Self {
            listener: Some(listener),
            context,
        }
    }
}

impl Actor for RtmpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let context = Arc::clone(&self.context);
        let limit = Arc::new(Semaphore::new(context.settings.rtmp.max_connections));
        let accept_loop = async move {
            let mut next_id = 1u64;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                            METRICS
                                .rtmp_connections_closed
                                .with_label_values(&["limit"])
                                .inc();
                            tracing::warn!(%peer, "RTMP connection limit reached; closing new connection");
                            drop(stream);
                            continue;
                        };
                        METRICS.rtmp_connections_accepted.inc();
                        let id = next_id;
                        next_id += 1;
                        RtmpConnection::new(id, stream, peer, Arc::clone(&context), permit).start();
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(error = %e, "RTMP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        ctx.spawn(accept_loop.into_actor(self));
    }
}
