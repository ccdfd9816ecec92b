//! The StreamSession: one per live publish path. It keeps the codec config and the
//! current GOP (so a new FFmpeg always starts at a keyframe with SPS/PPS), owns the
//! FFmpeg restart policy, and turns FFmpeg's uploads into Kawa's playlists through the
//! pure packager, writing what it asks for to the local sink.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod messages;

use actix::prelude::*;
use time::OffsetDateTime;

use super::backpressure::DropToKeyframe;
use super::registry::{SessionEnded, StreamRegistry};
use super::restart::RestartPolicy;
use super::transcoder::{Feed, Finish, Transcoder};
use super::uploader::{Deliver, Deliveries, StreamEnded, Uploader};
use crate::config::Settings;
use crate::delivery::local::{LocalSink, LocalWriter};
use crate::hls::packager::{Output, Packager, RenditionInfo, nominal_frame_rate};
use crate::http::ffmpeg_sink::FfmpegUploads;
use crate::keys::PublishPath;
use crate::media::frame::{CodecConfig, Frame};
use crate::metrics::{METRICS, StreamMetrics};
use crate::stream::bitrate::BitrateWindow;
use crate::stream::config::ConfigChange;
use crate::stream::timeline::{Continuity, Timeline};
use crate::transcode::{RenditionKind, TranscodePlan};

/// What every session shares: settings and where FFmpeg uploads go.
pub struct SessionContext {
    pub settings: Arc<Settings>,
    pub arbiters: super::Arbiters,
    pub uploads: FfmpegUploads,
    /// `http://127.0.0.1:PORT/ff`: Kawa's loopback-only listener for FFmpeg's PUTs.
    pub upload_base: String,
    /// `DATA_DIR/hls`.
    pub hls_root: PathBuf,
    /// S3 uploaders (none when S3 is off).
    pub deliveries: Arc<Deliveries>,
}

pub use messages::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// The publisher left; FFmpeg is flushing its last segments.
    Finishing,
    Ended,
}

/// Cap on the GOP cache: an encoder with a huge keyframe interval must not grow it
/// without bound. 64 MiB is a 20 s GOP at 25 Mbit/s.
const MAX_GOP_BYTES: usize = 64 * 1024 * 1024;
/// How long FFmpeg may take to flush after its input closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a session's mailbox holds before the connection starts dropping.
pub const MAILBOX_CAPACITY: usize = 1024;
/// After FFmpeg exits, its last uploads are waited for until none came for this long...
const UPLOAD_SETTLE_QUIET: Duration = Duration::from_millis(300);
/// ...but no longer than this.
const UPLOAD_SETTLE_MAX: Duration = Duration::from_secs(3);
/// Video frames counted before a measured frame rate is trusted.
const FRAME_RATE_SAMPLE: u64 = 50;

struct Generation {
    id: u64,
    addr: Addr<Transcoder>,
    token: String,
}

pub struct StreamSession {
    id: u64,
    path: PublishPath,
    context: Arc<SessionContext>,
    registry: Addr<StreamRegistry>,
    publisher: Option<u64>,
    state: State,
    config: CodecConfig,
    expect_video: Option<bool>,
    gop: Vec<Frame>,
    gop_bytes: usize,
    gop_started_at: OffsetDateTime,
    current: Option<Generation>,
    /// Older FFmpegs flushing their last segment after their input closed.
    retiring: Vec<Generation>,
    next_generation: u64,
    restarts: RestartPolicy,
    restart_scheduled: bool,
    total_restarts: u64,
    packager: Packager,
    sink: LocalWriter,
    to_transcoder: DropToKeyframe,
    since: OffsetDateTime,
    started: Instant,
    bitrate: BitrateWindow,
    /// The publishing connection's frame times, to notice a clock reset or jump.
    timeline: Timeline,
    superseded: bool,
    uploader: Option<Addr<Uploader>>,
    metrics: StreamMetrics,
    last_keyframe: Option<Instant>,
    drops_reported: u64,
    last_upload: Option<Instant>,
    /// First video DTS and frames seen, while the frame rate is measured.
    frame_rate_probe: Option<(i64, u64)>,
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
        let sink = LocalWriter::spawn(
            LocalSink::new(context.hls_root.join(path.as_str())),
            span.clone(),
        );
        let label = path.to_string();
        Self {
            id,
            packager: Packager::new(epoch_ms, hls.segment_seconds, hls.playlist_segments),
            sink,
            path,
            registry,
            publisher: Some(conn_id),
            state: State::Live,
            config: CodecConfig::default(),
            expect_video: None,
            gop: Vec::new(),
            gop_bytes: 0,
            gop_started_at: OffsetDateTime::now_utc(),
            current: None,
            retiring: Vec::new(),
            next_generation: 0,
            restarts: RestartPolicy::new(
                hls.restart_max,
                Duration::from_secs(hls.restart_window_seconds),
            ),
            restart_scheduled: false,
            total_restarts: 0,
            to_transcoder: DropToKeyframe::default(),
            since: OffsetDateTime::now_utc(),
            started: Instant::now(),
            bitrate: BitrateWindow::default(),
            timeline: Timeline::default(),
            superseded: false,
            uploader: None,
            metrics: StreamMetrics::new(&label),
            last_keyframe: None,
            drops_reported: 0,
            last_upload: None,
            frame_rate_probe: None,
            span,
            context,
        }
    }

    /// Counts video frames over their DTS span until the frame rate is known, for
    /// streams whose SPS carries no timing info.
    fn measure_frame_rate(&mut self, dts: i64) {
        if !self.packager.needs_frame_rate() {
            return;
        }
        let (first, count) = *self.frame_rate_probe.get_or_insert((dts, 0));
        let count = count + 1;
        self.frame_rate_probe = Some((first, count));
        let span = dts - first;
        if count > FRAME_RATE_SAMPLE && span > 0 {
            let fps = (count - 1) as f64 * 90_000.0 / span as f64;
            self.packager.fill_frame_rate(nominal_frame_rate(fps));
        }
    }

    /// Ingest metrics and the bitrate window for one frame.
    fn record_ingest(&mut self, frame: &Frame) {
        let size = frame.data().len();
        self.bitrate.record(self.started.elapsed().as_secs(), size);
        match frame {
            Frame::Video(v) => {
                self.measure_frame_rate(v.dts);
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

    fn remember(&mut self, frame: &Frame) {
        let starts_gop = match frame {
            Frame::Video(v) => v.keyframe,
            // Audio-only: every frame is a random access point; keep about a second.
            Frame::Audio(_) => self.config.video.is_none() && self.gop.len() >= 50,
        };
        if starts_gop {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_started_at = OffsetDateTime::now_utc();
        }
        let size = frame.data().len();
        if self.gop_bytes + size > MAX_GOP_BYTES {
            // Too long a GOP to keep: a restart waits for the next keyframe instead.
            self.gop.clear();
            self.gop_bytes = 0;
            return;
        }
        let gop_usable = !self.gop.is_empty() || starts_gop || self.config.video.is_none();
        if gop_usable {
            self.gop.push(frame.clone());
            self.gop_bytes += size;
        }
    }

    /// Whether the GOP cache holds a place FFmpeg can start from.
    fn can_start(&self) -> bool {
        let Some(first) = self.gop.first() else {
            return false;
        };
        match first {
            Frame::Video(v) => v.keyframe && self.config.video.is_some(),
            // Audio-only when the encoder said so, or no video config came.
            Frame::Audio(_) => {
                self.config.audio.is_some()
                    && self.config.video.is_none()
                    && self.expect_video == Some(false)
            }
        }
    }

    fn start_transcoder(&mut self, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _enter = span.enter();
        let context = Arc::clone(&self.context);
        let settings = &context.settings;
        let plan = TranscodePlan::new(&self.config, &settings.hls);
        let video = self.config.video.as_ref();
        let infos = plan
            .renditions
            .iter()
            .map(|r| RenditionInfo {
                name: r.name.clone(),
                video_codec: match r.kind {
                    RenditionKind::Source => video.map(|v| v.avc.codec_string()),
                    RenditionKind::Scaled { .. } => None,
                },
                resolution: match r.kind {
                    RenditionKind::Source => video.map(|v| (v.avc.info.width, v.avc.info.height)),
                    RenditionKind::Scaled { .. } => None,
                },
                frame_rate: video.and_then(|v| v.avc.info.frame_rate),
                has_video: plan.has_video,
            })
            .collect();
        let audio_codec = self.config.audio.as_ref().map(|a| a.asc.codec_string());
        self.packager.set_renditions(infos, audio_codec);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.packager
            .start_generation(generation, self.gop_started_at);
        let token = context
            .uploads
            .register(ctx.address().recipient(), generation);
        let upload_base = format!("{}/{}", context.upload_base, token);
        let args = plan.ffmpeg_args(&settings.hls, &upload_base);
        tracing::info!(generation, renditions = ?self.packager.rendition_names(), "starting FFmpeg");
        // The GOP goes in with the Transcoder, not through its mailbox: all of it
        // reaches the new FFmpeg, however long the GOP.
        let addr = Transcoder::new(
            generation,
            settings.hls.ffmpeg_path.clone(),
            args,
            plan.has_video,
            plan.has_audio,
            ctx.address(),
            self.span.clone(),
        )
        .with_replay(self.gop.clone(), self.metrics.frames_dropped.clone())
        .start();
        self.current = Some(Generation {
            id: generation,
            addr,
            token,
        });
        self.metrics.ffmpeg_running.set(1);
    }

    /// Sends a frame to the current FFmpeg. Through its one `Addr`: every clone of an
    /// `Addr` is a new sender that actix lets one message past the mailbox's capacity.
    fn forward(&mut self, frame: Frame) {
        let Some(g) = &self.current else { return };
        if self.to_transcoder.admit(&frame, true)
            && let Err(SendError::Full(Feed(f)) | SendError::Closed(Feed(f))) =
                g.addr.try_send(Feed(frame))
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

    /// Timing or format restarts: FFmpeg starts again from the next keyframe.
    fn new_generation(&mut self) {
        self.retire_generation();
        self.gop.clear();
        self.gop_bytes = 0;
    }

    /// Closes the current FFmpeg's input; it flushes its last segment and exits. Its
    /// uploads are still taken until then.
    fn retire_generation(&mut self) {
        if let Some(g) = self.current.take() {
            g.addr.do_send(Finish);
            self.retiring.push(g);
        }
    }

    /// Performs the packager's outputs: the local sink first (viewers of Kawa's own HLS
    /// never wait on S3), then the S3 uploader's queue.
    fn apply(&self, outputs: Vec<Output>) {
        if self.superseded {
            // A newer session writes this path's playlists and series now.
            return;
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
        if outputs.is_empty() {
            return;
        }
        match &self.uploader {
            Some(uploader) => {
                self.sink.apply(outputs.clone());
                uploader.do_send(Deliver(outputs));
            }
            None => self.sink.apply(outputs),
        }
    }

    fn schedule_restart(&mut self, ctx: &mut Context<Self>) {
        let (delay, capped) = self.restarts.delay(Instant::now());
        if capped {
            tracing::error!(parent: &self.span, ?delay, "FFmpeg keeps failing; waiting before the next restart");
        }
        self.restart_scheduled = true;
        ctx.run_later(delay, |this, ctx| {
            this.restart_scheduled = false;
            if this.state == State::Live && this.current.is_none() && this.can_start() {
                this.restarts.record(Instant::now());
                this.total_restarts += 1;
                this.metrics.ffmpeg_restarts.inc();
                METRICS
                    .actor_restarts
                    .with_label_values(&["transcoder"])
                    .inc();
                this.start_transcoder(ctx);
            }
        });
    }

    fn end(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        if let Some(g) = self.current.take() {
            self.context.uploads.unregister(&g.token);
        }
        let outputs = self.packager.end();
        self.apply(outputs);
        if !self.superseded {
            self.metrics.remove();
        }
        if let Some(uploader) = &self.uploader {
            uploader.do_send(StreamEnded);
        }
        tracing::info!(parent: &self.span, "stream ended");
        self.registry.do_send(SessionEnded {
            path: self.path.clone(),
            session_id: self.id,
        });
        let retention = Duration::from_secs(self.context.settings.hls.retention_seconds);
        ctx.run_later(retention, |this, ctx| {
            this.sink.clean_up(this.packager.files(), !this.superseded);
            ctx.stop();
        });
    }

    /// FFmpeg's last PUTs can still be in flight when its exit is reported: its token
    /// stays valid a little longer.
    fn unregister_later(&self, token: String, ctx: &mut Context<Self>) {
        ctx.run_later(UPLOAD_SETTLE_MAX, move |this, _| {
            this.context.uploads.unregister(&token)
        });
    }

    /// Ends the stream once FFmpeg's last uploads have arrived: after a quiet spell with
    /// no upload since FFmpeg exited, or at the latest `UPLOAD_SETTLE_MAX` after it.
    fn end_when_settled(&mut self, exited: Instant, ctx: &mut Context<Self>) {
        let last_activity = self.last_upload.map_or(exited, |t| t.max(exited));
        let quiet = last_activity.elapsed() >= UPLOAD_SETTLE_QUIET;
        if quiet || exited.elapsed() >= UPLOAD_SETTLE_MAX {
            self.end(ctx);
        } else {
            ctx.run_later(UPLOAD_SETTLE_QUIET, move |this, ctx| {
                this.end_when_settled(exited, ctx)
            });
        }
    }

    /// Runs a handler. A panic in it would end this actor's task silently (actix runs
    /// actors as tasks; a panic is not a stop): the publisher would stream into a closed
    /// mailbox and the playlists would freeze without ENDLIST. Instead the stream ends as
    /// a clean stop would, and the registry disconnects the publisher.
    fn guarded(
        &mut self,
        ctx: &mut Context<Self>,
        handler: impl FnOnce(&mut Self, &mut Context<Self>),
    ) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(self, ctx)));
        if let Err(panic) = result {
            let detail = crate::telemetry::panic_message(&*panic);
            tracing::error!(parent: &self.span, panic = %detail, "stream session panicked; ending the stream");
            for g in self
                .current
                .take()
                .into_iter()
                .chain(self.retiring.drain(..))
            {
                g.addr.do_send(super::transcoder::Kill);
                self.context.uploads.unregister(&g.token);
            }
            self.publisher = None;
            self.end(ctx);
        }
    }

    /// A panic for the fault tests, in debug builds only: `TEST_KAWA_PANIC_PATH` names a
    /// path whose session panics on its 400th frame.
    #[cfg(debug_assertions)]
    fn injected_panic(&self) {
        if self.metrics.video_frames.get() + self.metrics.audio_frames.get() == 400
            && std::env::var("TEST_KAWA_PANIC_PATH").is_ok_and(|p| p == self.path.as_str())
        {
            panic!("injected by TEST_KAWA_PANIC_PATH");
        }
    }

    fn kbps(&mut self) -> u64 {
        self.bitrate.kbps(self.started.elapsed().as_secs())
    }
}

impl Actor for StreamSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.uploader = self.context.deliveries.uploader(self.path.as_str());
        tracing::info!(parent: &self.span, "stream session started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for g in self
            .current
            .take()
            .into_iter()
            .chain(self.retiring.drain(..))
        {
            self.context.uploads.unregister(&g.token);
        }
    }
}

impl StreamSession {
    fn on_ingest(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        if self.publisher != Some(msg.conn_id) || self.state != State::Live {
            return;
        }
        match msg.input {
            IngestInput::Metadata { has_video } => {
                self.expect_video = Some(has_video);
            }
            IngestInput::Config(config) => {
                let change = ConfigChange::between(&self.config, &config);
                self.config = config;
                if change.restarts_encoding() && self.current.is_some() {
                    // New resolution, profile or audio format (or audio that came after
                    // encoding started without it): FFmpeg starts again at the next
                    // keyframe, with a new ladder plan, DISCONTINUITY and master.
                    tracing::info!(parent: &self.span, video = change.video, audio = change.audio, "codec configuration changed; a new generation starts");
                    self.new_generation();
                }
            }
            IngestInput::Frame(frame) => {
                let dts = match &frame {
                    Frame::Video(v) => v.dts,
                    Frame::Audio(a) => a.pts,
                };
                if self.timeline.observe(dts) == Continuity::Jump {
                    tracing::info!(parent: &self.span, "timestamps jumped; a new generation starts");
                    self.new_generation();
                }
                self.record_ingest(&frame);
                #[cfg(debug_assertions)]
                self.injected_panic();
                self.remember(&frame);
                match &self.current {
                    Some(_) => self.forward(frame),
                    None if !self.restart_scheduled && self.can_start() => {
                        self.start_transcoder(ctx)
                    }
                    None => {}
                }
            }
        }
    }
}

impl Handler<Ingest> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| this.on_ingest(msg, ctx));
    }
}

impl Handler<PublisherChanged> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: PublisherChanged, _: &mut Context<Self>) {
        // The new connection's timestamps start again from zero: a new FFmpeg
        // generation begins at its first keyframe, with a discontinuity.
        self.publisher = Some(msg.conn_id);
        self.new_generation();
        self.timeline.reset();
        self.state = State::Live;
    }
}

impl StreamSession {
    fn on_unpublished(&mut self, msg: Unpublished, ctx: &mut Context<Self>) {
        if self.state != State::Live {
            return;
        }
        tracing::info!(parent: &self.span, reason = msg.reason, "unpublished");
        self.publisher = None;
        self.state = State::Finishing;
        if let Some(g) = &self.current {
            g.addr.do_send(Finish);
            ctx.run_later(FINISH_TIMEOUT, |this, ctx| {
                if this.state == State::Finishing {
                    tracing::warn!(parent: &this.span, "FFmpeg did not finish in time");
                    if let Some(g) = &this.current {
                        g.addr.do_send(super::transcoder::Kill);
                    }
                    this.end(ctx);
                }
            });
        } else {
            self.end(ctx);
        }
    }
}

impl Handler<Unpublished> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: Unpublished, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| this.on_unpublished(msg, ctx));
    }
}

impl Handler<PublisherLost> for StreamSession {
    type Result = ();

    fn handle(&mut self, _: PublisherLost, _: &mut Context<Self>) {
        tracing::info!(parent: &self.span, "publisher lost; waiting for it to reconnect");
        // FFmpeg writes out what it has; a reconnect starts a new generation.
        self.publisher = None;
        self.new_generation();
        self.timeline.reset();
    }
}

impl Handler<Superseded> for StreamSession {
    type Result = ();

    fn handle(&mut self, _: Superseded, _: &mut Context<Self>) {
        self.superseded = true;
    }
}

impl StreamSession {
    fn on_ffmpeg_upload(&mut self, msg: FfmpegUpload, _: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.last_upload = Some(Instant::now());
        tracing::debug!(parent: &self.span, generation = msg.generation, rendition = %msg.rendition, file = %msg.file, bytes = msg.body.len(), "FFmpeg upload");
        let result = if msg.file.ends_with(".m3u8") {
            self.packager
                .playlist_uploaded(msg.generation, &msg.rendition, &msg.body)
        } else {
            self.packager
                .segment_uploaded(msg.generation, &msg.rendition, &msg.file, msg.body)
        };
        match result {
            Ok(outputs) => self.apply(outputs),
            Err(e) => tracing::warn!(parent: &self.span, error = %e, "FFmpeg upload ignored"),
        }
    }
}

impl Handler<FfmpegUpload> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: FfmpegUpload, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| this.on_ffmpeg_upload(msg, ctx));
    }
}

impl StreamSession {
    fn on_transcoder_exited(&mut self, msg: TranscoderExited, ctx: &mut Context<Self>) {
        let current = self
            .current
            .as_ref()
            .is_some_and(|g| g.id == msg.generation);
        tracing::info!(parent: &self.span, generation = msg.generation, status = %msg.status, current, "FFmpeg exited");
        if !current {
            if let Some(i) = self.retiring.iter().position(|g| g.id == msg.generation) {
                let g = self.retiring.remove(i);
                self.unregister_later(g.token, ctx);
            }
            return;
        }
        if let Some(g) = self.current.take() {
            self.unregister_later(g.token, ctx);
        }
        self.metrics.ffmpeg_running.set(0);
        match self.state {
            State::Finishing => self.end_when_settled(Instant::now(), ctx),
            State::Live => {
                tracing::warn!(parent: &self.span, generation = msg.generation, "FFmpeg died mid-stream; restarting");
                self.schedule_restart(ctx);
            }
            State::Ended => {}
        }
    }
}

impl Handler<TranscoderExited> for StreamSession {
    type Result = ();

    fn handle(&mut self, msg: TranscoderExited, ctx: &mut Context<Self>) {
        self.guarded(ctx, |this, ctx| this.on_transcoder_exited(msg, ctx));
    }
}

impl Handler<GetStatus> for StreamSession {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(LiveStatus {
            since: self
                .since
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            ingest_kbps: self.kbps(),
            renditions: self.packager.rendition_names(),
            video: self.config.video.as_ref().map(|v| {
                format!(
                    "{} {}x{}",
                    v.avc.codec_string(),
                    v.avc.info.width,
                    v.avc.info.height
                )
            }),
            audio: self.config.audio.as_ref().map(|a| {
                format!(
                    "{} {} Hz {} ch",
                    a.asc.codec_string(),
                    a.asc.sample_rate,
                    a.asc.channels()
                )
            }),
            frames_dropped: self.metrics.frames_dropped.get(),
            transcoder_restarts: self.total_restarts,
            transcoder_running: self.current.is_some(),
        })
    }
}
