//! FLV file -> MPEG-TS through the same demuxer and muxer the live ingest uses.

use super::demux::{DemuxError, FlvDemuxer, MediaEvent};
use super::flv::{AudioTag, FlvError, FlvFileReader, TagKind, VideoTag};
use super::ts::{TsError, TsMuxer};

#[derive(Debug, thiserror::Error)]
pub enum RemuxError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error("tag {index} at {timestamp_ms} ms: {source}")]
    Tag {
        index: usize,
        timestamp_ms: u32,
        source: DemuxError,
    },
    #[error(transparent)]
    Ts(#[from] TsError),
    #[error("the file has neither H.264 video nor AAC audio")]
    NoTracks,
}

/// Counts of what went through, for the tool's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemuxStats {
    pub video_frames: usize,
    pub audio_frames: usize,
    pub keyframes: usize,
}

/// Which tracks the file has: a track exists when its sequence header does.
fn tracks(flv: &[u8]) -> Result<(bool, bool), FlvError> {
    let (mut video, mut audio) = (false, false);
    for tag in FlvFileReader::new(flv)? {
        let tag = tag?;
        match tag.kind {
            TagKind::Video => {
                video |= matches!(VideoTag::parse(tag.body), Ok(VideoTag::SequenceHeader(_)))
            }
            TagKind::Audio => {
                audio |= matches!(AudioTag::parse(tag.body), Ok(AudioTag::SequenceHeader(_)))
            }
            TagKind::Script => {}
        }
        if video && audio {
            break;
        }
    }
    Ok((video, audio))
}

/// Remuxes a whole FLV file held in memory, appending TS packets to `out`.
pub fn remux_flv_to_ts(flv: &[u8], out: &mut Vec<u8>) -> Result<RemuxStats, RemuxError> {
    let (has_video, has_audio) = tracks(flv)?;
    if !has_video && !has_audio {
        return Err(RemuxError::NoTracks);
    }
    let mut demuxer = FlvDemuxer::new();
    let mut muxer = TsMuxer::new(has_video, has_audio);
    let mut stats = RemuxStats::default();
    for (index, tag) in FlvFileReader::new(flv)?.enumerate() {
        let tag = tag?;
        let event = match tag.kind {
            TagKind::Video => demuxer.video(tag.timestamp_ms, tag.body),
            TagKind::Audio => demuxer.audio(tag.timestamp_ms, tag.body),
            TagKind::Script => continue,
        };
        let event = event.map_err(|source| RemuxError::Tag {
            index,
            timestamp_ms: tag.timestamp_ms,
            source,
        })?;
        if let MediaEvent::Frame(frame) = event {
            match &frame {
                super::frame::Frame::Video(v) => {
                    stats.video_frames += 1;
                    stats.keyframes += usize::from(v.keyframe);
                }
                super::frame::Frame::Audio(_) => stats.audio_frames += 1,
            }
            muxer.write_frame(&frame, out)?;
        }
    }
    Ok(stats)
}
