//! The SRT listener (`srt.addr`): callers publish MPEG-TS with the stream key in their
//! streamid. Each caller that asks to connect becomes an [`SrtConnection`] on an
//! arbiter, which checks the key before the handshake is answered. The SRT stack is
//! srt-tokio, vendored with fixes (vendor/srt-tokio/PATCHES.md); the README says why.
//!
//! Before a caller has shown a valid key it holds a place under `rtmp.max_connections`
//! and `rtmp.max_connections_per_ip` (counted apart from RTMP's), a pending handshake
//! in the stack (swept after 5 s) and an actor without buffers; handshakes that never
//! finish (a bare induction) cost the stack about 1.6 KB until swept.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use srt_protocol::packet::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SrtListener};

use super::rtmp_conn::IngestContext;
use super::rtmp_listener::{Admission, PerIpLimit};
use crate::metrics::METRICS;
pub use connection::SrtConnection;

/// How long a caller that stopped sending is waited for before its connection is
/// dropped (SRT keepalives arrive every second while a peer is there).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and starts taking callers on the current arbiter. Returns the bound
/// address (for port 0).
pub async fn listen(addr: SocketAddr, context: Arc<IngestContext>) -> std::io::Result<SocketAddr> {
    let latency = Duration::from_millis(context.settings.srt.latency_ms);
    let handshake = Duration::from_millis(context.settings.rtmp.handshake_timeout_ms);
    let socket = bind_udp(addr)?;
    let bound = socket.local_addr().unwrap_or(addr);
    let (listener, mut incoming) = SrtListener::builder()
        .latency(latency)
        .set(|o| {
            o.session.peer_idle_timeout = PEER_IDLE_TIMEOUT;
            o.connect.timeout = handshake;
        })
        .socket(socket)
        .bind(bound)
        .await?;
    let global = Arc::new(tokio::sync::Semaphore::new(
        context.settings.rtmp.max_connections,
    ));
    let per_ip = PerIpLimit::new(context.settings.rtmp.max_connections_per_ip);
    actix::spawn(async move {
        // Held for as long as callers are taken: dropping it would not stop the stack,
        // but keeps the listener's statistics and close handle in one place.
        let _listener = listener;
        while let Some(request) = incoming.incoming().next().await {
            let Ok(permit) = Arc::clone(&global).try_acquire_owned() else {
                refuse(request, "limit");
                continue;
            };
            let Some(slot) = per_ip.try_acquire(request.remote().ip()) else {
                refuse(request, "ip_limit");
                continue;
            };
            let admission = Admission::new(permit, slot, context.arbiters.place());
            let context = Arc::clone(&context);
            let arbiter = context.arbiters.handle(admission.arbiter.index()).clone();
            SrtConnection::start_in_arbiter(&arbiter, move |_| {
                SrtConnection::new(request, context, admission)
            });
        }
        tracing::error!("the SRT listener stopped taking callers");
    });
    Ok(bound)
}

/// A caller over a limit is told so at once (SRT's "overload"), so it can retry later.
fn refuse(request: ConnectionRequest, reason: &'static str) {
    METRICS
        .srt_connections_closed
        .with_label_values(&[reason])
        .inc();
    tracing::warn!(peer = %request.remote(), reason, "SRT caller refused on arrival");
    actix::spawn(async move {
        let overload = RejectReason::Server(ServerRejectReason::Overload);
        let _ = request.reject(overload).await;
    });
}

/// The UDP socket, with a receive buffer large enough for bursts of many callers (the
/// kernel caps it at `net.core.rmem_max`).
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}
