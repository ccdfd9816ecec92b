//! The benchmarks' input: one typical OBS-like stream, encoded once.

use std::path::Path;
use std::process::Command;

/// 20 s of 1280x720 at 30 fps, 3 Mbit/s CBR-ish H.264 with 2 s GOPs, and AAC: the shape
/// of a typical OBS stream. Encoded once; publishers copy it.
pub fn make_source(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("source-720p-3mbps.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "20",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3000k",
            "-maxrate",
            "3000k",
        ])
        .args([
            "-bufsize",
            "6000k",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    path
}
