//! Viewers per stream, for dashboards: the distinct clients that read one of the stream's
//! media playlists in the last 30 seconds. A player reloads its playlist every part or
//! segment, so a viewer who left drops out within the window.
//!
//! A client is its address: an IPv4 address, or an IPv6 /64 (one household's or device's
//! network, as NAT makes one IPv4 address). Headers a client chooses do not make it
//! several viewers: `X-Forwarded-For` is believed only from `http.trusted_proxies` and
//! from the other nodes of a cluster (which pass on their viewers' addresses), and the
//! user agent is not part of a viewer. Viewers behind one NAT count once.
//!
//! Bounded and without a global lock: paths are spread over shards, each with its own
//! lock; a path's viewers and the paths are capped, and a full map is pruned at most
//! once a second (not scanned for every newcomer).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use ipnet::IpNet;

pub const WINDOW: Duration = Duration::from_secs(30);
const MAX_VIEWERS_PER_PATH: usize = 100_000;
const SHARDS: usize = 16;
const MAX_PATHS_PER_SHARD: usize = 10_000 / SHARDS;
/// A full map is pruned of expired viewers at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The address of the client behind `req`: the peer's, or, when the peer is a trusted
/// proxy (or another node of the cluster: `internal`), the nearest untrusted address in
/// its `X-Forwarded-For`.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet], internal: bool) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !internal && !trusted.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    // From the right: each proxy appends who it heard from.
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.iter().any(|net| net.contains(ip)))
            .unwrap_or(peer),
    )
}

/// One viewer per IPv4 address, or per IPv6 /64.
fn viewer_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

struct PathViewers {
    seen: HashMap<u64, Instant>,
    pruned: Instant,
}

impl PathViewers {
    fn new(now: Instant) -> Self {
        Self {
            seen: HashMap::new(),
            pruned: now,
        }
    }

    fn prune(&mut self, now: Instant) {
        self.seen.retain(|_, t| now.duration_since(*t) < WINDOW);
        self.pruned = now;
    }
}

pub struct Viewers {
    shards: [Mutex<HashMap<String, PathViewers>>; SHARDS],
    trusted: Vec<IpNet>,
    /// Keyed per process: a viewer's id says nothing outside it.
    hasher: std::collections::hash_map::RandomState,
}

impl Viewers {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            trusted,
            hasher: Default::default(),
        }
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn trusted(&self) -> &[IpNet] {
        &self.trusted
    }

    /// A client's id: its network (see the module's note), hashed.
    pub fn viewer_id(&self, req: &HttpRequest, internal: bool) -> u64 {
        let ip = client_ip(req, &self.trusted, internal).map(viewer_network);
        self.hasher.hash_one(ip)
    }

    fn shard(&self, path: &str) -> std::sync::MutexGuard<'_, HashMap<String, PathViewers>> {
        let index = self.hasher.hash_one(path) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `viewer` read a playlist of `path` now.
    pub fn seen(&self, path: &str, viewer: u64) {
        self.seen_at(path, viewer, Instant::now());
    }

    fn seen_at(&self, path: &str, viewer: u64, now: Instant) {
        let mut paths = self.shard(path);
        if !paths.contains_key(path) && paths.len() >= MAX_PATHS_PER_SHARD {
            paths.retain(|_, v| v.seen.values().any(|t| now.duration_since(*t) < WINDOW));
            if paths.len() >= MAX_PATHS_PER_SHARD {
                return;
            }
        }
        let viewers = paths
            .entry(path.to_owned())
            .or_insert_with(|| PathViewers::new(now));
        if viewers.seen.len() >= MAX_VIEWERS_PER_PATH && !viewers.seen.contains_key(&viewer) {
            if now.duration_since(viewers.pruned) < PRUNE_EVERY {
                return;
            }
            viewers.prune(now);
            if viewers.seen.len() >= MAX_VIEWERS_PER_PATH {
                return;
            }
        }
        viewers.seen.insert(viewer, now);
    }

    /// Viewers of `path` in the last [`WINDOW`].
    pub fn count(&self, path: &str) -> usize {
        self.count_at(path, Instant::now())
    }

    fn count_at(&self, path: &str, now: Instant) -> usize {
        let mut paths = self.shard(path);
        let Some(viewers) = paths.get_mut(path) else {
            return 0;
        };
        viewers.prune(now);
        let n = viewers.seen.len();
        if n == 0 {
            paths.remove(path);
        }
        n
    }

    /// Every path with viewers now, and how many.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let now = Instant::now();
        let mut counts = Vec::new();
        for shard in &self.shards {
            let mut paths = shard.lock().unwrap_or_else(|p| p.into_inner());
            paths.retain(|_, v| {
                v.prune(now);
                !v.seen.is_empty()
            });
            counts.extend(paths.iter().map(|(p, v)| (p.clone(), v.seen.len())));
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn counts_distinct_readers_of_the_last_thirty_seconds() {
        let viewers = Viewers::new(Vec::new());
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

    fn request(peer: &str, forwarded: Option<&str>, agent: &str) -> HttpRequest {
        let mut req = TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .insert_header(("user-agent", agent));
        if let Some(f) = forwarded {
            req = req.insert_header(("x-forwarded-for", f));
        }
        req.to_http_request()
    }

    #[test]
    fn headers_a_client_chooses_do_not_make_it_several_viewers() {
        let viewers = Viewers::new(Vec::new());
        let ids: std::collections::HashSet<u64> = (0..50)
            .map(|i| {
                let forwarded = format!("10.0.0.{i}");
                let req = request("203.0.113.7:4000", Some(&forwarded), &format!("agent {i}"));
                viewers.viewer_id(&req, false)
            })
            .collect();
        assert_eq!(ids.len(), 1);
        // An IPv6 client's addresses within its /64 are one viewer.
        let a = viewers.viewer_id(&request("[2001:db8:1:2::5]:4000", None, "x"), false);
        let b = viewers.viewer_id(&request("[2001:db8:1:2:ffff::9]:4000", None, "y"), false);
        let c = viewers.viewer_id(&request("[2001:db8:1:3::5]:4000", None, "x"), false);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_trusted_proxy_or_a_node_passes_on_its_clients_address() {
        let trusted = vec!["192.0.2.0/24".parse().unwrap()];
        let viewers = Viewers::new(trusted);
        // The nearest untrusted address from the right: a client cannot put itself in
        // front of what the trusted proxy appended.
        let req = request(
            "192.0.2.1:80",
            Some("1.1.1.1, 198.51.100.4, 192.0.2.9"),
            "x",
        );
        assert_eq!(
            client_ip(&req, viewers.trusted(), false),
            Some("198.51.100.4".parse().unwrap())
        );
        let untrusted = request("198.51.100.99:80", Some("1.1.1.1"), "x");
        assert_eq!(
            client_ip(&untrusted, viewers.trusted(), false),
            Some("198.51.100.99".parse().unwrap())
        );
        assert_eq!(
            client_ip(&untrusted, viewers.trusted(), true),
            Some("1.1.1.1".parse().unwrap())
        );
    }

    #[test]
    fn a_full_path_is_pruned_at_most_once_a_second() {
        let viewers = Viewers::new(Vec::new());
        let t0 = Instant::now();
        for id in 0..MAX_VIEWERS_PER_PATH as u64 {
            viewers.seen_at("p", id, t0);
        }
        // Full: newcomers are not counted (and cost no scan) until a prune may run.
        viewers.seen_at("p", u64::MAX, t0 + Duration::from_millis(10));
        assert_eq!(
            viewers.count_at("p", t0 + Duration::from_millis(20)),
            MAX_VIEWERS_PER_PATH
        );
        // Everyone expired: the next newcomer prunes and is counted.
        let later = t0 + WINDOW + Duration::from_secs(2);
        viewers.seen_at("p", u64::MAX, later);
        assert_eq!(viewers.count_at("p", later), 1);
    }
}
