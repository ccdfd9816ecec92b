//! How a connection reads its socket. Until a publish is accepted, one read at a time,
//! woken by the socket (a quiet peer costs nothing). Once publishing, the socket leaves
//! the reactor and is read at each ingest tick ([`socket`]): one wake-up of the thread
//! reads every publisher on it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::socket::{self, Received, TickedSocket};
use super::{RtmpConnection, State};
use crate::actors::supervision::{ActorKind, fault_point, guard};
use crate::ingest::IngestError;
use crate::metrics::METRICS;

/// Bytes one reactive read takes: handshake and commands are small.
const REACTIVE_READ: usize = 8 * 1024;

thread_local! {
    /// One read buffer per thread, shared by the publishers read on its ticks: a
    /// connection holds no buffer of its own.
    static TICK_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

impl Handler<super::ticks::Tick> for RtmpConnection {
    type Result = ();

    fn handle(&mut self, _: super::ticks::Tick, ctx: &mut Context<Self>) {
        if self.ticked.is_some() {
            self.tick(ctx);
        }
    }
}

impl RtmpConnection {
    /// Reads once, handles what came, and goes on (reading again, pausing, or moving to
    /// the tick).
    pub(super) fn read_next(&mut self, ctx: &mut Context<Self>) {
        let Some(mut half) = self.read_half.take() else {
            return;
        };
        let read = async move {
            let mut buf = BytesMut::with_capacity(REACTIVE_READ);
            let result = half.read_buf(&mut buf).await;
            (half, buf, result)
        };
        ctx.spawn(read.into_actor(self).map(|(half, buf, result), this, ctx| {
            this.read_half = Some(half);
            match result {
                Ok(0) => ctx.stop(),
                Ok(_) => {
                    this.received(&buf, ctx);
                    this.after_reactive_read(ctx);
                }
                Err(e) => {
                    tracing::debug!(parent: &this.span, error = %e, "read failed");
                    ctx.stop();
                }
            }
        }));
    }

    /// Frames (and so the pacer's pauses) come only once publishing, and then the
    /// socket moves to the tick, which also paces.
    fn after_reactive_read(&mut self, ctx: &mut Context<Self>) {
        match self.state {
            State::Closing => {}
            State::Publishing(_) => self.start_ticks(ctx),
            _ => self.read_next(ctx),
        }
    }

    /// Bytes from the peer, to the protocol; a publisher ahead of real time pauses.
    fn received(&mut self, bytes: &[u8], ctx: &mut Context<Self>) {
        if matches!(self.state, State::Closing) {
            return;
        }
        self.last_input = Instant::now();
        match self.protocol.receive(bytes) {
            Ok(events) => {
                // The parser runs under its own guard; this one covers what the events
                // do. A connection is not restarted (its socket state is gone with it):
                // it closes, and the registry holds the stream for the encoder's
                // reconnect.
                let path = match &self.state {
                    State::Publishing(link) => link.path.to_string(),
                    _ => String::new(),
                };
                let handled = guard(ActorKind::Connection, || {
                    fault_point(ActorKind::Connection, &path);
                    self.handle_events(events, ctx)
                });
                if let Err(detail) = handled {
                    self.fail(IngestError::Panicked(detail), ctx);
                }
            }
            Err(e) => self.fail(e, ctx),
        }
    }

    /// Publishing: take the socket out of the reactor (the writing task hands its half
    /// back once it wrote what was queued) and read it on the tick.
    fn start_ticks(&mut self, ctx: &mut Context<Self>) {
        let Some(back) = self.write_half_back.take() else {
            return;
        };
        self.outbound = None;
        ctx.wait(back.into_actor(self).map(|write, this, ctx| {
            let std = match (write, this.read_half.take()) {
                (Ok(write), Some(read)) => read
                    .reunite(write)
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|stream| stream.into_std()),
                _ => Err(std::io::ErrorKind::BrokenPipe.into()),
            };
            match std {
                Ok(stream) => {
                    this.ticked = Some(TickedSocket::new(stream));
                    // The frames that moved it here may have put it ahead of real time.
                    this.take_pause();
                    if let Some(handle) = this.idle_check.take() {
                        ctx.cancel_future(handle);
                    }
                    super::ticks::join(ctx.address().recipient());
                }
                Err(e) => {
                    tracing::debug!(parent: &this.span, error = %e, "socket lost while moving to the tick");
                    ctx.stop();
                }
            }
        }));
    }

    /// Reads what arrived since the last tick (unless paused), writes what waits.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.state, State::Closing) || self.check_idle(ctx) {
            return;
        }
        let now = Instant::now();
        match self.paused_until {
            Some(until) if now < until => {}
            paused => {
                if paused.is_some() {
                    self.paused_until = None;
                    self.last_input = now;
                }
                if !self.read_ticked(ctx) {
                    return;
                }
            }
        }
        if let Some(socket) = &mut self.ticked
            && let Err(e) = socket.flush()
        {
            tracing::debug!(parent: &self.span, error = %e, "write failed");
            ctx.stop();
        }
    }

    /// Reads until a read finds the socket empty (or the per-tick bound, or a pause); `false`
    /// when the connection ends.
    fn read_ticked(&mut self, ctx: &mut Context<Self>) -> bool {
        let mut read = 0;
        while read < socket::MAX_READ_PER_TICK {
            let mut drained = false;
            let received = TICK_BUFFER.with_borrow_mut(|buf| {
                let got = self.ticked.as_mut()?.read(buf);
                if let Ok(Received::Bytes(n)) = got {
                    read += n;
                    // Less than the buffer holds: the socket had no more just now. What
                    // came since waits for the next tick, so a tick costs one read, not
                    // a second one that finds nothing (EAGAIN was a third of all reads).
                    drained = n < buf.len();
                    self.received(&buf[..n], ctx);
                }
                Some(got)
            });
            let Some(received) = received else {
                return false;
            };
            match received {
                Ok(Received::Bytes(_)) => {}
                Ok(Received::Nothing) => break,
                Ok(Received::Closed) => {
                    ctx.stop();
                    return false;
                }
                Err(e) => {
                    tracing::debug!(parent: &self.span, error = %e, "read failed");
                    ctx.stop();
                    return false;
                }
            }
            if matches!(self.state, State::Closing) {
                return false;
            }
            if self.take_pause() || drained {
                break;
            }
        }
        true
    }

    /// Ahead of real time: nothing is read until the wall clock catches up (the socket
    /// fills, TCP holds the publisher back). `true` if a pause began.
    fn take_pause(&mut self) -> bool {
        let Some(pause) = self.pause.take() else {
            return false;
        };
        METRICS.ingest_paced.inc();
        self.paused_until = Some(Instant::now() + pause);
        true
    }

    /// Closes a connection that sent nothing for `rtmp.idle_timeout_ms`; `true` if it did.
    pub(super) fn check_idle(&mut self, ctx: &mut Context<Self>) -> bool {
        let idle = Duration::from_millis(self.context.settings.rtmp.idle_timeout_ms);
        // A paused publisher is quiet because Kawa stopped reading it.
        if self.paused_until.is_some() || self.last_input.elapsed() <= idle {
            return false;
        }
        self.close_reason = "timeout";
        tracing::info!(parent: &self.span, "idle timeout");
        self.unpublish("idle timeout", false);
        ctx.stop();
        true
    }
}
