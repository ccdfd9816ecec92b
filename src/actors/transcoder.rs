//! The Transcoder: one FFmpeg child, fed MPEG-TS on stdin, read as MPEG-TS on stdout.
//! Its output is demuxed into typed frames per rung ([`RungDemuxer`]) and handed to the
//! session in batches; the session waits for each batch to be taken, so a slow session
//! slows FFmpeg's output rather than growing a queue. When FFmpeg exits (after its last
//! output was handed on) it tells the session, which owns the restart policy.

use std::path::PathBuf;
use std::process::Stdio;

use actix::prelude::*;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::backpressure::DropToKeyframe;
use super::session::{Encoded, StreamSession, TranscoderExited};
use crate::media::frame::Frame;
use crate::media::ts::TsMuxer;
use crate::transcode::demux::RungDemuxer;

/// Bytes read from FFmpeg's stdout at a time (a pipe holds 64 KiB).
const READ_CHUNK: usize = 64 * 1024;

/// TS chunks (one per frame) queued for FFmpeg's stdin; about 10 s of 30 fps video.
const STDIN_QUEUE: usize = 512;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Feed(pub Frame);

/// Close FFmpeg's input: it writes its last segment and exits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finish;

/// Kill FFmpeg now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kill;

pub struct Transcoder {
    generation: u64,
    program: PathBuf,
    args: Vec<String>,
    muxer: TsMuxer,
    session: Addr<StreamSession>,
    stdin: Option<mpsc::Sender<Bytes>>,
    kill: Option<oneshot::Sender<()>>,
    policy: DropToKeyframe,
    /// The GOP cache, written to FFmpeg first.
    replay: Vec<Frame>,
    /// The stream's dropped-frames counter.
    dropped: Option<prometheus::IntCounter>,
    /// Turns FFmpeg's output into frames per rung.
    output: Option<RungDemuxer>,
    span: tracing::Span,
}

/// What one FFmpeg run is.
pub struct EncoderJob {
    pub generation: u64,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Tracks of the TS FFmpeg is fed.
    pub has_video: bool,
    pub has_audio: bool,
    /// Reads FFmpeg's output.
    pub output: RungDemuxer,
}

impl Transcoder {
    pub fn new(job: EncoderJob, session: Addr<StreamSession>, span: tracing::Span) -> Self {
        let EncoderJob {
            generation,
            program,
            args,
            has_video,
            has_audio,
            output,
        } = job;
        Self {
            generation,
            program,
            args,
            muxer: TsMuxer::new(has_video, has_audio),
            session,
            stdin: None,
            kill: None,
            policy: DropToKeyframe::default(),
            replay: Vec::new(),
            dropped: None,
            output: Some(output),
            span,
        }
    }

    /// Frames FFmpeg gets before any `Feed`, all of them (the stdin queue is made long
    /// enough), and the counter frames dropped later are added to.
    pub fn with_replay(mut self, replay: Vec<Frame>, dropped: prometheus::IntCounter) -> Self {
        self.replay = replay;
        self.dropped = Some(dropped);
        self
    }

    fn feed(&mut self, frame: Frame) {
        let Some(stdin) = &self.stdin else { return };
        // Decide before muxing: a frame dropped after muxing would break the TS
        // continuity counters FFmpeg checks.
        let before = self.policy.dropped;
        if self.policy.admit(&frame, stdin.capacity() > 0) {
            // TS adds 4 bytes per 184, plus PES header and tables.
            let len = frame.data().len();
            let mut chunk = Vec::with_capacity(len + len / 8 + 600);
            if let Err(e) = self.muxer.write_frame(&frame, &mut chunk) {
                tracing::warn!(parent: &self.span, error = %e, "frame not muxed");
                return;
            }
            if stdin.try_send(Bytes::from(chunk)).is_err() {
                self.policy.rejected(&frame);
            }
        }
        if let Some(counter) = &self.dropped {
            counter.inc_by(self.policy.dropped - before);
        }
    }
}

impl Actor for Transcoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::session::MAILBOX_CAPACITY);
        let generation = self.generation;
        let session = self.session.clone();
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(parent: &self.span, program = %self.program.display(), error = %e, "cannot start FFmpeg");
                session.do_send(TranscoderExited {
                    generation,
                    status: format!("spawn failed: {e}"),
                });
                ctx.stop();
                return;
            }
        };
        tracing::debug!(parent: &self.span, generation, pid = child.id(), "FFmpeg started");

        let replay = std::mem::take(&mut self.replay);
        let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE + replay.len());
        self.stdin = Some(tx);
        if let Some(mut stdin) = child.stdin.take() {
            actix::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if stdin.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                // Dropping stdin closes the pipe: FFmpeg flushes and exits.
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let span = self.span.clone();
            actix::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(target: "ffmpeg", parent: &span, generation, "{line}");
                }
            });
        }
        for frame in replay {
            self.feed(frame);
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        self.kill = Some(kill_tx);
        let stdout = child.stdout.take();
        let mut demuxer = self.output.take();
        let span = self.span.clone();
        actix::spawn(async move {
            // Read FFmpeg's output to its end (or until killed), then reap it: the exit
            // is reported only after the last frame went to the session.
            let read_all = async {
                let (Some(mut stdout), Some(demuxer)) = (stdout, demuxer.as_mut()) else {
                    return;
                };
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = match stdout.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    match demuxer.push(&buf[..n]) {
                        Ok(frames) if frames.is_empty() => {}
                        Ok(frames) => {
                            if session.send(Encoded { generation, frames }).await.is_err() {
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
                    let _ = session.send(Encoded { generation, frames }).await;
                }
            };
            let status = tokio::select! {
                _ = read_all => {
                    // Output ended (or was refused): FFmpeg exits, or is made to.
                    match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    }
                }
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            session.do_send(TranscoderExited { generation, status });
        });
    }
}

impl Handler<Feed> for Transcoder {
    type Result = ();

    fn handle(&mut self, Feed(frame): Feed, _: &mut Context<Self>) {
        self.feed(frame);
    }
}

impl Handler<Finish> for Transcoder {
    type Result = ();

    fn handle(&mut self, _: Finish, _: &mut Context<Self>) {
        // The writer task drains what is queued, then closes the pipe.
        self.stdin = None;
    }
}

impl Handler<Kill> for Transcoder {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        ctx.stop();
    }
}
