//! `imlab sim fuzz`: random scenarios over the whole space (carriers and their parameters,
//! store kind, device groups, multi-device users, app cycles, traffic, body sizes, every fault
//! kind of the vocabulary at random times), run until a budget of cases or wall time is
//! spent. A case that breaks an invariant, makes the simulator fail or panics (invariant
//! `panic`, with the panic's message) is shrunk to a smallest scenario that still fails the
//! same way on the same seed; a panic never takes the fuzz run down with it.
//!
//! Cases are numbered; case `i` of fuzz seed `s` is always the same scenario and run seed
//! ([`spec::case`]), so a failure replays from its file, and a fuzz run from its seed and case
//! count.
//!
//! Modules: [`spec`] (a case as data, generation, TOML), [`shrink`] (one-step
//! simplifications).

pub mod shrink;
pub mod spec;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Planted;
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;
use spec::Spec;

/// How a case failed: the first broken invariant's name (or `simulator_error`) and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The invariant (or `simulator_error`).
    pub invariant: String,
    /// Its first violation.
    pub detail: String,
}

/// Runs `spec` on `seed`; the invariants it breaks (empty when it passes).
pub fn run_case(spec: &Spec, seed: u64, planted: Planted) -> Vec<Failure> {
    let text = spec.to_toml(seed);
    let scenario = Scenario::parse(&text, Path::new("fuzz-case.toml")).unwrap_or_else(|error| {
        panic!("the fuzzer generated a scenario the loader refuses: {error}\n{text}")
    });
    let options = RunOptions {
        seed,
        planted,
        ..RunOptions::default()
    };
    match run(&scenario, &options, &mut |_| {}) {
        Ok(report) => report
            .verdicts
            .iter()
            .filter_map(|v| {
                v.violation.as_ref().map(|detail| Failure {
                    invariant: v.name.to_string(),
                    detail: detail.clone(),
                })
            })
            .collect(),
        Err(error) => vec![Failure {
            invariant: "simulator_error".into(),
            detail: error.to_string(),
        }],
    }
}

/// Runs one case (spec, run seed) to its failures: [`run_case`] with the run's planted bugs;
/// tests inject others.
pub type CaseRunner<'a> = &'a (dyn Fn(&Spec, u64) -> Vec<Failure> + Sync);

/// `runner` on one case; a panic is a failure of invariant `panic` with its message.
fn guarded(runner: CaseRunner<'_>, spec: &Spec, seed: u64) -> Vec<Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner(spec, seed))) {
        Ok(failures) => failures,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".into());
            vec![Failure {
                invariant: "panic".into(),
                detail,
            }]
        }
    }
}

/// What to fuzz.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// The fuzz seed.
    pub seed: u64,
    /// Stop starting cases after this much wall time.
    pub budget: Duration,
    /// The first case to run (cases before it are skipped: a replay of part of a run).
    pub first_case: u64,
    /// Stop after this many cases.
    pub cases_max: u64,
    /// Parallel runs.
    pub jobs: usize,
    /// Deliberate bugs (tests and demonstrations).
    pub planted: Planted,
    /// Shrinking stops after this many candidate runs.
    pub shrink_runs_max: usize,
}

/// A failing case, as found and as shrunk.
#[derive(Debug, Clone)]
pub struct Found {
    /// The case number.
    pub case: u64,
    /// The run seed.
    pub seed: u64,
    /// How it failed.
    pub failure: Failure,
    /// The case as generated.
    pub original: Spec,
    /// The smallest case found that fails the same way.
    pub shrunk: Spec,
    /// How the shrunk case fails (same invariant, its own detail).
    pub shrunk_failure: Failure,
    /// Candidate runs shrinking took.
    pub shrink_runs: usize,
    /// Wall time shrinking took.
    pub shrink_wall: Duration,
}

/// What a fuzz run did.
#[derive(Debug, Clone)]
pub struct FuzzReport {
    /// Cases run to the end.
    pub cases: u64,
    /// Wall time spent running cases (shrinking excluded).
    pub wall: Duration,
    /// The first failure found, shrunk.
    pub found: Option<Found>,
}

/// Runs cases until the budget, the case limit or the first failure; shrinks the failure.
/// `on_case` hears each finished case (number, size, failures).
pub fn fuzz(
    options: &FuzzOptions,
    on_case: &(dyn Fn(u64, &Spec, &[Failure]) + Sync),
) -> FuzzReport {
    let planted = options.planted;
    fuzz_with(
        options,
        &|spec: &Spec, seed| run_case(spec, seed, planted),
        on_case,
    )
}

/// [`fuzz`] with another case runner (`options.planted` is then the runner's business).
pub fn fuzz_with(
    options: &FuzzOptions,
    runner: CaseRunner<'_>,
    on_case: &(dyn Fn(u64, &Spec, &[Failure]) + Sync),
) -> FuzzReport {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first: Mutex<Option<(u64, Spec, u64, Failure)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) && started.elapsed() < options.budget {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= options.cases_max {
                        break;
                    }
                    let index = options.first_case + n;
                    let (spec, seed) = spec::case(options.seed, index);
                    let failures = guarded(runner, &spec, seed);
                    done.fetch_add(1, Ordering::Relaxed);
                    on_case(index, &spec, &failures);
                    if let Some(failure) = failures.into_iter().next() {
                        stop.store(true, Ordering::Relaxed);
                        let mut first = first.lock().unwrap_or_else(|p| p.into_inner());
                        // The lowest case number wins, whichever thread finished first.
                        if first.as_ref().is_none_or(|(i, ..)| index < *i) {
                            *first = Some((index, spec, seed, failure));
                        }
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    let found =
        first
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(case, spec, seed, failure)| {
                let shrink_started = Instant::now();
                let (shrunk, shrunk_failure, shrink_runs) = shrink_with(
                    runner,
                    &spec,
                    seed,
                    &failure,
                    options.jobs,
                    options.shrink_runs_max,
                );
                Found {
                    case,
                    seed,
                    failure,
                    original: spec,
                    shrunk,
                    shrunk_failure,
                    shrink_runs,
                    shrink_wall: shrink_started.elapsed(),
                }
            });
    FuzzReport {
        cases: done.load(Ordering::Relaxed),
        wall,
        found,
    }
}

/// Shrinks `spec` while it still fails `failure.invariant` on `seed`; returns the smallest
/// spec, its failure and the candidate runs spent.
pub fn shrink(
    spec: &Spec,
    seed: u64,
    failure: &Failure,
    planted: Planted,
    jobs: usize,
    runs_max: usize,
) -> (Spec, Failure, usize) {
    let runner = |spec: &Spec, seed| run_case(spec, seed, planted);
    shrink_with(&runner, spec, seed, failure, jobs, runs_max)
}

/// [`shrink`] with another case runner; a candidate that panics fails as `panic`.
pub fn shrink_with(
    runner: CaseRunner<'_>,
    spec: &Spec,
    seed: u64,
    failure: &Failure,
    jobs: usize,
    runs_max: usize,
) -> (Spec, Failure, usize) {
    let mut current = spec.clone();
    let mut current_failure = failure.clone();
    let mut runs = 0;
    'progress: while runs < runs_max {
        let candidates = shrink::candidates(&current);
        for batch in candidates.chunks(jobs.max(1)) {
            let batch = &batch[..batch.len().min(runs_max - runs)];
            if batch.is_empty() {
                break 'progress;
            }
            runs += batch.len();
            let results: Vec<Option<Failure>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|candidate| {
                        scope.spawn(move || {
                            guarded(runner, candidate, seed)
                                .into_iter()
                                .find(|f| f.invariant == failure.invariant)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("guarded catches a case's panic"))
                    .collect()
            });
            if let Some((candidate, still)) = batch
                .iter()
                .zip(results)
                .find_map(|(candidate, result)| result.map(|f| (candidate, f)))
            {
                current = candidate.clone();
                current_failure = still;
                continue 'progress;
            }
        }
        break;
    }
    (current, current_failure, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case runner with a planted panic: any case with a server crash panics, every other
    /// case passes. No simulation runs, so the fuzz loop and the shrinker are tested alone.
    fn panics_on_server_crash(spec: &Spec, _seed: u64) -> Vec<Failure> {
        if spec.faults.iter().any(|f| f.kind == "server_crash") {
            panic!(
                "planted panic: {} faults, {} devices",
                spec.faults.len(),
                spec.n_devices()
            );
        }
        Vec::new()
    }

    #[test]
    fn a_panicking_case_is_a_failure_shrunk_like_a_violation() {
        let options = FuzzOptions {
            seed: 1,
            budget: Duration::from_secs(3_600),
            first_case: 0,
            cases_max: 500,
            jobs: 2,
            planted: Planted::default(),
            shrink_runs_max: 500,
        };
        let seen = Mutex::new(Vec::new());
        let report = fuzz_with(
            &options,
            &panics_on_server_crash,
            &|case, spec, failures| {
                let crashes = spec.faults.iter().any(|f| f.kind == "server_crash");
                seen.lock()
                    .unwrap()
                    .push((case, crashes, failures.to_vec()));
            },
        );
        let found = report
            .found
            .expect("some case among 500 has a server crash");
        assert_eq!(found.failure.invariant, "panic");
        assert!(
            found.failure.detail.starts_with("planted panic: "),
            "{:?}",
            found.failure
        );
        // Every case before the panicking one ran and passed: the panic stopped nothing early.
        let seen = seen.into_inner().unwrap();
        for case in 0..found.case {
            let (_, crashes, failures) = seen
                .iter()
                .find(|(c, ..)| *c == case)
                .unwrap_or_else(|| panic!("case {case} did not run"));
            assert!(!crashes && failures.is_empty(), "case {case}");
        }
        // Shrunk to the one fault that panics, the same way (candidates that panic too).
        assert_eq!(found.shrunk_failure.invariant, "panic");
        let kinds: Vec<_> = found.shrunk.faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["server_crash"], "{}", found.shrunk.size());
        assert_eq!(found.shrunk.groups.len(), 1);
        assert!(
            found
                .shrunk_failure
                .detail
                .starts_with("planted panic: 1 faults, "),
            "{:?}",
            found.shrunk_failure
        );
        assert!(found.shrink_runs > 0);
    }
}
