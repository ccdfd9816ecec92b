//! The recorder's unit tests: what it keeps, the playlists it ends with, its journal.

use bytes::Bytes;
use m3u8_rs::{MediaPlaylistType, Playlist};

use super::packager::Output;
use super::playlist::{MasterPlaylist, Variant};
use super::recording::*;

fn init(rendition: &str, name: &str) -> Output {
    Output::Init {
        rendition: rendition.into(),
        name: name.into(),
        data: Bytes::from_static(&[0; 100]),
    }
}

fn segment(rendition: &str, seq: u64, init: &str, duration: f64, disc: bool) -> Output {
    Output::Segment {
        rendition: rendition.into(),
        name: format!("7_{seq}.m4s"),
        data: vec![0; 1000].into(),
        duration,
        program_date_time: None,
        init: init.into(),
        discontinuity: disc,
        independent: true,
    }
}

fn parse(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist(text.as_bytes()) {
        Ok((_, Playlist::MediaPlaylist(p))) => p,
        _ => panic!("not a media playlist:\n{text}"),
    }
}

#[test]
fn keeps_each_segment_and_its_init_once_and_lists_all_of_them_at_the_end() {
    let mut recorder = Recorder::default();
    let first = recorder.observe(&[
        init("source", "7_0.mp4"),
        segment("source", 0, "7_0.mp4", 2.0, false),
    ]);
    assert_eq!(
        first.iter().map(RecordingOutput::file).collect::<Vec<_>>(),
        ["source/7_0.mp4", JOURNAL, "source/7_0.m4s", JOURNAL],
        "each kept file, then its journal line"
    );
    // The live window slides (a Remove) and the playlist changes: nothing to keep.
    let second = recorder.observe(&[
        segment("source", 1, "7_0.mp4", 2.0, false),
        Output::Remove {
            rendition: "source".into(),
            name: "7_0.m4s".into(),
        },
    ]);
    assert_eq!(
        second.len(),
        2,
        "a segment and its journal line: {second:?}"
    );
    // A restart: a new init, a discontinuity.
    recorder.observe(&[
        init("source", "7_1.mp4"),
        segment("source", 2, "7_1.mp4", 2.6, true),
    ]);
    let summary = recorder.summary();
    assert!((summary.duration_seconds - 6.6).abs() < 1e-9);
    assert_eq!(summary.segments, 3);
    assert_eq!(summary.bytes, 3 * 1000 + 2 * 100);

    let out = recorder.finish(None);
    assert_eq!(out.len(), 1, "no master without one given");
    let RecordingOutput::Playlist { rendition, text } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(rendition, "source");
    let parsed = parse(text);
    assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Vod));
    assert!(parsed.end_list);
    assert_eq!(parsed.target_duration, 3, "2.6 s rounds to 3");
    assert_eq!(parsed.segments.len(), 3);
    assert!(parsed.segments[2].discontinuity);
    assert_eq!(
        parsed.segments[2].map.as_ref().map(|m| m.uri.as_str()),
        Some("7_1.mp4")
    );
}

fn one_variant(uri: &str, bandwidth: u64) -> MasterPlaylist {
    MasterPlaylist {
        variants: vec![Variant {
            uri: uri.into(),
            bandwidth,
            average_bandwidth: None,
            codecs: "avc1.64001f".into(),
            resolution: Some((320, 240)),
            frame_rate: None,
        }],
    }
}

#[test]
fn the_journal_replays_to_the_same_playlists() {
    let mut recorder = Recorder::default();
    let mut journal = Vec::new();
    let mut note = |outputs: Vec<RecordingOutput>| {
        journal.extend(outputs.into_iter().filter_map(|o| match o {
            RecordingOutput::Journal(entry) => Some(entry),
            _ => None,
        }));
    };
    note(recorder.observe(&[
        init("source", "7_0.mp4"),
        segment("source", 0, "7_0.mp4", 2.0, false),
    ]));
    note(
        recorder
            .note_master(one_variant("source/index.m3u8", 900))
            .into_iter()
            .collect(),
    );
    // Same offer, new bandwidth: not written down again so soon.
    assert!(
        recorder
            .note_master(one_variant("source/index.m3u8", 950))
            .is_none()
    );
    note(recorder.observe(&[
        init("source", "7_1.mp4"),
        segment("source", 1, "7_1.mp4", 1.5, true),
    ]));
    // Through JSON, as the journal file has it.
    let lines: Vec<String> = journal
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let entries = lines.iter().map(|l| serde_json::from_str(l).unwrap());
    let (replayed, master) = Recorder::replay(entries);
    assert_eq!(replayed.summary(), recorder.summary());
    assert_eq!(
        replayed.finish(master.clone()),
        recorder.finish(master),
        "the same playlists"
    );
}

#[test]
fn a_replayed_master_offers_only_what_was_recorded() {
    let mut master = one_variant("source/index.m3u8", 900);
    master
        .variants
        .extend(one_variant("360p/index.m3u8", 400).variants);
    let entries = vec![
        JournalEntry::Master { master },
        JournalEntry::Segment {
            rendition: "source".into(),
            uri: "7_0.m4s".into(),
            map: "7_0.mp4".into(),
            duration: 2.0,
            discontinuity: false,
            program_date_time: None,
            bytes: 1,
            independent: true,
        },
    ];
    let (_, master) = Recorder::replay(entries);
    let uris: Vec<String> = master
        .unwrap()
        .variants
        .into_iter()
        .map(|v| v.uri)
        .collect();
    assert_eq!(uris, ["source/index.m3u8"]);
}

#[test]
fn a_first_segment_after_a_takeover_starts_the_recording_cleanly() {
    let mut recorder = Recorder::default();
    recorder.observe(&[
        init("source", "9_0.mp4"),
        segment("source", 40, "9_0.mp4", 2.0, true),
    ]);
    let out = recorder.finish(None);
    let RecordingOutput::Playlist { text, .. } = &out[0] else {
        panic!()
    };
    assert!(!text.contains("DISCONTINUITY\n"), "{text}");
}

#[test]
fn every_rendition_gets_a_playlist_and_the_master_comes_last() {
    let mut recorder = Recorder::default();
    assert!(recorder.is_empty());
    recorder.observe(&[
        init("source", "7_0.mp4"),
        segment("source", 0, "7_0.mp4", 2.0, false),
        init("360p", "7_0.mp4"),
        segment("360p", 0, "7_0.mp4", 2.0, false),
    ]);
    assert_eq!(recorder.renditions(), ["source", "360p"]);
    let master = MasterPlaylist {
        variants: vec![Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 1,
            average_bandwidth: None,
            codecs: "avc1.64001f".into(),
            resolution: None,
            frame_rate: None,
        }],
    };
    let out = recorder.finish(Some(master));
    let files: Vec<String> = out.iter().map(RecordingOutput::file).collect();
    assert_eq!(
        files,
        ["source/index.m3u8", "360p/index.m3u8", "master.m3u8"]
    );
    assert_eq!(recorder.summary().duration_seconds, 2.0, "the source's");
}

fn journal_segment(rendition: &str, seq: u64, disc: bool) -> JournalEntry {
    JournalEntry::Segment {
        rendition: rendition.into(),
        uri: format!("7_{seq}.m4s"),
        map: "7_0.mp4".into(),
        duration: 2.0,
        discontinuity: disc,
        program_date_time: None,
        bytes: 1,
        independent: true,
    }
}

#[test]
fn what_a_dead_node_took_with_it_is_left_out_with_a_discontinuity() {
    let entries = vec![
        JournalEntry::Init {
            rendition: "source".into(),
            name: "7_0.mp4".into(),
            bytes: 1,
        },
        journal_segment("source", 0, false),
        journal_segment("source", 1, false),
        journal_segment("source", 2, false),
        journal_segment("360p", 0, false),
    ];
    let gone = ["source/7_1.m4s"];
    let (kept, dropped) =
        keep_present(entries, |r, n| !gone.contains(&format!("{r}/{n}").as_str()));
    assert_eq!(dropped, 1);
    let segments: Vec<(String, bool)> = kept
        .iter()
        .filter_map(|e| match e {
            JournalEntry::Segment {
                rendition,
                uri,
                discontinuity,
                ..
            } => Some((format!("{rendition}/{uri}"), *discontinuity)),
            _ => None,
        })
        .collect();
    assert_eq!(
        segments,
        [
            ("source/7_0.m4s".to_owned(), false),
            ("source/7_2.m4s".to_owned(), true),
            ("360p/7_0.m4s".to_owned(), false),
        ]
    );
}

#[test]
fn journal_entries_from_another_node_are_checked() {
    assert!(journal_segment("source", 0, false).is_sound());
    let mut bad = journal_segment("source", 0, false);
    if let JournalEntry::Segment { uri, .. } = &mut bad {
        *uri = "../../keys.redb".into();
    }
    assert!(!bad.is_sound());
    let injected = JournalEntry::Master {
        master: MasterPlaylist {
            variants: vec![Variant {
                uri: "source/index.m3u8".into(),
                bandwidth: 1,
                average_bandwidth: None,
                codecs: "avc1\"\n#EXT-X-ENDLIST".into(),
                resolution: None,
                frame_rate: None,
            }],
        },
    };
    assert!(!injected.is_sound());
}
