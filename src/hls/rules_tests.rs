//! The HLS rules every playlist must keep (RFC 8216bis), checked on every playlist the
//! packager makes for any keyframe pattern, timestamp gap or frame size a publisher can
//! send: the target duration never changes and bounds every EXTINF; PART-TARGET never
//! changes and bounds every part; a media sequence number names one segment forever;
//! INDEPENDENT is only claimed where the media starts with a keyframe; a segment, a part
//! and a live playlist stay bounded without keyframes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use mp4_atom::{Decode, Moof};
use proptest::prelude::*;
use time::OffsetDateTime;

use super::packager::{Anchor, Output, Packager, RenditionInfo, Start};
use crate::media::aac::AudioSpecificConfig;
use crate::media::annexb;
use crate::media::avc::tests::{PPS, SPS_320X240_HIGH};
use crate::media::cmaf::{MAX_PART_BYTES, MAX_SEGMENT_BYTES, SegmenterSettings};
use crate::media::frame::{AudioConfig, AudioFrame, Frame, VideoConfig, VideoForm, VideoFrame};

const MS: i64 = 90;
const TARGET: u64 = 2;

pub(crate) fn keyframe_unit() -> Bytes {
    let mut au = Vec::new();
    for ps in [SPS_320X240_HIGH, PPS] {
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(ps);
    }
    au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
    au.into()
}

/// A non-IDR access unit of up to 3 MB (one NAL unit of zeros after its header).
static BIG: LazyLock<Bytes> = LazyLock::new(|| {
    let mut au = vec![0u8; 3 << 20];
    au[..6].copy_from_slice(&[0, 0, 0, 1, 0x41, 0x88]);
    au.into()
});

/// An Annex B video frame at `dts` (no B-frames).
pub(crate) fn video(dts: i64, keyframe: bool, data: Bytes) -> Frame {
    Frame::Video(VideoFrame {
        dts,
        pts: dts,
        keyframe,
        data,
        form: VideoForm::AnnexB,
    })
}

pub(crate) fn packager() -> Packager {
    let settings = SegmenterSettings::from_seconds(TARGET as f64, 0.2);
    let mut p = Packager::new(7, settings, 6);
    p.set_renditions(
        vec![RenditionInfo {
            name: "source".into(),
            video_codec: None,
            resolution: None,
            frame_rate: None,
            has_video: true,
        }],
        Some("mp4a.40.2".into()),
    );
    p
}

pub(crate) fn start() -> Start {
    let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
    Start {
        video: Some(VideoConfig::Avc(
            annexb::decoder_config(&keyframe_unit()).unwrap(),
        )),
        audio: Some(Arc::new(AudioConfig {
            adts: asc.adts().unwrap(),
            asc,
        })),
        anchor: Anchor {
            dts: 0,
            wall: OffsetDateTime::UNIX_EPOCH,
        },
    }
}

/// The video track's first decode time in a fragment (track 1).
fn first_video_dts(fragment: &[u8]) -> Option<i64> {
    let mut buf = fragment;
    let moof = Moof::decode(&mut buf).ok()?;
    let traf = moof.traf.iter().find(|t| t.tfhd.track_id == 1)?;
    Some(traf.tfdt.as_ref()?.base_media_decode_time as i64)
}

/// The audio track's (ID 2) decode time at the start of a fragment, and at its end.
fn audio_span(fragment: &[u8]) -> Option<(i64, i64)> {
    let mut buf = fragment;
    let moof = Moof::decode(&mut buf).ok()?;
    let traf = moof.traf.iter().find(|t| t.tfhd.track_id == 2)?;
    let start = traf.tfdt.as_ref()?.base_media_decode_time as i64;
    let duration: i64 = traf
        .trun
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|s| {
            i64::from(
                s.duration
                    .or(traf.tfhd.default_sample_duration)
                    .unwrap_or(0),
            )
        })
        .sum();
    Some((start, start + duration))
}

#[derive(Default)]
struct Checker {
    /// Where the last part's audio ended: the next part's starts there (the publisher's
    /// audio has no gaps), or MSE ends its buffered range at the hole.
    audio_end: Option<i64>,
    /// Decode times of keyframes, and of other frames (a broken encoder repeats them).
    keyframes: HashSet<i64>,
    others: HashSet<i64>,
    /// MSN -> segment name, as first announced.
    names: HashMap<u64, String>,
    segment_independent: HashMap<String, bool>,
    part_data: HashMap<String, Bytes>,
    part_target: Option<String>,
    live_playlists: usize,
}

fn tag_value<'a>(line: &'a str, attribute: &str) -> Option<&'a str> {
    let start = line.find(&format!("{attribute}="))? + attribute.len() + 1;
    let rest = &line[start..];
    Some(rest.split(',').next().unwrap_or(rest))
}

impl Checker {
    fn name_msn(&mut self, msn: u64, name: &str) -> Result<(), TestCaseError> {
        let known = self.names.entry(msn).or_insert_with(|| name.to_owned());
        prop_assert_eq!(known.as_str(), name, "MSN {} names two segments", msn);
        Ok(())
    }

    /// Rules that hold for the text of any media playlist.
    fn text(&mut self, text: &str) -> Result<(), TestCaseError> {
        prop_assert!(
            text.contains(&format!("#EXT-X-TARGETDURATION:{TARGET}\n")),
            "{}",
            text
        );
        prop_assert!(text.len() < 64 * 1024, "playlist of {} bytes", text.len());
        let mut uris = Vec::new();
        let mut part_target = None;
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("#EXTINF:") {
                let d: f64 = d.trim_end_matches(',').parse().unwrap();
                prop_assert!(
                    d.round() as u64 <= TARGET,
                    "EXTINF {} > {}\n{}",
                    d,
                    TARGET,
                    text
                );
            } else if let Some(t) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
                part_target = Some(t.parse::<f64>().unwrap());
                let known = self.part_target.get_or_insert_with(|| t.to_owned());
                prop_assert_eq!(known.as_str(), t, "PART-TARGET changed");
            } else if line.starts_with("#EXT-X-PART:") {
                let d: f64 = tag_value(line, "DURATION").unwrap().parse().unwrap();
                let target = part_target.unwrap();
                prop_assert!(
                    d <= target + 1e-9,
                    "part of {} > PART-TARGET {}\n{}",
                    d,
                    target,
                    text
                );
                if line.contains("INDEPENDENT=YES") {
                    let uri = tag_value(line, "URI").unwrap().trim_matches('"');
                    let data = &self.part_data[uri];
                    let dts = first_video_dts(data).unwrap();
                    prop_assert!(self.keyframes.contains(&dts), "{} is no keyframe", uri);
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                uris.push(line.to_owned());
            }
        }
        if text.contains("#EXT-X-INDEPENDENT-SEGMENTS") {
            for uri in &uris {
                prop_assert!(self.segment_independent[uri], "{} claimed independent", uri);
            }
        }
        let sequence: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        for (i, uri) in uris.iter().enumerate() {
            self.name_msn(sequence + i as u64, uri)?;
        }
        Ok(())
    }

    fn outputs(&mut self, outputs: Vec<Output>) -> Result<(), TestCaseError> {
        for output in outputs {
            match output {
                Output::Segment {
                    name,
                    data,
                    duration,
                    independent,
                    ..
                } => {
                    prop_assert!(duration.round() as u64 <= TARGET, "segment of {}", duration);
                    prop_assert!(
                        data.len() <= MAX_SEGMENT_BYTES + (1 << 20),
                        "{} bytes",
                        data.len()
                    );
                    let dts = first_video_dts(&data.to_vec()).unwrap();
                    let starts = if independent {
                        &self.keyframes
                    } else {
                        &self.others
                    };
                    prop_assert!(
                        starts.contains(&dts),
                        "{} independent: {}",
                        name,
                        independent
                    );
                    self.segment_independent.insert(name, independent);
                }
                Output::Part { name, data, .. } => {
                    prop_assert!(
                        data.len() <= MAX_PART_BYTES + (1 << 16),
                        "part of {}",
                        data.len()
                    );
                    if let Some((start, end)) = audio_span(&data) {
                        // MSE trims an overlap (audio bridging a video gap, while the
                        // audio had none); a hole ends its buffered range.
                        if let Some(last) = self.audio_end {
                            prop_assert!(
                                start <= last,
                                "audio from {} after audio to {} at {}",
                                start,
                                last,
                                name
                            );
                        }
                        self.audio_end = Some(end);
                    }
                    self.part_data.insert(name, data);
                }
                Output::Live { playlist, .. } => {
                    self.live_playlists += 1;
                    let max_parts = SegmenterSettings::from_seconds(TARGET as f64, 0.2).max_parts();
                    if let Some(open) = &playlist.open {
                        prop_assert!(open.parts.len() <= max_parts);
                    }
                    // A player can start part by part: when a keyframe is listed, so is
                    // a part that starts with it, and what follows it has parts.
                    let parts = || {
                        playlist
                            .segments
                            .iter()
                            .flat_map(|s| &s.parts)
                            .chain(playlist.open.iter().flat_map(|o| &o.parts))
                    };
                    if playlist.segments.iter().any(|s| s.segment.independent) {
                        prop_assert!(parts().any(|p| p.independent), "no part to start at");
                        let from = parts().position(|p| p.independent).unwrap_or(0);
                        prop_assert!(
                            parts().count() - from > 0,
                            "nothing listed after the keyframe"
                        );
                    }
                    for s in &playlist.segments {
                        prop_assert!(s.parts.len() <= max_parts, "{} parts", s.parts.len());
                    }
                    self.text(&playlist.render(false, &[]))?;
                }
                Output::Playlist { text, .. } => self.text(&text)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// One publisher: a frame rate, where keyframes fall, gaps and jumps, frame sizes.
#[derive(Debug, Clone)]
struct Publisher {
    frame_ms: f64,
    /// Frames between keyframes, cycled; empty: one keyframe, then none.
    keyframe_every: Vec<u32>,
    /// (frame index, ms added before it): stalls, and small steps back.
    jumps: Vec<(usize, i64)>,
    /// (frame index, bytes): frames far larger than any encoder's.
    huge: Vec<(usize, usize)>,
    /// Timestamps stop moving (a broken encoder).
    frozen: bool,
    frames: usize,
}

fn publisher() -> impl Strategy<Value = Publisher> {
    (
        prop::sample::select(vec![1000.0 / 60.0, 1000.0 / 29.97, 40.0, 100.0]),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(1u32..900, 1..8),
            prop::collection::vec(1u32..4, 1..4),
        ],
        prop::collection::vec((0usize..1500, -30i64..6000), 0..6),
        prop::collection::vec((0usize..1500, 100_000usize..(3 << 20)), 0..4),
        prop::bool::weighted(0.1),
        200usize..1500,
    )
        .prop_map(
            |(frame_ms, keyframe_every, jumps, huge, frozen, frames)| Publisher {
                frame_ms,
                keyframe_every,
                jumps,
                huge,
                frozen,
                frames,
            },
        )
}

fn run(publisher: &Publisher) -> Result<Checker, TestCaseError> {
    let mut packager = packager();
    let mut checker = Checker::default();
    checker.outputs(packager.start("source", start()).unwrap())?;
    let mut offset = 0i64;
    let mut next_key = 0usize;
    let mut cycle = publisher.keyframe_every.iter().cycle();
    let mut audio_pts = 0i64;
    for n in 0..publisher.frames {
        for (_, ms) in publisher.jumps.iter().filter(|(at, _)| *at == n) {
            offset += ms * MS;
        }
        let clock = if publisher.frozen { 0 } else { n };
        let dts = (clock as f64 * publisher.frame_ms).round() as i64 * MS + offset;
        let keyframe = n == next_key;
        if keyframe {
            next_key = match cycle.next() {
                Some(every) => n + *every as usize,
                None => usize::MAX,
            };
            checker.keyframes.insert(dts);
        } else {
            checker.others.insert(dts);
        }
        let data = match publisher.huge.iter().find(|(at, _)| *at == n) {
            _ if keyframe => keyframe_unit(),
            Some((_, size)) => BIG.slice(..*size),
            None => BIG.slice(..64),
        };
        checker.outputs(packager.push("source", video(dts, keyframe, data)).unwrap())?;
        // AAC at 48 kHz alongside, on its own clock.
        while audio_pts <= dts {
            let audio = Frame::Audio(AudioFrame {
                pts: audio_pts,
                data: Bytes::from_static(&[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 1, 2, 3]),
            });
            checker.outputs(packager.push("source", audio).unwrap())?;
            audio_pts += 1920;
        }
    }
    checker.outputs(packager.end())?;
    prop_assert_eq!(packager.overlong_segments, 0);
    Ok(checker)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_playlist_keeps_the_rules_whatever_the_encoder_sends(p in publisher()) {
        run(&p)?;
    }
}

/// OBS's default (a keyframe every 250 frames) gives segments of the target length (the
/// playlists keep the rules), each keyframe starts a segment again, and the live
/// playlist is there all along.
#[test]
fn obs_default_keyframe_interval_gets_target_length_segments() {
    let p = Publisher {
        frame_ms: 1000.0 / 30.0,
        keyframe_every: vec![250],
        jumps: Vec::new(),
        huge: Vec::new(),
        frozen: false,
        frames: 1000,
    };
    let checker = run(&p).unwrap();
    // 33.3 s: segments of at most 2.5 s, and a new one at each of the 4 keyframes.
    let segments = checker.segment_independent.len();
    assert!((14..=20).contains(&segments), "{segments} segments");
    let independent = checker.segment_independent.values().filter(|i| **i).count();
    assert_eq!(independent, 4);
    assert!(checker.live_playlists > 100, "{}", checker.live_playlists);
}
