//! Playlists as typed values, rendered by one writer (RFC 8216 §4).
//!
//! Written here rather than with m3u8-rs's writer, which leaves out
//! `EXT-X-MEDIA-SEQUENCE:0` and `EXT-X-DISCONTINUITY-SEQUENCE:0` and prints FRAME-RATE
//! unrounded; m3u8-rs is used to parse (FFmpeg's playlists, and ours in tests).

use std::fmt::Write;

use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment {
    pub uri: String,
    /// The init segment it needs (`EXT-X-MAP`).
    pub map: String,
    /// Seconds.
    pub duration: f64,
    /// `EXT-X-DISCONTINUITY` before this segment: the encoding restarted here.
    pub discontinuity: bool,
    /// Ingest wall-clock time of the segment's first frame.
    pub program_date_time: Option<OffsetDateTime>,
    /// It starts with an IDR frame (a segment cut at the maximum length does not).
    pub independent: bool,
    /// `EXT-X-GAP`: listed to keep its media sequence number, but there is no media
    /// (a dead predecessor cut it and never stored it).
    pub gap: bool,
}

/// `EXT-X-START`, when the newest media does not start with a keyframe (an encoder
/// whose keyframes are further apart than a segment): a player that starts at the live
/// edge would append media its decoder cannot use until the next keyframe (hls.js stops
/// there: "Fragment append did not increase buffered coverage"). Pointing it at the
/// newest segment that starts with a keyframe lets it play at once, behind live by what
/// follows that keyframe, which an LL-HLS player then catches up. `listed` is every
/// segment with its duration, oldest first (an open segment last, with its parts'
/// duration). Nothing when the newest starts with a keyframe, or none listed does.
pub(super) fn write_start(out: &mut String, listed: &[(f64, bool)]) {
    if listed.last().is_none_or(|(_, independent)| *independent) {
        return;
    }
    let Some(k) = listed.iter().rposition(|(_, independent)| *independent) else {
        return;
    };
    let from_end: f64 = listed[k..].iter().map(|(duration, _)| duration).sum();
    // PRECISE=NO: the player starts at the segment holding the point, so a point a
    // little off (the open segment counted or not) still lands at or before the keyframe.
    let _ = writeln!(out, "#EXT-X-START:TIME-OFFSET=-{from_end:.3},PRECISE=NO");
}

/// `EXT-X-INDEPENDENT-SEGMENTS`, only where every segment listed starts with an IDR
/// frame: the tag is a promise about all of them (RFC 8216bis §4.4.2.1).
pub(super) fn write_independent_segments(out: &mut String, segments: &[&MediaSegment]) {
    if segments.iter().all(|s| s.independent) {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<MediaSegment>,
    pub ended: bool,
    /// `EXT-X-PLAYLIST-TYPE:VOD`: a recording, complete and never changing.
    pub vod: bool,
}

impl MediaPlaylist {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 96);
        // Infallible: writing to a String.
        // Version 7: fragmented MP4 segments with EXT-X-MAP (RFC 8216 §7).
        out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
        write_independent_segments(&mut out, &self.segments.iter().collect::<Vec<_>>());
        if !self.vod && !self.ended {
            let listed: Vec<(f64, bool)> = self
                .segments
                .iter()
                .map(|s| (s.duration, s.independent && !s.gap))
                .collect();
            write_start(&mut out, &listed);
        }
        if self.vod {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        let mut map: Option<&str> = None;
        for segment in &self.segments {
            write_segment_tags(&mut out, segment, &mut map);
            write_extinf(&mut out, segment);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// The tags that go before a segment (and before its parts): DISCONTINUITY, its init
/// segment where it changes (only after a discontinuity: Kawa starts a new init only
/// when a rendition restarts), and its PDT.
pub(super) fn write_segment_tags<'a>(
    out: &mut String,
    segment: &'a MediaSegment,
    map: &mut Option<&'a str>,
) {
    if segment.discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if *map != Some(segment.map.as_str()) {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", segment.map);
        *map = Some(&segment.map);
    }
    if let Some(pdt) = segment.program_date_time {
        // ISO 8601 in UTC with milliseconds, as players expect.
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        if let Ok(text) = pdt.to_offset(UtcOffset::UTC).format(&format) {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{text}");
        }
    }
}

pub(super) fn write_extinf(out: &mut String, segment: &MediaSegment) {
    if segment.gap {
        out.push_str("#EXT-X-GAP\n");
    }
    let _ = writeln!(out, "#EXTINF:{:.3},\n{}", segment.duration, segment.uri);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub uri: String,
    /// Peak segment bitrate, bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MasterPlaylist {
    pub variants: Vec<Variant>,
}

impl MasterPlaylist {
    pub fn render(&self) -> String {
        // No EXT-X-INDEPENDENT-SEGMENTS here: it would promise it for every media
        // playlist, and a segment cut at the maximum length starts without an IDR frame.
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
        for v in &self.variants {
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
            if let Some(avg) = v.average_bandwidth {
                let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
            }
            let _ = write!(out, ",CODECS=\"{}\"", v.codecs);
            if let Some((w, h)) = v.resolution {
                let _ = write!(out, ",RESOLUTION={w}x{h}");
            }
            if let Some(fps) = v.frame_rate {
                let _ = write!(out, ",FRAME-RATE={fps:.3}");
            }
            let _ = writeln!(out, "\n{}", v.uri);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m3u8_rs::Playlist;

    #[test]
    fn media_playlist_round_trips_through_a_parser() {
        let pdt = time::macros::datetime!(2026-11-27 12:00:00.123456 UTC);
        let playlist = MediaPlaylist {
            target_duration: 2,
            media_sequence: 41,
            discontinuity_sequence: 3,
            segments: vec![
                MediaSegment {
                    uri: "1_41.m4s".into(),
                    map: "1_0.mp4".into(),
                    duration: 2.0,
                    discontinuity: false,
                    program_date_time: Some(pdt),
                    independent: true,
                    gap: false,
                },
                MediaSegment {
                    uri: "1_42.m4s".into(),
                    map: "1_1.mp4".into(),
                    duration: 1.96,
                    discontinuity: true,
                    program_date_time: Some(pdt + time::Duration::seconds(2)),
                    independent: true,
                    gap: false,
                },
            ],
            ended: true,
            vod: true,
        };
        let text = playlist.render();
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-27T12:00:00.123Z\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"1_1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME"
            ),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2, "{text}");
        let Ok((_, Playlist::MediaPlaylist(parsed))) = m3u8_rs::parse_playlist(text.as_bytes())
        else {
            panic!("not a media playlist:\n{text}")
        };
        assert_eq!(parsed.target_duration, 2);
        assert_eq!(parsed.media_sequence, 41);
        assert_eq!(parsed.discontinuity_sequence, 3);
        assert!(parsed.end_list && parsed.independent_segments);
        assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert_eq!(parsed.segments.len(), 2);
        assert_eq!(parsed.version, Some(7));
        assert_eq!(
            parsed.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("1_0.mp4")
        );
        assert!(parsed.segments[1].discontinuity);
        assert!((parsed.segments[1].duration - 1.96).abs() < 1e-6);
    }

    /// A player is sent to the newest segment that starts with a keyframe when the
    /// newest one does not (an encoder with keyframes far apart), and nowhere otherwise.
    #[test]
    fn a_start_is_given_only_when_the_live_edge_has_no_keyframe() {
        let start = |listed: &[(f64, bool)]| {
            let mut out = String::new();
            write_start(&mut out, listed);
            out
        };
        assert_eq!(start(&[(2.0, true), (2.0, true)]), "");
        assert_eq!(start(&[(2.0, false), (2.0, false)]), "");
        assert_eq!(
            start(&[(2.0, false), (2.48, true), (2.48, false), (0.6, false)]),
            "#EXT-X-START:TIME-OFFSET=-5.560,PRECISE=NO\n"
        );
    }

    #[test]
    fn zero_sequences_are_written_out() {
        let text = MediaPlaylist {
            target_duration: 4,
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: vec![],
            ended: false,
            vod: false,
        }
        .render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
        assert!(!text.contains("ENDLIST") && !text.contains("PLAYLIST-TYPE"));
    }

    #[test]
    fn master_playlist_round_trips_through_a_parser() {
        let master = MasterPlaylist {
            variants: vec![Variant {
                uri: "source/index.m3u8".into(),
                bandwidth: 950_000,
                average_bandwidth: Some(800_000),
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                frame_rate: Some(29.97002997),
            }],
        };
        let text = master.render();
        assert!(text.contains("FRAME-RATE=29.970"), "{text}");
        let Ok((_, Playlist::MasterPlaylist(parsed))) = m3u8_rs::parse_playlist(text.as_bytes())
        else {
            panic!("not a master playlist:\n{text}")
        };
        let v = &parsed.variants[0];
        assert_eq!(v.bandwidth, 950_000);
        assert_eq!(v.average_bandwidth, Some(800_000));
        assert_eq!(v.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(v.resolution.map(|r| (r.width, r.height)), Some((1280, 720)));
    }
}
