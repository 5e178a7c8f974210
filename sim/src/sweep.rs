//! Many seeds of one scenario, on worker threads (each run is single-threaded and
//! deterministic on its own).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Planted;
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;

/// The outcome of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Broken invariants with their first violation; an error of the run itself counts too.
    pub failures: Vec<(String, String)>,
    /// The trace hash (empty when the run failed).
    pub trace_hash: String,
}

/// Runs seeds `first..=last` on `jobs` threads with `planted` bugs; calls `on_done` as each
/// finishes (in completion order) and returns the outcomes sorted by seed.
pub fn sweep(
    scenario: &Scenario,
    first: u64,
    last: u64,
    jobs: usize,
    planted: Planted,
    on_done: &(dyn Fn(&SeedOutcome) + Sync),
) -> Vec<SeedOutcome> {
    let next = AtomicU64::new(first);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > last {
                        break;
                    }
                    let options = RunOptions {
                        seed,
                        planted,
                        ..RunOptions::default()
                    };
                    let outcome = match run(scenario, &options, &mut |_, _| {}) {
                        Ok(report) => SeedOutcome {
                            seed,
                            failures: report
                                .verdicts
                                .iter()
                                .filter_map(|v| {
                                    v.violation
                                        .clone()
                                        .map(|detail| (v.name.to_string(), detail))
                                })
                                .collect(),
                            trace_hash: report.trace_hash,
                        },
                        Err(error) => SeedOutcome {
                            seed,
                            failures: vec![("run".into(), error.to_string())],
                            trace_hash: String::new(),
                        },
                    };
                    on_done(&outcome);
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|o| o.seed);
    outcomes
}
