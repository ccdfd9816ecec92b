use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::hls::rules_tests::{keyframe_unit, packager, start, video};

/// A packager's outputs, one batch per frame: 25 frames a second, a keyframe every
/// `gop` frames, `frames` in all.
fn batches(gop: usize, frames: usize) -> Vec<Vec<Output>> {
    let mut p = packager();
    let mut batches = vec![p.start("source", start()).unwrap()];
    for n in 0..frames {
        let keyframe = n % gop == 0;
        let data = if keyframe {
            keyframe_unit()
        } else {
            Bytes::from(vec![0, 0, 0, 1, 0x41, 0x88, n as u8])
        };
        let frame = video(n as i64 * 3600, keyframe, data);
        batches.push(p.push("source", frame).unwrap());
    }
    batches
}

/// What Redis would hold per segment: each replicated part's element, in order.
fn lists(batches: &[Vec<Output>]) -> std::collections::BTreeMap<u64, Vec<Vec<u8>>> {
    let mut lists = std::collections::BTreeMap::<u64, Vec<Vec<u8>>>::new();
    for batch in batches {
        for part in parts_of(batch) {
            lists.entry(part.msn).or_default().push(encode(&part));
        }
    }
    lists
}

/// The part names among `outputs` whose segment is `msn` or later.
fn part_names_from(outputs: &[Vec<Output>], msn: u64) -> Vec<String> {
    (outputs.iter().flatten())
        .filter_map(|o| match o {
            Output::Part { name, .. } => Some(name.clone()),
            _ => None,
        })
        .filter(|name| name.split('_').nth(1).and_then(|n| n.parse::<u64>().ok()) >= Some(msn))
        .collect()
}

#[test]
fn every_part_is_replicated_and_rebuilds_its_segment() {
    // 6.4 s: three whole 2 s segments and an open one.
    let batches = batches(50, 160);
    // A stream's first segment is not: no viewer saw its parts (the live playlist
    // appears with the first whole segment), and a successor has nothing to go on from.
    let parts = part_names_from(&batches, 1);
    let replicated: Vec<String> = (batches.iter())
        .flat_map(|b| parts_of(b))
        .filter(|p| p.msn >= 1)
        .map(|p| {
            format!(
                "{}_{}.m4s",
                p.header.segment.trim_end_matches(".m4s"),
                p.header.index
            )
        })
        .collect();
    assert_eq!(replicated, parts, "every part, in order");
    let lists = lists(&batches);
    assert_eq!(lists.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(
        rebuild(0, &lists[&0]).is_none(),
        "only its last part is there"
    );
    let segments: Vec<(&String, &Chunks, f64)> = (batches.iter().flatten())
        .filter_map(|o| match o {
            Output::Segment {
                name,
                data,
                duration,
                ..
            } => Some((name, data, *duration)),
            _ => None,
        })
        .collect();
    assert_eq!(segments.len(), 3);
    for (msn, (name, data, duration)) in segments.into_iter().enumerate().skip(1) {
        let rebuilt = rebuild(msn as u64, &lists[&(msn as u64)]).expect("rebuilt");
        assert!(rebuilt.closed);
        assert_eq!(&rebuilt.record.uri, name);
        assert_eq!(rebuilt.data.to_vec(), data.to_vec(), "segment {msn}");
        assert!((rebuilt.record.duration - duration).abs() < 1e-6);
        assert!(rebuilt.record.independent && !rebuilt.record.gap);
        assert!(rebuilt.record.init.ends_with(".mp4"));
    }
    // The open segment: what its parts hold so far, not closed.
    let open = rebuild(3, &lists[&3]).expect("the open segment");
    assert!(!open.closed);
    assert!(open.record.duration > 0.0 && open.record.duration < 0.5);
    assert!(open.record.uri.ends_with("_3.m4s"));
}

#[test]
fn a_segment_missing_a_part_is_cut_before_it_and_one_without_its_first_is_not_rebuilt() {
    let lists = lists(&batches(50, 110));
    let whole = rebuild(1, &lists[&1]).unwrap();
    let mut elements = lists[&1].clone();
    assert!(elements.len() > 3);
    elements.remove(2);
    let cut = rebuild(1, &elements).unwrap();
    assert!(!cut.closed, "a segment with a hole is no longer whole");
    assert_eq!(cut.data.pieces().len(), 2);
    assert!(cut.record.duration < whole.record.duration);
    assert!(rebuild(1, &lists[&1][1..]).is_none());
    // Another segment's list, or another writer's parts after the first's.
    assert!(rebuild(2, &lists[&1]).is_none());
    let mut mixed = lists[&1].clone();
    mixed.insert(1, lists[&1][0].clone());
    assert_eq!(rebuild(1, &mixed).unwrap(), whole);
}

#[test]
fn hostile_elements_are_refused() {
    let part = |segment: &str, duration: f64| ReplicatedPart {
        rendition: "source".into(),
        msn: 3,
        header: PartHeader {
            segment: segment.into(),
            init: "1_0.mp4".into(),
            index: 0,
            duration,
            independent: true,
            discontinuity: false,
            program_date_time: None,
            closes: false,
        },
        data: Bytes::from_static(b"media"),
    };
    let good = encode(&part("1_3.m4s", 0.5));
    assert_eq!(decode(&good).unwrap().1, b"media");
    for bad in [
        part("../1_3.m4s", 0.5),
        part("1_3.mp4", 0.5),
        part("1_x.m4s", 0.5),
        part("1_3.m4s", f64::NAN),
        part("1_3.m4s", 1e9),
    ] {
        assert!(decode(&encode(&bad)).is_err(), "{:?}", bad.header);
    }
    assert_eq!(decode(&good[..3]), Err(PartError::Truncated));
    assert_eq!(decode(&good[..10]), Err(PartError::Truncated));
    let mut huge = good.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode(&huge),
        Err(PartError::HeaderTooLarge(u32::MAX as usize))
    );
    assert!(rebuild(3, std::slice::from_ref(&good)).is_some());
    assert!(rebuild(3, &[huge, b"".to_vec()]).is_none());
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = rebuild(0, &[bytes]);
    }
}
