//! The WebRTC server: one task owns the UDP socket and every viewer's connection. A
//! stream's frames arrive once, as commands; each goes to that stream's viewers as the
//! same shared bytes (packetised per viewer by str0m, which also encrypts per viewer).
//! Datagrams are routed to their viewer by source address (str0m's `accepts` for a
//! new one). Everything a peer sends is bounded: an offer by the HTTP layer, a datagram
//! by the buffer, viewers by `webrtc.max_sessions`, and a viewer that does not connect
//! within `webrtc.connect_timeout_ms` is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::media::{MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::feed::Offer;
use super::metrics::StreamSeries;
use super::peer::{self, Peer};
use super::{Answer, OfferError};
use crate::media::opus::{self, OpusPacket, RTP_CLOCK};

/// The largest datagram read (a browser's stay well under 1500 bytes).
const DATAGRAM: usize = 2048;
/// Frames of a stream kept for its clock when nobody watches: none; a new viewer waits
/// for the next keyframe (one from a cache would keep it that much behind live).
const IDLE: Duration = Duration::from_secs(1);

pub enum Command {
    Offer {
        path: String,
        sdp: String,
        /// Where the viewer reached Kawa's HTTP port: the host candidate when nothing
        /// better is configured.
        reached: Option<std::net::IpAddr>,
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
        audio: bool,
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
}

/// A live stream's state here.
struct Stream {
    offer: Offer,
    audio: bool,
    viewers: Vec<u64>,
    /// Media time (90 kHz) against the wall clock, for RTCP's sender reports: audio and
    /// video on one clock keep lips in sync.
    clock: Option<(Instant, i64)>,
    audio_clock: AudioClock,
    series: StreamSeries,
}

/// Opus RTP timestamps (48 kHz) that advance by exactly each packet's samples. FFmpeg
/// stamps its Opus packets from the AAC input's clock, a millisecond off either way;
/// a browser's jitter buffer takes such steps for gaps and overlaps and fills 40 % of
/// the time with concealment. A step over 100 ms is a real jump: followed.
#[derive(Debug, Default)]
struct AudioClock {
    next: Option<u64>,
}

impl AudioClock {
    const RESYNC: u64 = RTP_CLOCK as u64 / 10;

    fn next(&mut self, pts: i64, samples: u32) -> u64 {
        let stamped = (pts.max(0) as u64) * RTP_CLOCK as u64 / 90_000;
        let ticks = match self.next {
            Some(next) if next.abs_diff(stamped) <= Self::RESYNC => next,
            _ => stamped,
        };
        self.next = Some(ticks + u64::from(samples));
        ticks
    }
}

impl Stream {
    fn wallclock(&mut self, pts: i64, now: Instant) -> Instant {
        let (at, base) = *self.clock.get_or_insert((now, pts));
        let offset = Duration::from_micros(((pts - base).max(0) as u64) * 100 / 9);
        let wall = at + offset;
        // A new timeline (a restart, a jump): start the clock again.
        if wall > now + IDLE * 5 || wall + IDLE * 5 < now {
            self.clock = Some((now, pts));
            return now;
        }
        wall
    }
}

pub struct Server {
    socket: UdpSocket,
    local: SocketAddr,
    /// Host candidates from the settings (`webrtc.public_ips`, or the bound address).
    announced: Vec<std::net::IpAddr>,
    max_sessions: usize,
    connect_timeout: Duration,
    streams: HashMap<String, Stream>,
    peers: HashMap<u64, Peer>,
    by_source: HashMap<SocketAddr, u64>,
    next_id: u64,
}

impl Server {
    pub fn new(
        socket: UdpSocket,
        announced: Vec<std::net::IpAddr>,
        max_sessions: usize,
        connect_timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            local: socket.local_addr()?,
            socket,
            announced,
            max_sessions,
            connect_timeout,
            streams: HashMap::new(),
            peers: HashMap::new(),
            by_source: HashMap::new(),
            next_id: 1,
        })
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            let next = (self.peers.values().map(|p| p.timeout).min())
                .unwrap_or_else(|| Instant::now() + IDLE);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = received {
                        self.datagram(&buf[..n], source);
                    }
                }
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
                destination: self.local,
                contents,
            },
        );
        let known = self.by_source.get(&source).copied();
        let id = known
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)))
            .or_else(|| {
                (self.peers.values())
                    .find(|p| p.rtc.accepts(&input))
                    .map(|p| p.id)
            });
        let Some(id) = id else { return };
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
                reply,
            } => {
                let _ = reply.send(self.offer(&path, &sdp, reached));
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
            Command::Stream { path, offer, audio } => {
                let stream = self.streams.entry(path.clone()).or_insert_with(|| Stream {
                    offer: Offer::Pending,
                    audio,
                    viewers: Vec::new(),
                    clock: None,
                    audio_clock: AudioClock::default(),
                    series: StreamSeries::new(&path),
                });
                if stream.offer != offer {
                    // Another rendition: its pictures start at its next keyframe.
                    for id in &stream.viewers {
                        if let Some(peer) = self.peers.get_mut(id) {
                            peer.wait_keyframe = true;
                        }
                    }
                }
                (stream.offer, stream.audio) = (offer, audio);
            }
            Command::Video {
                path,
                pts,
                keyframe,
                data,
            } => self.video(&path, pts, keyframe, &data),
            Command::Audio { path, packets } => self.audio(&path, packets),
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
    ) -> Result<Answer, OfferError> {
        let stream = self.streams.get(path).ok_or(OfferError::NoStream)?;
        if let Offer::Unfit(reason) = stream.offer {
            return Err(OfferError::Unfit(reason));
        }
        if self.peers.len() >= self.max_sessions {
            return Err(OfferError::Full);
        }
        if let Err(e) = str0m::change::SdpOffer::from_sdp_string(sdp) {
            return Err(OfferError::BadOffer(e.to_string()));
        }
        if !peer::offers_h264(sdp) {
            return Err(OfferError::NoH264);
        }
        let ips = if self.announced.is_empty() {
            reached.into_iter().collect()
        } else {
            self.announced.clone()
        };
        let candidates: Vec<SocketAddr> = (ips.into_iter())
            .map(|ip| SocketAddr::new(ip, self.local.port()))
            .collect();
        let id = self.next_id;
        let (peer, sdp) = peer::accept(id, path, sdp, &candidates, Instant::now())
            .map_err(|e| OfferError::BadOffer(e.to_string()))?;
        self.next_id += 1;
        self.peers.insert(id, peer);
        if let Some(stream) = self.streams.get_mut(path) {
            stream.viewers.push(id);
            stream.series.viewers.set(stream.viewers.len() as i64);
        }
        self.drain(id);
        Ok(Answer { id, sdp })
    }

    fn video(&mut self, path: &str, pts: i64, keyframe: bool, data: &Arc<[u8]>) {
        let now = Instant::now();
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        let wallclock = stream.wallclock(pts, now);
        let rtp_time = MediaTime::from_90khz(pts.max(0) as u64);
        let viewers = stream.viewers.clone();
        for id in viewers {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.wait_keyframe && !keyframe {
                continue;
            }
            peer.wait_keyframe = false;
            if peer
                .write(MediaKind::Video, wallclock, rtp_time, data)
                .is_err()
            {
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

    /// Drives the viewers whose time came, drops those that never connected.
    fn drive_due(&mut self, now: Instant) {
        let due: Vec<u64> = (self.peers.values())
            .filter(|p| p.timeout <= now || !p.connected)
            .map(|p| p.id)
            .collect();
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let never_connected =
                !peer.connected && now.duration_since(peer.created) > self.connect_timeout;
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
        let socket = &self.socket;
        let wants = peer.drain(|bytes, to| {
            // A full socket buffer drops the datagram: NACKs or the next keyframe mend it.
            let _ = socket.try_send_to(bytes, to);
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
        for id in dead {
            let Some(peer) = self.peers.remove(&id) else {
                continue;
            };
            if let Some(stream) = self.streams.get_mut(&peer.path) {
                stream.viewers.retain(|v| *v != id);
                stream.series.viewers.set(stream.viewers.len() as i64);
            }
        }
        self.by_source.retain(|_, id| self.peers.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_timestamps_advance_by_samples_and_follow_a_jump() {
        let mut clock = AudioClock::default();
        // FFmpeg's stamps for 20 ms packets: 1800 ticks apart, give or take 70.
        let stamps = [1845, 3645, 5514, 7295, 9075, 10875];
        let ticks: Vec<u64> = stamps.iter().map(|p| clock.next(*p, 960)).collect();
        assert_eq!(ticks, [984, 1944, 2904, 3864, 4824, 5784]);
        // A new timeline five seconds on.
        assert_eq!(clock.next(460_000, 960), 245_333);
    }
}
