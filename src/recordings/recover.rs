//! Recordings whose broadcast never ended: the node died (a crash, a kill, a power cut)
//! while recording. When Kawa starts again, each of its unfinished recordings is finished
//! from its journal (`hls::recording::JOURNAL`): the VOD playlists are written and the
//! index told it is ready. The caller then queues the playlists for S3 (behind the
//! segment copies the spool kept) and sends `recording_ready`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use time::OffsetDateTime;

use super::{RecordingInfo, RecordingStatus, Recordings};
use crate::cluster::Cluster;
use crate::delivery::local::write_recording;
use crate::hls::recording::{JOURNAL, JournalEntry, Recorder, RecordingBatch};

/// A journal larger than this is not read (hours of a large ladder stay far below it).
const MAX_JOURNAL_BYTES: u64 = 256 << 20;
/// A line larger than this is no journal line.
const MAX_LINE_BYTES: usize = 1 << 20;

/// A recording finished after a restart: its index entry, and its playlists for S3.
pub struct Recovered {
    pub info: RecordingInfo,
    pub batch: RecordingBatch,
}

/// The journal's entries; lines that do not parse are skipped (a crash leaves the last
/// one cut short) and counted.
fn read_journal(path: &Path) -> std::io::Result<(Vec<JournalEntry>, usize)> {
    let file = std::fs::File::open(path)?;
    let mut reader = BufReader::new(file.take(MAX_JOURNAL_BYTES));
    let (mut entries, mut skipped) = (Vec::new(), 0);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE_BYTES {
            skipped += 1;
            reader.skip_until(b'\n')?;
            continue;
        }
        match serde_json::from_slice::<JournalEntry>(line.trim_ascii()) {
            Ok(entry) => entries.push(entry),
            Err(_) if line.trim_ascii().is_empty() => {}
            Err(_) => skipped += 1,
        }
    }
    Ok((entries, skipped))
}

/// Writes the playlists of the recording in `dir` from its journal; `None` when it has
/// no journal or recorded nothing.
fn finish_from_journal(
    dir: &Path,
) -> std::io::Result<Option<(Recorder, Vec<crate::hls::recording::RecordingOutput>)>> {
    let journal = dir.join(JOURNAL);
    if !journal.is_file() {
        return Ok(None);
    }
    let (entries, skipped) = read_journal(&journal)?;
    if skipped > 0 {
        tracing::warn!(journal = %journal.display(), skipped, "journal lines skipped");
    }
    let (recorder, master) = Recorder::replay(entries);
    if recorder.is_empty() {
        return Ok(None);
    }
    let outputs = recorder.finish(master);
    for output in &outputs {
        write_recording(dir, dir, output)?;
    }
    Ok(Some((recorder, outputs)))
}

impl Recordings {
    /// Finishes the recordings that were still going when this node stopped: those
    /// whose journal is on its disk (a cluster node gets a new id every start, so the
    /// files, not the id, say whose they are). Call at start-up, before any stream is
    /// published: no session survives a restart, so none of them is still going here.
    /// In a cluster, a recording whose path another node holds now goes on there (the
    /// new owner continues it) and is left alone.
    pub async fn finish_interrupted(&self, cluster: Option<&Cluster>) -> Vec<Recovered> {
        let unfinished = match self.list().await {
            Ok(all) => all
                .into_iter()
                .filter(|r| r.status == RecordingStatus::Recording)
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for interrupted recordings");
                return Vec::new();
            }
        };
        let mut recovered = Vec::new();
        for info in unfinished {
            let dir = RecordingInfo::local_dir(&self.root, &info.publish_path, info.id);
            if !dir.join(JOURNAL).is_file() {
                // Another node's.
                continue;
            }
            if let Some(cluster) = cluster {
                match cluster.holder(info.publish_path.as_str()).await {
                    Ok(None) => {}
                    Ok(Some(_)) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot tell whether an interrupted recording goes on elsewhere; left for the next start");
                        continue;
                    }
                }
            }
            let finished = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || finish_from_journal(&dir)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            let (recorder, outputs) = match finished {
                Ok(Some(done)) => done,
                // Another node's, or nothing was kept: not for this node to finish.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(publish_path = %info.publish_path, recording = info.id, error = %e, "interrupted recording not finished");
                    continue;
                }
            };
            let summary = recorder.summary();
            let info = RecordingInfo {
                status: RecordingStatus::Ready,
                ended_at: Some(recorder.ended_at().unwrap_or_else(OffsetDateTime::now_utc)),
                duration_seconds: summary.duration_seconds,
                segments: summary.segments,
                bytes: summary.bytes,
                renditions: summary.renditions,
                ..info
            };
            if let Err(e) = self.put(&info).await {
                tracing::error!(publish_path = %info.publish_path, recording = info.id, error = %e, "interrupted recording not marked ready");
                continue;
            }
            tracing::info!(
                publish_path = %info.publish_path,
                recording = info.id,
                seconds = info.duration_seconds,
                "recording finished after a restart: its broadcast was interrupted"
            );
            if let Some(cluster) = cluster {
                let _ = cluster
                    .drop_journal(info.publish_path.as_str(), info.id)
                    .await;
            }
            recovered.push(Recovered {
                batch: RecordingBatch {
                    id: info.id,
                    outputs,
                },
                info,
            });
        }
        recovered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_short_journal_still_finishes_what_it_lists() {
        let dir = tempfile::tempdir().unwrap();
        let segment = |seq: u32| {
            serde_json::to_string(&JournalEntry::Segment {
                rendition: "source".into(),
                uri: format!("5_{seq}.m4s"),
                map: "5_0.mp4".into(),
                duration: 2.0,
                discontinuity: false,
                program_date_time: None,
                bytes: 10,
                independent: true,
            })
            .unwrap()
        };
        let init = serde_json::to_string(&JournalEntry::Init {
            rendition: "source".into(),
            name: "5_0.mp4".into(),
            bytes: 5,
        })
        .unwrap();
        let text = format!(
            "{init}\n{}\nnot json\n{}\n{}",
            segment(0),
            segment(1),
            &segment(2)[..20]
        );
        std::fs::write(dir.path().join(JOURNAL), text).unwrap();
        let (recorder, outputs) = finish_from_journal(dir.path()).unwrap().unwrap();
        assert_eq!(recorder.summary().segments, 2);
        assert_eq!(recorder.summary().bytes, 25);
        assert_eq!(outputs.len(), 1, "no master was written down: {outputs:?}");
        let playlist = std::fs::read_to_string(dir.path().join("source/index.m3u8")).unwrap();
        assert!(playlist.contains("5_1.m4s\n#EXT-X-ENDLIST"), "{playlist}");
    }

    #[test]
    fn no_journal_is_nothing_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        assert!(finish_from_journal(dir.path()).unwrap().is_none());
    }
}
