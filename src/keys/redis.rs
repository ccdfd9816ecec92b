//! The Redis key store (deadpool-redis), for deployments where several Kawa nodes share keys.
//!
//! Layout, all under `kawa:`: `stream:{path}` holds the JSON record, `key:{sha256 hex}` the
//! path a key belongs to, and the set `streams` every path. Changes that touch more than
//! one of them run as Lua scripts, so a crash between two writes cannot leave a key that
//! resolves to a deleted stream.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::Script;
use time::OffsetDateTime;

use super::{KeyHash, KeyStore, PublishPath, StoreError, StreamRecord};
use crate::recordings::{RecordingIndex, RecordingInfo};

const STREAMS_SET: &str = "kawa:streams";
/// Hash: `{path}/{id}` -> JSON `RecordingInfo`.
const RECORDINGS_HASH: &str = "kawa:recordings";

fn stream_key(path: &PublishPath) -> String {
    format!("kawa:stream:{path}")
}

fn key_index(hash: KeyHash) -> String {
    format!("kawa:key:{}", hash.to_hex())
}

/// KEYS: stream, key index, set. ARGV: record JSON, path. 1 = stored, 0 = taken.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('SET', KEYS[2], ARGV[2])
        redis.call('SADD', KEYS[3], ARGV[2])
        return 1
        "#,
    )
});

/// KEYS: stream. ARGV: new hash, rotated-at, path. Returns the new record JSON, or false.
static REPLACE_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local old = redis.call('GET', KEYS[1])
        if not old then return false end
        local record = cjson.decode(old)
        redis.call('DEL', 'kawa:key:' .. record.key_hash)
        record.key_hash = ARGV[1]
        record.key_rotated_at = ARGV[2]
        local encoded = cjson.encode(record)
        redis.call('SET', KEYS[1], encoded)
        redis.call('SET', 'kawa:key:' .. ARGV[1], ARGV[3])
        return encoded
        "#,
    )
});

/// KEYS: stream. ARGV: "true", "false" or "" (unset). Returns the new record JSON, or
/// false.
static SET_RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local old = redis.call('GET', KEYS[1])
        if not old then return false end
        local record = cjson.decode(old)
        if ARGV[1] == '' then record.record = nil else record.record = (ARGV[1] == 'true') end
        local encoded = cjson.encode(record)
        redis.call('SET', KEYS[1], encoded)
        return encoded
        "#,
    )
});

/// KEYS: stream, set. ARGV: path. 1 = removed, 0 = not found.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local old = redis.call('GET', KEYS[1])
        if not old then return 0 end
        local record = cjson.decode(old)
        redis.call('DEL', 'kawa:key:' .. record.key_hash, KEYS[1])
        redis.call('SREM', KEYS[2], ARGV[1])
        return 1
        "#,
    )
});

/// A connection pool to `url` where every wait, connect and check takes at most
/// `timeout`. No connection is made until the first call. The URL may carry a
/// password: the error describes the failure, never the URL.
pub fn pool(url: &str, timeout: Duration) -> Result<Pool, deadpool_redis::CreatePoolError> {
    let mut config = Config::from_url(url);
    config.pool = Some(PoolConfig {
        max_size: 16,
        timeouts: Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        },
        ..PoolConfig::default()
    });
    let pool = config.create_pool(Some(Runtime::Tokio1))?;
    crate::metrics::register_redis_pool(&pool);
    Ok(pool)
}

pub struct RedisStore {
    pool: Pool,
}

impl RedisStore {
    /// Builds the pool; no connection is made until the first call, so Kawa starts (and
    /// reports not-ready) while Redis is still down.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let pool =
            pool(url, timeout).map_err(|e| StoreError::Unavailable(format!("redis pool: {e}")))?;
        Ok(Self { pool })
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn decode(json: &str) -> Result<StreamRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn insert(&self, record: &StreamRecord) -> Result<(), StoreError> {
        let hash = KeyHash::from_hex(&record.key_hash)
            .ok_or_else(|| StoreError::Corrupt("bad key hash".into()))?;
        let json = serde_json::to_string(record).expect("a StreamRecord always serializes");
        let mut conn = self.conn().await?;
        let stored: i64 = INSERT
            .key(stream_key(&record.publish_path))
            .key(key_index(hash))
            .key(STREAMS_SET)
            .arg(json)
            .arg(record.publish_path.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(record.publish_path.clone()))
        }
    }

    async fn get(&self, path: &PublishPath) -> Result<Option<StreamRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let json: Option<String> = redis::cmd("GET")
            .arg(stream_key(path))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        json.as_deref().map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<StreamRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut paths: Vec<String> = redis::cmd("SMEMBERS")
            .arg(STREAMS_SET)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        paths.sort();
        let keys: Vec<String> = paths
            .iter()
            .filter_map(|p| PublishPath::parse(p).ok())
            .map(|p| stream_key(&p))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        values.iter().flatten().map(|json| decode(json)).collect()
    }

    async fn replace_key(
        &self,
        path: &PublishPath,
        new_hash: KeyHash,
        at: OffsetDateTime,
    ) -> Result<StreamRecord, StoreError> {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn().await?;
        let json: Option<String> = REPLACE_KEY
            .key(stream_key(path))
            .arg(new_hash.to_hex())
            .arg(at)
            .arg(path.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match json {
            Some(json) => decode(&json),
            None => Err(StoreError::NotFound(path.clone())),
        }
    }

    async fn remove(&self, path: &PublishPath) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let removed: i64 = REMOVE
            .key(stream_key(path))
            .key(STREAMS_SET)
            .arg(path.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if removed == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(path.clone()))
        }
    }

    async fn set_record(
        &self,
        path: &PublishPath,
        record: Option<bool>,
    ) -> Result<StreamRecord, StoreError> {
        let mut conn = self.conn().await?;
        let json: Option<String> = SET_RECORD
            .key(stream_key(path))
            .arg(record.map_or(String::new(), |r| r.to_string()))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match json {
            Some(json) => decode(&json),
            None => Err(StoreError::NotFound(path.clone())),
        }
    }

    async fn path_for_key(&self, hash: KeyHash) -> Result<Option<PublishPath>, StoreError> {
        let mut conn = self.conn().await?;
        let path: Option<String> = redis::cmd("GET")
            .arg(key_index(hash))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        path.map(|p| {
            PublishPath::parse(&p)
                .map_err(|_| StoreError::Corrupt("bad publish path in key index".into()))
        })
        .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

#[async_trait]
impl RecordingIndex for RedisStore {
    async fn put_recording(&self, info: &RecordingInfo) -> Result<(), StoreError> {
        let json = serde_json::to_string(info).expect("a RecordingInfo always serializes");
        let mut conn = self.conn().await?;
        redis::cmd("HSET")
            .arg(RECORDINGS_HASH)
            .arg(RecordingInfo::key(&info.publish_path, info.id))
            .arg(json)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn recordings(&self) -> Result<Vec<RecordingInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(RECORDINGS_HASH)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut all = values
            .iter()
            .map(|json| RecordingInfo::from_json(json.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| (&a.publish_path, a.id).cmp(&(&b.publish_path, b.id)));
        Ok(all)
    }

    async fn recording(
        &self,
        path: &PublishPath,
        id: u64,
    ) -> Result<Option<RecordingInfo>, StoreError> {
        let mut conn = self.conn().await?;
        let json: Option<String> = redis::cmd("HGET")
            .arg(RECORDINGS_HASH)
            .arg(RecordingInfo::key(path, id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        json.map(|json| RecordingInfo::from_json(json.as_bytes()))
            .transpose()
    }

    async fn remove_recording(&self, path: &PublishPath, id: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let removed: i64 = redis::cmd("HDEL")
            .arg(RECORDINGS_HASH)
            .arg(RecordingInfo::key(path, id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
}
