//! Named fixed-interval strategies, as shipped by well-known apps and stacks.
//!
//! These never adapt: the interval depends at most on whether the current network is Wi-Fi
//! ([`is_wifi_network`]). Published values: WhatsApp 4 min 45 s everywhere; Line 3 min 20 s on
//! Wi-Fi and 7 min on mobile data; GCM 15 min on Wi-Fi and 28 min on mobile data (too long for
//! 5-minute carrier NATs, hence late pushes in China); goim 30 s; MobileIMSDK 15 s; the OS TCP
//! keepalive 7200 s of idle before its first probe.
//!
//! `tcp-keepalive` models only that first probe. Linux then sends a probe every 75 s, but only
//! after a probe went unanswered; our client treats an unanswered heartbeat as a dead
//! connection and reconnects, so the 75 s probes never come into play.

use std::time::Duration;

use super::{HeartbeatEvent, HeartbeatStrategy, is_wifi_network};

/// A fixed interval per network kind, under a well-known name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    name: &'static str,
    wifi_interval: Duration,
    mobile_interval: Duration,
    /// Whether the last network label seen was Wi-Fi; mobile until told otherwise.
    on_wifi: bool,
}

impl Preset {
    fn new(name: &'static str, wifi_s: u64, mobile_s: u64) -> Preset {
        Preset {
            name,
            wifi_interval: Duration::from_secs(wifi_s),
            mobile_interval: Duration::from_secs(mobile_s),
            on_wifi: false,
        }
    }

    /// WhatsApp: 4 min 45 s on every network.
    pub fn whatsapp() -> Preset {
        Preset::new("whatsapp", 285, 285)
    }

    /// Line: 3 min 20 s on Wi-Fi, 7 min on mobile data.
    pub fn line() -> Preset {
        Preset::new("line", 200, 420)
    }

    /// Google Cloud Messaging: 15 min on Wi-Fi, 28 min on mobile data.
    pub fn gcm() -> Preset {
        Preset::new("gcm", 900, 1_680)
    }

    /// goim (Bilibili's open-source IM): 30 s.
    pub fn goim() -> Preset {
        Preset::new("goim", 30, 30)
    }

    /// MobileIMSDK: 15 s.
    pub fn mobileimsdk() -> Preset {
        Preset::new("mobileimsdk", 15, 15)
    }

    /// The OS TCP keepalive's first probe after 7200 s of idle (see the module notes for the
    /// 75 s probes that follow only a failed one).
    pub fn tcp_keepalive() -> Preset {
        Preset::new("tcp-keepalive", 7_200, 7_200)
    }

    /// The preset with this command-line name.
    pub fn by_name(name: &str) -> Option<Preset> {
        let preset = match name {
            "whatsapp" => Preset::whatsapp(),
            "line" => Preset::line(),
            "gcm" => Preset::gcm(),
            "goim" => Preset::goim(),
            "mobileimsdk" => Preset::mobileimsdk(),
            "tcp-keepalive" => Preset::tcp_keepalive(),
            _ => return None,
        };
        Some(preset)
    }
}

impl HeartbeatStrategy for Preset {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn on_event(&mut self, event: &HeartbeatEvent, _now: Duration) {
        match event {
            HeartbeatEvent::Connected { network } | HeartbeatEvent::NetworkChanged { network } => {
                self.on_wifi = is_wifi_network(network);
            }
            _ => {}
        }
    }

    fn interval(&mut self, _now: Duration) -> Duration {
        if self.on_wifi {
            self.wifi_interval
        } else {
            self.mobile_interval
        }
    }

    fn interval_max(&self) -> Duration {
        self.wifi_interval.max(self.mobile_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::AppState;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn connected(network: &str) -> HeartbeatEvent {
        HeartbeatEvent::Connected {
            network: network.into(),
        }
    }

    /// (name, interval on Wi-Fi, interval on mobile, interval_max), all in seconds.
    const TABLE: &[(&str, u64, u64, u64)] = &[
        ("whatsapp", 285, 285, 285),
        ("line", 200, 420, 420),
        ("gcm", 900, 1_680, 1_680),
        ("goim", 30, 30, 30),
        ("mobileimsdk", 15, 15, 15),
        ("tcp-keepalive", 7_200, 7_200, 7_200),
    ];

    #[test]
    fn presets_use_their_published_intervals_per_network() {
        for &(name, wifi_s, mobile_s, max_s) in TABLE {
            let mut preset = Preset::by_name(name).unwrap();
            assert_eq!(preset.name(), name);
            assert_eq!(preset.interval_max(), secs(max_s), "{name}");
            // Before any network is known, the mobile interval applies.
            assert_eq!(preset.interval(secs(0)), secs(mobile_s), "{name}");
            preset.on_event(&connected("wifi:home"), secs(1));
            assert_eq!(preset.interval(secs(1)), secs(wifi_s), "{name}");
            let cellular = HeartbeatEvent::NetworkChanged {
                network: "cmcc-3g".into(),
            };
            preset.on_event(&cellular, secs(2));
            assert_eq!(preset.interval(secs(2)), secs(mobile_s), "{name}");
            preset.on_event(&connected("home-wifi"), secs(3));
            assert_eq!(preset.interval(secs(3)), secs(wifi_s), "{name}");
            assert!(!preset.restart_on_traffic(), "{name}");
        }
        assert_eq!(Preset::by_name("fixed:30s"), None);
    }

    #[test]
    fn presets_ignore_results_app_state_and_traffic() {
        let mut line = Preset::line();
        line.on_event(&connected("us-lte"), secs(0));
        for event in [
            HeartbeatEvent::Failed {
                interval: secs(420),
            },
            HeartbeatEvent::Succeeded {
                interval: secs(420),
            },
            HeartbeatEvent::AppState(AppState::Background),
            HeartbeatEvent::Traffic { outbound: true },
            HeartbeatEvent::Disconnected,
        ] {
            line.on_event(&event, secs(500));
            assert_eq!(line.interval(secs(500)), secs(420), "{event:?}");
        }
    }
}
