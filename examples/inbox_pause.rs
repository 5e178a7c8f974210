//! The longest single append into the in-memory store as two users' inboxes grow to N
//! entries each (one user sends N one-to-one messages to another), with jemalloc as
//! `imlab serve` has it. Every append holds the store's one lock, which every send and sync
//! of every user waits on, so the worst append is a pause for the whole server.
//!
//! `cargo run --release --example inbox_pause -- 10000000` (about 2.5 GB, 6 s).

use std::time::Instant;

use imlab_core::proto::Target;
use imlab_core::store::{AppendRequest, MemoryStore, Store};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .expect("the first argument is a count of messages"),
        None => 10_000_000,
    };
    let store = MemoryStore::new();
    let body = vec![b'x'; 16];
    let (mut worst_us, mut worst_at, mut over_1ms) = (0, 0, 0);
    let started = Instant::now();
    for i in 0..n {
        let request = AppendRequest {
            from_user: "a".into(),
            from_device: "d".into(),
            client_msg_id: i.to_string(),
            to: Target::Peer("b".into()),
            body: body.clone().into(),
            server_time_ms: 0,
        };
        let at = Instant::now();
        store
            .append(request)
            .await
            .expect("under the store's bounds");
        let us = at.elapsed().as_micros();
        over_1ms += u64::from(us > 1_000);
        if us > worst_us {
            (worst_us, worst_at) = (us, i + 1);
        }
    }
    println!(
        "{n} appends in {:.2} s: the longest {worst_us} µs (the {worst_at}th), {over_1ms} over 1 ms",
        started.elapsed().as_secs_f64()
    );
}
