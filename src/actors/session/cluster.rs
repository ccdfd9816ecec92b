//! A session in a cluster: it owns its path through a lease in Redis, taken before its
//! first frame and renewed while it lives; it continues the playlists the path's
//! previous owner left (fetching their segments), saves their state after every new
//! segment, and stops writing the moment another node takes the path over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use super::super::uploader::Deliver;
use super::{LeaseLost, StreamSession};
use crate::cluster::parts::Replicator;
use crate::cluster::restore::{Sources, fetch, keep_present};
use crate::cluster::{Acquired, Cluster, ClusterError, Lease};
use crate::hls::packager::Output;
use crate::hls::resume::PathState;

/// What a claim found to go on from.
struct Continued {
    state: Option<PathState>,
    /// Segments listed as gaps.
    dropped: usize,
    /// Segments made again from the predecessor's parts in Redis, for S3.
    rebuilt: Vec<Output>,
}

/// Where a claim's time went (its viewers wait for all of it).
struct ClaimTimes {
    lease: Duration,
    /// Loading the path's state.
    state: Duration,
    /// Finding the predecessor's files (data dir, S3).
    finding: Duration,
    total: Duration,
}

/// How often a publish waiting for a lease to lapse asks again.
const RETRY: Duration = Duration::from_millis(250);

/// The path's lease and the task that saves its playlist state.
pub(super) struct Ownership {
    pub cluster: Arc<Cluster>,
    pub lease: Lease,
    /// The newest state; the saver writes the latest one, in order.
    pub state: watch::Sender<Option<PathState>>,
    /// When Redis last renewed the lease: the outage bound counts from here.
    pub renewed: Instant,
    /// A renewal failed since (logged once).
    pub failing: bool,
    /// Keeps the newest parts in Redis (`cluster.replicate_parts`).
    pub parts: Option<Replicator>,
}

#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error("node {0} publishes this path now (rtmp.takeover is off)")]
    HeldByLiveNode(String),
    #[error("the path's lease could not be taken in time: {0}")]
    Unavailable(ClusterError),
}

/// Takes `path`'s lease: from anybody with `force` (a publisher that moved here wins, and
/// the old owner is fenced); otherwise once nobody holds it. An owner that is alive keeps
/// renewing its lease, a dead one's lapses within `cluster.lease_ms`: so without `force`
/// this waits that long (and a renewal more) before it takes the holder for alive.
async fn take_lease(cluster: &Cluster, path: &str, force: bool) -> Result<Lease, ClaimError> {
    let deadline = Instant::now() + cluster.lease_ttl() + cluster.renew_every();
    loop {
        let error = match cluster.acquire(path, force).await {
            Ok(Acquired::Taken(lease)) => return Ok(lease),
            Ok(Acquired::HeldBy(holder)) => ClaimError::HeldByLiveNode(holder.node),
            Err(e) => ClaimError::Unavailable(e),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(RETRY).await;
    }
}

impl StreamSession {
    /// Claims the path before any frame is handled (`ctx.wait` holds the mailbox).
    pub(super) fn claim(&mut self, cluster: Arc<Cluster>, ctx: &mut Context<Self>) {
        let path = self.path.as_str().to_owned();
        let force = self.context.settings.rtmp.takeover;
        let local = self.context.hls_root.join(&path);
        let deliveries = Arc::clone(&self.context.deliveries);
        let claim = async move {
            let began = Instant::now();
            let lease = take_lease(&cluster, &path, force).await?;
            let leased = began.elapsed();
            let mut state = match cluster.load_state(&path).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %e, "the path's previous playlists cannot be continued");
                    None
                }
            };
            let loaded = began.elapsed();
            let (mut dropped, mut rebuilt, mut finding) = (0, Vec::new(), Duration::ZERO);
            if let Some(state) = state.as_mut() {
                let sources = Sources {
                    local: local.clone(),
                    s3: deliveries.target().map(|t| (t, path.as_str())),
                    cluster: Some((&cluster, path.as_str())),
                };
                let restored = keep_present(state, &sources).await;
                dropped = restored.dropped;
                rebuilt = restored.rebuilt;
                finding = restored.finding;
                if !restored.to_fetch.is_empty() {
                    // Copies for this node's viewers, after the claim: until one lands,
                    // HTTP passes it on from S3.
                    let path = path.clone();
                    tokio::spawn(async move {
                        let sources = Sources {
                            local,
                            s3: deliveries.target().map(|t| (t, path.as_str())),
                            cluster: None,
                        };
                        fetch(restored.to_fetch, sources).await;
                    });
                }
            }
            let took = ClaimTimes {
                lease: leased,
                state: loaded - leased,
                finding,
                total: began.elapsed(),
            };
            let restored = Continued {
                state,
                dropped,
                rebuilt,
            };
            Ok::<_, ClaimError>((cluster, lease, restored, took))
        };
        ctx.wait(claim.into_actor(self).map(|result, this, ctx| match result {
            Ok((cluster, lease, restored, took)) => this.owned(cluster, lease, restored, took, ctx),
            Err(e) => {
                tracing::warn!(parent: &this.span, error = %e, "publish refused: the path is not ours");
                this.fenced = true;
                this.end_now(ctx);
            }
        }));
    }

    fn owned(
        &mut self,
        cluster: Arc<Cluster>,
        lease: Lease,
        restored: Continued,
        took: ClaimTimes,
        ctx: &mut Context<Self>,
    ) {
        let Continued {
            state,
            dropped,
            rebuilt,
        } = restored;
        // A takeover's viewers wait for all of the claim: the log says where it went.
        tracing::info!(
            parent: &self.span,
            token = lease.token,
            node = cluster.node_id(),
            lease_ms = took.lease.as_millis() as u64,
            state_ms = took.state.as_millis() as u64,
            find_ms = took.finding.as_millis() as u64,
            claim_ms = took.total.as_millis() as u64,
            "owns the path"
        );
        if let Some(state) = state {
            let next: Vec<(String, u64)> = state
                .renditions
                .iter()
                .map(|r| (r.name.clone(), r.next_msn()))
                .collect();
            tracing::info!(parent: &self.span, ?next, missing_segments = dropped, rebuilt_segments = rebuilt.len(), "continuing the path's playlists");
            self.resumed_recording = state.recording;
            self.checkpoint.state = Some(state.clone());
            self.core.packager.resume(state);
        }
        if let (Some(uploader), false) = (&self.uploader, rebuilt.is_empty()) {
            // Before this session's first playlist: S3 lists them too.
            uploader.do_send(Deliver {
                outputs: rebuilt,
                fence: Some(lease.token),
                recording: None,
            });
        }
        let (state, saves) = watch::channel(None);
        spawn_saver(Arc::clone(&cluster), lease.clone(), saves, ctx.address());
        let parts = (cluster.replicate_parts()).then(|| {
            let uploaded = self.context.deliveries.target().is_some();
            Replicator::spawn(
                Arc::clone(&cluster),
                self.path.as_str().to_owned(),
                uploaded,
            )
        });
        self.ownership = Some(Ownership {
            cluster,
            lease,
            state,
            renewed: Instant::now(),
            failing: false,
            parts,
        });
        let every = self.ownership.as_ref().map(|o| o.cluster.renew_every());
        if let Some(every) = every {
            ctx.run_interval(every, |this, ctx| this.renew(ctx));
        }
        self.decide_recording(ctx);
    }

    /// Renews the lease. While Redis cannot be reached the stream goes on (segments and
    /// playlists still reach S3, fenced by conditional writes) for at most
    /// `cluster.redis_outage_ms` after the last renewal; then this node gives it up.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(o) = &self.ownership else { return };
        let (cluster, lease) = (Arc::clone(&o.cluster), o.lease.clone());
        // A frozen Redis answers nothing: a renewal that takes longer than the period
        // between renewals counts as failed.
        let limit = cluster.renew_every();
        let renew = async move {
            match tokio::time::timeout(limit, cluster.renew(&lease)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer from Redis in {limit:?}")),
            }
        };
        ctx.spawn(renew.into_actor(self).map(|result, this, ctx| match result {
            Ok(true) => {
                let span = &this.span;
                if let Some(o) = this.ownership.as_mut() {
                    if std::mem::take(&mut o.failing) {
                        tracing::info!(parent: span, after = ?o.renewed.elapsed(), "the path's lease is renewed again");
                    }
                    o.renewed = Instant::now();
                }
            }
            Ok(false) => this.lease_lost(ctx),
            Err(e) => {
                let span = this.span.clone();
                let Some(o) = this.ownership.as_mut() else { return };
                let (since, bound) = (o.renewed.elapsed(), o.cluster.redis_outage());
                if since > bound {
                    tracing::error!(parent: &span, error = %e, ?bound, "Redis unreachable for longer than cluster.redis_outage_ms; giving the stream up");
                    this.lease_lost(ctx);
                } else if !std::mem::replace(&mut o.failing, true) {
                    tracing::warn!(parent: &span, error = %e, ?bound, "cannot renew the path's lease; the stream goes on for at most cluster.redis_outage_ms");
                }
            }
        }));
    }

    /// Another node owns the path now: this one writes nothing more and lets go of its
    /// publisher (whose encoder, if it still reaches us, should not be split in two).
    pub(super) fn lease_lost(&mut self, ctx: &mut Context<Self>) {
        if self.ownership.take().is_none() {
            return;
        }
        tracing::warn!(parent: &self.span, "another node took this path over; this node stops writing it");
        self.fenced = true;
        // Viewers asking this node from now on are sent to the new owner.
        self.context.live.close(self.path.as_str(), &self.edge);
        self.end_now(ctx);
    }

    /// Keeps the playlists' state after new segments: the checkpoint a restart goes
    /// on from, and in a cluster the path's state in Redis (the saver coalesces).
    pub(super) fn save_state(&mut self) {
        let mut state = self.core.packager.snapshot();
        state.recording = self.recording_id();
        if let Some(o) = &self.ownership {
            o.state.send_replace(Some(state.clone()));
        }
        self.checkpoint.state = Some(state);
    }

    /// The stream ended here: the path is free for the next publish, on any node.
    pub(super) fn release(&mut self) {
        if let Some(o) = self.ownership.take() {
            let state = o.state.borrow().clone();
            tokio::spawn(async move {
                // The last state (ENDLIST written) first: the next owner goes on from it.
                if let Some(state) = state {
                    let _ = o.cluster.save_state(&o.lease, &state).await;
                }
                if let Err(e) = o.cluster.release(&o.lease).await {
                    tracing::warn!(error = %e, "cannot release the path's lease; it lapses");
                }
            });
        }
    }
}

/// Writes each newest state in turn; tells the session when the lease was lost.
fn spawn_saver(
    cluster: Arc<Cluster>,
    lease: Lease,
    mut saves: watch::Receiver<Option<PathState>>,
    session: Addr<StreamSession>,
) {
    tokio::spawn(async move {
        let mut failing = false;
        while saves.changed().await.is_ok() {
            let Some(state) = saves.borrow_and_update().clone() else {
                continue;
            };
            match cluster.save_state(&lease, &state).await {
                Ok(true) => failing = false,
                Ok(false) => {
                    session.do_send(LeaseLost);
                    return;
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot save the path's playlist state");
                }
                Err(_) => {}
            }
        }
    });
}
