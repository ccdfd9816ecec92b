//! Recordings: what a stream's broadcasts left behind when they were recorded (see
//! [`crate::hls::recording`] for how one is made). The index of recordings lives in the
//! key store (redb, or Redis shared by a cluster's nodes); the files live in
//! `DATA_DIR/recordings/{path}/{id}/` on the node that recorded and, with S3 on, under
//! `{prefix}/{path}/recordings/{id}/`.
//!
//! [`Recordings`] deletes recordings (over REST, or when `recordings.retention_seconds`
//! has passed) in every place they are kept.

mod recover;
mod sweep;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use recover::Recovered;
pub use sweep::spawn_sweeper;

use crate::delivery::s3::{S3Error, S3Target};
use crate::keys::{PublishPath, StoreError};

/// The folder below a stream's S3 objects that holds its recordings.
pub const S3_FOLDER: &str = "recordings";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    /// The broadcast is still going (or its node died before it ended).
    Recording,
    /// Ended: the VOD playlists are written.
    Ready,
}

/// One recorded broadcast, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordingInfo {
    #[schema(value_type = String, example = "alice")]
    pub publish_path: PublishPath,
    /// The broadcast's epoch (Unix milliseconds of its start): unique per path, and the
    /// prefix of its file names.
    pub id: u64,
    /// The node that recorded it (its local copy is there); empty outside a cluster.
    #[serde(default)]
    pub node: String,
    pub status: RecordingStatus,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub started_at: OffsetDateTime,
    /// RFC 3339; null while it is recording.
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>)]
    pub ended_at: Option<OffsetDateTime>,
    pub duration_seconds: f64,
    pub segments: u64,
    pub bytes: u64,
    pub renditions: Vec<String>,
}

impl RecordingInfo {
    /// The index's key of a recording.
    pub fn key(path: &PublishPath, id: u64) -> String {
        format!("{path}/{id}")
    }

    /// Where its files are on the node that recorded it.
    pub fn local_dir(root: &Path, path: &PublishPath, id: u64) -> PathBuf {
        root.join(path.as_str()).join(id.to_string())
    }

    /// An index entry as a store keeps it (JSON).
    pub fn from_json(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Its folder in S3, relative to the stream's objects.
    pub fn s3_folder(id: u64) -> String {
        format!("{S3_FOLDER}/{id}")
    }
}

/// A recording as the API and the `recording_ready` hook show it: where to play it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    #[serde(flatten)]
    pub info: RecordingInfo,
    /// Kawa's own URL path of its master playlist (on the node that recorded it), once
    /// ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playlist_url: Option<String>,
    /// Its master playlist's S3 key, once ready, with S3 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
}

/// The recordings index, kept by the key store.
#[async_trait]
pub trait RecordingIndex: Send + Sync + 'static {
    /// Adds or replaces a recording.
    async fn put_recording(&self, info: &RecordingInfo) -> Result<(), StoreError>;
    /// Every recording, by path then id.
    async fn recordings(&self) -> Result<Vec<RecordingInfo>, StoreError>;
    /// One recording, looked up by its key.
    async fn recording(
        &self,
        path: &PublishPath,
        id: u64,
    ) -> Result<Option<RecordingInfo>, StoreError>;
    /// `false` when there was no such recording.
    async fn remove_recording(&self, path: &PublishPath, id: u64) -> Result<bool, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deleting the recording from S3: {0}")]
    S3(#[from] S3Error),
    #[error("deleting the recording's files: {0}")]
    Files(#[from] std::io::Error),
    #[error("the recording is still going")]
    InProgress,
}

/// Why a recording is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    Api,
    Retention,
}

impl DeleteReason {
    fn label(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Retention => "retention",
        }
    }
}

/// The recordings of this node and the cluster's, with every place they are kept.
pub struct Recordings {
    index: Arc<dyn RecordingIndex>,
    /// `DATA_DIR/recordings`.
    root: PathBuf,
    s3: Option<S3Target>,
    timeout: Duration,
}

impl Recordings {
    pub fn new(
        index: Arc<dyn RecordingIndex>,
        root: PathBuf,
        s3: Option<S3Target>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            index,
            root,
            s3,
            timeout,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bucket, when S3 is on.
    pub fn s3(&self) -> Option<&S3Target> {
        self.s3.as_ref()
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, RecordingError> {
        Ok(crate::keys::within(self.timeout, op).await?)
    }

    pub fn view(&self, info: RecordingInfo) -> RecordingView {
        let ready = info.status == RecordingStatus::Ready;
        let playlist_url =
            ready.then(|| format!("/recordings/{}/{}/master.m3u8", info.publish_path, info.id));
        let s3_key = self.s3.as_ref().filter(|_| ready).map(|s3| {
            s3.object_key(
                info.publish_path.as_str(),
                &format!("{}/master.m3u8", RecordingInfo::s3_folder(info.id)),
            )
        });
        RecordingView {
            info,
            playlist_url,
            s3_key,
        }
    }

    pub async fn put(&self, info: &RecordingInfo) -> Result<(), RecordingError> {
        self.timed(self.index.put_recording(info)).await
    }

    pub async fn list(&self) -> Result<Vec<RecordingInfo>, RecordingError> {
        self.timed(self.index.recordings()).await
    }

    pub async fn get(
        &self,
        path: &PublishPath,
        id: u64,
    ) -> Result<Option<RecordingInfo>, RecordingError> {
        self.timed(self.index.recording(path, id)).await
    }

    /// Deletes a finished recording: its S3 objects, its local files (when this node has
    /// them; other nodes' sweepers remove theirs once it is gone from the index), then
    /// its index entry. `Ok(false)`: no such recording. `reason` is for the metrics.
    pub async fn delete(
        &self,
        path: &PublishPath,
        id: u64,
        reason: DeleteReason,
    ) -> Result<bool, RecordingError> {
        let Some(info) = self.get(path, id).await? else {
            return Ok(false);
        };
        if info.status == RecordingStatus::Recording {
            return Err(RecordingError::InProgress);
        }
        self.delete_files(path, id).await?;
        let removed = self.timed(self.index.remove_recording(path, id)).await?;
        if removed {
            crate::metrics::METRICS
                .recordings_deleted
                .with_label_values(&[reason.label()])
                .inc();
        }
        Ok(removed)
    }

    async fn delete_files(&self, path: &PublishPath, id: u64) -> Result<(), RecordingError> {
        if let Some(s3) = &self.s3 {
            let prefix =
                s3.object_key(path.as_str(), &format!("{}/", RecordingInfo::s3_folder(id)));
            s3.delete_prefix(&prefix).await?;
        }
        let dir = RecordingInfo::local_dir(&self.root, path, id);
        remove_local(dir).await?;
        Ok(())
    }
}

/// Removes a recording's local folder (and its path's folder once empty), off the
/// actor threads.
async fn remove_local(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if let Some(parent) = dir.parent() {
            // Only succeeds when empty: the path's other recordings stay.
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}
