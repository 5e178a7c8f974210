//! Walks both Mars constant sets through every smart-heartbeat rule with explicit times.

use super::*;
use crate::heartbeat::AppState;
use crate::heartbeat::walk::Walk;

/// A wechat strategy connected on `network` at 0 and sent to the background at once.
fn background_walk(constants: MarsConstants, network: &str) -> Walk<WeChat> {
    let mut walk = Walk::new(WeChat::new(constants), network);
    walk.app(AppState::Background);
    walk
}

fn repeat(pairs: &[(u64, usize)]) -> Vec<u64> {
    pairs
        .iter()
        .flat_map(|&(s, n)| std::iter::repeat_n(s, n))
        .collect()
}

fn current(walk: &Walk<WeChat>) -> NetHeart {
    *walk.strategy.networks.current().unwrap()
}

/// The newer set on a NAT that never expires: 7 beats at MinHeart (3 for the new link, then
/// 5 successes at the value, the first overlapping), 5 at each step, one at Max, then
/// Max - margin for good.
#[test]
fn newer_climbs_in_steps_to_max_then_settles_below_it() {
    let mut walk = background_walk(MarsConstants::NEWER, "ct-3g");
    let intervals_s = walk.beats_nat(10_000, 45);
    let expected_s = repeat(&[
        (210, 7),
        (270, 5),
        (330, 5),
        (390, 5),
        (450, 5),
        (510, 5),
        (570, 5),
        (600, 1),
        (580, 7),
    ]);
    assert_eq!(intervals_s, expected_s);
    assert!(current(&walk).stable);
    assert_eq!(walk.n_failures, 0);
    assert_eq!(walk.strategy.interval_max(), Duration::from_secs(600));
    assert_eq!(walk.strategy.name(), "wechat");
}

/// Two failures while searching settle at current - step - margin; every failure costs a new
/// link, which must earn 3 successes at MinHeart again.
#[test]
fn newer_gives_up_a_value_after_two_failures() {
    let mut walk = background_walk(MarsConstants::NEWER, "cmcc-3g");
    let intervals_s = walk.beats_nat(300, 27);
    let expected_s = repeat(&[
        (210, 7),
        (270, 5),
        (330, 1),
        (210, 3),
        (330, 1),
        (210, 3),
        (250, 7),
    ]);
    assert_eq!(intervals_s, expected_s);
    assert_eq!(walk.n_failures, 2);
    let net = current(&walk);
    assert!(net.stable);
    assert_eq!(net.cur_heart_ms, 250_000);
}

/// The older set: 3 successes per step, 3 failures to give up, and the fallback clamps at its
/// 270 s MinHeart (330 - 60 - 20 = 250 would be below it). Failures at MinHeart never count.
#[test]
fn legacy_needs_three_failures_and_never_goes_below_min() {
    let mut walk = background_walk(MarsConstants::LEGACY, "cu-2g");
    let intervals_s = walk.beats_nat(300, 20);
    let expected_s = repeat(&[
        (270, 5),
        (330, 1),
        (270, 3),
        (330, 1),
        (270, 3),
        (330, 1),
        (270, 6),
    ]);
    assert_eq!(intervals_s, expected_s);
    assert_eq!(current(&walk).cur_heart_ms, 270_000);
    assert!(current(&walk).stable);
    for _ in 0..5 {
        assert_eq!(walk.beat(false), 270);
    }
    assert_eq!(current(&walk).fail_count, 0);
    assert!(current(&walk).stable);
    assert_eq!(walk.strategy.name(), "wechat-legacy");
    assert_eq!(walk.strategy.interval_max(), Duration::from_secs(590));
}

/// Failures while stable restart the search at MinHeart; a success in between does not clear
/// the first failure (Mars clears the count only on searching successes).
#[test]
fn stable_failures_restart_the_search() {
    let mut walk = background_walk(MarsConstants::NEWER, "us-lte");
    walk.beats_nat(10_000, 38);
    assert_eq!(current(&walk).cur_heart_ms, 580_000);
    assert_eq!(walk.beat(false), 580);
    assert_eq!(current(&walk).fail_count, 1);
    assert_eq!(walk.beats_nat(10_000, 4), [210, 210, 210, 580]);
    assert_eq!(current(&walk).fail_count, 1);
    assert_eq!(walk.beat(false), 580);
    let net = current(&walk);
    assert!(!net.stable);
    assert_eq!((net.cur_heart_ms, net.fail_count), (210_000, 0));
    assert_eq!(walk.beats_nat(10_000, 7), [210; 7]);
    assert_eq!(walk.next_s(), 270);
}

/// While stable, the value grows by the margin once it is a day old, and only then.
#[test]
fn stable_values_are_probed_upward_at_most_once_a_day() {
    let mut walk = background_walk(MarsConstants::NEWER, "cmcc-3g");
    walk.beats_nat(300, 20);
    assert_eq!(current(&walk).cur_heart_ms, 250_000);
    let mut probes_ms = Vec::new();
    let mut previous_s = 250;
    while walk.now_ms < 3 * DAY_MS + 60_000 {
        let interval_s = walk.beat_nat(300);
        if previous_s == 250 && interval_s == 270 {
            probes_ms.push(walk.now_ms);
        }
        if interval_s != 210 {
            previous_s = interval_s;
        }
    }
    // The first probe comes a day after the value settled; each probe climbs to 330, fails
    // twice and settles back at 250, which rewrites the value, so probes are a day apart.
    assert_eq!(probes_ms.len(), 2, "{probes_ms:?}");
    assert!(probes_ms[0] >= DAY_MS, "{probes_ms:?}");
    assert!(probes_ms[1] - probes_ms[0] >= DAY_MS, "{probes_ms:?}");
    assert_eq!(walk.n_failures, 2 + 2 * 2);
    // At Max - margin there is nothing to probe.
    let mut long = background_walk(MarsConstants::NEWER, "ct-3g");
    long.beats_nat(10_000, 38);
    long.advance_s(2 * 86_400);
    assert_eq!(long.beats_nat(10_000, 3), [580; 3]);
    assert_eq!(current(&long).cur_heart_ms, 580_000);
}

/// The foreground and the first 10 minutes of background use MinHeart, whatever was learnt;
/// so does a new link until it has 3 answered heartbeats.
#[test]
fn active_app_and_new_links_use_min_heart() {
    let mut walk = background_walk(MarsConstants::NEWER, "us-lte");
    walk.beats_nat(10_000, 38);
    assert_eq!(walk.next_s(), 580);
    walk.app(AppState::Foreground);
    assert_eq!(walk.next_s(), 210);
    walk.app(AppState::Background);
    let background_ms = walk.now_ms;
    assert_eq!(walk.beats_nat(10_000, 2), [210, 210]);
    walk.now_ms = background_ms + 599_999;
    assert_eq!(walk.next_s(), 210);
    walk.now_ms = background_ms + 600_000;
    assert_eq!(walk.next_s(), 580);
    walk.app(AppState::Inactive);
    assert_eq!(walk.next_s(), 580);
    // A plain disconnect is not a failure, but the next link starts at MinHeart.
    walk.event(HeartbeatEvent::Disconnected);
    walk.event(HeartbeatEvent::Connected {
        network: "us-lte".into(),
    });
    assert_eq!(walk.beats_nat(10_000, 4), [210, 210, 210, 580]);
    assert_eq!(current(&walk).fail_count, 0);
}

/// Each network keeps its own search; switching back reloads it. At most 20 are kept, the
/// least recently written goes first.
#[test]
fn state_is_kept_per_network_and_bounded() {
    let mut walk = background_walk(MarsConstants::NEWER, "cmcc-3g");
    walk.beats_nat(300, 20);
    assert_eq!(current(&walk).cur_heart_ms, 250_000);
    walk.switch("wifi:home");
    assert_eq!(walk.beats_nat(10_000, 7), [210; 7]);
    assert_eq!(current(&walk).cur_heart_ms, 270_000);
    walk.switch("cmcc-3g");
    assert_eq!(walk.beats_nat(300, 4), [210, 210, 210, 250]);
    assert!(current(&walk).stable);

    for i in 0..19 {
        walk.advance_s(60);
        walk.switch(&format!("wifi:cafe-{i}"));
    }
    let networks = &walk.strategy.networks;
    assert_eq!(networks.len(), NETWORKS_LEN_MAX);
    // cmcc-3g was written before wifi:home's last result, so it went first.
    assert!(networks.get("cmcc-3g").is_none());
    assert!(networks.get("wifi:home").is_some());
    walk.switch("cmcc-3g");
    assert_eq!(current(&walk).cur_heart_ms, 210_000);
    assert!(!current(&walk).stable);
}

/// Results reported before any network is known, and traffic, change nothing.
#[test]
fn results_without_a_network_and_traffic_are_ignored() {
    let mut wechat = WeChat::new(MarsConstants::NEWER);
    let at = Duration::from_secs(1);
    for event in [
        HeartbeatEvent::Succeeded {
            interval: Duration::from_secs(210),
        },
        HeartbeatEvent::Failed {
            interval: Duration::from_secs(210),
        },
        HeartbeatEvent::Traffic { outbound: true },
    ] {
        wechat.on_event(&event, at);
    }
    assert_eq!(wechat.interval(at), Duration::from_secs(210));
    assert_eq!(wechat.networks.len(), 0);
    assert!(!wechat.restart_on_traffic());
}
