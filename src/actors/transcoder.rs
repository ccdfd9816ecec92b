//! The Transcoder: one FFmpeg child, fed MPEG-TS on stdin. When FFmpeg exits it tells
//! the session, which owns the restart policy and starts a new Transcoder.

use std::path::PathBuf;
use std::process::Stdio;

use actix::prelude::*;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::backpressure::DropToKeyframe;
use super::session::{StreamSession, TranscoderExited};
use crate::media::frame::Frame;
use crate::media::ts::TsMuxer;

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
    span: tracing::Span,
}

impl Transcoder {
    pub fn new(
        generation: u64,
        program: PathBuf,
        args: Vec<String>,
        has_video: bool,
        has_audio: bool,
        session: Addr<StreamSession>,
        span: tracing::Span,
    ) -> Self {
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
            .stdout(Stdio::null())
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
        actix::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
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
