//! FFmpeg only encodes: Kawa's MPEG-TS of a real stream goes into a real FFmpeg with the
//! ladder's command line, and the TS on its stdout comes back through the rung demuxer
//! as frames on the source's clock, with keyframes exactly where the source has them.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use kawa::config::{RungSettings, Settings};
use kawa::media::demux::{FlvDemuxer, MediaEvent};
use kawa::media::flv::{FlvFileReader, TagKind};
use kawa::media::frame::Frame;
use kawa::media::sample::annexb_frame;
use kawa::media::ts::TsMuxer;
use kawa::transcode::TranscodePlan;
use kawa::transcode::demux::RungDemuxer;

/// The source frames of a fixture, its configuration, and their TS.
fn source(name: &str) -> (Vec<Frame>, kawa::media::frame::CodecConfig, Vec<u8>) {
    let flv = std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut demuxer = FlvDemuxer::new();
    let mut frames = Vec::new();
    for tag in FlvFileReader::new(&flv).unwrap() {
        let tag = tag.unwrap();
        let event = match tag.kind {
            TagKind::Video => demuxer.video(tag.timestamp_ms, &Bytes::copy_from_slice(tag.body)),
            TagKind::Audio => demuxer.audio(tag.timestamp_ms, tag.body),
            TagKind::Script => continue,
        };
        if let MediaEvent::Frame(f) = event.unwrap() {
            frames.push(f);
        }
    }
    let config = demuxer.config().clone();
    let mut muxer = TsMuxer::new(config.video.is_some(), config.audio.is_some());
    let mut ts = Vec::new();
    for f in &frames {
        let f = match f {
            Frame::Video(v) => Frame::Video(annexb_frame(v, config.video.as_deref()).unwrap()),
            audio => audio.clone(),
        };
        muxer.write_frame(&f, &mut ts).unwrap();
    }
    (frames, config, ts)
}

fn keyframe_pts(frames: &[&Frame]) -> BTreeSet<i64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Video(v) if v.keyframe => Some(v.pts),
            _ => None,
        })
        .collect()
}

#[test]
fn ffmpeg_rungs_come_back_on_the_source_clock_with_aligned_keyframes() {
    let (frames, config, ts) = source("high_bframes_aac48k_mono.flv");
    let mut hls = Settings::load(None).unwrap().hls;
    hls.rungs = vec![
        RungSettings {
            name: "90p".into(),
            height: 90,
            video_kbps: 100,
        },
        RungSettings {
            name: "60p".into(),
            height: 60,
            video_kbps: 60,
        },
    ];
    let plan = TranscodePlan::new(&config, &hls);
    assert_eq!(plan.scaled().count(), 2);
    let mut child = Command::new("ffmpeg")
        .args(plan.ffmpeg_args(&hls, kawa::transcode::Extras::NONE))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&ts));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let reference = match &frames[0] {
        Frame::Video(v) => v.dts,
        Frame::Audio(a) => a.pts,
    };
    let mut demuxer = RungDemuxer::new(2, reference);
    // In pipe-sized pieces, as the Transcoder reads them.
    let mut rung_frames = Vec::new();
    for piece in output.stdout.chunks(65_536) {
        rung_frames.extend(demuxer.push(piece).unwrap());
    }
    rung_frames.extend(demuxer.flush());

    let source_video: Vec<&Frame> = frames
        .iter()
        .filter(|f| matches!(f, Frame::Video(_)))
        .collect();
    let source_audio: Vec<i64> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Audio(a) => Some(a.pts),
            _ => None,
        })
        .collect();
    let source_pts: BTreeSet<i64> = source_video
        .iter()
        .map(|f| match f {
            Frame::Video(v) => v.pts,
            _ => unreachable!(),
        })
        .collect();
    for rung in 0..2 {
        let video: Vec<&Frame> = rung_frames
            .iter()
            .filter(|(r, f)| *r == rung && matches!(f, Frame::Video(_)))
            .map(|(_, f)| f)
            .collect();
        assert_eq!(video.len(), source_video.len(), "rung {rung}: every frame");
        let pts: BTreeSet<i64> = video
            .iter()
            .map(|f| match f {
                Frame::Video(v) => v.pts,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            pts, source_pts,
            "rung {rung}: the source's presentation times"
        );
        assert_eq!(
            keyframe_pts(&video),
            keyframe_pts(&source_video),
            "rung {rung}: keyframes where the source has them"
        );
        let audio: Vec<i64> = rung_frames
            .iter()
            .filter_map(|(r, f)| match f {
                Frame::Audio(a) if *r == rung => Some(a.pts),
                _ => None,
            })
            .collect();
        assert_eq!(audio, source_audio, "rung {rung}: the audio, copied");
    }
}
