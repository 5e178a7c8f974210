//! `imlab load`: wiring for imlab-loadgen.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use imlab_loadgen::config::{LoadConfig, Pattern};

/// Load-test a deployed server with real sockets; latency and reconnection report.
#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  imlab load --target 127.0.0.1:7400 --clients 1000 --duration 30s --msg-rate 5000 --out out/load\n  \
    imlab load --target 127.0.0.1:7400 --clients 200 --duration 1m --pattern group:20 --heartbeat wechat\n  \
    imlab load merge out/load-a out/load-b --out out/load-all"
)]
pub struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    /// The server (loopback addresses only on shared machines). Required.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Virtual devices, one per user. Required.
    #[arg(long)]
    clients: Option<usize>,
    /// How long to send, after the ramp. Required.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Messages per second over all clients, on an open-loop schedule.
    #[arg(long, default_value_t = 100.0)]
    msg_rate: f64,
    /// one-to-one or group:SIZE.
    #[arg(long, default_value = "one-to-one")]
    pattern: Pattern,
    /// Heartbeat strategy of every client.
    #[arg(long, default_value = "fixed:30s")]
    heartbeat: String,
    /// Sign tokens with this secret (the server's --auth-secret).
    #[arg(long, env = "IMLAB_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Time after the last send for stragglers.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Seed of the send schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write results.json and timeseries.csv here (rewritten every second).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum LoadCommand {
    /// Merge the results of several load generators into one report (histograms merge
    /// losslessly).
    #[command(after_help = "Example:\n  imlab load merge out/load-a out/load-b --out out/load-all")]
    Merge {
        /// Result directories of `imlab load --out`.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged results.json and histograms.hlog go.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run_command(args: LoadArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(LoadCommand::Merge { dirs, out }) = args.command {
        let merged = imlab_loadgen::merge::merge(&dirs, &out).map_err(anyhow::Error::msg)?;
        print!("{}", merged.summary());
        println!("results: {}", out.join("results.json").display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (Some(target), Some(clients), Some(duration)) = (args.target, args.clients, args.duration)
    else {
        anyhow::bail!(
            "imlab load needs --target, --clients and --duration (or the merge subcommand)"
        );
    };
    anyhow::ensure!(
        target.ip().is_loopback(),
        "--target {target}: load tests target loopback addresses only"
    );
    let config = LoadConfig {
        target,
        clients,
        duration,
        connect_rate: args.connect_rate,
        msg_rate: args.msg_rate,
        pattern: args.pattern,
        heartbeat: args.heartbeat,
        auth_secret: args.auth_secret,
        body_bytes: args.body_bytes,
        drain: args.drain,
        out: args.out.clone(),
        seed: args.seed,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    // A live line on a terminal: connected, sends, acks, p99 so far, errors.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let line = bar.clone();
    let progress: imlab_loadgen::run::Progress = Arc::new(move |results| {
        let Some(bar) = &line else { return };
        let (m, c) = (&results.messages, &results.connections);
        bar.set_message(format!(
            "{:.0}s  connected {}  sent {}  acked {}  deliver p99 {:.1} ms  disconnects {}  errors {}",
            results.elapsed_s,
            results.connected_now,
            m.sent,
            m.acked,
            results.latency_ms.deliver.p99,
            c.disconnects,
            c.failed + m.failed,
        ));
    });
    let results = runtime.block_on(imlab_loadgen::run::run(config, progress));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let results = results?;
    print!("{}", results.summary());
    if let Some(dir) = &args.out {
        println!("results: {}", dir.join("results.json").display());
    }
    let m = &results.messages;
    if m.lost > 0 || m.duplicated > 0 {
        println!(
            "FAILED: {} deliveries lost, {} duplicated",
            m.lost, m.duplicated
        );
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
