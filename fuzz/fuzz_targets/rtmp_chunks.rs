//! The RTMP chunk reader over any bytes, read in pieces of any size: no panic, and no
//! message or buffer beyond the limits in force.
#![no_main]

use kawa::ingest::chunk::{ChunkLimits, ChunkReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let limits = if step & 0x80 == 0 {
        ChunkLimits::BEFORE_PUBLISH
    } else {
        ChunkLimits::publishing(1 << 20)
    };
    let mut reader = ChunkReader::new(limits);
    let mut out = Vec::new();
    for piece in bytes.chunks(usize::from(step & 0x7F) + 1) {
        if reader.push(piece, &mut out).is_err() {
            return;
        }
        assert!(reader.buffered() <= limits.max_buffered);
        for m in out.drain(..) {
            assert!(m.payload.len() <= limits.max_media_message as usize);
        }
    }
});
