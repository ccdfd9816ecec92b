//! One SRT caller: its key is checked while its handshake waits, then the connection is
//! accepted, the path claimed in the registry, and its MPEG-TS turned into frames by
//! the pure [`TsIngest`] for the stream's session. Not supervised: a dead connection
//! cannot be brought back; the registry holds the stream for the encoder's reconnect.
//!
//! The connection is accepted before the path is claimed: SRT checks the passphrase
//! only on accepting, and a caller with a good key but the wrong passphrase must not
//! take a live stream over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use srt_protocol::options::KeySize;
use srt_protocol::packet::{RejectReason, ServerRejectReason};
use srt_protocol::settings::{KeySettings, Passphrase};
use srt_tokio::{ConnectionRequest, SrtSocket};

use super::super::publishing::{PublishLink, check_publish, next_connection_id};
use super::super::registry::{Disconnect, Publish, PublishRefused};
use super::super::rtmp_conn::IngestContext;
use super::super::rtmp_listener::Admission;
use super::super::session::IngestInput;
use super::super::supervision::{ActorKind, fault_point, guard};
use crate::ingest::stream_id;
use crate::keys::PublishPath;
use crate::keys::authorizer::Decision;
use crate::media::demux::MediaEvent;
use crate::media::ts_ingest::TsIngest;
use crate::metrics::METRICS;

/// A stream that ended within this long of its last data was closed by the caller (it
/// sends a shutdown as it stops); one silent for the peer idle timeout was lost.
const CLEAN_CLOSE_WITHIN: Duration = Duration::from_secs(2);

enum State {
    /// The key is being checked; the caller's handshake waits.
    Checking(ConnectionRequest),
    Accepting,
    Publishing(PublishLink),
    Closing,
}

pub struct SrtConnection {
    id: u64,
    peer: SocketAddr,
    context: Arc<IngestContext>,
    /// The streamid, read when the caller arrived.
    request: Result<stream_id::PublishRequest, stream_id::StreamIdError>,
    state: State,
    ingest: TsIngest,
    told_tracks: bool,
    last_input: Instant,
    media_errors: u64,
    close_reason: &'static str,
    _admission: Admission,
    arbiter: usize,
    span: tracing::Span,
}

impl SrtConnection {
    pub fn new(
        request: ConnectionRequest,
        context: Arc<IngestContext>,
        admission: Admission,
    ) -> Self {
        let id = next_connection_id();
        let peer = request.remote();
        let sid = request.stream_id().map(ToString::to_string);
        let parsed = stream_id::parse(sid.as_deref());
        Self {
            id,
            peer,
            context,
            request: parsed,
            state: State::Checking(request),
            ingest: TsIngest::new(),
            told_tracks: false,
            last_input: Instant::now(),
            media_errors: 0,
            close_reason: "closed_by_peer",
            arbiter: admission.arbiter.index(),
            _admission: admission,
            span: tracing::info_span!(
                "srt",
                conn = id,
                peer = %peer,
                publish_path = tracing::field::Empty
            ),
        }
    }

    /// Answers the waiting handshake with `reason`, then stops.
    fn reject(&mut self, reason: ServerRejectReason, ctx: &mut Context<Self>) {
        self.close_reason = "refused";
        if let State::Checking(request) = std::mem::replace(&mut self.state, State::Closing) {
            let answer = async move {
                let _ = request.reject(RejectReason::Server(reason)).await;
            };
            ctx.wait(answer.into_actor(self).map(|_, _, ctx| ctx.stop()));
        } else {
            ctx.stop();
        }
    }

    fn check_key(&mut self, ctx: &mut Context<Self>) {
        let request = match &self.request {
            Ok(request) => request.clone(),
            Err(error) => {
                METRICS
                    .publish_attempts
                    .with_label_values(&["bad_key"])
                    .inc();
                tracing::info!(parent: &self.span, %error, "SRT caller refused");
                let reason = match error {
                    stream_id::StreamIdError::NotPublish(_) => ServerRejectReason::BadMode,
                    _ => ServerRejectReason::Unauthorized,
                };
                self.reject(reason, ctx);
                return;
            }
        };
        let settings = &self.context.settings;
        let app = request.app.unwrap_or_else(|| settings.rtmp.app.clone());
        let check = check_publish(
            self.context.authorizer.clone(),
            self.context.hooks.clone(),
            app,
            request.key,
            self.peer.to_string(),
        );
        ctx.wait(check.into_actor(self).map(|decision, this, ctx| match decision {
            Ok(Decision::Allowed(path)) => this.accept(path, ctx),
            Ok(Decision::Refused(refusal)) => {
                METRICS.publish_attempts.with_label_values(&["bad_key"]).inc();
                tracing::info!(parent: &this.span, reason = refusal.as_str(), "publish refused");
                this.reject(ServerRejectReason::Forbidden, ctx);
            }
            Err(error) => {
                METRICS.publish_attempts.with_label_values(&["store_error"]).inc();
                tracing::warn!(parent: &this.span, %error, "publish refused: cannot check the key");
                this.reject(ServerRejectReason::Down, ctx);
            }
        }));
    }

    /// The key is good: finish the handshake (SRT checks the passphrase here), then
    /// claim the path.
    fn accept(&mut self, path: PublishPath, ctx: &mut Context<Self>) {
        let State::Checking(request) = std::mem::replace(&mut self.state, State::Accepting) else {
            return;
        };
        let passphrase = self.context.settings.srt.passphrase.expose();
        let keys = (!passphrase.is_empty()).then(|| KeySettings {
            // The caller's key length (AES-128 when it did not say).
            key_size: match request.key_size() {
                KeySize::Unspecified => KeySize::AES128,
                size => size,
            },
            passphrase: Passphrase::from(passphrase),
        });
        let accepted = request.accept(keys).into_actor(self);
        ctx.wait(accepted.map(move |socket, this, ctx| match socket {
            Ok(socket) => this.register(path, socket, ctx),
            Err(error) => {
                // A wrong or missing passphrase: the stack has told the caller why.
                METRICS
                    .publish_attempts
                    .with_label_values(&["bad_key"])
                    .inc();
                tracing::info!(parent: &this.span, %error, "SRT handshake failed (passphrase?)");
                this.close_reason = "refused";
                ctx.stop();
            }
        }));
    }

    fn register(&mut self, path: PublishPath, socket: SrtSocket, ctx: &mut Context<Self>) {
        let publish = Publish {
            path: path.clone(),
            conn_id: self.id,
            arbiter: self.arbiter,
            disconnect: ctx.address().recipient(),
        };
        let registered = self.context.registry.send(publish).into_actor(self);
        ctx.wait(registered.map(move |result, this, ctx| {
            let refused = match result {
                Ok(Ok(session)) => {
                    let link = PublishLink::accepted(
                        &this.context,
                        path,
                        session,
                        this.id,
                        this.peer,
                        &this.span,
                    );
                    this.state = State::Publishing(link);
                    this.last_input = Instant::now();
                    ctx.add_stream(socket);
                    return;
                }
                Ok(Err(PublishRefused::Failed)) | Err(_) => "failed",
                Ok(Err(PublishRefused::AlreadyPublishing)) => "duplicate",
            };
            // The handshake is done, so there is no reason code to give: the caller's
            // connection is closed.
            METRICS.publish_attempts.with_label_values(&[refused]).inc();
            tracing::info!(parent: &this.span, publish_path = %path, refused, "publish refused");
            this.close_reason = "refused";
            ctx.stop();
        }));
    }

    fn received(&mut self, payload: &Bytes) {
        self.last_input = Instant::now();
        let mut events = Vec::new();
        self.ingest.push(payload, &mut events);
        let State::Publishing(link) = &mut self.state else {
            return;
        };
        let mut errors = Vec::new();
        for event in events {
            match event {
                Ok(MediaEvent::Config(config)) => {
                    if !self.told_tracks
                        && let Some(has_video) = self.ingest.has_video()
                    {
                        self.told_tracks = true;
                        link.input(IngestInput::Metadata { has_video });
                    }
                    link.input(IngestInput::Config(config));
                }
                Ok(MediaEvent::Frame(frame)) => link.frame(frame),
                Ok(MediaEvent::Nothing) => {}
                Err(error) => errors.push(error),
            }
        }
        // One bad PES is dropped; the stream goes on.
        for error in errors {
            self.media_errors += 1;
            let count = self.media_errors;
            if count <= 5 || count.is_power_of_two() {
                tracing::warn!(parent: &self.span, %error, count, "media payload dropped");
            }
        }
    }

    fn unpublish(&mut self, reason: &'static str, clean: bool) {
        if let State::Publishing(link) = std::mem::replace(&mut self.state, State::Closing) {
            let (skipped, broken) = self.ingest.damage();
            tracing::info!(parent: &self.span, skipped_bytes = skipped, lost_frames = broken, "SRT input damage");
            link.unpublish(reason, clean, &self.span);
        }
    }
}

impl Actor for SrtConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        METRICS.srt_connections_open.inc();
        crate::metrics::actor_alive(ActorKind::Connection, 1);
        let handshake = Duration::from_millis(self.context.settings.rtmp.handshake_timeout_ms);
        // A caller gets this long to be publishing (its key checked, its handshake done).
        ctx.run_later(handshake, |this, ctx| {
            if !matches!(this.state, State::Publishing(_) | State::Closing) {
                this.close_reason = "timeout";
                tracing::info!(parent: &this.span, "not publishing within the handshake timeout");
                ctx.stop();
            }
        });
        // A publisher whose connection stays up (SRT keepalives) but that sends no media
        // is closed as an RTMP one is, so it does not hold its path for good.
        let idle = Duration::from_millis(self.context.settings.rtmp.idle_timeout_ms);
        ctx.run_interval(Duration::from_secs(1).min(idle), move |this, ctx| {
            if matches!(this.state, State::Publishing(_)) && this.last_input.elapsed() > idle {
                this.close_reason = "timeout";
                tracing::info!(parent: &this.span, "no media within the idle timeout; closing");
                this.unpublish("idle", false);
                ctx.stop();
            }
        });
        self.check_key(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        METRICS.srt_connections_open.dec();
        crate::metrics::actor_alive(ActorKind::Connection, -1);
        METRICS
            .srt_connections_closed
            .with_label_values(&[self.close_reason])
            .inc();
        self.unpublish("connection closed", false);
    }
}

impl StreamHandler<Result<(Instant, Bytes), std::io::Error>> for SrtConnection {
    fn handle(&mut self, item: Result<(Instant, Bytes), std::io::Error>, ctx: &mut Context<Self>) {
        let Ok((_, payload)) = item else {
            return;
        };
        let path = match &self.state {
            State::Publishing(link) => link.path.to_string(),
            _ => return,
        };
        // As for RTMP: a bug in what the bytes cause closes this connection only.
        let handled = guard(ActorKind::Connection, || {
            fault_point(ActorKind::Connection, &path);
            self.received(&payload)
        });
        if handled.is_err() {
            self.close_reason = "panic";
            ctx.stop();
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // SRT tells a caller's stop (a shutdown right after its last data) from a lost
        // caller (silent until the idle timeout) only by time.
        let clean = self.last_input.elapsed() < CLEAN_CLOSE_WITHIN;
        let reason = if clean {
            "publisher finished"
        } else {
            "peer timed out"
        };
        if !clean {
            self.close_reason = "timeout";
        }
        self.unpublish(reason, clean);
        ctx.stop();
    }
}

impl Handler<Disconnect> for SrtConnection {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.close_reason = "disconnected";
        tracing::info!(parent: &self.span, reason = msg.reason, "disconnecting");
        self.unpublish(msg.reason, true);
        ctx.stop();
    }
}
