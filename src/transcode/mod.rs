//! The transcoding plan for one stream: which renditions to make, and the FFmpeg command
//! line that makes them all in one process (decode once, scale per rung).
//!
//! Pure: settings and codec config in, argv out. The Transcoder actor runs it.

use crate::config::{HlsSettings, LadderPreset};
use crate::media::frame::CodecConfig;

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

/// The ladder for one stream, decided from the source's real SPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodePlan {
    pub renditions: Vec<Rendition>,
    pub has_video: bool,
    pub has_audio: bool,
}

impl TranscodePlan {
    pub fn new(config: &CodecConfig, hls: &HlsSettings) -> Self {
        let mut renditions = vec![Rendition {
            name: SOURCE.to_owned(),
            kind: RenditionKind::Source,
        }];
        let source_height = config.video.as_ref().map(|v| v.avc.info.height);
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
        }
    }

    /// FFmpeg's argv (without the program name): MPEG-TS on stdin, HLS segments and
    /// playlists PUT to `{upload_base}/{rendition}/...`.
    pub fn ffmpeg_args(&self, hls: &HlsSettings, upload_base: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "-hide_banner",
            "-nostats",
            "-loglevel",
            "warning",
            // The input starts at a keyframe with SPS/PPS and ADTS headers: everything
            // FFmpeg needs is in the first second, so don't let it probe for five.
            "-probesize",
            "500000",
            "-analyzeduration",
            "1000000",
            "-f",
            "mpegts",
            "-i",
            "pipe:0",
        ]
        .map(String::from)
        .to_vec();

        let scaled: Vec<(u32, u32)> = self
            .renditions
            .iter()
            .filter_map(|r| match r.kind {
                RenditionKind::Scaled { height, video_kbps } => Some((height, video_kbps)),
                RenditionKind::Source => None,
            })
            .collect();
        if self.has_video && !scaled.is_empty() {
            let outputs: String = (0..scaled.len()).map(|i| format!("[s{i}]")).collect();
            let mut graph = format!("[0:v]split={}{outputs}", scaled.len());
            for (i, (height, _)) in scaled.iter().enumerate() {
                graph.push_str(&format!(";[s{i}]scale=-2:{height}[v{i}]"));
            }
            args.extend(["-filter_complex".into(), graph]);
        }

        let mut stream_map = Vec::new();
        let mut scaled_index = 0;
        for (i, rendition) in self.renditions.iter().enumerate() {
            let mut entry = Vec::new();
            if self.has_video {
                let input = match rendition.kind {
                    RenditionKind::Source => "0:v:0".to_owned(),
                    RenditionKind::Scaled { .. } => {
                        scaled_index += 1;
                        format!("[v{}]", scaled_index - 1)
                    }
                };
                args.extend(["-map".into(), input]);
                entry.push(format!("v:{i}"));
            }
            if self.has_audio {
                args.extend(["-map".into(), "0:a:0".into()]);
                entry.push(format!("a:{i}"));
            }
            entry.push(format!("name:{}", rendition.name));
            stream_map.push(entry.join(","));

            if let (true, RenditionKind::Scaled { video_kbps, .. }) =
                (self.has_video, &rendition.kind)
            {
                let v = format!("v:{i}");
                let opt = |name: &str| format!("-{name}:{v}");
                args.extend([
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
                    // every rung cuts its segments at the same media times as the copy.
                    opt("force_key_frames"),
                    "source".into(),
                    opt("sc_threshold"),
                    "0".into(),
                    opt("g"),
                    "100000".into(),
                ]);
            } else if self.has_video {
                args.extend([format!("-c:v:{i}"), "copy".into()]);
            }
        }
        if self.has_audio {
            // One AAC track, copied into every rendition: same CODECS, no re-encode.
            args.extend(["-c:a".into(), "copy".into()]);
        }

        args.extend(
            [
                "-max_muxing_queue_size",
                "1024",
                "-f",
                "hls",
                "-hls_segment_type",
                "mpegts",
                "-hls_list_size",
                "10",
                "-method",
                "PUT",
                "-http_persistent",
                "1",
            ]
            .map(String::from),
        );
        args.extend([
            "-hls_time".into(),
            hls.segment_seconds.to_string(),
            "-var_stream_map".into(),
            stream_map.join(" "),
            "-hls_segment_filename".into(),
            format!("{upload_base}/%v/seg_%d.ts"),
            format!("{upload_base}/%v/index.m3u8"),
        ]);
        args
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
            video: Some(Arc::new(VideoConfig { avc })),
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
        let args = plan.ffmpeg_args(&settings, "http://127.0.0.1:1/x");
        assert!(
            !args
                .iter()
                .any(|a| a == "libx264" || a == "-filter_complex")
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["-var_stream_map", "v:0,a:0,name:source"])
        );
    }

    #[test]
    fn ladder_maps_each_rung_with_the_shared_audio() {
        let settings = hls();
        let plan = TranscodePlan::new(&config(720, true), &settings);
        let args = plan.ffmpeg_args(&settings, "http://127.0.0.1:9/ff/t");
        let joined = args.join(" ");
        assert!(
            joined.contains("[0:v]split=2[s0][s1];[s0]scale=-2:480[v0];[s1]scale=-2:360[v1]"),
            "{joined}"
        );
        assert!(
            joined
                .contains("-map 0:v:0 -map 0:a:0 -c:v:0 copy -map [v0] -map 0:a:0 -c:v:1 libx264"),
            "{joined}"
        );
        assert!(joined.contains("-force_key_frames:v:2 source"), "{joined}");
        assert!(
            joined.contains(
                "-var_stream_map v:0,a:0,name:source v:1,a:1,name:480p v:2,a:2,name:360p"
            )
        );
        assert!(joined.ends_with("-hls_segment_filename http://127.0.0.1:9/ff/t/%v/seg_%d.ts http://127.0.0.1:9/ff/t/%v/index.m3u8"));
    }

    #[test]
    fn video_only_stream_maps_no_audio() {
        let settings = hls();
        let plan = TranscodePlan::new(&config(240, false), &settings);
        let args = plan.ffmpeg_args(&settings, "http://h/x");
        assert!(!args.iter().any(|a| a.contains("0:a")));
        assert!(
            args.windows(2)
                .any(|w| w == ["-var_stream_map", "v:0,name:source"])
        );
    }
}
