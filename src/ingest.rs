//! One RTMP publisher connection, sans-IO: bytes from the socket in, bytes to send and
//! typed events out. Wraps `rml_rtmp`'s handshake and `ServerSession` and runs FLV
//! payloads through the media core, so the connection actor only moves messages.
//!
//! rml_rtmp 0.8 panics on some malformed input (short AMF commands, a short onMetaData).
//! Every call into it runs under `catch_unwind`; a panic becomes [`IngestError::Panicked`]
//! and ends this connection only.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

use crate::media::demux::{DemuxError, FlvDemuxer, MediaEvent};

/// What the connection has to act on.
pub enum IngestEvent {
    /// Bytes for the peer, in order.
    Send(Bytes),
    ConnectRequested {
        request_id: u32,
        app: String,
    },
    PublishRequested {
        request_id: u32,
        app: String,
        /// The secret. Not in `Debug` output.
        stream_key: String,
    },
    /// RTMP play: Kawa delivers HLS, not RTMP, so this is refused.
    PlayRequested {
        request_id: u32,
    },
    Media(MediaEvent),
    /// A video or audio payload that could not be turned into a frame.
    MediaError(DemuxError),
    /// onMetaData: which tracks the encoder says it will send.
    Metadata {
        has_video: bool,
        has_audio: bool,
    },
    PublishFinished,
}

impl fmt::Debug for IngestEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(b) => write!(f, "Send({} bytes)", b.len()),
            Self::ConnectRequested { request_id, app } => {
                write!(
                    f,
                    "ConnectRequested {{ request_id: {request_id}, app: {app:?} }}"
                )
            }
            Self::PublishRequested {
                request_id, app, ..
            } => write!(
                f,
                "PublishRequested {{ request_id: {request_id}, app: {app:?}, stream_key: <redacted> }}"
            ),
            Self::PlayRequested { request_id } => write!(f, "PlayRequested({request_id})"),
            Self::Media(m) => write!(f, "Media({m:?})"),
            Self::MediaError(e) => write!(f, "MediaError({e})"),
            Self::Metadata {
                has_video,
                has_audio,
            } => write!(f, "Metadata {{ video: {has_video}, audio: {has_audio} }}"),
            Self::PublishFinished => f.write_str("PublishFinished"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Session(String),
    #[error("malformed RTMP input made the RTMP library panic ({0})")]
    Panicked(String),
    #[error("connection already failed")]
    Closed,
}

enum State {
    Handshaking(Box<Handshake>),
    Session(Box<ServerSession>),
    Failed,
}

/// The protocol state of one RTMP connection.
pub struct RtmpProtocol {
    state: State,
    demuxer: FlvDemuxer,
}

impl Default for RtmpProtocol {
    fn default() -> Self {
        Self::new()
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, IngestError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        IngestError::Panicked(format!("{what}: {detail}"))
    })
}

impl RtmpProtocol {
    pub fn new() -> Self {
        Self {
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            demuxer: FlvDemuxer::new(),
        }
    }

    pub fn handshake_done(&self) -> bool {
        matches!(self.state, State::Session(_))
    }

    /// Feeds bytes read from the socket.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<IngestEvent>, IngestError> {
        let result = self.receive_inner(bytes);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn receive_inner(&mut self, bytes: &[u8]) -> Result<Vec<IngestEvent>, IngestError> {
        let mut events = Vec::new();
        match &mut self.state {
            State::Failed => return Err(IngestError::Closed),
            State::Handshaking(handshake) => {
                let result = guarded("handshake", || handshake.process_bytes(bytes))?
                    .map_err(|e| IngestError::Handshake(format!("{e:?}")))?;
                match result {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        push_send(&mut events, response_bytes);
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        push_send(&mut events, response_bytes);
                        let (session, results) = guarded("session start", || {
                            ServerSession::new(ServerSessionConfig::new())
                        })?
                        .map_err(|e| IngestError::Session(format!("{e:?}")))?;
                        self.state = State::Session(Box::new(session));
                        self.handle_results(results, &mut events);
                        if !remaining_bytes.is_empty() {
                            events.extend(self.receive_inner(&remaining_bytes)?);
                        }
                    }
                }
            }
            State::Session(session) => {
                let results = guarded("input", || session.handle_input(bytes))?
                    .map_err(|e| IngestError::Session(format!("{e:?}")))?;
                self.handle_results(results, &mut events);
            }
        }
        Ok(events)
    }

    fn session(&mut self) -> Result<&mut ServerSession, IngestError> {
        match &mut self.state {
            State::Session(s) => Ok(s),
            _ => Err(IngestError::Closed),
        }
    }

    /// Accepts a connect or publish request.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<IngestEvent>, IngestError> {
        let session = self.session()?;
        let results = guarded("accept", || session.accept_request(request_id))?
            .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        let mut events = Vec::new();
        self.handle_results(results, &mut events);
        Ok(events)
    }

    /// Refuses a request with an onStatus/_error carrying `code` (e.g.
    /// `NetStream.Publish.BadName`) and a description for the encoder's log.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<IngestEvent>, IngestError> {
        let session = self.session()?;
        let results = guarded("reject", || {
            session.reject_request(request_id, code, description)
        })?
        .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        let mut events = Vec::new();
        self.handle_results(results, &mut events);
        Ok(events)
    }

    fn handle_results(&mut self, results: Vec<ServerSessionResult>, events: &mut Vec<IngestEvent>) {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => push_send(events, packet.bytes),
                ServerSessionResult::RaisedEvent(event) => {
                    if let Some(e) = self.translate(event) {
                        events.push(e);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn translate(&mut self, event: ServerSessionEvent) -> Option<IngestEvent> {
        Some(match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => IngestEvent::ConnectRequested {
                request_id,
                app: app_name,
            },
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => IngestEvent::PublishRequested {
                request_id,
                app: app_name,
                stream_key,
            },
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                IngestEvent::PlayRequested { request_id }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => IngestEvent::PublishFinished,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => IngestEvent::Metadata {
                has_video: metadata.video_codec_id.is_some() || metadata.video_width.is_some(),
                has_audio: metadata.audio_codec_id.is_some()
                    || metadata.audio_sample_rate.is_some(),
            },
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => media(self.demuxer.video(timestamp.value, &data)),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => media(self.demuxer.audio(timestamp.value, &data)),
            _ => return None,
        })
    }
}

fn media(result: Result<MediaEvent, DemuxError>) -> IngestEvent {
    match result {
        Ok(event) => IngestEvent::Media(event),
        Err(e) => IngestEvent::MediaError(e),
    }
}

fn push_send(events: &mut Vec<IngestEvent>, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        events.push(IngestEvent::Send(Bytes::from(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };

    /// A real rml_rtmp client on the other side of an in-memory "socket".
    struct Pair {
        server: RtmpProtocol,
        client: ClientSession,
        server_events: Vec<IngestEvent>,
        client_events: Vec<ClientSessionEvent>,
    }

    impl Pair {
        fn new() -> Self {
            let mut client_hs = Handshake::new(PeerType::Client);
            let mut server = RtmpProtocol::new();
            let mut to_server = client_hs.generate_outbound_p0_and_p1().unwrap();
            let mut leftover = Vec::new();
            let mut session_start = Vec::new();
            loop {
                let mut to_client = Vec::new();
                for e in server.receive(&to_server).unwrap() {
                    if let IngestEvent::Send(b) = e {
                        to_client.extend_from_slice(&b);
                    }
                }
                if to_client.is_empty() {
                    break;
                }
                match client_hs.process_bytes(&to_client).unwrap() {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        to_server = response_bytes
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        leftover = remaining_bytes;
                        session_start = server.receive(&response_bytes).unwrap();
                        break;
                    }
                }
            }
            assert!(server.handshake_done());
            let (client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
            let mut pair = Pair {
                server,
                client,
                server_events: Vec::new(),
                client_events: Vec::new(),
            };
            pair.pump(results);
            pair.handle_server_events(session_start);
            if !leftover.is_empty() {
                let results = pair.client.handle_input(&leftover).unwrap();
                pair.pump(results);
            }
            pair
        }

        /// Delivers client output to the server and back until both are quiet, keeping
        /// each direction in order (as a socket would).
        fn pump(&mut self, results: Vec<ClientSessionResult>) {
            let mut to_server: std::collections::VecDeque<Vec<u8>> = Default::default();
            self.collect_client(results, &mut to_server);
            while let Some(bytes) = to_server.pop_front() {
                let events = self.server.receive(&bytes).unwrap();
                let replies = self.collect_server(events);
                for b in replies {
                    let results = self.client.handle_input(&b).unwrap();
                    self.collect_client(results, &mut to_server);
                }
            }
        }

        fn collect_client(
            &mut self,
            results: Vec<ClientSessionResult>,
            to_server: &mut std::collections::VecDeque<Vec<u8>>,
        ) {
            for r in results {
                match r {
                    ClientSessionResult::OutboundResponse(p) => to_server.push_back(p.bytes),
                    ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                    _ => {}
                }
            }
        }

        fn collect_server(&mut self, events: Vec<IngestEvent>) -> Vec<Bytes> {
            let mut replies = Vec::new();
            for e in events {
                match e {
                    IngestEvent::Send(b) => replies.push(b),
                    other => self.server_events.push(other),
                }
            }
            replies
        }

        fn handle_server_events(&mut self, events: Vec<IngestEvent>) {
            for b in self.collect_server(events) {
                let results = self.client.handle_input(&b).unwrap();
                self.pump(results);
            }
        }

        fn take_request(&mut self) -> (u32, String) {
            let idx = self
                .server_events
                .iter()
                .position(|e| {
                    matches!(
                        e,
                        IngestEvent::ConnectRequested { .. } | IngestEvent::PublishRequested { .. }
                    )
                })
                .expect("a request");
            match self.server_events.remove(idx) {
                IngestEvent::ConnectRequested { request_id, app } => (request_id, app),
                IngestEvent::PublishRequested {
                    request_id,
                    stream_key,
                    ..
                } => (request_id, stream_key),
                _ => unreachable!(),
            }
        }
    }

    fn connected_publish_request(key: &str) -> (Pair, u32) {
        let mut pair = Pair::new();
        let results = pair.client.request_connection("live".into()).unwrap();
        pair.pump(vec![results]);
        let (id, app) = pair.take_request();
        assert_eq!(app, "live");
        let events = pair.server.accept(id).unwrap();
        pair.handle_server_events(events);
        let results = pair
            .client
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        pair.pump(vec![results]);
        let (id, stream_key) = pair.take_request();
        assert_eq!(stream_key, key);
        (pair, id)
    }

    #[test]
    fn connect_publish_and_media_flow_through() {
        let (mut pair, id) = connected_publish_request("kawa_sk_secret");
        let events = pair.server.accept(id).unwrap();
        pair.handle_server_events(events);
        assert!(
            pair.client_events
                .iter()
                .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)),
            "{:?}",
            pair.client_events
        );
        // An AAC sequence header, then a raw frame.
        let r = pair
            .client
            .publish_audio_data(
                Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
                rml_rtmp::time::RtmpTimestamp::new(0),
                false,
            )
            .unwrap();
        pair.pump(vec![r]);
        let r = pair
            .client
            .publish_audio_data(
                Bytes::from_static(&[0xAF, 1, 0x21, 0x10]),
                rml_rtmp::time::RtmpTimestamp::new(23),
                false,
            )
            .unwrap();
        pair.pump(vec![r]);
        let media: Vec<_> = pair
            .server_events
            .iter()
            .filter(|e| matches!(e, IngestEvent::Media(_)))
            .collect();
        assert_eq!(media.len(), 2, "{:?}", pair.server_events);
        let IngestEvent::Media(MediaEvent::Frame(crate::media::frame::Frame::Audio(frame))) =
            media[1]
        else {
            panic!("{media:?}")
        };
        assert_eq!(frame.pts, 23 * 90);
        assert_eq!(&frame.data[..2], &[0xFF, 0xF1]);
    }

    #[test]
    fn rejected_publish_tells_the_client_why() {
        let (mut pair, id) = connected_publish_request("wrong");
        let events = pair
            .server
            .reject(id, "NetStream.Publish.BadName", "unknown stream key")
            .unwrap();
        assert!(events.iter().any(|e| matches!(e, IngestEvent::Send(_))));
        pair.handle_server_events(events);
        assert!(
            !pair
                .client_events
                .iter()
                .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
        );
    }

    #[test]
    fn stream_key_is_redacted_in_debug_output() {
        let e = IngestEvent::PublishRequested {
            request_id: 1,
            app: "live".into(),
            stream_key: "kawa_sk_topsecret".into(),
        };
        assert!(!format!("{e:?}").contains("topsecret"));
    }

    #[test]
    fn garbage_is_an_error_and_the_connection_stays_failed() {
        let mut p = RtmpProtocol::new();
        // Version byte 3 is the only one RTMP knows.
        let err = p.receive(&[0x07; 1537]).unwrap_err();
        assert!(matches!(err, IngestError::Handshake(_)), "{err}");
        assert_eq!(p.receive(&[0; 10]).unwrap_err(), IngestError::Closed);
    }
}
