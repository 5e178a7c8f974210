//! Metrics of a run: headline numbers and one row per device group, computed from the ledger
//! and the infrastructure counters (never from the trace).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use imlab_core::server::ServerCounters;

use crate::ledger::{Ledger, quantile};
use crate::storm::StormMetrics;
use crate::world::Shared;

/// Metrics of one device group (or of the whole run).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GroupMetrics {
    /// Device group name ("all" for the whole run).
    pub group: String,
    /// Carrier profile name.
    pub carrier: String,
    /// Heartbeat strategy.
    pub heartbeat: String,
    /// Devices.
    pub devices: u64,
    /// Messages the apps queued.
    pub messages_sent: u64,
    /// Of those, acked by the server.
    pub messages_acked: u64,
    /// Messages processed into app logs.
    pub deliveries: u64,
    /// Delay from queueing to the recipient's app log, median.
    pub delay_ms_p50: u64,
    /// 99th percentile.
    pub delay_ms_p99: u64,
    /// Maximum.
    pub delay_ms_max: u64,
    /// NAT expiries under live IM connections.
    pub silent_disconnects: u64,
    /// Logins after each device's first.
    pub reconnects: u64,
    /// Pings sent.
    pub heartbeats: u64,
    /// Wake-ups received over push channels.
    pub wakeups: u64,
    /// Wake-ups the push host wrote to these devices' channels; those not received were
    /// swallowed by a dead channel (an expired NAT mapping the push host cannot see) or
    /// merged with one the device had not yet taken.
    pub wakeups_written: u64,
}

/// Everything measured in a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    /// Simulated time, seconds.
    pub simulated_s: f64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Users in the scenario.
    pub users: u64,
    /// Chat groups in the scenario.
    pub chat_groups: u64,
    /// Totals over all devices.
    pub all: GroupMetrics,
    /// Per device group.
    pub groups: Vec<GroupMetrics>,
    /// Notices the server gave the push service.
    pub pushes_sent: u64,
    /// Wake-ups delivered to devices.
    pub wakeups_delivered: u64,
    /// Notices the push service could not hand to any device's channel (none registered, an
    /// outage, its queue full). The rest were written to channels: `all.wakeups_written`.
    pub wakeups_lost: u64,
    /// NAT expiries under live push channels.
    pub push_channel_silent_disconnects: u64,
    /// Connections ended, by cause, over all devices.
    pub disconnects_by_cause: BTreeMap<String, u64>,
    /// Logins per second and the reconnection storm after each server crash.
    pub storms: StormMetrics,
    /// The server's own counters, summed over every incarnation.
    pub server: ServerTotals,
}

impl Metrics {
    /// The metrics of the device group named `name`.
    pub fn group(&self, name: &str) -> Option<&GroupMetrics> {
        self.groups.iter().find(|g| g.group == name)
    }
}

/// The server's counters (`imlab_core::server::ServerCounters`, the same that `imlab serve`
/// exports to Prometheus), summed over every incarnation of a run's server: each restart
/// counts from zero. What the server did, beside what the devices saw.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ServerTotals {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the server's connection bound.
    pub connections_refused: u64,
    /// Successful logins.
    pub logins: u64,
    /// Connections closed for not logging in in time.
    pub login_timeouts: u64,
    /// Connections closed for silence.
    pub reaped: u64,
    /// Messages stored (a retried send answered from the dedupe window not counted).
    pub messages_stored: u64,
    /// Sends answered from the dedupe window.
    pub duplicate_sends: u64,
    /// Sends refused because the fan-out queue was full.
    pub overloaded_sends: u64,
    /// Sends refused because the user's send rate was spent.
    pub rate_limited_sends: u64,
    /// Pushes queued to live devices' connections.
    pub pushes_queued: u64,
    /// Of those, sent as a `Notify` without the message, to a device still syncing.
    pub pushes_as_notify: u64,
    /// Of those, not sent because the device's sync page already held the message.
    pub pushes_in_a_page: u64,
    /// `Notify` frames sent because a `NotifyData` was not acked in time.
    pub notify_fallbacks: u64,
    /// Offline pushes handed to the push provider.
    pub offline_pushes: u64,
}

impl ServerTotals {
    /// One incarnation's counters as they read now.
    pub fn read(counters: &ServerCounters) -> ServerTotals {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        ServerTotals {
            connections_accepted: load(&counters.connections_accepted),
            connections_refused: load(&counters.connections_refused),
            logins: load(&counters.logins),
            login_timeouts: load(&counters.login_timeouts),
            reaped: load(&counters.reaped),
            messages_stored: load(&counters.messages_stored),
            duplicate_sends: load(&counters.duplicate_sends),
            overloaded_sends: load(&counters.overloaded_sends),
            rate_limited_sends: load(&counters.rate_limited_sends),
            pushes_queued: load(&counters.notify_data_sent),
            pushes_as_notify: load(&counters.pushes_as_notify),
            pushes_in_a_page: load(&counters.pushes_in_a_page),
            notify_fallbacks: load(&counters.notify_fallbacks),
            offline_pushes: load(&counters.pushes),
        }
    }

    /// Adds another incarnation's totals.
    pub fn add(&mut self, other: &ServerTotals) {
        self.connections_accepted += other.connections_accepted;
        self.connections_refused += other.connections_refused;
        self.logins += other.logins;
        self.login_timeouts += other.login_timeouts;
        self.reaped += other.reaped;
        self.messages_stored += other.messages_stored;
        self.duplicate_sends += other.duplicate_sends;
        self.overloaded_sends += other.overloaded_sends;
        self.rate_limited_sends += other.rate_limited_sends;
        self.pushes_queued += other.pushes_queued;
        self.pushes_as_notify += other.pushes_as_notify;
        self.pushes_in_a_page += other.pushes_in_a_page;
        self.notify_fallbacks += other.notify_fallbacks;
        self.offline_pushes += other.offline_pushes;
    }
}

/// Computes the metrics of a finished run.
pub fn collect(
    shared: &Shared,
    ledger: &Ledger,
    server: ServerTotals,
    simulated: Duration,
    wall: Duration,
) -> Metrics {
    let scenario = &shared.scenario;
    let layout = &shared.layout;
    let mut groups: Vec<GroupMetrics> = scenario
        .groups
        .iter()
        .map(|group| GroupMetrics {
            group: group.name.clone(),
            carrier: scenario.carriers[group.carrier].name.clone(),
            heartbeat: group.heartbeat.clone(),
            ..GroupMetrics::default()
        })
        .collect();
    let mut delays: Vec<Vec<u64>> = vec![Vec::new(); groups.len()];
    let mut disconnects_by_cause = BTreeMap::new();
    for (device, record) in ledger.devices.iter().enumerate() {
        let group = layout.devices[device].group;
        let metrics = &mut groups[group];
        metrics.devices += 1;
        metrics.deliveries += record.log.iter().filter(|entry| !entry.repeat()).count() as u64;
        metrics.reconnects += u64::from(record.connects.saturating_sub(1));
        metrics.heartbeats += record.heartbeats_sent;
        metrics.wakeups += u64::from(record.wakeups);
        metrics.wakeups_written += u64::from(record.wakeups_written);
        metrics.silent_disconnects += shared.silent_by_device[device].load(Ordering::Relaxed);
        for entry in &record.log {
            if let Some(send) = entry.send() {
                let queued_ms = ledger.sends[send as usize].queued_ms();
                delays[group].push(entry.at_ms().saturating_sub(queued_ms));
            }
        }
        for (cause, n) in &record.disconnects {
            *disconnects_by_cause.entry(cause.clone()).or_insert(0) += u64::from(*n);
        }
    }
    for send in &ledger.sends {
        let group = layout.devices[send.device as usize].group;
        groups[group].messages_sent += 1;
        groups[group].messages_acked += u64::from(send.acked().is_some());
    }
    let mut all_delays = Vec::new();
    for (metrics, mut delays) in groups.iter_mut().zip(delays) {
        delays.sort_unstable();
        set_delays(metrics, &delays);
        all_delays.extend(delays);
    }
    all_delays.sort_unstable();
    let mut all = GroupMetrics {
        group: "all".into(),
        ..GroupMetrics::default()
    };
    for g in &groups {
        all.devices += g.devices;
        all.messages_sent += g.messages_sent;
        all.messages_acked += g.messages_acked;
        all.deliveries += g.deliveries;
        all.silent_disconnects += g.silent_disconnects;
        all.reconnects += g.reconnects;
        all.heartbeats += g.heartbeats;
        all.wakeups += g.wakeups;
        all.wakeups_written += g.wakeups_written;
    }
    set_delays(&mut all, &all_delays);
    let counters = &shared.counters;
    Metrics {
        simulated_s: simulated.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        users: layout.users.len() as u64,
        chat_groups: layout.chat_groups.len() as u64,
        all,
        groups,
        pushes_sent: counters.pushes_sent.load(Ordering::Relaxed),
        wakeups_delivered: counters.wakeups_delivered.load(Ordering::Relaxed),
        wakeups_lost: counters.wakeups_lost.load(Ordering::Relaxed),
        push_channel_silent_disconnects: counters
            .push_channel_silent_disconnects
            .load(Ordering::Relaxed),
        disconnects_by_cause,
        storms: ledger.storms.summary(
            simulated.as_millis() as u64,
            scenario.duration.as_millis() as u64,
        ),
        server,
    }
}

fn set_delays(metrics: &mut GroupMetrics, sorted: &[u64]) {
    metrics.delay_ms_p50 = quantile(sorted, 0.50);
    metrics.delay_ms_p99 = quantile(sorted, 0.99);
    metrics.delay_ms_max = sorted.last().copied().unwrap_or(0);
}
