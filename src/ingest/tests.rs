use super::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

/// A real rml_rtmp client on the other side of an in-memory "socket".
struct Pair {
    server: RtmpProtocol,
    client: ClientSession,
    server_events: Vec<IngestEvent>,
    client_events: Vec<ClientSessionEvent>,
}

impl Pair {
    fn new() -> Self {
        let mut client_hs = Handshake::new(PeerType::Client);
        let mut server = RtmpProtocol::new();
        let mut to_server = client_hs.generate_outbound_p0_and_p1().unwrap();
        let mut leftover = Vec::new();
        let mut session_start = Vec::new();
        loop {
            let mut to_client = Vec::new();
            for e in server.receive(&to_server).unwrap() {
                if let IngestEvent::Send(b) = e {
                    to_client.extend_from_slice(&b);
                }
            }
            if to_client.is_empty() {
                break;
            }
            match client_hs.process_bytes(&to_client).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    leftover = remaining_bytes;
                    session_start = server.receive(&response_bytes).unwrap();
                    break;
                }
            }
        }
        assert!(server.handshake_done());
        let (client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut pair = Pair {
            server,
            client,
            server_events: Vec::new(),
            client_events: Vec::new(),
        };
        pair.pump(results);
        pair.handle_server_events(session_start);
        if !leftover.is_empty() {
            let results = pair.client.handle_input(&leftover).unwrap();
            pair.pump(results);
        }
        pair
    }

    /// Delivers client output to the server and back until both are quiet, keeping
    /// each direction in order (as a socket would).
    fn pump(&mut self, results: Vec<ClientSessionResult>) {
        let mut to_server: std::collections::VecDeque<Vec<u8>> = Default::default();
        self.collect_client(results, &mut to_server);
        while let Some(bytes) = to_server.pop_front() {
            let events = self.server.receive(&bytes).unwrap();
            let replies = self.collect_server(events);
            for b in replies {
                let results = self.client.handle_input(&b).unwrap();
                self.collect_client(results, &mut to_server);
            }
        }
    }

    fn collect_client(
        &mut self,
        results: Vec<ClientSessionResult>,
        to_server: &mut std::collections::VecDeque<Vec<u8>>,
    ) {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => to_server.push_back(p.bytes),
                ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                _ => {}
            }
        }
    }

    fn collect_server(&mut self, events: Vec<IngestEvent>) -> Vec<Bytes> {
        let mut replies = Vec::new();
        for e in events {
            match e {
                IngestEvent::Send(b) => replies.push(b),
                other => self.server_events.push(other),
            }
        }
        replies
    }

    fn handle_server_events(&mut self, events: Vec<IngestEvent>) {
        for b in self.collect_server(events) {
            let results = self.client.handle_input(&b).unwrap();
            self.pump(results);
        }
    }

    fn take_request(&mut self) -> (u32, String) {
        let idx = self
            .server_events
            .iter()
            .position(|e| {
                matches!(
                    e,
                    IngestEvent::ConnectRequested { .. } | IngestEvent::PublishRequested { .. }
                )
            })
            .expect("a request");
        match self.server_events.remove(idx) {
            IngestEvent::ConnectRequested { request_id, app } => (request_id, app),
            IngestEvent::PublishRequested {
                request_id,
                stream_key,
                ..
            } => (request_id, stream_key),
            _ => unreachable!(),
        }
    }
}

fn connected_publish_request(key: &str) -> (Pair, u32) {
    let mut pair = Pair::new();
    let results = pair.client.request_connection("live".into()).unwrap();
    pair.pump(vec![results]);
    let (id, app) = pair.take_request();
    assert_eq!(app, "live");
    let events = pair.server.accept(id).unwrap();
    pair.handle_server_events(events);
    let results = pair
        .client
        .request_publishing(key.into(), PublishRequestType::Live)
        .unwrap();
    pair.pump(vec![results]);
    let (id, stream_key) = pair.take_request();
    assert_eq!(stream_key, key);
    (pair, id)
}

#[test]
fn connect_publish_and_media_flow_through() {
    let (mut pair, id) = connected_publish_request("kawa_sk_secret");
    let events = pair.server.accept(id).unwrap();
    pair.handle_server_events(events);
    assert!(
        pair.client_events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)),
        "{:?}",
        pair.client_events
    );
    // An AAC sequence header, then a raw frame.
    let r = pair
        .client
        .publish_audio_data(
            Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
            rml_rtmp::time::RtmpTimestamp::new(0),
            false,
        )
        .unwrap();
    pair.pump(vec![r]);
    let r = pair
        .client
        .publish_audio_data(
            Bytes::from_static(&[0xAF, 1, 0x21, 0x10]),
            rml_rtmp::time::RtmpTimestamp::new(23),
            false,
        )
        .unwrap();
    pair.pump(vec![r]);
    let media: Vec<_> = pair
        .server_events
        .iter()
        .filter(|e| matches!(e, IngestEvent::Media(_)))
        .collect();
    assert_eq!(media.len(), 2, "{:?}", pair.server_events);
    let IngestEvent::Media(MediaEvent::Frame(crate::media::frame::Frame::Audio(frame))) = media[1]
    else {
        panic!("{media:?}")
    };
    assert_eq!(frame.pts, 23 * 90);
    assert_eq!(&frame.data[..2], &[0xFF, 0xF1]);
}

fn message(timestamp: u32, type_id: u8, payload: &[u8]) -> ChunkMessage {
    ChunkMessage {
        timestamp,
        type_id,
        stream_id: 1,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn media_events(events: &[IngestEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, IngestEvent::Media(_) | IngestEvent::MediaError(_)))
        .count()
}

#[test]
fn media_sent_right_behind_the_publish_waits_for_it() {
    // The publish request is out, not yet decided; the AAC sequence header follows.
    let (mut pair, id) = connected_publish_request("k");
    let mut bytes = Vec::new();
    chunk::write_single_chunk(&message(0, 8, &[0xAF, 0, 0x12, 0x10]), &mut bytes);
    let events = pair.server.receive(&bytes).unwrap();
    assert_eq!(
        media_events(&events),
        0,
        "held until the publish is decided"
    );
    let events = pair.server.accept(id).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IngestEvent::Media(MediaEvent::Config(_)))),
        "{events:?}"
    );
}

#[test]
fn interleaved_chunk_streams_reach_the_demuxer() {
    let (mut pair, id) = connected_publish_request("k");
    let events = pair.server.accept(id).unwrap();
    pair.handle_server_events(events);
    // A 300-byte video message on chunk stream 9 with an audio message on chunk
    // stream 10 between its chunks (rml_rtmp 0.8 panicked on this).
    let mut video = vec![0x17, 0x01, 0, 0, 0];
    video.resize(300, 0);
    // Chunks of 128 bytes from here on (rml_rtmp's client set 4096).
    let mut bytes = Vec::new();
    chunk::write_single_chunk(
        &message(0, chunk::SET_CHUNK_SIZE, &128u32.to_be_bytes()),
        &mut bytes,
    );
    bytes.extend_from_slice(&[9, 0, 0, 40, 0, 1, 44, 9, 1, 0, 0, 0]);
    bytes.extend_from_slice(&video[..128]);
    bytes.extend_from_slice(&[10, 0, 0, 41, 0, 0, 4, 8, 1, 0, 0, 0, 0xAF, 0, 0x12, 0x10]);
    bytes.push(0xC0 | 9);
    bytes.extend_from_slice(&video[128..256]);
    bytes.push(0xC0 | 9);
    bytes.extend_from_slice(&video[256..]);
    let events = pair.server.receive(&bytes).unwrap();
    assert_eq!(media_events(&events), 2, "{events:?}");
}

#[test]
fn a_publish_without_its_arguments_is_refused_not_panicked_on() {
    let mut pair = Pair::new();
    let results = pair.client.request_connection("live".into()).unwrap();
    pair.pump(vec![results]);
    let (id, _) = pair.take_request();
    let events = pair.server.accept(id).unwrap();
    pair.handle_server_events(events);
    let values = vec![
        rml_rtmp::rml_amf0::Amf0Value::Utf8String("publish".into()),
        rml_rtmp::rml_amf0::Amf0Value::Number(5.0),
        rml_rtmp::rml_amf0::Amf0Value::Null,
    ];
    let payload = rml_rtmp::rml_amf0::serialize(&values).unwrap();
    let mut bytes = Vec::new();
    chunk::write_single_chunk(&message(0, 20, &payload), &mut bytes);
    let err = pair.server.receive(&bytes).unwrap_err();
    assert_eq!(err, IngestError::MalformedCommand("publish"));
}

#[test]
fn rejected_publish_tells_the_client_why() {
    let (mut pair, id) = connected_publish_request("wrong");
    let events = pair
        .server
        .reject(id, "NetStream.Publish.BadName", "unknown stream key")
        .unwrap();
    assert!(events.iter().any(|e| matches!(e, IngestEvent::Send(_))));
    pair.handle_server_events(events);
    assert!(
        !pair
            .client_events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
    );
}

#[test]
fn stream_key_is_redacted_in_debug_output() {
    let e = IngestEvent::PublishRequested {
        request_id: 1,
        app: "live".into(),
        stream_key: "kawa_sk_topsecret".into(),
    };
    assert!(!format!("{e:?}").contains("topsecret"));
}

#[test]
fn garbage_is_an_error_and_the_connection_stays_failed() {
    let mut p = RtmpProtocol::new();
    // Version byte 3 is the only one RTMP knows.
    let err = p.receive(&[0x07; 1537]).unwrap_err();
    assert!(matches!(err, IngestError::Handshake(_)), "{err}");
    assert_eq!(p.receive(&[0; 10]).unwrap_err(), IngestError::Closed);
}

/// Media goes to the demuxer without rml_rtmp, so Kawa acknowledges the peer's window
/// itself: one Acknowledgement of the total bytes received once a window's worth came
/// in, and media on another message stream than the published one is not taken.
#[test]
fn kawa_acknowledges_the_peers_window_and_takes_only_the_published_streams_media() {
    let (mut pair, id) = connected_publish_request("k");
    let events = pair.server.accept(id).unwrap();
    pair.handle_server_events(events);
    let mut bytes = Vec::new();
    chunk::write_single_chunk(
        &message(0, chunk::WINDOW_ACK_SIZE, &5000u32.to_be_bytes()),
        &mut bytes,
    );
    let events = pair.server.receive(&bytes).unwrap();
    assert!(!events.iter().any(|e| matches!(e, IngestEvent::Send(_))));
    // Another stream's audio: ignored (rml_rtmp ignores it too).
    let mut stray = message(0, 8, &[0xAF, 0, 0x12, 0x10]);
    stray.stream_id = 7;
    bytes.clear();
    chunk::write_single_chunk(&stray, &mut bytes);
    let events = pair.server.receive(&bytes).unwrap();
    assert_eq!(media_events(&events), 0, "{events:?}");
    // 4000 bytes of video on the published stream (one chunk of the client's 4096):
    // more than a window since the start, so one acknowledgement.
    let mut video = vec![0x17, 0x01, 0, 0, 0];
    video.resize(4000, 0);
    bytes.clear();
    chunk::write_single_chunk(&message(40, 9, &video), &mut bytes);
    let events = pair.server.receive(&bytes).unwrap();
    assert_eq!(media_events(&events), 1, "{events:?}");
    let acks: Vec<&Bytes> = events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::Send(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "{events:?}");
    let received = pair.server.received as u32;
    assert_eq!(acks[0][..12], [2, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0]);
    assert_eq!(acks[0][12..], received.to_be_bytes());
    // The client's rml_rtmp reads it without an error.
    pair.client.handle_input(acks[0]).unwrap();
}
