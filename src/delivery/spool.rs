//! A durable, ordered queue of uploads for one stream and sink, in a folder of the data
//! directory. Every upload is written here before it is queued, so neither a store
//! outage nor a SIGKILL loses one; memory holds only the index, never the bodies.
//!
//! Each item is two files: `{seq}.body`, then `{seq}.meta` (JSON). The meta file is
//! written last and renamed into place, so an item exists exactly when its meta does.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::media::chunks::Chunks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Segment,
    Playlist,
    Master,
    Thumbnail,
    Delete,
    /// A server-side copy to `key` of the stream's object named by the body (a recording
    /// keeping a segment).
    Copy,
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    pub kind: ItemKind,
    /// Object key, relative to the stream (`source/index.m3u8`).
    pub key: String,
    /// Unix milliseconds before which the item must not run (delayed deletes).
    #[serde(default)]
    pub not_before_ms: u64,
    /// In a cluster, the path's lease token when the item was made: a playlist is put
    /// only while that token is the newest (a replaced owner's late writes are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub meta: ItemMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

pub struct Spool {
    dir: PathBuf,
    /// Uploads (segments, playlists), strictly in order.
    puts: VecDeque<Item>,
    /// Deletes, in order of their due time.
    deletes: VecDeque<Item>,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) the folder and loads every item left by an earlier run.
    pub fn open(dir: PathBuf) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut items = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".meta"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let text = std::fs::read(&path).map_err(io_err(&path))?;
            match serde_json::from_slice::<ItemMeta>(&text) {
                Ok(meta) => items.push(Item { seq, meta }),
                Err(e) => {
                    // A damaged entry cannot be retried; keep the rest moving.
                    tracing::error!(path = %path.display(), error = %e, "dropping unreadable spool entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        items.sort_by_key(|i| i.seq);
        let next_seq = items.last().map_or(0, |i| i.seq + 1);
        let (deletes, puts) = items
            .into_iter()
            .partition(|i| i.meta.kind == ItemKind::Delete);
        Ok(Self {
            dir,
            puts,
            deletes,
            next_seq,
        })
    }

    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn body_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.body"))
    }

    fn meta_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.meta"))
    }

    /// Stores an item durably and queues it.
    pub fn push(&mut self, meta: ItemMeta, body: &Chunks) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if meta.kind != ItemKind::Delete {
            let body_path = self.body_path(seq);
            super::local::write_pieces(&body_path, body.pieces()).map_err(io_err(&body_path))?;
        }
        let meta_path = self.meta_path(seq);
        let tmp = self.dir.join(format!("{seq:016}.meta.tmp"));
        let json = serde_json::to_vec(&meta).expect("ItemMeta always serializes");
        std::fs::write(&tmp, json).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &meta_path).map_err(io_err(&meta_path))?;
        let item = Item { seq, meta };
        if item.meta.kind == ItemKind::Delete {
            self.deletes.push_back(item);
        } else {
            self.puts.push_back(item);
        }
        Ok(())
    }

    /// The next item to run at `now_ms`: a due delete first (unless an upload queued
    /// before it is still waiting: a recording's copy of a segment goes before the
    /// segment's delete), else the oldest upload that is due.
    /// A playlist with a newer version queued behind it is skipped (and removed): the
    /// newer one lists everything it did, and comes after the same segments. A deferred
    /// playlist (one that could not be fenced yet) keeps its place but lets later items
    /// pass until it is due, so it never holds segments back.
    pub fn next(&mut self, now_ms: u64) -> Option<Item> {
        if self.deletes.front().is_some_and(|d| {
            d.meta.not_before_ms <= now_ms && self.puts.front().is_none_or(|p| p.seq > d.seq)
        }) {
            return self.deletes.front().cloned();
        }
        let mut i = 0;
        while let Some(item) = self.puts.get(i) {
            let superseded = self.superseded(i);
            if superseded {
                let item = item.clone();
                self.complete(&item);
                continue;
            }
            if item.meta.not_before_ms > now_ms {
                i += 1;
                continue;
            }
            return Some(item.clone());
        }
        None
    }

    /// Whether the playlist at `i` in the queue can be skipped: a newer version of it is
    /// queued with nothing it waits for in between (no segment of its rendition). When
    /// uploads fall behind, a newer version always waits behind new segments; skipping
    /// to it then would keep the bucket's playlist frozen for as long as the backlog
    /// lasts (the chaos benchmark saw none in 380 looks), where uploading the older one
    /// moves it on.
    fn superseded(&self, i: usize) -> bool {
        let item = &self.puts[i];
        if !matches!(item.meta.kind, ItemKind::Playlist | ItemKind::Master) {
            return false;
        }
        let dir = item.meta.key.rsplit_once('/').map_or("", |(d, _)| d);
        for later in self.puts.iter().skip(i + 1) {
            if later.meta.key == item.meta.key {
                return true;
            }
            let same_dir = later.meta.key.rsplit_once('/').map_or("", |(d, _)| d) == dir;
            if item.meta.kind == ItemKind::Playlist
                && same_dir
                && !matches!(later.meta.kind, ItemKind::Playlist | ItemKind::Master)
            {
                return false;
            }
        }
        false
    }

    /// Holds a queued upload back until `until_ms` (later items pass it meanwhile). In
    /// memory only: after a restart it is due at once.
    pub fn defer(&mut self, item: &Item, until_ms: u64) {
        if let Some(queued) = self.puts.iter_mut().find(|i| i.seq == item.seq) {
            queued.meta.not_before_ms = until_ms;
        }
    }

    pub fn body(&self, item: &Item) -> Result<Vec<u8>, SpoolError> {
        let path = self.body_path(item.seq);
        std::fs::read(&path).map_err(io_err(&path))
    }

    /// The item is done: forget it, on disk too.
    pub fn complete(&mut self, item: &Item) {
        let queue = if item.meta.kind == ItemKind::Delete {
            &mut self.deletes
        } else {
            &mut self.puts
        };
        queue.retain(|i| i.seq != item.seq);
        let _ = std::fs::remove_file(self.meta_path(item.seq));
        let _ = std::fs::remove_file(self.body_path(item.seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> Chunks {
        bytes.to_vec().into()
    }

    fn meta(kind: ItemKind, key: &str) -> ItemMeta {
        ItemMeta {
            kind,
            key: key.into(),
            not_before_ms: 0,
            fence: None,
        }
    }

    #[test]
    fn items_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().join("s")).unwrap();
        spool
            .push(meta(ItemKind::Segment, "source/1.ts"), &body(b"seg"))
            .unwrap();
        spool
            .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"pl"))
            .unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path().join("s")).unwrap();
        let first = spool.next(0).unwrap();
        assert_eq!(first.meta.key, "source/1.ts");
        assert_eq!(spool.body(&first).unwrap(), b"seg");
        spool.complete(&first);
        assert_eq!(spool.next(0).unwrap().meta.key, "source/index.m3u8");
        spool
            .push(meta(ItemKind::Segment, "source/2.ts"), &body(b"x"))
            .unwrap();
        drop(spool);
        let spool = Spool::open(dir.path().join("s")).unwrap();
        assert_eq!(spool.len(), 2, "the completed item stays gone");
    }

    #[test]
    fn an_older_playlist_is_skipped_for_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned()).unwrap();
        spool
            .push(meta(ItemKind::Segment, "source/1.ts"), &body(b"1"))
            .unwrap();
        spool
            .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"v1"))
            .unwrap();
        // Another rendition's items between two versions do not hold the newer back.
        spool
            .push(meta(ItemKind::Segment, "360p/1.ts"), &body(b"2"))
            .unwrap();
        spool
            .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"v2"))
            .unwrap();
        let order: Vec<String> = std::iter::from_fn(|| {
            let item = spool.next(0)?;
            spool.complete(&item);
            Some(format!(
                "{} {}",
                item.meta.key,
                String::from_utf8(spool_body_hint(&item)).unwrap()
            ))
        })
        .collect();
        assert_eq!(
            order,
            ["source/1.ts 0", "360p/1.ts 2", "source/index.m3u8 3"]
        );
    }

    /// Uploads behind: every newer playlist waits behind a new segment. The bucket's
    /// playlist still moves on with each segment, never frozen until the queue drains.
    #[test]
    fn a_backlog_uploads_each_playlist_once_its_segments_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned()).unwrap();
        for n in 1..=3 {
            spool
                .push(
                    meta(ItemKind::Segment, &format!("source/{n}.m4s")),
                    &Chunks::from(b"s".to_vec()),
                )
                .unwrap();
            spool
                .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"p"))
                .unwrap();
        }
        let order: Vec<u64> = std::iter::from_fn(|| {
            let item = spool.next(0)?;
            spool.complete(&item);
            Some(item.seq)
        })
        .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    }

    fn spool_body_hint(item: &Item) -> Vec<u8> {
        item.seq.to_string().into_bytes()
    }

    #[test]
    fn a_deferred_playlist_lets_segments_pass_and_a_newer_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_path_buf()).unwrap();
        spool
            .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"v1"))
            .unwrap();
        spool
            .push(meta(ItemKind::Segment, "source/2.m4s"), &body(b"s"))
            .unwrap();
        let first = spool.next(0).unwrap();
        assert_eq!(first.meta.key, "source/index.m3u8");
        spool.defer(&first, 1000);
        // The segment behind it goes first.
        let segment = spool.next(10).unwrap();
        assert_eq!(segment.meta.key, "source/2.m4s");
        spool.complete(&segment);
        assert!(
            spool.next(10).is_none(),
            "the playlist waits until it is due"
        );
        assert_eq!(spool.next(1000).unwrap().seq, first.seq);
        // A newer playlist queued behind it replaces it, due or not.
        spool
            .push(meta(ItemKind::Playlist, "source/index.m3u8"), &body(b"v2"))
            .unwrap();
        let newer = spool.next(10).unwrap();
        assert_ne!(newer.seq, first.seq);
        assert_eq!(spool.body(&newer).unwrap(), b"v2");
        assert_eq!(spool.len(), 1);
    }

    #[test]
    fn deletes_wait_for_their_time_without_blocking_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned()).unwrap();
        spool
            .push(
                ItemMeta {
                    kind: ItemKind::Delete,
                    key: "source/0.ts".into(),
                    not_before_ms: 1000,
                    fence: None,
                },
                &body(b""),
            )
            .unwrap();
        spool
            .push(meta(ItemKind::Segment, "source/9.ts"), &body(b"9"))
            .unwrap();
        assert_eq!(spool.next(500).unwrap().meta.key, "source/9.ts");
        assert_eq!(spool.next(1000).unwrap().meta.kind, ItemKind::Delete);
    }

    #[test]
    fn a_delete_never_overtakes_an_upload_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned()).unwrap();
        spool
            .push(
                meta(ItemKind::Copy, "recordings/1/source/1_0.m4s"),
                &body(b"source/1_0.m4s"),
            )
            .unwrap();
        spool
            .push(meta(ItemKind::Delete, "source/1_0.m4s"), &body(b""))
            .unwrap();
        let first = spool.next(1000).unwrap();
        assert_eq!(
            first.meta.kind,
            ItemKind::Copy,
            "the copy, though the delete is due"
        );
        spool.complete(&first);
        assert_eq!(spool.next(1000).unwrap().meta.kind, ItemKind::Delete);
    }

    #[test]
    fn an_unreadable_entry_is_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0000000000000007.meta"), b"{not json").unwrap();
        let spool = Spool::open(dir.path().to_owned()).unwrap();
        assert!(spool.is_empty());
    }
}
