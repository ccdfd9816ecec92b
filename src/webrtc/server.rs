//! One shard of the WebRTC server: a thread that owns some of the viewers' connections.
//! A stream's frames reach every shard once, as commands; each goes to the shard's
//! viewers of that stream as the same shared bytes (packetised and encrypted per viewer
//! by str0m: the work that grows with viewers, spread over the shards). Datagrams come
//! from the [`super::router`], already routed to this shard; all shards send on clones
//! of the one UDP socket. Everything a peer sends is bounded: an offer by the HTTP
//! layer, a datagram by the router's buffer, viewers by `webrtc.max_sessions` (across
//! shards), and a viewer that does not connect within `webrtc.connect_timeout_ms` is
//! dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::media::{MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use tokio::sync::{mpsc, oneshot};

use super::feed::Offer;
use super::gop;
use super::peer::{self, Peer};
use super::stream::Stream;
use super::{Answer, OfferError};
use crate::media::opus::{self, OpusPacket};

/// How long a shard with nothing due sleeps.
const IDLE: Duration = Duration::from_secs(1);
/// How often viewers that never connected are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// A frame to write: when it was on the wall clock, its RTP time, its bytes.
type Timed = (Instant, MediaTime, Arc<[u8]>);

pub enum Command {
    Offer {
        path: String,
        sdp: String,
        /// Where the viewer reached Kawa's HTTP port: the host candidate when nothing
        /// better is configured.
        reached: Option<std::net::IpAddr>,
        /// The viewer's address, for `webrtc.max_pending_per_ip`.
        client: Option<std::net::IpAddr>,
        reply: oneshot::Sender<Result<Answer, OfferError>>,
    },
    Close {
        path: String,
        id: u64,
        reply: oneshot::Sender<bool>,
    },
    /// What a stream offers now (sent when it changes).
    Stream {
        path: String,
        offer: Offer,
    },
    Video {
        path: String,
        pts: i64,
        keyframe: bool,
        data: Arc<[u8]>,
    },
    Audio {
        path: String,
        packets: Vec<OpusPacket>,
    },
    Ended {
        path: String,
    },
    /// A datagram from a viewer of this shard (the router's guess: str0m checks).
    Datagram {
        bytes: Vec<u8>,
        source: SocketAddr,
    },
}

/// What the shards share: the socket they send on, how many viewers there are in all,
/// and which shard holds the viewer of each local ICE user name (for the router).
pub struct Shared {
    pub socket: std::net::UdpSocket,
    pub local: SocketAddr,
    /// Host candidates from the settings (`webrtc.public_ips`, or the bound address).
    pub announced: Vec<std::net::IpAddr>,
    pub max_sessions: usize,
    pub max_pending_per_ip: usize,
    /// Sessions not connected yet, per client address.
    pub pending: Mutex<HashMap<std::net::IpAddr, usize>>,
    pub connect_timeout: Duration,
    pub sessions: AtomicUsize,
    pub ufrags: Mutex<HashMap<String, usize>>,
    /// The DTLS certificate every viewer's connection presents.
    pub cert: Option<str0m::config::DtlsCert>,
}

pub struct Server {
    shard: usize,
    shards: usize,
    shared: Arc<Shared>,
    streams: HashMap<String, Stream>,
    peers: HashMap<u64, Peer>,
    /// Which viewer each source address was last seen for (a scan of every viewer's
    /// `accepts` per datagram cost more than the rest of a viewer's work).
    by_source: HashMap<SocketAddr, u64>,
    next: u64,
    /// When viewers that never connected are looked for next.
    sweep_at: Instant,
}

impl Server {
    pub fn new(shard: usize, shards: usize, shared: Arc<Shared>) -> Self {
        Self {
            shard,
            shards,
            shared,
            streams: HashMap::new(),
            peers: HashMap::new(),
            by_source: HashMap::new(),
            next: 1,
            sweep_at: Instant::now(),
        }
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let next = (self.peers.values().map(|p| p.timeout).min())
                .unwrap_or_else(|| Instant::now() + IDLE);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            self.drive_due(Instant::now());
        }
    }

    fn datagram(&mut self, bytes: &[u8], source: SocketAddr) {
        let now = Instant::now();
        let Ok(contents) = bytes.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.shared.local,
                contents,
            },
        );
        // The viewer this address belongs to, checked; else the one that accepts it.
        let known = (self.by_source.get(&source).copied())
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        let Some(id) = known.or_else(|| {
            (self.peers.values())
                .find(|p| p.rtc.accepts(&input))
                .map(|p| p.id)
        }) else {
            return;
        };
        self.by_source.insert(source, id);
        if let Some(peer) = self.peers.get_mut(&id)
            && peer.rtc.handle_input(input).is_err()
        {
            peer.rtc.disconnect();
        }
        self.drain(id);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Offer {
                path,
                sdp,
                reached,
                client,
                reply,
            } => {
                let _ = reply.send(self.offer(&path, &sdp, reached, client));
            }
            Command::Close { path, id, reply } => {
                let found = self.peers.get_mut(&id).filter(|p| p.path == path);
                let closed = found.is_some();
                if let Some(peer) = found {
                    peer.rtc.disconnect();
                }
                self.retire_dead();
                let _ = reply.send(closed);
            }
            Command::Stream { path, offer } => {
                let stream =
                    (self.streams.entry(path.clone())).or_insert_with(|| Stream::new(&path));
                if stream.offer != offer {
                    // Another rendition: its pictures start at its next keyframe.
                    stream.gop.clear();
                    for id in &stream.viewers {
                        if let Some(peer) = self.peers.get_mut(id) {
                            peer.wait_keyframe = true;
                        }
                    }
                }
                stream.offer = offer;
            }
            Command::Video {
                path,
                pts,
                keyframe,
                data,
            } => self.video(&path, pts, keyframe, &data),
            Command::Audio { path, packets } => self.audio(&path, packets),
            Command::Datagram { bytes, source } => self.datagram(&bytes, source),
            Command::Ended { path } => {
                if let Some(stream) = self.streams.remove(&path) {
                    for id in stream.viewers {
                        if let Some(peer) = self.peers.get_mut(&id) {
                            peer.rtc.disconnect();
                        }
                    }
                    self.retire_dead();
                }
            }
        }
    }

    fn offer(
        &mut self,
        path: &str,
        sdp: &str,
        reached: Option<std::net::IpAddr>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Answer, OfferError> {
        let stream = self.streams.get(path).ok_or(OfferError::NoStream)?;
        if let Offer::Unfit(reason) = stream.offer {
            return Err(OfferError::Unfit(reason));
        }
        if self.shared.sessions.load(Ordering::Relaxed) >= self.shared.max_sessions {
            return Err(OfferError::Full);
        }
        let parsed = str0m::change::SdpOffer::from_sdp_string(sdp)
            .map_err(|e| OfferError::BadOffer(e.to_string()))?;
        if !peer::offers_h264(sdp) {
            return Err(OfferError::NoH264);
        }
        let ips = if self.shared.announced.is_empty() {
            reached.into_iter().collect()
        } else {
            self.shared.announced.clone()
        };
        let candidates: Vec<SocketAddr> = (ips.into_iter())
            .map(|ip| SocketAddr::new(ip, self.shared.local.port()))
            .collect();
        // The shard is in the id: a DELETE goes to the shard that has the viewer.
        let id = self.next * self.shards as u64 + self.shard as u64;
        let cert = self.shared.cert.as_ref();
        if let Some(ip) = client
            && !self.shared.hold_pending(ip)
        {
            return Err(OfferError::TooManyPending);
        }
        let (mut peer, sdp) =
            match peer::accept(id, path, parsed, &candidates, cert, Instant::now()) {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(ip) = client {
                        self.shared.release_pending(ip);
                    }
                    return Err(OfferError::BadOffer(e.to_string()));
                }
            };
        peer.pending_from = client;
        self.next += 1;
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        self.shared
            .lock_ufrags()
            .insert(peer.ufrag.clone(), self.shard);
        self.peers.insert(id, peer);
        if let Some(stream) = self.streams.get_mut(path) {
            stream.viewers.push(id);
            // Every shard counts its own viewers into the stream's one series.
            stream.series.viewers.inc();
        }
        self.drain(id);
        Ok(Answer { id, sdp })
    }

    fn video(&mut self, path: &str, pts: i64, keyframe: bool, data: &Arc<[u8]>) {
        let now = Instant::now();
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        stream.gop.push(pts, keyframe, data);
        let wallclock = stream.wallclock(pts, now);
        let rtp_time = MediaTime::from_90khz(pts.max(0) as u64);
        // A viewer that needs a picture (new, or after a PLI) gets the latest keyframe
        // and what followed from the cache, once it is connected and not more often
        // than `gop::REPLAY_EVERY`; else the next keyframe.
        let due = |p: &Peer| p.wait_keyframe && p.connected && gop::may_replay(p.replayed_at, now);
        let replay: Option<Vec<Timed>> = (!keyframe
            && stream
                .viewers
                .iter()
                .any(|id| self.peers.get(id).is_some_and(due)))
        .then(|| stream.gop.replay())
        .flatten()
        .map(|frames| {
            (frames.iter())
                .map(|f| {
                    let time = MediaTime::from_90khz(f.pts.max(0) as u64);
                    (stream.wallclock_of(f.pts, now), time, Arc::clone(&f.data))
                })
                .collect()
        });
        let viewers = stream.viewers.clone();
        for id in viewers {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let written = if !peer.wait_keyframe || keyframe {
                peer.wait_keyframe = false;
                peer.write(MediaKind::Video, wallclock, rtp_time, data)
            } else if let Some(frames) = replay.as_ref().filter(|_| due(peer)) {
                // The cache ends with this frame.
                peer.wait_keyframe = false;
                peer.replayed_at = Some(now);
                tracing::debug!(
                    stream = path,
                    viewer = id,
                    frames = frames.len(),
                    "cached pictures sent"
                );
                (frames.iter()).try_for_each(|(wall, time, bytes)| {
                    peer.write(MediaKind::Video, *wall, *time, bytes)
                })
            } else {
                continue;
            };
            if written.is_err() {
                peer.rtc.disconnect();
            }
            self.drain(id);
        }
    }

    fn audio(&mut self, path: &str, packets: Vec<OpusPacket>) {
        let now = Instant::now();
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        let samples: Vec<(Instant, MediaTime, Arc<[u8]>)> = (packets.into_iter())
            .map(|p| {
                let wall = stream.wallclock(p.pts, now);
                let ticks = stream.audio_clock.next(p.pts, opus::samples(&p.data));
                let time = MediaTime::new(ticks, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                (wall, time, Arc::from(&p.data[..]))
            })
            .collect();
        for id in stream.viewers.clone() {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            for (wall, time, data) in &samples {
                if peer.write(MediaKind::Audio, *wall, *time, data).is_err() {
                    peer.rtc.disconnect();
                }
            }
            self.drain(id);
        }
    }

    /// Drives the viewers whose time came; once a second, drops those that never
    /// connected.
    fn drive_due(&mut self, now: Instant) {
        let sweep = now >= self.sweep_at;
        if sweep {
            self.sweep_at = now + SWEEP;
        }
        let timeout = self.shared.connect_timeout;
        let due: Vec<u64> = (self.peers.values())
            .filter(|p| {
                p.timeout <= now
                    || (sweep && !p.connected && now.duration_since(p.created) > timeout)
            })
            .map(|p| p.id)
            .collect();
        if due.is_empty() {
            return;
        }
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let never_connected = !peer.connected && now.duration_since(peer.created) > timeout;
            let failed = !never_connected
                && peer.timeout <= now
                && peer.rtc.handle_input(Input::Timeout(now)).is_err();
            if never_connected || failed {
                peer.rtc.disconnect();
            }
            self.drain(id);
        }
        self.retire_dead();
    }

    fn drain(&mut self, id: u64) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let socket = &self.shared.socket;
        if peer.connected
            && let Some(ip) = peer.pending_from.take()
        {
            self.shared.release_pending(ip);
        }
        let wants = peer.drain(|bytes, to| {
            // A full socket buffer drops the datagram (the socket does not block):
            // NACKs or the next keyframe mend it.
            let _ = socket.send_to(bytes, to);
        });
        if let Some(stream) = self.streams.get(&peer.path) {
            stream.series.sent_bytes.inc_by(wants.sent_bytes);
            stream.series.nacks.inc_by(wants.nacks);
            if wants.keyframe {
                stream.series.keyframe_requests.inc();
            }
        }
    }

    fn retire_dead(&mut self) {
        let dead: Vec<u64> = (self.peers.values())
            .filter(|p| !p.rtc.is_alive())
            .map(|p| p.id)
            .collect();
        let removed = !dead.is_empty();
        for id in dead {
            let Some(peer) = self.peers.remove(&id) else {
                continue;
            };
            self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
            self.shared.lock_ufrags().remove(&peer.ufrag);
            if let Some(ip) = peer.pending_from {
                self.shared.release_pending(ip);
            }
            if let Some(stream) = self.streams.get_mut(&peer.path) {
                stream.viewers.retain(|v| *v != id);
                stream.series.viewers.dec();
            }
        }
        if removed {
            self.by_source.retain(|_, id| self.peers.contains_key(id));
        }
    }
}

impl Shared {
    pub fn lock_ufrags(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.ufrags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more unconnected session from `ip`; false when it has its share.
    fn hold_pending(&self, ip: std::net::IpAddr) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let held = pending.entry(ip).or_default();
        if *held >= self.max_pending_per_ip {
            return false;
        }
        *held += 1;
        true
    }

    /// A session from `ip` connected or ended.
    fn release_pending(&self, ip: std::net::IpAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = pending.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                pending.remove(&ip);
            }
        }
    }
}
