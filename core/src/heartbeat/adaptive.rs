//! `imlab-adaptive`: learns each network's NAT idle timeout by bisection and heartbeats just
//! below it; designed to beat WeChat's strategy on battery and on silent disconnects.
//!
//! Per network label it keeps a bracket: the longest silence the NAT is known to have survived
//! and the shortest after which a heartbeat failed. With no failure yet it climbs
//! geometrically (x1.5 from 210 s: 315 s, 472 s, 708 s, 1063 s, 1594 s, then the 28 min cap),
//! one answered heartbeat per rung; once a failure brackets the timeout it bisects until the
//! bracket is within 10 % (at least 10 s), then settles a margin (3 %, at least 10 s) below the
//! longest survived silence. Compared with Mars' 60 s steps and 5 successes per step this
//! converges in fewer heartbeats, ends closer to the real timeout (278 s on a 5 min NAT and
//! 572 s on a 10 min one, where WeChat settles at 250 s and 520 s), re-probes with one failure
//! a day instead of two, goes past WeChat's 600 s cap on long NATs (28 min on ct-3g) and below
//! its 210 s floor on short ones (down to 30 s), where WeChat fails every heartbeat.
//!
//! Guarding the evidence:
//! - Every outbound frame restarts the heartbeat timer (`restart_on_traffic`): the NAT mapping
//!   was just refreshed, so busy devices skip heartbeats.
//! - A success proves only the silence that really preceded the Ping: the time since the last
//!   frame either way, as measured when the client asked for the Ping's interval (traffic or a
//!   changed app state may have made it shorter than the recorded interval). A failure bounds
//!   the timeout by the silence since the last outbound frame or the recorded interval,
//!   whichever is longer, since it may be later than scheduled.
//! - A failure can be an outage rather than the NAT (subway, elevator), so a bound is believed
//!   only once its own silence failed twice: when the bisection has converged on a bound that
//!   failed once, that silence is re-tried. If it then succeeds, the bound it replaced comes
//!   back (one outage does not throw the bracket away). A failure at a silence the NAT has
//!   already survived (at or above the settled value) is counted; two in a row, with no
//!   success at that silence in between, mean the NAT changed (or outages came in a row), and
//!   the search restarts below it, again re-trying the failed silence before believing it.
//!   Failures well below the settled value (foreground heartbeats in an outage) are outages
//!   and ignored.
//! - Once settled, the failed value is retried once a day (like Mars' daily probe): NATs change
//!   and a mistaken bound must not stick forever.
//!
//! Like Mars, the foreground and the first 10 minutes of background never go beyond 210 s
//! (users come back; a dead link would be noticed late), and state is kept per network (at
//! most 20). `interval_max` is 28 min, so the server's reaper (1.5x) waits 42 min.
//!
//! What it cannot learn: a frame that hits an expired mapping while no heartbeat is pending
//! ends the link with `Disconnected`, which says nothing about the NAT, so it is ignored.

use std::time::Duration;

use super::activity::Activity;
use super::networks::NetworkTable;
use super::{HeartbeatEvent, HeartbeatStrategy, NETWORKS_LEN_MAX};

/// Never heartbeat more often than this, whatever failed (goim's 30 s).
const FLOOR_MS: u64 = 30_000;
/// The first interval tried on a new network, and the longest one while the app is active;
/// both equal WeChat's MinHeart so the two start level.
const START_MS: u64 = 210_000;
const ACTIVE_MAX_MS: u64 = 210_000;
/// The cap: GCM's mobile interval, well beyond the 5 and 10 min NATs, and finite so the
/// server can reap silent connections.
const INTERVAL_MAX_MS: u64 = 28 * 60 * 1_000;
/// How often a settled bracket re-tries its failed value.
const REPROBE_MS: u64 = 24 * 60 * 60 * 1_000;
/// Consecutive failures at already-survived silences that mean the NAT has changed.
const CONTRADICTIONS_MAX: u32 = 2;

/// The bracket is closed when its width is within this of the survived silence.
fn resolution_ms(survived_ms: u64) -> u64 {
    (survived_ms / 10).max(10_000)
}

/// How far below the survived silence a settled interval stays: timers fire late and RTTs vary.
fn margin_ms(survived_ms: u64) -> u64 {
    (survived_ms * 3 / 100).max(10_000)
}

fn settled_ms(survived_ms: u64) -> u64 {
    survived_ms
        .saturating_sub(margin_ms(survived_ms))
        .max(FLOOR_MS)
}

/// What is known about one network's NAT timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Estimate {
    /// The longest silence the NAT is known to have survived.
    survived_ms: Option<u64>,
    /// The shortest silence after which a heartbeat failed; above `survived_ms` when both exist.
    failed_ms: Option<u64>,
    /// Failures at `failed_ms` itself (or longer); 2 make it believed.
    n_failures: u32,
    /// The bound `failed_ms` replaced, and its failures: restored when `failed_ms` turns out
    /// to have been an outage, so one outage does not throw the whole bracket away.
    previous_failed: Option<(u64, u32)>,
    /// When the bracket closed on a believed bound: the re-probe clock.
    settled_at_ms: Option<u64>,
    /// Consecutive failures at silences already survived, and the shortest of them.
    n_contradictions: u32,
    contradicted_ms: u64,
}

impl Estimate {
    fn lower_ms(&self) -> u64 {
        self.survived_ms.unwrap_or(FLOOR_MS)
    }

    fn closed(&self) -> bool {
        self.failed_ms.is_some_and(|failed_ms| {
            failed_ms.saturating_sub(self.lower_ms()) <= resolution_ms(self.lower_ms())
        })
    }

    /// The interval to use when free to probe (background, past the active window).
    fn interval_ms(&self, now_ms: u64) -> u64 {
        let interval_ms = match (self.survived_ms, self.failed_ms) {
            (None, None) => START_MS,
            (Some(survived_ms), None) => survived_ms.saturating_mul(3) / 2,
            (_, Some(failed_ms)) if !self.closed() => {
                let lower_ms = self.lower_ms();
                lower_ms + (failed_ms - lower_ms) / 2
            }
            (_, Some(failed_ms)) => {
                let reprobe_due = self
                    .settled_at_ms
                    .is_some_and(|at_ms| now_ms.saturating_sub(at_ms) >= REPROBE_MS);
                if self.n_failures < 2 || reprobe_due {
                    failed_ms
                } else {
                    settled_ms(self.lower_ms())
                }
            }
        };
        interval_ms.clamp(FLOOR_MS, INTERVAL_MAX_MS)
    }

    fn on_success(&mut self, silence_ms: u64, now_ms: u64) {
        if self.n_contradictions > 0 && silence_ms >= self.contradicted_ms {
            self.n_contradictions = 0;
        }
        self.survived_ms = Some(self.survived_ms.map_or(silence_ms, |s| s.max(silence_ms)));
        if self
            .failed_ms
            .is_some_and(|failed_ms| silence_ms >= failed_ms)
        {
            // The bound was an outage, or the NAT grew: fall back on the bound it replaced, if
            // that still stands, else climb again from here.
            (self.failed_ms, self.n_failures) = match self.previous_failed.take() {
                Some((failed_ms, n_failures)) if failed_ms > silence_ms => {
                    (Some(failed_ms), n_failures)
                }
                _ => (None, 0),
            };
        }
        self.update_settled(now_ms);
    }

    fn on_failure(&mut self, silence_ms: u64, now_ms: u64) {
        if let Some(survived_ms) = self.survived_ms
            && silence_ms <= survived_ms
        {
            if silence_ms < settled_ms(survived_ms) {
                return;
            }
            self.contradicted_ms = if self.n_contradictions == 0 {
                silence_ms
            } else {
                self.contradicted_ms.min(silence_ms)
            };
            self.n_contradictions += 1;
            if self.n_contradictions >= CONTRADICTIONS_MAX {
                // Failed twice where it used to survive: the NAT changed, or outages came in a
                // row. Search below, and re-try the failed silence before believing it.
                *self = Estimate {
                    failed_ms: Some(self.contradicted_ms),
                    n_failures: 1,
                    previous_failed: self.failed_ms.map(|f| (f, self.n_failures)),
                    ..Estimate::default()
                };
            }
            return;
        }
        match self.failed_ms {
            // The bound failed again (its confirmation or its daily re-probe).
            Some(failed_ms) if silence_ms >= failed_ms => self.n_failures += 1,
            previous => {
                self.previous_failed = previous.map(|f| (f, self.n_failures));
                self.failed_ms = Some(silence_ms);
                self.n_failures = 1;
            }
        }
        // A failed re-probe restarts the day.
        self.settled_at_ms = None;
        self.update_settled(now_ms);
    }

    fn update_settled(&mut self, now_ms: u64) {
        if !(self.closed() && self.n_failures >= 2) {
            self.settled_at_ms = None;
        } else if self.settled_at_ms.is_none() {
            self.settled_at_ms = Some(now_ms);
        }
    }
}

/// Our strategy: per-network NAT-timeout bisection, restarted by outbound traffic.
#[derive(Debug, Clone)]
pub struct Adaptive {
    activity: Activity,
    networks: NetworkTable<Estimate>,
    /// The last frame in either direction, and the last one the device sent.
    refreshed_ms: u64,
    refreshed_out_ms: u64,
    /// Silences as of the last `interval` call, which for a result is the Ping's departure.
    silence_ms: u64,
    silence_out_ms: u64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive::new()
    }
}

impl Adaptive {
    /// A strategy that knows no network yet.
    pub fn new() -> Adaptive {
        Adaptive {
            activity: Activity::new(),
            networks: NetworkTable::new(NETWORKS_LEN_MAX),
            refreshed_ms: 0,
            refreshed_out_ms: 0,
            silence_ms: 0,
            silence_out_ms: 0,
        }
    }

    fn refreshed(&mut self, now_ms: u64, outbound: bool) {
        self.refreshed_ms = now_ms;
        if outbound {
            self.refreshed_out_ms = now_ms;
        }
    }
}

impl HeartbeatStrategy for Adaptive {
    fn name(&self) -> String {
        "imlab-adaptive".into()
    }

    fn on_event(&mut self, event: &HeartbeatEvent, now: Duration) {
        let now_ms = now.as_millis() as u64;
        match event {
            HeartbeatEvent::Connected { network } => {
                self.networks.switch_to(network, now_ms, Estimate::default);
                self.networks.stamp_current(now_ms);
                self.refreshed(now_ms, true);
            }
            HeartbeatEvent::NetworkChanged { network } => {
                self.networks.switch_to(network, now_ms, Estimate::default);
                self.networks.stamp_current(now_ms);
            }
            HeartbeatEvent::Succeeded { interval } => {
                let silence_ms = self.silence_ms.min(interval.as_millis() as u64);
                if let Some(estimate) = self.networks.current_mut() {
                    estimate.on_success(silence_ms, now_ms);
                }
                self.refreshed(now_ms, true);
            }
            HeartbeatEvent::Failed { interval } => {
                let silence_ms = self.silence_out_ms.max(interval.as_millis() as u64);
                if let Some(estimate) = self.networks.current_mut() {
                    estimate.on_failure(silence_ms, now_ms);
                }
            }
            HeartbeatEvent::Disconnected => {}
            HeartbeatEvent::AppState(app_state) => self.activity.on_app_state(*app_state, now_ms),
            HeartbeatEvent::Traffic { outbound } => self.refreshed(now_ms, *outbound),
        }
    }

    fn interval(&mut self, now: Duration) -> Duration {
        let now_ms = now.as_millis() as u64;
        self.silence_ms = now_ms.saturating_sub(self.refreshed_ms);
        self.silence_out_ms = now_ms.saturating_sub(self.refreshed_out_ms);
        let free_ms = self
            .networks
            .current()
            .map_or(START_MS, |estimate| estimate.interval_ms(now_ms));
        let interval_ms = if self.activity.is_active(now_ms) {
            free_ms.min(ACTIVE_MAX_MS)
        } else {
            free_ms
        };
        Duration::from_millis(interval_ms)
    }

    fn interval_max(&self) -> Duration {
        Duration::from_millis(INTERVAL_MAX_MS)
    }

    fn restart_on_traffic(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;
