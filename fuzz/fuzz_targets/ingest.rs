//! The whole ingest path, bytes in and events out: a real RTMP handshake, then any bytes,
//! with every connect and publish accepted so the fuzzer reaches media too. No panic
//! escapes, and the connection never holds more than its limits allow.
#![no_main]

use kawa::ingest::{IngestEvent, RtmpProtocol};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

/// A completed handshake: the server side, and the bytes the client sent.
fn handshaken() -> RtmpProtocol {
    let mut server = RtmpProtocol::with_max_media_message(1 << 20);
    let mut client = Handshake::new(PeerType::Client);
    let mut to_server = client.generate_outbound_p0_and_p1().unwrap();
    loop {
        let mut to_client = Vec::new();
        for e in server.receive(&to_server).unwrap() {
            if let IngestEvent::Send(b) = e {
                to_client.extend_from_slice(&b);
            }
        }
        match client.process_bytes(&to_client).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                server.receive(&response_bytes).unwrap();
                return server;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let mut server = handshaken();
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
