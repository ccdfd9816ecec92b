//! What a stream's playlists must carry on with when another session (on this node or,
//! in a cluster, another one) continues the path: per rendition the media sequence, the
//! discontinuity sequence and the segments listed now; and the target duration, fixed for
//! the path's life. Stored as JSON (in Redis for a cluster) after every new segment.
//!
//! Pure. The JSON comes from another node: it is size-capped and checked before use.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Larger than any real state: a window of a few segments per rendition.
pub const MAX_STATE_BYTES: usize = 256 * 1024;
/// More renditions or listed segments than this is not a state Kawa wrote.
const MAX_RENDITIONS: usize = 32;
const MAX_SEGMENTS: usize = 1024;
const MAX_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathState {
    pub target_duration: Option<u64>,
    pub renditions: Vec<RenditionState>,
    /// The id of the broadcast's recording while it is being recorded: the next owner
    /// goes on with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionState {
    pub name: String,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// The segments the playlist lists, oldest first.
    pub segments: Vec<SegmentRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub uri: String,
    /// Its init segment (`EXT-X-MAP`).
    pub init: String,
    pub duration: f64,
    pub discontinuity: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub program_date_time: Option<OffsetDateTime>,
    /// Starts with an IDR frame (a state written before Kawa said is taken as not).
    #[serde(default)]
    pub independent: bool,
    /// Listed only to keep its media sequence number (`EXT-X-GAP`): its writer died
    /// before storing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("stream state of {0} bytes is over the {MAX_STATE_BYTES}-byte cap")]
    TooLarge(usize),
    #[error("stream state is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stream state is out of bounds: {0}")]
    Invalid(&'static str),
}

/// A file name Kawa writes: `{epoch}_{n}.m4s` / `.mp4`, nothing that leaves its folder.
pub(crate) fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !name.starts_with('.')
}

impl PathState {
    pub fn to_json(&self) -> String {
        // Plain data: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(bytes.len()));
        }
        let state: Self = serde_json::from_slice(bytes)?;
        state.check()?;
        Ok(state)
    }

    fn check(&self) -> Result<(), StateError> {
        if self.renditions.len() > MAX_RENDITIONS {
            return Err(StateError::Invalid("too many renditions"));
        }
        if self.target_duration.is_some_and(|t| t == 0 || t > 600) {
            return Err(StateError::Invalid("target duration"));
        }
        for r in &self.renditions {
            if !is_file_name(&r.name) {
                return Err(StateError::Invalid("rendition name"));
            }
            if r.segments.len() > MAX_SEGMENTS {
                return Err(StateError::Invalid("too many segments"));
            }
            if r.media_sequence > u64::MAX / 2 || r.discontinuity_sequence > u64::MAX / 2 {
                return Err(StateError::Invalid("sequence number"));
            }
            for s in &r.segments {
                if !is_file_name(&s.uri) || !is_file_name(&s.init) {
                    return Err(StateError::Invalid("segment name"));
                }
                if !(s.duration.is_finite() && s.duration >= 0.0 && s.duration <= 600.0) {
                    return Err(StateError::Invalid("segment duration"));
                }
            }
        }
        Ok(())
    }

    pub fn rendition(&self, name: &str) -> Option<&RenditionState> {
        self.renditions.iter().find(|r| r.name == name)
    }
}

impl RenditionState {
    /// The predecessor died with a segment open: its live playlist announced that
    /// segment's number with parts. The number is listed as a gap (as long as the
    /// segment before it) so that it never names another segment.
    pub fn skip_open_segment(&mut self) {
        let Some(last) = self.segments.last().cloned() else {
            return;
        };
        let next = self.next_msn();
        let Some((epoch, _)) = last.uri.split_once('_') else {
            return;
        };
        let duration = last.duration;
        self.segments.push(SegmentRecord {
            uri: format!("{epoch}_{next}.m4s"),
            duration,
            discontinuity: false,
            program_date_time: last
                .program_date_time
                .map(|t| t + time::Duration::seconds_f64(duration)),
            independent: false,
            gap: true,
            ..last
        });
    }

    /// The predecessor saves its state after it publishes a playlist, so it may have
    /// closed the segment it had open, and slid its window past the oldest segment, in a
    /// playlist viewers saw and the state missed (seen in the chaos benchmark: a reader's
    /// MEDIA-SEQUENCE went 64 -> 63 after a node kill). The oldest segment leaves the
    /// window here too, so the successor's MEDIA-SEQUENCE never goes back (it may go
    /// one further: a playlist's first segment leaving early harms no one). Call after
    /// [`Self::skip_open_segment`]; a window of two or fewer is left whole.
    pub fn pass_window_start(&mut self) {
        if self.segments.len() <= 2 {
            return;
        }
        let gone = self.segments.remove(0);
        self.media_sequence += 1;
        if gone.discontinuity {
            self.discontinuity_sequence += 1;
        }
    }

    /// The media sequence number the next segment gets.
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PathState {
        PathState {
            recording: Some(1_700_000_000_000),
            target_duration: Some(2),
            renditions: vec![RenditionState {
                name: "source".into(),
                media_sequence: 40,
                discontinuity_sequence: 2,
                segments: vec![SegmentRecord {
                    uri: "1700000000000_40.m4s".into(),
                    init: "1700000000000_0.mp4".into(),
                    duration: 2.0,
                    discontinuity: true,
                    program_date_time: Some(time::macros::datetime!(2026-11-30 12:00 UTC)),
                    independent: true,
                    gap: false,
                }],
            }],
        }
    }

    /// After a failover no media sequence number names two segments: what the dead
    /// owner never stored, and the segment it had open, stay listed as gaps.
    #[test]
    fn a_successor_lists_what_it_lost_as_gaps_and_skips_the_open_segment() {
        let mut s = state();
        let mut second = s.renditions[0].segments[0].clone();
        second.uri = "1700000000000_41.m4s".into();
        second.discontinuity = false;
        s.renditions[0].segments.push(second);
        let rendition = &mut s.renditions[0];
        rendition.segments[1].gap = true;
        rendition.skip_open_segment();
        let gaps: Vec<(&str, bool)> = rendition
            .segments
            .iter()
            .map(|g| (g.uri.as_str(), g.gap))
            .collect();
        assert_eq!(
            gaps,
            [
                ("1700000000000_40.m4s", false),
                ("1700000000000_41.m4s", true),
                ("1700000000000_42.m4s", true),
            ]
        );
        assert_eq!(rendition.next_msn(), 43);
        let back = PathState::from_json(s.to_json().as_bytes()).unwrap();
        assert_eq!(back, s);
    }

    /// The successor's window starts one segment later than the saved state's, so that
    /// it never starts before the one the predecessor last published; numbers stay put.
    #[test]
    fn a_successor_starts_its_window_past_the_saved_one() {
        let mut s = state();
        let rendition = &mut s.renditions[0];
        for seq in 41..44 {
            let mut next = rendition.segments[0].clone();
            next.uri = format!("1700000000000_{seq}.m4s");
            next.discontinuity = false;
            rendition.segments.push(next);
        }
        // The first segment starts a discontinuity: leaving, it counts.
        let (msn, dsn, next) = (
            rendition.media_sequence,
            rendition.discontinuity_sequence,
            rendition.next_msn(),
        );
        rendition.skip_open_segment();
        rendition.pass_window_start();
        assert_eq!(rendition.media_sequence, msn + 1);
        assert_eq!(rendition.discontinuity_sequence, dsn + 1);
        assert_eq!(rendition.segments[0].uri, "1700000000000_41.m4s");
        assert_eq!(
            rendition.next_msn(),
            next + 1,
            "the open segment's number is skipped"
        );
        // Two segments or fewer: kept.
        let mut short = state();
        short.renditions[0].pass_window_start();
        assert_eq!(short.renditions[0].segments.len(), 1);
    }

    #[test]
    fn round_trips_through_json() {
        let s = state();
        assert_eq!(PathState::from_json(s.to_json().as_bytes()).unwrap(), s);
        assert_eq!(s.renditions[0].next_msn(), 41);
    }

    #[test]
    fn refuses_names_that_leave_the_folder_and_oversized_input() {
        let mut s = state();
        s.renditions[0].segments[0].uri = "../../etc/passwd".into();
        assert!(matches!(
            PathState::from_json(s.to_json().as_bytes()),
            Err(StateError::Invalid("segment name"))
        ));
        let big = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(matches!(
            PathState::from_json(&big),
            Err(StateError::TooLarge(_))
        ));
        assert!(matches!(
            PathState::from_json(b"{\"target_duration\":"),
            Err(StateError::Json(_))
        ));
    }
}
