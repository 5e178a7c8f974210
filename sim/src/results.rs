//! Results files of `imlab sim run`: `results.json` (schema in `sim/RESULTS.md`),
//! `metrics.csv` (one row per device group, then a row for all devices) and `storms.csv`
//! (logins and accepted connections per simulated second).

use std::path::Path;

use serde::Serialize;

use crate::invariants::{Verdict, VolatileLoss};
use crate::metrics::{GroupMetrics, Metrics};
use crate::run::RunReport;
use crate::scenario::Scenario;

/// Version of the results.json schema.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Results<'a> {
    schema_version: u32,
    /// The git commit of the build that ran it (empty when unknown): the trace hash and the
    /// replay command hold for that build.
    commit: &'a str,
    scenario: &'a str,
    scenario_file: String,
    seed: u64,
    trace_hash: &'a str,
    trace_events: u64,
    ok: bool,
    invariants: &'a [Verdict],
    volatile_loss: &'a VolatileLoss,
    replay: String,
    metrics: &'a Metrics,
}

/// The command that replays a run (the file quoted for a POSIX shell when it needs it).
pub fn replay_command(scenario: &Scenario, seed: u64) -> String {
    let file = scenario.file.display().to_string();
    let plain = !file.is_empty()
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c));
    let file = if plain {
        file
    } else {
        format!("'{}'", file.replace('\'', "'\\''"))
    };
    format!("imlab sim run {file} --seed {seed}")
}

/// Writes `results.json`, `metrics.csv` and `storms.csv` into `dir` (created if missing);
/// `commit` names the build that ran it.
pub fn write(
    dir: &Path,
    scenario: &Scenario,
    report: &RunReport,
    commit: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let results = Results {
        schema_version: SCHEMA_VERSION,
        commit,
        scenario: &scenario.name,
        scenario_file: scenario.file.display().to_string(),
        seed: report.seed,
        trace_hash: &report.trace_hash,
        trace_events: report.trace_events,
        ok: report.ok(),
        invariants: &report.verdicts,
        volatile_loss: &report.volatile_loss,
        replay: replay_command(scenario, report.seed),
        metrics: &report.metrics,
    };
    let json = serde_json::to_string_pretty(&results).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), json + "\n")?;
    let mut csv = csv::Writer::from_path(dir.join("metrics.csv"))?;
    let rows: Vec<&GroupMetrics> = report
        .metrics
        .groups
        .iter()
        .chain(std::iter::once(&report.metrics.all))
        .collect();
    for row in rows {
        csv.serialize(row).map_err(std::io::Error::other)?;
    }
    csv.flush()?;
    // Every second with a login or an accepted connection (the others are zero in both).
    let mut csv = csv::Writer::from_path(dir.join("storms.csv"))?;
    csv.write_record(["second", "logins", "accepts"])?;
    for row in &report.metrics.storms.seconds {
        csv.write_record([
            row.second.to_string(),
            row.logins.to_string(),
            row.accepts.to_string(),
        ])?;
    }
    csv.flush()
}
