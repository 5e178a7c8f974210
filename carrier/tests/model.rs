//! The carrier model on its own: the same profile, seed and traffic give the same decisions;
//! its delays and losses match the profile it was given; NAT expiry does what the profile says.

use std::time::Duration;

use imlab_carrier::{
    Blocked, CarrierProfile, Closed, FlowModel, Link, OnExpiry, PhoneSend, ServerSend, flow_seed,
    preset,
};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn link<'a>(profile: &'a CarrierProfile, blocked: &'a Blocked) -> Link<'a> {
    Link {
        profile,
        blocked,
        heal: Duration::MAX,
        handed_over: false,
    }
}

/// One step of a traffic script: at `t_ms`, `bytes` from the phone (`up`) or the server.
#[derive(Clone, Copy)]
struct Step {
    t_ms: u64,
    up: bool,
    bytes: usize,
}

/// A script with bursts, pauses longer than the NAT timeout, and both directions.
fn script() -> Vec<Step> {
    let mut steps = Vec::new();
    let mut t_ms = 0;
    for i in 0..400u64 {
        t_ms += if i % 97 == 0 {
            400_000
        } else {
            50 + (i * 37) % 3_000
        };
        steps.push(Step {
            t_ms,
            up: i % 3 != 0,
            bytes: 20 + (i as usize * 131) % 3_000,
        });
    }
    steps
}

/// Every decision the model makes for `script`, as text.
fn decisions(profile: &CarrierProfile, seed: u64, script: &[Step]) -> Vec<String> {
    let blocked = Blocked {
        outages: vec![(ms(30_000), ms(45_000))],
        partitions: vec![(ms(100_000), ms(101_000))],
        link: Vec::new(),
    };
    let link = link(profile, &blocked);
    let mut model = FlowModel::with_drawn_nat_timeout(seed, profile);
    let mut out = vec![format!("nat {:?}", model.nat_timeout())];
    out.push(format!("syn {:?}", model.connect(&link, Duration::ZERO)));
    model.opened(Duration::ZERO);
    for step in script {
        let at = ms(step.t_ms);
        let expired = model.expire_nat(at);
        let decision = if step.up {
            format!("{:?}", model.phone_sent(&link, at, step.bytes))
        } else {
            format!("{:?}", model.server_sent(&link, at, step.bytes))
        };
        out.push(format!("{at:?} {expired} {decision}"));
        if decision == "Reset" {
            // The phone reconnects: a new flow, as a driver would open it.
            model = FlowModel::with_drawn_nat_timeout(seed ^ step.t_ms, profile);
            model.opened(at);
        }
    }
    out
}

#[test]
fn same_profile_seed_and_traffic_give_the_same_decisions() {
    let script = script();
    for name in ["cmcc-3g", "cu-2g", "home-wifi", "subway"] {
        let profile = preset(name).unwrap();
        let seed = flow_seed(7, &[1]);
        let first = decisions(&profile, seed, &script);
        let second = decisions(&profile, seed, &script);
        assert_eq!(first, second, "{name}: same seed, different decisions");
        // Not vacuous: another flow's seed draws other delays.
        let other = decisions(&profile, flow_seed(7, &[2]), &script);
        assert_ne!(first, other, "{name}: the seed changed nothing");
    }
    // Seeds depend on the run seed and every part of the identity.
    assert_ne!(flow_seed(7, &[1]), flow_seed(8, &[1]));
    assert_ne!(flow_seed(7, &[1, 2]), flow_seed(7, &[2, 1]));
}

/// Value at quantile `q` of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn within_10_percent(what: &str, measured: f64, expected: f64) {
    let error = (measured - expected).abs() / expected;
    assert!(
        error <= 0.10,
        "{what}: measured {measured:.4}, profile {expected:.4} ({:.1}% off)",
        error * 100.0
    );
}

#[test]
fn delays_and_losses_match_the_profile() {
    let profile = preset("cmcc-3g").unwrap();
    let blocked = Blocked::default();
    let link = link(&profile, &blocked);
    let bytes = 100;
    let serialization =
        Duration::from_secs_f64(bytes as f64 / (f64::from(profile.bandwidth_kbps) * 125.0));
    let mut rtt_s = Vec::new();
    let (mut attempts, mut lost) = (0u64, 0u64);
    for flow in 0..200u64 {
        let mut model = FlowModel::with_drawn_nat_timeout(flow_seed(42, &[flow]), &profile);
        model.opened(Duration::ZERO);
        for i in 1..=1_000u64 {
            // 10 s apart: the mapping stays fresh and no chunk waits behind another.
            let at = Duration::from_secs(10 * i);
            match model.phone_sent(&link, at, bytes) {
                PhoneSend::Deliver {
                    at: arrival,
                    retransmissions,
                } => {
                    attempts += u64::from(retransmissions) + 1;
                    lost += u64::from(retransmissions);
                    if retransmissions == 0 {
                        // Each direction carries half a round trip.
                        rtt_s.push(2.0 * (arrival - at - serialization).as_secs_f64());
                    }
                }
                other => panic!("flow {flow} chunk {i}: {other:?}"),
            }
        }
    }
    rtt_s.sort_by(f64::total_cmp);
    within_10_percent(
        "RTT median (s)",
        quantile(&rtt_s, 0.5),
        profile.rtt_median.as_secs_f64(),
    );
    within_10_percent(
        "RTT p99 (s)",
        quantile(&rtt_s, 0.99),
        profile.rtt_p99.as_secs_f64(),
    );
    within_10_percent("loss rate", lost as f64 / attempts as f64, profile.loss);
}

#[test]
fn an_idle_mapping_expires_and_the_phone_gets_what_the_profile_says() {
    for (on_expiry, expected) in [
        (OnExpiry::Rst, PhoneSend::Reset),
        (OnExpiry::Drop, PhoneSend::Dropped),
    ] {
        let mut profile = preset("us-lte").unwrap();
        profile.on_expiry = on_expiry;
        profile.nat_timeout_min = ms(2_000);
        profile.nat_timeout_max = ms(2_000);
        profile.loss = 0.0;
        let blocked = Blocked::default();
        let link = link(&profile, &blocked);
        let mut model = FlowModel::with_drawn_nat_timeout(1, &profile);
        model.opened(Duration::ZERO);
        // Traffic within the timeout keeps the mapping.
        assert!(matches!(
            model.phone_sent(&link, ms(1_500), 10),
            PhoneSend::Deliver { .. }
        ));
        assert!(matches!(
            model.server_sent(&link, ms(3_000), 10),
            ServerSend::Deliver { .. }
        ));
        assert_eq!(model.next_timer(&link), Some(ms(5_001)));
        // Past it, expiry is reported once, the server's writes are lost, the phone's get
        // what the profile says.
        assert!(model.expire_nat(ms(5_001)));
        assert!(!model.expire_nat(ms(5_002)));
        assert_eq!(model.server_sent(&link, ms(6_000), 10), ServerSend::Lost);
        assert_eq!(
            model.phone_sent(&link, ms(7_000), 10),
            expected,
            "{on_expiry:?}"
        );
        // The server's side stays half-open until its kernel gives up.
        assert!(!model.server_gives_up(ms(6_000) + profile.server_give_up - ms(1)));
        assert!(model.server_gives_up(ms(6_000) + profile.server_give_up));
        // The phone's FIN never reaches the server.
        assert_eq!(model.phone_closed(&link, ms(8_000)), Closed::Unseen);
    }
}

#[test]
fn outages_delay_and_partitions_cut_only_the_im_path() {
    let mut profile = preset("us-lte").unwrap();
    profile.loss = 0.0;
    profile.max_retries = 3;
    let blocked = Blocked {
        outages: vec![(ms(1_000), ms(1_500))],
        partitions: vec![(ms(10_000), ms(20_000))],
        link: Vec::new(),
    };
    let link = link(&profile, &blocked);
    let mut model = FlowModel::new(3, Duration::from_secs(600), true);
    model.opened(Duration::ZERO);
    // Sent during a 500 ms outage: retried after 200 ms and 400 ms, through at 1.6 s.
    match model.phone_sent(&link, ms(1_000), 10) {
        PhoneSend::Deliver {
            at,
            retransmissions,
        } => {
            assert_eq!(retransmissions, 2);
            assert!(at >= ms(1_600), "{at:?}");
        }
        other => panic!("{other:?}"),
    }
    // A 10 s partition outlasts 3 retries (0.2 + 0.4 + 0.8 s): the connection breaks.
    assert_eq!(model.phone_sent(&link, ms(10_000), 10), PhoneSend::Broken);
    // The push channel is not cut by a partition of the IM path.
    let mut push = FlowModel::new(3, Duration::from_secs(600), false);
    push.opened(Duration::ZERO);
    assert!(matches!(
        push.phone_sent(&link, ms(10_000), 10),
        PhoneSend::Deliver { .. }
    ));
}
