//! Freed memory goes back to the system even on a thread that has gone quiet.
//!
//! mimalloc returns ("purges") freed pages lazily, from the owning thread's later
//! allocator calls. An HTTP worker that freed 3000 closed connections' buffers and then
//! had nothing to do kept them resident, 45 MB over for as long as it stayed idle
//! (`tests/slow_viewers.rs`). Each HTTP worker therefore asks mimalloc to collect its
//! heap every [`EVERY`]: a walk over the thread's pages, microseconds when little is free.

use std::cell::Cell;
use std::time::Duration;

/// How often a thread collects its freed pages.
const EVERY: Duration = Duration::from_secs(2);

thread_local! {
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
}

/// Collects the calling thread's mimalloc heap every [`EVERY`], from a task on this
/// thread's actix runtime (mimalloc collects only the heap of the thread that asks).
/// Once per thread, however often it is called.
pub fn collect_on_this_thread() {
    if COLLECTING.with(|c| c.replace(true)) {
        return;
    }
    actix_web::rt::spawn(async {
        let mut tick = actix_web::rt::time::interval(EVERY);
        loop {
            tick.tick().await;
            // SAFETY: mi_collect takes no pointers; with `force = false` it only frees
            // pages that hold nothing and returns them to the OS per mimalloc's options.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}
