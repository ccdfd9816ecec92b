//! LL-HLS as a player meets it, against a live stream from a real ffmpeg: every
//! playlist follows RFC 8216bis (parts within PART-TARGET and 85 % of it, hold-backs,
//! the preload hint, rendition reports), blocking reloads are answered when the part
//! exists, refused (400) when they ask too far ahead, given up (503) when the stream
//! stalls, and delta updates skip what they may.

mod common;

use std::time::{Duration, Instant};

use common::{Kawa, Publisher, create_stream, wait_for};

/// 1 s segments (the publisher's GOP), so that a window fills quickly.
const ONE_SECOND_SEGMENTS: &str = r#"
[hls]
segment_seconds = 1
playlist_segments = 10
"#;

#[derive(Debug, Clone)]
struct Part {
    uri: String,
    duration: f64,
    independent: bool,
}

#[derive(Debug)]
struct Segment {
    duration: f64,
    parts: Vec<Part>,
}

/// What the tests read from an LL-HLS media playlist.
#[derive(Debug)]
struct LlPlaylist {
    text: String,
    part_target: f64,
    part_hold_back: f64,
    can_skip_until: f64,
    target_duration: f64,
    media_sequence: u64,
    skipped: u64,
    segments: Vec<Segment>,
    open_parts: Vec<Part>,
    preload_hint: Option<String>,
    reports: Vec<(String, u64, Option<u64>)>,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_once(':')?.1.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

fn number(line: &str, name: &str) -> f64 {
    attribute(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn parse(text: &str) -> LlPlaylist {
    let mut p = LlPlaylist {
        text: text.to_owned(),
        part_target: 0.0,
        part_hold_back: 0.0,
        can_skip_until: 0.0,
        target_duration: 0.0,
        media_sequence: 0,
        skipped: 0,
        segments: Vec::new(),
        open_parts: Vec::new(),
        preload_hint: None,
        reports: Vec::new(),
    };
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"), "{text}");
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
            assert_eq!(attribute(line, "CAN-BLOCK-RELOAD"), Some("YES"), "{line}");
            p.part_hold_back = number(line, "PART-HOLD-BACK");
            p.can_skip_until = number(line, "CAN-SKIP-UNTIL");
        } else if line.starts_with("#EXT-X-PART-INF:") {
            p.part_target = number(line, "PART-TARGET");
        } else if line.starts_with("#EXT-X-SKIP:") {
            p.skipped = number(line, "SKIPPED-SEGMENTS") as u64;
        } else if line.starts_with("#EXT-X-PART:") {
            p.open_parts.push(Part {
                uri: attribute(line, "URI").unwrap().to_owned(),
                duration: number(line, "DURATION"),
                independent: attribute(line, "INDEPENDENT") == Some("YES"),
            });
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attribute(line, "TYPE"), Some("PART"));
            p.preload_hint = attribute(line, "URI").map(str::to_owned);
        } else if line.starts_with("#EXT-X-RENDITION-REPORT:") {
            p.reports.push((
                attribute(line, "URI").unwrap().to_owned(),
                number(line, "LAST-MSN") as u64,
                attribute(line, "LAST-PART").map(|v| v.parse().unwrap()),
            ));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if !line.starts_with('#')
            && let Some(duration) = extinf.take()
        {
            p.segments.push(Segment {
                duration,
                parts: std::mem::take(&mut p.open_parts),
            });
        }
    }
    p
}

impl LlPlaylist {
    /// The newest segment and part listed.
    fn last(&self) -> (u64, u64) {
        let complete = self.media_sequence + self.skipped + self.segments.len() as u64;
        match self.open_parts.len() {
            0 => (
                complete - 1,
                self.segments.last().unwrap().parts.len() as u64 - 1,
            ),
            n => (complete, n as u64 - 1),
        }
    }

    /// The spec's rules for parts and hold-backs (RFC 8216bis §4.4.3.7, §4.4.3.8).
    fn check_rules(&self) {
        let text = &self.text;
        assert!(self.part_target > 0.0, "{text}");
        assert!(
            self.part_hold_back >= 3.0 * self.part_target - 1e-9,
            "{text}"
        );
        assert!(self.can_skip_until >= 6.0 * self.target_duration, "{text}");
        let with_parts = self.segments.iter().filter(|s| !s.parts.is_empty());
        for s in with_parts {
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            assert!(
                (sum - s.duration).abs() <= 0.002 * s.parts.len() as f64,
                "parts add up to {sum}, not {}: {text}",
                s.duration
            );
            assert!(s.parts[0].independent, "{text}");
            let (last, others) = s.parts.split_last().unwrap();
            assert!(last.duration <= self.part_target, "{text}");
            for p in others {
                self.check_part(p);
            }
        }
        for p in &self.open_parts {
            self.check_part(p);
        }
    }

    fn check_part(&self, p: &Part) {
        assert!(
            p.duration <= self.part_target && p.duration >= 0.85 * self.part_target,
            "{p:?} against PART-TARGET {}:\n{}",
            self.part_target,
            self.text
        );
    }
}

async fn get(kawa: &Kawa, path: &str) -> (u16, String) {
    let response = reqwest::get(kawa.url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The live playlist once it lists at least `segments` complete segments and a part.
async fn playlist_with(kawa: &Kawa, path: &str, segments: usize) -> LlPlaylist {
    wait_for("an LL-HLS playlist", Duration::from_secs(40), || async {
        let (status, text) = get(kawa, path).await;
        (status == 200 && text.contains("#EXT-X-PART:"))
            .then(|| parse(&text))
            .filter(|p| p.segments.len() >= segments)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reloads_wait_for_the_part_and_refuse_what_is_too_far() {
    let kawa = Kawa::builder()
        .config(ONE_SECOND_SEGMENTS)
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "ll").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let path = "/hls/ll/source/index.m3u8";
    let first = playlist_with(&kawa, path, 2).await;
    first.check_rules();
    assert!(first.text.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    assert!(first.reports.is_empty(), "one rendition reports no other");

    // Ask for the part after the newest: answered when it exists, and it lists it.
    for _ in 0..6 {
        let (msn, part) = parse(&get(&kawa, path).await.1).last();
        let started = Instant::now();
        let (status, text) = get(
            &kawa,
            &format!("{path}?_HLS_msn={msn}&_HLS_part={}", part + 1),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let next = parse(&text);
        next.check_rules();
        let (new_msn, new_part) = next.last();
        assert!(
            (new_msn, new_part) > (msn, part),
            "({msn}, {part}) -> ({new_msn}, {new_part})"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    // The hinted part: held until it is made, then its moof+mdat.
    let p = parse(&get(&kawa, path).await.1);
    let hint = p.preload_hint.clone().expect("a preload hint");
    let response = reqwest::get(kawa.url(&format!("/hls/ll/source/{hint}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{hint}");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "video/mp4"
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"moof");
    // A recent segment is served whole (it is its parts).
    let recent = p.segments.last().unwrap();
    let seg_uri = format!(
        "/hls/ll/source/{}",
        recent.parts[0].uri.rsplit_once('_').unwrap().0.to_owned() + ".m4s"
    );
    let (status, _) = get(&kawa, &seg_uri).await;
    assert_eq!(status, 200, "{seg_uri}");

    // A part that left the playlist is still served: its range of the segment's file.
    let old = first.segments.last().unwrap().parts[1].uri.clone();
    wait_for(
        "the first part to leave the playlist",
        Duration::from_secs(20),
        || async { (!get(&kawa, path).await.1.contains(&old)).then_some(()) },
    )
    .await;
    let fetch = |name: String| {
        let url = kawa.url(&format!("/hls/ll/source/{name}"));
        async move {
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.bytes().await.unwrap()
        }
    };
    let part = fetch(old.clone()).await;
    let segment = fetch(old.rsplit_once('_').unwrap().0.to_owned() + ".m4s").await;
    assert_eq!(&part[4..8], b"moof");
    assert!(segment.windows(part.len()).any(|w| w == part), "{old}");

    // Refusals: part without msn, too far ahead, not a number.
    let (msn, part) = parse(&get(&kawa, path).await.1).last();
    for query in [
        "_HLS_part=1".to_owned(),
        format!("_HLS_msn={}", msn + 3),
        format!("_HLS_msn={msn}&_HLS_part={}", part + 20),
        "_HLS_msn=x".to_owned(),
    ] {
        let (status, text) = get(&kawa, &format!("{path}?{query}")).await;
        assert_eq!(status, 400, "{query}: {text}");
    }

    // The publisher stops (and may reconnect): a request for the next segment is
    // given up after three target durations.
    publisher.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (msn, _) = parse(&get(&kawa, path).await.1).last();
    let started = Instant::now();
    let (status, _) = get(&kawa, &format!("{path}?_HLS_msn={}", msn + 1)).await;
    assert_eq!(status, 503);
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(2900), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_update_skips_the_old_segments() {
    let kawa = Kawa::builder()
        .config(ONE_SECOND_SEGMENTS)
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "delta").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let path = "/hls/delta/source/index.m3u8";
    // Ten 1 s segments: those ending more than 6 s before the end may be skipped.
    let full = playlist_with(&kawa, path, 9).await;
    full.check_rules();
    let (status, text) = get(&kawa, &format!("{path}?_HLS_skip=YES")).await;
    assert_eq!(status, 200);
    let delta = parse(&text);
    delta.check_rules();
    assert!(delta.skipped >= 2, "{text}");
    assert_eq!(
        delta.media_sequence,
        full.media_sequence.max(delta.media_sequence)
    );
    let listed: f64 = delta.segments.iter().map(|s| s.duration).sum();
    assert!(listed >= delta.can_skip_until - 1.0, "{text}");
    // The segments after the skip are the full playlist's newest ones.
    let full = parse(&get(&kawa, path).await.1);
    assert_eq!(
        full.segments.len() as u64,
        delta.skipped + delta.segments.len() as u64,
        "{text}\n{}",
        full.text
    );
}

/// A ladder that fits a 320x240 test source.
const LADDER: &str = r#"
[hls]
segment_seconds = 1

[[hls.rungs]]
name = "180p"
height = 180
video_kbps = 300
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendition_reports_the_others_with_the_same_server_control() {
    let kawa = Kawa::builder().config(LADDER).start();
    let key = create_stream(&kawa, "reports").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let source = playlist_with(&kawa, "/hls/reports/source/index.m3u8", 2).await;
    let rung = playlist_with(&kawa, "/hls/reports/180p/index.m3u8", 2).await;
    for (p, other) in [(&source, "180p"), (&rung, "source")] {
        p.check_rules();
        assert_eq!(p.reports.len(), 1, "{}", p.text);
        let (uri, msn, part) = &p.reports[0];
        assert_eq!(uri, &format!("../{other}/index.m3u8"));
        assert!(*msn > 0 && part.is_some(), "{}", p.text);
    }
    let control = |p: &LlPlaylist| {
        (
            p.target_duration,
            p.part_target,
            p.part_hold_back,
            p.can_skip_until,
        )
    };
    assert_eq!(control(&source), control(&rung));
}
