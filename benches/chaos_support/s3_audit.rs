//! The chaos benchmark's S3 audit: every segment an S3 playlist lists must be in S3 by
//! the time the playlist lists it. It runs beside the fault loop (a slow S3 must not
//! hold the faults back) and checks each stream at once, every 2 s, so that a segment
//! is checked while it is still in the window; old segments are deleted on purpose,
//! `s3.delete_grace_seconds` after they leave it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::s3::{PREFIX, s3_has, s3_playlist};
use m3u8_rs::MediaPlaylist;

/// What the audit found of one listed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    There,
    /// Listed and not in S3, and still listed when asked again: lost, unless a later
    /// look finds it (then it was listed before it was uploaded).
    Missing,
    /// Missing at first, in S3 3 s later: listed before it was uploaded.
    Late,
    /// Not in S3, but no longer listed either when asked again: it left the window
    /// (and was deleted) before the audit got to it. Not counted.
    LeftFirst,
}

#[derive(Default)]
pub struct S3Audit {
    /// Per object key: seconds into the run when first listed, and the verdict.
    pub listed: HashMap<String, (u64, Verdict)>,
    /// Playlists asked for, and found.
    pub asked: u32,
    pub found: u32,
}

impl S3Audit {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.listed.values().filter(|(_, v)| *v == verdict).count()
    }

    /// The keys with `verdict`, in the order they were first listed.
    pub fn keys(&self, verdict: Verdict) -> Vec<(u64, String)> {
        let mut keys: Vec<(u64, String)> = (self.listed.iter())
            .filter(|(_, (_, v))| *v == verdict)
            .map(|(k, (t, _))| (*t, k.clone()))
            .collect();
        keys.sort();
        keys
    }
}

/// The segments `p` lists that are not `EXT-X-GAP` (a dead owner's unsaved segments,
/// never fetched by a player and never in S3).
fn listed(p: &MediaPlaylist) -> impl Iterator<Item = &str> {
    (p.segments.iter())
        .filter(|s| !s.unknown_tags.iter().any(|t| t.tag == "X-GAP"))
        .map(|s| s.uri.as_str())
}

async fn audit_stream(
    s3: &aws_sdk_s3::Client,
    name: &str,
    started: Instant,
    audit: &Arc<Mutex<S3Audit>>,
) {
    audit.lock().unwrap().asked += 1;
    let Some(p) = s3_playlist(s3, name).await else {
        return;
    };
    audit.lock().unwrap().found += 1;
    for uri in listed(&p) {
        let key = format!("{PREFIX}/{name}/source/{uri}");
        if audit.lock().unwrap().listed.contains_key(&key) {
            continue;
        }
        let t = started.elapsed().as_secs();
        let verdict = if s3_has(s3, &key).await {
            Verdict::There
        } else {
            let again = s3_playlist(s3, name).await;
            if again.is_some_and(|p| listed(&p).any(|u| u == uri)) {
                Verdict::Missing
            } else {
                Verdict::LeftFirst
            }
        };
        audit
            .lock()
            .unwrap()
            .listed
            .insert(key.clone(), (t, verdict));
        if verdict == Verdict::Missing {
            let (s3, audit) = (s3.clone(), Arc::clone(audit));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if s3_has(&s3, &key).await {
                    audit.lock().unwrap().listed.insert(key, (t, Verdict::Late));
                }
            });
        }
    }
}

/// Audits every stream's S3 source playlist every 2 s until `until`.
pub async fn audit_s3(
    s3: aws_sdk_s3::Client,
    names: Vec<String>,
    started: Instant,
    until: Instant,
    audit: Arc<Mutex<S3Audit>>,
) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let all = names.iter().map(|n| audit_stream(&s3, n, started, &audit));
        futures_util::future::join_all(all).await;
    }
}
