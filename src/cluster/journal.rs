//! A recording's journal in Redis, in a cluster: the same lines the recording's node
//! writes beside it (`hls::recording::JournalEntry`), appended in order, so that the node
//! that takes a path over goes on with the broadcast's recording rather than starting a
//! new one. Deleted when the recording is finished.

use redis::AsyncCommands;

use super::{Cluster, ClusterError, redis_error};
use crate::hls::recording::JournalEntry;

/// Days a journal outlives its last line (a recording nobody finished).
const JOURNAL_TTL_SECONDS: i64 = 7 * 24 * 3600;
/// More lines than this is no journal Kawa wrote (a day of a 5-rendition ladder is
/// about 216,000).
const MAX_ENTRIES: usize = 2_000_000;
/// Lines read per round trip.
const PAGE: isize = 10_000;
/// A line longer than this is no journal line.
const MAX_LINE_BYTES: usize = 64 * 1024;

fn journal_key(path: &str, id: u64) -> String {
    format!("kawa:journal:{path}:{id}")
}

impl Cluster {
    /// Appends lines to the journal of `path`'s recording `id`.
    pub async fn append_journal(
        &self,
        path: &str,
        id: u64,
        entries: &[JournalEntry],
    ) -> Result<(), ClusterError> {
        if entries.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = entries
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .collect();
        let key = journal_key(path, id);
        let mut conn = self.conn().await?;
        redis::pipe()
            .rpush(&key, lines)
            .ignore()
            .expire(&key, JOURNAL_TTL_SECONDS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// The journal of `path`'s recording `id`, checked line by line (lines that are not
    /// sound are left out and counted).
    pub async fn load_journal(
        &self,
        path: &str,
        id: u64,
    ) -> Result<(Vec<JournalEntry>, usize), ClusterError> {
        let key = journal_key(path, id);
        let mut conn = self.conn().await?;
        let len: usize = conn.llen(&key).await.map_err(redis_error)?;
        if len > MAX_ENTRIES {
            return Err(ClusterError::Answer(
                "a journal longer than any Kawa writes",
            ));
        }
        let (mut entries, mut skipped) = (Vec::with_capacity(len), 0);
        let mut start = 0isize;
        while (start as usize) < len {
            let lines: Vec<Vec<u8>> = conn
                .lrange(&key, start, start + PAGE - 1)
                .await
                .map_err(redis_error)?;
            if lines.is_empty() {
                break;
            }
            start += lines.len() as isize;
            for line in lines {
                match (line.len() <= MAX_LINE_BYTES)
                    .then(|| serde_json::from_slice::<JournalEntry>(&line).ok())
                    .flatten()
                    .filter(JournalEntry::is_sound)
                {
                    Some(entry) => entries.push(entry),
                    None => skipped += 1,
                }
            }
        }
        Ok((entries, skipped))
    }

    /// The recording is finished: its journal goes.
    pub async fn drop_journal(&self, path: &str, id: u64) -> Result<(), ClusterError> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(journal_key(path, id))
            .await
            .map_err(redis_error)
    }
}
