//! FLV -> MPEG-TS remux throughput on one core: the work the ingest does per byte.
//!
//! `cargo bench --bench remux` prints MiB/s of FLV input. Two inputs: a real ffmpeg
//! fixture (small frames, so per-frame costs show) and a synthetic 3 Mbit/s stream at
//! 30 fps with AAC (the shape of a typical OBS publish).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kawa::media::flv::{FlvFileReader, TagKind, VideoTag};
use kawa::media::remux::remux_flv_to_ts;

const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/baseline_aac44k_stereo.flv");

fn tag(out: &mut Vec<u8>, kind: u8, ts_ms: u32, body: &[u8]) {
    let size = (body.len() as u32).to_be_bytes();
    let t = ts_ms.to_be_bytes();
    out.extend_from_slice(&[
        kind, size[1], size[2], size[3], t[1], t[2], t[3], t[0], 0, 0, 0,
    ]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
}

/// Ten seconds of 3 Mbit/s H.264 at 30 fps (a keyframe every 2 s) and 128 kbit/s AAC,
/// built around the fixture's real AVC and AAC sequence headers.
fn synthetic_stream() -> Vec<u8> {
    let mut record = None;
    for t in FlvFileReader::new(FIXTURE).unwrap() {
        let t = t.unwrap();
        if let (TagKind::Video, Ok(VideoTag::SequenceHeader(_, r))) =
            (t.kind, VideoTag::parse(t.body))
        {
            record = Some(r.to_vec());
        }
    }
    let record = record.unwrap();
    let mut flv = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    tag(&mut flv, 9, 0, &[&[0x17, 0, 0, 0, 0][..], &record].concat());
    tag(&mut flv, 8, 0, &[0xAF, 0x00, 0x12, 0x10]);
    let mut noise = 0x1234_5678u32;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            })
            .collect()
    };
    let frame_bytes = 3_000_000 / 8 / 30;
    let (mut audio_ms, mut audio_n) = (0f64, 0u32);
    for i in 0..300u32 {
        let ms = i * 1000 / 30;
        let key = i % 60 == 0;
        let nal_type = if key { 0x65 } else { 0x41 };
        let mut nal = bytes(frame_bytes);
        nal[0] = nal_type;
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        body.extend_from_slice(&nal);
        tag(&mut flv, 9, ms, &body);
        while audio_ms <= f64::from(ms) {
            let mut body = vec![0xAF, 1];
            body.extend_from_slice(&bytes(372));
            tag(&mut flv, 8, audio_ms as u32, &body);
            audio_n += 1;
            audio_ms = f64::from(audio_n) * 1024.0 * 1000.0 / 44100.0;
        }
    }
    flv
}

fn bench(c: &mut Criterion) {
    let synthetic = synthetic_stream();
    let mut group = c.benchmark_group("remux_flv_to_ts");
    for (name, input) in [
        ("fixture_160x120", FIXTURE),
        ("synthetic_3mbps", &synthetic[..]),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut out = Vec::with_capacity(input.len() * 2);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                remux_flv_to_ts(black_box(input), &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
