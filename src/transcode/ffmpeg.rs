//! Running one FFmpeg encode: frames in (muxed to MPEG-TS on its stdin, or fragmented
//! MP4 for AV1), the rungs' frames out (its stdout demuxed), and its exit status at the end. Used by the
//! session's local Transcoder and by `kawa transcoder` workers alike; both hand the
//! output on with backpressure (the next read waits until the last batch was taken).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::media::fmp4_feed::Fmp4Feed;
use crate::media::frame::{Frame, VideoCodec};
use crate::media::opus::OpusPacket;
use crate::media::ts::TsMuxer;
use crate::stream::backpressure::DropToKeyframe;
use crate::transcode::demux::RungDemuxer;
use crate::transcode::mpjpeg::MultipartJpegs;
use crate::transcode::{THUMBNAIL_FD, TranscodePlan};
use command_fds::{CommandFdExt, FdMapping};

/// Bytes read from FFmpeg's stdout at a time (a pipe holds 64 KiB).
const READ_CHUNK: usize = 64 * 1024;
/// TS chunks (one per frame) queued for FFmpeg's stdin; about 10 s of 30 fps video.
pub const STDIN_QUEUE: usize = 512;
/// How long FFmpeg may take to exit once its output ended.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// The container FFmpeg reads on its stdin.
enum InputMuxer {
    Ts(TsMuxer),
    Mp4(Box<Fmp4Feed>),
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Ts(#[from] crate::media::ts::TsError),
    #[error(transparent)]
    Mp4(#[from] crate::media::fmp4::Fmp4Error),
}

/// Muxes frames into FFmpeg's stdin queue, dropping video up to the next keyframe when
/// the queue is full (decided before muxing: a frame dropped after muxing would break
/// the TS continuity counters FFmpeg checks).
pub struct Feeder {
    muxer: InputMuxer,
    policy: DropToKeyframe,
    stdin: Option<mpsc::Sender<Bytes>>,
}

impl Feeder {
    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.policy.dropped
    }

    /// Queues `frame` for FFmpeg; `Err` only when it cannot be muxed.
    pub fn feed(&mut self, frame: &Frame) -> Result<(), FeedError> {
        let Some(stdin) = &self.stdin else {
            return Ok(());
        };
        if self.policy.admit(frame, stdin.capacity() > 0) {
            // TS adds 4 bytes per 184, plus PES header and tables.
            let len = frame.data().len();
            let mut chunk = Vec::with_capacity(len + len / 8 + 600);
            match &mut self.muxer {
                InputMuxer::Ts(ts) => ts.write_frame(frame, &mut chunk)?,
                InputMuxer::Mp4(mp4) => mp4.write_frame(frame, &mut chunk)?,
            }
            if chunk.is_empty() {
                return Ok(());
            }
            if stdin.try_send(Bytes::from(chunk)).is_err() {
                self.policy.rejected(frame);
            }
        }
        Ok(())
    }

    /// Closes FFmpeg's input once what is queued was written: it flushes and exits.
    pub fn finish(&mut self) {
        self.stdin = None;
    }
}

/// A running encode: its input, and a switch that kills it.
pub struct Encode {
    pub feeder: Feeder,
    pub kill: oneshot::Sender<()>,
}

/// What one FFmpeg run needs.
pub struct EncodeSpec<'a> {
    pub program: &'a Path,
    /// Added to FFmpeg's nice value (`hls.ffmpeg_nice`).
    pub nice: i32,
    pub args: &'a [String],
    pub has_video: bool,
    pub has_audio: bool,
    pub video_codec: VideoCodec,
    /// Room for the frames written first (the GOP cache) on top of [`STDIN_QUEUE`].
    pub replay: usize,
    pub generation: u64,
    /// Gets each thumbnail, when `args` make FFmpeg write them
    /// ([`TranscodePlan::writes_thumbnails`]).
    pub on_thumbnail: Option<Box<dyn Fn(Bytes) + Send>>,
    /// Gets the Opus packets (WebRTC's audio) as they are read, when `args` ask for them.
    pub on_opus: Option<Box<dyn Fn(Vec<OpusPacket>) + Send + Sync>>,
}

/// Starts FFmpeg. `on_frames` gets each batch of the rungs' frames and answers whether
/// more are wanted; the returned future (spawn it) reads FFmpeg's output to its end,
/// reaps it, and resolves to its exit status, only after the last batch was handed on.
pub fn start<F, Fut>(
    spec: EncodeSpec<'_>,
    mut demuxer: RungDemuxer,
    span: tracing::Span,
    mut on_frames: F,
) -> std::io::Result<(Encode, impl Future<Output = String> + Send + 'static)>
where
    F: FnMut(Vec<(usize, Frame)>) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let generation = spec.generation;
    let mut command = Command::new(spec.program);
    command
        .args(spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if spec.nice != 0 {
        let nice = spec.nice;
        // SAFETY: nice(2) is a system call, async-signal-safe, and allocates nothing.
        // Failing to lower the priority is harmless: FFmpeg runs at Kawa's.
        unsafe {
            command.pre_exec(move || {
                libc::nice(nice);
                Ok(())
            });
        }
    }
    let thumbnails = if TranscodePlan::writes_thumbnails(spec.args) {
        let (reader, writer) = std::io::pipe()?;
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: writer.into(),
                child_fd: THUMBNAIL_FD,
            }])
            .map_err(std::io::Error::other)?;
        Some(reader)
    } else {
        None
    };
    let mut child = command.spawn()?;
    // The command holds the pipe's writing end: only FFmpeg's copy may keep it open, so
    // the reader sees the end when FFmpeg exits.
    drop(command);
    if let Some(reader) = thumbnails {
        read_thumbnails(reader, spec.on_thumbnail, span.clone(), generation)?;
    }
    tracing::debug!(parent: &span, generation, pid = child.id(), "FFmpeg started");
    let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE + spec.replay);
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes the pipe: FFmpeg flushes and exits.
        });
    }
    if let Some(stderr) = child.stderr.take() {
        let span = span.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(target: "ffmpeg", parent: &span, generation, "{line}");
            }
        });
    }
    let on_opus = spec.on_opus;
    let (kill, killed) = oneshot::channel();
    let stdout = child.stdout.take();
    let run = async move {
        let read_all = async {
            let Some(mut stdout) = stdout else { return };
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let pushed = demuxer.push(&buf[..n]);
                if let Some(on_opus) = &on_opus {
                    let packets = demuxer.take_opus();
                    if !packets.is_empty() {
                        on_opus(packets);
                    }
                }
                match pushed {
                    Ok(frames) if frames.is_empty() => {}
                    Ok(frames) => {
                        if !on_frames(frames).await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(parent: &span, generation, error = %e, "FFmpeg output cannot be read; stopping it");
                        return;
                    }
                }
            }
            let frames = demuxer.flush();
            if !frames.is_empty() {
                on_frames(frames).await;
            }
        };
        let status = tokio::select! {
            _ = read_all => {
                // Output ended (or was refused): FFmpeg exits, or is made to.
                match tokio::time::timeout(EXIT_WAIT, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                }
            }
            _ = killed => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        }
    };
    let feeder = Feeder {
        muxer: match spec.video_codec {
            VideoCodec::Av1 => {
                InputMuxer::Mp4(Box::new(Fmp4Feed::av1(spec.has_video, spec.has_audio)))
            }
            codec => {
                InputMuxer::Ts(TsMuxer::new(spec.has_video, spec.has_audio).with_video_codec(codec))
            }
        },
        policy: DropToKeyframe::default(),
        stdin: Some(tx),
    };
    Ok((Encode { feeder, kill }, run))
}

/// Reads FFmpeg's thumbnails from `reader` until FFmpeg closes it, handing each JPEG to
/// `on_thumbnail` (or dropping it, when there is no one to give it to).
fn read_thumbnails(
    reader: std::io::PipeReader,
    on_thumbnail: Option<Box<dyn Fn(Bytes) + Send>>,
    span: tracing::Span,
    generation: u64,
) -> std::io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())?;
    tokio::spawn(async move {
        let mut pictures = MultipartJpegs::default();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match pictures.push(&buf[..n]) {
                Ok(jpegs) => {
                    for jpeg in jpegs {
                        if let Some(give) = &on_thumbnail {
                            give(jpeg);
                        }
                    }
                }
                Err(e) => {
                    // The rungs go on; only the pictures stop.
                    tracing::warn!(parent: &span, generation, error = %e, "FFmpeg's thumbnails cannot be read");
                    return;
                }
            }
        }
    });
    Ok(())
}
