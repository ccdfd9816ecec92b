//! FLV audio and video tag bodies (what RTMP media messages carry) through the demuxer.
#![no_main]

use kawa::media::demux::FlvDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut demuxer = FlvDemuxer::new();
    // Several tags in a row, split at 0xFF 0xFE markers, so configs meet frames.
    let mut timestamp = 0u32;
    for tag in data.split(|&b| b == 0xFE) {
        let Some((&kind, body)) = tag.split_first() else {
            continue;
        };
        timestamp = timestamp.wrapping_add(u32::from(kind) * 7);
        let _ = if kind & 1 == 0 {
            demuxer.video(timestamp, body)
        } else {
            demuxer.audio(timestamp, body)
        };
    }
});
