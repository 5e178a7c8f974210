//! Carrier profiles: what a mobile network does to a TCP connection.
//!
//! A profile has a NAT (idle timeout, which direction refreshes it, what an expired mapping
//! does), a link (RTT distribution, bandwidth, loss turned into retransmission delay, and a
//! retry budget after which the connection breaks), scheduled outages, and the server
//! kernel's give-up time for writes into a half-open connection. Presets carry their numbers
//! and where the numbers come from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of radio a network uses (the simulator's energy model reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RadioKind {
    /// 4G LTE.
    #[serde(rename = "lte")]
    Lte,
    /// 3G UMTS/HSPA; also used for 2G.
    #[serde(rename = "3g")]
    ThreeG,
    /// Wi-Fi with power-save mode.
    #[serde(rename = "wifi")]
    Wifi,
}

/// Which traffic keeps a NAT mapping alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// Packets in either direction refresh the mapping.
    Both,
    /// Only packets from the phone refresh it (server pushes do not).
    Outbound,
}

/// What happens to the phone's packets once its mapping has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// The packet reaches the server from a new port; the server's kernel answers RST and the
    /// phone's connection dies at its next send. The server's side stays half-open.
    Rst,
    /// The packet is dropped: silence both ways until a timeout notices.
    Drop,
}

/// Periodic blackouts (tunnels, elevators): `duration` long, every `every`, from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outages {
    /// Period.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Length of each blackout.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Start of the first blackout.
    #[serde(with = "humantime_serde", default)]
    pub offset: Duration,
}

impl Outages {
    /// True when `at` falls inside a blackout.
    pub fn is_out(&self, at: Duration) -> bool {
        if at < self.offset {
            return false;
        }
        let phase = (at - self.offset).as_millis() % self.every.as_millis().max(1);
        phase < self.duration.as_millis()
    }

    /// The end of the blackout containing `at` (or `at` when outside one).
    pub fn end_of(&self, at: Duration) -> Duration {
        if !self.is_out(at) {
            return at;
        }
        let every_ms = self.every.as_millis().max(1) as u64;
        let since_ms = (at - self.offset).as_millis() as u64;
        let start_ms = since_ms - since_ms % every_ms;
        self.offset + Duration::from_millis(start_ms) + self.duration
    }
}

/// A complete carrier profile.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierProfile {
    /// The preset or scenario name.
    pub name: String,
    /// NAT idle timeout range; each device draws its own value (equal bounds: fixed).
    pub nat_timeout_min: Duration,
    /// Upper bound of the NAT timeout range.
    pub nat_timeout_max: Duration,
    /// Which direction refreshes the mapping.
    pub refresh: Refresh,
    /// What an expired mapping does to the phone's packets.
    pub on_expiry: OnExpiry,
    /// Median round-trip time phone <-> server.
    pub rtt_median: Duration,
    /// 99th percentile round-trip time.
    pub rtt_p99: Duration,
    /// Link bandwidth in kilobits per second (each direction).
    pub bandwidth_kbps: u32,
    /// Probability that one transmission of a segment is lost.
    pub loss: f64,
    /// Retransmissions before the connection is declared broken (RTO 200 ms, doubling).
    pub max_retries: u32,
    /// How long the server's kernel keeps retransmitting into a half-open connection.
    pub server_give_up: Duration,
    /// Scheduled blackouts, if any.
    pub outages: Option<Outages>,
    /// True for Wi-Fi (GCM uses 15 min there, 28 min on mobile data).
    pub wifi: bool,
    /// The phone's radio on this network, for the energy model.
    pub radio: RadioKind,
}

impl CarrierProfile {
    /// A carrier defined in a scenario without a preset, before its keys apply: placeholder
    /// NAT and link values (the scenario must set them), both directions refresh, an expired
    /// mapping answers RST, 8 retries, Linux's 15-minute give-up, no outages, an LTE radio.
    pub fn custom(name: &str) -> CarrierProfile {
        CarrierProfile {
            name: name.into(),
            nat_timeout_min: Duration::MAX,
            nat_timeout_max: Duration::MAX,
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: Duration::ZERO,
            rtt_p99: Duration::ZERO,
            bandwidth_kbps: 1,
            loss: 0.0,
            max_retries: 8,
            server_give_up: SERVER_GIVE_UP,
            outages: None,
            wifi: false,
            radio: RadioKind::Lte,
        }
    }
}

/// Linux's tcp_retries2 = 15 gives ~15 min before a kernel gives up on unacked data.
const SERVER_GIVE_UP: Duration = Duration::from_secs(15 * 60);

/// Names of the built-in presets.
pub const PRESET_NAMES: &[&str] = &[
    "cmcc-3g",
    "cu-2g",
    "ct-3g",
    "us-lte",
    "home-wifi",
    "subway",
    "elevator",
];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A built-in preset by name.
pub fn preset(name: &str) -> Option<CarrierProfile> {
    let server_give_up = SERVER_GIVE_UP;
    let profile = match name {
        // China Mobile 2G/3G: NAT idle timeout 5 min (WeChat client team's measurement).
        // TD-SCDMA-era link: RTT ~300 ms median, long tail; 384 kbps; 1% loss (estimates).
        "cmcc-3g" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(300),
            nat_timeout_max: secs(300),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: ms(300),
            rtt_p99: ms(1_500),
            bandwidth_kbps: 384,
            loss: 0.01,
            max_retries: 6,
            server_give_up,
            outages: None,
            wifi: false,
            radio: RadioKind::ThreeG,
        },
        // China Unicom 2G: NAT 5 min (WeChat's measurement), silent drops; EDGE-class link:
        // RTT ~700 ms median, 3 s p99, 40 kbps, 2% loss (estimates for a slow network).
        "cu-2g" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(300),
            nat_timeout_max: secs(300),
            refresh: Refresh::Outbound,
            on_expiry: OnExpiry::Drop,
            rtt_median: ms(700),
            rtt_p99: ms(3_000),
            bandwidth_kbps: 40,
            loss: 0.02,
            max_retries: 6,
            server_give_up,
            outages: None,
            wifi: false,
            radio: RadioKind::ThreeG,
        },
        // China Telecom 3G: NAT > 28 min (WeChat's measurement; we use 45 min). EV-DO link:
        // RTT ~200 ms, 1 Mbps, 0.5% loss (estimates).
        "ct-3g" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(45 * 60),
            nat_timeout_max: secs(45 * 60),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: ms(200),
            rtt_p99: ms(1_000),
            bandwidth_kbps: 1_000,
            loss: 0.005,
            max_retries: 8,
            server_give_up,
            outages: None,
            wifi: false,
            radio: RadioKind::ThreeG,
        },
        // US LTE: long NAT (US 3G > 28 min per WeChat; LTE carriers similar or longer; we use
        // 60 min). RTT ~60 ms median (Huang et al. MobiSys 2012 measured 70 ms), 10 Mbps.
        "us-lte" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(60 * 60),
            nat_timeout_max: secs(60 * 60),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: ms(60),
            rtt_p99: ms(250),
            bandwidth_kbps: 10_000,
            loss: 0.002,
            max_retries: 8,
            server_give_up,
            outages: None,
            wifi: false,
            radio: RadioKind::Lte,
        },
        // Home Wi-Fi gateways: TCP idle timeouts vary widely (a practitioner measured about
        // 10 min; RFC 5382 asks for 2 h 4 min; Hätönen et al. IMC 2010 saw short UDP ones);
        // each device draws from 10 to 60 min. Fast link, little loss.
        "home-wifi" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(10 * 60),
            nat_timeout_max: secs(60 * 60),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: ms(30),
            rtt_p99: ms(150),
            bandwidth_kbps: 20_000,
            loss: 0.001,
            max_retries: 8,
            server_give_up,
            outages: None,
            wifi: true,
            radio: RadioKind::Wifi,
        },
        // Subway commute on a 4G network: 10 min NAT, and a 45 s blackout between stations
        // every 4 min (illustrative; tunnels vary).
        "subway" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(10 * 60),
            nat_timeout_max: secs(10 * 60),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Drop,
            rtt_median: ms(80),
            rtt_p99: ms(600),
            bandwidth_kbps: 5_000,
            loss: 0.01,
            max_retries: 6,
            server_give_up,
            outages: Some(Outages {
                every: secs(240),
                duration: secs(45),
                offset: secs(60),
            }),
            wifi: false,
            radio: RadioKind::Lte,
        },
        // Office building on 4G: 30 min NAT, a 20 s elevator blackout every 30 min
        // (illustrative).
        "elevator" => CarrierProfile {
            name: name.into(),
            nat_timeout_min: secs(30 * 60),
            nat_timeout_max: secs(30 * 60),
            refresh: Refresh::Both,
            on_expiry: OnExpiry::Rst,
            rtt_median: ms(70),
            rtt_p99: ms(400),
            bandwidth_kbps: 5_000,
            loss: 0.005,
            max_retries: 8,
            server_give_up,
            outages: Some(Outages {
                every: secs(30 * 60),
                duration: secs(20),
                offset: secs(10 * 60),
            }),
            wifi: false,
            radio: RadioKind::Lte,
        },
        _ => return None,
    };
    Some(profile)
}

/// Retransmission timeout of the first retry; it doubles per retry.
pub const RTO_INITIAL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_exists_and_is_sane() {
        for name in PRESET_NAMES {
            let p = preset(name).unwrap();
            assert!(p.nat_timeout_min <= p.nat_timeout_max, "{name}");
            assert!(p.rtt_median <= p.rtt_p99, "{name}");
            assert!((0.0..1.0).contains(&p.loss), "{name}");
        }
        assert!(preset("nope").is_none());
        assert_eq!(preset("cmcc-3g").unwrap().nat_timeout_max, secs(300));
        assert!(preset("ct-3g").unwrap().nat_timeout_min > secs(28 * 60));
    }

    #[test]
    fn outage_windows() {
        let o = Outages {
            every: secs(240),
            duration: secs(45),
            offset: secs(60),
        };
        assert!(!o.is_out(secs(59)));
        assert!(o.is_out(secs(60)));
        assert!(o.is_out(secs(104)));
        assert!(!o.is_out(secs(105)));
        assert!(o.is_out(secs(300)));
        assert_eq!(o.end_of(secs(310)), secs(345));
        assert_eq!(o.end_of(secs(200)), secs(200));
    }
}
