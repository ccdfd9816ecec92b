//! A stream's thumbnail: one keyframe (an H.264 or HEVC access unit in Annex B form with
//! its parameter sets, or an AV1 temporal unit) decoded by FFmpeg into a JPEG. Only that
//! picture is decoded: a stream costs one short FFmpeg run every few seconds, not a
//! second decode of its video.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use bytes::Bytes;

use crate::media::frame::VideoConfig;

/// A JPEG larger than this is not a thumbnail.
const MAX_JPEG_BYTES: u64 = 4 * 1024 * 1024;
/// Decoding one picture takes milliseconds; a stuck FFmpeg is killed.
const TIME_LIMIT: Duration = Duration::from_secs(5);
/// Thumbnails are this tall (or the source's height, when smaller).
pub const HEIGHT: u32 = 360;

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("cannot run FFmpeg: {0}")]
    Spawn(std::io::Error),
    #[error("FFmpeg took longer than {TIME_LIMIT:?}")]
    TimedOut,
    #[error("FFmpeg made no picture ({0})")]
    NoPicture(String),
}

/// A temporal delimiter OBU: FFmpeg's `obu` demuxer starts a temporal unit at one.
const AV1_TEMPORAL_DELIMITER: [u8; 2] = [0x12, 0x00];

/// What FFmpeg reads for one keyframe (which carries its parameter sets or sequence
/// header) of a stream with `config`: its raw format (`-f`) and bytes. An AV1 unit gets
/// back the temporal delimiter Kawa's frames leave out.
pub fn input(config: &VideoConfig, keyframe: &Bytes) -> (&'static str, Bytes) {
    match config {
        VideoConfig::Avc(_) => ("h264", keyframe.clone()),
        VideoConfig::Hevc(_) => ("hevc", keyframe.clone()),
        VideoConfig::Av1(_) => {
            let unit = [&AV1_TEMPORAL_DELIMITER[..], keyframe].concat();
            ("obu", Bytes::from(unit))
        }
    }
}

/// The JPEG of `keyframe` (raw video in FFmpeg's `format`), at most `height` lines tall.
pub async fn jpeg(
    program: &Path,
    format: &str,
    keyframe: &[u8],
    height: u32,
) -> Result<Vec<u8>, ThumbnailError> {
    let scale = format!("scale=-2:'min({height},ih)'");
    let mut child = Command::new(program)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args([
            "-f",
            format,
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
            "-vf",
            &scale,
        ])
        .args(["-q:v", "5", "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(ThumbnailError::Spawn)?;
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let run = async {
        if let Some(stdin) = stdin.as_mut() {
            // FFmpeg may stop reading once it has its picture; that is no error.
            let _ = stdin.write_all(keyframe).await;
        }
        drop(stdin);
        let mut out = Vec::new();
        if let Some(stdout) = stdout {
            let _ = stdout.take(MAX_JPEG_BYTES).read_to_end(&mut out).await;
        }
        let status = child.wait().await;
        (out, status)
    };
    let (out, status) = tokio::time::timeout(TIME_LIMIT, run)
        .await
        .map_err(|_| ThumbnailError::TimedOut)?;
    // A JPEG starts with SOI (FF D8).
    if out.starts_with(&[0xFF, 0xD8]) {
        Ok(out)
    } else {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        Err(ThumbnailError::NoPicture(status))
    }
}
