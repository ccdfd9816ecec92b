//! FFmpeg's stdout (MPEG-TS) through the rung demuxer, in pieces of varying size.
#![no_main]

use kawa::transcode::demux::RungDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let mut demuxer = RungDemuxer::new(3, 1 << 33);
    for chunk in data.chunks(usize::from(piece).max(1)) {
        if demuxer.push(chunk).is_err() {
            return;
        }
    }
    let _ = demuxer.flush();
});
