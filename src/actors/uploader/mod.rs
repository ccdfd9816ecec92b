//! The Uploader: one per stream and sink (S3), supervised. It takes the packager's
//! outputs in order, stores each in its durable spool, and uploads them one at a time,
//! in order, retrying with exponential backoff and jitter. Because a segment is always
//! queued before the playlist that lists it, the bucket never lists a missing object;
//! because the spool is on disk, an outage or a SIGKILL loses nothing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;

use super::supervision::{ActorKind, Intensity, fault_point_in, guard, restarted};
use crate::cluster::Cluster;
use crate::delivery::fencing::{Fenced, PlaylistFences};
use crate::delivery::s3::S3Target;
use crate::delivery::spool::{Item, ItemKind, ItemMeta, Spool};
use crate::media::chunks::Chunks;
use crate::metrics::UploadMetrics;

const SINK: &str = "s3";

pub struct Uploader {
    stream: String,
    target: S3Target,
    spool_dir: PathBuf,
    spool: Option<Spool>,
    delete_grace: Option<Duration>,
    busy: bool,
    retry_scheduled: bool,
    failures_in_a_row: u32,
    metrics: Option<UploadMetrics>,
    stream_live: bool,
    cluster: Option<Arc<Cluster>>,
    /// Outputs not in the spool yet, in order: it could not be opened or written (a
    /// full disk, a removed folder). They survive the supervisor's restarts and go in
    /// first once the spool works again. Bounded by [`MAX_UNSPOOLED_BYTES`].
    unspooled: VecDeque<(ItemMeta, Chunks)>,
    unspooled_bytes: usize,
    /// Restarts against [`UPLOADER_RESTARTS`]; past it the next start is held back.
    restarts: Intensity,
    held_back: bool,
    /// The ETag chains of this path's playlists (in a cluster).
    fences: PlaylistFences,
    /// Where [`Deliveries`] lists it; it leaves when it retires.
    directory: Weak<deliveries::Directory>,
    /// The timer that runs delayed deletes; cancelled when it retires.
    ticking: Option<SpawnHandle>,
    /// The spool is being written off this thread (it is not in `spool` meanwhile).
    writing: bool,
    /// A handler panicked during a spool write: the restart waits for the write. A
    /// restart drops the write's completion and reopens the spool from disk; reopened
    /// while the write went on, it missed the items being written and gave their
    /// sequence numbers out again (the chaos benchmark saw S3 list a segment that
    /// never got there).
    stop_after_write: bool,
}

/// Restarts a minute an uploader makes at once.
const UPLOADER_RESTARTS: usize = 5;
/// How long a restart past [`UPLOADER_RESTARTS`] waits.
const RESTART_HOLD_BACK: Duration = Duration::from_secs(10);

/// Bytes held for the spool while it cannot be written; past that the oldest go.
const MAX_UNSPOOLED_BYTES: usize = 64 * 1024 * 1024;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Uploader {
    pub fn new(
        stream: String,
        target: S3Target,
        spool_dir: PathBuf,
        delete_grace: Option<Duration>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            stream,
            target,
            spool_dir,
            spool: None,
            delete_grace,
            busy: false,
            retry_scheduled: false,
            failures_in_a_row: 0,
            metrics: None,
            stream_live: true,
            cluster,
            restarts: Intensity::new(UPLOADER_RESTARTS, Duration::from_secs(60)),
            held_back: false,
            fences: PlaylistFences::default(),
            directory: Weak::new(),
            ticking: None,
            writing: false,
            stop_after_write: false,
            unspooled: VecDeque::new(),
            unspooled_bytes: 0,
        }
    }

    fn listed_in(mut self, directory: Weak<deliveries::Directory>) -> Self {
        self.directory = directory;
        self
    }

    /// The stream ended and everything is delivered (deletes included): the uploader
    /// leaves the directory and its timer stops, so it ends once the session lets go of
    /// it (an actor with no address and nothing to do stops). A new broadcast of the path
    /// gets a new uploader.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if let Some(ticking) = self.ticking.take() {
            ctx.cancel_future(ticking);
        }
        if let Some(directory) = self.directory.upgrade() {
            let mut listed = directory.lock().unwrap_or_else(|p| p.into_inner());
            if listed.get(&self.stream) == Some(&ctx.address()) {
                listed.remove(&self.stream);
            }
        }
        tracing::debug!(stream = %self.stream, "uploader retired: its stream ended and everything is delivered");
    }

    /// Puts `items` (after any held back) in the spool, off this thread; when the spool
    /// is closed they wait, and when writing fails the uploader stops so that its
    /// supervisor starts it again on a reopened spool.
    fn queue(&mut self, items: Vec<(ItemMeta, Chunks)>, ctx: &mut Context<Self>) {
        for (meta, body) in items {
            self.unspooled_bytes += body.len();
            self.unspooled.push_back((meta, body));
        }
        let mut dropped = 0;
        while self.unspooled_bytes > MAX_UNSPOOLED_BYTES {
            let Some((_, body)) = self.unspooled.pop_front() else {
                break;
            };
            self.unspooled_bytes -= body.len();
            dropped += 1;
        }
        if dropped > 0 {
            tracing::error!(stream = %self.stream, dropped, "the upload spool is unavailable for too long; oldest outputs dropped");
        }
        let Some(mut spool) = self.spool.take() else {
            return;
        };
        let batch: Vec<_> = self.unspooled.drain(..).collect();
        self.unspooled_bytes = 0;
        let stream = self.stream.clone();
        // The spool's disk writes run on the blocking pool, not on this arbiter's thread
        // (where connections and sessions run too). `wait` holds this actor's other
        // messages and tasks meanwhile, so items are queued in order and nothing sees the
        // spool while it is away.
        let write = tokio::task::spawn_blocking(move || {
            let mut items = batch.into_iter();
            let mut failed = Vec::new();
            for (meta, body) in items.by_ref() {
                if let Err(e) = spool.push(meta.clone(), &body) {
                    tracing::error!(stream = %stream, error = %e, "cannot queue an upload; reopening the spool");
                    failed.push((meta, body));
                    break;
                }
            }
            failed.extend(items);
            (spool, failed)
        });
        self.writing = true;
        ctx.wait(write.into_actor(self).map(|written, this, ctx| {
            this.writing = false;
            match written {
                Ok((spool, failed)) if failed.is_empty() && !this.stop_after_write => {
                    this.spool = Some(spool);
                    this.kick(ctx);
                }
                // A write that failed, or a panic that waited for the write: what was
                // not written waits in `unspooled`, and the restart reopens the spool.
                Ok((_, failed)) => {
                    this.unspooled_bytes += failed.iter().map(|(_, b)| b.len()).sum::<usize>();
                    for item in failed.into_iter().rev() {
                        this.unspooled.push_front(item);
                    }
                    ctx.stop();
                }
                Err(e) => {
                    tracing::error!(stream = %this.stream, error = %e, "the upload spool writer failed");
                    ctx.stop();
                }
            }
        }));
    }

    /// Delayed deletes fall due with time, not with new work.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking.is_none() {
            self.ticking = Some(ctx.run_interval(Duration::from_secs(1), |this, ctx| {
                this.guarded(ctx, "tick", Self::kick);
            }));
        }
    }

    fn metrics(&mut self) -> &UploadMetrics {
        let stream = &self.stream;
        self.metrics
            .get_or_insert_with(|| UploadMetrics::new(stream, SINK))
    }

    fn update_depth(&mut self) {
        let depth = self.spool.as_ref().map_or(0, Spool::len) + self.unspooled.len();
        if depth == 0 && !self.stream_live {
            // Drained after the stream ended: its series go away.
            self.metrics = None;
            return;
        }
        self.metrics().queue_depth.set(depth as i64);
    }

    /// Runs a handler. A panic stops the uploader, and its supervisor starts it again
    /// from the spool (nothing queued is lost: items leave the spool only once uploaded).
    fn guarded(
        &mut self,
        ctx: &mut Context<Self>,
        name: &'static str,
        handler: impl FnOnce(&mut Self, &mut Context<Self>),
    ) {
        let stream = self.stream.clone();
        let result = guard(ActorKind::Uploader, || {
            handler(self, ctx);
            // After the handler: what it queued is being written to the spool.
            fault_point_in(ActorKind::Uploader, &stream, name);
        });
        if let Err(detail) = result {
            tracing::error!(stream = %self.stream, panic = %detail, "uploader panicked; restarting it from its spool");
            if self.writing {
                self.stop_after_write = true;
            } else {
                ctx.stop();
            }
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.retry_scheduled {
            return;
        }
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let Some(item) = spool.next(now_ms()) else {
            let drained = spool.is_empty() && self.unspooled.is_empty();
            self.update_depth();
            if drained && !self.stream_live && self.ticking.is_some() {
                self.retire(ctx);
            }
            return;
        };
        let body = if item.meta.kind == ItemKind::Delete {
            Vec::new()
        } else {
            match spool.body(&item) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(stream = %self.stream, error = %e, "spool body unreadable; item dropped");
                    spool.complete(&item);
                    ctx.notify(Kick);
                    return;
                }
            }
        };
        self.update_depth();
        self.busy = true;
        let target = self.target.clone();
        let key = target.object_key(&self.stream, &item.meta.key);
        let kind = item.meta.kind;
        let fence = match (self.cluster.clone(), item.meta.fence) {
            (Some(cluster), Some(token)) if target.conditional_writes() => {
                let step = self.fences.step(&item.meta.key, token);
                Fence::Conditional(cluster, token, step)
            }
            (Some(cluster), Some(token)) => Fence::Check(cluster, token),
            _ => Fence::None,
        };
        // A media playlist in S3 is noted in Redis: a successor knows what S3 has
        // without asking it (`cluster::restore`).
        let note = match (&self.cluster, item.meta.fence, kind) {
            (Some(cluster), Some(token), ItemKind::Playlist) => {
                stored(&item.meta.key, &body).map(|note| (Arc::clone(cluster), token, note))
            }
            _ => None,
        };
        let stream = self.stream.clone();
        let upload = send(target, self.stream.clone(), key, kind, body, fence);
        let upload = async move {
            let started = Instant::now();
            let result = upload.await;
            let elapsed = started.elapsed();
            let written = matches!(
                result,
                Ok(Sent::Done | Sent::Playlist(Fenced::Written { .. }))
            );
            if let (Some((cluster, token, note)), true) = (note, written)
                && let Err(e) = cluster
                    .save_stored(&stream, token, &note.rendition, &note.newest, &note.msns)
                    .await
            {
                tracing::debug!(error = %e, "cannot note a playlist in S3 in Redis");
            }
            (result, elapsed)
        };
        ctx.spawn(
            upload
                .into_actor(self)
                .map(move |(result, elapsed), this, ctx| {
                    this.finished(item, result, elapsed, ctx);
                }),
        );
    }

    fn finished(
        &mut self,
        item: Item,
        result: Result<Sent, UploadError>,
        elapsed: Duration,
        ctx: &mut Context<Self>,
    ) {
        self.busy = false;
        match result {
            Ok(sent) => {
                match sent {
                    Sent::Playlist(fenced) => self.fence_news(&item, fenced),
                    Sent::Missing => {
                        tracing::error!(stream = %self.stream, key = %item.meta.key, "not recorded in S3: the stream's object to copy is missing");
                    }
                    Sent::Done => {}
                }
                if self.failures_in_a_row > 0 {
                    tracing::info!(stream = %self.stream, after = self.failures_in_a_row, "uploads to S3 work again");
                }
                self.failures_in_a_row = 0;
                self.metrics().seconds.observe(elapsed.as_secs_f64());
                if let Some(spool) = self.spool.as_mut() {
                    spool.complete(&item);
                }
                self.kick(ctx);
            }
            Err(UploadError::Fence(e)) => {
                // The lease cannot be checked (Redis is away): this playlist waits, and
                // the segments behind it go on (a newer playlist replaces it).
                let n = self.failures_in_a_row.max(1);
                tracing::warn!(stream = %self.stream, key = %item.meta.key, error = %e, "playlist held back: its lease cannot be checked now");
                if let Some(spool) = self.spool.as_mut() {
                    spool.defer(&item, now_ms() + backoff(n).as_millis() as u64);
                }
                self.kick(ctx);
            }
            Err(e) => {
                self.failures_in_a_row += 1;
                self.metrics().failures.inc();
                let n = self.failures_in_a_row;
                if n <= 3 || n.is_power_of_two() {
                    tracing::warn!(stream = %self.stream, key = %item.meta.key, failures = n, error = %e, "upload failed; will retry");
                }
                self.retry_scheduled = true;
                ctx.run_later(backoff(n), |this, ctx| {
                    this.retry_scheduled = false;
                    this.kick(ctx);
                });
            }
        }
    }
}

impl Uploader {
    /// What a fenced playlist put found out, for the next one.
    fn fence_news(&mut self, item: &Item, fenced: Fenced) {
        let Some(token) = item.meta.fence else { return };
        match fenced {
            Fenced::Written { etag, confirmed } => {
                if confirmed {
                    self.fences.confirmed(token);
                }
                self.fences.written(&item.meta.key, token, etag);
            }
            Fenced::Lost => {
                self.fences.lost(token);
                tracing::info!(stream = %self.stream, key = %item.meta.key, "not uploaded: another node owns this stream's playlists now");
            }
            Fenced::Dropped => {
                tracing::debug!(stream = %self.stream, key = %item.meta.key, "a replaced owner's playlist dropped");
            }
        }
    }
}

impl Actor for Uploader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::actor_alive(ActorKind::Uploader, 1);
        self.resume(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::metrics::actor_alive(ActorKind::Uploader, -1);
    }
}

impl Uploader {
    /// Opens the spool and goes on with what it holds (at start, and after a restart).
    fn resume(&mut self, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.held_back) {
            tracing::warn!(stream = %self.stream, "uploader keeps failing; restarting it in {RESTART_HOLD_BACK:?}");
            ctx.run_later(RESTART_HOLD_BACK, |this, ctx| this.resume(ctx));
            return;
        }
        match Spool::open(self.spool_dir.clone()) {
            Ok(spool) => {
                if !spool.is_empty() {
                    tracing::info!(stream = %self.stream, pending = spool.len(), "resuming pending uploads");
                }
                self.spool = Some(spool);
                // What waited for the spool goes in first.
                if !self.unspooled.is_empty() {
                    self.queue(Vec::new(), ctx);
                }
            }
            Err(e) => {
                // Without its spool the uploader cannot promise anything: stop, and let
                // the supervisor start it again (outputs meanwhile wait in memory).
                tracing::error!(stream = %self.stream, error = %e, "cannot open the upload spool");
                ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
                return;
            }
        }
        self.tick(ctx);
        self.kick(ctx);
    }
}

impl Supervised for Uploader {
    /// The restart policy: at once, up to [`UPLOADER_RESTARTS`] a minute; past that,
    /// after [`RESTART_HOLD_BACK`]. An uploader does not escalate: its parent has no
    /// better remedy than trying again, and giving up would strand its queue.
    fn restarting(&mut self, _: &mut Context<Self>) {
        restarted(ActorKind::Uploader);
        self.held_back = !self.restarts.allow(Instant::now());
        self.spool = None;
        self.busy = false;
        self.retry_scheduled = false;
        self.ticking = None;
        self.writing = false;
        self.stop_after_write = false;
    }
}

mod deliveries;
mod handlers;
mod send;
pub use deliveries::Deliveries;
use handlers::Kick;
pub use handlers::{Deliver, StreamEnded};
use send::{Fence, Sent, UploadError, backoff, send, stored};
