//! The longest an append waits on the stores' own upkeep, each append from a new user to the
//! next (so every append adds a user):
//!
//! - the durable store at its bound of loaded users (`DurableStoreLimits::users_loaded_max`),
//!   on the in-memory engine (the disk's time is not what is measured): bound `LET_GO_BOUND`
//!   (default 1,000,000), and a tenth more appends than it, so that users are let go;
//! - the in-memory store growing to `GROWTH_USERS` users (default 2,000,000), its users'
//!   tables doubling as they fill.
//!
//! Prints the median, p99.99 and worst append of each, where the worst came (users loaded
//! before and after it, or users stored), and the most time any `WINDOW` appends in a row took
//! (a second of a busy server's appends: short pauses that come together are a slow second)
//! against the median of such windows.
//!
//! Run: `cargo bench -p imlab-core --bench store_pauses`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use imlab_core::proto::Target;
use imlab_core::store::{
    AppendRequest, DurableStore, DurableStoreLimits, MemEngine, MemoryStore, Store,
};

fn main() {
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map_or(default, |text| text.parse().expect(name))
    };
    let bound = number("LET_GO_BOUND", 1_000_000);
    let users = number("GROWTH_USERS", 2_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "| store | appends | median µs | p99.99 µs | worst ms | where the worst came | \
         slowest {WINDOW} in a row, ms (median of such) |"
    );
    println!("|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        let limits = DurableStoreLimits {
            users_loaded_max: bound,
            ..DurableStoreLimits::default()
        };
        let durable = DurableStore::open(Arc::new(MemEngine::new()), limits, 1)
            .await
            .expect("open store");
        let row = appends(bound + bound / 10, |_| durable.loaded_users(), &durable).await;
        println!("| durable, {bound} users loaded at most | {row} users loaded |");
        let memory = MemoryStore::new();
        let row = appends(users, |i| i, &memory).await;
        println!("| in memory, {users} users | {row} users stored |");
    });
}

/// Appends in a row whose time is summed (about a second's at 30,000 messages a second).
const WINDOW: usize = 30_000;

/// `n` appends to `store`, each from user i to user i + 1; a table row's cells from the
/// appends on, with `users(i)` before and after the worst.
async fn appends(n: usize, users: impl Fn(usize) -> usize, store: &dyn Store) -> String {
    let body = Bytes::from_static(&[b'x'; 200]);
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
        let before = users(i);
        let started = Instant::now();
        store.append(request).await.expect("append");
        let us = started.elapsed().as_secs_f64() * 1e6;
        micros.push(us);
        if us > worst.0 {
            worst = (us, before, users(i + 1));
        }
    }
    let mut windows: Vec<f64> = micros.chunks(WINDOW).map(|w| w.iter().sum()).collect();
    windows.sort_by(f64::total_cmp);
    micros.sort_by(f64::total_cmp);
    format!(
        "{n} | {:.1} | {:.1} | {:.1} | {} -> {} | {:.0} ({:.0})",
        micros[n / 2],
        micros[n * 9_999 / 10_000],
        worst.0 / 1e3,
        worst.1,
        worst.2,
        windows[windows.len() - 1] / 1e3,
        windows[windows.len() / 2] / 1e3,
    )
}
