//! `imlab serve`'s periodic stats line: what an operator watching the log of a loaded server
//! wants every few seconds (connections, logins and refusals by cause, messages in and out
//! per second, the fan-out queue's and the outboxes' high-water marks and slow consumers kicked
//! for a full outbox), at info level.

use std::sync::atomic::Ordering;
use std::time::Duration;

use imlab_core::server::{Server, ServerCounters};

/// The counters at one moment, to difference the next against.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Snapshot {
    accepted: u64,
    logins: u64,
    stored: u64,
    pushed_out: u64,
}

impl Snapshot {
    fn of(counters: &ServerCounters) -> Snapshot {
        Snapshot {
            accepted: counters.connections_accepted.load(Ordering::Relaxed),
            logins: counters.logins.load(Ordering::Relaxed),
            stored: counters.messages_stored.load(Ordering::Relaxed),
            pushed_out: counters.notify_data_sent.load(Ordering::Relaxed),
        }
    }
}

/// Logs a stats line every `every` until dropped (it never returns).
pub async fn log_every(server: &Server, every: Duration) {
    let counters = server.counters();
    let mut last = Snapshot::of(&counters);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = Snapshot::of(&counters);
        let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / every.as_secs_f64();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        tracing::info!(
            connections = load(&counters.connections_open),
            accepted_per_s = per_s(now.accepted, last.accepted),
            logins_per_s = per_s(now.logins, last.logins),
            refused_overloaded = load(&counters.connections_refused),
            refused_auth = load(&counters.logins_refused_auth),
            refused_expired = load(&counters.logins_refused_expired),
            login_timeouts = load(&counters.login_timeouts),
            messages_in_per_s = per_s(now.stored, last.stored),
            messages_out_per_s = per_s(now.pushed_out, last.pushed_out),
            sends_rate_limited = load(&counters.rate_limited_sends),
            sends_overloaded = load(&counters.overloaded_sends),
            fanout_queue_high_water = server.fanout_queue_len_high_water(),
            outbox_high_water = load(&counters.outbox_high_water),
            slow_consumer_kicks = server.n_slow_consumer_kicks(),
            "stats"
        );
        last = now;
    }
}
