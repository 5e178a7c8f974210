//! The durable store at its bound of loaded users (`DurableStoreLimits::users_loaded_max`):
//! every append's latency while users past the bound are let go, on the in-memory engine (the
//! disk's time is not what is measured). Each append sends from a new user to the next, so
//! from the bound on every append loads a user the store must make room for. Prints the
//! median, p99.99 and worst append, and where the worst came (loaded users before and after).
//!
//! Run: `cargo bench -p imlab-core --bench let_go` (the bound: `LET_GO_BOUND`, default
//! 1,000,000; appends: the bound and a tenth more).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use imlab_core::proto::Target;
use imlab_core::store::{AppendRequest, DurableStore, DurableStoreLimits, MemEngine, Store};

fn main() {
    let bound: usize = std::env::var("LET_GO_BOUND")
        .ok()
        .map_or(1_000_000, |text| {
            text.parse().expect("LET_GO_BOUND: a number")
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(bound));
}

async fn run(bound: usize) {
    let limits = DurableStoreLimits {
        users_loaded_max: bound,
        ..DurableStoreLimits::default()
    };
    let store = DurableStore::open(Arc::new(MemEngine::new()), limits, 1)
        .await
        .expect("open store");
    let body = Bytes::from_static(&[b'x'; 200]);
    let n = bound + bound / 10;
    let mut micros = Vec::with_capacity(n);
    let mut worst = (0.0f64, 0, 0);
    for i in 0..n {
        let request = AppendRequest {
            from_user: format!("user{i}"),
            from_device: "phone".into(),
            client_msg_id: format!("c{i}"),
            to: Target::Peer(format!("user{}", i + 1)),
            body: body.clone(),
            server_time_ms: 1_700_000_000_000,
        };
        let loaded = store.loaded_users();
        let started = Instant::now();
        store.append(request).await.expect("append");
        let us = started.elapsed().as_secs_f64() * 1e6;
        micros.push(us);
        if us > worst.0 {
            worst = (us, loaded, store.loaded_users());
        }
    }
    micros.sort_by(f64::total_cmp);
    println!("| bound | appends | median µs | p99.99 µs | worst ms | loaded at the worst |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {bound} | {n} | {:.1} | {:.1} | {:.1} | {} -> {} |",
        micros[n / 2],
        micros[n * 9_999 / 10_000],
        worst.0 / 1e3,
        worst.1,
        worst.2
    );
}
