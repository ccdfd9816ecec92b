use super::*;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

fn payload(timestamp: u32, type_id: u8, len: usize, fill: u8) -> MessagePayload {
    MessagePayload {
        timestamp: RtmpTimestamp::new(timestamp),
        message_stream_id: 1,
        type_id,
        data: Bytes::from(vec![fill; len]),
    }
}

fn expected(p: &MessagePayload) -> ChunkMessage {
    ChunkMessage {
        timestamp: p.timestamp.value,
        type_id: p.type_id,
        stream_id: p.message_stream_id,
        payload: p.data.clone(),
    }
}

fn read_all(reader: &mut ChunkReader, bytes: &[u8], step: usize) -> Vec<ChunkMessage> {
    let mut out = Vec::new();
    for piece in bytes.chunks(step) {
        reader.push(piece, &mut out).unwrap();
    }
    out
}

fn publishing() -> ChunkReader {
    ChunkReader::new(ChunkLimits::publishing(8 << 20))
}

#[test]
fn reads_what_rml_rtmp_writes_whatever_the_read_sizes() {
    // rml_rtmp's serializer compresses headers (types 1–3) and splits at the chunk size,
    // as encoders do; the chunk size changes half way, as OBS and ffmpeg change it.
    let mut serializer = ChunkSerializer::new();
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for (i, len) in [10usize, 300, 129, 1, 5000].into_iter().enumerate() {
        let p = payload(i as u32 * 33, 9, len, i as u8);
        bytes.extend(serializer.serialize(&p, false, false).unwrap().bytes);
        sent.push(expected(&p));
    }
    bytes.extend(
        serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap()
            .bytes,
    );
    for (i, len) in [10_000usize, 4096, 4097].into_iter().enumerate() {
        let p = payload(1000 + i as u32 * 20, 8, len, 0x40 + i as u8);
        bytes.extend(serializer.serialize(&p, false, false).unwrap().bytes);
        sent.push(expected(&p));
    }
    for step in [1, 7, 128, 1000, bytes.len()] {
        let got = read_all(&mut publishing(), &bytes, step);
        assert_eq!(got, sent, "read {step} bytes at a time");
    }
}

/// A type-0 header for `csid` (below 64) with the fields given.
fn full_header(csid: u8, timestamp: u32, length: u32, type_id: u8) -> Vec<u8> {
    let mut h = vec![csid];
    h.extend_from_slice(&timestamp.min(0xFF_FFFF).to_be_bytes()[1..]);
    h.extend_from_slice(&length.to_be_bytes()[1..]);
    h.push(type_id);
    h.extend_from_slice(&1u32.to_le_bytes());
    if timestamp >= 0xFF_FFFF {
        h.extend_from_slice(&timestamp.to_be_bytes());
    }
    h
}

#[test]
fn interleaved_chunk_streams_each_keep_their_message() {
    // A 300-byte video message on csid 6 and a 20-byte audio message on csid 4, their
    // chunks interleaved: rml_rtmp 0.8 panics on this ("capacity overflow").
    let mut bytes = full_header(6, 40, 300, 9);
    bytes.extend([0xAA; 128]);
    bytes.extend(full_header(4, 41, 20, 8));
    bytes.extend([0xBB; 20]);
    bytes.push(0xC0 | 6);
    bytes.extend([0xAA; 128]);
    bytes.push(0xC0 | 6);
    bytes.extend([0xAA; 44]);
    let got = read_all(&mut publishing(), &bytes, 1);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].type_id, got[0].timestamp), (8, 41));
    assert_eq!(got[0].payload, Bytes::from(vec![0xBB; 20]));
    assert_eq!((got[1].type_id, got[1].timestamp), (9, 40));
    assert_eq!(got[1].payload, Bytes::from(vec![0xAA; 300]));
}

#[test]
fn extended_timestamps_on_continuation_chunks() {
    // Past 0xFFFFFF ms (4.6 hours) the timestamp moves to the extended field, which every
    // type-3 chunk of the message repeats.
    let ts = 0x0100_0000 + 5;
    let mut bytes = full_header(4, ts, 200, 8);
    bytes.extend([1; 128]);
    bytes.push(0xC0 | 4);
    bytes.extend(ts.to_be_bytes());
    bytes.extend([1; 72]);
    // A type-3 header starting the next message repeats the extended value as a delta.
    bytes.push(0xC0 | 4);
    bytes.extend(ts.to_be_bytes());
    bytes.extend([2; 128]);
    bytes.push(0xC0 | 4);
    bytes.extend(ts.to_be_bytes());
    bytes.extend([2; 72]);
    let got = read_all(&mut publishing(), &bytes, 3);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].timestamp, ts);
    assert_eq!(got[0].payload.len(), 200);
    assert_eq!(got[1].timestamp, ts.wrapping_add(ts));
}

#[test]
fn deltas_from_compressed_headers() {
    let mut bytes = full_header(4, 1000, 1, 8);
    bytes.push(0);
    // Type 1: delta 23, new length and type.
    bytes.extend([0x40 | 4, 0, 0, 23, 0, 0, 2, 9, 7, 7]);
    // Type 2: delta 10, same length and type.
    bytes.extend([0x80 | 4, 0, 0, 10, 8, 8]);
    // Type 3: repeats delta 10.
    bytes.extend([0xC0 | 4, 9, 9]);
    let got = read_all(&mut publishing(), &bytes, 1);
    let stamps: Vec<_> = got.iter().map(|m| (m.timestamp, m.type_id)).collect();
    assert_eq!(stamps, [(1000, 8), (1023, 9), (1033, 9), (1043, 9)]);
}

#[test]
fn oversized_message_is_refused_before_its_payload_is_read() {
    let mut reader = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
    let err = reader
        .push(&full_header(3, 0, 0xFF_FFFF, 20), &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChunkError::MessageTooLarge {
                length: 0xFF_FFFF,
                limit: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn media_limit_grows_once_publishing() {
    let header = full_header(6, 0, 1 << 20, 9);
    let mut before = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
    assert!(before.push(&header, &mut Vec::new()).is_err());
    let mut after = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
    after.set_limits(ChunkLimits::publishing(8 << 20));
    after.push(&header, &mut Vec::new()).unwrap();
    assert_eq!(after.buffered(), 1 << 20);
    // Commands stay small even then.
    let mut reader = publishing();
    let err = reader
        .push(&full_header(3, 0, 1 << 20, 20), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, ChunkError::MessageTooLarge { .. }), "{err}");
}

#[test]
fn partial_messages_on_many_streams_hit_the_buffer_limit() {
    let mut reader = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
    let mut out = Vec::new();
    for csid in 3..7 {
        reader
            .push(&full_header(csid, 0, 4000, 20), &mut out)
            .unwrap();
        reader.push(&[0; 128], &mut out).unwrap();
    }
    let err = reader
        .push(&full_header(7, 0, 4000, 20), &mut out)
        .unwrap_err();
    assert!(matches!(err, ChunkError::BufferLimit { .. }), "{err}");
}

#[test]
fn too_many_chunk_streams() {
    let mut reader = ChunkReader::new(ChunkLimits::BEFORE_PUBLISH);
    let mut out = Vec::new();
    for csid in 3..11 {
        reader.push(&full_header(csid, 0, 1, 20), &mut out).unwrap();
        reader.push(&[5], &mut out).unwrap();
    }
    let err = reader
        .push(&full_header(11, 0, 1, 20), &mut out)
        .unwrap_err();
    assert_eq!(err, ChunkError::TooManyChunkStreams { limit: 8 });
}

#[test]
fn compressed_header_without_a_full_one_is_an_error() {
    let err = publishing().push(&[0xC0 | 5], &mut Vec::new()).unwrap_err();
    assert_eq!(err, ChunkError::NoPreviousHeader { csid: 5 });
}

#[test]
fn new_header_inside_an_incomplete_message_is_an_error() {
    let mut bytes = full_header(4, 0, 300, 9);
    bytes.extend([0; 128]);
    bytes.extend(full_header(4, 0, 10, 9));
    let err = publishing().push(&bytes, &mut Vec::new()).unwrap_err();
    assert_eq!(err, ChunkError::InterruptedMessage { csid: 4 });
}

#[test]
fn two_and_three_byte_basic_headers() {
    // csid 64 + 10 (two bytes) and 64 + 1 + 256 * 2 (three bytes).
    let mut bytes = vec![0x00, 10];
    bytes.extend(&full_header(0, 7, 1, 8)[1..]);
    bytes.push(1);
    bytes.extend([0x01, 1, 2]);
    bytes.extend(&full_header(0, 9, 1, 8)[1..]);
    bytes.push(2);
    let got = read_all(&mut publishing(), &bytes, 1);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].timestamp, got[1].timestamp), (7, 9));
}

#[test]
fn set_chunk_size_zero_is_refused() {
    let mut bytes = full_header(2, 0, 4, SET_CHUNK_SIZE);
    bytes.extend(0u32.to_be_bytes());
    let err = publishing().push(&bytes, &mut Vec::new()).unwrap_err();
    assert_eq!(err, ChunkError::InvalidChunkSize(0));
}

#[test]
fn abort_drops_the_partial_message() {
    let mut reader = publishing();
    let mut out = Vec::new();
    let mut bytes = full_header(6, 0, 1000, 9);
    bytes.extend([0; 128]);
    bytes.extend(full_header(2, 0, 4, ABORT));
    bytes.extend(6u32.to_be_bytes());
    reader.push(&bytes, &mut out).unwrap();
    assert_eq!(reader.buffered(), 0);
    // The stream starts over with a new message.
    let mut next = full_header(6, 5, 2, 9);
    next.extend([7, 7]);
    reader.push(&next, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, Bytes::from_static(&[7, 7]));
}

#[test]
fn single_chunk_round_trip() {
    for timestamp in [0, 40, 0xFF_FFFE, 0xFF_FFFF, u32::MAX] {
        let message = ChunkMessage {
            timestamp,
            type_id: 9,
            stream_id: 1,
            payload: Bytes::from(vec![3; 500]),
        };
        let mut bytes = Vec::new();
        write_single_chunk(&message, &mut bytes);
        let mut reader = publishing();
        // A reader told that chunks can be as large as the message.
        let mut set = full_header(2, 0, 4, SET_CHUNK_SIZE);
        set.extend(0x7FFF_FFFFu32.to_be_bytes());
        reader.push(&set, &mut Vec::new()).unwrap();
        assert_eq!(read_all(&mut reader, &bytes, 11), vec![message]);
    }
}
