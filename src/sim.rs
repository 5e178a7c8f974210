//! `imlab sim run`, `imlab sim sweep` and `imlab sim presets`: wiring for imlab-sim.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use imlab_sim::results::{self, replay_command};
use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;
use imlab_sim::sweep::{SeedOutcome, Spread, sweep_seeds, write_csv};

/// Simulate scenarios deterministically: mobile carriers, faults, invariants.
#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Run one scenario with one seed; exit 1 if an invariant is violated.
    #[command(after_help = crate::help::examples(&[
        "imlab sim run scenarios/cmcc-3g-nat.toml",
        "imlab sim run scenarios/server-crash.toml --seed 42 --out out/crash --trace out/crash.jsonl",
        "imlab sim run scenarios/flaky-carrier.toml --out out/flaky --timeline",
        "imlab sim run scenarios/scale-10k.toml --devices 500 --duration 1h",
    ]))]
    Run(RunArgs),
    /// Run many seeds in parallel: a line per seed as it finishes, the spread across seeds,
    /// each failing seed's replay command; exit 1 if any failed. `--shard I/N` runs one of N
    /// shards (for a batch system or a Kubernetes indexed job); `sweep merge` combines them.
    #[command(
        after_help = crate::help::examples(&[
            "imlab sim sweep scenarios/server-crash.toml --seeds 1..200 --jobs 2 --out out/sweep",
            "imlab sim sweep scenarios/server-crash.toml --seeds 1..200 --shard 0/4 --out out/s0",
            "imlab sim sweep merge out/s0 out/s1 out/s2 out/s3 --out out/sweep",
        ]),
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Sweep(SweepArgs),
    /// Random scenarios over the whole space (carriers, stores, device groups, traffic, every
    /// fault kind) until the budget is spent; a failure is shrunk to a smallest scenario that
    /// still fails for the same invariant, written with its seed, and replayed by one command.
    #[command(after_help = crate::help::examples(&[
        "imlab sim fuzz --budget 10m --jobs 2",
        "imlab sim fuzz --seed 7 --cases 200 --out out/fuzz",
        "imlab sim fuzz --plant volatile-store --budget 2m",
    ]))]
    Fuzz(FuzzArgs),
    /// List the built-in carrier presets with their parameters and sources.
    #[command(after_help = crate::help::examples(&["imlab sim presets"]))]
    Presets,
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct RunArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Seed (default: the scenario's, else 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Write results.json and metrics.csv here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every trace event as JSON Lines here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write timeline.html into --out: the server and the involved devices on a zoomable
    /// time axis, what broke an invariant highlighted (the trace goes to --out/trace.jsonl
    /// unless --trace names a file).
    #[arg(long, requires = "out")]
    timeline: bool,
    /// Show progress on a terminal (stderr): simulated time, trace events per second and the
    /// ETA; nothing when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    plant: PlantArg,
    #[command(flatten)]
    overrides: Overrides,
}

/// `--plant BUG`, to watch the checker catch a deliberate bug.
#[derive(clap::Args)]
pub(crate) struct PlantArg {
    /// Plant a deliberate bug, to watch the checker catch it: `volatile-store` loses the
    /// durable store's disk at every server crash, so acked messages vanish (use a scenario
    /// with `server_crash` faults; `no_acked_loss` must fire).
    #[arg(long, value_name = "BUG", value_parser = ["volatile-store"])]
    plant: Option<String>,
}

impl PlantArg {
    pub(crate) fn planted(&self) -> imlab_sim::Planted {
        imlab_sim::Planted {
            volatile_store: self.plant.is_some(),
            ..imlab_sim::Planted::default()
        }
    }

    /// The flag as a replay command needs it ("" when no bug is planted).
    pub(crate) fn replay_suffix(&self) -> String {
        self.plant
            .as_ref()
            .map_or(String::new(), |bug| format!(" --plant {bug}"))
    }
}

/// Changes to the scenario for one run, like `heartbeat compare` takes.
#[derive(clap::Args)]
struct Overrides {
    /// Devices in all (spread over the device groups in the file's proportions, at least
    /// one per group).
    #[arg(long, value_parser = crate::values::positive_count)]
    devices: Option<usize>,
    /// Simulated time with traffic and faults (faults after it are dropped, with a note).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct SweepArgs {
    #[command(subcommand)]
    merge: Option<SweepCommand>,
    /// The scenario file (TOML).
    #[arg(required = true)]
    scenario: Option<PathBuf>,
    /// Seeds to run, as A..B (inclusive).
    #[arg(long, value_parser = parse_seed_range, required = true)]
    seeds: Option<(u64, u64)>,
    /// Run only shard I of N (0-based): the seeds whose offset in the range is I modulo N.
    #[arg(long, value_parser = imlab_sim::shard::Shard::parse, value_name = "I/N")]
    shard: Option<imlab_sim::shard::Shard>,
    /// Parallel runs (default: the number of cores).
    #[arg(long, value_parser = crate::values::positive_count)]
    pub(crate) jobs: Option<usize>,
    /// Write sweep.csv (one row per seed) here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(flatten)]
    plant: PlantArg,
}

#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// Stop starting cases after this much wall time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub(crate) budget: Duration,
    /// Fuzz seed: case N of seed S is always the same scenario and run seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Stop after this many cases.
    #[arg(long, value_parser = crate::values::positive_count)]
    pub(crate) cases: Option<usize>,
    /// Start at this case number (to rerun part of a fuzz run: case N of a seed is always the
    /// same scenario).
    #[arg(long, default_value_t = 0)]
    pub(crate) first_case: u64,
    /// Parallel runs (default: the number of cores).
    #[arg(long, value_parser = crate::values::positive_count)]
    pub(crate) jobs: Option<usize>,
    /// Where a failure's scenario files go (original.toml, shrunk.toml).
    #[arg(long, default_value = "fuzz-out")]
    pub(crate) out: PathBuf,
    /// Candidate runs shrinking may spend.
    #[arg(long, default_value_t = 400, value_parser = crate::values::positive_count)]
    pub(crate) shrink_runs: usize,
    #[command(flatten)]
    pub(crate) plant: PlantArg,
}

#[derive(clap::Subcommand)]
enum SweepCommand {
    /// Combine the `--out` directories of a sharded sweep: checks they are shards of one
    /// sweep, that no seed is missing or twice; prints the summary; exit 1 if any seed failed.
    #[command(after_help = crate::help::examples(&[
        "imlab sim sweep merge out/s0 out/s1 out/s2 out/s3 --out out/sweep",
    ]))]
    Merge(MergeArgs),
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The shards' `--out` directories (each with sweep.json and sweep.csv).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Write the merged sweep.csv and sweep.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Merge shards run by different builds (their `sweep.json` names different commits).
    /// A seed's trace hash, and so its replay, holds only for the build that ran it; the
    /// merged `sweep.json` names every build.
    #[arg(long)]
    allow_mixed_builds: bool,
}

fn parse_seed_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range like 1..200"))?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a seed"))?;
    let b: u64 = b
        .trim_start_matches('=')
        .parse()
        .map_err(|_| format!("{b:?} is not a seed"))?;
    if a > b {
        return Err(format!("range {text:?} is empty"));
    }
    Ok((a, b))
}

pub fn run_command(args: SimArgs) -> anyhow::Result<std::process::ExitCode> {
    match args.command {
        SimCommand::Run(args) => run_one(args),
        SimCommand::Sweep(args) => run_sweep(args),
        SimCommand::Fuzz(args) => crate::sim_fuzz::run_fuzz(args),
        SimCommand::Presets => {
            print!("{}", imlab_sim::presets::listing());
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

impl Overrides {
    /// The flags as a replay command needs them ("" when none).
    fn flags(&self) -> String {
        let mut flags = String::new();
        if let Some(devices) = self.devices {
            flags += &format!(" --devices {devices}");
        }
        if let Some(duration) = self.duration {
            flags += &format!(" --duration {}", compact_duration(duration));
        }
        flags
    }
}

/// A duration as one shell word that `humantime` reads back: "1h30m", not "1h 30m".
fn compact_duration(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// The command that replays a run exactly: the file, the seed and every flag that changes
/// the run (overrides, planted bug); not the flags that only say where output goes.
fn replay_line(scenario: &Scenario, seed: u64, overrides: &Overrides, plant: &PlantArg) -> String {
    format!(
        "{}{}{}",
        replay_command(scenario, seed),
        overrides.flags(),
        plant.replay_suffix()
    )
}

/// Applies `--devices` and `--duration`, saying what they dropped.
fn apply(overrides: &Overrides, scenario: &mut Scenario) -> anyhow::Result<()> {
    if let Some(devices) = overrides.devices {
        scenario
            .scale_devices(devices)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(duration) = overrides.duration {
        anyhow::ensure!(!duration.is_zero(), "--duration must be positive");
        if let Some(why) = imlab_sim::scenario::run_too_long(duration, scenario.quiet) {
            anyhow::bail!("--duration: {why}");
        }
        let dropped = scenario.faults.iter().filter(|f| f.at >= duration).count();
        if dropped > 0 {
            eprintln!(
                "note: --duration {}: {dropped} fault(s) of {} start later and will not happen",
                humantime::format_duration(duration),
                scenario.file.display()
            );
        }
        scenario.duration = duration;
    }
    Ok(())
}

fn load(file: &std::path::Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(file)?)
}

fn run_one(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut scenario = load(&args.scenario)?;
    apply(&args.overrides, &mut scenario)?;
    if let Some(dir) = &args.out {
        crate::out_dir::check(dir)?;
    }
    let seed = args.seed.or(scenario.seed).unwrap_or(1);
    println!(
        "scenario: {} ({} devices, {:?} + {:?} quiet)",
        scenario.name,
        scenario.n_devices(),
        scenario.duration,
        scenario.quiet
    );
    println!("seed: {seed}");
    // The trace hash below, and so the replay command, holds only for this build.
    println!("build: {}", crate::build_name());
    let trace_file = match (&args.trace, &args.out) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(dir)) if args.timeline => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --out {}", dir.display()))?;
            Some(dir.join("trace.jsonl"))
        }
        _ => None,
    };
    let options = RunOptions {
        seed,
        trace_file: trace_file.clone(),
        planted: args.plant.planted(),
        ..RunOptions::default()
    };
    // --progress: a bar on a terminal (simulated time, events per second, ETA), nothing
    // otherwise, so piped output stays clean.
    let mut bar = (args.progress && std::io::stderr().is_terminal()).then(SimProgress::new);
    let report = run(&scenario, &options, &mut |progress| {
        if let Some(bar) = &mut bar {
            bar.update(progress);
        }
    })
    .with_context(|| format!("simulating {}", scenario.file.display()))?;
    if let Some(bar) = bar {
        bar.bar.finish_and_clear();
    }
    println!("trace_hash: {}", report.trace_hash);
    for verdict in &report.verdicts {
        match &verdict.violation {
            None => println!("invariant {}: ok", verdict.name),
            Some(detail) => println!("invariant {}: VIOLATED ({detail})", verdict.name),
        }
    }
    let lost = &report.volatile_loss;
    if lost.deliveries > 0 {
        println!(
            "volatile loss: {} deliveries of {} acked messages went down with the in-memory \
             store's crashes (not a violation: server.store = \"memory\")",
            lost.deliveries, lost.messages
        );
    }
    let m = &report.metrics;
    println!(
        "messages: sent {}, acked {}, delivered {} (to app logs)",
        m.all.messages_sent, m.all.messages_acked, m.all.deliveries
    );
    println!(
        "delay_ms: p50 {}, p99 {}, max {}",
        m.all.delay_ms_p50, m.all.delay_ms_p99, m.all.delay_ms_max
    );
    println!(
        "connections: silent disconnects {}, reconnects {}, heartbeats {}",
        m.all.silent_disconnects, m.all.reconnects, m.all.heartbeats
    );
    println!(
        "server: peak {} accepts/s at {} s, outbox high-water {}, fan-out queue high-water {}",
        m.storms.accepts_per_s_peak,
        m.storms.accepts_peak_at_s,
        m.storms.outbox_high_water,
        m.storms.fanout_queue_high_water
    );
    let server = &m.server;
    println!(
        "server counts: logins {}, stored {}, duplicate sends {}, refused sends {}; pushes queued {} (as notify {}, in a page {}), fallbacks {}",
        server.logins,
        server.messages_stored,
        server.duplicate_sends,
        server.overloaded_sends + server.rate_limited_sends,
        server.pushes_queued,
        server.pushes_as_notify,
        server.pushes_in_a_page,
        server.notify_fallbacks
    );
    for storm in &m.storms.crashes {
        println!("{}", storm_line(storm));
    }
    println!(
        "pushes: sent {}, lost at the push service {}, written to channels {}, wake-ups \
         delivered {} (push channel silent disconnects {})",
        m.pushes_sent,
        m.wakeups_lost,
        m.all.wakeups_written,
        m.wakeups_delivered,
        m.push_channel_silent_disconnects
    );
    println!(
        "wall: {:.1} s for {:.0} simulated s ({} trace events)",
        report.wall.as_secs_f64(),
        m.simulated_s,
        report.trace_events
    );
    if let Some(dir) = &args.out {
        results::write(dir, &scenario, &report, crate::COMMIT)
            .with_context(|| format!("writing results to --out {}", dir.display()))?;
        println!("results: {}", dir.join("results.json").display());
        // The page is drawn from the files just written, as `imlab report DIR` redraws it.
        let page = imlab_reports::sim::read_sim_report(dir)
            .and_then(|page| imlab_reports::sim::write_sim_report(dir, &page))?;
        println!(
            "report: {}",
            page.last().expect("the page is written last").display()
        );
        if args.timeline {
            let trace_file = trace_file.as_deref().expect("--timeline writes a trace");
            let page = imlab_sim::timeline::write(dir, &scenario, &report, trace_file)
                .map_err(|error| anyhow::anyhow!("writing the timeline: {error}"))?;
            println!("timeline: {}", page.display());
        }
    }
    if report.ok() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        let replay = replay_line(&scenario, seed, &args.overrides, &args.plant);
        println!("replay: {replay}");
        Ok(std::process::ExitCode::from(1))
    }
}

/// One line per server crash: how fast the devices logged in at the crash came back, the
/// percentiles over those still trying (not killed or gone inactive before they were back).
fn storm_line(storm: &imlab_sim::storm::StormSummary) -> String {
    let after = |back: Option<f64>| back.map_or("never".to_string(), |s| format!("{s:.1} s"));
    let left = match storm.devices_left {
        0 => String::new(),
        n => format!(" ({n} stopped trying: app killed or inactive)"),
    };
    format!(
        "storm: crash at {:.0} s, {} of {} devices back{left}; 50% in {}, 90% in {}, 99% in {} \
         after the restart; peak {} logins/s, {} accepts/s",
        storm.crashed_at_s,
        storm.devices_back,
        storm.devices_connected,
        after(storm.back_50_s),
        after(storm.back_90_s),
        after(storm.back_99_s),
        storm.logins_per_s_peak,
        storm.accepts_per_s_peak
    )
}

/// `sim run --progress`: simulated time against the total, trace events per wall second
/// (over the last update), and indicatif's ETA from the simulated seconds' rate.
struct SimProgress {
    bar: indicatif::ProgressBar,
    last: Option<(std::time::Instant, u64)>,
    events_per_s: f64,
}

impl SimProgress {
    fn new() -> SimProgress {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(1),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {msg}, ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        SimProgress {
            bar,
            last: None,
            events_per_s: 0.0,
        }
    }

    fn update(&mut self, progress: &imlab_sim::run::Progress) {
        let now = std::time::Instant::now();
        if let Some((at, events)) = self.last {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                self.events_per_s = progress.events.saturating_sub(events) as f64 / wall;
            }
        }
        self.last = Some((now, progress.events));
        self.bar.set_length(progress.total.as_secs().max(1));
        self.bar.set_position(progress.simulated.as_secs());
        self.bar.set_message(format!(
            "{} of {} simulated, {:.0} events/s",
            humantime::format_duration(Duration::from_secs(progress.simulated.as_secs())),
            humantime::format_duration(Duration::from_secs(progress.total.as_secs())),
            self.events_per_s
        ));
    }
}

fn run_sweep(args: SweepArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(SweepCommand::Merge(merge)) = args.merge {
        return run_merge(merge);
    }
    let file = args.scenario.expect("clap requires the scenario");
    let (first, last) = args.seeds.expect("clap requires --seeds");
    let mut scenario = load(&file)?;
    apply(&args.overrides, &mut scenario)?;
    if let Some(dir) = &args.out {
        crate::out_dir::check(dir)?;
    }
    let shard = args.shard.unwrap_or(imlab_sim::shard::Shard::ALL);
    let seeds = shard.seeds(first, last);
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let of_shard = if shard == imlab_sim::shard::Shard::ALL {
        String::new()
    } else {
        format!(" (shard {shard})")
    };
    println!(
        "sweep: {} seeds {first}..{last}{of_shard} of {} ({} devices, {}), {jobs} at a time, \
         build {}",
        seeds.len(),
        scenario.file.display(),
        scenario.n_devices(),
        humantime::format_duration(scenario.duration),
        crate::build_name()
    );
    let planted = args.plant.planted();
    let outcomes = sweep_seeds(&scenario, &seeds, jobs, planted, &|outcome| {
        println!(
            "seed {}: {} ({:.1} s, delay p99 {} ms, silent disconnects {})",
            outcome.seed,
            outcome.verdict(),
            outcome.wall.as_secs_f64(),
            outcome.delay_ms_p99,
            outcome.silent_disconnects
        );
    });
    let flags = format!("{}{}", args.overrides.flags(), args.plant.replay_suffix());
    let replay = |seed: u64| replay_line(&scenario, seed, &args.overrides, &args.plant);
    let failed = summary(&outcomes, &replay);
    if let Some(dir) = &args.out {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let meta = imlab_sim::shard::SweepMeta {
            schema_version: imlab_sim::shard::META_SCHEMA_VERSION,
            scenario_file: file.display().to_string(),
            scenario_hash: imlab_sim::shard::scenario_hash(&text),
            first_seed: first,
            last_seed: last,
            shard,
            flags,
            commit: crate::COMMIT.to_string(),
        };
        write_csv(dir, &outcomes)
            .and_then(|()| imlab_sim::shard::write_meta(dir, &meta))
            .with_context(|| format!("writing sweep.csv to --out {}", dir.display()))?;
        println!("results: {}", dir.join("sweep.csv").display());
    }
    Ok(exit_code(failed))
}

fn exit_code(failed: usize) -> std::process::ExitCode {
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// Prints failing seeds with their replay commands and the spread across seeds; returns how
/// many seeds failed.
fn summary(outcomes: &[SeedOutcome], replay: &dyn Fn(u64) -> String) -> usize {
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
    for outcome in &failed {
        for (name, detail) in &outcome.failures {
            println!("  seed {}: {name}: {detail}", outcome.seed);
        }
        println!("  replay: {}", replay(outcome.seed));
    }
    let spread = |measure: fn(&SeedOutcome) -> u64| {
        Spread::of(
            outcomes
                .iter()
                .filter(|o| !o.trace_hash.is_empty())
                .map(measure)
                .collect(),
        )
    };
    println!("delay_ms p99 across seeds: {}", spread(|o| o.delay_ms_p99));
    println!(
        "silent disconnects across seeds: {}",
        spread(|o| o.silent_disconnects)
    );
    println!("reconnects across seeds: {}", spread(|o| o.reconnects));
    println!("seeds: {}, failed: {}", outcomes.len(), failed.len());
    failed.len()
}

fn run_merge(args: MergeArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(dir) = &args.out {
        crate::out_dir::check(dir)?;
    }
    let (meta, outcomes) = imlab_sim::shard::merge(&args.dirs, args.allow_mixed_builds)?;
    println!(
        "merged: {} directories, seeds {}..{} of {}",
        args.dirs.len(),
        meta.first_seed,
        meta.last_seed,
        meta.scenario_file
    );
    if meta.commit.contains(',') {
        println!(
            "note: the shards were run by different builds ({}): a seed replays its trace \
             hash only on the build that ran it",
            meta.commit
        );
    }
    let replay = |seed: u64| {
        format!(
            "imlab sim run {} --seed {seed}{}",
            meta.scenario_file, meta.flags
        )
    };
    let failed = summary(&outcomes, &replay);
    if let Some(dir) = &args.out {
        write_csv(dir, &outcomes)
            .and_then(|()| imlab_sim::shard::write_meta(dir, &meta))
            .with_context(|| format!("writing sweep.csv to --out {}", dir.display()))?;
        println!("results: {}", dir.join("sweep.csv").display());
    }
    Ok(exit_code(failed))
}
