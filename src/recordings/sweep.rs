//! Retention: finished recordings older than `recordings.retention_seconds` are deleted
//! everywhere, and local folders whose recording left the index (deleted over REST on
//! another node) are removed. Nothing is deleted while the index cannot be read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use super::{DeleteReason, RecordingInfo, RecordingStatus, Recordings};
use crate::keys::PublishPath;

/// A local folder that is not in the index is left alone this long: its recording may
/// have just started, its index entry on the way.
const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Sweeps every so often (a quarter of the retention, between 1 s and a minute).
pub fn spawn_sweeper(recordings: Arc<Recordings>, retention_seconds: u64) {
    let retention = Duration::from_secs(retention_seconds);
    let every = if retention.is_zero() {
        Duration::from_secs(60)
    } else {
        (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = sweep(&recordings, retention).await {
                tracing::warn!(error = %e, "recordings sweep skipped");
            }
        }
    });
}

async fn sweep(recordings: &Recordings, retention: Duration) -> Result<(), super::RecordingError> {
    let all = recordings.list().await?;
    if !retention.is_zero() {
        let now = OffsetDateTime::now_utc();
        for info in all.iter().filter(|r| expired(r, now, retention)) {
            match recordings
                .delete(&info.publish_path, info.id, DeleteReason::Retention)
                .await
            {
                Ok(_) => tracing::info!(
                    publish_path = %info.publish_path,
                    recording = info.id,
                    "recording deleted: past its retention"
                ),
                Err(e) => tracing::warn!(
                    publish_path = %info.publish_path,
                    recording = info.id,
                    error = %e,
                    "expired recording not deleted; will try again"
                ),
            }
        }
    }
    let known: HashSet<String> = all
        .iter()
        .map(|r| RecordingInfo::key(&r.publish_path, r.id))
        .collect();
    let root = recordings.root().to_owned();
    let orphans = tokio::task::spawn_blocking(move || local_orphans(&root, &known))
        .await
        .unwrap_or_default();
    for (path, id) in orphans {
        tracing::info!(publish_path = %path, recording = id, "removing a local recording that was deleted");
        super::remove_local(RecordingInfo::local_dir(recordings.root(), &path, id)).await?;
    }
    Ok(())
}

fn expired(info: &RecordingInfo, now: OffsetDateTime, retention: Duration) -> bool {
    info.status == RecordingStatus::Ready
        && info.ended_at.is_some_and(|ended| {
            now - ended > time::Duration::try_from(retention).unwrap_or(time::Duration::MAX)
        })
}

/// Local recording folders that are not in the index (and are old enough to be sure).
fn local_orphans(root: &std::path::Path, known: &HashSet<String>) -> Vec<(PublishPath, u64)> {
    let mut orphans = Vec::new();
    let Ok(paths) = std::fs::read_dir(root) else {
        return orphans;
    };
    for path_dir in paths.flatten() {
        let Ok(path) = PublishPath::parse(&path_dir.file_name().to_string_lossy()) else {
            continue;
        };
        let Ok(ids) = std::fs::read_dir(path_dir.path()) else {
            continue;
        };
        for id_dir in ids.flatten() {
            let Ok(id) = id_dir.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            let old_enough = id_dir
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ORPHAN_GRACE);
            if old_enough && !known.contains(&RecordingInfo::key(&path, id)) {
                orphans.push((path.clone(), id));
            }
        }
    }
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: RecordingStatus, ended_secs_ago: Option<i64>) -> RecordingInfo {
        let now = OffsetDateTime::now_utc();
        RecordingInfo {
            publish_path: PublishPath::parse("a").unwrap(),
            id: 1,
            node: String::new(),
            status,
            started_at: now,
            ended_at: ended_secs_ago.map(|s| now - time::Duration::seconds(s)),
            duration_seconds: 1.0,
            segments: 1,
            bytes: 1,
            renditions: vec![],
        }
    }

    #[test]
    fn only_finished_recordings_past_their_retention_expire() {
        let now = OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3600);
        assert!(expired(
            &info(RecordingStatus::Ready, Some(3601)),
            now,
            hour
        ));
        assert!(!expired(
            &info(RecordingStatus::Ready, Some(3500)),
            now,
            hour
        ));
        assert!(!expired(
            &info(RecordingStatus::Recording, Some(9999)),
            now,
            hour
        ));
        assert!(!expired(&info(RecordingStatus::Recording, None), now, hour));
    }

    #[test]
    fn fresh_or_indexed_local_folders_are_no_orphans() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/1")).unwrap();
        std::fs::create_dir_all(root.path().join("not a path/2")).unwrap();
        assert!(
            local_orphans(root.path(), &HashSet::new()).is_empty(),
            "too fresh"
        );
    }
}
