//! A global allocator for tests that measure heap bytes: it counts what this thread allocates
//! and frees while [`count`] runs a closure, and delegates everything to the system allocator.
//! A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;`.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    /// Counting is on for this thread; other threads' allocations are not counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed by this thread while counting, and the peak.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator and only adds counters, kept in
// const-initialised thread-locals (which never allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            let live = LIVE_BYTES.with(|live| {
                live.set(live.get() + layout.size() as isize);
                live.get()
            });
            PEAK_BYTES.with(|peak| peak.set(peak.get().max(live)));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.with(Cell::get) {
            LIVE_BYTES.with(|live| live.set(live.get() - layout.size() as isize));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What `f` did to this thread's heap: its result, the bytes it left allocated (allocated
/// minus freed, sizes as asked) and the most it held at once.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, isize, isize) {
    LIVE_BYTES.with(|live| live.set(0));
    PEAK_BYTES.with(|peak| peak.set(0));
    COUNTING.with(|on| on.set(true));
    let result = f();
    COUNTING.with(|on| on.set(false));
    (
        result,
        LIVE_BYTES.with(Cell::get),
        PEAK_BYTES.with(Cell::get),
    )
}
