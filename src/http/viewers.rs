//! Viewers per stream, for dashboards: the distinct clients (address and user agent) that
//! read one of the stream's media playlists in the last 30 seconds. A player reloads its
//! playlist every part or segment, so a viewer who left drops out within the window.
//!
//! Bounded: the clients of a path and the paths are capped (a client can claim any
//! address in `X-Forwarded-For`; it can inflate a count, not memory).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;

pub const WINDOW: Duration = Duration::from_secs(30);
const MAX_VIEWERS_PER_PATH: usize = 100_000;
const MAX_PATHS: usize = 10_000;

#[derive(Default)]
pub struct Viewers {
    paths: Mutex<HashMap<String, HashMap<u64, Instant>>>,
    /// Keyed per process: a viewer's id says nothing outside it.
    hasher: std::collections::hash_map::RandomState,
}

impl Viewers {
    /// A client's id: its address (as forwarded by a proxy in front, if any) and its
    /// user agent, hashed.
    pub fn viewer_id(&self, req: &HttpRequest) -> u64 {
        let info = req.connection_info();
        let address = info.realip_remote_addr().unwrap_or("");
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        self.hasher.hash_one((address, agent))
    }

    /// `viewer` read a playlist of `path` now.
    pub fn seen(&self, path: &str, viewer: u64) {
        self.seen_at(path, viewer, Instant::now());
    }

    fn seen_at(&self, path: &str, viewer: u64, now: Instant) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if !paths.contains_key(path) && paths.len() >= MAX_PATHS {
            paths.retain(|_, v| v.values().any(|t| now.duration_since(*t) < WINDOW));
            if paths.len() >= MAX_PATHS {
                return;
            }
        }
        let viewers = paths.entry(path.to_owned()).or_default();
        if viewers.len() >= MAX_VIEWERS_PER_PATH && !viewers.contains_key(&viewer) {
            viewers.retain(|_, t| now.duration_since(*t) < WINDOW);
            if viewers.len() >= MAX_VIEWERS_PER_PATH {
                return;
            }
        }
        viewers.insert(viewer, now);
    }

    /// Viewers of `path` in the last [`WINDOW`].
    pub fn count(&self, path: &str) -> usize {
        self.count_at(path, Instant::now())
    }

    fn count_at(&self, path: &str, now: Instant) -> usize {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        let Some(viewers) = paths.get_mut(path) else {
            return 0;
        };
        viewers.retain(|_, t| now.duration_since(*t) < WINDOW);
        let n = viewers.len();
        if n == 0 {
            paths.remove(path);
        }
        n
    }

    /// Every path with viewers now, and how many.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let now = Instant::now();
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths.retain(|_, v| {
            v.retain(|_, t| now.duration_since(*t) < WINDOW);
            !v.is_empty()
        });
        paths.iter().map(|(p, v)| (p.clone(), v.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_readers_of_the_last_thirty_seconds() {
        let viewers = Viewers::default();
        let t0 = Instant::now();
        viewers.seen_at("a", 1, t0);
        viewers.seen_at("a", 1, t0 + Duration::from_secs(1));
        viewers.seen_at("a", 2, t0 + Duration::from_secs(2));
        viewers.seen_at("b", 1, t0);
        assert_eq!(viewers.count_at("a", t0 + Duration::from_secs(3)), 2);
        // Viewer 2 read last at 2 s: gone at 32 s; viewer 1 at 1 s: gone too.
        assert_eq!(viewers.count_at("a", t0 + Duration::from_secs(31)), 1);
        assert_eq!(viewers.count_at("a", t0 + Duration::from_secs(33)), 0);
        assert_eq!(viewers.count_at("nobody", t0), 0);
    }
}
