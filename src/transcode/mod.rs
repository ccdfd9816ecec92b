//! The transcoding plan for one stream: which renditions to make, and the FFmpeg command
//! line that encodes the scaled rungs in one process (decode once, scale per rung). The
//! source rendition never goes through FFmpeg: Kawa packages it from ingest.
//!
//! Pure: settings and codec config in, argv out. The Transcoder actor runs it.

pub mod demux;
pub mod ffmpeg;
pub mod mpjpeg;
pub mod thumbnail;
pub mod wire;

use crate::config::{HlsSettings, LadderPreset};
use crate::media::frame::{CodecConfig, VideoCodec};

/// The file descriptor the ladder FFmpeg writes its thumbnails to.
pub const THUMBNAIL_FD: i32 = 3;

/// The name of the stream-copied rendition.
pub const SOURCE: &str = "source";

/// What one rendition is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionKind {
    /// The publisher's video, stream-copied.
    Source,
    /// Scaled and re-encoded with x264.
    Scaled { height: u32, video_kbps: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    pub kind: RenditionKind,
}

/// What FFmpeg makes besides the rungs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// JPEGs for `/hls/{path}/thumbnail.jpg`.
    pub thumbnails: bool,
    /// The audio in Opus, for WebRTC.
    pub opus: bool,
}

impl Extras {
    pub const NONE: Self = Self {
        thumbnails: false,
        opus: false,
    };
    pub const THUMBNAILS: Self = Self {
        thumbnails: true,
        opus: false,
    };
}

/// The ladder for one stream, decided from the source's real SPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodePlan {
    pub renditions: Vec<Rendition>,
    pub has_video: bool,
    pub has_audio: bool,
    /// The source's video codec, as FFmpeg is told it.
    pub video_codec: VideoCodec,
}

impl TranscodePlan {
    pub fn new(config: &CodecConfig, hls: &HlsSettings) -> Self {
        let mut renditions = vec![Rendition {
            name: SOURCE.to_owned(),
            kind: RenditionKind::Source,
        }];
        let source_height = config.video.as_ref().map(|v| v.info().height);
        let video_codec = config.video.as_ref().map_or(VideoCodec::Avc, |v| v.codec());
        if let (Some(source_height), LadderPreset::Ladder) = (source_height, hls.preset) {
            // Rungs at or above the source would only upscale: leave them out.
            let mut rungs: Vec<_> = hls
                .rungs
                .iter()
                .filter(|r| r.height < source_height)
                .collect();
            rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
            renditions.extend(rungs.into_iter().map(|r| Rendition {
                name: r.name.clone(),
                kind: RenditionKind::Scaled {
                    height: r.height,
                    video_kbps: r.video_kbps,
                },
            }));
        }
        Self {
            renditions,
            has_video: config.video.is_some(),
            has_audio: config.audio.is_some(),
            video_codec,
        }
    }

    /// The rungs FFmpeg makes, in the order of the video streams of its output.
    pub fn scaled(&self) -> impl Iterator<Item = &Rendition> {
        self.renditions
            .iter()
            .filter(|r| matches!(r.kind, RenditionKind::Scaled { .. }))
    }

    /// FFmpeg's argv (without the program name): MPEG-TS on stdin; one MPEG-TS on
    /// stdout with a video stream per scaled rung (in [`Self::scaled`] order) and the
    /// audio copied once. Timestamps are kept (`-copyts`, no mux delay), so the rungs
    /// come back on the source's clock and Kawa cuts them where it cuts the source.
    ///
    /// With `thumbnails` (and `hls.thumbnail_seconds` set), the decoded source also gives
    /// a JPEG every `thumbnail_seconds`, in multipart JPEG on file descriptor
    /// [`THUMBNAIL_FD`]: the picture comes from the decode the rungs need anyway.
    ///
    /// With `opus` (and audio), the TS also carries the audio in Opus, 48 kHz stereo in
    /// 20 ms packets, for WebRTC viewers (WebRTC has no AAC): one more audio encode in
    /// the FFmpeg that runs anyway.
    pub fn ffmpeg_args(&self, hls: &HlsSettings, extras: Extras) -> Vec<String> {
        let thumbnails = extras.thumbnails;
        let mut args: Vec<String> = [
            "-hide_banner",
            "-nostats",
            "-loglevel",
            "warning",
            // The input starts at a keyframe with SPS/PPS and ADTS headers: half a second
            // of probing finds both (the default five seconds would delay the rungs).
            "-probesize",
            "500000",
            "-analyzeduration",
            "500000",
            // One decoder thread: frame threading would hold frames back.
            "-threads:v",
            "1",
            "-copyts",
            "-f",
            // What `ffmpeg::Feeder` writes: TS, or fragmented MP4 for AV1.
            match self.video_codec {
                VideoCodec::Av1 => "mp4",
                VideoCodec::Avc | VideoCodec::Hevc => "mpegts",
            },
            "-i",
            "pipe:0",
        ]
        .map(String::from)
        .to_vec();

        let scaled: Vec<(u32, u32)> = self
            .scaled()
            .filter_map(|r| match r.kind {
                RenditionKind::Scaled { height, video_kbps } => Some((height, video_kbps)),
                RenditionKind::Source => None,
            })
            .collect();
        let thumbnails = thumbnails && hls.thumbnail_seconds > 0;
        if self.has_video && !scaled.is_empty() {
            let splits = scaled.len() + usize::from(thumbnails);
            let outputs: String = (0..splits).map(|i| format!("[s{i}]")).collect();
            let mut graph = format!("[0:v]split={splits}{outputs}");
            for (i, (height, _)) in scaled.iter().enumerate() {
                graph.push_str(&format!(";[s{i}]scale=-2:{height}[v{i}]"));
            }
            if thumbnails {
                // One frame every `thumbnail_seconds` (dropped before scaling: the
                // others cost an expression each).
                let (every, height) = (hls.thumbnail_seconds, thumbnail::HEIGHT);
                graph.push_str(&format!(
                    ";[s{}]select='isnan(prev_selected_t)+gte(t-prev_selected_t,{every})',\
                     scale=-2:'min({height},ih)'[thumb]",
                    scaled.len()
                ));
            }
            args.extend(["-filter_complex".into(), graph]);
            // Output times on the source's 90 kHz clock, frame for frame: no snapping
            // to a frame-rate grid, no frames dropped or doubled.
            args.extend(
                ["-fps_mode", "passthrough", "-enc_time_base:v", "1:90000"].map(String::from),
            );
            for (i, (_, video_kbps)) in scaled.iter().enumerate() {
                let opt = |name: &str| format!("-{name}:v:{i}");
                args.extend([
                    "-map".into(),
                    format!("[v{i}]"),
                    opt("c"),
                    "libx264".into(),
                    opt("preset"),
                    hls.x264_preset.clone(),
                    opt("profile"),
                    "main".into(),
                    opt("pix_fmt"),
                    "yuv420p".into(),
                    opt("b"),
                    format!("{video_kbps}k"),
                    opt("maxrate"),
                    format!("{}k", video_kbps * 11 / 10),
                    opt("bufsize"),
                    format!("{}k", video_kbps * 2),
                    // Keyframes exactly where the source has them, and nowhere else, so
                    // every rung cuts its segments at the same media times as the source.
                    opt("force_key_frames"),
                    "source".into(),
                    opt("sc_threshold"),
                    "0".into(),
                    opt("g"),
                    "100000".into(),
                    // No B-frames and no lookahead: a frame out about 0.15 s after it
                    // went in, where the defaults take 0.8 s.
                    opt("tune"),
                    "zerolatency".into(),
                ]);
            }
        }
        if self.has_audio {
            // One AAC track, copied: every rung carries it, and it comes back on the same
            // clock and in step with the video.
            args.extend(["-map", "0:a:0", "-c:a:0", "copy"].map(String::from));
            if extras.opus {
                args.extend(
                    [
                        "-map",
                        "0:a:0",
                        "-c:a:1",
                        "libopus",
                        "-b:a:1",
                        "64k",
                        "-ar:a:1",
                        "48000",
                        "-ac:a:1",
                        "2",
                        // No look-ahead beyond the 20 ms packet: audio in step with video.
                        "-application:a:1",
                        "lowdelay",
                        "-frame_duration:a:1",
                        "20",
                    ]
                    .map(String::from),
                );
            }
        }
        args.extend(
            [
                "-max_muxing_queue_size",
                "1024",
                // Timestamps out as they came in: no mux delay added, nothing shifted to
                // avoid negative values.
                "-mpegts_copyts",
                "1",
                "-avoid_negative_ts",
                "disabled",
                // Exactly 2^33 ticks: the 33-bit values written are the input's, but
                // inside FFmpeg they stay positive, which keeps its PCR steady near
                // the 26.5-hour wrap and for streams starting at zero.
                "-output_ts_offset",
                "95443.717689",
                // Packets out as soon as they are made: one ADTS frame per PES, a flush
                // per packet, no waiting to interleave audio with the encoder's video.
                "-pes_payload_size",
                "0",
                "-flush_packets",
                "1",
                "-max_interleave_delta",
                "1",
                "-f",
                "mpegts",
                "pipe:1",
            ]
            .map(String::from),
        );
        if thumbnails && self.has_video && !scaled.is_empty() {
            // A second output, so the sparse pictures never hold up the TS muxer.
            args.extend([
                "-map".into(),
                "[thumb]".into(),
                "-c:v".into(),
                "mjpeg".into(),
                "-q:v".into(),
                "5".into(),
                "-fps_mode".into(),
                "passthrough".into(),
                "-flush_packets".into(),
                "1".into(),
                "-f".into(),
                "mpjpeg".into(),
                format!("pipe:{THUMBNAIL_FD}"),
            ]);
        }
        args
    }

    /// Whether FFmpeg's argv from [`Self::ffmpeg_args`] writes thumbnails.
    pub fn writes_thumbnails(args: &[String]) -> bool {
        args.last()
            .is_some_and(|a| *a == format!("pipe:{THUMBNAIL_FD}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn hls() -> HlsSettings {
        Settings::load(None).unwrap().hls
    }

    fn config(height: u32, audio: bool) -> CodecConfig {
        use crate::media::aac::AudioSpecificConfig;
        use crate::media::avc::{AvcDecoderConfig, SpsInfo};
        use crate::media::frame::{AudioConfig, VideoConfig};
        use std::sync::Arc;
        let avc = AvcDecoderConfig {
            profile_indication: 100,
            profile_compatibility: 0,
            level_indication: 31,
            nal_length_size: 4,
            sps: vec![],
            pps: vec![],
            info: SpsInfo {
                width: height * 16 / 9,
                height,
                frame_rate: Some(30.0),
            },
        };
        let asc = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        CodecConfig {
            video: Some(Arc::new(VideoConfig::Avc(avc))),
            audio: audio.then(|| {
                Arc::new(AudioConfig {
                    adts: asc.adts().unwrap(),
                    asc,
                })
            }),
        }
    }

    #[test]
    fn rungs_at_or_above_the_source_are_left_out() {
        let names = |h| {
            TranscodePlan::new(&config(h, true), &hls())
                .renditions
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(1080), ["source", "480p", "360p"]);
        assert_eq!(names(480), ["source", "360p"]);
        assert_eq!(names(360), ["source"]);
    }

    #[test]
    fn passthrough_is_source_only() {
        let mut settings = hls();
        settings.preset = LadderPreset::Passthrough;
        let plan = TranscodePlan::new(&config(1080, true), &settings);
        assert_eq!(plan.renditions.len(), 1);
        assert_eq!(plan.scaled().count(), 0, "nothing for FFmpeg to do");
    }

    #[test]
    fn ladder_maps_each_rung_with_the_shared_audio() {
        let settings = hls();
        let plan = TranscodePlan::new(&config(720, true), &settings);
        let args = plan.ffmpeg_args(&settings, Extras::NONE);
        let joined = args.join(" ");
        assert!(
            joined.contains("[0:v]split=2[s0][s1];[s0]scale=-2:480[v0];[s1]scale=-2:360[v1]"),
            "{joined}"
        );
        assert!(
            joined.contains("-map [v0] -c:v:0 libx264")
                && joined.contains("-map [v1] -c:v:1 libx264"),
            "{joined}"
        );
        assert!(joined.contains("-force_key_frames:v:1 source"), "{joined}");
        assert!(joined.contains("-map 0:a:0 -c:a:0 copy"), "{joined}");
        assert!(!joined.contains("libopus"), "{joined}");
        assert!(joined.contains("-copyts -f mpegts -i pipe:0"), "{joined}");
        assert!(joined.ends_with("-f mpegts pipe:1"), "{joined}");
        assert!(
            !joined.contains("0:v:0"),
            "the source is not copied through FFmpeg"
        );
        let names: Vec<&str> = plan.scaled().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["480p", "360p"]);
        // For WebRTC: the audio a second time, in Opus, in the same TS.
        let opus = Extras {
            thumbnails: false,
            opus: true,
        };
        let joined = plan.ffmpeg_args(&settings, opus).join(" ");
        assert!(
            joined.contains("-map 0:a:0 -c:a:0 copy -map 0:a:0 -c:a:1 libopus"),
            "{joined}"
        );
    }

    #[test]
    fn thumbnails_are_a_branch_of_the_ladder_and_a_second_output() {
        let settings = hls();
        let plan = TranscodePlan::new(&config(720, true), &settings);
        let args = plan.ffmpeg_args(&settings, Extras::THUMBNAILS);
        let joined = args.join(" ");
        assert!(joined.contains("[0:v]split=3[s0][s1][s2]"), "{joined}");
        assert!(
            joined.contains("[s2]select='isnan(prev_selected_t)+gte(t-prev_selected_t,5)',scale=-2:'min(360,ih)'[thumb]"),
            "{joined}"
        );
        assert!(
            joined.ends_with("-map [thumb] -c:v mjpeg -q:v 5 -fps_mode passthrough -flush_packets 1 -f mpjpeg pipe:3"),
            "{joined}"
        );
        assert!(TranscodePlan::writes_thumbnails(&args));
        // Off: no branch, and FFmpeg writes to no descriptor Kawa did not open.
        let mut off = settings.clone();
        off.thumbnail_seconds = 0;
        let args = plan.ffmpeg_args(&off, Extras::THUMBNAILS);
        assert!(!TranscodePlan::writes_thumbnails(&args));
        assert!(!args.join(" ").contains("thumb"));
        // No rungs, no FFmpeg output to hang them on.
        let small = TranscodePlan::new(&config(240, true), &settings);
        assert!(!TranscodePlan::writes_thumbnails(
            &small.ffmpeg_args(&settings, Extras::THUMBNAILS)
        ));
    }

    #[test]
    fn video_only_stream_maps_no_audio() {
        let settings = hls();
        let plan = TranscodePlan::new(&config(240, false), &settings);
        assert_eq!(plan.scaled().count(), 0, "240p has no rung below it");
        let plan = TranscodePlan::new(&config(720, false), &settings);
        let args = plan.ffmpeg_args(&settings, Extras::NONE);
        assert!(!args.iter().any(|a| a.contains("0:a")));
    }
}
