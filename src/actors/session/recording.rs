//! A session's recording: decided when the session starts (the stream's `record` flag,
//! else `recordings.enabled`), fed every batch of outputs the session writes, and
//! finished when the stream ends: VOD playlists written, the index told the recording
//! is ready, then the `recording_ready` hook.

use actix::prelude::*;
use time::OffsetDateTime;

use super::StreamSession;
use super::recording_journal::{JournalAppender, continued};
use crate::hls::packager::Output;
use crate::hls::recording::{Recorder, RecordingBatch};
use crate::metrics::METRICS;
use crate::recordings::{RecordingInfo, RecordingStatus};

/// A broadcast being recorded.
pub(super) struct Recording {
    /// The stream's epoch: the recording's id.
    id: u64,
    started_at: OffsetDateTime,
    recorder: Recorder,
    /// Telling the index it started (at its first segment): its end waits for this.
    indexing: Option<tokio::task::JoinHandle<()>>,
    /// In a cluster: its journal lines to Redis.
    journal: Option<JournalAppender>,
}

impl Recording {
    fn new(id: u64, started_at: OffsetDateTime) -> Self {
        Self::resumed(id, started_at, Recorder::default())
    }

    /// A recording that goes on from what `recorder` holds.
    pub(super) fn resumed(id: u64, started_at: OffsetDateTime, recorder: Recorder) -> Self {
        METRICS.recordings_active.inc();
        Self {
            id,
            started_at,
            recorder,
            indexing: None,
            journal: None,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        METRICS.recordings_active.dec();
    }
}

impl StreamSession {
    /// Looks up whether this stream records, before any frame is handled (`ctx.wait`
    /// holds the mailbox; the key store answers within `store.timeout_ms`). In a cluster
    /// this runs once the path is claimed: a recording its previous owner left (the
    /// path's state names it) goes on here.
    pub(super) fn decide_recording(&mut self, ctx: &mut Context<Self>) {
        let Some(keys) = self.context.keys.clone() else {
            return;
        };
        let path = self.path.clone();
        let default = self.context.settings.recordings.enabled;
        let (cluster, recordings) = (
            self.context.cluster.clone(),
            self.context.recordings.clone(),
        );
        let resumed = self.resumed_recording.take();
        let span = self.span.clone();
        let lookup = async move {
            let record = match keys.get(&path).await {
                Ok(record) => record.and_then(|r| r.record).unwrap_or(default),
                Err(e) => {
                    tracing::warn!(parent: &span, error = %e, default, "cannot read the stream's record flag; using recordings.enabled");
                    default
                }
            };
            let continued = match (record, resumed, &cluster, &recordings) {
                (true, Some(id), Some(cluster), Some(recordings)) => {
                    continued(cluster, recordings, &path, id, &span).await
                }
                _ => None,
            };
            (record, continued)
        };
        ctx.wait(lookup.into_actor(self).map(|(record, continued), this, _| {
            if !record {
                return;
            }
            let mut recording = match continued {
                Some(continued) => this.continue_recording(continued),
                None => {
                    tracing::info!(parent: &this.span, recording = this.epoch, "recording this broadcast");
                    Recording::new(this.epoch, this.since)
                }
            };
            if let Some(cluster) = this.context.cluster.clone() {
                recording.journal = Some(JournalAppender::spawn(
                    cluster,
                    this.path.to_string(),
                    recording.id,
                    this.span.clone(),
                ));
            }
            this.recording = Some(recording);
        }));
    }

    /// The recording going on now, if any (the path's state names it in a cluster).
    pub(super) fn recording_id(&self) -> Option<u64> {
        self.recording.as_ref().map(|r| r.id)
    }

    /// What the recording keeps of a batch the session writes.
    pub(super) fn record(&mut self, outputs: &[Output]) -> Option<RecordingBatch> {
        let recording = self.recording.as_mut()?;
        let before = recording.recorder.bytes();
        let mut kept = recording.recorder.observe(outputs);
        METRICS
            .recorded_bytes
            .inc_by(recording.recorder.bytes() - before);
        if outputs.iter().any(|o| matches!(o, Output::Master { .. })) {
            let master = self
                .core
                .packager
                .master_of(&recording.recorder.renditions());
            kept.extend(recording.recorder.note_master(master));
        }
        if kept.is_empty() {
            return None;
        }
        if let Some(journal) = &recording.journal {
            journal.append(&kept);
        }
        let id = recording.id;
        if recording.indexing.is_none() {
            let info = self.recording_info(self.recording.as_ref()?, RecordingStatus::Recording);
            let indexing = self.index(info);
            self.recording.as_mut()?.indexing = Some(indexing);
        }
        Some(RecordingBatch { id, outputs: kept })
    }

    fn recording_info(&self, recording: &Recording, status: RecordingStatus) -> RecordingInfo {
        let summary = recording.recorder.summary();
        RecordingInfo {
            publish_path: self.path.clone(),
            id: recording.id,
            node: self
                .context
                .cluster
                .as_ref()
                .map(|c| c.node_id().to_owned())
                .unwrap_or_default(),
            status,
            started_at: recording.started_at,
            ended_at: (status == RecordingStatus::Ready).then(OffsetDateTime::now_utc),
            duration_seconds: summary.duration_seconds,
            segments: summary.segments,
            bytes: summary.bytes,
            renditions: summary.renditions,
        }
    }

    /// Tells the index (in the background: the store may be slow).
    fn index(&self, info: RecordingInfo) -> tokio::task::JoinHandle<()> {
        let recordings = self.context.recordings.clone();
        let span = self.span.clone();
        actix::spawn(async move {
            let Some(recordings) = recordings else { return };
            if let Err(e) = recordings.put(&info).await {
                tracing::error!(parent: &span, error = %e, "recording not in the index");
            }
        })
    }

    /// The stream ended: the recording's playlists are written (locally, then queued for
    /// S3), then the index and the hook hear it is ready.
    pub(super) fn finish_recording(&mut self) {
        // Taken: the broadcast is no longer being recorded here, whatever happens next.
        let Some(mut recording) = self.recording.take() else {
            return;
        };
        if self.fenced {
            // Another node took the path over and goes on with this recording.
            tracing::info!(parent: &self.span, recording = recording.id, "the recording goes on on the path's new owner");
            return;
        }
        // The path's next publish starts a recording of its own.
        self.save_state();
        if recording.recorder.is_empty() {
            return;
        }
        let master = self
            .core
            .packager
            .master_of(&recording.recorder.renditions());
        let batch = RecordingBatch {
            id: recording.id,
            outputs: recording.recorder.finish(Some(master)),
        };
        let info = self.recording_info(&recording, RecordingStatus::Ready);
        let started = recording.indexing.take();
        let journal = recording.journal.take();
        let cluster = self.context.cluster.clone();
        let path = self.path.to_string();
        self.sink.apply(Vec::new(), Some(batch.clone()));
        if let Some(uploader) = &self.uploader {
            uploader.do_send(super::Deliver {
                outputs: Vec::new(),
                fence: None,
                recording: Some(batch),
            });
        }
        let written = self.sink.flushed();
        let (recordings, hooks) = (self.context.recordings.clone(), self.context.hooks.clone());
        let span = self.span.clone();
        actix::spawn(async move {
            written.await;
            if let Some(started) = started {
                // The index hears of the start before the end.
                let _ = started.await;
            }
            METRICS
                .recordings_finished
                .with_label_values(&["ended"])
                .inc();
            tracing::info!(
                parent: &span,
                recording = info.id,
                seconds = info.duration_seconds,
                segments = info.segments,
                "recording ready"
            );
            let Some(recordings) = recordings else { return };
            if let Err(e) = recordings.put(&info).await {
                tracing::error!(parent: &span, error = %e, "recording not marked ready in the index");
            }
            let id = info.id;
            if let Some(hooks) = hooks {
                hooks.notify(crate::hooks::HookEvent::recording_ready(
                    recordings.view(info),
                ));
            }
            if let (Some(journal), Some(cluster)) = (journal, cluster) {
                journal.flushed().await;
                if let Err(e) = cluster.drop_journal(&path, id).await {
                    tracing::warn!(parent: &span, error = %e, "recording journal left in redis (it expires)");
                }
            }
        });
    }
}
