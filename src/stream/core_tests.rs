//! The stream core's decisions, event by event, without actors or FFmpeg.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::core::{Action, Phase, StreamCore};
use crate::config::{LadderPreset, Settings};
use crate::hls::packager::Output;
use crate::media::aac::AudioSpecificConfig;
use crate::media::annexb;
use crate::media::avc::tests::{PPS, SPS_320X240_HIGH};
use crate::media::frame::{
    AudioConfig, AudioFrame, CodecConfig, Frame, VideoConfig, VideoForm, VideoFrame,
};

const FRAME: i64 = 3600; // 25 fps

fn access_unit(key: bool) -> Bytes {
    let mut au = vec![0, 0, 0, 1, 0x09, 0xF0];
    if key {
        for ps in [SPS_320X240_HIGH, PPS] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(ps);
        }
    }
    au.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88, 0x84]);
    au.into()
}

fn config(audio: bool) -> CodecConfig {
    let avc = annexb::decoder_config(&access_unit(true)).unwrap();
    let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
    CodecConfig {
        video: Some(Arc::new(VideoConfig::Avc(avc))),
        audio: audio.then(|| {
            Arc::new(AudioConfig {
                adts: asc.adts().unwrap(),
                asc,
            })
        }),
    }
}

fn video(n: i64, gop: i64) -> Frame {
    Frame::Video(VideoFrame {
        dts: n * FRAME,
        pts: n * FRAME,
        keyframe: n % gop == 0,
        data: access_unit(n % gop == 0),
        form: VideoForm::AnnexB,
    })
}

fn audio(pts: i64) -> Frame {
    Frame::Audio(AudioFrame {
        pts,
        data: Bytes::from_static(&[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 1, 2, 3]),
    })
}

fn core(preset: LadderPreset) -> StreamCore {
    let mut hls = Settings::load(None).unwrap().hls;
    hls.preset = preset;
    // Rungs below the 320x240 test picture.
    hls.rungs[0].height = 180;
    hls.rungs[1].height = 120;
    StreamCore::new(hls, 1_700_000_000_000)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Every output the actions asked to write.
fn writes(actions: &[Action]) -> Vec<&Output> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write(o) => Some(o),
            _ => None,
        })
        .flatten()
        .collect()
}

fn segments_of<'a>(outputs: &[&'a Output], rendition: &str) -> Vec<&'a str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Segment {
                rendition: r, name, ..
            } if r == rendition => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Publishes video frames `range` (GOP of 50 = 2 s), collecting the actions.
fn publish(core: &mut StreamCore, range: std::ops::Range<i64>) -> Vec<Action> {
    range
        .flat_map(|n| core.on_frame(video(n, 50), now()))
        .collect()
}

#[test]
fn passthrough_packages_the_source_from_the_first_keyframe_without_ffmpeg() {
    let mut core = core(LadderPreset::Passthrough);
    core.set_expect_video(true);
    core.on_config(config(false));
    // A frame that is not a keyframe cannot start anything.
    assert!(core.on_frame(video(1, 50), now()).is_empty());
    let actions = publish(&mut core, 50..250);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::StartEncoder { .. } | Action::Feed(_))),
        "passthrough starts no FFmpeg"
    );
    let out = writes(&actions);
    assert!(matches!(out[0], Output::Init { rendition, .. } if rendition == "source"));
    // Segments at 2 s, 4 s and 6 s (the open one is not listed yet).
    assert_eq!(segments_of(&out, "source").len(), 3);
    // Each segment goes out before the playlist that lists it.
    let first_segment = out.iter().position(|o| matches!(o, Output::Segment { .. }));
    let first_playlist = out
        .iter()
        .position(|o| matches!(o, Output::Playlist { .. }));
    assert!(first_segment < first_playlist);
    assert_eq!(core.encoder(), None);
}

#[test]
fn a_ladder_starts_ffmpeg_with_the_gop_and_feeds_it_after() {
    let mut core = core(LadderPreset::Ladder);
    core.on_config(config(true));
    core.on_frame(audio(0), now());
    let actions = publish(&mut core, 0..3);
    let Some(Action::StartEncoder {
        generation,
        plan,
        replay,
    }) = actions
        .iter()
        .find(|a| matches!(a, Action::StartEncoder { .. }))
    else {
        panic!("no FFmpeg started: {actions:?}")
    };
    assert_eq!(*generation, 0);
    assert_eq!(
        plan.scaled().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["480p", "360p"]
    );
    assert!(
        matches!(&replay[0], Frame::Video(v) if v.keyframe),
        "starts at the keyframe"
    );
    let feeds = actions
        .iter()
        .filter(|a| matches!(a, Action::Feed(_)))
        .count();
    assert_eq!(feeds, 2, "the frames after the start are fed");
    assert_eq!(core.encoder(), Some(0));
}

#[test]
fn a_dead_ffmpeg_restarts_from_the_gop_with_a_discontinuity_on_the_rungs_only() {
    let mut core = core(LadderPreset::Ladder);
    core.on_config(config(false));
    publish(&mut core, 0..10);
    // FFmpeg's rung frames: a keyframe, then enough for a segment.
    let rung = |n: i64| (0usize, video(n, 50));
    let actions = core.on_encoded(0, (0..60).map(rung).collect());
    assert_eq!(segments_of(&writes(&actions), "480p").len(), 1);
    assert_eq!(core.on_encoder_exited(0).len(), 1, "a restart is scheduled");
    assert!(matches!(core.on_encoder_exited(0).as_slice(), []), "once");
    publish(&mut core, 10..60);
    let actions = core.restart_encoder();
    let Some(Action::StartEncoder {
        generation, replay, ..
    }) = actions
        .iter()
        .find(|a| matches!(a, Action::StartEncoder { .. }))
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*generation, 1);
    assert!(matches!(&replay[0], Frame::Video(v) if v.dts == 50 * FRAME && v.keyframe));
    // Frames from the dead FFmpeg are not packaged any more.
    assert!(core.on_encoded(0, vec![rung(61)]).is_empty());
    let actions = core.on_encoded(1, (50..160).map(rung).collect());
    assert!(!segments_of(&writes(&actions), "480p").is_empty());
    let rung_playlist = core.packager.playlist_of("480p").unwrap();
    assert!(rung_playlist.segments.iter().any(|s| s.discontinuity));
    let maps: Vec<&str> = rung_playlist
        .segments
        .iter()
        .map(|s| s.map.as_str())
        .collect();
    assert_ne!(
        maps.first(),
        maps.last(),
        "a new init segment for the new FFmpeg"
    );
    let source = core.packager.playlist_of("source").unwrap();
    assert!(source.segments.iter().all(|s| !s.discontinuity));
}

#[test]
fn a_codec_change_starts_everything_over() {
    let mut core = core(LadderPreset::Ladder);
    core.on_config(config(false));
    publish(&mut core, 0..120);
    let mut changed = config(false);
    let Some(VideoConfig::Avc(mut avc)) = changed.video.as_deref().cloned() else {
        unreachable!("the fixture is H.264")
    };
    avc.info.width = 640;
    changed.video = Some(Arc::new(VideoConfig::Avc(avc)));
    let actions = core.on_config(changed);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::FinishEncoder { generation: 0 }))
    );
    assert_eq!(core.encoder(), None);
    let actions = publish(&mut core, 150..160);
    let out = writes(&actions);
    assert!(out.iter().any(|o| matches!(o, Output::Init { rendition, name, .. } if rendition == "source" && name.ends_with("_1.mp4"))));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::StartEncoder { generation: 1, .. }))
    );
    publish(&mut core, 160..260);
    let source = core.packager.playlist_of("source").unwrap();
    assert_eq!(
        source.segments.iter().filter(|s| s.discontinuity).count(),
        1
    );
}

#[test]
fn a_clock_jump_starts_a_new_timeline() {
    let mut core = core(LadderPreset::Passthrough);
    core.on_config(config(false));
    publish(&mut core, 0..120);
    // The encoder's clock restarts near zero.
    let actions: Vec<Action> = (0..110)
        .flat_map(|n| core.on_frame(video(n, 50), now()))
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Note(n) if n.contains("jumped")))
    );
    let source = core.packager.playlist_of("source").unwrap();
    assert!(source.segments.iter().any(|s| s.discontinuity));
}

#[test]
fn unpublishing_waits_for_ffmpeg_then_ends_with_endlist() {
    let mut core = core(LadderPreset::Ladder);
    core.on_config(config(false));
    publish(&mut core, 0..120);
    let actions = core.on_unpublished();
    assert!(matches!(
        actions.as_slice(),
        [Action::FinishEncoder { generation: 0 }]
    ));
    assert_eq!(core.phase, Phase::Finishing);
    // FFmpeg's last frames still count.
    let actions = core.on_encoded(0, (0..60).map(|n| (1usize, video(n, 50))).collect());
    assert_eq!(segments_of(&writes(&actions), "360p").len(), 1);
    let actions = core.on_encoder_exited(0);
    assert!(matches!(actions.last(), Some(Action::Ended)));
    let out = writes(&actions);
    let endlists = out
        .iter()
        .filter(
            |o| matches!(o, Output::Playlist { text, .. } if text.ends_with("#EXT-X-ENDLIST\n")),
        )
        .count();
    // The source and 360p; 480p never had a segment, so it has no playlist to end.
    assert_eq!(endlists, 2, "{out:?}");
    assert!(
        core.on_frame(video(200, 50), now()).is_empty(),
        "nothing after the end"
    );
}

#[test]
fn unpublishing_a_passthrough_stream_ends_it_at_once() {
    let mut core = core(LadderPreset::Passthrough);
    core.on_config(config(false));
    publish(&mut core, 0..75);
    let actions = core.on_unpublished();
    assert!(matches!(actions.last(), Some(Action::Ended)));
    // The open segment (1 s of it) was finished and listed.
    let playlist = core.packager.playlist_of("source").unwrap();
    assert_eq!(playlist.segments.len(), 2);
    assert!(playlist.ended);
}

#[test]
fn ffmpeg_is_replaced_at_a_keyframe_after_a_day_of_media() {
    let mut core = core(LadderPreset::Ladder);
    core.on_config(config(false));
    publish(&mut core, 0..60);
    assert_eq!(core.encoder(), Some(0));
    // A day later (the clock moved on steadily; jumps are a different matter).
    let day = super::core::ENCODER_MAX_TICKS / FRAME;
    let mut actions = Vec::new();
    let mut n = 60;
    while n < day + 120 {
        // Only every 50th frame matters to the renewal; step fast between keyframes.
        actions = core.on_frame(video(n, 50), now());
        if core.encoder() != Some(0) {
            break;
        }
        n += if n % 50 == 49 { 1 } else { 49 - n % 50 }.max(1);
    }
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::FinishEncoder { generation: 0 }))
    );
    let Some(Action::StartEncoder {
        generation: 1,
        replay,
        ..
    }) = actions
        .iter()
        .find(|a| matches!(a, Action::StartEncoder { .. }))
    else {
        panic!("{actions:?}")
    };
    assert!(matches!(&replay[0], Frame::Video(v) if v.keyframe && v.dts == n * FRAME));
    assert!(n * FRAME > super::core::ENCODER_MAX_TICKS);
}

#[test]
fn a_live_passthrough_stream_holds_no_gop_cache_but_a_ladder_does() {
    let mut pass = core(LadderPreset::Passthrough);
    pass.on_config(config(false));
    publish(&mut pass, 0..60);
    assert_eq!(pass.encoder(), None);
    assert_eq!(pass.cached_frames(), 0);
    // A new publisher starts over from its first keyframe, from the cache again.
    pass.on_publisher_reset();
    pass.on_frame(video(50, 50), now());
    assert_eq!(pass.cached_frames(), 1);

    let mut ladder = core(LadderPreset::Ladder);
    ladder.on_config(config(false));
    publish(&mut ladder, 0..60);
    assert_eq!(ladder.cached_frames(), 10);
}

/// A successor (another session, or in a cluster another node) continues the same
/// playlists: the media sequence goes on, the predecessor's segments stay listed, its
/// first segment is a discontinuity, and the target duration is the predecessor's.
#[test]
fn a_successor_continues_the_predecessors_playlists() {
    let mut first = core(LadderPreset::Passthrough);
    first.on_config(config(false));
    publish(&mut first, 0..400); // 7 segments of 2 s; 6 listed
    let state = first.packager.snapshot();
    let before = first.packager.playlist_of("source").unwrap();
    assert_eq!(before.media_sequence, 1);
    assert_eq!(before.segments.len(), 6);

    let json = state.to_json();
    let state = crate::hls::resume::PathState::from_json(json.as_bytes()).unwrap();
    let mut next = StreamCore::new(
        {
            let mut hls = Settings::load(None).unwrap().hls;
            hls.preset = LadderPreset::Passthrough;
            hls
        },
        1_800_000_000_000,
    );
    next.packager.resume(state);
    next.on_config(config(false));
    let out = publish(&mut next, 0..51);
    let written = writes(&out);
    assert_eq!(segments_of(&written, "source"), ["1800000000000_7.m4s"]);
    let after = next.packager.playlist_of("source").unwrap();
    // One segment more slid the window by one: nothing listed went missing.
    assert_eq!(after.media_sequence, 2);
    assert_eq!(after.target_duration, before.target_duration);
    let uris: Vec<&str> = after.segments.iter().map(|s| s.uri.as_str()).collect();
    let old: Vec<&str> = before.segments[1..]
        .iter()
        .map(|s| s.uri.as_str())
        .collect();
    assert_eq!(&uris[..5], &old[..]);
    assert_eq!(uris[5], "1800000000000_7.m4s");
    assert!(after.segments[5].discontinuity);
    assert!(!after.segments[4].discontinuity);
    assert_eq!(after.discontinuity_sequence, 0);
    assert_eq!(
        after.segments[4].map, before.segments[5].map,
        "old EXT-X-MAP kept"
    );
}

/// A crashed session's core restarts from its checkpoint: the media sequence goes on
/// with a discontinuity, the cached GOP is packaged again (no gap for a ladder), and the
/// next FFmpeg's generation is new.
#[test]
fn a_restarted_core_goes_on_from_its_checkpoint() {
    let mut first = core(LadderPreset::Ladder);
    first.on_config(config(false));
    let out = publish(&mut first, 0..420);
    let last_generation = out
        .iter()
        .filter_map(|a| match a {
            Action::StartEncoder { generation, .. } => Some(*generation),
            _ => None,
        })
        .max()
        .expect("a ladder started FFmpeg");
    let checkpoint = super::checkpoint::Checkpoint {
        state: Some(first.packager.snapshot()),
        config: config(false),
        expect_video: Some(true),
    };
    let before = first.packager.playlist_of("source").unwrap();
    let last_msn = before.media_sequence + before.segments.len() as u64 - 1;

    let hls = {
        let mut hls = Settings::load(None).unwrap().hls;
        hls.rungs[0].height = 180;
        hls.rungs[1].height = 120;
        hls
    };
    let (mut next, replayed) = checkpoint.restart(hls, 1_800_000_000_000, &first, now());
    // The GOP (frames 400..420) is packaging again; FFmpeg starts with a new generation.
    let restarted_generation = replayed
        .iter()
        .find_map(|a| match a {
            Action::StartEncoder { generation, .. } => Some(*generation),
            _ => None,
        })
        .expect("the ladder starts again from the cached GOP");
    assert!(restarted_generation > last_generation);
    let out = publish(&mut next, 420..451);
    let written = writes(&out);
    let expected = format!("1800000000000_{}.m4s", last_msn + 1);
    assert_eq!(segments_of(&written, "source"), [expected.as_str()]);
    let after = next.packager.playlist_of("source").unwrap();
    let new = after.segments.last().unwrap();
    assert!(new.discontinuity);
    // The replayed keyframe (400) starts the segment: 2 s, no gap.
    assert!((new.duration - 2.0).abs() < 0.05, "{}", new.duration);
}

/// A restarted core that ends before its first keyframe still ends the playlists it
/// went on from (ENDLIST), as they were.
#[test]
fn a_restarted_core_that_ends_at_once_ends_its_playlists() {
    let mut first = core(LadderPreset::Passthrough);
    first.on_config(config(false));
    publish(&mut first, 0..200);
    let checkpoint = super::checkpoint::Checkpoint {
        state: Some(first.packager.snapshot()),
        config: config(false),
        expect_video: Some(true),
    };
    let before = first.packager.playlist_of("source").unwrap();
    let hls = Settings::load(None).unwrap().hls;
    let (mut next, _) = checkpoint.restart(hls, 1_800_000_000_000, &first, now());
    let out = next.force_end();
    let ended = writes(&out)
        .into_iter()
        .find_map(|o| match o {
            Output::Playlist { rendition, text } if rendition == "source" => Some(text.clone()),
            _ => None,
        })
        .expect("the source playlist is written again");
    assert!(ended.contains("#EXT-X-ENDLIST"), "{ended}");
    for segment in &before.segments {
        assert!(ended.contains(&segment.uri), "{ended}");
    }
}
