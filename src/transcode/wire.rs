//! Frames and jobs on the wire between a node and a transcoder worker (the
//! `TranscoderService` messages of `proto/kawa.proto`). Pure; everything read from the
//! network is checked and capped here before it reaches FFmpeg or the packager.

use crate::grpc::proto::{MediaFrame, OpusBatch, OpusUnit, Rung, TranscodeJob};
use crate::media::frame::{AudioFrame, Frame, VideoCodec, VideoForm, VideoFrame};
use crate::media::opus::OpusPacket;
use crate::transcode::{Rendition, RenditionKind, SOURCE, TranscodePlan};

/// More rungs than any ladder has.
const MAX_RUNGS: usize = 16;
/// The largest frame Kawa accepts from an encoder (`rtmp.max_message_bytes` caps at
/// this) and so the largest a worker may be sent or send back.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Timestamps beyond this are not from a 90 kHz clock that started this millennium.
const MAX_TICKS: i64 = 1 << 50;
/// An Opus packet is at most 120 ms of 1275-byte frames (RFC 6716, 3.2.5); FFmpeg's
/// are 20 ms. Anything larger is not Opus.
const MAX_OPUS_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a job of {0} rungs (at most {MAX_RUNGS})")]
    TooManyRungs(usize),
    #[error("rung name {0:?} is not a rendition name")]
    RungName(String),
    #[error("rung {name}: height {height} or {video_kbps} kbit/s out of range")]
    RungSize {
        name: String,
        height: u32,
        video_kbps: u32,
    },
    #[error("a job without video has no rungs to encode")]
    NoVideo,
    #[error("video codec {0:?} is not one Kawa sends")]
    VideoCodec(String),
    #[error("a frame of {0} bytes (at most {MAX_FRAME_BYTES})")]
    FrameTooLarge(usize),
    #[error("an Opus packet of {0} bytes (at most {MAX_OPUS_BYTES})")]
    OpusTooLarge(usize),
    #[error("a frame's timestamps are out of range")]
    Timestamp,
}

/// Rendition names as playlists and paths use them.
fn rendition_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != SOURCE
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The job a worker gets for `plan`.
pub fn job(plan: &TranscodePlan, reference: i64, opus: bool) -> TranscodeJob {
    TranscodeJob {
        rungs: plan
            .renditions
            .iter()
            .filter_map(|r| match r.kind {
                RenditionKind::Scaled { height, video_kbps } => Some(Rung {
                    name: r.name.clone(),
                    height,
                    video_kbps,
                }),
                RenditionKind::Source => None,
            })
            .collect(),
        has_video: plan.has_video,
        has_audio: plan.has_audio,
        reference,
        video_codec: plan.video_codec.name().to_owned(),
        opus,
    }
}

/// The plan a worker runs for a job, and the job's reference time.
pub fn plan(job: &TranscodeJob) -> Result<(TranscodePlan, i64), WireError> {
    if job.rungs.len() > MAX_RUNGS {
        return Err(WireError::TooManyRungs(job.rungs.len()));
    }
    if !job.has_video {
        return Err(WireError::NoVideo);
    }
    let mut renditions = vec![Rendition {
        name: SOURCE.to_owned(),
        kind: RenditionKind::Source,
    }];
    for rung in &job.rungs {
        if !rendition_name_ok(&rung.name) {
            return Err(WireError::RungName(rung.name.clone()));
        }
        if !(16..=4320).contains(&rung.height) || !(16..=200_000).contains(&rung.video_kbps) {
            return Err(WireError::RungSize {
                name: rung.name.clone(),
                height: rung.height,
                video_kbps: rung.video_kbps,
            });
        }
        renditions.push(Rendition {
            name: rung.name.clone(),
            kind: RenditionKind::Scaled {
                height: rung.height,
                video_kbps: rung.video_kbps,
            },
        });
    }
    if !(-MAX_TICKS..=MAX_TICKS).contains(&job.reference) {
        return Err(WireError::Timestamp);
    }
    Ok((
        TranscodePlan {
            renditions,
            has_video: job.has_video,
            has_audio: job.has_audio,
            // Empty from a node older than the field: H.264, all it could send.
            video_codec: if job.video_codec.is_empty() {
                VideoCodec::Avc
            } else {
                VideoCodec::from_name(&job.video_codec)
                    .ok_or_else(|| WireError::VideoCodec(job.video_codec.clone()))?
            },
        },
        job.reference,
    ))
}

/// A frame on the wire (`rung`: its index among the job's rungs, for answers).
pub fn to_wire(frame: &Frame, rung: u32) -> MediaFrame {
    match frame {
        Frame::Video(v) => MediaFrame {
            video: true,
            pts: v.pts,
            dts: v.dts,
            keyframe: v.keyframe,
            data: v.data.clone(),
            rung,
        },
        Frame::Audio(a) => MediaFrame {
            video: false,
            pts: a.pts,
            dts: a.pts,
            keyframe: false,
            data: a.data.clone(),
            rung,
        },
    }
}

/// A frame off the wire, with its rung index.
pub fn from_wire(m: MediaFrame) -> Result<(usize, Frame), WireError> {
    if m.data.len() > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge(m.data.len()));
    }
    let in_range = |t: i64| (-MAX_TICKS..=MAX_TICKS).contains(&t);
    if !in_range(m.pts) || !in_range(m.dts) {
        return Err(WireError::Timestamp);
    }
    let frame = if m.video {
        Frame::Video(VideoFrame {
            dts: m.dts,
            pts: m.pts,
            keyframe: m.keyframe,
            data: m.data,
            form: VideoForm::AnnexB,
        })
    } else {
        Frame::Audio(AudioFrame {
            pts: m.pts,
            data: m.data,
        })
    };
    Ok((m.rung as usize, frame))
}

/// Opus packets on the wire (a worker's answer).
pub fn opus_to_wire(packets: Vec<OpusPacket>) -> OpusBatch {
    OpusBatch {
        units: (packets.into_iter())
            .map(|p| OpusUnit {
                pts: p.pts,
                data: p.data,
            })
            .collect(),
    }
}

/// Opus packets off the wire, each checked for size and time.
pub fn opus_from_wire(batch: OpusBatch) -> Result<Vec<OpusPacket>, WireError> {
    (batch.units.into_iter())
        .map(|u| {
            if u.data.len() > MAX_OPUS_BYTES {
                return Err(WireError::OpusTooLarge(u.data.len()));
            }
            if !(-MAX_TICKS..=MAX_TICKS).contains(&u.pts) {
                return Err(WireError::Timestamp);
            }
            Ok(OpusPacket {
                pts: u.pts,
                data: u.data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn plan_of(rungs: &[(&str, u32, u32)]) -> TranscodePlan {
        let mut renditions = vec![Rendition {
            name: SOURCE.into(),
            kind: RenditionKind::Source,
        }];
        renditions.extend(rungs.iter().map(|(n, h, k)| Rendition {
            name: (*n).into(),
            kind: RenditionKind::Scaled {
                height: *h,
                video_kbps: *k,
            },
        }));
        TranscodePlan {
            renditions,
            has_video: true,
            has_audio: true,
            video_codec: VideoCodec::Hevc,
        }
    }

    #[test]
    fn a_plan_crosses_the_wire_unchanged() {
        let plan = plan_of(&[("480p", 480, 1400), ("360p", 360, 800)]);
        assert_eq!(super::plan(&job(&plan, 12345, false)), Ok((plan, 12345)));
    }

    #[test]
    fn hostile_jobs_are_refused() {
        let mut j = job(&plan_of(&[("../x", 480, 1400)]), 0, false);
        assert!(matches!(super::plan(&j), Err(WireError::RungName(_))));
        j.rungs[0].name = "source".into();
        assert!(matches!(super::plan(&j), Err(WireError::RungName(_))));
        j.rungs[0].name = "ok".into();
        j.rungs[0].height = 100_000;
        assert!(matches!(super::plan(&j), Err(WireError::RungSize { .. })));
        let many: Vec<(&str, u32, u32)> = (0..17).map(|_| ("r", 240, 300)).collect();
        assert!(matches!(
            super::plan(&job(&plan_of(&many), 0, false)),
            Err(WireError::TooManyRungs(17))
        ));
    }

    proptest! {
        #[test]
        fn frames_round_trip_or_are_refused(
            video: bool, pts in any::<i64>(), dts in any::<i64>(), keyframe: bool,
            data in proptest::collection::vec(any::<u8>(), 0..64), rung in 0u32..20,
        ) {
            let m = MediaFrame { video, pts, dts, keyframe, data: Bytes::from(data), rung };
            match from_wire(m.clone()) {
                Ok((r, frame)) => {
                    prop_assert_eq!(r, rung as usize);
                    let back = to_wire(&frame, rung);
                    prop_assert_eq!(back.pts, m.pts);
                    prop_assert_eq!(&back.data, &m.data);
                    if video {
                        prop_assert_eq!(back, m);
                    }
                }
                Err(e) => prop_assert_eq!(e, WireError::Timestamp),
            }
        }

        #[test]
        fn opus_round_trips_or_is_refused(
            pts in any::<i64>(), size in prop_oneof![0usize..2000, 8000usize..9000],
        ) {
            let batch = OpusBatch {
                units: vec![OpusUnit { pts, data: Bytes::from(vec![0xFC; size]) }],
            };
            match opus_from_wire(batch.clone()) {
                Ok(packets) => prop_assert_eq!(opus_to_wire(packets), batch),
                Err(WireError::OpusTooLarge(n)) => prop_assert!(n > MAX_OPUS_BYTES),
                Err(e) => {
                    prop_assert_eq!(e, WireError::Timestamp);
                    prop_assert!(!(-MAX_TICKS..=MAX_TICKS).contains(&pts));
                }
            }
        }
    }
}
