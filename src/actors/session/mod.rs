//! The StreamSession: one per live publish path. A thin actor around the pure
//! [`StreamCore`]: it hands the core each event and performs what the core decides
//! (writes to the local sink and the S3 uploader, FFmpeg starts and stops, timers).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod cluster;
mod messages;
mod recording;
mod recording_journal;
mod supervised;
mod thumbnail;
mod webrtc;

use actix::prelude::*;
use time::OffsetDateTime;

use super::registry::{SessionEnded, StreamRegistry};
use super::restart::RestartPolicy;
use super::supervision::{ActorKind, restarted};
use super::transcoder::{EncoderJob, Feed, Finish, Kill, Transcoder};
use super::uploader::{Deliver, Deliveries, StreamEnded, Uploader};
use crate::config::Settings;
use crate::delivery::local::{LocalSink, LocalWriter};
use crate::delivery::memory::{LiveStore, LiveStream};
use crate::hls::packager::Output;
use crate::keys::PublishPath;
use crate::media::frame::Frame;
use crate::media::sample::annexb_frame;
use crate::metrics::StreamMetrics;
use crate::stream::backpressure::DropToKeyframe;
use crate::stream::bitrate::BitrateWindow;
use crate::stream::checkpoint::Checkpoint;
use crate::stream::core::{Action, Phase, StreamCore};

/// What every session shares.
pub struct SessionContext {
    pub settings: Arc<Settings>,
    pub arbiters: super::Arbiters,
    /// `DATA_DIR/hls`.
    pub hls_root: PathBuf,
    /// S3 uploaders (none when S3 is off).
    pub deliveries: Arc<Deliveries>,
    /// The live edges that HTTP serves LL-HLS from.
    pub live: Arc<LiveStore>,
    /// Stream ownership shared with other nodes (`cluster.enabled`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Told when a stream ends (`[hooks]`).
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    /// Where a stream's `record` flag is read.
    pub keys: Option<crate::keys::KeyManager>,
    /// The recordings index.
    pub recordings: Option<Arc<crate::recordings::Recordings>>,
    /// The WebRTC server (`webrtc.udp_addr`).
    pub webrtc: Option<crate::webrtc::WebRtc>,
}

pub use messages::*;

/// How long FFmpeg may take to flush after its input closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a session's mailbox holds before the connection starts dropping.
pub const MAILBOX_CAPACITY: usize = 1024;

struct Encoder {
    generation: u64,
    addr: Addr<Transcoder>,
}

pub struct StreamSession {
    id: u64,
    path: PublishPath,
    context: Arc<SessionContext>,
    registry: Addr<StreamRegistry>,
    publisher: Option<u64>,
    core: StreamCore,
    encoder: Option<Encoder>,
    restarts: RestartPolicy,
    total_restarts: u64,
    /// The last encode ended because its transcoder worker was lost.
    worker_lost: bool,
    sink: LocalWriter,
    /// This stream's live edge (parts and LL playlists) in memory.
    edge: Arc<LiveStream>,
    to_transcoder: DropToKeyframe,
    since: OffsetDateTime,
    started: Instant,
    bitrate: BitrateWindow,
    superseded: bool,
    /// Another node owns the path (or never let this one have it): nothing is written.
    fenced: bool,
    /// The path's lease, in a cluster.
    ownership: Option<cluster::Ownership>,
    thumbnails: thumbnail::Thumbnails,
    /// Unix milliseconds of the start: the prefix of this stream's file names.
    epoch: u64,
    /// This broadcast's recording, when it is recorded.
    recording: Option<recording::Recording>,
    /// The recording a previous owner of the path left (from the path's state).
    resumed_recording: Option<u64>,
    uploader: Option<Addr<Uploader>>,
    metrics: StreamMetrics,
    last_keyframe: Option<Instant>,
    drops_reported: u64,
    /// What a restart after a panic goes on from.
    checkpoint: Checkpoint,
    /// Frames for WebRTC viewers, when WebRTC is on.
    webrtc: Option<webrtc::WebRtcOut>,
    span: tracing::Span,
}

impl StreamSession {
    pub fn new(
        id: u64,
        path: PublishPath,
        conn_id: u64,
        context: Arc<SessionContext>,
        registry: Addr<StreamRegistry>,
    ) -> Self {
        let hls = &context.settings.hls;
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let span = tracing::info_span!("stream", publish_path = %path, session = id);
        let edge = context.live.open(path.as_str());
        let sink = LocalWriter::spawn(
            LocalSink::new(
                context.hls_root.join(path.as_str()),
                context
                    .settings
                    .data_dir
                    .join("recordings")
                    .join(path.as_str()),
            ),
            Arc::clone(&edge),
            span.clone(),
        );
        let label = path.to_string();
        Self {
            id,
            core: StreamCore::new(hls.clone(), epoch_ms),
            sink,
            edge,
            path,
            registry,
            publisher: Some(conn_id),
            encoder: None,
            restarts: RestartPolicy::new(
                hls.restart_max,
                Duration::from_secs(hls.restart_window_seconds),
            ),
            total_restarts: 0,
            worker_lost: false,
            to_transcoder: DropToKeyframe::default(),
            since: OffsetDateTime::now_utc(),
            started: Instant::now(),
            bitrate: BitrateWindow::default(),
            superseded: false,
            fenced: false,
            ownership: None,
            thumbnails: thumbnail::Thumbnails::default(),
            epoch: epoch_ms,
            recording: None,
            resumed_recording: None,
            uploader: None,
            metrics: StreamMetrics::new(&label),
            last_keyframe: None,
            drops_reported: 0,
            checkpoint: Checkpoint::default(),
            webrtc: context.webrtc.clone().map(webrtc::WebRtcOut::new),
            span,
            context,
        }
    }

    /// Ingest metrics and the bitrate window for one frame.
    fn record_ingest(&mut self, frame: &Frame) {
        let size = frame.data().len();
        self.bitrate.record(self.started.elapsed().as_secs(), size);
        match frame {
            Frame::Video(v) => {
                self.metrics.video_bytes.inc_by(size as u64);
                self.metrics.video_frames.inc();
                if v.keyframe {
                    let now = Instant::now();
                    if let Some(last) = self.last_keyframe.replace(now) {
                        self.metrics
                            .keyframe_interval(now.duration_since(last).as_secs_f64());
                    }
                }
            }
            Frame::Audio(_) => {
                self.metrics.audio_bytes.inc_by(size as u64);
                self.metrics.audio_frames.inc();
            }
        }
    }

    /// Performs the core's decisions, in order.
    fn perform(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for error in std::mem::take(&mut self.core.errors) {
            tracing::warn!(parent: &self.span, error = %error, "frame not packaged");
        }
        for action in actions {
            match action {
                Action::Write(outputs) => self.apply(outputs),
                Action::StartEncoder {
                    generation,
                    plan,
                    replay,
                } => self.start_encoder(generation, plan, replay, ctx),
                Action::Feed(frame) => self.forward(frame),
                Action::FinishEncoder { generation } => {
                    if let Some(e) = self.encoder.as_ref().filter(|e| e.generation == generation) {
                        e.addr.do_send(Finish);
                    }
                    if self.core.phase == Phase::Finishing {
                        ctx.run_later(FINISH_TIMEOUT, move |this, ctx| {
                            if this.core.phase == Phase::Finishing {
                                tracing::warn!(parent: &this.span, "FFmpeg did not finish in time");
                                this.kill_encoder();
                                let actions = this.core.force_end();
                                this.perform(actions, ctx);
                            }
                        });
                    } else {
                        // A retired generation: nothing it still makes is wanted.
                        self.encoder = None;
                        self.metrics.ffmpeg_running.set(0);
                    }
                }
                Action::ScheduleRestart => self.schedule_restart(ctx),
                Action::Ended => self.ended(ctx),
                Action::Note(note) => tracing::info!(parent: &self.span, "{note}"),
                Action::KeyframeCadence(warning) => {
                    tracing::warn!(parent: &self.span, interval_seconds = warning.interval, "{}", warning.message());
                    self.metrics.keyframe_interval_too_long();
                }
            }
        }
    }

    fn start_encoder(
        &mut self,
        generation: u64,
        plan: crate::transcode::TranscodePlan,
        replay: Vec<Frame>,
        ctx: &mut Context<Self>,
    ) {
        self.webrtc_plan(&plan);
        let extras = crate::transcode::Extras {
            thumbnails: true,
            opus: self.webrtc.is_some(),
        };
        let settings = &self.context.settings;
        let args = plan.ffmpeg_args(&settings.hls, extras);
        let reference = match replay.first() {
            Some(Frame::Video(v)) => v.dts,
            Some(Frame::Audio(a)) => a.pts,
            None => 0,
        };
        let rungs: Vec<&str> = plan.scaled().map(|r| r.name.as_str()).collect();
        tracing::info!(parent: &self.span, generation, ?rungs, "starting FFmpeg");
        // The GOP goes in with the Transcoder, not through its mailbox: all of it
        // reaches the new FFmpeg, however long the GOP.
        let job = EncoderJob {
            generation,
            program: settings.hls.ffmpeg_path.clone(),
            nice: settings.hls.ffmpeg_nice,
            args,
            plan,
            reference,
            workers: self
                .context
                .cluster
                .clone()
                .filter(|_| settings.cluster.remote_transcoding),
            opus_out: self.webrtc_audio_out(),
        };
        let replay = replay.into_iter().filter_map(|f| self.annexb(f)).collect();
        let transcoder = Transcoder::new(job, ctx.address(), self.span.clone())
            .with_replay(replay, self.metrics.frames_dropped.clone());
        // The mailbox is sized before the actor runs: frames fed right after the start
        // (a burst from the publisher) would meet actix's default of 16 and be dropped.
        let addr = Transcoder::create(|tctx| {
            tctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            transcoder
        });
        self.to_transcoder = DropToKeyframe::default();
        self.encoder = Some(Encoder { generation, addr });
        self.metrics.ffmpeg_running.set(1);
    }

    /// Sends a frame to the current FFmpeg. Through its one `Addr`: every clone of an
    /// `Addr` is a new sender that actix lets one message past the mailbox's capacity.
    fn forward(&mut self, frame: Frame) {
        if self.encoder.is_none() {
            return;
        }
        let Some(frame) = self.annexb(frame) else {
            return;
        };
        let Some(e) = &self.encoder else { return };
        if self.to_transcoder.admit(&frame, true)
            && let Err(SendError::Full(Feed(f)) | SendError::Closed(Feed(f))) =
                e.addr.try_send(Feed(frame))
        {
            self.to_transcoder.rejected(&f);
        }
        let dropped = self.to_transcoder.dropped;
        if dropped > self.drops_reported {
            self.metrics
                .frames_dropped
                .inc_by(dropped - self.drops_reported);
            self.drops_reported = dropped;
        }
    }

    /// The frame as FFmpeg and RTP read it (`media::sample`): RTMP's video stays in
    /// sample form up to here. `None`, logged, for a frame that cannot be.
    fn annexb(&self, frame: Frame) -> Option<Frame> {
        let Frame::Video(video) = &frame else {
            return Some(frame);
        };
        match annexb_frame(video, self.core.config.video.as_deref()) {
            Ok(video) => Some(Frame::Video(video)),
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "video frame dropped");
                None
            }
        }
    }

    fn kill_encoder(&mut self) {
        if let Some(e) = self.encoder.take() {
            e.addr.do_send(Kill);
        }
        self.metrics.ffmpeg_running.set(0);
    }

    /// Performs the packager's outputs: the local sink first (viewers of Kawa's own HLS
    /// never wait on S3), then the S3 uploader's queue.
    fn apply(&mut self, outputs: Vec<Output>) {
        if self.superseded || self.fenced || outputs.is_empty() {
            // A newer session writes this path's playlists and series now.
            return;
        }
        if let Some(parts) = self.ownership.as_mut().and_then(|o| o.parts.as_mut()) {
            parts.send(&outputs);
        }
        // The live edge first: LL-HLS viewers are waiting for this part.
        let outputs = self.edge.take(outputs);
        if outputs.is_empty() {
            return;
        }
        if outputs.iter().any(|o| matches!(o, Output::Playlist { .. })) {
            self.save_state();
        }
        for output in &outputs {
            if let Output::Segment {
                rendition,
                duration,
                program_date_time,
                ..
            } = output
            {
                self.metrics.segment(rendition, *duration);
                if rendition == crate::transcode::SOURCE
                    && let Some(start) = program_date_time
                {
                    let media_end = *start + time::Duration::seconds_f64(*duration);
                    let latency = (OffsetDateTime::now_utc() - media_end).as_seconds_f64();
                    self.metrics.glass_to_playlist.observe(latency.max(0.0));
                }
            }
        }
        let recording = self.record(&outputs);
        match &self.uploader {
            Some(uploader) => {
                self.sink.apply(outputs.clone(), recording.clone());
                uploader.do_send(Deliver {
                    outputs,
                    fence: self.ownership.as_ref().map(|o| o.lease.token),
                    recording,
                });
            }
            None => self.sink.apply(outputs, recording),
        }
    }

    fn schedule_restart(&mut self, ctx: &mut Context<Self>) {
        // A lost worker is no failure of this stream's encode: no backoff, not counted.
        let worker_lost = std::mem::take(&mut self.worker_lost);
        let (delay, capped) = if worker_lost {
            (super::restart::FIRST_DELAY, false)
        } else {
            self.restarts.delay(Instant::now())
        };
        if capped {
            tracing::error!(parent: &self.span, ?delay, "FFmpeg keeps failing; waiting before the next restart");
        }
        ctx.run_later(delay, move |this, ctx| {
            this.guarded(ctx, |this, ctx| {
                let actions = this.core.restart_encoder();
                if actions
                    .iter()
                    .any(|a| matches!(a, Action::StartEncoder { .. }))
                {
                    if !worker_lost {
                        this.restarts.record(Instant::now());
                    }
                    this.total_restarts += 1;
                    this.metrics.ffmpeg_restarts.inc();
                    restarted(ActorKind::Transcoder);
                }
                this.perform(actions, ctx);
            })
        });
    }

    /// The core ended the stream: ENDLIST was written; tell the uploader and registry.
    fn ended(&mut self, ctx: &mut Context<Self>) {
        self.edge.end();
        self.kill_encoder();
        self.webrtc_ended();
        self.finish_recording();
        if !self.superseded {
            self.metrics.remove();
        }
        self.release();
        if let (Some(hooks), false) = (&self.context.hooks, self.superseded || self.fenced) {
            hooks.notify(crate::hooks::HookEvent::new("unpublish", &self.path, None));
        }
        if let Some(uploader) = &self.uploader {
            uploader.do_send(StreamEnded);
        }
        tracing::info!(parent: &self.span, "stream ended");
        // The registry hears of the end once the ENDLIST playlists are on disk: a
        // shutdown waits for the registry's sessions, and exiting with those writes
        // still queued left a playlist without ENDLIST (seen under load in CI).
        let (written, registry) = (self.sink.flushed(), self.registry.clone());
        let ended = SessionEnded {
            path: self.path.clone(),
            session_id: self.id,
        };
        // Not tied to this actor: it may stop first (no retention), the news must not.
        actix::spawn(async move {
            written.await;
            registry.do_send(ended);
        });
        let retention = Duration::from_secs(self.context.settings.hls.retention_seconds);
        ctx.run_later(retention, |this, ctx| {
            // A newer session of the path (live, or ended and in its own retention) has
            // the edge now, and rewrote the playlists, the master and the thumbnail:
            // they are its to remove. Only this session's own segments go.
            let path = this.path.as_str();
            let newer = (this.context.live.get(path)).is_some_and(|e| !Arc::ptr_eq(&e, &this.edge));
            this.context.live.close(path, &this.edge);
            this.sink
                .clean_up(this.core.packager.files(), !this.superseded && !newer);
            ctx.stop();
        });
    }

    /// Ends the stream without waiting for FFmpeg (a failure, or the path moved away).
    fn end_now(&mut self, ctx: &mut Context<Self>) {
        self.kill_encoder();
        let actions = self.core.force_end();
        self.perform(actions, ctx);
    }

    fn kbps(&mut self) -> u64 {
        self.bitrate.kbps(self.started.elapsed().as_secs())
    }
}

impl Actor for StreamSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::actor_alive(ActorKind::Session, 1);
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.uploader = self.context.deliveries.uploader(self.path.as_str());
        tracing::info!(parent: &self.span, "stream session started");
        match self.context.cluster.clone() {
            // Decided once the path is claimed (its state may name a recording).
            Some(cluster) => self.claim(cluster, ctx),
            None => self.decide_recording(ctx),
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::metrics::actor_alive(ActorKind::Session, -1);
        self.kill_encoder();
        self.release();
        // Closed at the retention's end; a session stopped another way (it could not
        // even end cleanly after a crash) must not leave its edge in memory for good.
        self.context.live.close(self.path.as_str(), &self.edge);
    }
}

mod handlers;
