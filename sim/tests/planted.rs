//! Every planted bug is caught by the invariant it breaks within a handful of seeds, and the
//! same scenario and seeds are clean without it. The scenario is a small storm: lossy 5-minute
//! NATs, subway blackouts, server crashes every 10 minutes over a slow durable store, app kills,
//! busy chats.

use std::path::Path;

use imlab_sim::Planted;
use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

const STORM: &str = r#"
duration = "40m"
quiet = "5m"

[server]
store = "durable"
# A slow networked disk: commits take a second, so each crash finds writes not yet durable.
commit_latency = "1s"

[carriers.cmcc]
preset = "cmcc-3g"
loss = 0.03

[carriers.metro]
preset = "subway"

[[devices]]
name = "chatty"
count = 12
carrier = "cmcc"
heartbeat = "fixed:4m"
traffic = { one_to_one_per_hour = 60.0, group_per_hour = 30.0, group_size = 6 }

[[devices]]
name = "riders"
count = 12
carrier = "metro"
heartbeat = "fixed:2m"
devices_per_user = 2
traffic = { one_to_one_per_hour = 60.0, group_per_hour = 30.0, group_size = 6 }

[[faults]]
kind = "server_crash"
at = "7m"
every = "10m"
duration = "20s"

[[faults]]
kind = "app_kill"
target = "chatty"
at = "12m"
every = "15m"
duration = "1m"
fraction = 0.3
"#;

const SEEDS: std::ops::RangeInclusive<u64> = 1..=4;

fn storm() -> Scenario {
    Scenario::parse(STORM, Path::new("planted-storm.toml")).unwrap()
}

/// Runs the storm over the seeds with `planted`; returns the invariants broken per seed.
fn broken(planted: Planted) -> Vec<(u64, Vec<&'static str>)> {
    let scenario = storm();
    SEEDS
        .map(|seed| {
            let options = RunOptions {
                seed,
                planted,
                ..RunOptions::default()
            };
            let report = run(&scenario, &options, &mut |_, _| {}).unwrap();
            let names = report
                .verdicts
                .iter()
                .filter(|v| !v.ok())
                .map(|v| v.name)
                .collect();
            (seed, names)
        })
        .collect()
}

fn check(planted: Planted, invariant: &str) {
    let found = broken(planted);
    assert!(
        found.iter().any(|(_, names)| names.contains(&invariant)),
        "{planted:?} was not caught by {invariant} in seeds {SEEDS:?}: {found:?}"
    );
}

#[test]
fn the_storm_is_clean_without_planted_bugs() {
    for (seed, names) in broken(Planted::default()) {
        assert!(
            names.is_empty(),
            "seed {seed} broke {names:?} with no bug planted"
        );
    }
}

#[test]
fn ack_before_store_is_caught_by_no_acked_loss() {
    check(
        Planted {
            ack_before_store: true,
            ..Planted::default()
        },
        "no_acked_loss",
    );
}

#[test]
fn skipping_dedupe_is_caught_by_idempotent_send() {
    check(
        Planted {
            skip_dedupe: true,
            ..Planted::default()
        },
        "idempotent_send",
    );
}

#[test]
fn a_push_without_the_seq_check_is_caught_by_no_duplicates() {
    check(
        Planted {
            push_skips_seq_check: true,
            ..Planted::default()
        },
        "no_duplicates",
    );
}

#[test]
fn ack_before_commit_is_caught_by_no_acked_loss() {
    check(
        Planted {
            ack_before_commit: true,
            ..Planted::default()
        },
        "no_acked_loss",
    );
}

#[test]
fn a_volatile_store_across_a_crash_is_caught_by_no_acked_loss() {
    check(
        Planted {
            volatile_store: true,
            ..Planted::default()
        },
        "no_acked_loss",
    );
}
