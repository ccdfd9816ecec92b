//! Turns FFmpeg's HLS output into Kawa's canonical playlists.
//!
//! FFmpeg PUTs each segment, then its own playlist listing it. The packager keeps the
//! segment bytes until that playlist arrives (it gives the duration), then gives the
//! segment Kawa's name, and asks for it to be written *before* the playlist that lists
//! it. Kawa's media sequence counts on across FFmpeg restarts ("generations"); the first
//! segment of a new generation carries `EXT-X-DISCONTINUITY` in every rendition.
//!
//! Pure: calls return [`Output`]s that the session performs, in order.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use m3u8_rs::Playlist;
use time::OffsetDateTime;

use super::playlist::{MasterPlaylist, MediaPlaylist, MediaSegment, Variant};
use crate::media::avc::{codec_string_of_sps, parse_sps};
use crate::media::ts_probe::first_sps;

/// What the packager asks its caller to do, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Store a segment under `{rendition}/{name}`.
    Segment {
        rendition: String,
        name: String,
        data: Bytes,
        /// Seconds.
        duration: f64,
        /// Ingest time of its first frame.
        program_date_time: Option<OffsetDateTime>,
    },
    /// Store `{rendition}/index.m3u8`.
    Playlist { rendition: String, text: String },
    /// Store `master.m3u8`.
    Master { text: String },
    /// Delete `{rendition}/{name}`: it left the playlist a whole window ago.
    Remove { rendition: String, name: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackagerError {
    #[error("unknown rendition `{0}`")]
    UnknownRendition(String),
    #[error("FFmpeg playlist for `{0}` cannot be parsed")]
    BadPlaylist(String),
}

/// What is known of a rendition before its first segment.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionInfo {
    pub name: String,
    /// The video part of CODECS (`avc1.64001f`), when known from the source's SPS; for
    /// encoded rungs it is read from the first segment.
    pub video_codec: Option<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    pub has_video: bool,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    name: String,
    duration: f64,
    discontinuity: bool,
    program_date_time: Option<OffsetDateTime>,
}

#[derive(Debug)]
struct Rendition {
    info: RenditionInfo,
    /// In the current ladder. A rung the ladder dropped (the source's resolution fell
    /// below it) keeps its playlist but leaves the master.
    active: bool,
    window: VecDeque<Entry>,
    retired: VecDeque<String>,
    next_seq: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    /// The FFmpeg generation and segment number last announced.
    last_announced: Option<(u64, u64)>,
    /// FFmpeg's latest playlist: its generation, and (segment number, duration) entries.
    listing: Option<(u64, Vec<(u64, f64)>)>,
    /// Seconds of media announced so far in the current generation (for PDT).
    generation_elapsed: f64,
    pending: HashMap<(u64, u64), Bytes>,
    bits: u64,
    seconds: f64,
    peak_bps: u64,
}

/// Kawa's playlists for one stream.
#[derive(Debug)]
pub struct Packager {
    epoch: u64,
    min_target: u64,
    window: usize,
    target_duration: Option<u64>,
    audio_codec: Option<String>,
    renditions: Vec<Rendition>,
    generation_starts: HashMap<u64, OffsetDateTime>,
    ended: bool,
    /// Segments longer than the target duration (the encoder's keyframe interval grew).
    pub overlong_segments: u64,
}

/// A listed segment whose bytes have not come is waited for while fewer than this many
/// segments are listed after it.
const MAX_SEGMENTS_AWAITED: usize = 3;

/// Generations whose start time is kept (the current one and those still flushing).
const KEPT_GENERATIONS: u64 = 8;

/// Segments shorter than this say little about the bitrate (the last one of a stream).
const MIN_SECONDS_FOR_PEAK: f64 = 0.5;

impl Packager {
    /// `epoch` makes this stream's segment names unique across publishes of the same path
    /// (CDNs cache segments as immutable).
    pub fn new(epoch: u64, segment_seconds: u32, window: usize) -> Self {
        Self {
            epoch,
            min_target: u64::from(segment_seconds),
            window,
            target_duration: None,
            audio_codec: None,
            renditions: Vec::new(),
            generation_starts: HashMap::new(),
            ended: false,
            overlong_segments: 0,
        }
    }

    /// Declares the renditions (on the first transcoder start, and again if the ladder
    /// changes). Known renditions keep their state.
    pub fn set_renditions(&mut self, infos: Vec<RenditionInfo>, audio_codec: Option<String>) {
        self.audio_codec = audio_codec;
        for r in &mut self.renditions {
            r.active = infos.iter().any(|i| i.name == r.info.name);
        }
        for info in infos {
            match self
                .renditions
                .iter_mut()
                .find(|r| r.info.name == info.name)
            {
                Some(r) => {
                    r.info = info;
                    // The bitrate of the new picture, not the old one.
                    r.bits = 0;
                    r.seconds = 0.0;
                    r.peak_bps = 0;
                }
                None => self.renditions.push(Rendition {
                    info,
                    active: true,
                    window: VecDeque::new(),
                    retired: VecDeque::new(),
                    next_seq: 0,
                    media_sequence: 0,
                    discontinuity_sequence: 0,
                    last_announced: None,
                    listing: None,
                    generation_elapsed: 0.0,
                    pending: HashMap::new(),
                    bits: 0,
                    seconds: 0.0,
                    peak_bps: 0,
                }),
            }
        }
    }

    /// The frame rate measured from timestamps, for renditions whose SPS did not say
    /// (encoders may leave out the VUI timing info): FRAME-RATE belongs on every variant.
    pub fn fill_frame_rate(&mut self, fps: f64) {
        for r in &mut self.renditions {
            if r.info.has_video && r.info.frame_rate.is_none() {
                r.info.frame_rate = Some(fps);
            }
        }
    }

    /// Whether any video rendition still lacks a frame rate.
    pub fn needs_frame_rate(&self) -> bool {
        self.renditions
            .iter()
            .any(|r| r.info.has_video && r.info.frame_rate.is_none())
    }

    /// A new FFmpeg generation begins with media ingested at `ingest_time`.
    pub fn start_generation(&mut self, generation: u64, ingest_time: OffsetDateTime) {
        self.generation_starts.insert(generation, ingest_time);
        // Only FFmpegs still flushing need theirs: a stream restarted for weeks keeps a
        // handful, not one per restart.
        self.generation_starts
            .retain(|&g, _| g + KEPT_GENERATIONS > generation);
    }

    pub fn target_duration(&self) -> Option<u64> {
        self.target_duration
    }

    /// The renditions of the current ladder.
    pub fn rendition_names(&self) -> Vec<String> {
        self.renditions
            .iter()
            .filter(|r| r.active)
            .map(|r| r.info.name.clone())
            .collect()
    }

    fn rendition(&mut self, name: &str) -> Result<&mut Rendition, PackagerError> {
        self.renditions
            .iter_mut()
            .find(|r| r.info.name == name)
            .ok_or_else(|| PackagerError::UnknownRendition(name.to_owned()))
    }

    /// FFmpeg finished writing segment `file` (`seg_N.ts`). It is announced as soon as
    /// an FFmpeg playlist has listed it (the playlist may arrive first: FFmpeg writes
    /// segments and playlists on separate connections). Unknown names and segments of a
    /// generation older than one already announced are ignored.
    pub fn segment_uploaded(
        &mut self,
        generation: u64,
        rendition: &str,
        file: &str,
        data: Bytes,
    ) -> Result<Vec<Output>, PackagerError> {
        let r = self.rendition(rendition)?;
        let Some(n) = ffmpeg_segment_number(file) else {
            return Ok(Vec::new());
        };
        let stale = r.last_announced.is_some_and(|last| (generation, n) <= last);
        if stale {
            return Ok(Vec::new());
        }
        r.pending.insert((generation, n), data);
        self.announce(rendition)
    }

    /// FFmpeg wrote its playlist for `rendition`: every segment it lists that has arrived
    /// and is not yet announced is announced now, in order.
    pub fn playlist_uploaded(
        &mut self,
        generation: u64,
        rendition: &str,
        text: &[u8],
    ) -> Result<Vec<Output>, PackagerError> {
        let listed = match m3u8_rs::parse_playlist_res(text) {
            Ok(Playlist::MediaPlaylist(p)) => p.segments,
            _ => return Err(PackagerError::BadPlaylist(rendition.to_owned())),
        };
        let entries = listed
            .iter()
            .filter_map(|s| Some((ffmpeg_segment_number(&s.uri)?, f64::from(s.duration))))
            .collect();
        let r = self.rendition(rendition)?;
        if r.listing.as_ref().is_some_and(|(g, _)| *g > generation) {
            return Ok(Vec::new());
        }
        r.listing = Some((generation, entries));
        self.announce(rendition)
    }

    fn announce(&mut self, rendition: &str) -> Result<Vec<Output>, PackagerError> {
        let epoch = self.epoch;
        let window = self.window;
        let min_target = self.min_target;
        let mut target = self.target_duration;
        let mut overlong = 0;
        let audio_codec = self.audio_codec.clone();
        let generation_starts = self.generation_starts.clone();
        let r = self.rendition(rendition)?;
        let Some((generation, entries)) = r.listing.clone() else {
            return Ok(Vec::new());
        };
        let generation_start = generation_starts.get(&generation).copied();
        let mut out = Vec::new();
        for (position, &(n, duration)) in entries.iter().enumerate() {
            if r.last_announced.is_some_and(|last| (generation, n) <= last) {
                continue;
            }
            let Some(data) = r.pending.remove(&(generation, n)) else {
                // Still on its way: wait for it, unless FFmpeg has long moved on (its
                // PUT failed), so one lost segment cannot stall the stream.
                if entries.len() - position > MAX_SEGMENTS_AWAITED {
                    tracing::warn!(
                        rendition,
                        segment = n,
                        "FFmpeg listed a segment that never arrived; skipped"
                    );
                    continue;
                }
                break;
            };
            let new_generation = r.last_announced.map(|(g, _)| g) != Some(generation);
            if new_generation {
                r.generation_elapsed = 0.0;
            }
            let discontinuity = new_generation && r.last_announced.is_some();
            r.last_announced = Some((generation, n));
            // Older leftovers of this rendition can never be announced now.
            r.pending.retain(|key, _| *key > (generation, n));

            let target = *target.get_or_insert_with(|| (duration.round() as u64).max(min_target));
            if duration.round() as u64 > target {
                overlong += 1;
            }
            if r.info.has_video && r.info.video_codec.is_none() {
                learn_video_facts(&mut r.info, &data);
            }
            let bits = data.len() as u64 * 8;
            r.bits += bits;
            r.seconds += duration;
            if duration >= MIN_SECONDS_FOR_PEAK {
                r.peak_bps = r.peak_bps.max((bits as f64 / duration) as u64);
            }
            let seq = r.next_seq;
            r.next_seq += 1;
            let name = format!("{epoch}_{seq}.ts");
            let program_date_time = generation_start
                .map(|start| start + time::Duration::seconds_f64(r.generation_elapsed));
            r.generation_elapsed += duration;
            out.push(Output::Segment {
                rendition: r.info.name.clone(),
                name: name.clone(),
                data,
                duration,
                program_date_time,
            });
            r.window.push_back(Entry {
                seq,
                name,
                duration,
                discontinuity,
                program_date_time,
            });
            while r.window.len() > window {
                let Some(gone) = r.window.pop_front() else {
                    break;
                };
                r.media_sequence = gone.seq + 1;
                if gone.discontinuity {
                    r.discontinuity_sequence += 1;
                }
                r.retired.push_back(gone.name);
            }
            while r.retired.len() > window {
                let Some(name) = r.retired.pop_front() else {
                    break;
                };
                out.push(Output::Remove {
                    rendition: r.info.name.clone(),
                    name,
                });
            }
        }
        self.target_duration = target;
        self.overlong_segments += overlong;
        if out.iter().any(|o| matches!(o, Output::Segment { .. })) {
            let text = self.media_playlist(rendition).map(|p| p.render());
            if let Some(text) = text {
                out.push(Output::Playlist {
                    rendition: rendition.to_owned(),
                    text,
                });
            }
            if let Some(master) = self.master_playlist(audio_codec.as_deref()) {
                out.push(Output::Master {
                    text: master.render(),
                });
            }
        }
        Ok(out)
    }

    /// The stream ended: every playlist again, with `EXT-X-ENDLIST`.
    pub fn end(&mut self) -> Vec<Output> {
        let mut out = self.announce_unlisted();
        self.ended = true;
        let names: Vec<String> = self
            .renditions
            .iter()
            .filter(|r| !r.window.is_empty())
            .map(|r| r.info.name.clone())
            .collect();
        for name in names {
            if let Some(playlist) = self.media_playlist(&name) {
                out.push(Output::Playlist {
                    rendition: name,
                    text: playlist.render(),
                });
            }
        }
        out
    }

    /// At the end of a stream FFmpeg sometimes writes a rendition's last segment but not
    /// the playlist that lists it. The renditions are cut alike, so the duration another
    /// rendition's playlist gives for the same segment is that segment's duration.
    fn announce_unlisted(&mut self) -> Vec<Output> {
        let known: HashMap<(u64, u64), f64> = self
            .renditions
            .iter()
            .filter_map(|r| r.listing.as_ref())
            .flat_map(|(g, entries)| entries.iter().map(move |(n, d)| ((*g, *n), *d)))
            .collect();
        for r in &mut self.renditions {
            let Some((generation, entries)) = r.listing.as_mut() else {
                continue;
            };
            let mut unlisted: Vec<u64> = r
                .pending
                .keys()
                .filter(|(g, n)| *g == *generation && !entries.iter().any(|(e, _)| e == n))
                .map(|(_, n)| *n)
                .collect();
            unlisted.sort_unstable();
            for n in unlisted {
                if let Some(duration) = known.get(&(*generation, n)) {
                    entries.push((n, *duration));
                }
            }
        }
        let names: Vec<String> = self
            .renditions
            .iter()
            .map(|r| r.info.name.clone())
            .collect();
        names
            .iter()
            .flat_map(|name| self.announce(name).unwrap_or_default())
            .collect()
    }

    /// Every segment file still on disk, for clean-up after the stream.
    pub fn files(&self) -> Vec<(String, String)> {
        self.renditions
            .iter()
            .flat_map(|r| {
                let names = r
                    .window
                    .iter()
                    .map(|e| e.name.clone())
                    .chain(r.retired.iter().cloned());
                names.map(|n| (r.info.name.clone(), n)).collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn media_playlist(&self, rendition: &str) -> Option<MediaPlaylist> {
        let r = self.renditions.iter().find(|r| r.info.name == rendition)?;
        Some(MediaPlaylist {
            target_duration: self.target_duration?,
            media_sequence: r.media_sequence,
            discontinuity_sequence: r.discontinuity_sequence,
            segments: r
                .window
                .iter()
                .map(|e| MediaSegment {
                    uri: e.name.clone(),
                    duration: e.duration,
                    discontinuity: e.discontinuity,
                    program_date_time: e.program_date_time,
                })
                .collect(),
            ended: self.ended,
        })
    }

    /// The master playlist, once every rendition has a segment and known codecs.
    pub fn master_playlist(&self, audio_codec: Option<&str>) -> Option<MasterPlaylist> {
        let mut variants = Vec::new();
        for r in self.renditions.iter().filter(|r| r.active) {
            if r.next_seq == 0 || (r.info.has_video && r.info.video_codec.is_none()) {
                return None;
            }
            let codecs: Vec<&str> = r
                .info
                .video_codec
                .as_deref()
                .into_iter()
                .chain(audio_codec)
                .collect();
            let average = (r.seconds > 0.0).then(|| (r.bits as f64 / r.seconds) as u64);
            variants.push(Variant {
                uri: format!("{}/index.m3u8", r.info.name),
                bandwidth: r.peak_bps.max(average.unwrap_or(0)),
                average_bandwidth: average,
                codecs: codecs.join(","),
                resolution: r.info.resolution,
                frame_rate: r.info.frame_rate,
            });
        }
        // Players start with the first variant: the highest bitrate goes first.
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        Some(MasterPlaylist { variants })
    }
}

/// A frame rate measured from millisecond timestamps, snapped to the nearest standard
/// rate within 0.5 % (RTMP's 33/34 ms steps make 29.97 look like 29.96), else rounded to
/// three decimals as FRAME-RATE is written.
pub fn nominal_frame_rate(measured: f64) -> f64 {
    const STANDARD: [f64; 10] = [
        23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 120.0,
    ];
    STANDARD
        .iter()
        .copied()
        .filter(|rate| (measured - rate).abs() / rate < 0.005)
        .min_by(|a, b| (measured - a).abs().total_cmp(&(measured - b).abs()))
        .unwrap_or((measured * 1000.0).round() / 1000.0)
}

/// Reads the SPS of an encoded rung's first segment: its CODECS and RESOLUTION are
/// what the encoder really wrote, not what was asked for.
fn learn_video_facts(info: &mut RenditionInfo, segment: &[u8]) {
    if let Some(sps) = first_sps(segment) {
        info.video_codec = codec_string_of_sps(&sps);
        if let Ok(facts) = parse_sps(&sps) {
            info.resolution = Some((facts.width, facts.height));
            info.frame_rate = info.frame_rate.or(facts.frame_rate);
        }
    }
}

/// `seg_12.ts` -> 12.
fn ffmpeg_segment_number(uri: &str) -> Option<u64> {
    let name = uri.rsplit('/').next()?;
    name.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> RenditionInfo {
        RenditionInfo {
            name: name.into(),
            video_codec: Some("avc1.64000d".into()),
            resolution: Some((320, 240)),
            frame_rate: Some(25.0),
            has_video: true,
        }
    }

    fn ffmpeg_playlist(first: u64, durations: &[f64]) -> Vec<u8> {
        let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n");
        text.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n"));
        for (i, d) in durations.iter().enumerate() {
            text.push_str(&format!("#EXTINF:{d:.6},\nseg_{}.ts\n", first + i as u64));
        }
        text.into_bytes()
    }

    fn packager() -> Packager {
        let mut p = Packager::new(1700000000, 2, 6);
        p.set_renditions(vec![info("source")], Some("mp4a.40.2".into()));
        p.start_generation(0, time::macros::datetime!(2026-11-27 12:00:00 UTC));
        p
    }

    fn publish(p: &mut Packager, generation: u64, n: u64, duration: f64) -> Vec<Output> {
        p.segment_uploaded(
            generation,
            "source",
            &format!("seg_{n}.ts"),
            Bytes::from(vec![0u8; 1000]),
        )
        .unwrap();
        let first = n.saturating_sub(3);
        let durations: Vec<f64> = (first..=n).map(|_| duration).collect();
        p.playlist_uploaded(generation, "source", &ffmpeg_playlist(first, &durations))
            .unwrap()
    }

    #[test]
    fn segment_is_written_before_the_playlist_that_lists_it() {
        let mut p = packager();
        let out = publish(&mut p, 0, 0, 2.0);
        assert!(matches!(&out[0], Output::Segment { name, .. } if name == "1700000000_0.ts"));
        let Output::Playlist { text, .. } = &out[1] else {
            panic!("{out:?}")
        };
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:2026-11-27T12:00:00.000Z\n#EXTINF:2.000,\n1700000000_0.ts\n"
        ));
        let Output::Master { text } = &out[2] else {
            panic!("{out:?}")
        };
        assert!(
            text.contains("CODECS=\"avc1.64000d,mp4a.40.2\",RESOLUTION=320x240,FRAME-RATE=25.000"),
            "{text}"
        );
        assert!(
            text.contains("BANDWIDTH=4000,AVERAGE-BANDWIDTH=4000"),
            "{text}"
        );
    }

    #[test]
    fn a_rung_the_ladder_drops_leaves_the_master_and_new_codecs_enter_it() {
        let mut p = Packager::new(1700000000, 2, 6);
        p.set_renditions(vec![info("source"), info("480p")], Some("mp4a.40.2".into()));
        p.start_generation(0, time::macros::datetime!(2026-11-27 12:00:00 UTC));
        for rendition in ["source", "480p"] {
            p.segment_uploaded(0, rendition, "seg_0.ts", Bytes::from(vec![0u8; 1000]))
                .unwrap();
            p.playlist_uploaded(0, rendition, &ffmpeg_playlist(0, &[2.0]))
                .unwrap();
        }
        // The source drops to 360p: no 480p rung any more, a new profile.
        let mut small = info("source");
        small.video_codec = Some("avc1.42c01e".into());
        small.resolution = Some((640, 360));
        p.set_renditions(vec![small], Some("mp4a.40.5".into()));
        p.start_generation(1, time::macros::datetime!(2026-11-27 12:00:02 UTC));
        p.segment_uploaded(1, "source", "seg_0.ts", Bytes::from(vec![0u8; 1000]))
            .unwrap();
        let out = p
            .playlist_uploaded(1, "source", &ffmpeg_playlist(0, &[2.0]))
            .unwrap();
        let Some(Output::Master { text }) = out.last() else {
            panic!("{out:?}")
        };
        assert!(!text.contains("480p"), "{text}");
        assert!(
            text.contains("CODECS=\"avc1.42c01e,mp4a.40.5\",RESOLUTION=640x360"),
            "{text}"
        );
        assert_eq!(p.rendition_names(), ["source"]);
        let playlist = p.media_playlist("source").unwrap().render();
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    }

    #[test]
    fn a_segment_is_never_listed_before_its_bytes_arrived() {
        let mut p = packager();
        let out = p
            .playlist_uploaded(0, "source", &ffmpeg_playlist(0, &[2.0]))
            .unwrap();
        assert!(out.is_empty());
        assert!(p.media_playlist("source").is_none());
    }

    #[test]
    fn playlist_before_its_segment_announces_the_segment_on_arrival() {
        // FFmpeg writes playlists and segments on separate connections: the playlist
        // listing seg_0 can arrive while seg_0's body is still on its way.
        let mut p = packager();
        let out = p
            .playlist_uploaded(0, "source", &ffmpeg_playlist(0, &[2.0]))
            .unwrap();
        assert!(out.is_empty());
        let out = p
            .segment_uploaded(0, "source", "seg_0.ts", Bytes::from_static(b"late"))
            .unwrap();
        assert!(
            matches!(&out[0], Output::Segment { name, .. } if name == "1700000000_0.ts"),
            "{out:?}"
        );
        assert!(matches!(&out[1], Output::Playlist { .. }));
    }

    #[test]
    fn a_segment_that_never_comes_does_not_stall_the_stream() {
        let mut p = packager();
        publish(&mut p, 0, 0, 2.0);
        // seg_1's PUT failed; seg_2.. arrive.
        let mut announced = Vec::new();
        for n in 2..6 {
            p.segment_uploaded(
                0,
                "source",
                &format!("seg_{n}.ts"),
                Bytes::from_static(b"x"),
            )
            .unwrap();
            let durations: Vec<f64> = (0..=n).map(|_| 2.0).collect();
            for o in p
                .playlist_uploaded(0, "source", &ffmpeg_playlist(0, &durations))
                .unwrap()
            {
                if let Output::Segment { name, .. } = o {
                    announced.push(name);
                }
            }
        }
        assert_eq!(
            announced,
            [
                "1700000000_1.ts",
                "1700000000_2.ts",
                "1700000000_3.ts",
                "1700000000_4.ts"
            ]
        );
    }

    #[test]
    fn a_last_segment_ffmpeg_never_listed_is_announced_at_the_end() {
        let mut p = Packager::new(7, 2, 6);
        p.set_renditions(vec![info("source"), info("180p")], None);
        for rendition in ["source", "180p"] {
            p.segment_uploaded(0, rendition, "seg_0.ts", Bytes::from_static(b"x"))
                .unwrap();
            p.playlist_uploaded(0, rendition, &ffmpeg_playlist(0, &[2.0]))
                .unwrap();
            p.segment_uploaded(0, rendition, "seg_1.ts", Bytes::from_static(b"y"))
                .unwrap();
        }
        // Only 180p's final playlist came.
        p.playlist_uploaded(0, "180p", &ffmpeg_playlist(0, &[2.0, 1.5]))
            .unwrap();
        let out = p.end();
        assert!(out.iter().any(|o| matches!(o, Output::Segment { rendition, name, .. } if rendition == "source" && name == "7_1.ts")), "{out:?}");
        let source = p.media_playlist("source").unwrap();
        assert_eq!(source.segments.len(), 2);
        assert_eq!(source.segments[1].duration, 1.5);
        assert!(source.ended);
    }

    #[test]
    fn measured_frame_rates_snap_to_the_standard_ones() {
        assert_eq!(nominal_frame_rate(29.962), 29.97);
        assert_eq!(nominal_frame_rate(30.02), 30.0);
        assert_eq!(nominal_frame_rate(24.99), 25.0);
        assert_eq!(nominal_frame_rate(59.93), 59.94);
        assert_eq!(nominal_frame_rate(12.5), 12.5);
        assert_eq!(nominal_frame_rate(17.1234), 17.123);
    }

    #[test]
    fn a_measured_frame_rate_fills_in_for_a_silent_sps() {
        let mut p = Packager::new(7, 2, 6);
        let mut silent = info("source");
        silent.frame_rate = None;
        p.set_renditions(vec![silent, info("180p")], None);
        assert!(p.needs_frame_rate());
        p.fill_frame_rate(29.97);
        assert!(!p.needs_frame_rate());
        for rendition in ["source", "180p"] {
            p.segment_uploaded(0, rendition, "seg_0.ts", Bytes::from_static(b"x"))
                .unwrap();
            p.playlist_uploaded(0, rendition, &ffmpeg_playlist(0, &[2.0]))
                .unwrap();
        }
        let master = p.master_playlist(None).unwrap().render();
        assert!(master.contains("FRAME-RATE=29.970"), "{master}");
        assert!(
            master.contains("FRAME-RATE=25.000"),
            "the SPS's own rate is kept: {master}"
        );
    }

    #[test]
    fn window_slides_and_old_files_are_removed_a_window_later() {
        let mut p = packager();
        let mut removed = Vec::new();
        for n in 0..20 {
            for o in publish(&mut p, 0, n, 2.0) {
                if let Output::Remove { name, .. } = o {
                    removed.push(name);
                }
            }
        }
        let playlist = p.media_playlist("source").unwrap();
        assert_eq!(playlist.segments.len(), 6);
        assert_eq!(playlist.media_sequence, 14);
        assert_eq!(removed.len(), 20 - 12);
        assert_eq!(removed[0], "1700000000_0.ts");
        assert_eq!(p.files().len(), 12);
    }

    #[test]
    fn new_generation_continues_the_sequence_with_a_discontinuity() {
        let mut p = packager();
        for n in 0..3 {
            publish(&mut p, 0, n, 2.0);
        }
        p.start_generation(1, time::macros::datetime!(2026-11-27 12:00:10 UTC));
        // FFmpeg numbers from 0 again.
        publish(&mut p, 1, 0, 2.0);
        publish(&mut p, 1, 1, 2.0);
        let text = p.media_playlist("source").unwrap().render();
        assert!(text.contains("1700000000_2.ts\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T12:00:10.000Z\n#EXTINF:2.000,\n1700000000_3.ts\n"), "{text}");
        // The discontinuity scrolls out: the discontinuity sequence counts it.
        for n in 2..10 {
            publish(&mut p, 1, n, 2.0);
        }
        let playlist = p.media_playlist("source").unwrap();
        assert_eq!(playlist.discontinuity_sequence, 1);
        assert!(playlist.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn late_segments_of_an_old_generation_are_dropped() {
        let mut p = packager();
        publish(&mut p, 0, 0, 2.0);
        publish(&mut p, 1, 0, 2.0);
        let out = publish(&mut p, 0, 1, 2.0);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn target_duration_is_fixed_and_overlong_segments_are_counted() {
        let mut p = packager();
        publish(&mut p, 0, 0, 2.04);
        publish(&mut p, 0, 1, 4.0);
        assert_eq!(p.target_duration(), Some(2));
        assert_eq!(p.overlong_segments, 1);
        let mut slow = Packager::new(1, 2, 6);
        slow.set_renditions(vec![info("source")], None);
        slow.segment_uploaded(0, "source", "seg_0.ts", Bytes::from_static(b"x"))
            .unwrap();
        slow.playlist_uploaded(0, "source", &ffmpeg_playlist(0, &[4.0]))
            .unwrap();
        assert_eq!(
            slow.target_duration(),
            Some(4),
            "an encoder with 4 s keyframes"
        );
    }

    #[test]
    fn end_adds_endlist_and_master_waits_for_every_rendition() {
        let mut p = Packager::new(7, 2, 6);
        p.set_renditions(vec![info("source"), info("180p")], None);
        p.segment_uploaded(0, "source", "seg_0.ts", Bytes::from_static(b"x"))
            .unwrap();
        let out = p
            .playlist_uploaded(0, "source", &ffmpeg_playlist(0, &[2.0]))
            .unwrap();
        assert!(!out.iter().any(|o| matches!(o, Output::Master { .. })));
        let ended = p.end();
        let [Output::Playlist { text, .. }] = &ended[..] else {
            panic!("{ended:?}")
        };
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn garbage_from_ffmpeg_is_an_error_not_a_panic() {
        let mut p = packager();
        assert!(
            p.playlist_uploaded(0, "source", b"\xff\xfe garbage")
                .is_err()
        );
        assert_eq!(
            p.playlist_uploaded(0, "nope", &ffmpeg_playlist(0, &[2.0])),
            Err(PackagerError::UnknownRendition("nope".into()))
        );
        p.segment_uploaded(0, "source", "../../etc/passwd", Bytes::new())
            .unwrap();
    }
}
