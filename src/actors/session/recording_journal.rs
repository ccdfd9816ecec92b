//! A recording in a cluster: its journal lines go to Redis as well, in order, so that
//! the node that takes the path over goes on with the same recording; and a session that
//! takes a path over goes on with the recording its previous owner left.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::StreamSession;
use super::recording::Recording;
use crate::cluster::Cluster;
use crate::hls::recording::{
    JournalEntry, Recorder, RecordingBatch, RecordingOutput, keep_present,
};
use crate::keys::PublishPath;
use crate::recordings::{RecordingInfo, RecordingStatus, Recordings};

/// Batches of journal lines a session holds while Redis is slow; past that, lines are
/// logged as lost (the local journal still has them).
const QUEUED_BATCHES: usize = 256;
/// More files than this in one recording is no recording Kawa made.
const MAX_FILES: usize = 2_000_000;

/// Appends a recording's journal lines to Redis, in order, off the session's thread.
pub(super) struct JournalAppender {
    lines: mpsc::Sender<Vec<JournalEntry>>,
    task: tokio::task::JoinHandle<()>,
}

impl JournalAppender {
    pub(super) fn spawn(cluster: Arc<Cluster>, path: String, id: u64, span: tracing::Span) -> Self {
        let (lines, mut rx) = mpsc::channel::<Vec<JournalEntry>>(QUEUED_BATCHES);
        let task = tokio::spawn(async move {
            while let Some(entries) = rx.recv().await {
                if let Err(e) = cluster.append_journal(&path, id, &entries).await {
                    tracing::warn!(parent: &span, error = %e, "recording journal not in redis");
                }
            }
        });
        Self { lines, task }
    }

    /// Queues the journal lines among `outputs`.
    pub(super) fn append(&self, outputs: &[RecordingOutput]) {
        let entries: Vec<JournalEntry> = outputs
            .iter()
            .filter_map(|o| match o {
                RecordingOutput::Journal(entry) => Some(entry.clone()),
                _ => None,
            })
            .collect();
        if !entries.is_empty() && self.lines.try_send(entries).is_err() {
            tracing::warn!("redis is not keeping up: recording journal lines not in redis");
        }
    }

    /// Resolves once every queued line is written (or failed).
    pub(super) async fn flushed(self) {
        drop(self.lines);
        let _ = self.task.await;
    }
}

/// The broadcast's recording a previous owner of the path left, to go on with.
pub(super) struct Continued {
    info: RecordingInfo,
    entries: Vec<JournalEntry>,
}

/// The recording `id` the path's state names, when it is still going and its journal
/// can be read; otherwise `None` (this session records a new one).
pub(super) async fn continued(
    cluster: &Cluster,
    recordings: &Recordings,
    path: &PublishPath,
    id: u64,
    span: &tracing::Span,
) -> Option<Continued> {
    let info = match recordings.get(path, id).await {
        Ok(Some(info)) if info.status == RecordingStatus::Recording => info,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(parent: span, error = %e, "cannot look up the broadcast's recording; a new one starts");
            return None;
        }
    };
    let entries = match cluster.load_journal(path.as_str(), id).await {
        Ok((entries, skipped)) => {
            if skipped > 0 {
                tracing::warn!(parent: span, skipped, "recording journal lines left out");
            }
            entries
        }
        Err(e) => {
            tracing::warn!(parent: span, error = %e, "cannot read the broadcast's recording journal; a new one starts");
            return None;
        }
    };
    // What the previous owner kept but never got to S3 died with it.
    let in_s3: HashSet<String> = match recordings.s3() {
        Some(s3) => {
            let folder = format!("{}/", RecordingInfo::s3_folder(id));
            let prefix = s3.object_key(path.as_str(), &folder);
            match s3.list_keys(&prefix, MAX_FILES).await {
                Ok(keys) => keys
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
                    .collect(),
                Err(e) => {
                    tracing::warn!(parent: span, error = %e, "cannot list the recording in S3; a new one starts");
                    return None;
                }
            }
        }
        None => HashSet::new(),
    };
    let local = RecordingInfo::local_dir(recordings.root(), path, id);
    let (entries, dropped) = tokio::task::spawn_blocking(move || {
        keep_present(entries, |rendition, name| {
            in_s3.contains(&format!("{rendition}/{name}"))
                || local.join(rendition).join(name).is_file()
        })
    })
    .await
    .ok()?;
    if dropped > 0 {
        tracing::warn!(parent: span, dropped, "segments the previous owner never uploaded are left out of the recording");
    }
    Some(Continued { info, entries })
}

impl StreamSession {
    /// Goes on with a previous owner's recording: the same id, its segments, and this
    /// node's journal starting with everything it wrote down (so a crash here still
    /// finishes all of it).
    pub(super) fn continue_recording(&mut self, continued: Continued) -> Recording {
        let Continued { info, entries } = continued;
        let (recorder, _) = Recorder::replay(entries.clone());
        tracing::info!(
            parent: &self.span,
            recording = info.id,
            segments = recorder.summary().segments,
            "going on with the broadcast's recording"
        );
        self.sink.apply(
            Vec::new(),
            Some(RecordingBatch {
                id: info.id,
                outputs: entries.into_iter().map(RecordingOutput::Journal).collect(),
            }),
        );
        Recording::resumed(info.id, info.started_at, recorder)
    }
}
