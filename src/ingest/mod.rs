//! One RTMP publisher connection, sans-IO: bytes from the socket in, bytes to send and
//! typed events out. Wraps `rml_rtmp`'s handshake and `ServerSession` and runs FLV
//! payloads through the media core, so the connection actor only moves messages.
//!
//! rml_rtmp 0.8 cannot be given a peer's bytes directly: its chunk reader breaks on
//! interleaved chunk streams and buffers whatever length a peer declares, and its AMF0
//! parser recurses without a bound. So the bytes go through Kawa's own [`chunk`] reader
//! (caps on every declared length, tighter until a publish is accepted) and every command
//! and data message through the [`amf`] check; rml_rtmp then gets each message whole, as
//! one chunk, for the session logic it does well (commands, replies, stream states).
//! What it could still panic on runs under `catch_unwind`; a panic becomes
//! [`IngestError::Panicked`] and ends this connection only.
//!
//! A publish request pauses the reading of messages until it is accepted or refused, so
//! that what the encoder sent right behind it (metadata, sequence headers) is handed on
//! after the publish is in place instead of being dropped by a session not yet publishing.

pub mod amf;
pub mod chunk;

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use amf::AmfError;
use chunk::{ChunkError, ChunkLimits, ChunkMessage, ChunkReader};

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
    #[error("RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("RTMP message of type {type_id}: {error}")]
    Amf { type_id: u8, error: AmfError },
    #[error("malformed RTMP {0} command")]
    MalformedCommand(&'static str),
    #[error("{held} bytes of messages sent while the publish is being checked, over {limit}")]
    TooMuchBeforePublish { held: usize, limit: usize },
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

/// Largest audio or video message by default (`rtmp.max_message_bytes`).
pub const DEFAULT_MAX_MEDIA_MESSAGE: u32 = 8 << 20;

/// The protocol state of one RTMP connection.
pub struct RtmpProtocol {
    state: State,
    demuxer: FlvDemuxer,
    chunks: ChunkReader,
    max_media_message: u32,
    /// The publish request waiting for a decision; messages are held meanwhile.
    publish_pending: Option<u32>,
    held: VecDeque<ChunkMessage>,
    held_bytes: usize,
    /// Scratch space: messages read, and one message re-chunked for rml_rtmp.
    messages: Vec<ChunkMessage>,
    rechunked: Vec<u8>,
}

impl Default for RtmpProtocol {
    fn default() -> Self {
        Self::new()
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, IngestError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = crate::telemetry::panic_message(&*panic);
        IngestError::Panicked(format!("{what}: {detail}"))
    })
}

impl RtmpProtocol {
    pub fn new() -> Self {
        Self::with_max_media_message(DEFAULT_MAX_MEDIA_MESSAGE)
    }

    /// A connection whose audio and video messages may be up to `max_media_message`
    /// bytes once its publish is accepted (at most 16 MiB - 1, what a chunk header holds).
    pub fn with_max_media_message(max_media_message: u32) -> Self {
        Self {
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            demuxer: FlvDemuxer::new(),
            chunks: ChunkReader::new(ChunkLimits::BEFORE_PUBLISH),
            max_media_message: max_media_message.min(chunk::MAX_MESSAGE_LENGTH),
            publish_pending: None,
            held: VecDeque::new(),
            held_bytes: 0,
            messages: Vec::new(),
            rechunked: Vec::new(),
        }
    }

    /// Bytes this connection holds for incomplete and held messages.
    pub fn buffered(&self) -> usize {
        self.chunks.buffered() + self.held_bytes
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
                        // rml_rtmp gets every message as one chunk: tell it chunks can be
                        // as large as a message can be.
                        self.forward(&chunk::largest_chunk_size_message(), &mut events)?;
                        if !remaining_bytes.is_empty() {
                            events.extend(self.receive_inner(&remaining_bytes)?);
                        }
                    }
                }
            }
            State::Session(_) => {
                let mut messages = std::mem::take(&mut self.messages);
                let read = self.chunks.push(bytes, &mut messages);
                let mut result = read.map_err(IngestError::from);
                for message in messages.drain(..) {
                    if result.is_err() {
                        break;
                    }
                    result = if self.publish_pending.is_some() {
                        self.hold(message)
                    } else {
                        self.dispatch(message, &mut events)
                    };
                }
                self.messages = messages;
                result?;
            }
        }
        Ok(events)
    }

    /// Keeps a message that came behind a publish request until the request is decided.
    fn hold(&mut self, message: ChunkMessage) -> Result<(), IngestError> {
        self.held_bytes += message.payload.len();
        self.held.push_back(message);
        let limit = ChunkLimits::BEFORE_PUBLISH.max_buffered;
        if self.held_bytes > limit {
            return Err(IngestError::TooMuchBeforePublish {
                held: self.held_bytes,
                limit,
            });
        }
        Ok(())
    }

    /// Hands the messages held behind an accepted publish on, in order.
    fn release_held(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        while self.publish_pending.is_none() {
            let Some(message) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= message.payload.len();
            self.dispatch(message, events)?;
        }
        Ok(())
    }

    /// Checks one message and gives it to rml_rtmp.
    fn dispatch(
        &mut self,
        mut message: ChunkMessage,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        match message.type_id {
            // Protocol control, user control, audio, video: fixed layouts rml_rtmp reads.
            3..=6 | 8 | 9 => {}
            // AMF0 data; 15 is "AMF3" data that is AMF0 in practice (rml_rtmp reads it so).
            15 | 18 => {
                let summary = amf::check(&message.payload).map_err(|error| IngestError::Amf {
                    type_id: message.type_id,
                    error,
                })?;
                if summary.name == Some("@setDataFrame") && summary.values < 3 {
                    return Err(IngestError::MalformedCommand("@setDataFrame"));
                }
            }
            // AMF0 command; 17 is an "AMF3" command, AMF0 behind a 0 byte.
            17 | 20 => {
                if message.type_id == 17 && message.payload.first() == Some(&0) {
                    message.payload = message.payload.slice(1..);
                    message.type_id = 20;
                }
                let summary = amf::check(&message.payload).map_err(|error| IngestError::Amf {
                    type_id: message.type_id,
                    error,
                })?;
                check_command(&summary)?;
            }
            // Shared objects and aggregate messages: no encoder Kawa serves sends them.
            _ => return Ok(()),
        }
        self.forward(&message, events)
    }

    /// Gives rml_rtmp one message as a single chunk.
    fn forward(
        &mut self,
        message: &ChunkMessage,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        self.rechunked.clear();
        chunk::write_single_chunk(message, &mut self.rechunked);
        let State::Session(session) = &mut self.state else {
            return Err(IngestError::Closed);
        };
        let input = &self.rechunked;
        let results = guarded("input", || session.handle_input(input))?
            .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        self.handle_results(results, events);
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, IngestError> {
        match &mut self.state {
            State::Session(s) => Ok(s),
            _ => Err(IngestError::Closed),
        }
    }

    /// Accepts a connect or publish request. Once a publish is accepted, messages may be
    /// as large as video needs, and what came behind the request is handed on.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<IngestEvent>, IngestError> {
        let session = self.session()?;
        let results = guarded("accept", || session.accept_request(request_id))?
            .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        let mut events = Vec::new();
        self.handle_results(results, &mut events);
        if self.publish_pending == Some(request_id) {
            self.publish_pending = None;
            self.chunks
                .set_limits(ChunkLimits::publishing(self.max_media_message));
            self.release_held(&mut events)?;
        }
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
            } => {
                self.publish_pending = Some(request_id);
                IngestEvent::PublishRequested {
                    request_id,
                    app: app_name,
                    stream_key,
                }
            }
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

/// Refuses the commands rml_rtmp would index into without checking their arguments.
fn check_command(summary: &amf::AmfSummary<'_>) -> Result<(), IngestError> {
    let (Some(name), true) = (summary.name, summary.second_is_number) else {
        return Err(IngestError::MalformedCommand("AMF0"));
    };
    // name, transaction id, command object, then the arguments each command reads.
    let (command, needed) = match name {
        "publish" => ("publish", 5),
        "play" => ("play", 4),
        _ => ("AMF0", 3),
    };
    if summary.values < needed {
        return Err(IngestError::MalformedCommand(command));
    }
    Ok(())
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

    fn message(timestamp: u32, type_id: u8, payload: &[u8]) -> ChunkMessage {
        ChunkMessage {
            timestamp,
            type_id,
            stream_id: 1,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn media_events(events: &[IngestEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, IngestEvent::Media(_) | IngestEvent::MediaError(_)))
            .count()
    }

    #[test]
    fn media_sent_right_behind_the_publish_waits_for_it() {
        // The publish request is out, not yet decided; the AAC sequence header follows.
        let (mut pair, id) = connected_publish_request("k");
        let mut bytes = Vec::new();
        chunk::write_single_chunk(&message(0, 8, &[0xAF, 0, 0x12, 0x10]), &mut bytes);
        let events = pair.server.receive(&bytes).unwrap();
        assert_eq!(
            media_events(&events),
            0,
            "held until the publish is decided"
        );
        let events = pair.server.accept(id).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, IngestEvent::Media(MediaEvent::Config(_)))),
            "{events:?}"
        );
    }

    #[test]
    fn interleaved_chunk_streams_reach_the_demuxer() {
        let (mut pair, id) = connected_publish_request("k");
        let events = pair.server.accept(id).unwrap();
        pair.handle_server_events(events);
        // A 300-byte video message on chunk stream 9 with an audio message on chunk
        // stream 10 between its chunks (rml_rtmp 0.8 panicked on this).
        let mut video = vec![0x17, 0x01, 0, 0, 0];
        video.resize(300, 0);
        // Chunks of 128 bytes from here on (rml_rtmp's client set 4096).
        let mut bytes = Vec::new();
        chunk::write_single_chunk(
            &message(0, chunk::SET_CHUNK_SIZE, &128u32.to_be_bytes()),
            &mut bytes,
        );
        bytes.extend_from_slice(&[9, 0, 0, 40, 0, 1, 44, 9, 1, 0, 0, 0]);
        bytes.extend_from_slice(&video[..128]);
        bytes.extend_from_slice(&[10, 0, 0, 41, 0, 0, 4, 8, 1, 0, 0, 0, 0xAF, 0, 0x12, 0x10]);
        bytes.push(0xC0 | 9);
        bytes.extend_from_slice(&video[128..256]);
        bytes.push(0xC0 | 9);
        bytes.extend_from_slice(&video[256..]);
        let events = pair.server.receive(&bytes).unwrap();
        assert_eq!(media_events(&events), 2, "{events:?}");
    }

    #[test]
    fn a_publish_without_its_arguments_is_refused_not_panicked_on() {
        let mut pair = Pair::new();
        let results = pair.client.request_connection("live".into()).unwrap();
        pair.pump(vec![results]);
        let (id, _) = pair.take_request();
        let events = pair.server.accept(id).unwrap();
        pair.handle_server_events(events);
        let values = vec![
            rml_rtmp::rml_amf0::Amf0Value::Utf8String("publish".into()),
            rml_rtmp::rml_amf0::Amf0Value::Number(5.0),
            rml_rtmp::rml_amf0::Amf0Value::Null,
        ];
        let payload = rml_rtmp::rml_amf0::serialize(&values).unwrap();
        let mut bytes = Vec::new();
        chunk::write_single_chunk(&message(0, 20, &payload), &mut bytes);
        let err = pair.server.receive(&bytes).unwrap_err();
        assert_eq!(err, IngestError::MalformedCommand("publish"));
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
