//! One WebRTC viewer: its `str0m::Rtc` (ICE-lite, DTLS-SRTP, RTP packetisation, NACK
//! resends from its own history) and what Kawa tracks beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid, Pt};
use str0m::{Candidate, Event, IceConnectionState, Output, Rtc, RtcError};

/// RTP packets of video a viewer's history keeps for NACKs: about a second of a 3 Mbit/s
/// stream, many round trips. Each viewer's packets are its own (encrypted for it), so
/// this is most of what a viewer costs: 800 held 1.65 MB per viewer (benches/webrtc.rs).
const VIDEO_HISTORY: usize = 300;
/// How often str0m reports what a viewer was sent (bytes, NACKs) for the metrics.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// What a viewer's connection asks of the server after being driven.
#[derive(Debug, Default)]
pub struct Wants {
    /// The viewer lost a picture (PLI/FIR): send from the next keyframe.
    pub keyframe: bool,
    /// Bytes and NACKs since the last report.
    pub sent_bytes: u64,
    pub nacks: u64,
}

pub struct Peer {
    pub id: u64,
    pub path: String,
    /// The ICE user name fragment Kawa gave this viewer (STUN from it names it).
    pub ufrag: String,
    pub rtc: Rtc,
    video: Option<(Mid, Pt)>,
    audio: Option<(Mid, Pt)>,
    /// Video goes out from a keyframe only: at the start, and after a loss.
    pub wait_keyframe: bool,
    /// When it last got the cached pictures (`webrtc::gop`).
    pub replayed_at: Option<Instant>,
    pub created: Instant,
    pub connected: bool,
    /// The client address counted under `webrtc.max_pending_per_ip` until connected.
    pub pending_from: Option<std::net::IpAddr>,
    /// When str0m wants to be driven next.
    pub timeout: Instant,
    /// Cumulative egress figures per mid at the last stats event.
    reported: Vec<(Mid, u64, u64)>,
}

/// A new viewer from a WHEP offer: the answer to send back.
pub fn accept(
    id: u64,
    path: &str,
    offer: SdpOffer,
    candidates: &[SocketAddr],
    cert: Option<&DtlsCert>,
    now: Instant,
) -> Result<(Peer, String), RtcError> {
    let mut config = Rtc::builder();
    if let Some(cert) = cert {
        // The server's one certificate: making a key pair per viewer took most of an
        // offer's time (browsers check the fingerprint in the answer, not its age).
        config = config.set_dtls_cert(cert.clone());
    }
    let mut rtc = config
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .set_send_buffer_video(VIDEO_HISTORY)
        .set_stats_interval(Some(STATS_EVERY))
        .build(now);
    for addr in candidates {
        rtc.add_local_candidate(Candidate::host(*addr, "udp")?);
    }
    let answer = one_media_stream(&rtc.sdp_api().accept_offer(offer)?.to_sdp_string());
    let ufrag = (answer.lines())
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let peer = Peer {
        id,
        path: path.to_owned(),
        ufrag,
        rtc,
        video: None,
        audio: None,
        wait_keyframe: true,
        replayed_at: None,
        created: now,
        connected: false,
        pending_from: None,
        timeout: now,
        reported: Vec::new(),
    };
    Ok((peer, answer))
}

/// The answer with its audio and video in one media stream (`msid`). str0m gives each
/// track of a browser's receive-only offer a stream of its own, and a browser plays
/// tracks of different streams each as soon as it can: the audio, which comes through
/// FFmpeg, then plays behind the picture. In one stream the browser lines them up by
/// their sender reports (both on the stream's one clock).
fn one_media_stream(answer: &str) -> String {
    let stream = answer.lines().find_map(|l| {
        let rest = l.strip_prefix("a=msid:")?;
        rest.split_whitespace().next().map(str::to_owned)
    });
    let Some(stream) = stream else {
        return answer.to_owned();
    };
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let (body, end) = line
            .strip_suffix("\r\n")
            .map(|b| (b, "\r\n"))
            .or_else(|| line.strip_suffix('\n').map(|b| (b, "\n")))
            .unwrap_or((line, ""));
        match body.split_once(' ') {
            // `a=msid:STREAM TRACK`
            Some((head, track)) if head.starts_with("a=msid:") => {
                out.push_str(&format!("a=msid:{stream} {track}{end}"));
            }
            // `a=ssrc:N msid:STREAM TRACK`
            Some((head, rest)) if head.starts_with("a=ssrc:") && rest.starts_with("msid:") => {
                let track = rest.split_whitespace().nth(1).unwrap_or_default();
                out.push_str(&format!("{head} msid:{stream} {track}{end}"));
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Whether an offer wants H.264 in packetization mode 1, which is all Kawa sends.
pub fn offers_h264(offer: &str) -> bool {
    offer.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("a=rtpmap:") && l.contains(" h264/90000")
    })
}

impl Peer {
    /// Writes one frame (`kind`) at `rtp_time` and drives the connection. A viewer that
    /// has no track of that kind gets nothing.
    pub fn write(
        &mut self,
        kind: MediaKind,
        wallclock: Instant,
        rtp_time: MediaTime,
        data: &Arc<[u8]>,
    ) -> Result<(), RtcError> {
        let track = match kind {
            MediaKind::Video => self.video,
            MediaKind::Audio => self.audio,
        };
        let Some((mid, pt)) = track else {
            return Ok(());
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        writer.write(pt, wallclock, rtp_time, Arc::clone(data))
    }

    /// Hands str0m's output to `send` until it asks to be driven again, and reports what
    /// the viewer asked for. Must run after every input and write (str0m's rule).
    pub fn drain(&mut self, mut send: impl FnMut(&[u8], SocketAddr)) -> Wants {
        let mut wants = Wants::default();
        loop {
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(_) => {
                    self.rtc.disconnect();
                    return wants;
                }
            };
            match output {
                Output::Timeout(at) => {
                    self.timeout = at;
                    return wants;
                }
                Output::Transmit(t) => send(&t.contents, t.destination),
                Output::Event(event) => self.event(event, &mut wants),
            }
        }
    }

    fn event(&mut self, event: Event, wants: &mut Wants) {
        match event {
            Event::Connected => self.connected = true,
            Event::MediaAdded(m) => {
                let track = self.payload_type(m.mid, m.kind).map(|pt| (m.mid, pt));
                match m.kind {
                    MediaKind::Video => self.video = track,
                    MediaKind::Audio => self.audio = track,
                }
            }
            Event::KeyframeRequest(_) => {
                self.wait_keyframe = true;
                wants.keyframe = true;
            }
            Event::MediaEgressStats(stats) => {
                let seen = match self.reported.iter_mut().find(|(mid, ..)| *mid == stats.mid) {
                    Some(seen) => seen,
                    None => {
                        self.reported.push((stats.mid, 0, 0));
                        self.reported.last_mut().expect("just pushed")
                    }
                };
                wants.sent_bytes += stats.bytes.saturating_sub(seen.1);
                wants.nacks += stats.nacks.saturating_sub(seen.2);
                (seen.1, seen.2) = (stats.bytes, stats.nacks);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.rtc.disconnect();
            }
            _ => {}
        }
    }

    /// The browser's payload type for what Kawa sends on `mid`: Opus, or H.264 in
    /// packetization mode 1 (constrained baseline preferred: every browser decodes it,
    /// and any profile's stream plays in practice with the profile the browser named).
    fn payload_type(&mut self, mid: Mid, kind: MediaKind) -> Option<Pt> {
        let writer = self.rtc.writer(mid)?;
        let fits: Vec<(Pt, Option<u32>)> = writer
            .payload_params()
            .filter(|p| match kind {
                MediaKind::Audio => p.spec().codec == Codec::Opus,
                MediaKind::Video => {
                    p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)
                }
            })
            .map(|p| (p.pt(), p.spec().format.profile_level_id))
            .collect();
        (fits.iter().find(|(_, profile)| *profile == Some(0x42e01f)))
            .or(fits.first())
            .map(|(pt, _)| *pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_and_video_go_in_one_media_stream() {
        let answer = "v=0\r\na=msid-semantic: WMS aaa bbb\r\nm=video 9 UDP/TLS/RTP/SAVPF 108\r\n\
                      a=msid:aaa v1\r\na=ssrc:11 cname:x\r\na=ssrc:11 msid:aaa v1\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:bbb a1\r\n\
                      a=ssrc:22 msid:bbb a1\r\n";
        let one = one_media_stream(answer);
        assert!(one.contains("a=msid:aaa a1\r\n"), "{one}");
        assert!(one.contains("a=ssrc:22 msid:aaa a1\r\n"), "{one}");
        assert!(one.contains("a=ssrc:11 msid:aaa v1\r\n"), "{one}");
        assert!(one.contains("a=ssrc:11 cname:x\r\n"), "{one}");
        assert!(!one.contains("msid:bbb"), "{one}");
        assert_eq!(one.len(), answer.len());
    }
}
