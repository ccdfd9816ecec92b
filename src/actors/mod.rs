//! The actors: thin shells that receive a message, call the pure core, send a message.
//!
//! ```text
//! RtmpListener ── RtmpConnection (one per TCP connection; never restarted)
//! StreamRegistry (publish path -> live StreamSession; takeover policy; supervises sessions)
//! └── StreamSession (one per live stream; restarted in place from its checkpoint)
//!     └── Transcoder (one FFmpeg child; the session starts a new one when it dies)
//! Deliveries ── Uploader (actix Supervisor; restarts reopen the spool)
//! ```
//!
//! Restart policies, escalation and the fault hook: [`supervision`], and the tree in
//! `docs/DESIGN.md`.

pub mod publishing;
pub mod registry;
pub mod restart;
pub mod rtmp_conn;
pub mod rtmp_listener;
pub mod session;
pub mod srt;
pub mod supervision;
pub mod transcoder;
pub mod uploader;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections an arbiter takes before the next one is used. One event loop serving
/// many connections wakes once for all that are ready; spread over every core at low
/// load, each thread woke for a few: peerbench, 30 passthrough streams on 2 cores, 0.35 %
/// of a core per stream spread over two arbiters, 0.25 % on one (nginx-rtmp: 0.25 to
/// 0.27 %). Past this many, connections go to the least loaded arbiter, so a busy node
/// still uses every core.
pub const FILL_PER_ARBITER: usize = 32;

/// One actix arbiter (a thread with its own event loop) per core. A connection and its
/// stream session share one, so a frame never wakes another thread; arbiters are filled
/// in turn (see [`FILL_PER_ARBITER`]).
#[derive(Clone)]
pub struct Arbiters {
    handles: Arc<[actix::ArbiterHandle]>,
    /// Connections open on each.
    loads: Arc<[AtomicUsize]>,
}

/// A connection's place on an arbiter, given back when it drops.
pub struct Placement {
    index: usize,
    loads: Arc<[AtomicUsize]>,
}

impl Placement {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.loads[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Threads for an arbiter's blocking work (its streams' file writes, key lookups). Tokio
/// allows 512 and starts one whenever none is idle: 30 streams writing their segments
/// at once kept about 25 of them alive, and each thread's allocator heap holds its own
/// partly used pages (mimalloc: 35 thread heaps, 33 threads), about a third of a
/// passthrough stream's memory (peerbench N=30). Two keep writes in order per stream
/// (each writer waits for its last job) and bound the threads and their heaps.
const BLOCKING_THREADS: usize = 2;

/// The first arbiter with room under `fill`, else the least loaded.
fn choose(loads: &[usize], fill: usize) -> usize {
    loads
        .iter()
        .position(|l| *l < fill)
        .unwrap_or_else(|| (0..loads.len()).min_by_key(|i| loads[*i]).unwrap_or(0))
}

impl Arbiters {
    /// `count` arbiters (at least one). They run until the process exits.
    pub fn start(count: usize) -> Self {
        let handles: Vec<_> = (0..count.max(1))
            .map(|_| {
                let arbiter = actix::Arbiter::with_tokio_rt(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(BLOCKING_THREADS)
                        .build()
                        .expect("a stream arbiter's runtime")
                });
                let handle = arbiter.handle();
                handle.spawn_fn(|| crate::metrics::register_runtime("stream"));
                // The arbiter's thread lives on when the `Arbiter` value is dropped.
                std::mem::forget(arbiter);
                handle
            })
            .collect();
        let loads: Vec<AtomicUsize> = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        Self {
            handles: handles.into(),
            loads: loads.into(),
        }
    }

    /// A place for a new connection (its session goes to the same arbiter).
    pub fn place(&self) -> Placement {
        let loads: Vec<usize> = self
            .loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        let index = choose(&loads, FILL_PER_ARBITER);
        self.loads[index].fetch_add(1, Ordering::Relaxed);
        Placement {
            index,
            loads: Arc::clone(&self.loads),
        }
    }

    /// The arbiter at `index` (a [`Placement`]'s).
    pub fn handle(&self, index: usize) -> &actix::ArbiterHandle {
        &self.handles[index % self.handles.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn arbiters_fill_in_turn_then_the_least_loaded_takes_more() {
        assert_eq!(choose(&[0, 0], 32), 0);
        assert_eq!(choose(&[31, 0], 32), 0);
        assert_eq!(choose(&[32, 0], 32), 1);
        assert_eq!(choose(&[32, 32], 32), 0);
        assert_eq!(choose(&[40, 33], 32), 1);
        assert_eq!(choose(&[], 32), 0);
    }
}
