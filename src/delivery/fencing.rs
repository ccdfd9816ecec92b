//! Fencing a path's playlists in S3 when nodes share the bucket (`cluster.enabled`).
//!
//! A lease in Redis says which node owns a path; its token grows with every owner. But a
//! check in Redis and a PUT in S3 are two steps, and while Redis is away the check cannot
//! be made at all. So the PUT itself is the fence: every playlist this node writes under
//! a token is a conditional write on the ETag it got back from its own last write
//! (`If-Match`). While that chain holds, nobody else wrote the object, whatever Redis
//! says or cannot say, and playlists flow through a Redis outage. A write refused means
//! another node wrote it since: this node's playlists for the token stop for good.
//!
//! Only the first write of a token needs Redis: it must confirm the lease is current,
//! then it takes over whatever the object holds (`If-Match` its current ETag, or
//! `If-None-Match: *` when absent). A store that ignores these headers (some
//! S3-compatible ones) gets no atomic fence: `s3.conditional_writes = false` then checks
//! the lease in Redis before every playlist, as two steps, and playlists wait while
//! Redis is away.

use std::collections::HashMap;

use super::s3::{Condition, Conditional, S3Error, S3Target};
use super::spool::ItemKind;
use crate::cluster::{Cluster, ClusterError};

/// What to do with one playlist written under a lease token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceStep {
    /// A replaced owner's playlist (an older token, or another node wrote since): drop it.
    Drop,
    /// On this node's chain: put only if the object is as this node left it.
    Write(Condition),
    /// A key this node has not written under the token: read its current ETag and put
    /// over it. `confirm`: ask Redis first whether the token is still the lease's.
    TakeOver { confirm: bool },
}

/// The fence state of one path's playlists (one per uploader; it survives the
/// uploader's restarts).
#[derive(Debug, Default)]
pub struct PlaylistFences {
    token: u64,
    /// Redis confirmed `token` as the lease's.
    confirmed: bool,
    /// Another node wrote a playlist of this path under `token`'s watch.
    fenced: bool,
    /// The ETag of this node's last write of each key.
    etags: HashMap<String, String>,
}

impl PlaylistFences {
    pub fn step(&mut self, key: &str, token: u64) -> FenceStep {
        if token < self.token {
            return FenceStep::Drop;
        }
        if token > self.token {
            *self = Self {
                token,
                ..Self::default()
            };
        }
        if self.fenced {
            return FenceStep::Drop;
        }
        match self.etags.get(key) {
            Some(etag) => FenceStep::Write(Condition::Matches(etag.clone())),
            None => FenceStep::TakeOver {
                confirm: !self.confirmed,
            },
        }
    }

    /// Redis confirmed `token` (a take-over went ahead).
    pub fn confirmed(&mut self, token: u64) {
        if token == self.token {
            self.confirmed = true;
        }
    }

    /// This node wrote `key` under `token`; the object's ETag is now `etag`.
    pub fn written(&mut self, key: &str, token: u64, etag: String) {
        if token == self.token && !self.fenced {
            self.etags.insert(key.to_owned(), etag);
        }
    }

    /// Another node owns the path now (Redis said so, or a conditional write was
    /// refused): nothing more is written under `token`.
    pub fn lost(&mut self, token: u64) {
        if token == self.token {
            self.fenced = true;
            self.etags.clear();
        }
    }
}

/// What a fenced playlist put came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// Written; the object's new ETag, and whether Redis confirmed the token on the way.
    Written { etag: String, confirmed: bool },
    /// Another node owns the path: not written, and nothing more will be.
    Lost,
    /// A replaced owner's playlist: not written.
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("cannot check the path's lease: {0}")]
    Lease(#[from] ClusterError),
}

/// Attempts a take-over makes when another writer keeps changing the object between
/// its read of the ETag and its put.
const TAKE_OVER_ATTEMPTS: usize = 3;

/// Puts the playlist `key` of `path` as `step` says.
#[allow(clippy::too_many_arguments)]
pub async fn put_playlist(
    target: &S3Target,
    cluster: &Cluster,
    path: &str,
    key: &str,
    kind: ItemKind,
    body: Vec<u8>,
    token: u64,
    step: FenceStep,
) -> Result<Fenced, FenceError> {
    match step {
        FenceStep::Drop => Ok(Fenced::Dropped),
        FenceStep::Write(condition) => Ok(
            match target.put_conditional(key, kind, body, &condition).await? {
                Conditional::Written(etag) => Fenced::Written {
                    etag,
                    confirmed: false,
                },
                Conditional::Refused => Fenced::Lost,
            },
        ),
        FenceStep::TakeOver { confirm } => {
            if confirm && !cluster.is_current(path, token).await? {
                return Ok(Fenced::Lost);
            }
            for _ in 0..TAKE_OVER_ATTEMPTS {
                let condition = match target.etag(key).await? {
                    Some(etag) => Condition::Matches(etag),
                    None => Condition::Absent,
                };
                if let Conditional::Written(etag) = target
                    .put_conditional(key, kind, body.clone(), &condition)
                    .await?
                {
                    return Ok(Fenced::Written {
                        etag,
                        confirmed: confirm,
                    });
                }
            }
            Ok(Fenced::Lost)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_write_of_a_token_is_confirmed_then_the_chain_needs_no_redis() {
        let mut fences = PlaylistFences::default();
        let key = "source/index.m3u8";
        assert_eq!(fences.step(key, 5), FenceStep::TakeOver { confirm: true });
        fences.confirmed(5);
        fences.written(key, 5, "\"a\"".into());
        assert_eq!(
            fences.step(key, 5),
            FenceStep::Write(Condition::Matches("\"a\"".into()))
        );
        fences.written(key, 5, "\"b\"".into());
        assert_eq!(
            fences.step(key, 5),
            FenceStep::Write(Condition::Matches("\"b\"".into()))
        );
        // Another key of a confirmed token: taken over without asking Redis again.
        assert_eq!(
            fences.step("master.m3u8", 5),
            FenceStep::TakeOver { confirm: false }
        );
    }

    #[test]
    fn a_refused_write_fences_the_token_and_an_older_token_is_dropped() {
        let mut fences = PlaylistFences::default();
        let key = "source/index.m3u8";
        fences.step(key, 5);
        fences.confirmed(5);
        fences.written(key, 5, "\"a\"".into());
        fences.lost(5);
        assert_eq!(fences.step(key, 5), FenceStep::Drop);
        assert_eq!(fences.step("master.m3u8", 5), FenceStep::Drop);
        // This node owns the path again later (a newer token): a fresh start.
        assert_eq!(fences.step(key, 7), FenceStep::TakeOver { confirm: true });
        // A late playlist of the older session is dropped.
        assert_eq!(fences.step(key, 5), FenceStep::Drop);
        // Answers about an old token change nothing.
        fences.written(key, 5, "\"z\"".into());
        fences.lost(5);
        assert_eq!(fences.step(key, 7), FenceStep::TakeOver { confirm: true });
    }
}
