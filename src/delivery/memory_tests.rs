//! The live edge: what it keeps, serves, holds and forgets.
use super::*;
use crate::hls::low_latency::{LiveSegment, OpenSegment, PartInfo};
use crate::hls::playlist::MediaSegment;

/// A part served as bytes `offset..offset + len` of its stored segment's file.
fn in_segment(segment: &str, offset: u64, len: u64) -> FileLookup {
    FileLookup::InSegment {
        segment: segment.into(),
        offset,
        len,
    }
}

fn part_name(msn: u64, i: usize) -> String {
    format!("1_{msn}_{i}.m4s")
}

fn parts(msn: u64, n: usize) -> Vec<PartInfo> {
    (0..n)
        .map(|i| PartInfo {
            uri: part_name(msn, i),
            duration: 0.5,
            independent: i == 0,
        })
        .collect()
}

fn segment(msn: u64) -> MediaSegment {
    MediaSegment {
        uri: format!("1_{msn}.m4s"),
        map: "1_0.mp4".into(),
        duration: 1.0,
        discontinuity: false,
        program_date_time: None,
        independent: true,
        gap: false,
    }
}

/// Segments `0..complete` (parts listed for those in `with_parts`), and `open`
/// parts of the next.
fn live(rendition: &str, complete: u64, with_parts: u64, open: usize) -> Output {
    Output::Live {
        rendition: rendition.into(),
        playlist: Box::new(LivePlaylist {
            target_duration: 1,
            part_target: 0.5,
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: (0..complete)
                .map(|msn| LiveSegment {
                    segment: segment(msn),
                    parts: if msn + with_parts >= complete {
                        parts(msn, 2)
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            open: (open > 0).then(|| OpenSegment {
                segment: segment(complete),
                parts: parts(complete, open),
            }),
            preload_hint: Some(part_name(complete, open)),
            ended: false,
        }),
    }
}

fn part(rendition: &str, msn: u64, i: usize) -> Output {
    Output::Part {
        rendition: rendition.into(),
        name: part_name(msn, i),
        data: Bytes::from(vec![i as u8; 4]),
    }
}

/// Once a segment is in the data directory its parts leave memory (served from the
/// file); the open segment's parts stay.
#[test]
fn a_stored_segments_parts_are_served_from_its_file() {
    let stream = LiveStore::default().open("live/b");
    stream.take(vec![
        part("source", 0, 0),
        part("source", 0, 1),
        part("source", 1, 0),
        live("source", 1, 1, 1),
    ]);
    let found = |name: &str| matches!(stream.file("source", name), FileLookup::Found(_));
    assert!(found("1_0_0.m4s") && found("1_0_1.m4s") && found("1_1_0.m4s"));
    stream.segment_stored("source", "1_0.m4s");
    // Its last part stays: every player at the live edge asks for it as it closes.
    assert!(!found("1_0_0.m4s") && found("1_0_1.m4s") && found("1_1_0.m4s"));
    assert_eq!(
        stream.file("source", "1_0_0.m4s"),
        in_segment("1_0.m4s", 0, 4)
    );
    // An older report changes nothing.
    stream.segment_stored("source", "bogus");
    assert!(!found("1_0_0.m4s") && found("1_0_1.m4s"));
    // Once the open segment has two parts, no player at the edge wants that last part:
    // it goes to the file too, and a later playlist does not bring the others back.
    stream.take(vec![part("source", 1, 1), live("source", 1, 1, 2)]);
    assert!(!found("1_0_0.m4s") && !found("1_0_1.m4s") && found("1_1_1.m4s"));
    assert_eq!(
        stream.file("source", "1_0_1.m4s"),
        in_segment("1_0.m4s", 4, 4)
    );
}

#[test]
fn the_edge_serves_listed_parts_holds_the_hinted_one_and_forgets_old_ones() {
    let stream = LiveStore::default().open("live/a");
    let init = Output::Init {
        rendition: "source".into(),
        name: "1_0.mp4".into(),
        data: Bytes::from_static(b"init"),
    };
    let rest = stream.take(vec![
        init.clone(),
        part("source", 0, 0),
        part("source", 0, 1),
        live("source", 0, 0, 2),
    ]);
    // Parts and playlists stay here; the init segment also goes to disk and S3.
    assert_eq!(rest, vec![init]);
    let found = |name: &str| matches!(stream.file("source", name), FileLookup::Found(_));
    assert!(found("1_0.mp4") && found("1_0_1.m4s"));
    assert_eq!(
        stream.file("source", "1_0_2.m4s"),
        FileLookup::Wait { target_duration: 1 }
    );
    assert_eq!(stream.file("source", "1_9_0.m4s"), FileLookup::Missing);

    // Segment 0 completes: it is served as its two parts.
    stream.take(vec![part("source", 1, 0), live("source", 1, 1, 1)]);
    let FileLookup::Found(pieces) = stream.file("source", "1_0.m4s") else {
        panic!("segment 0 is not served from its parts")
    };
    assert_eq!(pieces.len(), 2);

    // Segment 0's parts leave the playlist, then the one after it: gone.
    stream.take(vec![live("source", 3, 1, 1)]);
    assert!(found("1_0_0.m4s"), "the previous playlist still listed it");
    stream.take(vec![live("source", 3, 1, 1)]);
    assert!(!found("1_0_0.m4s") && found("1_0.mp4"));
    assert_eq!(stream.file("source", "1_0.m4s"), FileLookup::Missing);
    // ... but still served, from the segment's file: part 1 follows part 0's 4 bytes.
    assert_eq!(
        stream.file("source", "1_0_1.m4s"),
        in_segment("1_0.m4s", 4, 4)
    );
    assert_eq!(stream.file("source", "1_0_2.m4s"), FileLookup::Missing);
}

#[test]
fn playlists_report_the_other_renditions_until_the_stream_closes() {
    let store = LiveStore::default();
    let stream = store.open("live/b");
    let changes = stream.subscribe();
    stream.take(vec![live("source", 2, 1, 1), live("180p", 2, 1, 0)]);
    assert!(changes.has_changed().unwrap());
    let PlaylistLookup::Ready(text) = stream.playlist("source", &Directives::default()) else {
        panic!("no playlist")
    };
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains(
            "#EXT-X-RENDITION-REPORT:URI=\"../180p/index.m3u8\",LAST-MSN=1,LAST-PART=1\n"
        ),
        "{text}"
    );
    assert!(!text.contains("../source/"));
    let ahead = Directives {
        msn: Some(3),
        part: None,
        skip: false,
    };
    assert_eq!(
        stream.playlist("source", &ahead),
        PlaylistLookup::Wait { target_duration: 1 }
    );
    assert_eq!(
        stream.playlist("720p", &Directives::default()),
        PlaylistLookup::Missing
    );
    // A new publish of the path replaces the edge; the old session's close leaves
    // the new one alone.
    let newer = store.open("live/b");
    store.close("live/b", &stream);
    assert!(store.get("live/b").is_some_and(|s| Arc::ptr_eq(&s, &newer)));
    assert_eq!(
        stream.playlist("source", &Directives::default()),
        PlaylistLookup::Missing
    );
    store.close("live/b", &newer);
    assert!(store.get("live/b").is_none());
}

#[test]
fn a_playlist_is_rendered_once_per_change_and_shared() {
    let store = LiveStore::default();
    let stream = store.open("live/c");
    stream.take(vec![live("source", 2, 1, 1), live("180p", 2, 1, 0)]);
    let ask = |skip: bool| {
        let directives = Directives {
            skip,
            ..Directives::default()
        };
        match stream.playlist("source", &directives) {
            PlaylistLookup::Ready(text) => text,
            _ => panic!("no playlist"),
        }
    };
    let (first, again) = (ask(false), ask(false));
    // The same bytes, not equal copies.
    assert_eq!(first.as_ptr(), again.as_ptr());
    // Another rendition's new part changes this one's report: rendered anew.
    stream.take(vec![live("180p", 2, 1, 1)]);
    let after = ask(false);
    assert_ne!(after.as_ptr(), first.as_ptr());
    let (before, after) = (
        String::from_utf8(first.to_vec()),
        String::from_utf8(after.to_vec()),
    );
    assert_ne!(before.unwrap(), after.unwrap());
}
