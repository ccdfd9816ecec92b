//! The RTMP listener: accepts TCP connections, bounded by `rtmp.max_connections` in all
//! and `rtmp.max_connections_per_ip` from one address, and starts an [`RtmpConnection`]
//! for each. A connection over either limit is closed at once, before it costs anything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rtmp_conn::{IngestContext, RtmpConnection};
use crate::metrics::METRICS;

/// Open connections per IP address, with a cap.
#[derive(Debug)]
pub struct PerIpLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` at the cap.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limit: Arc::clone(self),
            ip,
        })
    }

    /// Open connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's place under a [`PerIpLimit`]; given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    limit: Arc<PerIpLimit>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection's places under both limits and on its arbiter, held for as long as it
/// is open.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    _per_ip: IpSlot,
    pub arbiter: super::Placement,
}

impl Admission {
    pub fn new(global: OwnedSemaphorePermit, per_ip: IpSlot, arbiter: super::Placement) -> Self {
        Self {
            _global: global,
            _per_ip: per_ip,
            arbiter,
        }
    }
}

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

fn refuse(reason: &'static str, peer: std::net::SocketAddr) {
    METRICS
        .rtmp_connections_closed
        .with_label_values(&[reason])
        .inc();
    tracing::warn!(%peer, reason, "RTMP connection refused on accept");
}

impl Actor for RtmpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let context = Arc::clone(&self.context);
        let global = Arc::new(Semaphore::new(context.settings.rtmp.max_connections));
        let per_ip = PerIpLimit::new(context.settings.rtmp.max_connections_per_ip);
        let accept_loop = async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&global).try_acquire_owned() else {
                            refuse("limit", peer);
                            continue;
                        };
                        let Some(slot) = per_ip.try_acquire(peer.ip()) else {
                            refuse("ip_limit", peer);
                            continue;
                        };
                        let admission = Admission::new(permit, slot, context.arbiters.place());
                        METRICS.rtmp_connections_accepted.inc();
                        let id = super::publishing::next_connection_id();
                        // The socket moves to the connection's arbiter and registers
                        // with that thread's event loop there.
                        let Ok(stream) = stream.into_std() else {
                            continue;
                        };
                        let context = Arc::clone(&context);
                        let arbiter = context.arbiters.handle(admission.arbiter.index()).clone();
                        RtmpConnection::start_in_arbiter(&arbiter, move |_| {
                            let stream = tokio::net::TcpStream::from_std(stream)
                                .expect("a socket taken from a live listener");
                            RtmpConnection::new(id, stream, peer, context, admission)
                        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_and_release() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limit.try_acquire(a).unwrap();
        let _second = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none(), "a third from one address");
        let _other = limit
            .try_acquire(b)
            .expect("another address is not affected");
        drop(first);
        assert_eq!(limit.open(a), 1);
        assert!(limit.try_acquire(a).is_some(), "a place freed on drop");
    }

    #[test]
    fn addresses_with_no_connection_are_forgotten() {
        let limit = PerIpLimit::new(1);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        drop(limit.try_acquire(a).unwrap());
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
