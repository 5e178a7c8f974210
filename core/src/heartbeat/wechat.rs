//! WeChat's smart heartbeat, after Tencent Mars (`stn/src/smart_heartbeat.cc`, `stn/config.h`).
//!
//! Mars searches each network for the longest heartbeat interval its NAT tolerates, in fixed
//! steps: a new link first needs `net_stable_test_count` (3) answered heartbeats at MinHeart;
//! the app in the foreground, or less than 10 minutes in the background, always uses
//! MinHeart; otherwise the network's current value is used, raised by `heart_step` (60 s)
//! after `base_success_count` successes at it, capped at MaxHeart. A success at MaxHeart settles
//! at MaxHeart - `success_step` (the 20 s margin) and marks the value stable.
//! `max_fail_count` failures while searching settle at current - step - margin (not below
//! MinHeart), stable; the same number of failures while stable send the search back to
//! MinHeart. While stable, the value is probed upward by the margin at most once a day. State
//! lives per network label (at most 20, the least recently written is dropped) and is reloaded
//! on a network switch. A link that dies while a heartbeat waits for its reply failed that
//! heartbeat: the client core reports it as `Failed`.
//!
//! Interpretations, where Mars' code is more specific than the published rules:
//! - A result only moves the search when the heartbeat used the network's current value
//!   (Mars compares `last_heart_` with `cur_heart_`), so successes at MinHeart while active do
//!   count once MinHeart is the current value, and failures at MinHeart never count.
//! - While stable, successes do not clear the failure count (Mars resets `fail_heart_count_`
//!   only on a searching success), so two failures a day apart still restart the search.
//! - Mars probes on Wednesdays only, once the value is a day old; we have no calendar, so the
//!   probe comes once the value has been unchanged for a day. "Unchanged" follows Mars: every
//!   counted result and every probe rewrites the value (its modify time), stable successes do
//!   not.
//! - Mars' Xiaomi (MIUI alarm-aligned) mode is left out: it reacts to OS alarm batching, which
//!   the simulator does not model.

use std::time::Duration;

use super::activity::Activity;
use super::networks::NetworkTable;
use super::{HeartbeatEvent, HeartbeatStrategy, NETWORKS_LEN_MAX};

const DAY_MS: u64 = 24 * 60 * 60 * 1_000;

/// One of Mars' published constant sets (`stn/config.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarsConstants {
    /// The strategy's command-line name.
    pub name: &'static str,
    /// MinHeartInterval: new links, the foreground and the search's start.
    pub min_heart_ms: u64,
    /// MaxHeartInterval: the search never goes beyond it.
    pub max_heart_ms: u64,
    /// HeartStep: how far one raise goes.
    pub heart_step_ms: u64,
    /// SuccessStep: the safety margin, and the daily upward probe.
    pub success_step_ms: u64,
    /// MaxHeartFailCount: failures that give up a value.
    pub max_fail_count: u32,
    /// BaseSuccCount: successes at a value before raising it.
    pub base_success_count: u32,
    /// NetStableTestCount: successes a new link needs before leaving MinHeart.
    pub net_stable_test_count: u32,
}

impl MarsConstants {
    /// The newer set (`wechat`): 210 s to 600 s, 2 failures, 5 successes.
    pub const NEWER: MarsConstants = MarsConstants {
        name: "wechat",
        min_heart_ms: 210_000,
        max_heart_ms: 600_000,
        heart_step_ms: 60_000,
        success_step_ms: 20_000,
        max_fail_count: 2,
        base_success_count: 5,
        net_stable_test_count: 3,
    };

    /// The older set (`wechat-legacy`): 270 s to 590 s, 3 failures, 3 successes.
    pub const LEGACY: MarsConstants = MarsConstants {
        name: "wechat-legacy",
        min_heart_ms: 270_000,
        max_heart_ms: 590_000,
        heart_step_ms: 60_000,
        success_step_ms: 20_000,
        max_fail_count: 3,
        base_success_count: 3,
        net_stable_test_count: 3,
    };
}

/// What Mars keeps per network (a section of its Heartbeat.ini); the table's stamp is the
/// section's modify time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetHeart {
    cur_heart_ms: u64,
    /// Successes at `cur_heart_ms` since it was last changed.
    success_count: u32,
    fail_count: u32,
    stable: bool,
}

/// Mars' smart heartbeat with one of its constant sets.
#[derive(Debug, Clone)]
pub struct WeChat {
    constants: MarsConstants,
    activity: Activity,
    networks: NetworkTable<NetHeart>,
    /// Answered heartbeats on the current link (Mars `success_heart_count_`).
    link_successes: u32,
}

impl WeChat {
    /// A strategy with these constants ([`MarsConstants::NEWER`] is `wechat`,
    /// [`MarsConstants::LEGACY`] is `wechat-legacy`).
    pub fn new(constants: MarsConstants) -> WeChat {
        assert!(
            constants.min_heart_ms > 0
                && constants.min_heart_ms + constants.success_step_ms <= constants.max_heart_ms,
            "Mars constants out of order: {constants:?}"
        );
        WeChat {
            constants,
            activity: Activity::new(),
            networks: NetworkTable::new(NETWORKS_LEN_MAX),
            link_successes: 0,
        }
    }

    /// Mars `__LoadINI`: the network's saved state, or a fresh search stamped now.
    fn load_network(&mut self, network: &str, now_ms: u64) {
        let min_heart_ms = self.constants.min_heart_ms;
        self.networks.switch_to(network, now_ms, || NetHeart {
            cur_heart_ms: min_heart_ms,
            success_count: 0,
            fail_count: 0,
            stable: false,
        });
        self.link_successes = 0;
    }

    /// Mars `OnHeartResult`.
    fn on_result(&mut self, succeeded: bool, interval_ms: u64, now_ms: u64) {
        let c = self.constants;
        let Some(modified_ms) = self.networks.current_stamp_ms() else {
            return;
        };
        if succeeded {
            self.link_successes += 1;
        }
        let link_successes = self.link_successes;
        let net = self.networks.current_mut().expect("a stamped network");
        if succeeded && net.stable {
            let can_grow = net.cur_heart_ms < c.max_heart_ms - c.success_step_ms;
            let day_old = now_ms.saturating_sub(modified_ms) >= DAY_MS;
            if link_successes >= c.net_stable_test_count && can_grow && day_old {
                net.cur_heart_ms += c.success_step_ms;
                net.success_count = 0;
                net.fail_count = 0;
                net.stable = false;
                self.networks.stamp_current(now_ms);
            }
            return;
        }
        // The heartbeat did not test the current value (the app was active, or the link new).
        if interval_ms != net.cur_heart_ms || link_successes < c.net_stable_test_count {
            return;
        }
        if succeeded {
            net.success_count += 1;
            if net.cur_heart_ms >= c.max_heart_ms {
                net.cur_heart_ms = c.max_heart_ms - c.success_step_ms;
                net.success_count = 0;
                net.stable = true;
            } else if net.success_count >= c.base_success_count {
                net.cur_heart_ms = (net.cur_heart_ms + c.heart_step_ms).min(c.max_heart_ms);
                net.success_count = 0;
            }
            net.fail_count = 0;
        } else {
            if interval_ms == c.min_heart_ms {
                return;
            }
            net.fail_count += 1;
            if net.fail_count >= c.max_fail_count {
                if net.stable {
                    net.cur_heart_ms = c.min_heart_ms;
                    net.stable = false;
                } else {
                    let lower_ms = net
                        .cur_heart_ms
                        .saturating_sub(c.heart_step_ms + c.success_step_ms);
                    net.cur_heart_ms = lower_ms.max(c.min_heart_ms);
                    net.stable = true;
                }
                net.success_count = 0;
                net.fail_count = 0;
            }
        }
        self.networks.stamp_current(now_ms);
    }

    /// Mars `OnLongLinkDisconnect` (after any failure it reports): the next link starts over
    /// at MinHeart until it has its own successes.
    fn on_link_end(&mut self) {
        self.link_successes = 0;
        if let Some(net) = self.networks.current_mut()
            && net.stable
        {
            net.success_count = 0;
        }
    }
}

impl HeartbeatStrategy for WeChat {
    fn name(&self) -> String {
        self.constants.name.to_owned()
    }

    fn on_event(&mut self, event: &HeartbeatEvent, now: Duration) {
        let now_ms = now.as_millis() as u64;
        match event {
            HeartbeatEvent::Connected { network } | HeartbeatEvent::NetworkChanged { network } => {
                self.load_network(network, now_ms);
            }
            HeartbeatEvent::Succeeded { interval } => {
                self.on_result(true, interval.as_millis() as u64, now_ms);
            }
            HeartbeatEvent::Failed { interval } => {
                self.on_result(false, interval.as_millis() as u64, now_ms);
                self.on_link_end();
            }
            HeartbeatEvent::Disconnected => self.on_link_end(),
            HeartbeatEvent::AppState(app_state) => self.activity.on_app_state(*app_state, now_ms),
            HeartbeatEvent::Traffic { .. } => {}
        }
    }

    fn interval(&mut self, now: Duration) -> Duration {
        let c = self.constants;
        let now_ms = now.as_millis() as u64;
        let interval_ms = match self.networks.current() {
            Some(net)
                if !self.activity.is_active(now_ms)
                    && self.link_successes >= c.net_stable_test_count =>
            {
                net.cur_heart_ms.clamp(c.min_heart_ms, c.max_heart_ms)
            }
            _ => c.min_heart_ms,
        };
        Duration::from_millis(interval_ms)
    }

    fn interval_max(&self) -> Duration {
        Duration::from_millis(self.constants.max_heart_ms)
    }
}

#[cfg(test)]
#[path = "wechat_tests.rs"]
mod tests;
