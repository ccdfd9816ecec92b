//! The Transcoder: one encode of a stream's rungs, fed the session's frames, its rungs'
//! frames handed to the session in batches; the session waits for each batch to be
//! taken, so a slow session slows the encoder rather than growing a queue. When the
//! encode ends (after its last output was handed on) it tells the session, which owns
//! the restart policy.
//!
//! FFmpeg runs on this node ([`crate::transcode::ffmpeg`]) or, in a cluster with
//! `cluster.remote_transcoding`, on the least loaded transcoder worker ([`remote`]);
//! with no worker alive it runs here.

mod remote;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::session::{Encoded, EncodedThumbnail, StreamSession, TranscoderExited};
use super::supervision::{ActorKind, fault_point, guard};
use crate::cluster::Cluster;
use crate::cluster::workers::WorkerInfo;
use crate::grpc::proto::{TranscodeInput, transcode_input::Input};
use crate::media::frame::Frame;
use crate::metrics::METRICS;
use crate::stream::backpressure::DropToKeyframe;
use crate::transcode::TranscodePlan;
use crate::transcode::demux::RungDemuxer;
use crate::transcode::ffmpeg::{self, EncodeSpec, Feeder, STDIN_QUEUE};
use crate::transcode::wire;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Feed(pub Frame);

/// Close FFmpeg's input: it writes its last segment and exits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finish;

/// How often an encode that fell back to this node looks for a worker again.
const WORKER_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Kill FFmpeg now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kill;

/// What one encode is.
pub struct EncoderJob {
    pub generation: u64,
    pub program: PathBuf,
    /// `hls.ffmpeg_nice`.
    pub nice: i32,
    pub args: Vec<String>,
    pub plan: TranscodePlan,
    /// The source's clock at the first frame, to unwrap FFmpeg's output.
    pub reference: i64,
    /// Transcoder workers to prefer over a local FFmpeg.
    pub workers: Option<Arc<Cluster>>,
    /// Where the Opus packets go (WebRTC's audio, when `args` ask FFmpeg for them):
    /// straight to the WebRTC server, not through the session.
    pub opus_out: Option<(crate::webrtc::WebRtc, String)>,
}

/// Where the frames go.
enum Sink {
    Local(Feeder),
    Remote {
        frames: mpsc::Sender<TranscodeInput>,
        policy: DropToKeyframe,
    },
}

impl Sink {
    fn dropped(&self) -> u64 {
        match self {
            Self::Local(feeder) => feeder.dropped(),
            Self::Remote { policy, .. } => policy.dropped,
        }
    }

    fn feed(&mut self, frame: &Frame, span: &tracing::Span) {
        match self {
            Self::Local(feeder) => {
                if let Err(e) = feeder.feed(frame) {
                    tracing::warn!(parent: span, error = %e, "frame not muxed");
                }
            }
            Self::Remote { frames, policy } => {
                if policy.admit(frame, frames.capacity() > 0) {
                    let message = TranscodeInput {
                        input: Some(Input::Frame(wire::to_wire(frame, 0))),
                    };
                    if frames.try_send(message).is_err() {
                        policy.rejected(frame);
                    }
                }
            }
        }
    }
}

pub struct Transcoder {
    job: Option<EncoderJob>,
    generation: u64,
    session: Addr<StreamSession>,
    input: Option<Sink>,
    kill: Option<oneshot::Sender<()>>,
    /// The GOP cache, written to FFmpeg first.
    replay: Vec<Frame>,
    /// The stream's dropped-frames counter.
    dropped: Option<prometheus::IntCounter>,
    span: tracing::Span,
}

impl Transcoder {
    pub fn new(job: EncoderJob, session: Addr<StreamSession>, span: tracing::Span) -> Self {
        Self {
            generation: job.generation,
            job: Some(job),
            session,
            input: None,
            kill: None,
            replay: Vec::new(),
            dropped: None,
            span,
        }
    }

    /// Frames the encoder gets before any `Feed`, all of them (its queue is made long
    /// enough), and the counter frames dropped later are added to.
    pub fn with_replay(mut self, replay: Vec<Frame>, dropped: prometheus::IntCounter) -> Self {
        self.replay = replay;
        self.dropped = Some(dropped);
        self
    }

    fn feed(&mut self, frame: &Frame) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let before = input.dropped();
        input.feed(frame, &self.span);
        if let Some(counter) = &self.dropped {
            counter.inc_by(input.dropped() - before);
        }
    }

    fn exited(&self, status: String) {
        self.session.do_send(TranscoderExited {
            generation: self.generation,
            status,
            worker_lost: false,
        });
    }

    /// FFmpeg on this node.
    fn start_local(&mut self, job: EncoderJob, ctx: &mut Context<Self>) {
        let generation = job.generation;
        let spec = EncodeSpec {
            program: &job.program,
            nice: job.nice,
            args: &job.args,
            has_video: job.plan.has_video,
            has_audio: job.plan.has_audio,
            video_codec: job.plan.video_codec,
            replay: self.replay.len(),
            generation,
            on_thumbnail: Some(Box::new({
                let session = self.session.clone();
                move |jpeg| session.do_send(EncodedThumbnail { generation, jpeg })
            })),
            on_opus: job.opus_out.clone().map(|(webrtc, path)| {
                Box::new(move |packets| webrtc.audio(&path, packets))
                    as Box<dyn Fn(_) + Send + Sync>
            }),
        };
        let output = RungDemuxer::new(job.plan.scaled().count(), job.reference);
        let session = self.session.clone();
        let on_frames = move |frames| {
            let session = session.clone();
            async move { session.send(Encoded { generation, frames }).await.is_ok() }
        };
        match ffmpeg::start(spec, output, self.span.clone(), on_frames) {
            Ok((encode, run)) => {
                self.input = Some(Sink::Local(encode.feeder));
                self.kill = Some(encode.kill);
                let session = self.session.clone();
                let me = ctx.address();
                actix::spawn(async move {
                    let status = run.await;
                    session.do_send(TranscoderExited {
                        generation,
                        status,
                        worker_lost: false,
                    });
                    // The encode is over: so is this actor (and its look for workers).
                    me.do_send(Kill);
                });
            }
            Err(e) => {
                tracing::error!(parent: &self.span, program = %job.program.display(), error = %e, "cannot start FFmpeg");
                self.exited(format!("spawn failed: {e}"));
                ctx.stop();
            }
        }
    }

    /// FFmpeg on a transcoder worker.
    fn start_remote(
        &mut self,
        job: EncoderJob,
        cluster: Arc<Cluster>,
        worker: WorkerInfo,
        ctx: &mut Context<Self>,
    ) {
        tracing::info!(parent: &self.span, generation = job.generation, worker = %worker.id, "encoding on a transcoder worker");
        let (frames, outbound) = mpsc::channel(STDIN_QUEUE + self.replay.len() + 1);
        let first = TranscodeInput {
            input: Some(Input::Job(wire::job(
                &job.plan,
                job.reference,
                job.opus_out.is_some(),
            ))),
        };
        // The queue is empty and long enough: the job always fits.
        let _ = frames.try_send(first);
        self.input = Some(Sink::Remote {
            frames,
            policy: DropToKeyframe::default(),
        });
        let (kill, killed) = oneshot::channel();
        self.kill = Some(kill);
        let rungs = job.plan.scaled().count();
        let (session, generation) = (self.session.clone(), job.generation);
        let me = ctx.address();
        let encode = remote::Encode {
            rungs,
            generation,
            session: session.clone(),
            opus_out: job.opus_out,
        };
        actix::spawn(async move {
            let (status, worker_lost) =
                remote::run(cluster, worker, outbound, encode, killed).await;
            session.do_send(TranscoderExited {
                generation,
                status,
                worker_lost,
            });
            me.do_send(Kill);
        });
    }

    fn begin(
        &mut self,
        job: EncoderJob,
        worker: Option<(Arc<Cluster>, WorkerInfo)>,
        ctx: &mut Context<Self>,
    ) {
        match worker {
            Some((cluster, worker)) => self.start_remote(job, cluster, worker, ctx),
            None => self.start_local(job, ctx),
        }
        for frame in std::mem::take(&mut self.replay) {
            self.feed(&frame);
        }
    }
}

impl Transcoder {
    /// An encode that fell back to this node moves to a worker once one is alive again
    /// (it ends; the session starts the next one, which picks the worker), so a worker
    /// outage does not leave every node encoding for good.
    fn watch_for_workers(&mut self, cluster: Arc<Cluster>, ctx: &mut Context<Self>) {
        ctx.run_interval(WORKER_RECHECK, move |this, ctx| {
            let cluster = Arc::clone(&cluster);
            let look = async move { remote::pick(&cluster).await };
            ctx.spawn(look.into_actor(this).map(|worker, this, _| {
                if let (Some(worker), Some(kill)) = (worker, this.kill.take()) {
                    tracing::info!(parent: &this.span, worker = %worker.id, "a transcoder worker is alive again; moving the encode to it");
                    let _ = kill.send(());
                }
            }));
        });
    }
}

impl Actor for Transcoder {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        METRICS.transcoders_alive.dec();
        crate::metrics::actor_alive(ActorKind::Transcoder, -1);
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        METRICS.transcoders_alive.inc();
        crate::metrics::actor_alive(ActorKind::Transcoder, 1);
        ctx.set_mailbox_capacity(super::session::MAILBOX_CAPACITY);
        let Some(job) = self.job.take() else { return };
        match job.workers.clone() {
            // Choosing a worker holds the mailbox: frames fed meanwhile wait in order.
            Some(cluster) => {
                let pick = async move {
                    let worker = remote::pick(&cluster).await;
                    (cluster, worker)
                };
                ctx.wait(pick.into_actor(self).map(move |(cluster, worker), this, ctx| {
                    if worker.is_none() {
                        tracing::warn!(parent: &this.span, "no transcoder worker is alive; FFmpeg runs on this node");
                        this.watch_for_workers(Arc::clone(&cluster), ctx);
                    }
                    this.begin(job, worker.map(|w| (cluster, w)), ctx);
                }));
            }
            None => self.begin(job, None, ctx),
        }
    }
}

impl Handler<Feed> for Transcoder {
    type Result = ();

    fn handle(&mut self, Feed(frame): Feed, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this| this.feed(&frame));
    }
}

impl Handler<Finish> for Transcoder {
    type Result = ();

    fn handle(&mut self, _: Finish, ctx: &mut Context<Self>) {
        self.guarded(ctx, Self::finish);
    }
}

impl Transcoder {
    /// Runs a handler. A panic stops this actor and kills its FFmpeg: the encode task
    /// then reports the exit, and the session (this actor's supervisor) restarts the
    /// encode under its restart policy.
    fn guarded(&mut self, ctx: &mut Context<Self>, handler: impl FnOnce(&mut Self)) {
        let result = guard(ActorKind::Transcoder, || {
            fault_point(ActorKind::Transcoder, "");
            handler(self)
        });
        if let Err(detail) = result {
            tracing::error!(parent: &self.span, panic = %detail, "transcoder panicked; its encode ends and the session restarts it");
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(());
            }
            ctx.stop();
        }
    }

    fn finish(&mut self) {
        match self.input.as_mut() {
            // The writer task drains what is queued, then closes the pipe.
            Some(Sink::Local(feeder)) => feeder.finish(),
            Some(Sink::Remote { frames, .. }) => {
                // After what is queued; then the stream closes.
                let frames = frames.clone();
                self.input = None;
                actix::spawn(async move {
                    let finish = TranscodeInput {
                        input: Some(Input::Finish(true)),
                    };
                    let _ = frames.send(finish).await;
                });
            }
            None => {}
        }
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
