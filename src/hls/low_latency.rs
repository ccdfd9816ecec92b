//! Low-Latency HLS for one rendition (RFC 8216bis §4.4.3.7–4.4.5.2, §6.2.5): the live
//! window with its parts, rendered per request (a delta update and the rendition reports
//! depend on the request), and the rules for blocking playlist reloads.
//!
//! Pure: the HTTP layer holds a request until [`LivePlaylist::ready`] says so.

use std::fmt::Write;

use super::playlist::{MediaSegment, write_extinf, write_segment_tags};

/// A delta update may skip segments older than this many target durations from the end
/// (the spec's minimum).
const SKIP_TARGET_DURATIONS: f64 = 6.0;
/// PART-HOLD-BACK, in part targets (the spec's minimum).
const HOLD_BACK_PARTS: f64 = 3.0;
/// A request may ask for a part at most this many parts past the newest one.
const ADVANCE_PART_LIMIT: u64 = 3;
/// ... and for a segment at most this many past the newest one.
const ADVANCE_SEGMENT_LIMIT: u64 = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// A complete segment, with its parts while they are still listed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSegment {
    pub segment: MediaSegment,
    pub parts: Vec<PartInfo>,
}

/// The segment being built: its tags and the parts it has so far.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSegment {
    /// `segment.uri` and `segment.duration` are unused until it completes.
    pub segment: MediaSegment,
    pub parts: Vec<PartInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LivePlaylist {
    pub target_duration: u64,
    /// PART-TARGET, seconds: fixed for the stream's life.
    pub part_target: f64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<LiveSegment>,
    pub open: Option<OpenSegment>,
    /// The next part's name (`EXT-X-PRELOAD-HINT`).
    pub preload_hint: Option<String>,
    pub ended: bool,
}

/// Where another rendition is (`EXT-X-RENDITION-REPORT`).
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<u64>,
}

/// The query of a playlist request (§6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    pub skip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    #[error("_HLS_msn {asked} is more than {ADVANCE_SEGMENT_LIMIT} segments past {last}")]
    SegmentTooFar { asked: u64, last: u64 },
    #[error("_HLS_part {asked} is more than {ADVANCE_PART_LIMIT} parts past {last}")]
    PartTooFar { asked: u64, last: u64 },
}

impl Directives {
    /// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string; anything
    /// else (a cache buster) is ignored.
    pub fn parse(query: &str) -> Result<Self, DirectiveError> {
        let mut d = Self::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => {
                    d.msn = Some(
                        value
                            .parse()
                            .map_err(|_| DirectiveError::NotANumber("_HLS_msn"))?,
                    )
                }
                "_HLS_part" => {
                    d.part = Some(
                        value
                            .parse()
                            .map_err(|_| DirectiveError::NotANumber("_HLS_part"))?,
                    )
                }
                // `v2` also skips date ranges; Kawa writes none.
                "_HLS_skip" => d.skip = value == "YES" || value == "v2",
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(DirectiveError::PartWithoutMsn);
        }
        Ok(d)
    }
}

/// What to do with a playlist request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Hold it until the playlist changes.
    Wait,
    Refuse(DirectiveError),
}

impl LivePlaylist {
    /// The sequence number of the segment being built (or that will be next).
    pub fn open_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// The newest segment and part listed (LAST-MSN, LAST-PART).
    pub fn last_position(&self) -> Option<(u64, Option<u64>)> {
        if let Some(open) = self.open.as_ref().filter(|o| !o.parts.is_empty()) {
            return Some((self.open_msn(), Some(open.parts.len() as u64 - 1)));
        }
        let last = self.segments.last()?;
        Some((
            self.open_msn() - 1,
            (!last.parts.is_empty()).then(|| last.parts.len() as u64 - 1),
        ))
    }

    /// A complete segment still listed, by sequence number.
    fn segment(&self, msn: u64) -> Option<&LiveSegment> {
        let index = msn.checked_sub(self.media_sequence)?;
        self.segments.get(usize::try_from(index).ok()?)
    }

    /// Whether a request with these directives can be answered now (§6.2.5.2).
    pub fn ready(&self, d: &Directives) -> Readiness {
        let Some(msn) = d.msn else {
            return Readiness::Ready;
        };
        if self.ended {
            return Readiness::Ready;
        }
        let (last_msn, last_part) = self.last_position().unwrap_or((self.media_sequence, None));
        if msn > last_msn + ADVANCE_SEGMENT_LIMIT {
            return Readiness::Refuse(DirectiveError::SegmentTooFar {
                asked: msn,
                last: last_msn,
            });
        }
        let complete = self.open_msn();
        let available = match d.part {
            // A complete segment M (or any later one).
            None => msn < complete,
            Some(part) => {
                let open_parts = self.open.as_ref().map_or(0, |o| o.parts.len() as u64);
                if msn == complete && last_msn == complete {
                    let newest = last_part.unwrap_or(0);
                    if part > newest + ADVANCE_PART_LIMIT {
                        return Readiness::Refuse(DirectiveError::PartTooFar {
                            asked: part,
                            last: newest,
                        });
                    }
                }
                // A part past the end of a complete segment is the next segment's
                // first (a player asks for it before it knows the segment ended).
                let (msn, part) = match self.segment(msn).map(|s| s.parts.len() as u64) {
                    Some(count) if count > 0 && part >= count => (msn + 1, 0),
                    _ => (msn, part),
                };
                msn < complete || (msn == complete && part < open_parts)
            }
        };
        if available {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// The segments a delta update leaves out: those that end more than
    /// CAN-SKIP-UNTIL before the end of the playlist.
    fn skippable(&self) -> usize {
        let total: f64 = self.segments.iter().map(|s| s.segment.duration).sum();
        let boundary = total - SKIP_TARGET_DURATIONS * self.target_duration as f64;
        let mut end = 0.0;
        self.segments
            .iter()
            .take_while(|s| {
                end += s.segment.duration;
                end <= boundary + 1e-9
            })
            .count()
    }

    pub fn render(&self, skip: bool, reports: &[RenditionReport]) -> String {
        let mut out = String::with_capacity(512 + self.segments.len() * 256);
        // Infallible: writing to a String.
        // Version 9: EXT-X-SKIP (and the other LL-HLS tags).
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
        let listed: Vec<&MediaSegment> = self
            .segments
            .iter()
            .map(|s| &s.segment)
            .chain(self.open.as_ref().map(|o| &o.segment))
            .collect();
        super::playlist::write_independent_segments(&mut out, &listed);
        if !self.ended {
            let durations: Vec<(f64, bool)> = self
                .segments
                .iter()
                .map(|s| (s.segment.duration, s.segment.independent && !s.segment.gap))
                .chain(self.open.as_ref().map(|o| {
                    let duration = o.parts.iter().map(|p| p.duration).sum();
                    (duration, o.parts.first().is_some_and(|p| p.independent))
                }))
                .collect();
            super::playlist::write_start(&mut out, &durations);
        }
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
            SKIP_TARGET_DURATIONS * self.target_duration as f64,
            HOLD_BACK_PARTS * self.part_target
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", self.part_target);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        let skipped = if skip { self.skippable() } else { 0 };
        if skip {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let mut map: Option<&str> = None;
        for s in &self.segments[skipped..] {
            write_segment_tags(&mut out, &s.segment, &mut map);
            write_parts(&mut out, &s.parts);
            write_extinf(&mut out, &s.segment);
        }
        if let Some(open) = &self.open {
            // The tags of a segment go before its first part.
            write_segment_tags(&mut out, &open.segment, &mut map);
            write_parts(&mut out, &open.parts);
        }
        if let (Some(hint), false) = (&self.preload_hint, self.ended) {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
        for r in reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                r.uri, r.last_msn
            );
            if let Some(part) = r.last_part {
                let _ = write!(out, ",LAST-PART={part}");
            }
            out.push('\n');
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

fn write_parts(out: &mut String, parts: &[PartInfo]) {
    for p in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.3},URI=\"{}\"",
            p.duration, p.uri
        );
        if p.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u64) -> MediaSegment {
        MediaSegment {
            uri: format!("1_{seq}.m4s"),
            map: "1_0.mp4".into(),
            duration: 2.0,
            discontinuity: false,
            program_date_time: None,
            independent: true,
            gap: false,
        }
    }

    fn parts(seq: u64, n: usize) -> Vec<PartInfo> {
        (0..n)
            .map(|i| PartInfo {
                uri: format!("1_{seq}_{i}.m4s"),
                duration: 0.333,
                independent: i == 0,
            })
            .collect()
    }

    /// `complete` segments from sequence 10 (the last two with parts), and an open
    /// segment with `open_parts` parts.
    fn playlist(complete: u64, open_parts: usize) -> LivePlaylist {
        LivePlaylist {
            target_duration: 2,
            part_target: 0.334,
            media_sequence: 10,
            discontinuity_sequence: 0,
            segments: (10..10 + complete)
                .map(|seq| LiveSegment {
                    segment: segment(seq),
                    parts: if seq + 2 >= 10 + complete {
                        parts(seq, 6)
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            open: Some(OpenSegment {
                segment: segment(10 + complete),
                parts: parts(10 + complete, open_parts),
            }),
            preload_hint: Some(format!("1_{}_{open_parts}.m4s", 10 + complete)),
            ended: false,
        }
    }

    #[test]
    fn directives_are_read_from_the_query() {
        assert_eq!(
            Directives::parse("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&x=1"),
            Ok(Directives {
                msn: Some(12),
                part: Some(3),
                skip: true
            })
        );
        assert_eq!(Directives::parse(""), Ok(Directives::default()));
        assert_eq!(
            Directives::parse("_HLS_part=1"),
            Err(DirectiveError::PartWithoutMsn)
        );
        assert_eq!(
            Directives::parse("_HLS_msn=-1"),
            Err(DirectiveError::NotANumber("_HLS_msn"))
        );
    }

    #[test]
    fn a_request_waits_for_its_part_and_no_further() {
        // Segments 10..=12 complete, segment 13 has parts 0 and 1.
        let p = playlist(3, 2);
        let ask = |msn, part| Directives {
            msn: Some(msn),
            part,
            skip: false,
        };
        assert_eq!(p.last_position(), Some((13, Some(1))));
        assert_eq!(p.ready(&ask(12, None)), Readiness::Ready);
        assert_eq!(p.ready(&ask(13, None)), Readiness::Wait);
        assert_eq!(p.ready(&ask(13, Some(1))), Readiness::Ready);
        assert_eq!(p.ready(&ask(13, Some(2))), Readiness::Wait);
        assert_eq!(p.ready(&ask(13, Some(4))), Readiness::Wait);
        // Segment 12 has parts 0..=5: its part 6 is segment 13's part 0.
        assert_eq!(p.ready(&ask(12, Some(5))), Readiness::Ready);
        assert_eq!(p.ready(&ask(12, Some(9))), Readiness::Ready);
        let no_open = playlist(3, 0);
        assert_eq!(no_open.ready(&ask(12, Some(6))), Readiness::Wait);
        assert_eq!(no_open.ready(&ask(9, Some(6))), Readiness::Ready);
        assert_eq!(p.ready(&ask(15, None)), Readiness::Wait);
        assert!(matches!(
            p.ready(&ask(13, Some(5))),
            Readiness::Refuse(DirectiveError::PartTooFar { asked: 5, last: 1 })
        ));
        assert!(matches!(
            p.ready(&ask(16, None)),
            Readiness::Refuse(DirectiveError::SegmentTooFar {
                asked: 16,
                last: 13
            })
        ));
        let mut ended = p.clone();
        ended.ended = true;
        assert_eq!(ended.ready(&ask(15, None)), Readiness::Ready);
    }

    #[test]
    fn parts_follow_their_segment_tags_and_precede_its_extinf() {
        let p = playlist(3, 2);
        let reports = [RenditionReport {
            uri: "../480p/index.m3u8".into(),
            last_msn: 13,
            last_part: Some(0),
        }];
        let text = p.render(false, &reports);
        let expected_head = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.002\n\
            #EXT-X-PART-INF:PART-TARGET=0.334\n\
            #EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
            #EXT-X-MAP:URI=\"1_0.mp4\"\n#EXTINF:2.000,\n1_10.m4s\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(
            text.contains(
                "1_10.m4s\n#EXT-X-PART:DURATION=0.333,URI=\"1_11_0.m4s\",INDEPENDENT=YES\n\
                 #EXT-X-PART:DURATION=0.333,URI=\"1_11_1.m4s\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("URI=\"1_12_5.m4s\"\n#EXTINF:2.000,\n1_12.m4s\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "URI=\"1_13_1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1_13_2.m4s\"\n\
                 #EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=13,LAST-PART=0\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
        // Still a media playlist to a parser that knows no LL-HLS.
        let Ok((_, m3u8_rs::Playlist::MediaPlaylist(parsed))) =
            m3u8_rs::parse_playlist(text.as_bytes())
        else {
            panic!("{text}")
        };
        assert_eq!(parsed.segments.len(), 3);
    }

    #[test]
    fn a_delta_update_skips_what_is_older_than_six_target_durations() {
        // 10 segments of 2 s: the first 4 end at or before 20 - 12 = 8 s.
        let p = playlist(10, 1);
        let text = p.render(true, &[]);
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{text}");
        assert!(!text.contains("1_13.m4s\n") && text.contains("1_14.m4s\n"));
        // The first segment listed still says which init it needs.
        assert!(text.contains("SKIPPED-SEGMENTS=4\n#EXT-X-MAP:URI=\"1_0.mp4\"\n#EXTINF"));
        // A short window has nothing to skip, and says so.
        let text = playlist(5, 1).render(true, &[]);
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n"), "{text}");
        assert!(!playlist(10, 1).render(false, &[]).contains("EXT-X-SKIP"));
    }

    #[test]
    fn an_ended_playlist_has_no_hint() {
        let mut p = playlist(3, 0);
        p.open = None;
        p.ended = true;
        let text = p.render(false, &[]);
        assert!(!text.contains("PRELOAD-HINT") && text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(p.last_position(), Some((12, Some(5))));
    }
}
