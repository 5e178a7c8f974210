//! A test driver that walks a strategy through time the way the client core does.
//!
//! The client asks `interval` after every Pong to schedule the next Ping, asks again when the
//! Ping goes out (that answer is the interval recorded in the Ping and reported back), and on a
//! failure reconnects and reports `Connected`. Walking strategies through this one driver keeps
//! their tests honest about that protocol and lets them run against a model NAT.

use std::time::Duration;

use super::{AppState, HeartbeatEvent, HeartbeatStrategy};

/// How long the client waits for a Pong before declaring the heartbeat failed.
pub(crate) const HEARTBEAT_TIMEOUT_MS: u64 = 20_000;
/// How long the reconnect after a failed heartbeat takes.
pub(crate) const RECONNECT_MS: u64 = 1_000;

pub(crate) struct Walk<S> {
    pub(crate) strategy: S,
    pub(crate) now_ms: u64,
    pub(crate) network: String,
    pub(crate) n_failures: u32,
}

impl<S: HeartbeatStrategy> Walk<S> {
    /// Connects on `network` at time 0, in the foreground.
    pub(crate) fn new(strategy: S, network: &str) -> Walk<S> {
        let mut walk = Walk {
            strategy,
            now_ms: 0,
            network: network.to_owned(),
            n_failures: 0,
        };
        walk.event(HeartbeatEvent::Connected {
            network: network.to_owned(),
        });
        walk
    }

    pub(crate) fn event(&mut self, event: HeartbeatEvent) {
        self.strategy
            .on_event(&event, Duration::from_millis(self.now_ms));
    }

    pub(crate) fn app(&mut self, app_state: AppState) {
        self.event(HeartbeatEvent::AppState(app_state));
    }

    pub(crate) fn advance_s(&mut self, s: u64) {
        self.now_ms += s * 1_000;
    }

    /// The interval the strategy would schedule now, in seconds (rounded down).
    pub(crate) fn next_s(&mut self) -> u64 {
        self.strategy
            .interval(Duration::from_millis(self.now_ms))
            .as_secs()
    }

    /// Moves to a new network: the old link dies, a new one logs in.
    pub(crate) fn switch(&mut self, network: &str) {
        self.network = network.to_owned();
        self.event(HeartbeatEvent::NetworkChanged {
            network: network.to_owned(),
        });
        self.event(HeartbeatEvent::Disconnected);
        self.event(HeartbeatEvent::Connected {
            network: network.to_owned(),
        });
    }

    /// One heartbeat whose fate is decided by `ok`; returns the recorded interval in ms.
    pub(crate) fn beat_ms(&mut self, ok: impl FnOnce(u64) -> bool) -> u64 {
        let scheduled_ms = self.strategy.interval(Duration::from_millis(self.now_ms));
        self.now_ms += scheduled_ms.as_millis() as u64;
        let recorded = self.strategy.interval(Duration::from_millis(self.now_ms));
        let recorded_ms = recorded.as_millis() as u64;
        if ok(scheduled_ms.as_millis() as u64) {
            self.event(HeartbeatEvent::Succeeded { interval: recorded });
        } else {
            self.n_failures += 1;
            self.now_ms += HEARTBEAT_TIMEOUT_MS;
            self.event(HeartbeatEvent::Failed { interval: recorded });
            self.now_ms += RECONNECT_MS;
            let network = self.network.clone();
            self.event(HeartbeatEvent::Connected { network });
        }
        recorded_ms
    }

    /// One heartbeat: answered when `ok`; returns the recorded interval in seconds.
    pub(crate) fn beat(&mut self, ok: bool) -> u64 {
        self.beat_ms(|_| ok) / 1_000
    }

    /// One heartbeat across a NAT that forgets mappings idle for `nat_timeout_s` or longer.
    pub(crate) fn beat_nat(&mut self, nat_timeout_s: u64) -> u64 {
        self.beat_ms(|silence_ms| silence_ms < nat_timeout_s * 1_000) / 1_000
    }

    /// `n` heartbeats across the NAT; their intervals in seconds.
    pub(crate) fn beats_nat(&mut self, nat_timeout_s: u64, n: usize) -> Vec<u64> {
        (0..n).map(|_| self.beat_nat(nat_timeout_s)).collect()
    }
}
