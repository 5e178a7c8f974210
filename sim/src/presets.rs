//! `imlab sim presets`: every built-in carrier preset with its parameters and where its
//! numbers come from, as one table row each. The numbers are read from [`carrier::preset`],
//! so the listing cannot drift from what the simulator runs.

use std::time::Duration;

use crate::carrier::{self, CarrierProfile, OnExpiry, PRESET_NAMES, Refresh};

/// Where each preset's numbers come from, by name.
pub const PRESET_SOURCES: &[(&str, &str)] = &[
    (
        "cmcc-3g",
        "China Mobile 2G/3G NAT 5 min (WeChat client team); link figures estimated",
    ),
    (
        "cu-2g",
        "China Unicom 2G NAT 5 min, silent drops (WeChat client team); EDGE-class link estimated",
    ),
    (
        "ct-3g",
        "China Telecom 3G NAT > 28 min (WeChat client team; 45 min used); EV-DO link estimated",
    ),
    (
        "us-lte",
        "US 3G NAT > 28 min (WeChat; 60 min used); LTE RTT per Huang et al. MobiSys 2012",
    ),
    (
        "home-wifi",
        "home gateways 10-60 min (practitioner ~10 min; RFC 5382 asks 2 h 4 min; Hätönen et al. IMC 2010)",
    ),
    (
        "subway",
        "4G with a 45 s blackout every 4 min between stations (illustrative)",
    ),
    (
        "elevator",
        "4G office, a 20 s elevator blackout every 30 min (illustrative)",
    ),
];

/// The source line of a preset.
pub fn source(name: &str) -> Option<&'static str> {
    PRESET_SOURCES
        .iter()
        .find(|(preset, _)| *preset == name)
        .map(|(_, source)| *source)
}

fn dur(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// One preset's parameters in one line.
pub fn parameters(p: &CarrierProfile) -> String {
    let nat = if p.nat_timeout_min == p.nat_timeout_max {
        dur(p.nat_timeout_min)
    } else {
        format!("{}..{}", dur(p.nat_timeout_min), dur(p.nat_timeout_max))
    };
    let refresh = match p.refresh {
        Refresh::Both => "both ways",
        Refresh::Outbound => "outbound only",
    };
    let expiry = match p.on_expiry {
        OnExpiry::Rst => "rst",
        OnExpiry::Drop => "drop",
    };
    let mut text = format!(
        "nat {nat} (refresh {refresh}, expiry {expiry}), rtt {} (p99 {}), {} kbps, loss {}%, {} retries{}",
        dur(p.rtt_median),
        dur(p.rtt_p99),
        p.bandwidth_kbps,
        p.loss * 100.0,
        p.max_retries,
        if p.wifi { ", wifi" } else { "" },
    );
    if let Some(outages) = &p.outages {
        text += &format!(
            ", outage {} every {} from {}",
            dur(outages.duration),
            dur(outages.every),
            dur(outages.offset)
        );
    }
    text
}

/// The whole listing: a block per preset (name, parameters, source).
pub fn listing() -> String {
    let mut out = String::new();
    for name in PRESET_NAMES {
        let profile = carrier::preset(name).expect("every listed preset exists");
        out += &format!(
            "{name}\n  {}\n  source: {}\n",
            parameters(&profile),
            source(name).unwrap_or("(none given)")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_listed_with_a_source() {
        for name in PRESET_NAMES {
            assert!(source(name).is_some(), "{name} has no source");
        }
        assert_eq!(PRESET_SOURCES.len(), PRESET_NAMES.len());
        let text = listing();
        assert!(
            text.contains("cmcc-3g\n  nat 5m (refresh both ways, expiry rst), rtt 300ms (p99 1s 500ms), 384 kbps, loss 1%, 6 retries\n"),
            "{text}"
        );
        assert!(text.contains("outage 45s every 4m from 1m"), "{text}");
    }
}
