//! The parts of each rendition's newest segments, kept in Redis as the owner cuts them
//! (`cluster.replicate_parts`). When an owner dies, the segment it had open dies with
//! it, and so does one it closed but had not stored yet: its successor could only list
//! them as gaps, and a player of whole segments waited for the successor's first whole
//! GOP (over 3 s in the chaos benchmark). With the parts in Redis the successor lists
//! both as segments, cut where the owner died.
//!
//! A Redis list per segment, `kawa:parts:{path}:{rendition}:{msn}`, one element per part:
//! a length-prefixed JSON header (what the playlist says of the part and its segment)
//! and the part's bytes. A list is dropped once a playlist in S3 lists its segment (see
//! [`CLOSED_KEPT`] for a cluster without S3); a TTL bounds the rest. Writes never wait:
//! a part that cannot be queued is dropped, and a segment missing a part is not rebuilt.
//!
//! The encoding and the rebuilding are pure; the elements come from Redis, so they are
//! size-capped and checked before use.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{Cluster, ClusterError, redis_error};
use crate::hls::packager::Output;
use crate::hls::resume::{SegmentRecord, is_file_name};
use crate::media::chunks::Chunks;

/// How long a segment's parts stay in Redis after its last part, at most: longer than a
/// lease takes to lapse and a claim to read them.
pub const PARTS_TTL: Duration = Duration::from_secs(30);
/// Without S3, segments whose parts are kept besides the open one: the one the saved
/// state may not list yet, and the one before. With S3, a segment's parts are kept until
/// a playlist listing it is in S3 (`Cluster::save_stored` drops them): a successor
/// finds every segment either in S3 or here, however far the uploads fell behind (they
/// lagged 8 s at a node kill in the chaos benchmark, and those segments were gaps).
const CLOSED_KEPT: u64 = 2;
/// More parts than a segment of Kawa's has (a 600 s segment of 4 s parts is 150).
pub const MAX_PARTS: usize = 256;
const MAX_HEADER: usize = 4096;
/// Larger than any segment Kawa cuts.
const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;
/// Parts waiting for Redis; more are dropped (Redis is slow or away: the stream never
/// waits for it). A second of parts for a dozen renditions.
const QUEUED: usize = 64;

/// What a successor needs to know of a part and of the segment it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartHeader {
    /// The segment's name, `{epoch}_{msn}.m4s`.
    pub segment: String,
    /// Its init segment (`EXT-X-MAP`).
    pub init: String,
    pub index: u32,
    /// Seconds.
    pub duration: f64,
    pub independent: bool,
    /// The segment follows a restart (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub program_date_time: Option<OffsetDateTime>,
    /// The last part of its segment.
    pub closes: bool,
}

/// A part to replicate.
#[derive(Debug, Clone)]
pub struct ReplicatedPart {
    pub rendition: String,
    pub msn: u64,
    pub header: PartHeader,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartError {
    #[error("replicated part is shorter than its header")]
    Truncated,
    #[error("replicated part's header of {0} bytes is over the cap")]
    HeaderTooLarge(usize),
    #[error("replicated part's header is not valid: {0}")]
    Header(String),
}

pub fn key(path: &str, rendition: &str, msn: u64) -> String {
    format!("kawa:parts:{path}:{rendition}:{msn}")
}

/// The media sequence number in a segment's name, `{epoch}_{msn}.m4s`.
pub(crate) fn msn_of(segment: &str) -> Option<u64> {
    let stem = segment.strip_suffix(".m4s")?;
    stem.rsplit_once('_')?.1.parse().ok()
}

pub fn encode(part: &ReplicatedPart) -> Vec<u8> {
    // Plain data: serializing cannot fail.
    let header = serde_json::to_vec(&part.header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + header.len() + part.data.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&part.data);
    out
}

pub fn decode(element: &[u8]) -> Result<(PartHeader, &[u8]), PartError> {
    let (len, rest) = element
        .split_first_chunk::<4>()
        .ok_or(PartError::Truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_HEADER {
        return Err(PartError::HeaderTooLarge(len));
    }
    if rest.len() < len {
        return Err(PartError::Truncated);
    }
    let (header, data) = rest.split_at(len);
    let header: PartHeader =
        serde_json::from_slice(header).map_err(|e| PartError::Header(e.to_string()))?;
    let valid = is_file_name(&header.segment)
        && is_file_name(&header.init)
        && header.duration.is_finite()
        && (0.0..=600.0).contains(&header.duration)
        && msn_of(&header.segment).is_some();
    if !valid {
        return Err(PartError::Header("out of bounds".into()));
    }
    Ok((header, data))
}

/// The parts among `outputs`, each with what the rendition's live playlist (in the same
/// batch) says of it; a part the playlist does not list is left out.
pub fn parts_of(outputs: &[Output]) -> Vec<ReplicatedPart> {
    let mut parts = Vec::new();
    for output in outputs {
        let Output::Part {
            rendition,
            name,
            data,
        } = output
        else {
            continue;
        };
        let playlist = outputs.iter().rev().find_map(|o| match o {
            Output::Live {
                rendition: r,
                playlist,
            } if r == rendition => Some(playlist),
            _ => None,
        });
        let Some(playlist) = playlist else { continue };
        let closed = (playlist.segments.last()).map(|s| (&s.segment, &s.parts, true));
        let open = (playlist.open.as_ref()).map(|s| (&s.segment, &s.parts, false));
        for (segment, infos, closes_segment) in [open, closed].into_iter().flatten() {
            let Some(index) = infos.iter().position(|p| p.uri == *name) else {
                continue;
            };
            let Some(msn) = msn_of(&segment.uri) else {
                continue;
            };
            let info = &infos[index];
            parts.push(ReplicatedPart {
                rendition: rendition.clone(),
                msn,
                header: PartHeader {
                    segment: segment.uri.clone(),
                    init: segment.map.clone(),
                    index: index as u32,
                    duration: info.duration,
                    independent: info.independent,
                    discontinuity: segment.discontinuity,
                    program_date_time: segment.program_date_time,
                    closes: closes_segment && index + 1 == infos.len(),
                },
                data: data.clone(),
            });
            break;
        }
    }
    parts
}

/// A segment made again from its replicated parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    pub record: SegmentRecord,
    pub data: Chunks,
    /// Its owner closed it (else it ends where the owner died).
    pub closed: bool,
}

/// Segment `msn` from its list's elements: the parts of the first writer's segment, in
/// order from the first (which must start with a keyframe), up to the first one missing.
/// `None` if nothing usable is there.
pub fn rebuild(msn: u64, elements: &[Vec<u8>]) -> Option<Rebuilt> {
    let mut parts: Vec<(PartHeader, Bytes)> = Vec::new();
    let mut size = 0usize;
    for element in elements.iter().take(MAX_PARTS) {
        let Ok((header, data)) = decode(element) else {
            continue;
        };
        let first = parts.first().map(|(h, _)| h);
        let same = first.is_none_or(|f| f.segment == header.segment && f.init == header.init);
        if !same || header.index as usize != parts.len() || msn_of(&header.segment) != Some(msn) {
            continue;
        }
        size += data.len();
        if size > MAX_SEGMENT_BYTES {
            return None;
        }
        let closes = header.closes;
        parts.push((header, Bytes::copy_from_slice(data)));
        if closes {
            break;
        }
    }
    let (first, _) = parts.first()?;
    if !first.independent {
        return None;
    }
    let closed = parts.last().is_some_and(|(h, _)| h.closes);
    let record = SegmentRecord {
        uri: first.segment.clone(),
        init: first.init.clone(),
        duration: parts.iter().map(|(h, _)| h.duration).sum(),
        discontinuity: first.discontinuity,
        program_date_time: first.program_date_time,
        independent: true,
        gap: false,
    };
    Some(Rebuilt {
        record,
        data: Chunks::new(parts.into_iter().map(|(_, d)| d).collect()),
        closed,
    })
}

/// The owner's side: queues every new part for Redis, never waiting.
pub struct Replicator {
    parts: mpsc::Sender<ReplicatedPart>,
    /// A part was dropped since the queue last took one (logged once).
    dropping: bool,
}

impl Replicator {
    /// Starts the task that writes `path`'s parts; it ends when this is dropped.
    /// `uploaded`: segments go to S3, whose uploader drops their parts once listed there.
    pub fn spawn(cluster: Arc<Cluster>, path: String, uploaded: bool) -> Self {
        let (parts, mut queue) = mpsc::channel::<ReplicatedPart>(QUEUED);
        tokio::spawn(async move {
            let mut failing = false;
            while let Some(part) = queue.recv().await {
                // A frozen Redis answers nothing: give up on a part after a renewal's time.
                let limit = cluster.renew_every();
                match tokio::time::timeout(limit, cluster.push_part(&path, &part, !uploaded)).await
                {
                    Ok(Ok(())) => failing = false,
                    _ if failing => {}
                    Ok(Err(e)) => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot replicate parts to Redis");
                    }
                    Err(_) => {
                        failing = true;
                        tracing::warn!(?limit, "cannot replicate parts to Redis: no answer");
                    }
                }
            }
        });
        Self {
            parts,
            dropping: false,
        }
    }

    /// Queues the parts among `outputs`.
    pub fn send(&mut self, outputs: &[Output]) {
        for part in parts_of(outputs) {
            match self.parts.try_send(part) {
                Ok(()) => self.dropping = false,
                Err(_) if self.dropping => {}
                Err(_) => {
                    self.dropping = true;
                    tracing::warn!("Redis is behind: parts are not replicated");
                }
            }
        }
    }
}

impl Rebuilt {
    /// The segment for the uploader (S3 lists what the successor lists).
    pub fn into_output(self, rendition: &str) -> Output {
        Output::Segment {
            rendition: rendition.to_owned(),
            name: self.record.uri,
            data: self.data,
            duration: self.record.duration,
            program_date_time: self.record.program_date_time,
            init: self.record.init,
            discontinuity: self.record.discontinuity,
            independent: self.record.independent,
        }
    }
}

impl Cluster {
    /// Appends a part to its segment's list; with `drop_closed`, the segment two before
    /// one this part closes is dropped.
    pub async fn push_part(
        &self,
        path: &str,
        part: &ReplicatedPart,
        drop_closed: bool,
    ) -> Result<(), ClusterError> {
        let list = key(path, &part.rendition, part.msn);
        let mut pipe = redis::pipe();
        pipe.rpush(&list, encode(part))
            .ignore()
            .pexpire(&list, PARTS_TTL.as_millis() as i64)
            .ignore();
        if drop_closed && part.header.closes && part.msn >= CLOSED_KEPT {
            let old = key(path, &part.rendition, part.msn - CLOSED_KEPT);
            pipe.del(old).ignore();
        }
        let mut conn = self.parts_connection().await?;
        let pushed = pipe.query_async::<()>(&mut conn).await;
        if pushed.is_err() {
            // A new one next time (Redis may have restarted).
            *self
                .parts_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        pushed.map_err(redis_error)
    }

    /// The connection every session's parts go through. A part is one pipeline: taking
    /// a connection from the pool for each would add a round trip (deadpool pings a
    /// connection before it hands it out), and parts are most of Kawa's Redis traffic.
    async fn parts_connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        let shared = (self.parts_connection.lock())
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(conn) = shared {
            return Ok(conn);
        }
        // A clone of a pooled connection: multiplexed, it is made to be shared.
        let conn: MultiplexedConnection = (*self.conn().await?).clone();
        *self
            .parts_connection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// The elements of segment `msn`'s list (at most [`MAX_PARTS`]).
    pub async fn load_parts(
        &self,
        path: &str,
        rendition: &str,
        msn: u64,
    ) -> Result<Vec<Vec<u8>>, ClusterError> {
        let mut conn = self.conn().await?;
        redis::cmd("LRANGE")
            .arg(key(path, rendition, msn))
            .arg(0)
            .arg(MAX_PARTS as i64 - 1)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }
}

#[cfg(test)]
#[path = "parts_tests.rs"]
mod tests;
