//! The whole ingest path after the handshake, bytes in and events out: any bytes, with
//! every connect and publish accepted so the fuzzer reaches media too. No panic escapes,
//! and the connection never holds more than its limits allow. (The handshake itself is
//! rml_rtmp's fixed-size exchange; the hostile-peer tests and `rtmp_faults` cover it.)
#![no_main]

use kawa::ingest::{IngestEvent, RtmpProtocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let (mut server, _) = RtmpProtocol::after_handshake(1 << 20).unwrap();
    for piece in bytes.chunks(usize::from(step) + 1) {
        let Ok(events) = server.receive(piece) else {
            return;
        };
        let mut pending: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                IngestEvent::ConnectRequested { request_id, .. }
                | IngestEvent::PublishRequested { request_id, .. } => Some(*request_id),
                _ => None,
            })
            .collect();
        while let Some(id) = pending.pop() {
            let Ok(events) = server.accept(id) else {
                return;
            };
            pending.extend(events.iter().filter_map(|e| match e {
                IngestEvent::PublishRequested { request_id, .. } => Some(*request_id),
                _ => None,
            }));
        }
        assert!(server.buffered() <= 2 << 20);
    }
});
