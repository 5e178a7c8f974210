//! Determinism: for every shipped scenario, the same seed gives the same trace hash and
//! another seed a different one. Long scenarios are cut to test size (their first 20
//! simulated minutes, groups shrunk to at most a few dozen devices); the full-length runs
//! are in `imlab sim sweep`.

use std::path::PathBuf;
use std::time::Duration;

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
    files.sort();
    files
}

fn hash(scenario: &Scenario, seed: u64) -> String {
    let report = run(
        scenario,
        &RunOptions {
            seed,
            ..RunOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(
        report.ok(),
        "{} seed {seed}: {:?}",
        scenario.name,
        report
            .verdicts
            .iter()
            .filter(|v| !v.ok())
            .collect::<Vec<_>>()
    );
    report.trace_hash
}

#[test]
fn every_shipped_scenario_replays_exactly_from_its_seed() {
    let files = shipped();
    assert!(files.len() >= 9, "scenarios: {files:?}");
    // The scenarios are independent: spread them over the cores (each run is one thread).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    replays_exactly(file);
                }
            });
        }
    });
}

fn replays_exactly(file: &std::path::Path) {
    let full = Scenario::load(file).unwrap();
    let divisor = (full.n_devices() / 40).max(1);
    let scenario = full.shrunk(
        Duration::from_secs(20 * 60),
        Duration::from_secs(120),
        divisor,
    );
    let first = hash(&scenario, 11);
    assert_eq!(
        first,
        hash(&scenario, 11),
        "{}: same seed, different trace",
        file.display()
    );
    assert_ne!(
        first,
        hash(&scenario, 12),
        "{}: different seeds, same trace",
        file.display()
    );
}

/// Steps in which nothing would happen run as one (`turmoil::Sim::idle_steps`), stopping
/// before every host's next timer, every scheduled fault and the end. What a run measures is
/// the same as when every step runs: the messages, deliveries, delays, reconnections, storms
/// and the server's counters of `server-crash`'s first hour (two crashes, an app kill, a push
/// outage) and of `offline-push`'s first 40 minutes (apps in the background, sleeping). (The
/// trace may order events of one instant differently: the runtimes' fairness counters advance
/// once for the steps run as one.)
#[test]
fn skipping_idle_steps_measures_what_running_every_step_does() {
    for (name, minutes) in [("server-crash", 60), ("offline-push", 40)] {
        let file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))
            .join(format!("{name}.toml"));
        let scenario = Scenario::load(&file).unwrap().shrunk(
            Duration::from_secs(minutes * 60),
            Duration::from_secs(120),
            1,
        );
        let measure = |every_step: bool| {
            let report = run(
                &scenario,
                &RunOptions {
                    seed: 2,
                    every_step,
                    ..RunOptions::default()
                },
                &mut |_| {},
            )
            .unwrap();
            assert!(report.ok(), "{name}: {:?}", report.verdicts);
            let mut metrics = report.metrics;
            metrics.wall_s = 0.0;
            (report.trace_events, format!("{metrics:?}"))
        };
        let (every_events, every) = measure(true);
        let (skipping_events, skipping) = measure(false);
        assert_eq!(skipping_events, every_events, "{name}: trace events");
        assert_eq!(skipping, every, "{name}");
    }
}
