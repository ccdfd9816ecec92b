//! What both front doors (RTMP and SRT connections) do with a publisher: check its key
//! (the key store, then the operator's publish hook), and once the registry gave it a
//! session, pass its frames on through a [`PublishLink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;

use super::registry::{StreamRegistry, Unpublish};
use super::rtmp_conn::IngestContext;
use super::session::{Ingest, IngestInput, StreamSession};
use crate::hooks::{HookEvent, Hooks, Verdict};
use crate::keys::PublishPath;
use crate::keys::authorizer::{AuthorizeError, Decision, PublishAuthorizer, Refusal};
use crate::media::frame::Frame;
use crate::metrics::METRICS;
use crate::stream::backpressure::DropToKeyframe;

/// Connection ids, unique over both front doors (the registry tells publishers apart
/// by them).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub fn next_connection_id() -> u64 {
    NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)
}

/// The key store's answer, then the publish hook's when the key is good.
pub async fn check_publish(
    authorizer: PublishAuthorizer,
    hooks: Option<Arc<Hooks>>,
    app: String,
    key: String,
    peer: String,
) -> Result<Decision, AuthorizeError> {
    let decision = authorizer.authorize(&app, &key, &peer).await?;
    if let (Decision::Allowed(path), Some(hooks)) = (&decision, hooks) {
        let ask = HookEvent::new("publish", path, Some(peer));
        if hooks.ask_publish(&ask).await == Verdict::Refuse {
            return Ok(Decision::Refused(Refusal::Hook));
        }
    }
    Ok(decision)
}

/// A publishing connection's link to its stream session.
pub struct PublishLink {
    pub path: PublishPath,
    pub session: Addr<StreamSession>,
    conn_id: u64,
    registry: Addr<StreamRegistry>,
    /// Frames the session's full mailbox refused drop to the next keyframe.
    policy: DropToKeyframe,
}

impl PublishLink {
    /// The registry gave `conn_id` the path: counted, logged on the connection's span,
    /// and told to the events hook.
    pub fn accepted(
        context: &IngestContext,
        path: PublishPath,
        session: Addr<StreamSession>,
        conn_id: u64,
        peer: std::net::SocketAddr,
        span: &tracing::Span,
    ) -> Self {
        METRICS
            .publish_attempts
            .with_label_values(&["accepted"])
            .inc();
        span.record("publish_path", tracing::field::display(&path));
        tracing::info!(parent: span, "publish accepted");
        if let Some(hooks) = &context.hooks {
            hooks.notify(HookEvent::new(
                "publish_started",
                &path,
                Some(peer.to_string()),
            ));
        }
        Self {
            path,
            session,
            conn_id,
            registry: context.registry.clone(),
            policy: DropToKeyframe::default(),
        }
    }

    /// A frame for the session; dropped (to the next keyframe) when it cannot keep up.
    pub fn frame(&mut self, frame: Frame) {
        let dropped = || {
            METRICS
                .frames_dropped
                .with_label_values(&[self.path.as_str()])
                .inc()
        };
        if !self.policy.admit(&frame, self.session.connected()) {
            dropped();
            return;
        }
        let msg = Ingest {
            conn_id: self.conn_id,
            input: IngestInput::Frame(frame),
        };
        if let Err(SendError::Full(Ingest {
            input: IngestInput::Frame(f),
            ..
        })) = self.session.try_send(msg)
        {
            dropped();
            self.policy.rejected(&f);
        }
    }

    /// Configs and metadata must not be dropped: they go even into a full mailbox.
    pub fn input(&self, input: IngestInput) {
        self.session.do_send(Ingest {
            conn_id: self.conn_id,
            input,
        });
    }

    /// Tells the registry this connection stopped publishing: `clean` for a stop the
    /// streamer asked for (the stream ends at once), otherwise the reconnect grace runs.
    pub fn unpublish(self, reason: &'static str, clean: bool, span: &tracing::Span) {
        tracing::info!(parent: span, publish_path = %self.path, reason, clean, dropped_frames = self.policy.dropped, "unpublish");
        self.registry.do_send(Unpublish {
            path: self.path,
            conn_id: self.conn_id,
            reason,
            clean,
        });
    }
}
