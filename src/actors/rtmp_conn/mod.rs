//! One RTMP connection: reads the socket, drives the sans-IO [`RtmpProtocol`], asks
//! whether the publish may go ahead, and sends typed frames to the stream's session.
//! Not supervised: a dead socket cannot be brought back. How the socket is read (woken
//! by it until a publish is accepted, then on the ingest tick) is in [`reading`].

mod reading;
mod socket;
mod ticks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::publishing::{PublishLink, check_publish};
use super::registry::{Disconnect, Publish, PublishRefused, StreamRegistry};
use super::rtmp_listener::Admission;
use super::session::IngestInput;
use crate::config::Settings;
use crate::ingest::pace::Pacer;
use crate::ingest::{IngestError, IngestEvent, RtmpProtocol};
use crate::keys::PublishPath;
use crate::keys::authorizer::{Decision, PublishAuthorizer};
use crate::media::demux::MediaEvent;
use crate::media::frame::Frame;
use crate::metrics::METRICS;

/// What every connection needs.
pub struct IngestContext {
    pub settings: Arc<Settings>,
    pub arbiters: super::Arbiters,
    pub authorizer: PublishAuthorizer,
    pub registry: Addr<StreamRegistry>,
    /// Asked before a publish, told when one starts (`[hooks]`).
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
}

/// Bytes queued for the socket. A publisher gets little back (acknowledgements and
/// command results), so a full queue means the peer stopped reading.
const OUTBOUND_QUEUE: usize = 256;
/// Time for the refusal to reach the encoder before the socket closes.
const LINGER_AFTER_REFUSAL: Duration = Duration::from_millis(200);

enum State {
    Connecting,
    Connected,
    Authorizing,
    Publishing(PublishLink),
    Closing,
}

pub struct RtmpConnection {
    id: u64,
    peer: SocketAddr,
    context: Arc<IngestContext>,
    protocol: RtmpProtocol,
    stream: Option<TcpStream>,
    /// Until the socket is read on the tick: its halves, the read half here between
    /// reads, the write half with the task that writes `outbound`, which gives it back
    /// once `outbound` closes.
    read_half: Option<OwnedReadHalf>,
    outbound: Option<mpsc::Sender<Bytes>>,
    write_half_back: Option<oneshot::Receiver<OwnedWriteHalf>>,
    /// Publishing: the socket, read at each ingest tick.
    ticked: Option<socket::TickedSocket>,
    /// The reactive phase's idle check (the tick checks for itself).
    idle_check: Option<SpawnHandle>,
    /// Ahead of real time: nothing is read until then.
    paused_until: Option<Instant>,
    state: State,
    last_input: Instant,
    /// Holds a publisher faster than real time back (reading stops meanwhile).
    pacer: Pacer,
    pause: Option<Duration>,
    media_errors: u64,
    /// Why the connection ends, for `kawa_rtmp_connections_closed_total{result}`.
    close_reason: &'static str,
    /// The connection's places under the global and per-IP limits, freed on drop.
    admission: Admission,
    span: tracing::Span,
}

impl RtmpConnection {
    pub fn new(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        context: Arc<IngestContext>,
        admission: Admission,
    ) -> Self {
        let max_message = context.settings.rtmp.max_message_bytes;
        Self {
            id,
            peer,
            context,
            protocol: RtmpProtocol::with_max_media_message(max_message),
            stream: Some(stream),
            read_half: None,
            outbound: None,
            write_half_back: None,
            ticked: None,
            idle_check: None,
            paused_until: None,
            state: State::Connecting,
            last_input: Instant::now(),
            pacer: Pacer::default(),
            pause: None,
            media_errors: 0,
            close_reason: "closed_by_peer",
            admission,
            span: tracing::info_span!(
                "rtmp",
                conn = id,
                peer = %peer,
                publish_path = tracing::field::Empty
            ),
        }
    }

    fn send(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        if let Some(socket) = &mut self.ticked {
            if let Err(e) = socket.send(&bytes) {
                tracing::warn!(parent: &self.span, error = %e, "cannot write to the peer; closing");
                ctx.stop();
            }
            return;
        }
        let Some(out) = &self.outbound else { return };
        if out.try_send(bytes).is_err() {
            tracing::warn!(parent: &self.span, "peer is not reading; closing");
            ctx.stop();
        }
    }

    fn fail(&mut self, error: IngestError, ctx: &mut Context<Self>) {
        self.close_reason = match &error {
            IngestError::Panicked(_) => "panic",
            _ => "protocol_error",
        };
        match &error {
            IngestError::Panicked(_) => {
                tracing::error!(parent: &self.span, %error, "closing connection")
            }
            _ => tracing::info!(parent: &self.span, %error, "closing connection"),
        }
        ctx.stop();
    }

    fn handle_events(&mut self, events: Vec<IngestEvent>, ctx: &mut Context<Self>) {
        for event in events {
            match event {
                IngestEvent::Send(bytes) => self.send(bytes, ctx),
                IngestEvent::ConnectRequested { request_id, app } => {
                    self.on_connect(request_id, app, ctx)
                }
                IngestEvent::PublishRequested {
                    request_id,
                    app,
                    stream_key,
                } => self.on_publish(request_id, app, stream_key, ctx),
                IngestEvent::PlayRequested { request_id } => {
                    self.refuse(
                        request_id,
                        "NetStream.Play.Failed",
                        "this server delivers HLS, not RTMP playback",
                        ctx,
                    );
                }
                IngestEvent::Media(media) => self.on_media(media),
                IngestEvent::MediaError(error) => {
                    // One bad payload is dropped; the stream goes on.
                    self.media_errors += 1;
                    if self.media_errors <= 5 || self.media_errors.is_power_of_two() {
                        tracing::warn!(parent: &self.span, %error, count = self.media_errors, "media payload dropped");
                    }
                }
                IngestEvent::Metadata { has_video, .. } => {
                    self.send_to_session(IngestInput::Metadata { has_video });
                }
                IngestEvent::PublishFinished => {
                    self.unpublish("publisher finished", true);
                    ctx.stop();
                }
            }
        }
    }

    fn on_connect(&mut self, request_id: u32, app: String, ctx: &mut Context<Self>) {
        if app != self.context.settings.rtmp.app {
            // `?`: the name is the peer's, logged escaped (a newline cannot forge a line).
            tracing::info!(parent: &self.span, app = ?app, "connect refused: unknown app");
            self.refuse(
                request_id,
                "NetConnection.Connect.Rejected",
                "unknown application",
                ctx,
            );
            return;
        }
        match self.protocol.accept(request_id) {
            Ok(events) => {
                self.state = State::Connected;
                self.handle_events(events, ctx);
            }
            Err(e) => self.fail(e, ctx),
        }
    }

    fn on_publish(
        &mut self,
        request_id: u32,
        app: String,
        stream_key: String,
        ctx: &mut Context<Self>,
    ) {
        if !matches!(self.state, State::Connected) {
            self.refuse(
                request_id,
                "NetStream.Publish.BadName",
                "one publish per connection",
                ctx,
            );
            return;
        }
        self.state = State::Authorizing;
        let check = check_publish(
            self.context.authorizer.clone(),
            self.context.hooks.clone(),
            app,
            stream_key,
            self.peer.to_string(),
        );
        ctx.wait(check.into_actor(self).map(move |decision, this, ctx| match decision {
            Ok(Decision::Allowed(path)) => this.register_publisher(request_id, path, ctx),
            Ok(Decision::Refused(refusal)) => {
                METRICS.publish_attempts.with_label_values(&["bad_key"]).inc();
                tracing::info!(parent: &this.span, reason = refusal.as_str(), "publish refused");
                this.refuse(request_id, "NetStream.Publish.BadName", "stream key refused", ctx);
            }
            Err(error) => {
                METRICS.publish_attempts.with_label_values(&["store_error"]).inc();
                tracing::warn!(parent: &this.span, %error, "publish refused: cannot check the key");
                this.refuse(request_id, "NetStream.Publish.Failed", "cannot check the stream key now; try again", ctx);
            }
        }));
    }

    /// The key is good: claim the path in the registry (which may take it over from an
    /// older connection), then accept the publish.
    fn register_publisher(&mut self, request_id: u32, path: PublishPath, ctx: &mut Context<Self>) {
        let publish = Publish {
            path: path.clone(),
            conn_id: self.id,
            arbiter: self.admission.arbiter.index(),
            disconnect: ctx.address().recipient(),
        };
        let registered = self.context.registry.send(publish).into_actor(self);
        ctx.wait(registered.map(move |result, this, ctx| match result {
            Ok(Ok(session)) => match this.protocol.accept(request_id) {
                Ok(events) => {
                    let link = PublishLink::accepted(
                        &this.context,
                        path,
                        session,
                        this.id,
                        this.peer,
                        &this.span,
                    );
                    this.state = State::Publishing(link);
                    this.handle_events(events, ctx);
                }
                Err(e) => this.fail(e, ctx),
            },
            Ok(Err(PublishRefused::Failed)) => {
                METRICS.publish_attempts.with_label_values(&["failed"]).inc();
                tracing::error!(parent: &this.span, publish_path = %path, "publish refused: the registry failed on it");
                this.refuse(request_id, "NetStream.Publish.Failed", "the server could not start the stream; try again", ctx);
            }
            Ok(Err(refused)) => {
                METRICS.publish_attempts.with_label_values(&["duplicate"]).inc();
                tracing::info!(parent: &this.span, publish_path = %path, reason = %refused, "publish refused");
                this.refuse(request_id, "NetStream.Publish.BadName", "the stream is already being published", ctx);
            }
            Err(_) => this.fail(IngestError::Closed, ctx),
        }));
    }

    /// Sends an RTMP error for the request, then closes the connection shortly after.
    fn refuse(&mut self, request_id: u32, code: &str, description: &str, ctx: &mut Context<Self>) {
        match self.protocol.reject(request_id, code, description) {
            Ok(events) => {
                for e in events {
                    if let IngestEvent::Send(bytes) = e {
                        self.send(bytes, ctx);
                    }
                }
            }
            Err(e) => tracing::debug!(parent: &self.span, error = %e, "could not send refusal"),
        }
        self.state = State::Closing;
        self.close_reason = "refused";
        ctx.run_later(LINGER_AFTER_REFUSAL, |_, ctx| ctx.stop());
    }

    fn on_media(&mut self, media: MediaEvent) {
        match media {
            MediaEvent::Config(config) => {
                self.send_to_session(IngestInput::Config(config));
            }
            MediaEvent::Frame(frame) => {
                let State::Publishing(link) = &mut self.state else {
                    return;
                };
                let dts = match &frame {
                    Frame::Video(v) => v.dts,
                    Frame::Audio(a) => a.pts,
                };
                if let Some(pause) = self.pacer.on_frame(dts, Instant::now()) {
                    self.pause = Some(self.pause.map_or(pause, |p| p.max(pause)));
                }
                link.frame(frame);
            }
            MediaEvent::Nothing => {}
        }
    }

    /// Configs and metadata must not be dropped: they go even into a full mailbox.
    fn send_to_session(&mut self, input: IngestInput) {
        if let State::Publishing(link) = &self.state {
            link.input(input);
        }
    }

    /// Tells the registry this connection stopped publishing (once).
    fn unpublish(&mut self, reason: &'static str, clean: bool) {
        if let State::Publishing(link) = std::mem::replace(&mut self.state, State::Closing) {
            link.unpublish(reason, clean, &self.span);
        }
    }
}

impl Actor for RtmpConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
        let (give_back, back) = oneshot::channel();
        self.outbound = Some(tx);
        self.write_half_back = Some(back);
        actix::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // `outbound` closed: the connection reads on the tick now and writes itself,
            // or it ended (then nobody takes the half back, and it is shut down).
            if let Err(mut write) = give_back.send(write) {
                let _ = write.shutdown().await;
            }
        });
        self.read_half = Some(read);
        self.read_next(ctx);

        let settings = &self.context.settings.rtmp;
        let handshake = Duration::from_millis(settings.handshake_timeout_ms);
        // A peer gets this long to show a valid key: until then it holds a connection
        // slot, so one that dawdles (or trickles bytes) is closed.
        ctx.run_later(handshake, |this, ctx| {
            if matches!(
                this.state,
                State::Connecting | State::Connected | State::Authorizing
            ) {
                this.close_reason = "timeout";
                tracing::info!(parent: &this.span, "not publishing within the handshake timeout");
                ctx.stop();
            }
        });
        let idle = Duration::from_millis(settings.idle_timeout_ms);
        self.idle_check = Some(
            ctx.run_interval(Duration::from_secs(1).min(idle), |this, ctx| {
                this.check_idle(ctx);
            }),
        );
        METRICS.rtmp_connections_open.inc();
        crate::metrics::actor_alive(crate::actors::supervision::ActorKind::Connection, 1);
        tracing::debug!(parent: &self.span, "connection opened");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        METRICS.rtmp_connections_open.dec();
        crate::metrics::actor_alive(crate::actors::supervision::ActorKind::Connection, -1);
        METRICS
            .rtmp_connections_closed
            .with_label_values(&[self.close_reason])
            .inc();
        self.unpublish("connection closed", false);
        tracing::debug!(parent: &self.span, "connection closed");
    }
}

impl Handler<Disconnect> for RtmpConnection {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.close_reason = "disconnected";
        tracing::info!(parent: &self.span, reason = msg.reason, "disconnecting");
        self.unpublish(msg.reason, true);
        self.state = State::Closing;
        ctx.stop();
    }
}
