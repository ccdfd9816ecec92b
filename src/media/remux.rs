//! FLV file -> MPEG-TS or CMAF through the same demuxer, muxer and segmenter the live
//! ingest uses.

use bytes::Bytes;

use super::cmaf::{Segmenter, SegmenterSettings};
use super::demux::{DemuxError, FlvDemuxer, MediaEvent};
use super::flv::{AudioTag, FlvError, FlvFileReader, TagKind, VideoTag};
use super::fmp4::{self, Fmp4Error};
use super::frame::{CodecConfig, Frame, VideoCodec, VideoConfig};
use super::sample::{SampleError, annexb_frame};
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
    #[error(transparent)]
    Fmp4(#[from] Fmp4Error),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error("the file has neither video Kawa takes nor AAC audio")]
    NoTracks,
    #[error("AV1 has no MPEG-TS mapping FFmpeg 5.1 reads; remux it to CMAF")]
    Av1InTs,
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
                video |= matches!(VideoTag::parse(tag.body), Ok(VideoTag::SequenceHeader(..)))
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

/// Runs every tag of a whole FLV file through the live demuxer, handing each frame on
/// with the configuration known at that point.
fn for_each_frame(
    flv: &[u8],
    mut on_frame: impl FnMut(Frame, &CodecConfig) -> Result<(), RemuxError>,
) -> Result<RemuxStats, RemuxError> {
    let mut demuxer = FlvDemuxer::new();
    let mut stats = RemuxStats::default();
    for (index, tag) in FlvFileReader::new(flv)?.enumerate() {
        let tag = tag?;
        let event = match tag.kind {
            TagKind::Video => demuxer.video(tag.timestamp_ms, &Bytes::copy_from_slice(tag.body)),
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
                Frame::Video(v) => {
                    stats.video_frames += 1;
                    stats.keyframes += usize::from(v.keyframe);
                }
                Frame::Audio(_) => stats.audio_frames += 1,
            }
            on_frame(frame, demuxer.config())?;
        }
    }
    Ok(stats)
}

/// Remuxes a whole FLV file held in memory, appending TS packets to `out`.
pub fn remux_flv_to_ts(flv: &[u8], out: &mut Vec<u8>) -> Result<RemuxStats, RemuxError> {
    let (has_video, has_audio) = tracks(flv)?;
    if !has_video && !has_audio {
        return Err(RemuxError::NoTracks);
    }
    // Made at the first frame, when the file's video codec is known.
    let mut muxer: Option<TsMuxer> = None;
    for_each_frame(flv, |frame, config| {
        let muxer = match &mut muxer {
            Some(m) => m,
            None => {
                let codec = config
                    .video
                    .as_deref()
                    .map_or(VideoCodec::Avc, VideoConfig::codec);
                if codec == VideoCodec::Av1 {
                    return Err(RemuxError::Av1InTs);
                }
                muxer.insert(TsMuxer::new(has_video, has_audio).with_video_codec(codec))
            }
        };
        let frame = match frame {
            Frame::Video(v) => Frame::Video(annexb_frame(&v, config.video.as_deref())?),
            audio => audio,
        };
        Ok(muxer.write_frame(&frame, out)?)
    })
}

/// Remuxes a whole FLV file held in memory into CMAF, as Kawa's live packager cuts it:
/// the init segment, then every segment's parts, appended to `out` (one playable
/// fragmented MP4). The first configuration of each track is the one used.
pub fn remux_flv_to_cmaf(
    flv: &[u8],
    settings: SegmenterSettings,
    out: &mut Vec<u8>,
) -> Result<RemuxStats, RemuxError> {
    let (has_video, has_audio) = tracks(flv)?;
    if !has_video && !has_audio {
        return Err(RemuxError::NoTracks);
    }
    let mut segmenter: Option<Segmenter> = None;
    let stats = for_each_frame(flv, |frame, config| {
        let ready =
            (!has_video || config.video.is_some()) && (!has_audio || config.audio.is_some());
        if !ready {
            return Ok(());
        }
        let segmenter = match &mut segmenter {
            Some(s) => s,
            None => {
                let video = config.video.as_deref();
                let asc = config.audio.as_ref().map(|a| &a.asc);
                out.extend_from_slice(&fmp4::init_segment(video, asc)?);
                segmenter.insert(Segmenter::new(
                    settings,
                    video.map(VideoConfig::codec),
                    asc.map(|a| a.sample_rate),
                ))
            }
        };
        if let Some(part) = segmenter.push(frame)? {
            out.extend_from_slice(&part.data);
        }
        Ok(())
    })?;
    if let Some(part) = segmenter
        .as_mut()
        .map(Segmenter::flush)
        .transpose()?
        .flatten()
    {
        out.extend_from_slice(&part.data);
    }
    Ok(stats)
}
