//! Property tests over every parser of network bytes: no input makes them panic, and
//! what they accept obeys their invariants. Inputs are random bytes and real ffmpeg
//! fixtures with random damage (the likeliest shape of a broken publisher).
//!
//! CI runs proptest's default number of cases; `PROPTEST_CASES=1000000 cargo test
//! --release --test parsers_proptest` is the long run.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use kawa::media::aac::AudioSpecificConfig;
use kawa::media::avc::{AvcDecoderConfig, avcc_to_annexb, parse_sps};
use kawa::media::demux::FlvDemuxer;
use kawa::media::flv::{AudioTag, FlvFileReader, TagKind, VideoTag};
use kawa::media::frame::{AudioFrame, VideoCodec, VideoConfig, VideoForm, VideoFrame};
use kawa::media::remux::remux_flv_to_ts;
use kawa::media::sample::{from_length_prefixed, to_annexb};
use kawa::media::time::TimestampUnwrapper;
use kawa::media::ts::TsMuxer;
use proptest::prelude::*;

static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    [
        "baseline_aac44k_stereo.flv",
        "high_bframes_aac48k_mono.flv",
        "video_only.flv",
        "audio_only.flv",
    ]
    .iter()
    .map(|name| std::fs::read(format!("{dir}/{name}")).unwrap())
    .collect()
});

/// The AVCDecoderConfigurationRecord of the High-profile fixture.
static AVC_RECORD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    for tag in FlvFileReader::new(&FIXTURES[1]).unwrap() {
        let tag = tag.unwrap();
        if let (TagKind::Video, Ok(VideoTag::SequenceHeader(_, r))) =
            (tag.kind, VideoTag::parse(tag.body))
        {
            return r.to_vec();
        }
    }
    panic!("fixture has no AVC sequence header")
});

/// A real byte string with up to 16 bytes overwritten and maybe cut short.
fn damaged(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = original.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..16),
        prop::option::of(0..len),
    )
        .prop_map(move |(edits, cut)| {
            let mut data = original.clone();
            for (at, byte) in edits {
                if let Some(b) = data.get_mut(at) {
                    *b = byte;
                }
            }
            if let Some(cut) = cut {
                data.truncate(cut);
            }
            data
        })
}

fn damaged_fixture() -> impl Strategy<Value = Vec<u8>> {
    (0..FIXTURES.len()).prop_flat_map(|i| damaged(FIXTURES[i].clone()))
}

/// `unit` (NAL units behind `length_size`-byte lengths, already known to parse) without
/// its SPS, PPS and AUD units.
fn without_parameter_sets(unit: &[u8], length_size: u8) -> Vec<u8> {
    let (mut out, mut at, size) = (Vec::new(), 0, usize::from(length_size));
    while at + size <= unit.len() {
        let len = (unit[at..at + size].iter()).fold(0usize, |n, b| n << 8 | usize::from(*b));
        let Some(nal) = unit.get(at..at + size + len) else {
            break;
        };
        if !nal[size..]
            .first()
            .is_some_and(|h| [7, 8, 9].contains(&(h & 0x1F)))
        {
            out.extend_from_slice(nal);
        }
        at += size + len;
    }
    out
}

proptest! {
    #[test]
    fn video_tag_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(VideoTag::Nalus { data: body, .. }) = VideoTag::parse(&data) {
            prop_assert_eq!(body, &data[5..]);
        }
    }

    #[test]
    fn audio_tag_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = AudioTag::parse(&data);
    }

    #[test]
    fn avc_record_from_random_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(cfg) = AvcDecoderConfig::parse(&data) {
            prop_assert_eq!(AvcDecoderConfig::parse(&cfg.to_bytes()).unwrap(), cfg);
        }
    }

    #[test]
    fn avc_record_damaged(data in damaged(AVC_RECORD.clone())) {
        if let Ok(cfg) = AvcDecoderConfig::parse(&data) {
            prop_assert!([1, 2, 4].contains(&cfg.nal_length_size));
            prop_assert!(!cfg.sps.is_empty() && !cfg.pps.is_empty());
        }
    }

    #[test]
    fn sps_never_panics(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut nal = vec![0x67];
        nal.extend_from_slice(&body);
        let _ = parse_sps(&nal);
    }

    #[test]
    fn audio_specific_config_and_adts(
        asc in prop::collection::vec(any::<u8>(), 0..8),
        raw in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        if let Ok(adts) = AudioSpecificConfig::parse(&asc).and_then(|a| a.adts()) {
            let mut out = Vec::new();
            adts.write_frame(&raw, &mut out).unwrap();
            let len = ((out[3] as usize & 3) << 11) | ((out[4] as usize) << 3) | (out[5] as usize >> 5);
            prop_assert_eq!(len, out.len());
            prop_assert_eq!(&out[7..], &raw[..]);
            prop_assert_eq!(out[0], 0xFF);
            prop_assert_eq!(out[1] & 0xF6, 0xF0);
        }
    }

    #[test]
    fn avcc_to_annexb_never_panics(
        length_size in prop::sample::select(vec![1u8, 2, 4]),
        data in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut cfg = AvcDecoderConfig::parse(&AVC_RECORD).unwrap();
        cfg.nal_length_size = length_size;
        if let Ok((out, _)) = avcc_to_annexb(&data, &cfg) {
            prop_assert_eq!(&out[..6], &[0, 0, 0, 1, 9, 0xF0]);
        }
    }

    /// Any length-prefixed bytes: an error, or a sample whose Annex B is what the
    /// bytes give directly (the path RTMP frames now take to FFmpeg), less any in-band
    /// parameter set or AUD: a sample carries none (its parameter sets are the stream's
    /// record's, put before each IDR).
    #[test]
    fn a_sample_from_any_bytes_converts_as_the_bytes_would(
        length_size in prop::sample::select(vec![1u8, 2, 3, 4]),
        data in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut cfg = AvcDecoderConfig::parse(&AVC_RECORD).unwrap();
        cfg.nal_length_size = length_size;
        let unit = Bytes::from(data);
        if let Ok((sample, key)) = from_length_prefixed(&unit, length_size, VideoCodec::Avc) {
            let direct = avcc_to_annexb(&without_parameter_sets(&unit, length_size), &cfg).unwrap();
            let config = VideoConfig::Avc(cfg);
            prop_assert_eq!(to_annexb(&sample, &config).unwrap(), direct.0);
            prop_assert_eq!(key, direct.1);
        }
        let _ = from_length_prefixed(&unit, length_size, VideoCodec::Hevc);
    }

    #[test]
    fn flv_reader_and_demuxer_on_damaged_files(data in damaged_fixture()) {
        let Ok(reader) = FlvFileReader::new(&data) else { return Ok(()) };
        let mut demuxer = FlvDemuxer::new();
        for tag in reader {
            let Ok(tag) = tag else { break };
            let _ = match tag.kind {
                TagKind::Video => demuxer.video(tag.timestamp_ms, &Bytes::copy_from_slice(tag.body)),
                TagKind::Audio => demuxer.audio(tag.timestamp_ms, tag.body),
                TagKind::Script => continue,
            };
        }
    }

    #[test]
    fn remux_of_damaged_files_is_valid_ts_or_an_error(data in damaged_fixture()) {
        let mut out = Vec::new();
        if remux_flv_to_ts(&data, &mut out).is_ok() {
            prop_assert_eq!(out.len() % 188, 0);
            prop_assert!(out.chunks(188).all(|p| p[0] == 0x47));
        }
    }

    #[test]
    fn ts_muxer_keeps_packets_whole_and_counters_continuous(
        frames in prop::collection::vec(
            (any::<bool>(), any::<bool>(), -1_000_000i64..1_000_000, 0i64..9000, 0usize..2000),
            1..40,
        ),
    ) {
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        for (video, key, dts, cts, len) in frames {
            let data = Bytes::from(vec![0xAB; len]);
            if video {
                mux.write_video(&VideoFrame { dts, pts: dts + cts, keyframe: key, data, form: VideoForm::AnnexB }, &mut out).unwrap();
            } else {
                mux.write_audio(&AudioFrame { pts: dts, data }, &mut out).unwrap();
            }
        }
        prop_assert_eq!(out.len() % 188, 0);
        let mut counters: HashMap<u16, u8> = HashMap::new();
        for p in out.chunks(188) {
            prop_assert_eq!(p[0], 0x47);
            let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
            let cc = p[3] & 0x0F;
            if let Some(prev) = counters.insert(pid, cc) {
                prop_assert_eq!(cc, (prev + 1) & 0x0F, "PID {:#x}", pid);
            }
            if p[3] & 0x20 != 0 {
                prop_assert!((p[4] as usize) <= 183, "adaptation field fits");
            }
        }
    }

    #[test]
    fn unwrapped_time_is_the_sum_of_steps(
        start in any::<u32>(),
        steps in prop::collection::vec(-100_000i32..1_000_000, 0..200),
    ) {
        let mut clock = TimestampUnwrapper::new();
        let mut expected = i64::from(start);
        let mut raw = start;
        prop_assert_eq!(clock.unwrap_ms(raw), expected);
        for step in steps {
            raw = raw.wrapping_add_signed(step);
            expected += i64::from(step);
            prop_assert_eq!(clock.unwrap_ms(raw), expected);
        }
    }
}

/// A client handshake's bytes, for driving the server past the handshake.
fn handshake_bytes() -> (kawa::ingest::RtmpProtocol, Vec<u8>) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut client = Handshake::new(PeerType::Client);
    let mut server = kawa::ingest::RtmpProtocol::new();
    let mut to_server = client.generate_outbound_p0_and_p1().unwrap();
    loop {
        let mut to_client = Vec::new();
        for e in server.receive(&to_server).unwrap() {
            if let kawa::ingest::IngestEvent::Send(b) = e {
                to_client.extend_from_slice(&b);
            }
        }
        match client.process_bytes(&to_client).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                server.receive(&response_bytes).unwrap();
                return (server, response_bytes);
            }
        }
    }
}

proptest! {
    #[test]
    fn rtmp_protocol_never_panics_on_garbage(
        before in prop::collection::vec(any::<u8>(), 0..64),
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
    ) {
        // Before the handshake...
        let mut fresh = kawa::ingest::RtmpProtocol::new();
        let _ = fresh.receive(&before);
        // ...and after it: rml_rtmp's panics are caught and become errors.
        let (mut server, _) = handshake_bytes();
        for chunk in chunks {
            if server.receive(&chunk).is_err() {
                break;
            }
        }
    }
}

/// What FFmpeg's output looks like to the rung demuxer: Kawa's own TS of a fixture.
static FIXTURE_TS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut ts = Vec::new();
    remux_flv_to_ts(&FIXTURES[1], &mut ts).unwrap();
    ts
});

proptest! {
    #[test]
    fn ts_demuxer_on_damaged_streams_gives_frames_or_errors(
        data in damaged(FIXTURE_TS.clone()),
        piece in 1usize..400,
    ) {
        let mut demuxer = kawa::transcode::demux::RungDemuxer::new(2, 0);
        for chunk in data.chunks(piece) {
            if demuxer.push(chunk).is_err() {
                return Ok(());
            }
        }
        for (rung, _) in demuxer.flush() {
            prop_assert!(rung < 2);
        }
    }

    /// Opus access units out of any PES payload: packets inside the payload, or an
    /// error; never a panic or a read past the end.
    #[test]
    fn opus_in_ts_gives_units_inside_the_payload_or_an_error(
        mut data in prop::collection::vec(any::<u8>(), 0..600),
        framed in any::<bool>(),
    ) {
        if framed && data.len() >= 3 {
            // A plausible header, so the size and trim paths run too.
            data[0] = 0x7F;
            data[1] |= 0xE0;
        }
        let payload = Bytes::from(data);
        if let Ok(units) = kawa::media::opus::ts_access_units(&payload) {
            let total: usize = units.iter().map(Bytes::len).sum();
            prop_assert!(total <= payload.len());
            for unit in &units {
                prop_assert!(kawa::media::opus::samples(unit) <= 48 * 120 * 63);
            }
        }
    }

    /// What the WebRTC port reads before anything else, from anybody: a STUN user name
    /// or nothing, never a panic or a read past the datagram.
    #[test]
    fn webrtc_router_reads_any_datagram(
        mut data in prop::collection::vec(any::<u8>(), 0..300),
        stun in any::<bool>(),
    ) {
        if stun && data.len() >= 20 {
            data[0] &= 0x3F;
            data[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        }
        if let Some(ufrag) = kawa::webrtc::router::stun_local_ufrag(&data) {
            prop_assert!(ufrag.len() < data.len());
        }
    }

    /// A WHEP offer body is anybody's text: str0m's SDP parser answers it or refuses it.
    #[test]
    fn whep_offers_of_any_text_parse_or_fail(text in ".{0,400}", lines in prop::collection::vec("[a-z]=[ -~]{0,40}", 0..20)) {
        let _ = str0m::change::SdpOffer::from_sdp_string(&text);
        let _ = str0m::change::SdpOffer::from_sdp_string(&lines.join("\r\n"));
    }

    #[test]
    fn ts_demuxer_on_random_packets(
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 188), 0..40),
    ) {
        let mut demuxer = kawa::media::ts_demux::TsDemuxer::new();
        for mut packet in packets {
            packet[0] = 0x47;
            if demuxer.push(&packet).is_err() {
                break;
            }
        }
        let _ = demuxer.flush();
    }

    /// Any frame sequence (steps of any size, backwards too, keyframes anywhere, audio
    /// interleaved) cuts into parts that are well-formed fragments, each at most the
    /// part target (plus one frame) unless a single frame is longer, and no frame is
    /// lost after the first keyframe.
    #[test]
    fn cmaf_segmenter_keeps_every_frame_in_well_formed_parts(
        steps in prop::collection::vec((-4000i64..40_000, any::<bool>(), 0u8..3), 1..300),
    ) {
        use kawa::media::cmaf::{Segmenter, SegmenterSettings};
        use kawa::media::frame::Frame;
        use mp4_atom::{Decode, Moof};

        let settings = SegmenterSettings::from_seconds(2.0, 0.5);
        let mut segmenter = Segmenter::new(settings, Some(kawa::media::frame::VideoCodec::Avc), Some(48_000));
        let (mut dts, mut audio_pts) = (1_000_000i64, 1_000_000i64);
        let mut parts = Vec::new();
        let mut pushed = 0u64;
        for (step, key, audio_frames) in steps {
            dts += step;
            let video = Frame::Video(VideoFrame {
                dts,
                pts: dts + 3000,
                keyframe: key,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2]),
                form: VideoForm::AnnexB,
            });
            pushed += 1;
            parts.extend(segmenter.push(video).unwrap());
            for _ in 0..audio_frames {
                audio_pts += 1920;
                pushed += 1;
                let audio = Frame::Audio(AudioFrame {
                    pts: audio_pts,
                    data: Bytes::from_static(&[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 1, 2, 3]),
                });
                parts.extend(segmenter.push(audio).unwrap());
            }
        }
        parts.extend(segmenter.flush().unwrap());
        let mut samples = 0u64;
        for part in &parts {
            let mut buf = &part.data[..];
            let moof = Moof::decode(&mut buf).unwrap();
            for traf in &moof.traf {
                for run in &traf.trun {
                    samples += run.samples.len() as u64;
                }
            }
            prop_assert!(part.duration >= 0);
        }
        prop_assert_eq!(samples + segmenter.dropped, pushed);
        if let Some(last) = parts.last() {
            prop_assert!(last.ends_segment);
        }
    }
}

/// The conclusion handshake FFmpeg's libsrt 1.5 sent (captured on loopback, with the
/// HSREQ and streamid extensions; tests/fixtures/make.sh): the packet with the most
/// structure a caller controls.
static SRT_CONCLUSION: LazyLock<Vec<u8>> = LazyLock::new(|| {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/srt_conclusion.bin"
    ))
    .unwrap()
});

/// A publisher's TS as SRT carries it (FFmpeg's mpegts muxer, H.264 + AAC).
static SRT_TS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/h264_aac.ts"
    ))
    .unwrap()
});

proptest! {
    /// SRT ingest: a damaged TS in messages of any size gives frames (with rising DTS
    /// per track) or errors, never a panic.
    #[test]
    fn srt_ts_ingest_on_damaged_streams(
        data in damaged(SRT_TS.clone()),
        piece in 1usize..1500,
    ) {
        use kawa::media::demux::MediaEvent;
        use kawa::media::frame::Frame;
        let mut ingest = kawa::media::ts_ingest::TsIngest::new();
        let mut out = Vec::new();
        for chunk in data.chunks(piece) {
            ingest.push(chunk, &mut out);
        }
        let mut last_video = i64::MIN;
        for event in out.into_iter().flatten() {
            if let MediaEvent::Frame(Frame::Video(v)) = event {
                prop_assert!(v.pts >= v.dts);
                last_video = last_video.max(v.dts);
            }
        }
    }

    #[test]
    fn srt_ts_ingest_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..4000)) {
        let mut ingest = kawa::media::ts_ingest::TsIngest::new();
        let mut out = Vec::new();
        ingest.push(&data, &mut out);
    }

    /// The streamid parser: any string, and keys never in its errors.
    #[test]
    fn srt_stream_id_never_panics_nor_shows_a_key(
        id in ".{0,600}",
        key in "[a-z0-9]{12}",
    ) {
        use kawa::ingest::stream_id::parse;
        let _ = parse(Some(&id));
        let access = format!("#!::r=live/{key},m={id}");
        if let Err(e) = parse(Some(&access)) {
            prop_assert!(!e.to_string().contains(&key));
        }
    }

    /// The SRT stack's packet parser (vendored srt-protocol), on which every datagram
    /// to the SRT port lands: random bytes, and real handshake packets damaged.
    #[test]
    fn srt_packet_parser_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..200),
        handshake in damaged(SRT_CONCLUSION.clone()),
    ) {
        use srt_protocol::packet::Packet;
        for bytes in [&data, &handshake] {
            let _ = Packet::parse(&mut std::io::Cursor::new(bytes.as_slice()), false);
            let _ = Packet::parse(&mut std::io::Cursor::new(bytes.as_slice()), true);
        }
    }
}

proptest! {
    /// Enhanced RTMP: any bytes after an enhanced header are a tag or an error.
    #[test]
    fn enhanced_video_tag_never_panics(
        first in 0x80u8..=0xFF,
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut data = vec![first];
        data.extend(rest);
        let _ = kawa::media::flv_ex::parse(&data);
        let _ = VideoTag::parse(&data);
    }

    /// Every H.264 tag of a real stream, rewritten in an enhanced form (CodedFrames,
    /// CodedFramesX when its composition time is 0, behind a ModEx prefix, as track 0
    /// of a multitrack tag next to a track 1), demuxes to the same frames.
    #[test]
    fn enhanced_avc_tags_demux_like_legacy_ones(form in 0usize..4) {
        let mut legacy = FlvDemuxer::new();
        let mut enhanced = FlvDemuxer::new();
        for tag in FlvFileReader::new(&FIXTURES[1]).unwrap() {
            let tag = tag.unwrap();
            if tag.kind != TagKind::Video {
                continue;
            }
            let ex = enhance(tag.body, form);
            let a = legacy.video(tag.timestamp_ms, &Bytes::copy_from_slice(tag.body));
            let b = enhanced.video(tag.timestamp_ms, &Bytes::from(ex.clone()));
            prop_assert_eq!(a, b);
        }
    }
}

/// A legacy AVC video tag body in one of four enhanced forms.
fn enhance(legacy: &[u8], form: usize) -> Vec<u8> {
    let frame_type = legacy[0] >> 4;
    let (avc_type, cts, body) = (legacy[1], &legacy[2..5], &legacy[5..]);
    let packet = match avc_type {
        0 => 0,
        1 if cts == [0, 0, 0] && form == 1 => 3,
        1 => 1,
        _ => 2,
    };
    let mut payload = Vec::new();
    if packet == 1 {
        payload.extend_from_slice(cts);
    }
    payload.extend_from_slice(body);
    let mut out = Vec::new();
    match form {
        2 => {
            out.extend_from_slice(&[0x80 | frame_type << 4 | 7, 2, 0, 0, 9]);
            out.push(packet);
            out.extend_from_slice(b"avc1");
            out.extend_from_slice(&payload);
        }
        3 => {
            out.extend_from_slice(&[0x80 | frame_type << 4 | 6, 0x10 | packet]);
            out.extend_from_slice(b"avc1");
            for track in [1u8, 0] {
                let len = payload.len() as u32;
                out.push(track);
                out.extend_from_slice(&len.to_be_bytes()[1..]);
                out.extend_from_slice(&payload);
            }
        }
        _ => {
            out.push(0x80 | frame_type << 4 | packet);
            out.extend_from_slice(b"avc1");
            out.extend_from_slice(&payload);
        }
    }
    out
}

/// The configuration record in an Enhanced RTMP fixture's first sequence start.
fn sequence_start_of(fixture: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read(path).unwrap();
    for tag in FlvFileReader::new(&file).unwrap() {
        let tag = tag.unwrap();
        if tag.kind != TagKind::Video {
            continue;
        }
        if let Ok(t) = kawa::media::flv_ex::parse(tag.body)
            && let kawa::media::flv_ex::ExPacket::SequenceStart(r) = t.packet
        {
            return r.to_vec();
        }
    }
    panic!("no sequence start in {fixture}")
}

/// The hvcC FFmpeg 9's x265 sent.
static HEVC_RECORD: LazyLock<Vec<u8>> = LazyLock::new(|| sequence_start_of("hevc_aac.flv"));
/// The av1C FFmpeg 9's SVT-AV1 sent.
static AV1_RECORD: LazyLock<Vec<u8>> = LazyLock::new(|| sequence_start_of("av1.flv"));

proptest! {
    /// HEVC records (real, damaged) and access units from the network: a config or an
    /// error, and any bytes as a frame of a good config: Annex B or an error.
    #[test]
    fn hevc_record_and_frames_never_panic(
        record in damaged(HEVC_RECORD.clone()),
        frame in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        use kawa::media::hevc::{HevcDecoderConfig, append_sample, to_annexb};
        if let Ok(config) = HevcDecoderConfig::parse(&record) {
            let _ = config.codec_string();
            if let Ok((annexb, _)) = to_annexb(&frame, &config) {
                // What the packager does with it: a sample never larger than the unit.
                let mut sample = Vec::new();
                append_sample(&annexb, &mut sample);
                prop_assert!(sample.len() <= annexb.len());
            }
        }
    }

    /// AV1 records (real, damaged) and temporal units from the network: a config or an
    /// error; a unit becomes a frame no longer than itself, whose OBUs all parse again,
    /// or an error.
    #[test]
    fn av1_record_and_units_never_panic(
        record in damaged(AV1_RECORD.clone()),
        unit in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        use kawa::media::av1::{Av1Config, Obus, to_frame};
        if let Ok(config) = Av1Config::parse(&record) {
            let _ = config.codec_string();
        }
        if let Ok(frame) = to_frame(&unit, None) {
            prop_assert!(frame.len() <= unit.len());
            prop_assert!(Obus::new(&frame).all(|o| o.is_ok()));
        }
    }
}
