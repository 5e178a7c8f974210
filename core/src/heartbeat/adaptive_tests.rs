//! Walks `imlab-adaptive` against model NATs, and against WeChat's strategy on the same NATs.

use super::*;
use crate::heartbeat::walk::Walk;
use crate::heartbeat::{AppState, MarsConstants, WeChat};

const DAY_S: u64 = 86_400;

/// A strategy connected on `network` at 0 and sent to the background at once.
fn background_walk<S: HeartbeatStrategy>(strategy: S, network: &str) -> Walk<S> {
    let mut walk = Walk::new(strategy, network);
    walk.app(AppState::Background);
    walk
}

fn estimate(walk: &Walk<Adaptive>) -> Estimate {
    walk.strategy.networks.current().unwrap().clone()
}

/// On a 5 min NAT: two answered heartbeats at 210 s while the app may come back, then 315 s
/// fails, the bisection tries 262 s and 288 s, re-tries 315 s to rule out an outage, and
/// settles 10 s under the longest survived silence. (The third heartbeat is recorded as 315 s
/// because the active window closed while it was pending; it proves only the 210 s it waited.)
#[test]
fn converges_below_a_five_minute_nat_with_two_failures() {
    let mut walk = background_walk(Adaptive::new(), "cmcc-3g");
    let intervals_s = walk.beats_nat(300, 12);
    assert_eq!(
        intervals_s,
        [210, 210, 315, 315, 262, 288, 315, 278, 278, 278, 278, 278]
    );
    assert_eq!(walk.n_failures, 2);
    let estimate = estimate(&walk);
    assert_eq!(estimate.survived_ms, Some(288_750));
    assert_eq!(estimate.failed_ms, Some(315_000));
    assert!(estimate.settled_at_ms.is_some());
}

/// On a NAT longer than 28 min it climbs x1.5 per answered heartbeat to its cap, no failure.
#[test]
fn climbs_to_its_max_on_a_long_nat() {
    let mut walk = background_walk(Adaptive::new(), "ct-3g");
    let intervals_s = walk.beats_nat(2_000, 12);
    assert_eq!(
        intervals_s,
        [
            210, 210, 315, 315, 472, 708, 1_063, 1_594, 1_680, 1_680, 1_680, 1_680
        ]
    );
    assert_eq!(walk.n_failures, 0);
    assert_eq!(walk.strategy.interval_max(), Duration::from_secs(1_680));
}

/// A 10 min home router and NATs below WeChat's 210 s floor all converge within a few
/// failures, a few percent under the timeout (the 30 s floor bounds the shortest).
#[test]
fn converges_on_wifi_and_short_nats() {
    for (nat_timeout_s, settled_range_s, failures_max) in
        [(600, 560..600, 3), (120, 100..120, 3), (45, 30..45, 6)]
    {
        let mut walk = background_walk(Adaptive::new(), "wifi:home");
        let intervals_s = walk.beats_nat(nat_timeout_s, 20);
        let settled_s = *intervals_s.last().unwrap();
        assert!(settled_range_s.contains(&settled_s), "{intervals_s:?}");
        assert!(
            intervals_s[15..].iter().all(|&s| s == settled_s),
            "{intervals_s:?}"
        );
        assert!(walk.n_failures <= failures_max, "{intervals_s:?}");
        // The foreground uses the settled value when it is below 210 s.
        walk.app(AppState::Foreground);
        assert_eq!(walk.next_s(), settled_s.min(210));
    }
}

/// The subway preset's blackouts: 45 s every 4 min from minute 1.
fn in_subway_outage(at_ms: u64) -> bool {
    at_ms >= 60_000 && (at_ms - 60_000) % 240_000 < 45_000
}

/// Two days of heartbeats across a NAT, optionally with subway blackouts (a heartbeat sent
/// during one fails); returns (heartbeats, failures, last interval in s).
fn two_days<S: HeartbeatStrategy>(strategy: S, nat_timeout_s: u64, outages: bool) -> [u64; 3] {
    let mut walk = background_walk(strategy, "net");
    let (mut n_beats, mut last_s) = (0, 0);
    while walk.now_ms < 2 * DAY_S * 1_000 {
        let start_ms = walk.now_ms;
        last_s = walk.beat_ms(|silence_ms| {
            silence_ms < nat_timeout_s * 1_000
                && !(outages && in_subway_outage(start_ms + silence_ms))
        }) / 1_000;
        n_beats += 1;
    }
    [n_beats, u64::from(walk.n_failures), last_s]
}

/// Over two days on NATs WeChat can hold, with and without blackouts: fewer heartbeats than
/// WeChat and no more failures. On a NAT below its 210 s floor WeChat fails every heartbeat;
/// we fail only while searching and in the daily re-probe.
#[test]
fn beats_wechat_on_every_nat() {
    for (nat_timeout_s, outages, settled_range_s) in [
        (120, false, 100..120),
        (300, false, 270..300),
        (600, false, 560..600),
        (2_000, false, 1_680..1_681),
        (300, true, 270..300),
        (600, true, 560..600),
    ] {
        let [ours_beats, ours_failures, ours_last_s] =
            two_days(Adaptive::new(), nat_timeout_s, outages);
        let [wechat_beats, wechat_failures, _] =
            two_days(WeChat::new(MarsConstants::NEWER), nat_timeout_s, outages);
        let summary = format!(
            "{nat_timeout_s} s NAT, outages {outages}: {ours_beats} beats, {ours_failures} \
             failures, last {ours_last_s} s; wechat {wechat_beats} beats, {wechat_failures} failures"
        );
        assert!(ours_failures <= wechat_failures, "{summary}");
        assert!(settled_range_s.contains(&ours_last_s), "{summary}");
        if nat_timeout_s > 210 {
            assert!(ours_beats < wechat_beats, "{summary}");
        } else {
            assert_eq!(wechat_failures, wechat_beats, "{summary}");
            // Three to find and confirm the bound, then one re-probe a day.
            assert!(ours_failures <= 3 + 2, "{summary}");
        }
    }
}

/// Each network keeps its estimate; coming back uses it at once. At most 20 are kept, the
/// least recently used is forgotten.
#[test]
fn reloads_per_network_state() {
    let mut walk = background_walk(Adaptive::new(), "cmcc-3g");
    walk.beats_nat(300, 12);
    walk.switch("ct-3g");
    assert_eq!(
        walk.beats_nat(2_000, 7),
        [210, 315, 472, 708, 1_063, 1_594, 1_680]
    );
    walk.switch("cmcc-3g");
    assert_eq!(walk.beats_nat(300, 3), [278, 278, 278]);
    walk.switch("ct-3g");
    assert_eq!(walk.beats_nat(2_000, 2), [1_680, 1_680]);
    assert_eq!(walk.n_failures, 2);

    for i in 0..19 {
        walk.advance_s(60);
        walk.switch(&format!("wifi:cafe-{i}"));
    }
    let networks = &walk.strategy.networks;
    assert_eq!(networks.len(), NETWORKS_LEN_MAX);
    assert!(networks.get("cmcc-3g").is_none(), "used before ct-3g");
    assert!(networks.get("ct-3g").is_some());
}

/// Outbound frames restart the timer; a frame in either direction during the wait means the
/// answered heartbeat proves only the silence since that frame.
#[test]
fn traffic_restarts_the_timer_and_shortens_the_proof() {
    let mut walk = background_walk(Adaptive::new(), "ct-3g");
    assert!(walk.strategy.restart_on_traffic());
    walk.app(AppState::Inactive);
    assert_eq!(walk.beat_nat(2_000), 210);
    assert_eq!(walk.next_s(), 315);
    walk.advance_s(100);
    walk.event(HeartbeatEvent::Traffic { outbound: false });
    walk.advance_s(215);
    let recorded = walk.strategy.interval(Duration::from_millis(walk.now_ms));
    assert_eq!(recorded, Duration::from_secs(315));
    walk.event(HeartbeatEvent::Succeeded { interval: recorded });
    assert_eq!(estimate(&walk).survived_ms, Some(215_000));
    assert_eq!(walk.next_s(), 322);
}

/// A failure at the settled value is an outage until it happens twice in a row; then the NAT
/// changed and the search restarts below it. Failures far below it are outages.
#[test]
fn repeated_failures_at_a_survived_silence_restart_the_search() {
    let mut walk = background_walk(Adaptive::new(), "subway");
    walk.beats_nat(300, 12);
    assert_eq!(walk.beat(false), 278);
    assert_eq!(estimate(&walk).n_contradictions, 1);
    assert_eq!(walk.beats_nat(300, 2), [278, 278]);
    assert_eq!(estimate(&walk).n_contradictions, 0);
    walk.app(AppState::Foreground);
    assert_eq!(walk.beat(false), 210);
    assert_eq!(walk.beat(false), 210);
    assert_eq!(
        estimate(&walk).n_contradictions,
        0,
        "outages below the settled value"
    );
    walk.app(AppState::Inactive);

    // The NAT now forgets after 200 s.
    assert_eq!(walk.beat_nat(200), 278);
    assert_eq!(walk.beat_nat(200), 278);
    assert_eq!(estimate(&walk).survived_ms, None);
    assert_eq!(estimate(&walk).failed_ms, Some(278_750));
    let intervals_s = walk.beats_nat(200, 10);
    let settled_s = *intervals_s.last().unwrap();
    assert!((170..200).contains(&settled_s), "{intervals_s:?}");
    // 2 to settle, 1 + 2 outages, 2 contradictions, 3 to search below and confirm.
    assert_eq!(walk.n_failures, 2 + 3 + 2 + 3, "{intervals_s:?}");
}

/// A lone failure that bounded the search is re-tried before it is believed; an outage that
/// happened to hit the probe does not cap a long NAT.
#[test]
fn a_lone_failure_is_confirmed_before_it_is_believed() {
    let mut walk = background_walk(Adaptive::new(), "ct-3g");
    assert_eq!(walk.beats_nat(2_000, 5), [210, 210, 315, 315, 472]);
    assert_eq!(walk.beat(false), 708);
    let intervals_s = walk.beats_nat(2_000, 6);
    assert_eq!(intervals_s, [590, 649, 708, 1_063, 1_594, 1_680]);
    assert_eq!(walk.n_failures, 1);
    assert_eq!(estimate(&walk).failed_ms, None);
}

/// Once settled, the failed value is re-tried once a day: it fails while the NAT is unchanged,
/// and the climb resumes once the NAT grew.
#[test]
fn a_settled_bracket_is_reprobed_once_a_day() {
    let mut walk = background_walk(Adaptive::new(), "cmcc-3g");
    walk.beats_nat(300, 12);
    let settled_at_ms = estimate(&walk).settled_at_ms.unwrap();
    let mut probes_ms = Vec::new();
    while walk.now_ms < settled_at_ms + 2 * DAY_S * 1_000 + 30 * 60_000 {
        let n_failures = walk.n_failures;
        walk.beat_nat(300);
        if walk.n_failures > n_failures {
            probes_ms.push(walk.now_ms);
        }
    }
    assert_eq!(probes_ms.len(), 2, "{probes_ms:?}");
    assert!(probes_ms[0] >= settled_at_ms + DAY_S * 1_000);
    assert!(probes_ms[1] - probes_ms[0] >= DAY_S * 1_000);
    assert_eq!(estimate(&walk).failed_ms, Some(315_000));
    // The carrier lengthened its timeout: the next daily probe succeeds and the climb resumes.
    walk.advance_s(DAY_S);
    assert_eq!(walk.beats_nat(2_000, 4), [315, 472, 708, 1_063]);
}

/// The foreground and the first 10 minutes of background stay at 210 s or below.
#[test]
fn the_active_app_stays_at_or_below_210_s() {
    let mut walk = background_walk(Adaptive::new(), "ct-3g");
    walk.beats_nat(2_000, 10);
    assert_eq!(walk.next_s(), 1_680);
    walk.app(AppState::Foreground);
    assert_eq!(walk.next_s(), 210);
    walk.app(AppState::Background);
    assert_eq!(walk.beats_nat(2_000, 2), [210, 210]);
    walk.advance_s(600);
    assert_eq!(walk.next_s(), 1_680);
    assert_eq!(walk.strategy.name(), "imlab-adaptive");
}
