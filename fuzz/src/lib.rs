//! A counting global allocator that measures the heap one call uses on the current thread,
//! for `imlab_core::fuzzing::frame_decoder`'s allocation checks.
//!
//! Shared by the `frame_decoder` fuzz target and `core/tests/fuzz_corpus.rs`, which includes
//! this file by path (a library cannot install a global allocator, and the test must not
//! depend on this nightly-only crate). Counters are per thread, so parallel tests do not mix.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator plus per-thread live and peak byte counters.
pub struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
    static START_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn grew(delta_bytes: isize) {
    // `try_with`: never touch a thread-local while its thread is being torn down.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get().wrapping_add(delta_bytes);
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is delegated to the system allocator with the caller's arguments; the
// counters are const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grew(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Measures through [`CountingAllocator`], which must be the `#[global_allocator]`.
pub struct ThreadHeapMeter;

impl imlab_core::fuzzing::HeapMeter for ThreadHeapMeter {
    fn start(&self) {
        let live = LIVE_BYTES.with(Cell::get);
        START_BYTES.with(|start| start.set(live));
        PEAK_BYTES.with(|peak| peak.set(live));
    }

    fn peak_bytes(&self) -> usize {
        let growth = PEAK_BYTES.with(Cell::get) - START_BYTES.with(Cell::get);
        growth.max(0) as usize
    }
}
