//! Transcoder workers in Redis: each `kawa transcoder` announces its gRPC address and
//! how many encodes it runs, every renewal; a node picks the least loaded live one.
//!
//! `kawa:workers` is a sorted set of worker ids scored by when their announcement
//! lapses (ms since the epoch); `kawa:worker:{id}` holds the JSON [`WorkerInfo`].

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, redis_error};

const WORKERS: &str = "kawa:workers";
/// More live workers than this are not looked at (the least loaded of the first ones).
const MAX_LISTED: isize = 256;

fn worker_key(id: &str) -> String {
    format!("kawa:worker:{id}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// The worker's gRPC endpoint, e.g. `http://10.0.0.7:50052`.
    pub url: String,
    /// Encodes running now.
    pub jobs: u32,
}

/// The least loaded of `workers` whose address is not in `avoid` (ties: the first). By
/// address, not id: a worker started again under the same id listens somewhere new.
pub fn least_loaded<'a>(workers: &'a [WorkerInfo], avoid: &[String]) -> Option<&'a WorkerInfo> {
    workers
        .iter()
        .filter(|w| !avoid.contains(&w.url))
        .min_by_key(|w| w.jobs)
}

impl Cluster {
    /// Announces a worker (call every [`Cluster::renew_every`]).
    pub async fn announce_worker(&self, info: &WorkerInfo) -> Result<(), ClusterError> {
        let ttl = self.renew_every() * super::HEARTBEATS_KEPT;
        let json = serde_json::to_string(info).unwrap_or_default();
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .pset_ex(worker_key(&info.id), json, ttl.as_millis() as u64)
            .zadd(WORKERS, &info.id, now_ms() + ttl.as_millis() as u64)
            .zrembyscore(WORKERS, 0, now_ms())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// The workers alive now.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, ClusterError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn
            .zrangebyscore_limit(WORKERS, now_ms(), "+inf", 0, MAX_LISTED)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| worker_key(id)).collect();
        let infos: Vec<Option<String>> = conn.mget(keys).await.map_err(redis_error)?;
        Ok(infos
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_loaded_worker_it_was_not_told_to_avoid() {
        let w = |id: &str, jobs| WorkerInfo {
            id: id.into(),
            url: format!("http://{id}"),
            jobs,
        };
        let workers = [w("a", 3), w("b", 1), w("c", 1)];
        assert_eq!(least_loaded(&workers, &[]).unwrap().id, "b");
        assert_eq!(
            least_loaded(&workers, &["http://b".into()]).unwrap().id,
            "c"
        );
        let all = ["http://a".into(), "http://b".into(), "http://c".into()];
        assert!(least_loaded(&workers, &all).is_none());
    }
}
