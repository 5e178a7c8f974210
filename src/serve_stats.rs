//! `imlab serve`'s periodic stats line: what an operator watching the log of a loaded server
//! wants every few seconds (connections, logins and refusals by cause, messages in and out
//! per second, the fan-out queue's and the outboxes' high-water marks and slow consumers kicked
//! for a full outbox), at info level, and with `--data-dir` a second line on what the store's
//! commits cost; and the same numbers as Prometheus metrics ([`ServerMetrics`],
//! `--metrics-listen`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use imlab_core::server::{Server, ServerCounters};
use imlab_core::store::{COMMIT_BUCKETS_US, CommitStatsSnapshot, DurableStore, FjallEngine};

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

/// Logs a stats line every `every` until dropped (it never returns), and with an on-disk
/// `store` a second line on what its commits cost over the interval: commits (fsyncs) a
/// second, records a commit, and the bucket bounds of the commit time's median, p99 and
/// slowest (where a stall shows first: a flush's table fighting the fsyncs for the disk).
pub async fn log_every(
    server: &Server,
    store: Option<&DurableStore<FjallEngine>>,
    every: Duration,
) {
    let counters = server.counters();
    let mut last = Snapshot::of(&counters);
    let mut last_commits = store.map(DurableStore::commit_stats);
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
        if let (Some(store), Some(last_commits)) = (store, last_commits.as_mut()) {
            let now = store.commit_stats();
            let interval = now.since(last_commits);
            tracing::info!(
                commits_per_s = per_s(now.commits, last_commits.commits),
                records_per_commit = records_per_commit(&interval),
                commit_p50_us_at_most = bound(&interval, 0.5),
                commit_p99_us_at_most = bound(&interval, 0.99),
                commit_max_us_at_most = bound(&interval, 1.0),
                "store"
            );
            *last_commits = now;
        }
    }
}

/// Records a commit over `commits`, for the stats lines.
pub fn records_per_commit(commits: &CommitStatsSnapshot) -> String {
    format!(
        "{:.1}",
        commits.records as f64 / commits.commits.max(1) as f64
    )
}

/// The `q` quantile's bucket bound for the stats lines: "-" with no commit, "over" past the
/// last bound.
pub fn bound(interval: &CommitStatsSnapshot, q: f64) -> String {
    match interval.quantile_bound_us(q) {
        Some(us) => us.to_string(),
        None if interval.commits == 0 => "-".to_string(),
        None => format!("over {}", COMMIT_BUCKETS_US[COMMIT_BUCKETS_US.len() - 1]),
    }
}

/// `imlab serve --metrics-listen`: the server's counters and gauges, and with `--data-dir`
/// its store's commits, read at each scrape.
pub struct ServerMetrics {
    pub server: std::sync::Arc<Server>,
    pub store: Option<std::sync::Arc<DurableStore<FjallEngine>>>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerMetrics")
    }
}

impl prometheus_client::collector::Collector for ServerMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let counters = self.server.counters();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let by = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(cause, n)| (cause.to_string(), *n))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let mut out = crate::metrics::Families::new(encoder);
        out.gauge(
            "imlab_server_connections_open",
            "Connections open now.",
            load(&counters.connections_open) as f64,
        )?;
        out.gauge(
            "imlab_server_sessions",
            "Logged-in (user, device) sessions now.",
            self.server.n_sessions() as f64,
        )?;
        out.gauge(
            "imlab_server_fanout_queue_high_water",
            "Most group fan-out jobs queued at once since start.",
            self.server.fanout_queue_len_high_water() as f64,
        )?;
        out.counter(
            "imlab_server_connections_accepted",
            "Connections accepted.",
            load(&counters.connections_accepted),
        )?;
        out.counter(
            "imlab_server_handshakes_failed",
            "Connections whose TLS or WebSocket handshake failed or timed out.",
            load(&counters.handshakes_failed),
        )?;
        out.counter(
            "imlab_server_logins",
            "Successful logins.",
            load(&counters.logins),
        )?;
        out.counters_by(
            "imlab_server_logins_refused",
            "Connections refused before or at login, by cause.",
            "cause",
            &by(&[
                ("overloaded", load(&counters.connections_refused)),
                ("auth_failed", load(&counters.logins_refused_auth)),
                ("token_expired", load(&counters.logins_refused_expired)),
                ("login_timeout", load(&counters.login_timeouts)),
            ]),
        )?;
        out.counter(
            "imlab_server_messages_stored",
            "Messages stored (retried sends not counted).",
            load(&counters.messages_stored),
        )?;
        out.counter(
            "imlab_server_duplicate_sends",
            "Sends answered from the dedupe window.",
            load(&counters.duplicate_sends),
        )?;
        out.counters_by(
            "imlab_server_sends_refused",
            "Sends refused for now, by cause.",
            "cause",
            &by(&[
                ("rate_limited", load(&counters.rate_limited_sends)),
                ("overloaded", load(&counters.overloaded_sends)),
            ]),
        )?;
        out.counter(
            "imlab_server_notify_data_sent",
            "Messages pushed to live devices' connections (NotifyData, less the two counters below).",
            load(&counters.notify_data_sent),
        )?;
        out.counter(
            "imlab_server_pushes_as_notify",
            "Pushes sent as a Notify, without the message, to a device still syncing a backlog.",
            load(&counters.pushes_as_notify),
        )?;
        out.counter(
            "imlab_server_pushes_in_a_page",
            "Pushes not sent: the device's sync page already held the message.",
            load(&counters.pushes_in_a_page),
        )?;
        out.counter(
            "imlab_server_notify_fallbacks",
            "Notify frames sent because a NotifyData was not acked in time.",
            load(&counters.notify_fallbacks),
        )?;
        out.counter(
            "imlab_server_offline_pushes",
            "Offline pushes handed to the push provider.",
            load(&counters.pushes),
        )?;
        out.counter(
            "imlab_server_connections_reaped",
            "Connections closed for silence.",
            load(&counters.reaped),
        )?;
        out.counter(
            "imlab_server_slow_consumer_kicks",
            "Connections closed because their outbox was full.",
            self.server.n_slow_consumer_kicks(),
        )?;
        if let Some(store) = &self.store {
            let commits = store.commit_stats();
            out.counter(
                "imlab_store_commits",
                "Commits of the on-disk store (group commits, one fsync each).",
                commits.commits,
            )?;
            out.counter(
                "imlab_store_records_committed",
                "Records written by the on-disk store's commits.",
                commits.records,
            )?;
            let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS_US
                .iter()
                .map(|&us| us as f64 / 1e6)
                .chain([f64::INFINITY])
                .zip(commits.buckets)
                .collect();
            out.histogram(
                "imlab_store_commit_seconds",
                "Time of each commit of the on-disk store: its records written and its fsync.",
                commits.total_us as f64 / 1e6,
                commits.commits,
                &buckets,
            )?;
        }
        Ok(())
    }
}
