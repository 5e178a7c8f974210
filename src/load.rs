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
    imlab load --target 127.0.0.1:7400 --clients 1000 --duration 30s --tls --ca cert.pem\n  \
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
    /// Local loopback addresses to spread connections over: A-B, A/PREFIX or one address.
    #[arg(long)]
    source_ips: Option<String>,
    /// Split the clients (and the message rate) over this many worker processes, each
    /// writing DIR/worker-N, merged into DIR. Needed beyond one process's open-file limit.
    /// Messages stay within a worker's clients.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Speak TLS to the server. Needs --ca: this build carries no public root certificates.
    #[arg(long)]
    tls: bool,
    /// PEM file of the certificates to trust with --tls: the server's CA, or its self-signed
    /// certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Name the server's certificate must carry (DNS name or IP) with --tls. Default: the
    /// --target IP address.
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
    /// (Internal) this process is worker N of a --workers run.
    #[arg(long, hide = true)]
    worker_index: Option<usize>,
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
        crate::report::load_report(&out)?;
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
    let source_ips = match &args.source_ips {
        Some(text) => imlab_loadgen::source::parse_source_ips(text).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    let tls = tls_client(&args)?;
    if args.workers > 1 && args.worker_index.is_none() {
        return run_workers(&args, clients);
    }
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
        source_ips,
        worker: args.worker_index.unwrap_or(0),
        tls,
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
        // Workers leave the charts to the merging parent.
        if args.worker_index.is_none() {
            crate::report::load_report(dir)?;
        }
        println!("results: {}", dir.join("results.json").display());
    }
    Ok(verdict(&results))
}

/// The TLS settings of `--tls`, with the `--ca` file read and checked now.
fn tls_client(args: &LoadArgs) -> anyhow::Result<Option<imlab_core::tls::TlsClient>> {
    if !args.tls {
        return Ok(None);
    }
    let ca = args.ca.as_deref().context(
        "--tls needs --ca FILE, the PEM certificate (the server's CA, or its self-signed \
         certificate) to trust: this build carries no public root certificates",
    )?;
    let tls = imlab_core::tls::TlsClient::from_ca_file(ca, args.tls_server_name.as_deref())
        .context("--ca")?;
    Ok(Some(tls))
}

/// Runs `--workers` copies of this command, each on its share of the clients and of the
/// rates, then merges their results.
fn run_workers(args: &LoadArgs, clients: usize) -> anyhow::Result<std::process::ExitCode> {
    let out = args
        .out
        .clone()
        .context("--workers needs --out (each worker writes DIR/worker-N, merged into DIR)")?;
    anyhow::ensure!(
        clients >= 2 * args.workers,
        "--workers {}: need at least 2 clients per worker",
        args.workers
    );
    let exe = std::env::current_exe().context("finding the imlab binary")?;
    let pattern = match args.pattern {
        Pattern::OneToOne => "one-to-one".to_string(),
        Pattern::Group(size) => format!("group:{size}"),
    };
    let workers = args.workers as f64;
    let mut children = Vec::new();
    let mut dirs = Vec::new();
    for worker in 0..args.workers {
        let share = clients / args.workers + usize::from(worker < clients % args.workers);
        let dir = out.join(format!("worker-{worker}"));
        let mut command = std::process::Command::new(&exe);
        command
            .arg("load")
            .args(["--target", &args.target.expect("checked").to_string()])
            .args(["--clients", &share.to_string()])
            .args([
                "--duration",
                &humantime::format_duration(args.duration.expect("checked")).to_string(),
            ])
            .args(["--connect-rate", &(args.connect_rate / workers).to_string()])
            .args(["--msg-rate", &(args.msg_rate / workers).to_string()])
            .args(["--pattern", &pattern])
            .args(["--heartbeat", &args.heartbeat])
            .args(["--body-bytes", &args.body_bytes.to_string()])
            .args([
                "--drain",
                &humantime::format_duration(args.drain).to_string(),
            ])
            .args(["--seed", &(args.seed + worker as u64).to_string()])
            .args(["--out", &dir.display().to_string()])
            .args(["--worker-index", &worker.to_string()])
            .stdout(std::process::Stdio::null());
        // Several processes may bind the same source addresses: ports are per process pair.
        if let Some(ips) = &args.source_ips {
            command.args(["--source-ips", ips]);
        }
        if let Some(secret) = &args.auth_secret {
            command.env("IMLAB_AUTH_SECRET", secret);
        }
        if args.tls {
            command.arg("--tls");
            if let Some(ca) = &args.ca {
                command.arg("--ca").arg(ca);
            }
            if let Some(name) = &args.tls_server_name {
                command.args(["--tls-server-name", name]);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting worker {worker}"))?;
        children.push((worker, child));
        dirs.push(dir);
    }
    let mut failed = Vec::new();
    for (worker, mut child) in children {
        let status = child
            .wait()
            .with_context(|| format!("waiting for worker {worker}"))?;
        // Exit 1 means the worker finished and found losses; anything else is a failure.
        if !matches!(status.code(), Some(0 | 1)) {
            failed.push(format!("worker {worker} exited with {status}"));
        }
    }
    let present: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| d.join("results.json").exists())
        .collect();
    anyhow::ensure!(
        !present.is_empty(),
        "no worker wrote results: {}",
        failed.join("; ")
    );
    let merged = imlab_loadgen::merge::merge(&present, &out).map_err(anyhow::Error::msg)?;
    crate::report::load_report(&out)?;
    print!("{}", merged.summary());
    println!(
        "results: {} (merged from {} workers)",
        out.join("results.json").display(),
        present.len()
    );
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(verdict(&merged))
}

/// Exit 1 when a delivery was lost or duplicated: the run's honest answer.
fn verdict(results: &imlab_loadgen::results::LoadResults) -> std::process::ExitCode {
    let m = &results.messages;
    if m.lost > 0 || m.duplicated > 0 {
        println!(
            "FAILED: {} deliveries lost, {} duplicated",
            m.lost, m.duplicated
        );
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
