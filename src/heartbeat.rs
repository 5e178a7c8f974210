//! `imlab heartbeat compare`: wiring for imlab-sim's comparison and imlab-reports' renderer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use imlab_reports::heartbeat::{HeartbeatReport, write_heartbeat_report};
use imlab_sim::compare::{CompareOptions, adaptive_findings, compare, dropped_faults};
use imlab_sim::scenario::Scenario;

/// Compare heartbeat strategies across carrier profiles: battery, delay, silent disconnects.
#[derive(clap::Args)]
pub struct HeartbeatArgs {
    #[command(subcommand)]
    command: HeartbeatCommand,
}

#[derive(clap::Subcommand)]
enum HeartbeatCommand {
    /// Simulate every strategy on every profile and write the report (CSV, charts, HTML).
    #[command(after_help = crate::help::examples(&[
        "imlab heartbeat compare --out report",
        "imlab heartbeat compare --strategies wechat,imlab-adaptive,fixed:4m45s --profiles cmcc-3g,ct-3g --devices 20 --duration 24h --out report",
    ]))]
    Compare(CompareArgs),
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct CompareArgs {
    /// Template scenario: its duration, app-state cycle and traffic (first device group) are
    /// used for every cell (default: scenarios/heartbeat-compare.toml, built in).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Strategies, comma-separated (default: every named preset and imlab-adaptive).
    #[arg(long, value_delimiter = ',', value_parser = crate::values::list_item)]
    strategies: Option<Vec<String>>,
    /// Carrier presets, comma-separated (default: all seven; `imlab sim presets` lists them).
    #[arg(long, value_delimiter = ',', value_parser = crate::values::list_item)]
    profiles: Option<Vec<String>>,
    /// Devices per (strategy, profile) (default: the template's count).
    #[arg(long, value_parser = crate::values::positive_count)]
    devices: Option<usize>,
    /// Simulated time (default: the template's).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of every simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulations run at once (default: the number of cores).
    #[arg(long, value_parser = crate::values::positive_count)]
    jobs: Option<usize>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run_command(args: HeartbeatArgs) -> anyhow::Result<std::process::ExitCode> {
    let HeartbeatCommand::Compare(args) = args.command;
    let started = Instant::now();
    crate::out_dir::check(&args.out)?;
    let mut options = CompareOptions::defaults();
    if let Some(file) = &args.scenario {
        options.template = Scenario::load(file)?;
        options.template_text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for fault in dropped_faults(&options.template) {
            eprintln!(
                "warning: --scenario {}: {fault}: not applied (each comparison cell has its own \
                 carrier and device groups; only server_crash and push_outage faults carry over)",
                file.display()
            );
        }
    }
    if let Some(strategies) = args.strategies {
        options.strategies = strategies;
    }
    if let Some(profiles) = args.profiles {
        options.profiles = profiles;
    }
    options.devices = args.devices;
    options.duration = args.duration;
    options.seed = args.seed;
    options.jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let n_cells = options.strategies.len() * options.profiles.len();
    println!(
        "comparing {} strategies x {} profiles ({n_cells} cells), seed {}",
        options.strategies.len(),
        options.profiles.len(),
        options.seed
    );
    let comparison = compare(&options, &|profile| {
        println!(
            "  {profile}: done ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    })?;
    let mut notes = adaptive_findings(&comparison.rows);
    let mut violated = false;
    for run in &comparison.runs {
        for verdict in run.report.verdicts.iter().filter(|v| !v.ok()) {
            violated = true;
            notes.push(format!(
                "Invariant {} VIOLATED on {} with {}: {}",
                verdict.name,
                run.profile,
                run.strategy,
                verdict.violation.as_deref().unwrap_or("")
            ));
        }
    }
    let duration = options.duration.unwrap_or(options.template.duration);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = HeartbeatReport {
        rows: comparison.rows.clone(),
        series: comparison.series,
        scenario_toml: options.template_text.clone(),
        seed: options.seed,
        devices_per_group: options
            .devices
            .unwrap_or_else(|| options.template.groups.first().map_or(0, |g| g.count)),
        duration_h: duration.as_secs_f64() / 3_600.0,
        command,
        notes: notes.clone(),
    };
    let files = write_heartbeat_report(&args.out, &report)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    println!();
    println!(
        "{:<16} {:<10} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8}",
        "strategy", "profile", "beats/d", "J/day", "batt%", "silent/d", "p50 s", "p99 s", "settled"
    );
    for row in &comparison.rows {
        println!(
            "{:<16} {:<10} {:>8.0} {:>9.0} {:>7.2} {:>8.1} {:>9.1} {:>9.1} {:>7.0}s",
            row.strategy,
            row.profile,
            row.heartbeats_per_day,
            row.energy_j_per_day,
            row.battery_pct_per_day,
            row.silent_disconnects_per_day,
            row.delay_ms_p50 as f64 / 1e3,
            row.delay_ms_p99 as f64 / 1e3,
            row.settled_interval_s
        );
    }
    println!();
    for note in &notes {
        println!("note: {note}");
    }
    println!(
        "report: {} ({} files)",
        args.out.join("index.html").display(),
        files.len()
    );
    println!("wall: {:.1} s", started.elapsed().as_secs_f64());
    Ok(if violated {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
