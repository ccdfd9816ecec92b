//! The StreamRegistry: which StreamSession is live for each publish path, and who
//! publishes to it. One publisher per path; a second one with a valid key takes over
//! (OBS reconnecting before the server noticed the old connection died), unless the
//! takeover setting is off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::session::{
    LiveStatus, PublisherChanged, PublisherLost, SessionContext, StreamSession, Superseded,
    Unpublished,
};
use super::supervision::{ActorKind, Intensity, escalate_to_root, fault_point, guard};
use crate::keys::PublishPath;

/// Tells a connection to close.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub reason: &'static str,
}

/// A connection with a valid key wants to publish to `path`.
#[derive(Message)]
#[rtype(result = "Result<Addr<StreamSession>, PublishRefused>")]
pub struct Publish {
    pub path: PublishPath,
    pub conn_id: u64,
    /// The publisher's arbiter: its session runs there too.
    pub arbiter: usize,
    pub disconnect: Recipient<Disconnect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefused {
    #[error("the stream is already being published")]
    AlreadyPublishing,
    #[error("the stream registry failed on this publish")]
    Failed,
}

/// The publisher of `path` went away (or was disconnected).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unpublish {
    pub path: PublishPath,
    pub conn_id: u64,
    pub reason: &'static str,
    /// The encoder said goodbye (deleteStream), or an operator ended it: end the stream
    /// now. Otherwise the connection just dropped, and the stream waits for a reconnect.
    pub clean: bool,
}

/// A session finished its stream (ENDLIST written); a new publish gets a new session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    pub path: PublishPath,
    pub session_id: u64,
}

/// Live status of one path (`None` when nobody publishes).
#[derive(Message)]
#[rtype(result = "Option<LiveStatus>")]
pub struct GetLive {
    pub path: PublishPath,
}

/// The paths with a publisher now.
#[derive(Message)]
#[rtype(result = "Vec<PublishPath>")]
pub struct LivePaths;

/// Disconnect the publisher of `path`; answers whether there was one.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Kick {
    pub path: PublishPath,
    pub reason: &'static str,
}

/// The server is shutting down: every publisher is disconnected, so every stream ends
/// cleanly (ENDLIST). Answers how many streams it ended.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct EndAll;

/// How many sessions exist (live, waiting for a reconnect, or finishing).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SessionCount;

struct Publisher {
    conn_id: u64,
    disconnect: Recipient<Disconnect>,
}

struct Entry {
    session: Addr<StreamSession>,
    session_id: u64,
    publisher: Option<Publisher>,
    /// Lost its publisher without a goodbye: the drop's number and its grace timer,
    /// cancelled when the encoder comes back, so a second drop within the grace gets a
    /// grace of its own (the first drop's timer must not end the stream).
    awaiting_reconnect: Option<(u64, SpawnHandle)>,
    /// The session's restarts, against [`SESSION_RESTARTS`].
    restarts: Intensity,
}

pub struct StreamRegistry {
    takeover: bool,
    reconnect_grace: Duration,
    /// This registry's own panics, against [`REGISTRY_PANICS`].
    panics: Intensity,
    context: Arc<SessionContext>,
    entries: HashMap<PublishPath, Entry>,
    next_session_id: u64,
    next_drop: u64,
}

impl StreamRegistry {
    pub fn new(takeover: bool, reconnect_grace: Duration, context: Arc<SessionContext>) -> Self {
        Self {
            takeover,
            reconnect_grace,
            panics: Intensity::new(REGISTRY_PANICS, INTENSITY_PERIOD),
            context,
            entries: HashMap::new(),
            next_session_id: 1,
            next_drop: 0,
        }
    }
}

impl Actor for StreamRegistry {
    type Context = Context<Self>;
}

/// The registry's own restart intensity: past this many panics a minute its state is
/// not to be trusted, and it escalates to the root (a clean shutdown and a restart).
const REGISTRY_PANICS: usize = 10;
/// A stream session restarted more than this often a minute escalates to the registry,
/// which ends its stream the way a clean stop would.
const SESSION_RESTARTS: usize = 3;
const INTENSITY_PERIOD: Duration = Duration::from_secs(60);

impl StreamRegistry {
    /// Runs a handler. A panic would end the registry's task and with it every publish to
    /// come: instead that one message fails (logged) and the registry goes on, its
    /// entries (and so every stream) untouched, up to its restart intensity.
    fn guarded<R>(
        &mut self,
        what: &'static str,
        path: &str,
        fallback: R,
        handler: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let result = guard(ActorKind::Registry, || {
            fault_point(ActorKind::Registry, path);
            handler(self)
        });
        match result {
            Ok(result) => result,
            Err(detail) => {
                tracing::error!(handler = what, panic = %detail, "stream registry handler panicked; the registry goes on");
                if !self.panics.allow(Instant::now()) {
                    escalate_to_root("stream registry");
                }
                fallback
            }
        }
    }
}

impl Handler<Publish> for StreamRegistry {
    type Result = Result<Addr<StreamSession>, PublishRefused>;

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) -> Self::Result {
        let path = msg.path.clone();
        self.guarded(
            "publish",
            path.as_str(),
            Err(PublishRefused::Failed),
            |this| this.publish(msg, ctx),
        )
    }
}

impl StreamRegistry {
    fn publish(
        &mut self,
        msg: Publish,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<StreamSession>, PublishRefused> {
        let publisher = Publisher {
            conn_id: msg.conn_id,
            disconnect: msg.disconnect,
        };
        if let Some(entry) = self.entries.get_mut(&msg.path)
            && entry.session.connected()
        {
            if let Some((_, grace)) = entry.awaiting_reconnect.take() {
                tracing::info!(publish_path = %msg.path, conn = msg.conn_id, "publisher reconnected");
                ctx.cancel_future(grace);
                entry.session.do_send(PublisherChanged {
                    conn_id: msg.conn_id,
                });
                entry.publisher = Some(publisher);
                return Ok(entry.session.clone());
            }
            if let Some(old) = &entry.publisher {
                if !self.takeover {
                    return Err(PublishRefused::AlreadyPublishing);
                }
                tracing::info!(
                    publish_path = %msg.path,
                    old_conn = old.conn_id,
                    new_conn = msg.conn_id,
                    "publisher taken over"
                );
                old.disconnect.do_send(Disconnect {
                    reason: "taken over by a new publisher with the same key",
                });
                entry.session.do_send(PublisherChanged {
                    conn_id: msg.conn_id,
                });
                entry.publisher = Some(publisher);
                return Ok(entry.session.clone());
            }
            // The stream is ending (no publisher): let it finish; a new session
            // takes the path over.
            entry.session.do_send(Superseded);
        }
        let session_id = self.next_session_id;
        self.next_session_id += 1;
        let context = Arc::clone(&self.context);
        // The publisher's own thread: every frame then goes from connection to session
        // without waking another thread.
        let arbiter = context.arbiters.handle(msg.arbiter).clone();
        let (path, conn_id, registry) = (msg.path.clone(), msg.conn_id, ctx.address());
        let session = StreamSession::start_in_arbiter(&arbiter, move |_| {
            StreamSession::new(session_id, path, conn_id, context, registry)
        });
        self.entries.insert(
            msg.path,
            Entry {
                session: session.clone(),
                session_id,
                publisher: Some(publisher),
                awaiting_reconnect: None,
                restarts: Intensity::new(SESSION_RESTARTS, INTENSITY_PERIOD),
            },
        );
        Ok(session)
    }
}

impl Handler<Unpublish> for StreamRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unpublish, ctx: &mut Context<Self>) {
        let path = msg.path.clone();
        let (conn_id, reason, clean) = (msg.conn_id, msg.reason, msg.clean);
        let done = self.guarded("unpublish", path.as_str(), false, |this| {
            this.unpublish(msg, ctx);
            true
        });
        if done {
            return;
        }
        // A lost goodbye would leave the session live with nobody publishing, for good:
        // whatever the panic left done, the publisher is let go of now. Should even that
        // panic, the session ends as a clean stop would.
        let repaired = self.guarded("unpublish repair", path.as_str(), false, |this| {
            let entry = this.entries.get(&path);
            let ours = entry.is_some_and(|e| {
                e.publisher.as_ref().is_none_or(|p| p.conn_id == conn_id)
                    && e.awaiting_reconnect.is_none()
            });
            if ours {
                this.lose_publisher(&path, reason, clean, ctx);
            }
            true
        });
        if !repaired && let Some(entry) = self.entries.get_mut(&path) {
            entry.publisher = None;
            entry.session.do_send(Unpublished { reason });
        }
    }
}

impl StreamRegistry {
    fn unpublish(&mut self, msg: Unpublish, ctx: &mut Context<Self>) {
        let Some(entry) = self.entries.get(&msg.path) else {
            return;
        };
        // A connection that lost a takeover says goodbye late: not ours to end.
        if entry.publisher.as_ref().map(|p| p.conn_id) != Some(msg.conn_id) {
            return;
        }
        self.lose_publisher(&msg.path, msg.reason, msg.clean, ctx);
    }

    /// The path's publisher is gone: a clean goodbye ends the stream now, a drop starts
    /// the reconnect grace.
    fn lose_publisher(
        &mut self,
        path: &PublishPath,
        reason: &'static str,
        clean: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.entries.get_mut(path) else {
            return;
        };
        entry.publisher = None;
        if clean {
            entry.session.do_send(Unpublished { reason });
            return;
        }
        // The grace timer lives here, not in the session, so that a reconnect and the
        // end of the grace can never cross.
        entry.session.do_send(PublisherLost);
        let session_id = entry.session_id;
        self.next_drop += 1;
        let drop = self.next_drop;
        let timed = path.clone();
        let grace = ctx.run_later(self.reconnect_grace, move |this, _| {
            let Some(entry) = this.entries.get_mut(&timed) else {
                return;
            };
            if entry.session_id == session_id
                && entry.awaiting_reconnect.is_some_and(|(d, _)| d == drop)
            {
                entry.awaiting_reconnect = None;
                entry.session.do_send(Unpublished { reason });
            }
        });
        if let Some(entry) = self.entries.get_mut(path) {
            entry.awaiting_reconnect = Some((drop, grace));
        }
    }
}

impl Handler<SessionEnded> for StreamRegistry {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _: &mut Context<Self>) {
        let path = msg.path.clone();
        self.guarded("session ended", path.as_str(), (), |this| {
            if this
                .entries
                .get(&msg.path)
                .is_some_and(|e| e.session_id == msg.session_id)
                && let Some(entry) = this.entries.remove(&msg.path)
                && let Some(publisher) = entry.publisher
            {
                // A session ends with a publisher still on only when it failed.
                publisher.disconnect.do_send(Disconnect {
                    reason: "the stream session failed",
                });
            }
        })
    }
}

/// A session's handler panicked; answers whether it restarts (from its checkpoint) or,
/// past [`SESSION_RESTARTS`] a minute, ends its stream.
#[derive(Message)]
#[rtype(result = "SessionVerdict")]
pub struct SessionCrashed {
    pub path: PublishPath,
    pub session_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum SessionVerdict {
    Restart,
    End,
}

impl Handler<SessionCrashed> for StreamRegistry {
    type Result = SessionVerdict;

    fn handle(&mut self, msg: SessionCrashed, _: &mut Context<Self>) -> SessionVerdict {
        let path = msg.path.clone();
        self.guarded("session crashed", path.as_str(), SessionVerdict::End, |this| {
            match this.entries.get_mut(&msg.path) {
                Some(entry) if entry.session_id == msg.session_id => {
                    if entry.restarts.allow(Instant::now()) {
                        SessionVerdict::Restart
                    } else {
                        tracing::error!(publish_path = %msg.path, "stream session exceeded its restart intensity; ending the stream");
                        SessionVerdict::End
                    }
                }
                _ => SessionVerdict::End,
            }
        })
    }
}

impl Handler<GetLive> for StreamRegistry {
    type Result = ResponseFuture<Option<LiveStatus>>;

    fn handle(&mut self, msg: GetLive, _: &mut Context<Self>) -> Self::Result {
        let path = msg.path.clone();
        let session = self.guarded("get live", path.as_str(), None, |this| {
            this.entries
                .get(&msg.path)
                .filter(|e| e.publisher.is_some())
                .map(|e| e.session.clone())
        });
        Box::pin(async move {
            match session {
                Some(s) => s.send(super::session::GetStatus).await.ok(),
                None => None,
            }
        })
    }
}

impl Handler<LivePaths> for StreamRegistry {
    type Result = Vec<PublishPath>;

    fn handle(&mut self, _: LivePaths, _: &mut Context<Self>) -> Vec<PublishPath> {
        self.guarded("live paths", "", Vec::new(), |this| {
            this.entries
                .iter()
                .filter(|(_, e)| e.publisher.is_some())
                .map(|(p, _)| p.clone())
                .collect()
        })
    }
}

impl Handler<Kick> for StreamRegistry {
    type Result = bool;

    fn handle(&mut self, msg: Kick, _: &mut Context<Self>) -> bool {
        let path = msg.path.clone();
        self.guarded("kick", path.as_str(), false, |this| {
            match this
                .entries
                .get(&msg.path)
                .and_then(|e| e.publisher.as_ref())
            {
                Some(p) => {
                    p.disconnect.do_send(Disconnect { reason: msg.reason });
                    true
                }
                None => false,
            }
        })
    }
}

impl Handler<EndAll> for StreamRegistry {
    type Result = usize;

    /// Not under the fault hook: shutdown is how an escalation ends, and must work.
    fn handle(&mut self, _: EndAll, _: &mut Context<Self>) -> usize {
        let mut ending = 0;
        for entry in self.entries.values_mut() {
            if let Some(p) = &entry.publisher {
                p.disconnect.do_send(Disconnect {
                    reason: "server shutting down",
                });
                ending += 1;
            } else if entry.awaiting_reconnect.take().is_some() {
                entry.session.do_send(Unpublished {
                    reason: "server shutting down",
                });
                ending += 1;
            }
        }
        ending
    }
}

impl Handler<SessionCount> for StreamRegistry {
    type Result = usize;

    fn handle(&mut self, _: SessionCount, _: &mut Context<Self>) -> usize {
        self.entries
            .values()
            .filter(|e| e.session.connected())
            .count()
    }
}
