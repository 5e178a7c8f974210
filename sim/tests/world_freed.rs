//! A finished run lets its whole world go: the ledger, the store, the server and everything
//! the hosts held. `imlab sim fuzz`, `sim sweep` and the heartbeat comparison run thousands of
//! simulations in one process; a world kept alive by a reference cycle made such a process
//! grow by each run's world (a 20-minute fuzz run of 11,687 cases reached 7.5 GB).

use std::sync::{Arc, Weak};
use std::time::Duration;

use imlab_sim::run::{RunOptions, run_with};
use imlab_sim::scenario::Scenario;

/// Runs `scenario` and returns a weak reference to something only its world holds (the
/// count of failed commits, shared by the world and its simulated disk).
fn run_and_watch(scenario: &Scenario) -> Weak<std::sync::atomic::AtomicU64> {
    let mut watched = None;
    let report = run_with(
        scenario,
        &RunOptions {
            seed: 5,
            ..RunOptions::default()
        },
        &mut |_| {},
        &mut |shared| watched = Some(Arc::downgrade(&shared.failed_commits)),
    )
    .unwrap();
    assert!(report.ok(), "{}: {:?}", scenario.name, report.verdicts);
    watched.expect("the world was inspected")
}

/// Four shipped scenarios that between them have the push service, server crashes, both
/// stores and groups, cut to ten minutes and a few dozen devices.
#[test]
fn a_finished_run_frees_its_world() {
    for name in [
        "offline-push",
        "server-crash",
        "volatile-crash-storm",
        "us-lte-groups",
    ] {
        let file = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let full = Scenario::load(std::path::Path::new(&file)).unwrap();
        let divisor = (full.n_devices() / 20).max(1);
        let scenario = full.shrunk(
            Duration::from_secs(10 * 60),
            Duration::from_secs(60),
            divisor,
        );
        let watched = run_and_watch(&scenario);
        assert!(
            watched.upgrade().is_none(),
            "{name}: the run returned and its world is still alive ({} references)",
            watched.strong_count()
        );
    }
}
