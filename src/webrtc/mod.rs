//! Sub-second playback over WebRTC, asked for with WHEP (`POST /whep/{path}`).
//!
//! Sessions hand their frames to [`WebRtc`] (video from the rendition [`feed`] picks,
//! Opus from the transcoder's FFmpeg); one task ([`server`]) owns the UDP socket and
//! every viewer. str0m is the WebRTC stack: sans-IO like Kawa's media core (Kawa's loop
//! does the I/O), ICE-lite, DTLS-SRTP, H.264 (RFC 6184) and Opus packetisation, NACK
//! resends from a bounded history. It leaves out TURN and full ICE, which a server with
//! a public address does not need.

pub mod feed;
mod metrics;
mod peer;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::WebRtcSettings;
use crate::media::opus::OpusPacket;
use feed::Offer;
use server::{Command, Server};

/// Commands queued for the server; media past it is dropped (viewers resume at the
/// next keyframe), never waited for.
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
    #[error("the WebRTC server is not running")]
    Unavailable,
}

/// The way to the WebRTC server: cheap to clone, never blocks.
#[derive(Clone)]
pub struct WebRtc {
    commands: mpsc::Sender<Command>,
}

impl WebRtc {
    /// Binds `webrtc.udp_addr` and starts the server on the current runtime.
    pub async fn start(
        settings: &WebRtcSettings,
        addr: SocketAddr,
    ) -> std::io::Result<(Self, SocketAddr)> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let bound = socket.local_addr()?;
        let announced: Vec<IpAddr> = if !settings.public_ips.is_empty() {
            settings.public_ips.clone()
        } else if !bound.ip().is_unspecified() {
            vec![bound.ip()]
        } else {
            Vec::new()
        };
        let server = Server::new(
            socket,
            announced,
            settings.max_sessions,
            Duration::from_millis(settings.connect_timeout_ms),
        )?;
        let (commands, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(server.run(receiver));
        Ok((Self { commands }, bound))
    }

    /// Answers a viewer's offer for `path`.
    pub async fn offer(
        &self,
        path: &str,
        sdp: String,
        reached: Option<IpAddr>,
    ) -> Result<Answer, OfferError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Offer {
            path: path.to_owned(),
            sdp,
            reached,
            reply,
        };
        self.commands
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
        self.commands.send(command).await.is_ok() && closed.await.unwrap_or(false)
    }

    /// What `path` offers WebRTC viewers now.
    pub fn stream(&self, path: &str, offer: Offer, audio: bool) {
        // Never dropped: a viewer must learn of a new offer (rare, and small).
        let commands = self.commands.clone();
        let command = Command::Stream {
            path: path.to_owned(),
            offer,
            audio,
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = commands.try_send(command) {
            tokio::spawn(async move { commands.send(command).await });
        }
    }

    /// A video frame (Annex B) of the rendition WebRTC viewers get.
    pub fn video(&self, path: &str, pts: i64, keyframe: bool, data: &[u8]) {
        let _ = self.commands.try_send(Command::Video {
            path: path.to_owned(),
            pts,
            keyframe,
            data: Arc::from(data),
        });
    }

    /// Opus packets of `path`'s audio.
    pub fn audio(&self, path: &str, packets: Vec<OpusPacket>) {
        let _ = self.commands.try_send(Command::Audio {
            path: path.to_owned(),
            packets,
        });
    }

    /// The stream ended here: its viewers are closed.
    pub fn ended(&self, path: &str) {
        let commands = self.commands.clone();
        let command = Command::Ended {
            path: path.to_owned(),
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = commands.try_send(command) {
            tokio::spawn(async move { commands.send(command).await });
        }
    }
}
