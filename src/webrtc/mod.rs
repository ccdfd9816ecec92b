//! Sub-second playback over WebRTC, asked for with WHEP (`POST /whep/{path}`).
//!
//! Sessions hand their frames to [`WebRtc`] (video from the rendition [`feed`] picks,
//! Opus from the transcoder's FFmpeg). Viewers are spread over shards ([`server`]), a
//! thread per core, each owning its viewers' connections: packetising and encrypting
//! per viewer is the work that grows with viewers. One more thread ([`router`]) reads
//! the UDP port and hands each datagram to its viewer's shard. str0m is the WebRTC stack: sans-IO like Kawa's media core (Kawa's loop
//! does the I/O), ICE-lite, DTLS-SRTP, H.264 (RFC 6184) and Opus packetisation, NACK
//! resends from a bounded history. It leaves out TURN and full ICE, which a server with
//! a public address does not need.

pub mod feed;
mod gop;
mod metrics;
mod peer;
pub mod router;
pub mod server;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::WebRtcSettings;
use crate::media::opus::OpusPacket;
use feed::Offer;
use server::{Command, Server, Shared};

/// Commands queued for a shard; media past it is dropped (viewers resume at the next
/// keyframe), never waited for.
const QUEUE: usize = 4096;

/// The answer to a WHEP offer.
#[derive(Debug)]
pub struct Answer {
    /// The session, for its `Location` (DELETE ends it).
    pub id: u64,
    pub sdp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("the stream is not live on this node")]
    NoStream,
    #[error("{0}")]
    Unfit(&'static str),
    #[error("the offer has no H.264 video (packetization-mode 1), which is what Kawa sends")]
    NoH264,
    #[error("the offer cannot be answered: {0}")]
    BadOffer(String),
    #[error("this node has as many WebRTC viewers as webrtc.max_sessions allows")]
    Full,
    #[error(
        "this address has as many unconnected WebRTC sessions as webrtc.max_pending_per_ip allows"
    )]
    TooManyPending,
    #[error("the WebRTC server is not running")]
    Unavailable,
}

/// The way to the WebRTC server: cheap to clone, never blocks.
#[derive(Clone)]
pub struct WebRtc {
    shards: Arc<Vec<mpsc::Sender<Command>>>,
    /// The shard the next viewer goes to (round robin).
    next: Arc<AtomicUsize>,
}

/// Runs `task` on a thread of its own with a one-thread runtime, for the process's life.
fn spawn_thread<F>(name: String, task: impl FnOnce() -> F + Send + 'static) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name)
        .spawn(move || runtime.block_on(task()))?;
    Ok(())
}

impl WebRtc {
    /// Binds `webrtc.udp_addr` and starts the router and one shard per core.
    pub async fn start(
        settings: &WebRtcSettings,
        addr: SocketAddr,
    ) -> std::io::Result<(Self, SocketAddr)> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let bound = socket.local_addr()?;
        let announced: Vec<IpAddr> = if !settings.public_ips.is_empty() {
            settings.public_ips.clone()
        } else if !bound.ip().is_unspecified() {
            vec![bound.ip()]
        } else {
            Vec::new()
        };
        let receiving = socket.try_clone()?;
        let shared = Arc::new(Shared {
            socket,
            local: bound,
            announced,
            max_sessions: settings.max_sessions,
            max_pending_per_ip: settings.max_pending_per_ip,
            pending: Default::default(),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            sessions: AtomicUsize::new(0),
            ufrags: Default::default(),
            cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
        });
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shards = Vec::with_capacity(count);
        for shard in 0..count {
            let (commands, receiver) = mpsc::channel(QUEUE);
            let server = Server::new(shard, count, Arc::clone(&shared));
            spawn_thread(format!("webrtc-{shard}"), move || server.run(receiver))?;
            shards.push(commands);
        }
        let to_shards = shards.clone();
        spawn_thread("webrtc-udp".into(), move || async move {
            match tokio::net::UdpSocket::from_std(receiving) {
                Ok(socket) => router::run(socket, shared, to_shards).await,
                Err(e) => tracing::error!(error = %e, "the WebRTC port cannot be read"),
            }
        })?;
        let webrtc = Self {
            shards: Arc::new(shards),
            next: Arc::default(),
        };
        Ok((webrtc, bound))
    }

    /// Sends to every shard: a stream's media and news concern the viewers of each.
    fn each(&self, command: impl Fn() -> Command) {
        for shard in self.shards.iter() {
            // Media past a full queue is dropped, never waited for.
            let _ = shard.try_send(command());
        }
    }

    /// Sends to every shard and never drops (rare and small: a new offer, an end).
    fn each_surely(&self, command: impl Fn() -> Command) {
        for shard in self.shards.iter() {
            if let Err(mpsc::error::TrySendError::Full(command)) = shard.try_send(command()) {
                let shard = shard.clone();
                tokio::spawn(async move { shard.send(command).await });
            }
        }
    }

    /// Answers a viewer's offer for `path`.
    pub async fn offer(
        &self,
        path: &str,
        sdp: String,
        reached: Option<IpAddr>,
        client: Option<IpAddr>,
    ) -> Result<Answer, OfferError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Offer {
            path: path.to_owned(),
            sdp,
            reached,
            client,
            reply,
        };
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[shard]
            .send(command)
            .await
            .map_err(|_| OfferError::Unavailable)?;
        answer.await.map_err(|_| OfferError::Unavailable)?
    }

    /// Ends viewer `id` of `path`; false when there is no such viewer.
    pub async fn close(&self, path: &str, id: u64) -> bool {
        let (reply, closed) = oneshot::channel();
        let command = Command::Close {
            path: path.to_owned(),
            id,
            reply,
        };
        // The id names its shard.
        let shard = &self.shards[(id % self.shards.len() as u64) as usize];
        shard.send(command).await.is_ok() && closed.await.unwrap_or(false)
    }

    /// What `path` offers WebRTC viewers now.
    pub fn stream(&self, path: &str, offer: Offer) {
        self.each_surely(|| Command::Stream {
            path: path.to_owned(),
            offer: offer.clone(),
        });
    }

    /// A video frame (Annex B) of the rendition WebRTC viewers get: copied once, shared
    /// by every shard and viewer.
    pub fn video(&self, path: &str, pts: i64, keyframe: bool, data: &[u8]) {
        let data: Arc<[u8]> = Arc::from(data);
        self.each(|| Command::Video {
            path: path.to_owned(),
            pts,
            keyframe,
            data: Arc::clone(&data),
        });
    }

    /// Opus packets of `path`'s audio.
    pub fn audio(&self, path: &str, packets: Vec<OpusPacket>) {
        self.each(|| Command::Audio {
            path: path.to_owned(),
            packets: packets.clone(),
        });
    }

    /// The stream ended here: its viewers are closed.
    pub fn ended(&self, path: &str) {
        self.each_surely(|| Command::Ended {
            path: path.to_owned(),
        });
    }
}
