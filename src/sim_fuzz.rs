//! `imlab sim fuzz`: wiring for imlab-sim's fuzzer (progress lines, the failure's files and
//! its replay command).

use anyhow::Context;
use imlab_sim::fuzz::{self, FuzzOptions};

use crate::sim::FuzzArgs;

pub fn run_fuzz(args: FuzzArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::out_dir::check(&args.out)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = FuzzOptions {
        seed: args.seed,
        budget: args.budget,
        first_case: args.first_case,
        cases_max: args.cases.map_or(u64::MAX, |n| n as u64),
        jobs,
        planted: args.plant.planted(),
        shrink_runs_max: args.shrink_runs,
    };
    println!(
        "fuzz: seed {}, budget {}, {jobs} at a time",
        args.seed,
        humantime::format_duration(args.budget)
    );
    let report = fuzz::fuzz(&options, &|case, spec, failures| {
        let verdict = match failures.first() {
            None => "ok".to_string(),
            Some(failure) => format!("FAILED ({})", failure.invariant),
        };
        println!("case {case}: {verdict} ({})", spec.size());
    });
    let minutes = report.wall.as_secs_f64() / 60.0;
    println!(
        "cases: {} in {:.1} min ({:.1} scenarios/min)",
        report.cases,
        minutes,
        report.cases as f64 / minutes.max(1e-9)
    );
    let Some(found) = report.found else {
        println!("violations: none");
        return Ok(std::process::ExitCode::SUCCESS);
    };
    println!(
        "violation: case {} seed {}: {}: {}",
        found.case, found.seed, found.failure.invariant, found.failure.detail
    );
    let write = |name: &str, text: String| -> anyhow::Result<std::path::PathBuf> {
        let file = args.out.join(name);
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    };
    let original = write("original.toml", found.original.to_toml(found.seed))?;
    let shrunk = write("shrunk.toml", found.shrunk.to_toml(found.seed))?;
    println!(
        "shrunk in {:.1} s ({} runs): from {} to {}",
        found.shrink_wall.as_secs_f64(),
        found.shrink_runs,
        found.original.size(),
        found.shrunk.size()
    );
    println!(
        "shrunk: {}: {}",
        found.shrunk_failure.invariant, found.shrunk_failure.detail
    );
    println!("original: {}", original.display());
    println!(
        "replay: imlab sim run {} --seed {}{}",
        shrunk.display(),
        found.seed,
        args.plant.replay_suffix()
    );
    Ok(std::process::ExitCode::from(1))
}
