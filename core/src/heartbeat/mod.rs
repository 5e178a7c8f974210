//! Heartbeat strategies: when the client core sends its next Ping.
//!
//! A strategy is a pure state machine: the client core tells it what happened (connected,
//! heartbeat answered or failed, app state, network change) with an explicit time, and asks it
//! for the next interval. Times are durations since the client started, so unit tests walk a
//! strategy through its rules with exact times and no clock. Strategies read no clock and no
//! RNG and keep per-network state in bounded `BTreeMap`s, so the simulator replays them.
//!
//! Modules:
//! - [`presets`]: the fixed intervals of WhatsApp, Line, GCM, goim, MobileIMSDK, TCP keepalive;
//! - [`wechat`]: Tencent Mars' smart heartbeat with its two published constant sets;
//! - [`adaptive`]: `imlab-adaptive`, our NAT-timeout bisection;
//! - `activity` and `networks` (private): the foreground window and the per-network table
//!   that `wechat` and `adaptive` share.

mod activity;
pub mod adaptive;
mod networks;
pub mod presets;
#[cfg(test)]
mod walk;
pub mod wechat;

use std::time::Duration;

pub use adaptive::Adaptive;
pub use presets::Preset;
pub use wechat::{MarsConstants, WeChat};

/// Every strategy name [`parse_strategy`] accepts besides `fixed:<duration>`.
pub const STRATEGY_NAMES: &[&str] = &[
    "whatsapp",
    "line",
    "gcm",
    "goim",
    "mobileimsdk",
    "tcp-keepalive",
    "wechat",
    "wechat-legacy",
    "imlab-adaptive",
];

/// Most networks a strategy remembers state for; the least recently used one is forgotten
/// first (Mars keeps at most 20 sections in its Heartbeat.ini).
pub const NETWORKS_LEN_MAX: usize = 20;

/// True when a network label names Wi-Fi: labels starting with "wifi" ("wifi:home") and the
/// `home-wifi` carrier preset. Everything else is mobile data. The `line` and `gcm` presets and
/// the simulator's radio model decide with this one function so they never disagree.
pub fn is_wifi_network(label: &str) -> bool {
    label.starts_with("wifi") || label == "home-wifi"
}

/// The app's state as the OS sees it; strategies and backoff use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum AppState {
    /// On screen.
    #[default]
    Foreground,
    /// Off screen but running.
    Background,
    /// Suspended or asleep for long.
    Inactive,
}

/// What happened, as a strategy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// A connection logged in on the network with this label ("wifi:home", "cmcc-3g").
    Connected {
        /// The network's label.
        network: String,
    },
    /// A Ping sent after `interval` of silence was answered.
    Succeeded {
        /// The interval that was tried.
        interval: Duration,
    },
    /// A Ping sent after `interval` was not answered, or the connection died while waiting.
    Failed {
        /// The interval that was tried.
        interval: Duration,
    },
    /// The connection ended for another reason.
    Disconnected,
    /// The app changed state.
    AppState(AppState),
    /// The device moved to another network.
    NetworkChanged {
        /// The new network's label.
        network: String,
    },
    /// A frame other than a heartbeat crossed the live connection (it refreshed the NAT
    /// mapping when `outbound`, and on NATs refreshed both ways when inbound).
    Traffic {
        /// True for a frame the device sent.
        outbound: bool,
    },
}

/// Decides heartbeat intervals.
pub trait HeartbeatStrategy: Send + 'static {
    /// The strategy's name as written on the command line (`fixed:4m45s`, `wechat`).
    fn name(&self) -> String;

    /// Takes note of an event at `now` (time since the client started).
    fn on_event(&mut self, event: &HeartbeatEvent, now: Duration);

    /// The silence after which the next Ping is due, asked after every event.
    fn interval(&mut self, now: Duration) -> Duration;

    /// The longest interval this strategy may ever choose; sent in Login so the server's
    /// reaper allows for it.
    fn interval_max(&self) -> Duration;

    /// When true, an outbound frame other than a Ping restarts the heartbeat timer: the NAT
    /// mapping was just refreshed, so the next Ping is due `interval` after that frame. Fixed
    /// strategies keep their schedule whatever the traffic (false, the default).
    fn restart_on_traffic(&self) -> bool {
        false
    }
}

/// A fixed interval, whatever happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// The interval.
    pub interval: Duration,
}

impl HeartbeatStrategy for Fixed {
    fn name(&self) -> String {
        format!("fixed:{}", format_duration(self.interval))
    }

    fn on_event(&mut self, _event: &HeartbeatEvent, _now: Duration) {}

    fn interval(&mut self, _now: Duration) -> Duration {
        self.interval
    }

    fn interval_max(&self) -> Duration {
        self.interval
    }
}

/// Parses a strategy name: `fixed:<duration>` (e.g. `fixed:4m45s`) or one of
/// [`STRATEGY_NAMES`]. A strategy's [`HeartbeatStrategy::name`] parses back to the same
/// strategy.
pub fn parse_strategy(name: &str) -> Result<Box<dyn HeartbeatStrategy>, String> {
    if let Some(interval) = name.strip_prefix("fixed:") {
        let interval = parse_duration(interval)
            .map_err(|error| format!("heartbeat strategy {name:?}: {error}"))?;
        if interval.is_zero() {
            return Err(format!(
                "heartbeat strategy {name:?}: interval must be positive"
            ));
        }
        return Ok(Box::new(Fixed { interval }));
    }
    if let Some(preset) = Preset::by_name(name) {
        return Ok(Box::new(preset));
    }
    match name {
        "wechat" => Ok(Box::new(WeChat::new(MarsConstants::NEWER))),
        "wechat-legacy" => Ok(Box::new(WeChat::new(MarsConstants::LEGACY))),
        "imlab-adaptive" => Ok(Box::new(Adaptive::new())),
        _ => Err(format!(
            "unknown heartbeat strategy {name:?}; known: fixed:<duration> (e.g. fixed:4m45s), {}",
            STRATEGY_NAMES.join(", ")
        )),
    }
}

/// Parses "4m45s", "30s", "1h", "250ms" (humantime's syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("duration {text:?} must look like 4m30s: {error}"))
}

/// Formats a duration the way [`parse_duration`] reads it ("4m45s").
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, unit_ms) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= unit_ms {
            out.push_str(&format!("{}{unit}", ms / unit_ms));
            ms %= unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        for (text, secs) in [("4m45s", 285), ("30s", 30), ("1h", 3_600), ("28m", 1_680)] {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)));
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("must look like 4m30s")
        );
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn fixed_strategy_parses_and_ignores_events() {
        let mut strategy = parse_strategy("fixed:4m45s").unwrap();
        assert_eq!(strategy.name(), "fixed:4m45s");
        strategy.on_event(
            &HeartbeatEvent::Failed {
                interval: Duration::from_secs(285),
            },
            Duration::from_secs(300),
        );
        assert_eq!(
            strategy.interval(Duration::from_secs(301)),
            Duration::from_secs(285)
        );
        assert!(parse_strategy("fixed:0s").is_err());
        assert!(
            parse_strategy("nope")
                .err()
                .unwrap()
                .contains("unknown heartbeat strategy")
        );
    }

    #[test]
    fn every_name_parses_back_to_itself() {
        for name in STRATEGY_NAMES
            .iter()
            .copied()
            .chain(["fixed:30s", "fixed:1h2m"])
        {
            let strategy = parse_strategy(name).unwrap();
            assert_eq!(strategy.name(), name);
            assert_eq!(parse_strategy(&strategy.name()).unwrap().name(), name);
            // The server reaps at 1.5x the declared maximum, so it must be finite and positive.
            assert!(!strategy.interval_max().is_zero(), "{name}");
            assert!(
                strategy.interval_max() <= Duration::from_secs(7_200),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let error = parse_strategy("wechat-new").err().unwrap();
        assert!(
            error.contains("unknown heartbeat strategy \"wechat-new\""),
            "{error}"
        );
        for name in STRATEGY_NAMES {
            assert!(error.contains(name), "{error} should list {name}");
        }
        assert!(error.contains("fixed:<duration>"), "{error}");
    }

    #[test]
    fn wifi_labels() {
        for label in ["wifi", "wifi:home", "wifi-office", "home-wifi"] {
            assert!(is_wifi_network(label), "{label}");
        }
        for label in ["cmcc-3g", "us-lte", "subway", "home-wifi2", "my-wifi", ""] {
            assert!(!is_wifi_network(label), "{label}");
        }
    }
}
