//! Kawa nodes sharing one Redis: who owns each live path (a lease with a fencing token),
//! the state a new owner needs to continue its playlists, and each node's heartbeat and
//! internal address (so any node can send a viewer's request to the owner).
//!
//! No consensus of our own: a lease is `SET NX PX` with Lua checks (see [`lease`]).

mod journal;
pub mod lease;
pub mod parts;
pub mod restore;
pub mod workers;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deadpool_redis::Pool;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use lease::{
    ACQUIRE, RELEASE, RENEW, SAVE_STATE, SAVE_STORED, fence_key, lease_key, node_key, state_key,
    stored_key,
};
pub use lease::{Acquired, Holder, Lease};

use crate::config::{Secret, Settings};
use crate::hls::resume::{MAX_STATE_BYTES, PathState, StateError};

/// How long a path's playlist state outlives its last write.
const STATE_TTL_SECONDS: u64 = 24 * 3600;
/// How long a transcoder worker this node saw fail is passed over (its announcement may
/// outlive it by up to three renewals).
const FAILED_WORKER_AVOIDED: Duration = Duration::from_secs(10);
/// A node counts as alive while its heartbeat is younger than this many renewals.
const HEARTBEATS_KEPT: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("unexpected answer from redis for {0}")]
    Answer(&'static str),
    #[error("cluster.advertise_url is needed: http.addr listens on every address")]
    NoAddress,
    #[error("path state in redis: {0}")]
    State(#[from] StateError),
}

pub(crate) fn redis_error(e: impl std::fmt::Display) -> ClusterError {
    // Redis errors never carry the URL (it may hold a password).
    ClusterError::Redis(e.to_string())
}

/// What a node advertises in its heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub url: String,
}

pub struct Cluster {
    pool: Pool,
    node_id: String,
    /// Configured, or this node's HTTP address once it is bound.
    advertise_url: OnceLock<String>,
    lease_ttl: Duration,
    redis_outage: Duration,
    token: Secret,
    replicate_parts: bool,
    /// See [`parts`]: shared by every session's replicated parts.
    parts_connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Addresses of transcoder workers that failed lately, and when.
    failed_workers: Mutex<Vec<(String, Instant)>>,
}

/// `{host}-{random}`: a new id every start, so a restarted node never takes an old
/// lease of its own for a live one.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-.".contains(*c))
                .take(40)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kawa".to_owned());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!("{host}-{}", hex::encode(random))
}

impl Cluster {
    /// `None` unless `cluster.enabled`. No connection is made until the first call.
    pub fn from_settings(settings: &Settings) -> Result<Option<Arc<Self>>, ClusterError> {
        let cluster = &settings.cluster;
        if !cluster.enabled {
            return Ok(None);
        }
        let timeout = Duration::from_millis(settings.store.timeout_ms);
        let pool = crate::keys::redis::pool(settings.store.redis_url.expose(), timeout)
            .map_err(redis_error)?;
        let node_id = if cluster.node_id.is_empty() {
            default_node_id()
        } else {
            cluster.node_id.clone()
        };
        let advertise_url = OnceLock::new();
        if !cluster.advertise_url.is_empty() {
            let _ = advertise_url.set(cluster.advertise_url.trim_end_matches('/').to_owned());
        }
        Ok(Some(Arc::new(Self {
            pool,
            node_id,
            advertise_url,
            lease_ttl: Duration::from_millis(cluster.lease_ms),
            redis_outage: Duration::from_millis(cluster.redis_outage_ms),
            token: cluster.token.clone(),
            replicate_parts: cluster.replicate_parts,
            parts_connection: Mutex::new(None),
            failed_workers: Mutex::new(Vec::new()),
        })))
    }

    /// Sets the internal address from the bound HTTP address, unless one was configured;
    /// an address that listens everywhere says nothing to other nodes.
    pub fn advertise_default(&self, http: std::net::SocketAddr) -> Result<(), ClusterError> {
        if self.advertise_url.get().is_some() {
            return Ok(());
        }
        if http.ip().is_unspecified() {
            return Err(ClusterError::NoAddress);
        }
        let _ = self.advertise_url.set(format!("http://{http}"));
        Ok(())
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The shared secret of node-to-node HTTP.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Whether owners keep their newest parts in Redis (`cluster.replicate_parts`).
    pub fn replicate_parts(&self) -> bool {
        self.replicate_parts
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Passes over the worker at `worker` (its URL) for a while: it did not answer.
    pub fn worker_failed(&self, worker: &str) {
        let mut failed = self
            .failed_workers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failed.retain(|(id, at)| id != worker && at.elapsed() < FAILED_WORKER_AVOIDED);
        failed.push((worker.to_owned(), Instant::now()));
    }

    /// The addresses of the workers that failed lately.
    pub fn failed_workers(&self) -> Vec<String> {
        let failed = self
            .failed_workers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failed
            .iter()
            .filter(|(_, at)| at.elapsed() < FAILED_WORKER_AVOIDED)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How often an owner renews its leases and a node its heartbeat.
    /// How long this node goes on publishing a stream without reaching Redis
    /// (`cluster.redis_outage_ms`), counted from the last renewal that succeeded.
    pub fn redis_outage(&self) -> Duration {
        self.redis_outage
    }

    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    pub(crate) async fn conn(&self) -> Result<deadpool_redis::Connection, ClusterError> {
        self.pool.get().await.map_err(redis_error)
    }

    /// Takes `path`'s lease: when nobody holds it, or (with `force`) from whoever does.
    pub async fn acquire(&self, path: &str, force: bool) -> Result<Acquired, ClusterError> {
        let mut conn = self.conn().await?;
        let answer: String = ACQUIRE
            .key(lease_key(path))
            .key(fence_key(path))
            .arg(&self.node_id)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(if force { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        lease::acquired(path, &self.node_id, &answer).ok_or(ClusterError::Answer("acquire"))
    }

    /// Extends the lease; `false` when another node has taken the path since.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, ClusterError> {
        let mut conn = self.conn().await?;
        let kept: i64 = RENEW
            .key(lease_key(&lease.path))
            .key(fence_key(&lease.path))
            .arg(&lease.value)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(lease.token)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(kept == 1)
    }

    /// Gives the path up (the stream ended here).
    pub async fn release(&self, lease: &Lease) -> Result<(), ClusterError> {
        let mut conn = self.conn().await?;
        let _: i64 = RELEASE
            .key(lease_key(&lease.path))
            .arg(&lease.value)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Who owns `path` now, if anybody.
    pub async fn holder(&self, path: &str) -> Result<Option<Holder>, ClusterError> {
        let mut conn = self.conn().await?;
        let value: Option<String> = conn.get(lease_key(path)).await.map_err(redis_error)?;
        Ok(value.as_deref().and_then(Holder::parse))
    }

    /// Whether `token` is still the newest on `path`: nobody took the path since.
    pub async fn is_current(&self, path: &str, token: u64) -> Result<bool, ClusterError> {
        let mut conn = self.conn().await?;
        let fence: Option<u64> = conn.get(fence_key(path)).await.map_err(redis_error)?;
        Ok(fence == Some(token))
    }

    /// Stores the path's playlist state; `false` when the lease was lost (fenced).
    pub async fn save_state(&self, lease: &Lease, state: &PathState) -> Result<bool, ClusterError> {
        let mut conn = self.conn().await?;
        let stored: i64 = SAVE_STATE
            .key(fence_key(&lease.path))
            .key(state_key(&lease.path))
            .arg(lease.token)
            .arg(state.to_json())
            .arg(STATE_TTL_SECONDS)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(stored == 1)
    }

    /// The state the path's last owner left, if any.
    pub async fn load_state(&self, path: &str) -> Result<Option<PathState>, ClusterError> {
        let mut conn = self.conn().await?;
        let len: usize = conn.strlen(state_key(path)).await.map_err(redis_error)?;
        if len > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(len).into());
        }
        let bytes: Option<Vec<u8>> = conn.get(state_key(path)).await.map_err(redis_error)?;
        bytes
            .map(|b| PathState::from_json(&b).map_err(ClusterError::from))
            .transpose()
    }

    /// Notes that a playlist listing up to `segment` of `rendition` is in S3 (so all it
    /// lists is): a successor then needs no S3 request to know it. The parts of the
    /// segments it lists (`msns`) are dropped: S3 has them. `false` when fenced.
    pub async fn save_stored(
        &self,
        path: &str,
        token: u64,
        rendition: &str,
        segment: &str,
        msns: &[u64],
    ) -> Result<bool, ClusterError> {
        let mut conn = self.conn().await?;
        let mut script = SAVE_STORED.key(fence_key(path));
        script.key(stored_key(path));
        for msn in msns.iter().take(parts::MAX_PARTS) {
            script.key(parts::key(path, rendition, *msn));
        }
        let stored: i64 = script
            .arg(token)
            .arg(rendition)
            .arg(segment)
            .arg(STATE_TTL_SECONDS)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(stored == 1)
    }

    /// Per rendition, the newest segment the path's owners noted as in S3.
    pub async fn load_stored(
        &self,
        path: &str,
    ) -> Result<std::collections::HashMap<String, String>, ClusterError> {
        let mut conn = self.conn().await?;
        // A hash of one field per rendition: bounded by the renditions Kawa makes.
        let len: usize = conn.hlen(stored_key(path)).await.map_err(redis_error)?;
        if len > 64 {
            return Err(ClusterError::Answer("stored segments"));
        }
        conn.hgetall(stored_key(path)).await.map_err(redis_error)
    }

    /// Announces this node as alive, with its internal address.
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        let info = NodeInfo {
            url: self.advertise_url.get().cloned().unwrap_or_default(),
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        let ttl = (self.renew_every() * HEARTBEATS_KEPT).as_millis() as u64;
        let mut conn = self.conn().await?;
        let _: () = conn
            .pset_ex(node_key(&self.node_id), json, ttl)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// A live node's advertised information (`None`: no heartbeat, it is gone).
    pub async fn node(&self, node: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let mut conn = self.conn().await?;
        let json: Option<String> = conn.get(node_key(node)).await.map_err(redis_error)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Runs the heartbeat for as long as Kawa runs.
    pub fn spawn_heartbeat(self: &Arc<Self>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster.renew_every());
            let mut failing = false;
            loop {
                tick.tick().await;
                match cluster.heartbeat().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("cluster heartbeat works again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cluster heartbeat failed");
                    }
                    Err(_) => {}
                }
            }
        });
    }
}
