//! Many seeds of one scenario, on worker threads (each run is single-threaded and
//! deterministic on its own), the spread of their measures, and `sweep.csv`.

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
    /// Wall time of the run.
    pub wall: std::time::Duration,
    /// Send-to-app-log delay p99, ms (0 when the run failed).
    pub delay_ms_p99: u64,
    /// Silent disconnects (NAT expiries and the like) over all devices.
    pub silent_disconnects: u64,
    /// Reconnects over all devices.
    pub reconnects: u64,
}

impl SeedOutcome {
    /// `ok` or the broken invariants' names.
    pub fn verdict(&self) -> String {
        if self.failures.is_empty() {
            return "ok".into();
        }
        let names: Vec<&str> = self.failures.iter().map(|(n, _)| n.as_str()).collect();
        format!("FAILED ({})", names.join(", "))
    }
}

/// Smallest, median and largest of a measure across seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Smallest.
    pub min: u64,
    /// Median (the lower one of an even count).
    pub median: u64,
    /// Largest.
    pub max: u64,
}

impl Spread {
    /// The spread of `values` (all zero when empty).
    pub fn of(mut values: Vec<u64>) -> Spread {
        values.sort_unstable();
        if values.is_empty() {
            return Spread {
                min: 0,
                median: 0,
                max: 0,
            };
        }
        Spread {
            min: values[0],
            median: values[(values.len() - 1) / 2],
            max: values[values.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {}, median {}, max {}",
            self.min, self.median, self.max
        )
    }
}

/// Writes `sweep.csv` into `dir`: one row per seed (seed, verdict, trace hash, wall time,
/// delay p99, silent disconnects, reconnects, first failure).
pub fn write_csv(dir: &std::path::Path, outcomes: &[SeedOutcome]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from(
        "seed,verdict,trace_hash,wall_s,delay_ms_p99,silent_disconnects,reconnects,first_failure\n",
    );
    for o in outcomes {
        let first = o
            .failures
            .first()
            .map(|(name, detail)| format!("{name}: {detail}"))
            .unwrap_or_default();
        csv += &format!(
            "{},{},{},{:.3},{},{},{},\"{}\"\n",
            o.seed,
            if o.failures.is_empty() {
                "ok"
            } else {
                "failed"
            },
            o.trace_hash,
            o.wall.as_secs_f64(),
            o.delay_ms_p99,
            o.silent_disconnects,
            o.reconnects,
            first.replace('"', "\"\"")
        );
    }
    std::fs::write(dir.join("sweep.csv"), csv)
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
                    let started = std::time::Instant::now();
                    let outcome = match run(scenario, &options, &mut |_, _| {}) {
                        Ok(report) => SeedOutcome {
                            wall: started.elapsed(),
                            delay_ms_p99: report.metrics.all.delay_ms_p99,
                            silent_disconnects: report.metrics.all.silent_disconnects,
                            reconnects: report.metrics.all.reconnects,
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
                            wall: started.elapsed(),
                            delay_ms_p99: 0,
                            silent_disconnects: 0,
                            reconnects: 0,
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
