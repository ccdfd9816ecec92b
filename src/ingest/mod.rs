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
pub mod pace;
pub mod stream_id;

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
    /// The message stream of the last publish command, and of the accepted publish:
    /// its audio and video go straight to the demuxer, not through rml_rtmp (which
    /// would copy each message twice more and zero a buffer for it).
    publish_stream: Option<u32>,
    publishing: Option<u32>,
    /// Acknowledgements are Kawa's (rml_rtmp never sees the media bytes): every
    /// `peer_window` bytes (the peer's Window Acknowledgement Size), the total so far.
    received: u64,
    acked: u64,
    peer_window: Option<u32>,
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
            publish_stream: None,
            publishing: None,
            received: 0,
            acked: 0,
            peer_window: None,
        }
    }

    /// A connection whose handshake is already done, for the fuzzer (`fuzz/`): the
    /// handshake is rml_rtmp's, fixed-size, and costs more than everything after it, so
    /// skipping it lets the fuzzer spend its runs on the chunk stream, AMF and media.
    #[cfg(feature = "fuzzing")]
    pub fn after_handshake(
        max_media_message: u32,
    ) -> Result<(Self, Vec<IngestEvent>), IngestError> {
        let mut this = Self::with_max_media_message(max_media_message);
        let mut events = Vec::new();
        this.start_session(&mut events)?;
        Ok((this, events))
    }

    /// The handshake is done: rml_rtmp's session starts, and is told that chunks can be
    /// as large as a message can be (it gets every message as one chunk).
    fn start_session(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        let (session, results) = guarded("session start", || {
            ServerSession::new(ServerSessionConfig::new())
        })?
        .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        self.state = State::Session(Box::new(session));
        self.handle_results(results, events);
        self.forward(&chunk::largest_chunk_size_message(), events)
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
        self.received += bytes.len() as u64;
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
                        self.start_session(&mut events)?;
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
                self.acknowledge(&mut events);
            }
        }
        Ok(events)
    }

    /// Sends an Acknowledgement once a window's worth of bytes came in since the last.
    fn acknowledge(&mut self, events: &mut Vec<IngestEvent>) {
        if let Some(window) = self.peer_window
            && self.received - self.acked >= u64::from(window)
        {
            self.acked = self.received;
            // The sequence number is the byte count, wrapping at 32 bits (§5.4.3).
            events.push(IngestEvent::Send(Bytes::from(chunk::acknowledgement(
                self.received as u32,
            ))));
        }
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
            // The published stream's media: straight to the demuxer.
            chunk::AUDIO | chunk::VIDEO if self.publishing == Some(message.stream_id) => {
                let event = if message.type_id == chunk::VIDEO {
                    media(self.demuxer.video(message.timestamp, &message.payload))
                } else {
                    media(self.demuxer.audio(message.timestamp, &message.payload))
                };
                events.push(event);
                return Ok(());
            }
            // The peer's window: Kawa acknowledges (rml_rtmp would count only what it
            // sees). A window under 4 KiB would have us answer every read: not taken.
            chunk::WINDOW_ACK_SIZE => {
                if let Some(size) = message.payload.get(..4) {
                    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                    self.peer_window = (size >= 4096).then_some(size);
                }
                return Ok(());
            }
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
                if summary.name == Some("publish") {
                    self.publish_stream = Some(message.stream_id);
                }
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
            self.publishing = self.publish_stream;
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
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.publishing = None;
                IngestEvent::PublishFinished
            }
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
mod tests;
