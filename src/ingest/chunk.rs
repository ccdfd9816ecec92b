//! The RTMP chunk stream (RTMP 1.0 §5.3), read sans-IO with a cap on everything the peer
//! declares.
//!
//! Written here rather than taken from rml_rtmp 0.8, whose `ChunkDeserializer` keeps one
//! payload buffer for all chunk streams: two interleaved chunk streams (legal RTMP, a large
//! message on one and a small one on another) corrupt it and panic with "capacity
//! overflow", and it buffers any declared length up to 16 MiB before anything can check
//! it. This reader keeps one partial message per chunk stream, checks each message's
//! declared length against the limits in force before it buffers a byte of it, and hands
//! out whole messages. The protocol control messages that shape the chunk stream itself
//! (Set Chunk Size, Abort; §5.4.1–5.4.2) are consumed here.

use bytes::{Bytes, BytesMut};

/// What the peer may make this reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest audio or video message.
    pub max_media_message: u32,
    /// Largest command or data message (AMF). Real encoders send a few hundred bytes.
    pub max_amf_message: u32,
    /// Most bytes held in incomplete messages, over all chunk streams together.
    pub max_buffered: usize,
    /// Most chunk streams with state. Encoders use a handful (ffmpeg and OBS: 2–8).
    pub max_chunk_streams: usize,
}

impl ChunkLimits {
    /// Before a publish is accepted: only small commands (connect, createStream, publish).
    pub const BEFORE_PUBLISH: Self = Self {
        max_media_message: 4 * 1024,
        max_amf_message: 4 * 1024,
        max_buffered: 16 * 1024,
        max_chunk_streams: 8,
    };

    /// While publishing, with `max_media_message` from the configuration.
    pub fn publishing(max_media_message: u32) -> Self {
        Self {
            max_media_message,
            max_amf_message: 64 * 1024,
            // A large frame on one chunk stream with the next one starting on another.
            max_buffered: 2 * max_media_message as usize,
            max_chunk_streams: 16,
        }
    }
}

/// Largest message length a chunk header can carry (24 bits).
pub const MAX_MESSAGE_LENGTH: u32 = 0xFF_FFFF;
/// Protocol control messages (types 1–6) carry at most a few bytes.
const MAX_CONTROL_MESSAGE: u32 = 64;
/// The longest chunk header: 3-byte basic header, 11-byte message header, 4-byte
/// extended timestamp.
const MAX_HEADER: usize = 18;
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
const INITIAL_CHUNK_SIZE: u32 = 128;

pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMessage {
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk stream {csid}: a compressed header with no earlier full header")]
    NoPreviousHeader { csid: u32 },
    #[error("chunk stream {csid}: a new message header while the last message is incomplete")]
    InterruptedMessage { csid: u32 },
    #[error(
        "chunk stream {csid}: a message of {length} bytes (type {type_id}) is over the limit of {limit}"
    )]
    MessageTooLarge {
        csid: u32,
        type_id: u8,
        length: u32,
        limit: u32,
    },
    #[error("more than {limit} chunk streams")]
    TooManyChunkStreams { limit: usize },
    #[error("incomplete messages would hold {wanted} bytes, over the limit of {limit}")]
    BufferLimit { wanted: usize, limit: usize },
    #[error("Set Chunk Size to {0}, outside 1..=2147483647")]
    InvalidChunkSize(u32),
    #[error("a protocol control message of type {type_id} is too short")]
    ShortControlMessage { type_id: u8 },
}

/// The state of one chunk stream: the last header seen and the message being read.
#[derive(Debug, Default)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    /// The timestamp field of the last header: a delta that a type-3 header starting a new
    /// message adds again (as ffmpeg and librtmp read it).
    timestamp_delta: u32,
    /// The last header had an extended timestamp, so type-3 headers carry one too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// A message has started and is not complete.
    active: bool,
    payload: BytesMut,
}

/// Turns the bytes of an RTMP chunk stream into whole messages.
#[derive(Debug)]
pub struct ChunkReader {
    limits: ChunkLimits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Reading a chunk's payload: index into `streams` and bytes left in the chunk.
    in_chunk: Option<(usize, u32)>,
    /// Declared lengths of the incomplete messages.
    buffered: usize,
}

impl ChunkReader {
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: Vec::new(),
            header: [0; MAX_HEADER],
            header_len: 0,
            in_chunk: None,
            buffered: 0,
        }
    }

    /// New limits for the messages that start from now on (a publish was accepted).
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// Bytes held in incomplete messages (their declared lengths).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Reads `input`, appending every message it completes to `out`. After an error the
    /// reader's state is undefined: the connection must end.
    pub fn push(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<ChunkMessage>,
    ) -> Result<(), ChunkError> {
        while !input.is_empty() {
            if let Some((index, left)) = self.in_chunk {
                let take = (left as usize).min(input.len());
                let stream = &mut self.streams[index];
                stream.payload.extend_from_slice(&input[..take]);
                input = &input[take..];
                let left = left - take as u32;
                self.in_chunk = (left > 0).then_some((index, left));
                if left == 0 && stream.payload.len() == stream.length as usize {
                    self.complete(index, out)?;
                }
                continue;
            }
            // Gather the header: how long it is depends on its first bytes.
            loop {
                let need = self.header_needed();
                if self.header_len == need {
                    break;
                }
                let take = (need - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[..take]);
                self.header_len += take;
                input = &input[take..];
                if self.header_len < need {
                    return Ok(());
                }
            }
            self.apply_header(out)?;
        }
        Ok(())
    }

    fn stream_index(&self, csid: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.csid == csid)
    }

    /// The basic header's length and chunk stream id (§5.3.1.1), once enough bytes are in.
    fn basic_header(&self) -> Option<(usize, u32)> {
        let h = &self.header[..self.header_len];
        let first = *h.first()?;
        match first & 0x3F {
            0 => h.get(1).map(|&b| (2, 64 + b as u32)),
            1 => (h.len() >= 3).then(|| (3, 64 + h[1] as u32 + 256 * h[2] as u32)),
            csid => Some((1, csid as u32)),
        }
    }

    /// How many header bytes the chunk at hand has, as far as the bytes so far tell.
    fn header_needed(&self) -> usize {
        if self.header_len == 0 {
            return 1;
        }
        let Some((basic, csid)) = self.basic_header() else {
            return if self.header[0] & 0x3F == 1 { 3 } else { 2 };
        };
        let format = self.header[0] >> 6;
        let base = basic + [11, 7, 3, 0][format as usize];
        if self.header_len < base {
            return base;
        }
        let extended = if format == 3 {
            self.stream_index(csid)
                .is_some_and(|i| self.streams[i].extended)
        } else {
            u24(&self.header[basic..]) == EXTENDED_TIMESTAMP
        };
        base + if extended { 4 } else { 0 }
    }

    fn apply_header(&mut self, out: &mut Vec<ChunkMessage>) -> Result<(), ChunkError> {
        let (basic, csid) = self.basic_header().expect("header complete");
        let format = self.header[0] >> 6;
        let header = self.header;
        let fields = &header[basic..self.header_len];
        self.header_len = 0;

        let index = match self.stream_index(csid) {
            Some(i) => i,
            None if format != 0 => return Err(ChunkError::NoPreviousHeader { csid }),
            None if self.streams.len() >= self.limits.max_chunk_streams => {
                return Err(ChunkError::TooManyChunkStreams {
                    limit: self.limits.max_chunk_streams,
                });
            }
            None => {
                self.streams.push(ChunkStream {
                    csid,
                    ..Default::default()
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        if format != 3 && stream.active {
            return Err(ChunkError::InterruptedMessage { csid });
        }
        let starts_message = !stream.active;
        let field = |at: usize| u24(&fields[at..]);
        match format {
            0..=2 => {
                let raw = field(0);
                stream.extended = raw == EXTENDED_TIMESTAMP;
                let extended_at = [11, 7, 3][format as usize];
                let value = if stream.extended {
                    u32::from_be_bytes(fields[extended_at..extended_at + 4].try_into().unwrap())
                } else {
                    raw
                };
                stream.timestamp_delta = value;
                stream.timestamp = if format == 0 {
                    value
                } else {
                    stream.timestamp.wrapping_add(value)
                };
                if format <= 1 {
                    stream.length = field(3);
                    stream.type_id = fields[6];
                }
                if format == 0 {
                    stream.stream_id = u32::from_le_bytes(fields[7..11].try_into().unwrap());
                }
            }
            _ if starts_message => {
                // A type-3 header that starts a message repeats the last delta; with an
                // extended timestamp, the one it carries.
                if stream.extended {
                    stream.timestamp_delta = u32::from_be_bytes(fields[..4].try_into().unwrap());
                }
                stream.timestamp = stream.timestamp.wrapping_add(stream.timestamp_delta);
            }
            _ => {}
        }
        if starts_message {
            let (length, type_id) = (stream.length, stream.type_id);
            let limit = match type_id {
                1..=6 => MAX_CONTROL_MESSAGE,
                8 | 9 | 22 => self.limits.max_media_message,
                _ => self.limits.max_amf_message,
            };
            if length > limit {
                return Err(ChunkError::MessageTooLarge {
                    csid,
                    type_id,
                    length,
                    limit,
                });
            }
            let wanted = self.buffered + length as usize;
            if wanted > self.limits.max_buffered {
                return Err(ChunkError::BufferLimit {
                    wanted,
                    limit: self.limits.max_buffered,
                });
            }
            self.buffered = wanted;
            let stream = &mut self.streams[index];
            stream.active = true;
            // Safe to reserve: the length is within the limits checked just above.
            stream.payload.reserve(length as usize);
            if length == 0 {
                return self.complete(index, out);
            }
        }
        let stream = &self.streams[index];
        let left = stream.length - stream.payload.len() as u32;
        self.in_chunk = Some((index, left.min(self.chunk_size)));
        Ok(())
    }

    fn complete(&mut self, index: usize, out: &mut Vec<ChunkMessage>) -> Result<(), ChunkError> {
        let stream = &mut self.streams[index];
        stream.active = false;
        self.buffered -= stream.length as usize;
        let message = ChunkMessage {
            timestamp: stream.timestamp,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            payload: stream.payload.split().freeze(),
        };
        match message.type_id {
            SET_CHUNK_SIZE => {
                // The top bit is reserved and must be 0 (§5.4.1).
                let size = control_u32(&message)?;
                if size == 0 || size > 0x7FFF_FFFF {
                    return Err(ChunkError::InvalidChunkSize(size));
                }
                self.chunk_size = size;
            }
            ABORT => {
                let csid = control_u32(&message)?;
                if let Some(i) = self.stream_index(csid) {
                    let aborted = &mut self.streams[i];
                    if aborted.active {
                        aborted.active = false;
                        aborted.payload = BytesMut::new();
                        self.buffered -= aborted.length as usize;
                        if self.in_chunk.is_some_and(|(at, _)| at == i) {
                            self.in_chunk = None;
                        }
                    }
                }
            }
            _ => out.push(message),
        }
        Ok(())
    }
}

fn u24(b: &[u8]) -> u32 {
    (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32
}

fn control_u32(message: &ChunkMessage) -> Result<u32, ChunkError> {
    message
        .payload
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        .ok_or(ChunkError::ShortControlMessage {
            type_id: message.type_id,
        })
}

/// Writes `message` as one chunk with a full (type 0) header, for a reader whose chunk size
/// is at least the message's length. The chunk stream id is fixed: with full headers only,
/// no header depends on an earlier one.
pub fn write_single_chunk(message: &ChunkMessage, out: &mut Vec<u8>) {
    let length = message.payload.len() as u32;
    debug_assert!(length <= MAX_MESSAGE_LENGTH);
    out.push(3);
    let extended = message.timestamp >= EXTENDED_TIMESTAMP;
    let field = if extended {
        EXTENDED_TIMESTAMP
    } else {
        message.timestamp
    };
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(message.type_id);
    out.extend_from_slice(&message.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&message.timestamp.to_be_bytes());
    }
    out.extend_from_slice(&message.payload);
}

pub const ACKNOWLEDGEMENT: u8 = 3;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;

/// An Acknowledgement (§5.4.3) of `sequence` bytes received, as sent to the peer: one
/// chunk on chunk stream 2, where protocol control messages go.
pub fn acknowledgement(sequence: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    // fmt 0, csid 2; timestamp 0; length 4; type 3; message stream 0.
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, ACKNOWLEDGEMENT, 0, 0, 0, 0]);
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

/// Set Chunk Size to the largest size there is, for a reader fed by
/// [`write_single_chunk`].
pub fn largest_chunk_size_message() -> ChunkMessage {
    ChunkMessage {
        timestamp: 0,
        type_id: SET_CHUNK_SIZE,
        stream_id: 0,
        payload: Bytes::from_static(&[0x7F, 0xFF, 0xFF, 0xFF]),
    }
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
