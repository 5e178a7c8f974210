//! Each carrier fault of the vocabulary, one test of its effect on a flow, through the
//! parameters a scenario or the control API gives (`FaultParams`), so the words, their
//! checks and the model's behaviour are tested together.

use std::time::Duration;

use imlab_carrier::fault::{self, FaultParams, Scope};
use imlab_carrier::{
    Blocked, CarrierProfile, Closed, Cut, FlowModel, Link, LinkFault, LinkWindow, PhoneSend,
    ServerSend, preset,
};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A quiet link: no loss, fixed 100 ms RTT, fast, 10-minute NAT.
fn profile() -> CarrierProfile {
    let mut profile = preset("us-lte").unwrap();
    profile.loss = 0.0;
    profile.rtt_median = ms(100);
    profile.rtt_p99 = ms(100);
    profile.bandwidth_kbps = 100_000;
    profile
}

/// The windows of one fault `kind` with `params` (JSON, as the control API takes them) over
/// [start_ms, end_ms).
fn windows(kind: &str, params: &str, start_ms: u64, end_ms: u64) -> Blocked {
    let params: FaultParams = serde_json::from_str(params).unwrap();
    let fault = params.link_fault(kind).unwrap().unwrap();
    Blocked {
        link: vec![LinkWindow {
            start: ms(start_ms),
            end: ms(end_ms),
            fault,
        }],
        ..Blocked::default()
    }
}

fn link_of<'a>(profile: &'a CarrierProfile, blocked: &'a Blocked) -> Link<'a> {
    Link {
        profile,
        blocked,
        heal: Duration::MAX,
        handed_over: false,
    }
}

fn opened(seed: u64) -> FlowModel {
    let mut model = FlowModel::new(seed, Duration::from_secs(600), true);
    model.opened(Duration::ZERO);
    model
}

fn delivered_at(send: PhoneSend) -> Duration {
    match send {
        PhoneSend::Deliver { at, .. } => at,
        other => panic!("not delivered: {other:?}"),
    }
}

fn server_delivered_at(send: ServerSend) -> Duration {
    match send {
        ServerSend::Deliver { at, .. } => at,
        other => panic!("not delivered: {other:?}"),
    }
}

#[test]
fn a_latency_spike_delays_its_direction_only_inside_the_window() {
    let profile = profile();
    let blocked = windows(
        "latency_spike",
        r#"{"added": "2s", "jitter": "500ms", "direction": "down"}"#,
        10_000,
        20_000,
    );
    let link = link_of(&profile, &blocked);
    let mut model = opened(1);
    // Up is untouched; down takes the RTT's half plus 2 to 2.5 s.
    let up = delivered_at(model.phone_sent(&link, ms(12_000), 100)) - ms(12_000);
    assert!(up < ms(100), "{up:?}");
    let down = server_delivered_at(model.server_sent(&link, ms(13_000), 100)) - ms(13_000);
    assert!(down >= ms(2_000) && down <= ms(2_600), "{down:?}");
    // After the window, back to normal.
    let after = server_delivered_at(model.server_sent(&link, ms(30_000), 100)) - ms(30_000);
    assert!(after < ms(100), "{after:?}");
}

#[test]
fn a_bandwidth_fault_replaces_the_links_rate() {
    let profile = profile();
    let blocked = windows("bandwidth", r#"{"kbps": 8}"#, 0, 60_000);
    let link = link_of(&profile, &blocked);
    let mut model = opened(2);
    // 8 kbps = 1,000 bytes/s: 5,000 bytes take 5 s to serialize.
    let at = delivered_at(model.phone_sent(&link, ms(1_000), 5_000));
    assert!(at >= ms(6_000) && at < ms(6_200), "{at:?}");
    let blocked = Blocked::default();
    let link = link_of(&profile, &blocked);
    let mut model = opened(2);
    let at = delivered_at(model.phone_sent(&link, ms(1_000), 5_000));
    assert!(at < ms(1_200), "{at:?}");
}

#[test]
fn a_loss_burst_loses_in_runs_not_independently() {
    let profile = profile();
    // Enter bad 5% of transmissions, leave 20%: bursts of 5 on average, loss 1 in bad.
    let blocked = windows(
        "loss_burst",
        r#"{"p_enter_bad": 0.05, "p_leave_bad": 0.2}"#,
        0,
        u64::MAX / 2,
    );
    let link = link_of(&profile, &blocked);
    let mut model = opened(3);
    let mut retransmissions = Vec::new();
    for i in 0..4_000u64 {
        match model.phone_sent(&link, ms(i * 100_000), 100) {
            PhoneSend::Deliver {
                retransmissions: r, ..
            } => retransmissions.push(r),
            PhoneSend::Broken => retransmissions.push(99),
            other => panic!("{other:?}"),
        }
    }
    // The chain moves per transmission: after a delivered one it is good, so a send's first
    // attempt is lost when it enters the bad state (5%); once lost, the retry is lost with
    // probability 1 - p_leave_bad = 80% (independent loss: the loss rate, 5%).
    let lost_once = retransmissions.iter().filter(|r| **r >= 1).count() as f64 / 4_000.0;
    let lost_twice = retransmissions.iter().filter(|r| **r >= 2).count() as f64 / 4_000.0;
    assert!(
        (0.035..0.065).contains(&lost_once),
        "first attempt lost {lost_once}"
    );
    let lost_again = lost_twice / lost_once;
    assert!(
        (0.7..0.9).contains(&lost_again),
        "a lost attempt's retry was lost {lost_again} of the time, not in bursts"
    );
    // Outside its window the model draws nothing for it: the flow is clean.
    let clean = Blocked::default();
    let link = link_of(&profile, &clean);
    let mut model = opened(3);
    for i in 0..1_000u64 {
        assert!(matches!(
            model.phone_sent(&link, ms(i * 1_000), 100),
            PhoneSend::Deliver {
                retransmissions: 0,
                ..
            }
        ));
    }
}

#[test]
fn a_reset_cuts_flows_open_at_its_instant_and_not_later_ones() {
    let profile = profile();
    let blocked = windows("reset", "{}", 5_000, 5_000);
    let link = link_of(&profile, &blocked);
    let mut model = opened(4);
    assert_eq!(model.next_timer(&link), Some(ms(5_000)));
    assert_eq!(model.cut(&link, ms(4_999)), None);
    assert_eq!(model.cut(&link, ms(5_000)), Some(Cut::Reset));
    // Once.
    assert_eq!(model.cut(&link, ms(6_000)), None);
    // A flow opened after the instant is not cut.
    let mut later = FlowModel::new(4, Duration::from_secs(600), true);
    later.opened(ms(5_500));
    assert_eq!(later.cut(&link, ms(9_000)), None);
    assert_eq!(later.next_timer(&link), Some(ms(5_500) + ms(600_001)));
}

#[test]
fn a_blackhole_accepts_then_swallows_both_ways_for_good() {
    let profile = profile();
    let blocked = windows("blackhole", "{}", 10_000, 20_000);
    let link = link_of(&profile, &blocked);
    let mut model = opened(5);
    assert!(matches!(
        model.phone_sent(&link, ms(9_000), 10),
        PhoneSend::Deliver { .. }
    ));
    // A connection attempt in the window is accepted.
    let mut fresh = FlowModel::new(5, Duration::from_secs(600), true);
    assert!(fresh.connect(&link, ms(11_000)).is_some());
    assert_eq!(model.phone_sent(&link, ms(12_000), 10), PhoneSend::Dropped);
    assert_eq!(model.server_sent(&link, ms(12_000), 10), ServerSend::Lost);
    // Swallowed for good: after the window nothing passes, and FINs are unseen.
    assert_eq!(model.phone_sent(&link, ms(30_000), 10), PhoneSend::Dropped);
    assert_eq!(model.server_sent(&link, ms(30_000), 10), ServerSend::Lost);
    assert!(model.swallowed());
    assert_eq!(model.phone_closed(&link, ms(31_000)), Closed::Unseen);
    // The server's kernel gives up on it eventually.
    assert!(model.server_gives_up(ms(12_000) + profile.server_give_up));
}

#[test]
fn a_slow_close_delays_fins_in_its_window() {
    let profile = profile();
    let blocked = windows("slow_close", r#"{"delay": "30s"}"#, 0, 60_000);
    let link = link_of(&profile, &blocked);
    let mut model = opened(6);
    match model.phone_closed(&link, ms(1_000)) {
        Closed::Forward { at } => assert!(at >= ms(31_000) && at < ms(31_200), "{at:?}"),
        other => panic!("{other:?}"),
    }
    let mut model = opened(6);
    match model.server_closed(&link, ms(70_000)) {
        Closed::Forward { at } => assert!(at < ms(70_200), "{at:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_after_bytes_closes_the_flow_when_its_budget_is_spent() {
    let profile = profile();
    let blocked = windows(
        "close_after_bytes",
        r#"{"bytes": 1000, "direction": "down"}"#,
        0,
        60_000,
    );
    let link = link_of(&profile, &blocked);
    let mut model = opened(7);
    // Up does not count.
    for i in 0..5 {
        assert!(matches!(
            model.phone_sent(&link, ms(100 + i), 900),
            PhoneSend::Deliver { .. }
        ));
    }
    assert!(matches!(
        model.server_sent(&link, ms(200), 600),
        ServerSend::Deliver { .. }
    ));
    assert_eq!(model.cut(&link, ms(200)), None);
    // 600 + 600 > 1000: the chunk is not delivered and the flow is closed both ways.
    assert_eq!(model.server_sent(&link, ms(300), 600), ServerSend::Lost);
    // Due at once.
    assert!(model.next_timer(&link).is_some_and(|at| at <= ms(300)));
    assert_eq!(model.cut(&link, ms(300)), Some(Cut::Close));
}

#[test]
fn a_nat_rebind_resets_the_phone_and_leaves_the_server_half_open() {
    let profile = profile();
    let blocked = windows("nat_rebind", "{}", 5_000, 5_000);
    let link = link_of(&profile, &blocked);
    let mut model = opened(8);
    assert_eq!(model.cut(&link, ms(5_000)), None);
    assert!(model.rebound());
    // The server's writes go to the old port; its kernel retries until it gives up.
    assert_eq!(model.server_sent(&link, ms(6_000), 10), ServerSend::Lost);
    // The phone's next packet arrives from a new port: the server's kernel answers RST.
    assert_eq!(model.phone_sent(&link, ms(7_000), 10), PhoneSend::Reset);
    assert!(!model.server_gives_up(ms(6_000) + profile.server_give_up - ms(1)));
    assert!(model.server_gives_up(ms(6_000) + profile.server_give_up));
}

#[test]
fn max_age_cuts_flows_older_than_the_limit_while_its_window_is_open() {
    let profile = profile();
    let blocked = windows("max_age", r#"{"age": "10m"}"#, 60_000, 3_600_000);
    let link = link_of(&profile, &blocked);
    // Opened at 0: 10 minutes old at 600 s.
    let mut old = opened(9);
    assert_eq!(old.next_timer(&link), Some(ms(600_000)));
    assert_eq!(old.cut(&link, ms(599_999)), None);
    assert_eq!(old.cut(&link, ms(600_000)), Some(Cut::Reset));
    // Opened at 55 min: would be 10 minutes old after the window closed.
    let mut young = FlowModel::new(9, Duration::from_secs(3_600), true);
    young.opened(ms(3_300_000));
    assert_eq!(young.cut(&link, ms(3_900_000)), None);
}

#[test]
fn parameters_are_checked_and_name_the_key() {
    let check = |kind: &str, params: &str, key: &str| {
        let params: FaultParams = serde_json::from_str(params).unwrap();
        let error = params.link_fault(kind).unwrap_err();
        assert_eq!(error.key, key, "{kind} {error}");
    };
    check("latency_spike", "{}", "added");
    check("bandwidth", r#"{"kbps": 0}"#, "kbps");
    check(
        "loss_burst",
        r#"{"p_enter_bad": 1.5, "p_leave_bad": 0.1}"#,
        "p_enter_bad",
    );
    check(
        "loss_burst",
        r#"{"p_enter_bad": 0.1, "p_leave_bad": 0}"#,
        "p_leave_bad",
    );
    check("reset", r#"{"kbps": 10}"#, "kbps");
    check("max_age", "{}", "age");
    check("close_after_bytes", r#"{"bytes": 0}"#, "bytes");
    let unknown = serde_json::from_str::<FaultParams>(r#"{"bandwith": 3}"#).unwrap_err();
    assert!(unknown.to_string().contains("bandwith"), "{unknown}");
    // Every kind has a scope; carrier kinds but the three the drivers handle are LinkFaults.
    for (name, scope, _) in fault::KINDS {
        let link = FaultParams::default().link_fault(name);
        match (scope, *name) {
            (Scope::Carrier, "outage" | "partition" | "handover") => {
                assert_eq!(link, Ok(None))
            }
            (Scope::Carrier, _) => assert!(!matches!(link, Ok(None)), "{name} is not a LinkFault"),
            _ => assert_eq!(link, Ok(None)),
        }
    }
    assert_eq!(LinkFault::Reset.name(), "reset");
}

#[test]
fn a_clock_jump_takes_a_signed_duration_named_by() {
    let jump = |params: &str| {
        serde_json::from_str::<FaultParams>(params)
            .unwrap()
            .clock_jump_ms()
    };
    assert_eq!(jump(r#"{"by": "-2h"}"#), Ok(-7_200_000));
    assert_eq!(jump(r#"{"by": "+1h 30m"}"#), Ok(5_400_000));
    assert_eq!(jump(r#"{"by": "+500ms"}"#), Ok(500));
    for (params, key, message) in [
        (r#"{"by": "2h"}"#, "by", "needs a sign"),
        (r#"{"by": "-"}"#, "by", "not a signed duration"),
        (r#"{"by": "-0s"}"#, "by", "must not be zero"),
        (r#"{"by": "+4000d"}"#, "by", "more than ten years"),
        ("{}", "by", "is required for clock_jump"),
        (
            r#"{"by": "-2h", "kbps": 3}"#,
            "kbps",
            "a clock_jump fault does not take it",
        ),
    ] {
        let error = jump(params).unwrap_err();
        assert_eq!(error.key, key, "{params}: {error}");
        assert!(error.message.contains(message), "{params}: {error}");
    }
    assert_eq!(fault::scope_of("clock_jump"), Some(Scope::Device));
    assert!(fault::is_instant("clock_jump"));
}
