//! A live stream's decisions, without actors: when packaging starts and starts over,
//! when FFmpeg starts, restarts and finishes, what the GOP cache holds, when the stream
//! ends. The session actor feeds it events and performs the [`Action`]s it returns.
//!
//! The source rendition is packaged straight from ingest. The encoded rungs exist only
//! while an FFmpeg runs ("an encoder generation"); each generation starts its rungs
//! over (DISCONTINUITY on the rungs only). A new timeline (new publisher, new codec
//! configuration, a clock jump) starts the source over too.

use time::OffsetDateTime;

use super::cadence::{CadenceWarning, KeyframeCadence};
use super::gop::GopCache;
use super::timeline::{Continuity, Timeline};
use crate::config::HlsSettings;
use crate::hls::packager::{Anchor, Output, Packager, RenditionInfo, Start, nominal_frame_rate};
use crate::media::cmaf::SegmenterSettings;
use crate::media::frame::{CodecConfig, Frame};
use crate::media::time::TICKS_PER_SECOND;
use crate::stream::config::ConfigChange;
use crate::transcode::{RenditionKind, SOURCE, TranscodePlan};

/// Video frames counted before a measured frame rate is trusted.
const FRAME_RATE_SAMPLE: u64 = 50;
/// FFmpeg keeps input timestamps exactly only within about 26.5 hours of its first one
/// (libavformat corrects a single 33-bit wrap): an FFmpeg is replaced at the first
/// keyframe after this much media time.
pub const ENCODER_MAX_TICKS: i64 = 24 * 3600 * TICKS_PER_SECOND;

/// What the session must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write these (local sink first, then S3).
    Write(Vec<Output>),
    /// Start an FFmpeg for `plan`'s rungs, given the GOP cache first.
    StartEncoder {
        generation: u64,
        plan: TranscodePlan,
        replay: Vec<Frame>,
    },
    /// Give the running FFmpeg a frame.
    Feed(Frame),
    /// Close an FFmpeg's input: what it still makes is not wanted, except when the
    /// stream is finishing (then the core waits for its exit).
    FinishEncoder { generation: u64 },
    /// The FFmpeg died: start another after the restart policy's delay, then call
    /// [`StreamCore::restart_encoder`].
    ScheduleRestart,
    /// The stream is over: every playlist has ENDLIST.
    Ended,
    /// Something an operator should read in the log.
    Note(&'static str),
    /// The encoder's keyframes are further apart than a segment may last (said once).
    KeyframeCadence(CadenceWarning),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Live,
    /// The publisher left; FFmpeg is flushing its last frames.
    Finishing,
    Ended,
}

#[derive(Debug)]
pub struct StreamCore {
    hls: HlsSettings,
    pub config: CodecConfig,
    expect_video: Option<bool>,
    gop: GopCache,
    timeline: Timeline,
    cadence: KeyframeCadence,
    pub packager: Packager,
    /// The source rendition is packaging the current timeline.
    source_live: bool,
    anchor: Option<Anchor>,
    plan: Option<TranscodePlan>,
    /// The running FFmpeg's generation, and the DTS it started at.
    encoder: Option<u64>,
    encoder_start: i64,
    restart_pending: bool,
    next_generation: u64,
    pub phase: Phase,
    frame_rate_probe: Option<(i64, u64)>,
    /// Packaging errors (a frame the muxer refused), for the logs and metrics.
    pub errors: Vec<String>,
}

impl StreamCore {
    pub fn new(hls: HlsSettings, epoch: u64) -> Self {
        let settings =
            SegmenterSettings::from_seconds(f64::from(hls.segment_seconds), hls.part_seconds);
        Self {
            packager: Packager::new(epoch, settings, hls.playlist_segments),
            hls,
            config: CodecConfig::default(),
            expect_video: None,
            gop: GopCache::default(),
            timeline: Timeline::default(),
            cadence: KeyframeCadence::new(&settings),
            source_live: false,
            anchor: None,
            plan: None,
            encoder: None,
            encoder_start: 0,
            restart_pending: false,
            next_generation: 0,
            phase: Phase::Live,
            frame_rate_probe: None,
            errors: Vec::new(),
        }
    }

    /// Frames in the GOP cache.
    pub fn cached_frames(&self) -> usize {
        self.gop.frames().len()
    }

    pub fn encoder(&self) -> Option<u64> {
        self.encoder
    }

    /// The GOP cache's frames, oldest (a keyframe) first.
    pub fn cached_gop(&self) -> Vec<Frame> {
        self.gop.frames().to_vec()
    }

    /// The generation the next FFmpeg gets.
    pub fn next_generation(&self) -> u64 {
        self.next_generation
    }

    /// Generations go on from `next` (a restarted core's: a late message from the old
    /// core's FFmpeg is never taken for the new one's).
    pub fn continue_generations(&mut self, next: u64) {
        self.next_generation = self.next_generation.max(next);
    }

    pub fn set_expect_video(&mut self, has_video: bool) {
        self.expect_video = Some(has_video);
    }

    /// A sequence header set or changed the codec configuration.
    pub fn on_config(&mut self, config: CodecConfig) -> Vec<Action> {
        let change = ConfigChange::between(&self.config, &config);
        self.config = config;
        let mut actions = Vec::new();
        if change.restarts_encoding() && self.source_live {
            // New resolution, profile or audio format: everything starts over at the
            // next keyframe, with a new init segment, DISCONTINUITY and a new ladder.
            actions.push(Action::Note(
                "codec configuration changed; a new generation starts",
            ));
            self.new_timeline(&mut actions);
        }
        actions
    }

    /// A frame from the publisher, ingested at `now`.
    pub fn on_frame(&mut self, frame: Frame, now: OffsetDateTime) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.phase != Phase::Live {
            return actions;
        }
        let dts = match &frame {
            Frame::Video(v) => v.dts,
            Frame::Audio(a) => a.pts,
        };
        if self.timeline.observe(dts) == Continuity::Jump {
            actions.push(Action::Note("timestamps jumped; a new generation starts"));
            self.new_timeline(&mut actions);
            self.cadence.reset();
        }
        if let Frame::Video(v) = &frame {
            self.measure_frame_rate(v.dts);
            if let Some(warning) = self.cadence.observe(v.dts, v.keyframe) {
                actions.push(Action::KeyframeCadence(warning));
            }
        }
        // The cache starts packaging and every FFmpeg; a live stream with no rung to
        // encode will not replay it (a restart waits for the next keyframe), so it holds
        // nothing then.
        let replayable = !self.source_live
            || self
                .plan
                .as_ref()
                .is_some_and(|p| p.scaled().next().is_some());
        if replayable {
            self.gop.remember(&frame, &self.config, now);
        } else {
            self.gop.clear();
        }
        if self.source_live {
            self.package(SOURCE, frame.clone(), &mut actions);
            let renew = matches!(&frame, Frame::Video(v) if v.keyframe)
                && dts - self.encoder_start > ENCODER_MAX_TICKS;
            if let (true, Some(generation)) = (renew, self.encoder) {
                actions.push(Action::Note(
                    "FFmpeg has run a day; replaced at this keyframe",
                ));
                actions.push(Action::FinishEncoder { generation });
                self.encoder = None;
                self.start_encoder(&mut actions);
            } else if self.encoder.is_some() {
                actions.push(Action::Feed(frame));
            }
        } else if self.gop.can_start(&self.config, self.expect_video) {
            self.start_source(&mut actions);
        }
        actions
    }

    /// Frames FFmpeg made, `(rung index in the plan's scaled rungs, frame)`.
    pub fn on_encoded(&mut self, generation: u64, frames: Vec<(usize, Frame)>) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.encoder != Some(generation) || self.phase == Phase::Ended {
            // A retired FFmpeg's last frames belong to a timeline that is over.
            return actions;
        }
        let names = self.rung_names();
        for (rung, frame) in frames {
            if let Some(name) = names.get(rung) {
                self.package(name, frame, &mut actions);
            }
        }
        actions
    }

    /// An FFmpeg exited (its output fully read).
    pub fn on_encoder_exited(&mut self, generation: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.encoder != Some(generation) {
            return actions;
        }
        self.encoder = None;
        match self.phase {
            Phase::Finishing => self.end(&mut actions),
            Phase::Live => {
                self.restart_pending = true;
                actions.push(Action::ScheduleRestart);
            }
            Phase::Ended => {}
        }
        actions
    }

    /// The restart delay passed: a new FFmpeg from the GOP cache, if still wanted.
    pub fn restart_encoder(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.restart_pending = false;
        if self.phase == Phase::Live && self.source_live && self.encoder.is_none() {
            self.start_encoder(&mut actions);
        }
        actions
    }

    /// The publisher's connection changed or dropped: its timestamps start again.
    pub fn on_publisher_reset(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.new_timeline(&mut actions);
        self.timeline.reset();
        self.cadence.reset();
        if self.phase == Phase::Finishing {
            self.phase = Phase::Live;
        }
        actions
    }

    /// The publisher stopped: FFmpeg finishes, then the stream ends.
    pub fn on_unpublished(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.phase != Phase::Live {
            return actions;
        }
        self.phase = Phase::Finishing;
        match self.encoder {
            Some(generation) => actions.push(Action::FinishEncoder { generation }),
            None => self.end(&mut actions),
        }
        actions
    }

    /// Ends the stream now (FFmpeg did not finish in time, or the session failed).
    pub fn force_end(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.encoder = None;
        self.end(&mut actions);
        actions
    }

    fn end(&mut self, actions: &mut Vec<Action>) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        actions.push(Action::Write(self.packager.end()));
        actions.push(Action::Ended);
    }

    fn new_timeline(&mut self, actions: &mut Vec<Action>) {
        self.source_live = false;
        self.anchor = None;
        self.gop.clear();
        if let Some(generation) = self.encoder.take() {
            actions.push(Action::FinishEncoder { generation });
        }
    }

    fn rung_names(&self) -> Vec<String> {
        self.plan
            .as_ref()
            .map(|p| p.scaled().map(|r| r.name.clone()).collect())
            .unwrap_or_default()
    }

    fn package(&mut self, rendition: &str, frame: Frame, actions: &mut Vec<Action>) {
        match self.packager.push(rendition, frame) {
            Ok(outputs) if !outputs.is_empty() => actions.push(Action::Write(outputs)),
            Ok(_) => {}
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn start_rendition(&mut self, rendition: &str, start: Start, actions: &mut Vec<Action>) {
        match self.packager.start(rendition, start) {
            Ok(outputs) if !outputs.is_empty() => actions.push(Action::Write(outputs)),
            Ok(_) => {}
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// The GOP cache can start: the ladder is planned, the source starts packaging the
    /// cached frames, and FFmpeg starts if the ladder has rungs.
    fn start_source(&mut self, actions: &mut Vec<Action>) {
        let plan = TranscodePlan::new(&self.config, &self.hls);
        let video = self.config.video.as_ref();
        let infos = plan
            .renditions
            .iter()
            .map(|r| RenditionInfo {
                name: r.name.clone(),
                video_codec: None,
                resolution: match r.kind {
                    RenditionKind::Source => video.map(|v| (v.info().width, v.info().height)),
                    RenditionKind::Scaled { .. } => None,
                },
                frame_rate: video.and_then(|v| v.info().frame_rate),
                has_video: plan.has_video,
            })
            .collect();
        let audio_codec = self.config.audio.as_ref().map(|a| a.asc.codec_string());
        self.packager.set_renditions(infos, audio_codec);
        let Some(first) = self.gop.frames().first() else {
            return;
        };
        let dts = match first {
            Frame::Video(v) => v.dts,
            Frame::Audio(a) => a.pts,
        };
        let wall = self
            .gop
            .started_at()
            .unwrap_or_else(OffsetDateTime::now_utc);
        let anchor = Anchor { dts, wall };
        self.anchor = Some(anchor);
        let start = Start {
            video: video.map(|v| v.as_ref().clone()),
            audio: self.config.audio.clone(),
            anchor,
        };
        self.start_rendition(SOURCE, start, actions);
        for frame in self.gop.frames().to_vec() {
            self.package(SOURCE, frame, actions);
        }
        self.source_live = true;
        self.plan = Some(plan);
        if self.encoder.is_none() && !self.restart_pending {
            self.start_encoder(actions);
        }
    }

    /// A new FFmpeg generation for the plan's rungs, from the GOP cache.
    fn start_encoder(&mut self, actions: &mut Vec<Action>) {
        let (Some(plan), Some(anchor)) = (self.plan.clone(), self.anchor) else {
            return;
        };
        if plan.scaled().next().is_none() || !self.gop.can_start(&self.config, self.expect_video) {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        for name in self.rung_names() {
            let start = Start {
                video: None,
                audio: self.config.audio.clone(),
                anchor,
            };
            self.start_rendition(&name, start, actions);
        }
        self.encoder = Some(generation);
        self.encoder_start = match self.gop.frames().first() {
            Some(Frame::Video(v)) => v.dts,
            Some(Frame::Audio(a)) => a.pts,
            None => 0,
        };
        actions.push(Action::StartEncoder {
            generation,
            plan,
            replay: self.gop.frames().to_vec(),
        });
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
}
