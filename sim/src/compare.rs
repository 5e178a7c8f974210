//! `imlab heartbeat compare`: the strategy x carrier matrix, measured in the simulator.
//!
//! Every (strategy, carrier profile) cell is one simulation of its own, with the same seed:
//! one device group built from the template scenario's first device group (same count,
//! app-state cycle and traffic; messages go to random users of the cell, so a strategy's
//! message delay is measured between phones that all run it). A cell's numbers therefore
//! depend on its strategy, profile, seed and template alone, not on which other cells the
//! matrix holds. Cells run in parallel. The measurements here become `imlab-reports` rows;
//! the reports crate only renders them.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imlab_core::heartbeat::STRATEGY_NAMES;
use imlab_reports::heartbeat::{HeartbeatRow, IntervalSeries};

use crate::carrier::{self, CarrierProfile};
use crate::energy::battery_percent;
use crate::ledger::quantile;
use crate::run::{RunError, RunOptions, RunReport, run_with};
use crate::scenario::{DeviceGroup, FaultKind, Scenario, ScenarioError};
use crate::world::Shared;

/// The default template, also shipped as `scenarios/heartbeat-compare.toml`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../scenarios/heartbeat-compare.toml");

/// Strategies whose interval over time is charted.
pub const ADAPTIVE_STRATEGIES: &[&str] = &["wechat", "wechat-legacy", "imlab-adaptive"];

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The template scenario.
    pub template: Scenario,
    /// Its text, shown in the report.
    pub template_text: String,
    /// Strategy names.
    pub strategies: Vec<String>,
    /// Carrier preset names.
    pub profiles: Vec<String>,
    /// Devices per (strategy, profile); `None` keeps the template's count.
    pub devices: Option<usize>,
    /// Simulated time; `None` keeps the template's.
    pub duration: Option<Duration>,
    /// Seed of every simulation.
    pub seed: u64,
    /// Simulations run at once.
    pub jobs: usize,
}

/// One cell's simulation.
#[derive(Debug, Clone)]
pub struct CellRun {
    /// Carrier profile.
    pub profile: String,
    /// Heartbeat strategy.
    pub strategy: String,
    /// The run's report (invariants, trace hash, metrics).
    pub report: RunReport,
}

/// The measured matrix.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// One row per (strategy, profile), in profile then strategy order.
    pub rows: Vec<HeartbeatRow>,
    /// Interval over time of the adaptive strategies on a short and a long NAT.
    pub series: Vec<IntervalSeries>,
    /// Every cell's simulation, in the rows' order.
    pub runs: Vec<CellRun>,
}

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A name or the template is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The template did not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A simulation failed.
    #[error("{strategy} on {profile}: {source}")]
    Run {
        /// The profile.
        profile: String,
        /// The strategy.
        strategy: String,
        /// What failed.
        source: RunError,
    },
}

impl CompareOptions {
    /// Options over the built-in template with every default strategy and carrier preset.
    pub fn defaults() -> CompareOptions {
        let template = Scenario::parse(
            DEFAULT_TEMPLATE,
            Path::new("scenarios/heartbeat-compare.toml"),
        )
        .expect("the built-in template parses");
        CompareOptions {
            template,
            template_text: DEFAULT_TEMPLATE.to_string(),
            strategies: STRATEGY_NAMES.iter().map(|s| s.to_string()).collect(),
            profiles: carrier::PRESET_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            devices: None,
            duration: None,
            seed: 1,
            jobs: 1,
        }
    }
}

/// A device group name for a strategy name (`fixed:4m45s` -> `fixed_4m45s`).
fn group_name(strategy: &str) -> String {
    strategy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The scenario of one cell: the template on `profile` with one group, heartbeating by
/// `strategy`.
pub fn cell_scenario(
    options: &CompareOptions,
    strategy: &str,
    profile: &str,
) -> Result<Scenario, CompareError> {
    let carrier: CarrierProfile = carrier::preset(profile).ok_or_else(|| {
        CompareError::Invalid(format!(
            "--profiles: unknown carrier preset {profile:?}; known: {}",
            carrier::PRESET_NAMES.join(", ")
        ))
    })?;
    let template_group: &DeviceGroup = options.template.groups.first().ok_or_else(|| {
        CompareError::Invalid("the template scenario has no [[devices]] group".into())
    })?;
    let mut scenario = options.template.clone();
    scenario.name = format!("{}-{profile}", options.template.name);
    if let Some(duration) = options.duration {
        scenario.duration = duration;
    }
    scenario.carriers = vec![carrier];
    imlab_core::heartbeat::parse_strategy(strategy)
        .map_err(|error| CompareError::Invalid(format!("--strategies: {error}")))?;
    scenario.groups = vec![DeviceGroup {
        name: group_name(strategy),
        count: options.devices.unwrap_or(template_group.count),
        carrier: 0,
        heartbeat: strategy.to_string(),
        ..template_group.clone()
    }];
    // Faults naming the template's carriers or groups have no meaning here (see
    // `dropped_faults`, which the CLI reports).
    scenario.faults.retain(carries_over);
    Ok(scenario)
}

/// Whether a template fault applies to every comparison cell (it names no carrier or group).
fn carries_over(fault: &crate::scenario::Fault) -> bool {
    matches!(
        fault.kind,
        FaultKind::ServerCrash
            | FaultKind::PushOutage
            | FaultKind::ServerStall
            | FaultKind::DiskStall
            | FaultKind::DiskFailure
    )
}

/// The template's faults a comparison does not apply, as `faults[i] (kind)`, so the caller
/// can say so instead of dropping them silently.
pub fn dropped_faults(template: &Scenario) -> Vec<String> {
    template
        .faults
        .iter()
        .enumerate()
        .filter(|(_, fault)| !carries_over(fault))
        .map(|(i, fault)| format!("faults[{i}] ({})", fault.name))
        .collect()
}

/// Runs the matrix; `on_done` is called as the last cell of each profile finishes.
pub fn compare(
    options: &CompareOptions,
    on_done: &(dyn Fn(&str) + Sync),
) -> Result<Comparison, CompareError> {
    if options.strategies.is_empty() || options.profiles.is_empty() {
        return Err(CompareError::Invalid(
            "need at least one strategy and one profile".into(),
        ));
    }
    // Profile then strategy, the rows' order.
    let cells: Vec<(usize, &str, Scenario)> = options
        .profiles
        .iter()
        .enumerate()
        .flat_map(|(p, profile)| {
            options.strategies.iter().map(move |strategy| {
                Ok((
                    p,
                    strategy.as_str(),
                    cell_scenario(options, strategy, profile)?,
                ))
            })
        })
        .collect::<Result<_, CompareError>>()?;
    let cells_left: Vec<AtomicUsize> = options
        .profiles
        .iter()
        .map(|_| AtomicUsize::new(options.strategies.len()))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CellOutcome>>> =
        Mutex::new((0..cells.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((p, strategy, scenario)) = cells.get(index) else {
                        break;
                    };
                    let profile = &options.profiles[*p];
                    let outcome = measure_cell(options, strategy, profile, scenario);
                    results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(outcome);
                    if cells_left[*p].fetch_sub(1, Ordering::AcqRel) == 1 {
                        on_done(profile);
                    }
                }
            });
        }
    });
    let mut comparison = Comparison {
        rows: Vec::new(),
        series: Vec::new(),
        runs: Vec::new(),
    };
    let mut all_series = Vec::new();
    for outcome in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let (run, rows, series) = outcome.expect("every cell ran")?;
        comparison.runs.push(run);
        comparison.rows.extend(rows);
        all_series.extend(series);
    }
    comparison.series = chart_series(options, all_series);
    Ok(comparison)
}

/// What one cell's simulation yields.
type CellOutcome = Result<(CellRun, Vec<HeartbeatRow>, Vec<Series>), CompareError>;

/// One device's heartbeat intervals over time, before selection for the chart.
struct Series {
    strategy: String,
    profile: String,
    nat_timeout: Duration,
    points: Vec<(f64, f64)>,
}

/// Keeps the adaptive strategies on the first short-NAT (<= 5 min) and the first long-NAT
/// (>= 28 min) profile.
fn chart_series(options: &CompareOptions, all: Vec<Series>) -> Vec<IntervalSeries> {
    let nat =
        |profile: &str| carrier::preset(profile).map_or(Duration::ZERO, |p| p.nat_timeout_max);
    let short = options
        .profiles
        .iter()
        .find(|p| nat(p) <= Duration::from_secs(300));
    let long = options
        .profiles
        .iter()
        .find(|p| nat(p) >= Duration::from_secs(28 * 60));
    all.into_iter()
        .filter(|s| Some(&s.profile) == short || Some(&s.profile) == long)
        .filter(|s| ADAPTIVE_STRATEGIES.contains(&s.strategy.as_str()))
        .map(|s| IntervalSeries {
            strategy: s.strategy,
            profile: s.profile,
            nat_timeout_s: s.nat_timeout.as_secs_f64(),
            points: s.points,
        })
        .collect()
}

fn measure_cell(
    options: &CompareOptions,
    strategy: &str,
    profile: &str,
    scenario: &Scenario,
) -> CellOutcome {
    let run_options = RunOptions {
        seed: options.seed,
        heartbeat_series: true,
        ..RunOptions::default()
    };
    let mut measured = None;
    let report = run_with(
        scenario,
        &run_options,
        &mut |_| {},
        &mut |shared: &Shared| {
            measured = Some(measure(shared, profile));
        },
    )
    .map_err(|source| CompareError::Run {
        profile: profile.to_string(),
        strategy: strategy.to_string(),
        source,
    })?;
    let (rows, series) = measured.expect("the run measured");
    Ok((
        CellRun {
            profile: profile.to_string(),
            strategy: strategy.to_string(),
            report,
        },
        rows,
        series,
    ))
}

/// The per-strategy measurements of one finished simulation (a cell's: one strategy).
fn measure(shared: &Shared, profile: &str) -> (Vec<HeartbeatRow>, Vec<Series>) {
    let scenario = &shared.scenario;
    let layout = &shared.layout;
    let ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let end = scenario.duration;
    let end_ms = end.as_millis() as u64;
    let days = end.as_secs_f64() / 86_400.0;
    let settle_from_ms = end_ms * 3 / 4;
    let mut rows = Vec::new();
    let mut series = Vec::new();
    for (group_index, group) in scenario.groups.iter().enumerate() {
        let devices: Vec<usize> = (0..layout.devices.len())
            .filter(|d| layout.devices[*d].group == group_index)
            .collect();
        let n = devices.len().max(1) as f64;
        let mut heartbeats = 0u64;
        let mut joules = 0.0;
        let mut silent = 0u64;
        let mut reconnects = 0u64;
        let mut reachable = Duration::ZERO;
        let mut settled_intervals = Vec::new();
        let mut delays = Vec::new();
        for &device in &devices {
            let record = &ledger.devices[device];
            heartbeats += record
                .heartbeat_intervals
                .iter()
                .filter(|(at, _)| *at < end_ms)
                .count() as u64;
            settled_intervals.extend(
                record
                    .heartbeat_intervals
                    .iter()
                    .filter(|(at, _)| *at >= settle_from_ms && *at < end_ms)
                    .map(|(_, interval)| *interval),
            );
            joules += shared.radios[device]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .joules(end);
            silent += shared.silent_by_device[device].load(Ordering::Relaxed);
            reconnects += u64::from(record.connects_in_scenario.saturating_sub(1));
            reachable += shared.reachability[device]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .total;
            for entry in &record.log {
                let Some(send) = entry.send() else { continue };
                let send = &ledger.sends[send as usize];
                // A device's own messages echo back at once: not a delay anyone waits for.
                if send.device as usize != device && send.queued_ms() < end_ms {
                    delays.push(entry.at_ms().saturating_sub(send.queued_ms()));
                }
            }
        }
        delays.sort_unstable();
        settled_intervals.sort_unstable();
        let heartbeats_per_day = heartbeats as f64 / n / days;
        let energy_j_per_day = joules / n / days;
        rows.push(HeartbeatRow {
            strategy: group.heartbeat.clone(),
            profile: profile.to_string(),
            heartbeats_per_day,
            energy_j_per_day,
            battery_pct_per_day: battery_percent(energy_j_per_day),
            silent_disconnects_per_day: silent as f64 / n / days,
            reconnects_per_day: reconnects as f64 / n / days,
            delay_ms_p50: quantile(&delays, 0.50),
            delay_ms_p99: quantile(&delays, 0.99),
            delay_ms_max: delays.last().copied().unwrap_or(0),
            reachable_fraction: reachable.as_secs_f64() / n / end.as_secs_f64(),
            settled_interval_s: time_weighted_median(&settled_intervals) as f64 / 1_000.0,
            server_heartbeats_per_s_per_million: heartbeats_per_day / 86_400.0 * 1e6,
        });
        if let Some(&first) = devices.first() {
            series.push(Series {
                strategy: group.heartbeat.clone(),
                profile: profile.to_string(),
                nat_timeout: scenario.carriers[0].nat_timeout_max,
                points: ledger.devices[first]
                    .heartbeat_intervals
                    .iter()
                    .filter(|(at, _)| *at < end_ms)
                    .map(|(at, interval)| (*at as f64 / 3_600_000.0, *interval as f64 / 1_000.0))
                    .collect(),
            });
        }
    }
    (rows, series)
}

/// The interval in force for most of the time: the median of `sorted` intervals weighted by
/// their length. A plain median counts Pings, and short intervals send more of them: a device
/// that heartbeats every 210 s for its 15 active minutes and every 28 minutes for the rest of
/// two hours sends as many Pings at each, though 28 minutes is what it settled on.
fn time_weighted_median(sorted: &[u64]) -> u64 {
    let total: u64 = sorted.iter().sum();
    let mut covered = 0;
    for &interval in sorted {
        covered += interval;
        if covered * 2 >= total {
            return interval;
        }
    }
    0
}

/// True when `a` is at least as good as `b` on energy and p99 delay and strictly better on
/// one: `b` is dominated.
pub fn dominates(a: &HeartbeatRow, b: &HeartbeatRow) -> bool {
    let no_worse = a.energy_j_per_day <= b.energy_j_per_day && a.delay_ms_p99 <= b.delay_ms_p99;
    let better = a.energy_j_per_day < b.energy_j_per_day || a.delay_ms_p99 < b.delay_ms_p99;
    no_worse && better
}

/// Plain-English findings on `imlab-adaptive` against `wechat`, per profile where both ran;
/// nothing at all when no profile ran both (there is nothing to claim).
pub fn adaptive_findings(rows: &[HeartbeatRow]) -> Vec<String> {
    let mut findings = Vec::new();
    let profiles: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.profile.as_str()).collect();
    let mut compared = Vec::new();
    let mut dominated_on = Vec::new();
    for profile in profiles {
        let find = |s: &str| {
            rows.iter()
                .find(|r| r.profile == profile && r.strategy == s)
        };
        let (Some(ours), Some(wechat)) = (find("imlab-adaptive"), find("wechat")) else {
            continue;
        };
        compared.push(profile);
        if dominates(wechat, ours) {
            dominated_on.push(profile.to_string());
            findings.push(format!(
                "On {profile}, wechat dominates imlab-adaptive: {:.0} J/day and p99 {:.1} s against {:.0} J/day and p99 {:.1} s.",
                wechat.energy_j_per_day,
                wechat.delay_ms_p99 as f64 / 1e3,
                ours.energy_j_per_day,
                ours.delay_ms_p99 as f64 / 1e3
            ));
        }
    }
    if !compared.is_empty() && dominated_on.is_empty() {
        findings.insert(
            0,
            format!(
                "imlab-adaptive is not dominated by wechat on any profile compared ({}; energy and p99 delay).",
                compared.join(", ")
            ),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settled_interval_is_the_one_in_force_most_of_the_time() {
        // Four Pings at 210 s (840 s in all) and two at 28 minutes (3,360 s): as many Pings at
        // the short interval, four fifths of the time at the long one.
        let mixed = [210_000, 210_000, 210_000, 210_000, 1_680_000, 1_680_000];
        assert_eq!(
            quantile(&mixed, 0.5),
            210_000,
            "a plain median counts Pings"
        );
        assert_eq!(time_weighted_median(&mixed), 1_680_000);
        // One interval throughout is that interval; half the time exactly is the shorter.
        assert_eq!(time_weighted_median(&[285_000; 7]), 285_000);
        assert_eq!(time_weighted_median(&[100, 100, 200]), 100);
        assert_eq!(time_weighted_median(&[]), 0);
    }
}
