//! A global allocator for tests that measure heap bytes: it counts what this thread allocates
//! and frees while [`count`] runs a closure, and delegates everything to the system allocator.
//! A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;`.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Instant;

pub struct Counting;

/// Bytes freed by every thread since the binary started, counted or not.
static FREED_BY_ALL: AtomicUsize = AtomicUsize::new(0);

/// [`wait_until_freed_by_all`]'s target (`usize::MAX`: none) and its thread, woken by the free
/// that reaches the target.
static FREED_TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static FREED_WAITER: OnceLock<Thread> = OnceLock::new();

thread_local! {
    /// Counting is on for this thread; other threads' allocations are not counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed by this thread while counting, and the peak.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator and only adds counters, kept in
// const-initialised thread-locals and an atomic (which never allocate).
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
        let freed = FREED_BY_ALL.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        if freed >= FREED_TARGET.load(Ordering::SeqCst)
            && let Some(waiter) = FREED_WAITER.get()
        {
            // Unparking allocates nothing.
            waiter.unpark();
        }
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

/// A runtime on this thread alone, for counting what tasks hold: [`count`] counts only the
/// calling thread's allocations, so the tasks must run on it.
#[allow(dead_code)]
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Bytes freed by every thread of the process so far (sizes as asked).
#[allow(dead_code)]
pub fn freed_by_all() -> usize {
    FREED_BY_ALL.load(Ordering::SeqCst)
}

/// Waits until every thread together has freed `target` bytes in all (as [`freed_by_all`]
/// counts them), woken by the free that reaches it; false if `deadline` passes first. One
/// thread of the process may wait (the first to call this).
#[allow(dead_code)]
pub fn wait_until_freed_by_all(target: usize, deadline: Instant) -> bool {
    let me = FREED_WAITER.get_or_init(std::thread::current);
    assert_eq!(
        me.id(),
        std::thread::current().id(),
        "one thread of a test binary may wait for frees"
    );
    // The target is set before the count is read, so a free that reaches it after the read
    // sees it and unparks this thread (an unpark before the park makes the park return).
    FREED_TARGET.store(target, Ordering::SeqCst);
    let reached = loop {
        if FREED_BY_ALL.load(Ordering::SeqCst) >= target {
            break true;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        std::thread::park_timeout(deadline - now);
    };
    FREED_TARGET.store(usize::MAX, Ordering::SeqCst);
    reached
}
