//! The heartbeat comparison's must-show findings, on small runs (3 devices per cell, the
//! default 12-hour template, seed 1).

use imlab_core::heartbeat::STRATEGY_NAMES;
use imlab_reports::heartbeat::HeartbeatRow;
use imlab_sim::compare::{CompareOptions, adaptive_findings, compare, dominates};

fn matrix(strategies: &[&str], profiles: &[&str]) -> Vec<HeartbeatRow> {
    let options = CompareOptions {
        strategies: strategies.iter().map(|s| s.to_string()).collect(),
        profiles: profiles.iter().map(|s| s.to_string()).collect(),
        devices: Some(3),
        jobs: 2,
        ..CompareOptions::defaults()
    };
    let comparison = compare(&options, &|_| {}).unwrap();
    for run in &comparison.runs {
        assert!(
            run.report.ok(),
            "{} on {}: {:?}",
            run.strategy,
            run.profile,
            run.report.verdicts
        );
    }
    comparison.rows
}

fn row<'a>(rows: &'a [HeartbeatRow], strategy: &str, profile: &str) -> &'a HeartbeatRow {
    rows.iter()
        .find(|r| r.strategy == strategy && r.profile == profile)
        .unwrap_or_else(|| panic!("no row {strategy} on {profile}"))
}

/// The named presets: every named strategy but ours.
fn presets() -> Vec<&'static str> {
    STRATEGY_NAMES
        .iter()
        .copied()
        .filter(|s| *s != "imlab-adaptive")
        .collect()
}

#[test]
fn five_minute_and_long_nats_tell_the_strategies_apart() {
    let rows = matrix(STRATEGY_NAMES, &["cmcc-3g", "ct-3g"]);

    // cmcc-3g, 5-minute NAT.
    let wechat = row(&rows, "wechat", "cmcc-3g");
    assert!(
        wechat.settled_interval_s > 210.0 && wechat.settled_interval_s < 300.0,
        "wechat settles between its minimum and the NAT: {wechat:?}"
    );
    let gcm = row(&rows, "gcm", "cmcc-3g");
    let gcm_cycles_per_day = 86_400.0 / (28.0 * 60.0);
    assert!(
        gcm.silent_disconnects_per_day >= 0.8 * gcm_cycles_per_day,
        "gcm dies silently on nearly every 28-minute cycle: {gcm:?}"
    );
    assert!(
        gcm.delay_ms_p50 > 60_000,
        "gcm's delays are minutes, like its interval: {gcm:?}"
    );
    let whatsapp = row(&rows, "whatsapp", "cmcc-3g");
    assert_eq!(whatsapp.silent_disconnects_per_day, 0.0, "{whatsapp:?}");

    // ct-3g, NAT beyond 28 minutes.
    let wechat = row(&rows, "wechat", "ct-3g");
    assert_eq!(
        wechat.settled_interval_s, 580.0,
        "wechat climbs to MaxHeart - margin: {wechat:?}"
    );
    // Ours goes past WeChat's cap on a long NAT: to its own 28-minute cap in the background,
    // which is most of the time (its active minutes stay at 210 s).
    let ours = row(&rows, "imlab-adaptive", "ct-3g");
    assert_eq!(
        ours.settled_interval_s, 1680.0,
        "imlab-adaptive climbs to its cap: {ours:?}"
    );
    let gcm = row(&rows, "gcm", "ct-3g");
    assert_eq!(gcm.silent_disconnects_per_day, 0.0, "{gcm:?}");
    for preset in presets().iter().filter(|p| **p != "gcm") {
        let other = row(&rows, preset, "ct-3g");
        assert!(
            gcm.energy_j_per_day < other.energy_j_per_day,
            "gcm uses the least energy of the presets on ct-3g: gcm {} J/day, {preset} {} J/day",
            gcm.energy_j_per_day,
            other.energy_j_per_day
        );
    }
}

/// A cell's numbers are its own: the same strategy on the same profile measures the same
/// alone and beside others (a shared world let other strategies' senders, stuck behind dead
/// connections, lengthen its delays, and shifted every device's place in it).
#[test]
fn a_cell_measures_the_same_whatever_else_the_matrix_holds() {
    let cells = |strategies: &[&str]| {
        let options = CompareOptions {
            strategies: strategies.iter().map(|s| s.to_string()).collect(),
            profiles: vec!["cmcc-3g".into()],
            devices: Some(4),
            duration: Some(std::time::Duration::from_secs(6 * 3_600)),
            jobs: 2,
            ..CompareOptions::defaults()
        };
        compare(&options, &|_| {}).unwrap()
    };
    let alone = cells(&["imlab-adaptive"]);
    let among = cells(&["gcm", "imlab-adaptive", "tcp-keepalive"]);
    let ours = row(&among.rows, "imlab-adaptive", "cmcc-3g");
    assert_eq!(format!("{:?}", alone.rows[0]), format!("{ours:?}"));
    assert_eq!(
        alone.runs[0].report.trace_hash, among.runs[1].report.trace_hash,
        "the same simulation"
    );
    assert_eq!(among.runs[1].strategy, "imlab-adaptive");
}

#[test]
fn imlab_adaptive_is_not_dominated_by_wechat_on_any_shipped_profile() {
    let profiles: Vec<&str> = imlab_sim::carrier::PRESET_NAMES.to_vec();
    let rows = matrix(&["wechat", "imlab-adaptive"], &profiles);
    for profile in &profiles {
        let ours = row(&rows, "imlab-adaptive", profile);
        let wechat = row(&rows, "wechat", profile);
        assert!(
            !dominates(wechat, ours),
            "{profile}: wechat {wechat:?} dominates {ours:?}"
        );
    }
    let findings = adaptive_findings(&rows);
    assert!(findings[0].contains("not dominated"), "{findings:?}");

    // The finding flips when it should: a row that is worse on both counts is reported.
    let mut worse = row(&rows, "imlab-adaptive", "cmcc-3g").clone();
    let wechat = row(&rows, "wechat", "cmcc-3g");
    worse.energy_j_per_day = wechat.energy_j_per_day + 1.0;
    worse.delay_ms_p99 = wechat.delay_ms_p99 + 1;
    let findings = adaptive_findings(&[wechat.clone(), worse.clone()]);
    assert!(
        findings[0].contains("wechat dominates imlab-adaptive"),
        "{findings:?}"
    );

    // Without both strategies on a profile there is no finding at all, either way.
    assert_eq!(
        adaptive_findings(std::slice::from_ref(wechat)),
        Vec::<String>::new()
    );
    assert_eq!(adaptive_findings(&[worse]), Vec::<String>::new());
    let mut other_profile = wechat.clone();
    other_profile.profile = "ct-3g".into();
    let ours_elsewhere = row(&rows, "imlab-adaptive", "cmcc-3g").clone();
    assert_eq!(
        adaptive_findings(&[other_profile, ours_elsewhere]),
        Vec::<String>::new(),
        "wechat on one profile and ours on another compare nothing"
    );
}

/// Every device's Pings sent, and the intervals the ledger kept for them, after a run of
/// `cmcc-3g-nat` cut to 20 minutes (seed 3), with and without the series.
fn pings_and_kept(heartbeat_series: bool) -> (String, Vec<(u64, usize)>) {
    use imlab_sim::run::{RunOptions, run_with};
    use imlab_sim::scenario::Scenario;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/cmcc-3g-nat.toml");
    let scenario = Scenario::load(std::path::Path::new(file)).unwrap().shrunk(
        std::time::Duration::from_secs(20 * 60),
        std::time::Duration::from_secs(60),
        1,
    );
    let options = RunOptions {
        seed: 3,
        heartbeat_series,
        ..RunOptions::default()
    };
    let mut counted = Vec::new();
    let report = run_with(&scenario, &options, &mut |_| {}, &mut |shared| {
        let ledger = shared.ledger.lock().unwrap();
        counted = ledger
            .devices
            .iter()
            .map(|device| (device.heartbeats_sent, device.heartbeat_intervals.len()))
            .collect();
    })
    .unwrap();
    assert!(report.ok(), "{:?}", report.verdicts);
    (report.trace_hash, counted)
}

#[test]
fn the_ledger_keeps_each_ping_only_for_a_comparison_and_keeping_them_moves_nothing() {
    let (hash_with, with) = pings_and_kept(true);
    let (hash_without, without) = pings_and_kept(false);
    assert_eq!(hash_with, hash_without, "keeping the series moved an event");
    assert!(with.iter().map(|(sent, _)| sent).sum::<u64>() > 0);
    assert_eq!(with.len(), without.len(), "the same devices");
    for ((sent, kept), (sent_without, kept_without)) in with.iter().zip(&without) {
        assert_eq!(
            *kept as u64, *sent,
            "a Ping sent and not kept in the series"
        );
        assert_eq!(
            sent_without, sent,
            "the same Pings with and without the series"
        );
        assert_eq!(*kept_without, 0, "a Ping kept without the series");
    }
}
