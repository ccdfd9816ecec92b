//! What reaches the SRT port: datagrams through the SRT stack's packet parser (vendored
//! srt-protocol), the streamid through Kawa's parser, and payloads through the TS ingest
//! in pieces of varying size.
#![no_main]

use kawa::ingest::stream_id;
use kawa::media::ts_ingest::TsIngest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = srt_protocol::packet::Packet::parse(&mut std::io::Cursor::new(data), false);
    let _ = stream_id::parse(std::str::from_utf8(data).ok());
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let mut ingest = TsIngest::new();
    let mut out = Vec::new();
    for chunk in data.chunks(usize::from(piece).max(1) * 8) {
        ingest.push(chunk, &mut out);
    }
});
