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

/// Reads a `sweep.csv` back (a merge of shards): each seed's verdict, hash, wall time,
/// measures and first failure.
pub fn read_csv(file: &std::path::Path) -> Result<Vec<SeedOutcome>, String> {
    let mut reader = csv::Reader::from_path(file).map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| e.to_string())?;
        let field = |n: usize, name: &str| {
            record
                .get(n)
                .ok_or_else(|| format!("row {}: no {name} column", i + 2))
        };
        let number = |n: usize, name: &str| -> Result<u64, String> {
            let text = field(n, name)?;
            text.parse()
                .map_err(|_| format!("row {}: {name} {text:?} is not a number", i + 2))
        };
        let wall_s: f64 = field(3, "wall_s")?
            .parse()
            .map_err(|_| format!("row {}: wall_s is not a number", i + 2))?;
        let failures = match field(1, "verdict")? {
            "ok" => Vec::new(),
            "failed" => {
                let first = field(7, "first_failure")?;
                let (name, detail) = first.split_once(": ").unwrap_or((first, ""));
                vec![(name.to_string(), detail.to_string())]
            }
            other => {
                return Err(format!(
                    "row {}: verdict {other:?} is not ok or failed",
                    i + 2
                ));
            }
        };
        outcomes.push(SeedOutcome {
            seed: number(0, "seed")?,
            failures,
            trace_hash: field(2, "trace_hash")?.to_string(),
            wall: std::time::Duration::from_secs_f64(wall_s.max(0.0)),
            delay_ms_p99: number(4, "delay_ms_p99")?,
            silent_disconnects: number(5, "silent_disconnects")?,
            reconnects: number(6, "reconnects")?,
        });
    }
    Ok(outcomes)
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
    sweep_seeds(
        scenario,
        &(first..=last).collect::<Vec<_>>(),
        jobs,
        planted,
        on_done,
    )
}

/// Runs `seeds` on `jobs` threads (see [`sweep`]).
pub fn sweep_seeds(
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    planted: Planted,
    on_done: &(dyn Fn(&SeedOutcome) + Sync),
) -> Vec<SeedOutcome> {
    let next = AtomicU64::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(index) else {
                        break;
                    };
                    let options = RunOptions {
                        seed,
                        planted,
                        ..RunOptions::default()
                    };
                    let started = std::time::Instant::now();
                    let outcome = match run(scenario, &options, &mut |_| {}) {
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
