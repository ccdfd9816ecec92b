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

/// Live heap bytes, counted in builds with `fault-injection` only.
#[cfg(feature = "fault-injection")]
pub use counted::{Counted, live_heap_bytes};

#[cfg(feature = "fault-injection")]
mod counted {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicIsize, Ordering};

    /// The global allocator of a build with `fault-injection` (the chaos benchmark's):
    /// the inner one, counting the bytes live on the heap. Its count
    /// (`kawa_heap_live_bytes`) tells memory the process still uses from memory the
    /// allocator keeps after use, when RSS grows under chaos. An atomic add per allocation:
    /// not in a default build.
    pub struct Counted<A>(pub A);

    static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

    /// Bytes live on the heap, when [`Counted`] is the global allocator.
    pub fn live_heap_bytes() -> isize {
        LIVE_BYTES.load(Ordering::Relaxed)
    }

    fn count(bytes: isize) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }

    // SAFETY: every call goes to the inner allocator as it came; only a counter is added.
    unsafe impl<A: GlobalAlloc> GlobalAlloc for Counted<A> {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            let ptr = unsafe { self.0.alloc(layout) };
            if !ptr.is_null() {
                count(layout.size() as isize);
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            let ptr = unsafe { self.0.alloc_zeroed(layout) };
            if !ptr.is_null() {
                count(layout.size() as isize);
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.0.dealloc(ptr, layout) };
            count(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            let new = unsafe { self.0.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            new
        }
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
