//! What a socket registered with tokio's I/O driver costs on the heap: the vendored tokio's one
//! edit (`vendor/README.md`) keeps its registration unpadded, 96 bytes where upstream's
//! cache-line alignment made 256, in every connection of `imlab serve` and of `imlab load`.
//!
//! A counting global allocator sums the sizes asked for while sockets are registered; the
//! sockets are std's, bound before counting and handed to tokio, so what is counted is tokio's
//! registration alone.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Counting is on for this thread (the runtime's, a current-thread one).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed by this thread while counting.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator and only adds counters, kept in
// const-initialised thread-locals (which never allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            LIVE_BYTES.with(|live| live.set(live.get() + layout.size() as isize));
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

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sockets registered per measurement.
const SOCKETS: usize = 64;

fn bound_std_sockets(n: usize) -> Vec<std::net::UdpSocket> {
    (0..n)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
            socket.set_nonblocking(true).expect("nonblocking");
            socket
        })
        .collect()
}

#[test]
fn a_registered_socket_costs_at_most_128_heap_bytes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime");
    let per_socket = runtime.block_on(async {
        // The driver's first registration may set up what every later one shares.
        let warm_up = tokio::net::UdpSocket::from_std(bound_std_sockets(1).remove(0))
            .expect("register the first socket");
        let sockets = bound_std_sockets(SOCKETS);
        let mut registered = Vec::with_capacity(SOCKETS);
        LIVE_BYTES.with(|live| live.set(0));
        COUNTING.with(|on| on.set(true));
        for socket in sockets {
            registered.push(tokio::net::UdpSocket::from_std(socket).expect("register a socket"));
        }
        COUNTING.with(|on| on.set(false));
        let live = LIVE_BYTES.with(Cell::get);
        drop((warm_up, registered));
        live as usize / SOCKETS
    });
    // Upstream tokio: 256 bytes (an `Arc` of a 128-byte-aligned `ScheduledIo`).
    assert!(
        per_socket <= 128,
        "a registered socket holds {per_socket} heap bytes (upstream's padded registration: 256)"
    );
    assert!(per_socket > 0, "no registration was counted");
}
