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

/// Keeps this process, and the FFmpeg children it starts, on 4 KiB pages.
///
/// mimalloc marks the memory it maps for transparent huge pages (`MADV_HUGEPAGE`, its
/// `allow_thp` option), so under the kernel's `madvise` mode (Debian's default) the first
/// touch of each 2 MiB region faulted in and zeroed a whole huge page: 4.5 % of Kawa's
/// samples in the soak bench (`clear_page_erms` under `do_huge_pmd_anonymous_page`), and
/// 64 of its 110 MB resident were huge pages. Kawa's heap is many small buffers that
/// come and go; huge pages save it no TLB misses worth that.
pub fn no_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_pages_are_off_for_the_process() {
        super::no_huge_pages().unwrap();
        // SAFETY: as above.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
