//! The messages a StreamSession takes, and what it answers about a live stream.

use actix::Message;
use serde::Serialize;

use crate::media::frame::{CodecConfig, Frame};

/// Media from the publishing connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    pub conn_id: u64,
    pub input: IngestInput,
}

pub enum IngestInput {
    Config(CodecConfig),
    Frame(Frame),
    /// onMetaData said whether video will come (audio-only streams start FFmpeg on audio).
    Metadata {
        has_video: bool,
    },
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct PublisherChanged {
    pub conn_id: u64,
}

/// The stream ends: write the last segments and ENDLIST.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unpublished {
    pub reason: &'static str,
}

/// The publisher's connection dropped; the registry waits for it to come back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublisherLost;

/// A newer session owns this path's playlists now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Superseded;

/// Frames FFmpeg made: `(rung, frame)`, rung indexing the plan's scaled rungs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Encoded {
    pub generation: u64,
    pub frames: Vec<(usize, Frame)>,
}

/// A thumbnail the ladder's FFmpeg made.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EncodedThumbnail {
    pub generation: u64,
    pub jpeg: bytes::Bytes,
}

/// The FFmpeg of `generation` exited.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TranscoderExited {
    pub generation: u64,
    pub status: String,
    /// The transcoder worker it ran on was lost (not the encode's own failure): the
    /// next one starts at once, on another worker, without counting as a failure.
    pub worker_lost: bool,
}

#[derive(Message)]
#[rtype(result = "LiveStatus")]
pub struct GetStatus;

/// What the API shows of a live stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveStatus {
    /// RFC 3339.
    pub since: String,
    /// Ingest bitrate over the last few seconds.
    pub ingest_kbps: u64,
    pub renditions: Vec<String>,
    pub video: Option<String>,
    pub audio: Option<String>,
    pub frames_dropped: u64,
    pub transcoder_restarts: u64,
    pub transcoder_running: bool,
}

/// Another node took this path over (the lease's fencing token moved on).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseLost;
