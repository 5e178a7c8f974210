//! Recovery time of the on-disk store: fills a data directory with N messages (1:1 among
//! 1,000 users, 200-byte bodies, 512 concurrent senders so group commit batches them), closes
//! it, then times what `imlab serve --data-dir` does at start-up (open the engine, open the
//! store) and each user's first sync page after it.
//!
//!   cargo run --release -p imlab-core --example store_recovery -- DIR [MESSAGES]
//!
//! MESSAGES defaults to 10,000,000. A DIR that already holds a store is not filled again,
//! so the recovery can be timed repeatedly (and after a SIGKILL of the fill).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use imlab_core::proto::Target;
use imlab_core::store::{AppendRequest, DurableStore, DurableStoreLimits, FjallEngine, Store};

const USERS: u64 = 1_000;
const SENDERS: u64 = 512;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: store_recovery DIR [MESSAGES]")?;
    let n_messages: u64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    let limits = DurableStoreLimits {
        messages_max: u64::MAX,
        ..DurableStoreLimits::default()
    };

    let fresh = std::fs::read_dir(&dir).map_or(true, |mut entries| entries.next().is_none());
    if fresh {
        let started = Instant::now();
        let engine = Arc::new(FjallEngine::open(&dir)?);
        let store = Arc::new(DurableStore::open(engine.clone(), limits, 1).await?);
        let body = Bytes::from(vec![b'x'; 200]);
        let mut senders = Vec::new();
        for sender in 0..SENDERS {
            let store = store.clone();
            let body = body.clone();
            senders.push(tokio::spawn(async move {
                let mut n = sender;
                while n < n_messages {
                    let from = n % USERS;
                    let to = (n * 7 + 1) % USERS;
                    store
                        .append(AppendRequest {
                            from_user: format!("u{from}"),
                            from_device: "d".into(),
                            client_msg_id: format!("m{n}"),
                            to: Target::Peer(format!("u{to}")),
                            body: body.clone(),
                            server_time_ms: n,
                        })
                        .await
                        .expect("append");
                    n += SENDERS;
                }
            }));
        }
        for sender in senders {
            sender.await?;
        }
        let fill_s = started.elapsed().as_secs_f64();
        let commits = engine.commits();
        Arc::into_inner(store)
            .ok_or("store still shared")?
            .close()
            .await;
        println!(
            "filled {n_messages} messages in {fill_s:.1} s: {:.0} msg/s, {commits} commits \
             ({:.0} fsyncs/s, {:.1} messages per commit)",
            n_messages as f64 / fill_s,
            commits as f64 / fill_s,
            n_messages as f64 / commits.max(1) as f64,
        );
    }

    let started = Instant::now();
    let engine = Arc::new(FjallEngine::open(&dir)?);
    let engine_s = started.elapsed().as_secs_f64();
    let store = DurableStore::open(engine, limits, 1).await?;
    let open_s = started.elapsed().as_secs_f64();
    let synced = Instant::now();
    let mut entries = 0;
    for user in 0..USERS {
        let page = store.sync(&format!("u{user}"), 0, 200).await?;
        entries += page.entries.len();
    }
    let sync_s = synced.elapsed().as_secs_f64();
    println!("{:<42} {:>12}", "measure", "value");
    println!("{:<42} {:>12}", "messages in the store", store.n_messages());
    println!("{:<42} {:>12.3}", "engine open (s)", engine_s);
    println!("{:<42} {:>12.3}", "engine + store open (s)", open_s);
    println!(
        "{:<42} {:>12.1}",
        "first sync page, mean per user (us)",
        sync_s * 1e6 / USERS as f64
    );
    println!("{:<42} {:>12}", "entries read by the first syncs", entries);
    store.close().await;
    Ok(())
}
