//! The longest a load ledger call holds the ledger's lock (which every device's event report
//! waits for) while open messages pile up: 19,000 clients send 1:1 to recipients drawn at
//! random, each message planned, acked and, when its recipient is even, delivered; the odd
//! recipients stay away, so their messages stay open (half of all sent) while deliveries to
//! the others keep meeting new (device, sender) pairs and the reorder map keeps being swept.
//!
//! `cargo bench -p imlab-loadgen --bench ledger_pauses` (env `LEDGER_MESSAGES`, default
//! 5,000,000). Prints the worst, p99.99 and median of a message's calls (plan, ack and its
//! delivery) and their total.

use std::time::{Duration, Instant};

use imlab_loadgen::ledger::LoadLedger;
use imlab_loadgen::protocol::MsgId;

fn main() {
    let n_clients: u32 = 19_000;
    let total: u64 = std::env::var("LEDGER_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let mut ledger = LoadLedger::new(n_clients as usize);
    ledger.set_open_max(usize::MAX);
    for client in 0..n_clients {
        ledger.connected(client, 0);
    }
    let mut numbers = vec![0u64; n_clients as usize];
    // xorshift64: the same draws every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut times = Vec::with_capacity(total as usize);
    let (mut worst, mut worst_at) = (Duration::ZERO, 0);
    for k in 0..total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sender = (x % u64::from(n_clients)) as u32;
        let to = ((x >> 32) % u64::from(n_clients)) as u32;
        let id = MsgId {
            sender,
            number: numbers[sender as usize],
        };
        numbers[sender as usize] += 1;
        let started = Instant::now();
        ledger.planned(id, k, vec![to]);
        ledger.acked(id);
        if to.is_multiple_of(2) {
            ledger.delivered(to, id);
        }
        let took = started.elapsed();
        times.push(took.as_nanos() as u64);
        if took > worst {
            (worst, worst_at) = (took, k);
        }
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!("{:<34} {:>14}", "measure", "value");
    println!("{:<34} {:>14}", "messages", total);
    println!("{:<34} {:>14}", "open at the end", ledger.open_peak());
    println!(
        "{:<34} {:>14}",
        "reorder entries at the end",
        ledger.pairs_held()
    );
    println!(
        "{:<34} {:>14.3}",
        "worst message (ms)",
        worst.as_secs_f64() * 1e3
    );
    println!("{:<34} {:>14}", "  at message", worst_at);
    println!("{:<34} {:>14.1}", "p99.99 (us)", at(0.9999) as f64 / 1e3);
    println!("{:<34} {:>14}", "median (ns)", at(0.5));
    println!(
        "{:<34} {:>14.0}",
        "total (ms)",
        times.iter().sum::<u64>() as f64 / 1e6
    );
}
