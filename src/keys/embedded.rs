//! The embedded key store: one redb file in the data directory, so `kawa serve` needs
//! nothing else installed. redb is synchronous; calls run on tokio's blocking pool, at
//! most [`BLOCKING_CALLS`] at a time.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use time::OffsetDateTime;

use super::{KeyHash, KeyStore, PublishPath, StoreError, StreamRecord};
use crate::recordings::{RecordingIndex, RecordingInfo};

/// publish path -> JSON `StreamRecord`.
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// SHA-256 of a key -> publish path.
const KEYS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("keys");
/// `{path}/{id}` -> JSON `RecordingInfo`.
const RECORDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("recordings");

/// Store calls on blocking threads at once. Each runs for microseconds, but without a
/// bound a flood of keyless callers (each key checked here) under a loaded CPU grew the
/// blocking pools to 140 threads, each holding its stack and allocator heap: 50 MB
/// spent on peers with no key. Beyond this, calls wait their turn without a thread.
const BLOCKING_CALLS: usize = 4;

pub struct EmbeddedStore {
    db: Arc<Database>,
    calls: Arc<tokio::sync::Semaphore>,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        // Create both tables up front so readers never meet a missing table.
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(STREAMS).map_err(unavailable)?;
        tx.open_table(KEYS).map_err(unavailable)?;
        tx.open_table(RECORDINGS).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            calls: Arc::new(tokio::sync::Semaphore::new(BLOCKING_CALLS)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&self.calls).acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&db)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl EmbeddedStore {
    /// Changes a stream's record in one write transaction: `change` edits it (and may
    /// change other tables in the same transaction).
    async fn update(
        &self,
        path: &PublishPath,
        change: impl FnOnce(
            &mut StreamRecord,
            &redb::WriteTransaction,
            &PublishPath,
        ) -> Result<(), StoreError>
        + Send
        + 'static,
    ) -> Result<StreamRecord, StoreError> {
        let path = path.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let record = {
                let mut streams = tx.open_table(STREAMS).map_err(unavailable)?;
                let mut record = match streams.get(path.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(StoreError::NotFound(path)),
                };
                change(&mut record, &tx, &path)?;
                streams
                    .insert(path.as_str(), encode(&record).as_slice())
                    .map_err(unavailable)?;
                record
            };
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
        .await
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<StreamRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(record: &StreamRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a StreamRecord always serializes")
}

fn hash_of(record: &StreamRecord) -> Result<KeyHash, StoreError> {
    KeyHash::from_hex(&record.key_hash)
        .ok_or_else(|| StoreError::Corrupt(format!("bad key hash for `{}`", record.publish_path)))
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn insert(&self, record: &StreamRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |db| {
            let hash = hash_of(&record)?;
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut streams = tx.open_table(STREAMS).map_err(unavailable)?;
                let path = record.publish_path.as_str();
                if streams.get(path).map_err(unavailable)?.is_some() {
                    return Err(StoreError::Conflict(record.publish_path.clone()));
                }
                streams
                    .insert(path, encode(&record).as_slice())
                    .map_err(unavailable)?;
                let mut keys = tx.open_table(KEYS).map_err(unavailable)?;
                keys.insert(hash.as_bytes(), path).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn get(&self, path: &PublishPath) -> Result<Option<StreamRecord>, StoreError> {
        let path = path.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let streams = tx.open_table(STREAMS).map_err(unavailable)?;
            let value = streams.get(path.as_str()).map_err(unavailable)?;
            value.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<StreamRecord>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let streams = tx.open_table(STREAMS).map_err(unavailable)?;
            // redb iterates in key order, which is the order the API promises.
            let mut records = Vec::new();
            for entry in streams.iter().map_err(unavailable)? {
                let (_, value) = entry.map_err(unavailable)?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
        .await
    }

    async fn replace_key(
        &self,
        path: &PublishPath,
        new_hash: KeyHash,
        at: OffsetDateTime,
    ) -> Result<StreamRecord, StoreError> {
        self.update(path, move |record, tx, path| {
            let old_hash = hash_of(record)?;
            record.key_hash = new_hash.to_hex();
            record.key_rotated_at = Some(at);
            let mut keys = tx.open_table(KEYS).map_err(unavailable)?;
            keys.remove(old_hash.as_bytes()).map_err(unavailable)?;
            keys.insert(new_hash.as_bytes(), path.as_str())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn remove(&self, path: &PublishPath) -> Result<(), StoreError> {
        let path = path.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut streams = tx.open_table(STREAMS).map_err(unavailable)?;
                let record = match streams.remove(path.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(StoreError::NotFound(path)),
                };
                let mut keys = tx.open_table(KEYS).map_err(unavailable)?;
                keys.remove(hash_of(&record)?.as_bytes())
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn set_record(
        &self,
        path: &PublishPath,
        record: Option<bool>,
    ) -> Result<StreamRecord, StoreError> {
        self.update(path, move |r, _, _| {
            r.record = record;
            Ok(())
        })
        .await
    }

    async fn path_for_key(&self, hash: KeyHash) -> Result<Option<PublishPath>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let keys = tx.open_table(KEYS).map_err(unavailable)?;
            let value = keys.get(hash.as_bytes()).map_err(unavailable)?;
            value
                .map(|v| {
                    PublishPath::parse(v.value())
                        .map_err(|_| StoreError::Corrupt("bad publish path in key index".into()))
                })
                .transpose()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(drop).map_err(unavailable))
            .await
    }
}

#[async_trait]
impl RecordingIndex for EmbeddedStore {
    async fn put_recording(&self, info: &RecordingInfo) -> Result<(), StoreError> {
        let key = RecordingInfo::key(&info.publish_path, info.id);
        let json = serde_json::to_vec(info).expect("a RecordingInfo always serializes");
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            tx.open_table(RECORDINGS)
                .map_err(unavailable)?
                .insert(key.as_str(), json.as_slice())
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn recordings(&self) -> Result<Vec<RecordingInfo>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(RECORDINGS).map_err(unavailable)?;
            let mut all = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (_, value) = entry.map_err(unavailable)?;
                all.push(RecordingInfo::from_json(value.value())?);
            }
            all.sort_by(|a, b| (&a.publish_path, a.id).cmp(&(&b.publish_path, b.id)));
            Ok(all)
        })
        .await
    }

    async fn recording(
        &self,
        path: &PublishPath,
        id: u64,
    ) -> Result<Option<RecordingInfo>, StoreError> {
        let key = RecordingInfo::key(path, id);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(RECORDINGS).map_err(unavailable)?;
            let value = table.get(key.as_str()).map_err(unavailable)?;
            value
                .map(|v| RecordingInfo::from_json(v.value()))
                .transpose()
        })
        .await
    }

    async fn remove_recording(&self, path: &PublishPath, id: u64) -> Result<bool, StoreError> {
        let key = RecordingInfo::key(path, id);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let removed = tx
                .open_table(RECORDINGS)
                .map_err(unavailable)?
                .remove(key.as_str())
                .map_err(unavailable)?
                .is_some();
            tx.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }
}
