//! The chaos benchmark's readers: each polls its stream's playlist from a random node
//! four times a second, as a player would, checks the playlist's rules, fetches each new
//! segment (from another node when the one that listed it fails), and measures how long
//! it waited for a new part and for a new segment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use m3u8_rs::MediaPlaylist;

/// A small random number generator (no dependency for a benchmark's dice).
pub struct Dice(pub u64);

impl Dice {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// How long readers waited for something new: a whole segment (a player that loads
/// segments) or a part (an LL-HLS player, which follows parts).
#[derive(Default)]
pub struct Gaps {
    longest: Duration,
    /// Every gap over 3 s (the goal): stream, seconds, when it ended (s into the run).
    over: Vec<(String, f64, f64)>,
}

impl Gaps {
    fn saw(&mut self, stream: &str, gap: Duration, ended: f64) {
        self.longest = self.longest.max(gap);
        if gap > Duration::from_secs(3) {
            self.over
                .push((stream.to_owned(), gap.as_secs_f64(), ended));
        }
    }

    /// Prints the gaps over 3 s, each with the faults of the 10 s before it began.
    pub fn print(&self, what: &str, events: &[(u64, String)]) {
        println!(
            "  longest gap between new {what}: {:.1} s; gaps over 3 s: {}",
            self.longest.as_secs_f64(),
            self.over.len()
        );
        for (stream, gap, ended) in &self.over {
            let began = ended - gap;
            let near: Vec<&str> = (events.iter())
                .filter(|(t, _)| (began - 10.0..=*ended).contains(&(*t as f64)))
                .map(|(_, e)| e.as_str())
                .collect();
            let near = if near.is_empty() {
                "no fault".to_owned()
            } else {
                near.join("; ")
            };
            println!("    {stream}: {gap:.1} s, {began:.0}..{ended:.0} s (near: {near})");
        }
    }
}

#[derive(Default)]
pub struct Seen {
    pub segments: Gaps,
    pub parts: Gaps,
    /// Segments a playlist listed that could not be fetched.
    pub unserved: Vec<String>,
    /// Segments the node that listed them did not serve (another node did, or none).
    pub retried: u64,
    /// Rules broken: the media sequence went back, a number changed its segment, the
    /// discontinuity sequence went back, the target duration changed.
    pub broken: Vec<String>,
    /// Where each rule was broken: the stream, the node that answered, the wall clock.
    pub broken_at: Vec<(String, usize, time::OffsetDateTime)>,
    pub polls: u64,
    pub errors: u64,
}

/// What one reader remembers of its stream's playlist.
struct Track {
    uris: BTreeMap<u64, String>,
    /// Numbers listed as `EXT-X-GAP` (a dead owner's unsaved segments): players never
    /// fetch them, and neither does the reader.
    gaps: std::collections::HashSet<u64>,
    media_sequence: u64,
    discontinuity_sequence: u64,
    target: Option<u64>,
    /// Every part URI listed so far (`EXT-X-PART`, which m3u8-rs does not parse).
    parts: std::collections::HashSet<String>,
}

/// Whether the playlist lists a part `track` has not seen.
fn new_part(track: &mut Track, playlist: &[u8]) -> bool {
    let text = String::from_utf8_lossy(playlist);
    let mut new = false;
    for line in text.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
        let uri = line
            .split("URI=\"")
            .nth(1)
            .and_then(|u| u.split('"').next());
        if let Some(uri) = uri {
            new |= track.parts.insert(uri.to_owned());
        }
    }
    new
}

/// `stream`: the stream's name, with when and from which node this playlist came.
fn check(track: &mut Track, p: &MediaPlaylist, stream: &str, seen: &mut Seen) -> bool {
    let mut new = false;
    if p.media_sequence < track.media_sequence {
        seen.broken.push(format!(
            "{stream}: media sequence {} -> {}",
            track.media_sequence, p.media_sequence
        ));
    }
    if p.discontinuity_sequence < track.discontinuity_sequence {
        seen.broken.push(format!(
            "{stream}: discontinuity sequence {} -> {}",
            track.discontinuity_sequence, p.discontinuity_sequence
        ));
    }
    if track.target.is_some_and(|t| t != p.target_duration) {
        seen.broken.push(format!(
            "{stream}: target duration changed to {}",
            p.target_duration
        ));
    }
    track.target = Some(p.target_duration);
    track.media_sequence = track.media_sequence.max(p.media_sequence);
    track.discontinuity_sequence = track.discontinuity_sequence.max(p.discontinuity_sequence);
    for (n, s) in (p.media_sequence..).zip(&p.segments) {
        if s.unknown_tags.iter().any(|t| t.tag == "X-GAP") {
            track.gaps.insert(n);
        }
        match track.uris.insert(n, s.uri.clone()) {
            None => new = true,
            Some(old) if old != s.uri => {
                seen.broken
                    .push(format!("{stream}: segment {n} was {old}, now {}", s.uri));
            }
            Some(_) => {}
        }
    }
    new
}

/// Reads `stream` as a player would, from a random node each time, until `until`.
pub async fn reader(
    stream: String,
    nodes: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Seen>>,
    started: Instant,
    until: Instant,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut dice = Dice(stream.bytes().map(u64::from).sum::<u64>() * 7919 + 1);
    let mut track = Track {
        uris: BTreeMap::new(),
        gaps: Default::default(),
        media_sequence: 0,
        discontinuity_sequence: 0,
        target: None,
        parts: Default::default(),
    };
    let (mut last_segment, mut last_part): (Option<Instant>, Option<Instant>) = (None, None);
    while Instant::now() < until {
        // Four times a second, so that a gap is measured within a quarter second.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (node, base) = {
            let nodes = nodes.lock().unwrap();
            let node = dice.below(nodes.len());
            (node, nodes[node].clone())
        };
        let url = format!("{base}/hls/{stream}/source/index.m3u8");
        let playlist = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        let parsed = playlist
            .as_deref()
            .and_then(|b| m3u8_rs::parse_media_playlist_res(b).ok());
        let Some(p) = parsed else {
            seen.lock().unwrap().errors += 1;
            continue;
        };
        let before = track.uris.keys().next_back().copied();
        if new_part(&mut track, playlist.as_deref().unwrap_or_default()) {
            if let Some(at) = last_part {
                let t = started.elapsed().as_secs_f64();
                seen.lock().unwrap().parts.saw(&stream, at.elapsed(), t);
            }
            last_part = Some(Instant::now());
        }
        let new = {
            let mut seen = seen.lock().unwrap();
            seen.polls += 1;
            let at = started.elapsed().as_secs_f64();
            let from = format!("{stream} (node {node}, {at:.0} s)");
            let rules_broken = seen.broken.len();
            let new = check(&mut track, &p, &from, &mut seen);
            if seen.broken.len() > rules_broken {
                let now = time::OffsetDateTime::now_utc();
                seen.broken_at.push((stream.clone(), node, now));
            }
            new
        };
        if new {
            // Fetch what is new, from the same node first; a player retries a failed
            // segment, so a node that died after listing it does not lose it: only a
            // segment no node serves is lost.
            for (n, uri) in track.uris.range(before.map_or(0, |b| b + 1)..) {
                if track.gaps.contains(n) {
                    continue;
                }
                let mut bases = vec![base.clone()];
                bases.extend(
                    nodes
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|b| **b != base)
                        .cloned(),
                );
                for (attempt, base) in bases.iter().enumerate() {
                    let url = format!("{base}/hls/{stream}/source/{uri}");
                    let got = match client.get(&url).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if got {
                        break;
                    }
                    let mut seen = seen.lock().unwrap();
                    if attempt == 0 {
                        seen.retried += 1;
                    }
                    if attempt + 1 == bases.len() {
                        seen.unserved.push(format!("{stream} #{n} {uri}"));
                    }
                }
            }
            if let Some(at) = last_segment {
                let t = started.elapsed().as_secs_f64();
                seen.lock().unwrap().segments.saw(&stream, at.elapsed(), t);
            }
            last_segment = Some(Instant::now());
        }
    }
}
