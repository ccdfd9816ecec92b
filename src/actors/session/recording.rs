//! A session's recording: decided when the session starts (the stream's `record` flag,
//! else `recordings.enabled`), fed every batch of outputs the session writes, and
//! finished when the stream ends: VOD playlists written, the index told the recording
//! is ready, then the `recording_ready` hook.

use actix::prelude::*;
use time::OffsetDateTime;

use super::StreamSession;
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
}

impl Recording {
    fn new(id: u64, started_at: OffsetDateTime) -> Self {
        METRICS.recordings_active.inc();
        Self {
            id,
            started_at,
            recorder: Recorder::default(),
            indexing: None,
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
    /// holds the mailbox; the key store answers within `store.timeout_ms`).
    pub(super) fn decide_recording(&mut self, ctx: &mut Context<Self>) {
        let Some(keys) = self.context.keys.clone() else {
            return;
        };
        let path = self.path.clone();
        let default = self.context.settings.recordings.enabled;
        let lookup = async move { keys.get(&path).await };
        ctx.wait(lookup.into_actor(self).map(move |found, this, _| {
            let record = match found {
                Ok(record) => record.and_then(|r| r.record).unwrap_or(default),
                Err(e) => {
                    tracing::warn!(parent: &this.span, error = %e, default, "cannot read the stream's record flag; using recordings.enabled");
                    default
                }
            };
            if record {
                tracing::info!(parent: &this.span, recording = this.epoch, "recording this broadcast");
                this.recording = Some(Recording::new(this.epoch, this.since));
            }
        }));
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
        // Taken: the broadcast is no longer being recorded, whatever happens next.
        let Some(mut recording) = self.recording.take().filter(|r| !r.recorder.is_empty()) else {
            return;
        };
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
            if let Some(hooks) = hooks {
                hooks.notify(crate::hooks::HookEvent::recording_ready(
                    recordings.view(info),
                ));
            }
        });
    }
}
