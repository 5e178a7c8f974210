//! `imlab load --workers N`: runs N copies of `imlab load` as child processes, each on its
//! share of the clients and rates, and merges their results. The workers share one run tag
//! and number their clients globally (worker k's follow worker k-1's), so a message may go
//! to another worker's client; the merge judges those deliveries (`imlab_loadgen::crossings`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use imlab_loadgen::config::Pattern;

/// The settings passed on to every worker.
pub struct WorkerArgs {
    pub target: String,
    pub duration: Duration,
    /// `--scenario` and its options: every worker reads the file with the same seed, runs its
    /// share of the devices and sends their part of the one plan.
    pub scenario: Option<ScenarioArgs>,
    pub connect_rate: f64,
    pub msg_rate: f64,
    pub pattern: Pattern,
    pub heartbeat: String,
    pub heartbeat_timeout: Duration,
    pub ack_delay: Duration,
    pub auth_secret: Option<String>,
    pub body_bytes: usize,
    pub drain: Duration,
    pub reconnect_wait: Duration,
    pub max_open_messages: usize,
    pub backoff: imlab_core::client::BackoffConfig,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub source_ips: Option<String>,
    pub workers: usize,
    pub threads: usize,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub carrier: Vec<String>,
    pub trace: Option<PathBuf>,
    pub ws: Option<String>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--protocol` and its options, passed on as given (an MQTT password by environment).
    pub protocol_args: Vec<String>,
    /// The MQTT password, passed by environment so no process listing shows it.
    pub mqtt_password: Option<String>,
}

/// `--scenario` as the workers get it.
pub struct ScenarioArgs {
    pub file: PathBuf,
    pub devices: Option<usize>,
    pub traffic_scale: f64,
    pub carrier_faults_only: bool,
}

/// Worker `worker`'s share of `clients` over `workers`: the number of its first client and how
/// many it runs (the first `clients % workers` workers one more).
pub fn share_of(clients: usize, workers: usize, worker: usize) -> (usize, usize) {
    let (base, extra) = (clients / workers, clients % workers);
    (
        worker * base + worker.min(extra),
        base + usize::from(worker < extra),
    )
}

/// A worker process, killed if the parent gives up on it (an error before it was waited for),
/// so no worker outlives the command that started it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Where worker `worker` of a `--workers` run writes its results: inside the run's `--out`.
pub fn worker_dir(out: &std::path::Path, worker: usize) -> PathBuf {
    out.join(format!("worker-{worker}"))
}

/// Runs `--workers` copies of this command, each on its share of the clients and of the
/// rates, then merges their results.
pub fn run_workers(args: &WorkerArgs, clients: usize) -> anyhow::Result<std::process::ExitCode> {
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
    let run_tag = imlab_loadgen::config::run_tag(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        0,
    );
    let mut children = Vec::new();
    let mut dirs = Vec::new();
    for worker in 0..args.workers {
        let (first_client, share) = share_of(clients, args.workers, worker);
        let dir = worker_dir(&out, worker);
        let mut command = std::process::Command::new(&exe);
        command
            .arg("load")
            .args(["--target", &args.target])
            .args([
                "--duration",
                &humantime::format_duration(args.duration).to_string(),
            ])
            .args(["--connect-rate", &(args.connect_rate / workers).to_string()]);
        match &args.scenario {
            // The file brings the devices, their traffic, heartbeats and carriers; one seed
            // lays them out and plans the messages alike in every worker.
            Some(scenario) => {
                command
                    .arg("--scenario")
                    .arg(&scenario.file)
                    .args(["--traffic-scale", &scenario.traffic_scale.to_string()])
                    .args(["--seed", &args.seed.to_string()]);
                if scenario.carrier_faults_only {
                    command.arg("--carrier-faults-only");
                }
                if let Some(devices) = scenario.devices {
                    command.args(["--devices", &devices.to_string()]);
                }
            }
            None => {
                command
                    .args(["--clients", &share.to_string()])
                    .args(["--msg-rate", &(args.msg_rate / workers).to_string()])
                    .args(["--pattern", &pattern])
                    .args(["--heartbeat", &args.heartbeat])
                    .args(["--body-bytes", &args.body_bytes.to_string()])
                    .args(["--seed", &(args.seed + worker as u64).to_string()]);
                for carrier in &args.carrier {
                    command.args(["--carrier", carrier]);
                }
            }
        }
        command
            .args([
                "--heartbeat-timeout",
                &humantime::format_duration(args.heartbeat_timeout).to_string(),
            ])
            .args([
                "--ack-delay",
                &humantime::format_duration(args.ack_delay).to_string(),
            ])
            .args([
                "--drain",
                &humantime::format_duration(args.drain).to_string(),
            ])
            .args([
                "--reconnect-wait",
                &humantime::format_duration(args.reconnect_wait).to_string(),
            ])
            .args(["--max-open-messages", &args.max_open_messages.to_string()])
            .args([
                "--reconnect-backoff",
                &[
                    args.backoff.initial,
                    args.backoff.max,
                    args.backoff.jitter_max,
                ]
                .map(|d| humantime::format_duration(d).to_string())
                .join(","),
            ])
            .args(["--threads", &args.threads.to_string()])
            .args(["--out", &dir.display().to_string()])
            .args(["--workers", &args.workers.to_string()])
            .args(["--worker-index", &worker.to_string()])
            .args(["--run-tag", &run_tag])
            .args(["--first-client", &first_client.to_string()])
            .args(["--clients-total", &clients.to_string()])
            .args(&args.protocol_args)
            .stdout(std::process::Stdio::null());
        // Several processes may bind the same source addresses: ports are per process pair.
        if let Some(ips) = &args.source_ips {
            command.args(["--source-ips", ips]);
        }
        if let Some(secret) = &args.auth_secret {
            command.env("IMLAB_AUTH_SECRET", secret);
        }
        if let Some(password) = &args.mqtt_password {
            command.env("IMLAB_MQTT_PASSWORD", password);
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
        if args.trace.is_some() {
            // One trace per worker, beside its results.
            command.arg("--trace").arg(dir.join("carrier-trace.jsonl"));
        }
        if let Some(path) = &args.ws {
            command.args(["--ws", path]);
        }
        // Worker k serves its own metrics on the port after worker k-1's (port 0: any).
        if let Some(addr) = args.metrics_listen {
            let mut addr = addr;
            if addr.port() != 0 {
                let port = addr.port().checked_add(worker as u16).with_context(|| {
                    format!("--metrics-listen {addr}: no port left for worker {worker}")
                })?;
                addr.set_port(port);
            }
            command.args(["--metrics-listen", &addr.to_string()]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting worker {worker}"))?;
        children.push((worker, ChildGuard(child)));
        dirs.push(dir);
    }
    let mut failed = Vec::new();
    for (worker, mut child) in children {
        let status = child
            .0
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
    let mut merged =
        imlab_loadgen::merge::merge(&present, &out, imlab_loadgen::merge::Targets::MustMatch)
            .map_err(anyhow::Error::msg)?;
    // The merged run is reproduced by this command, not by its workers'.
    merged.provenance = imlab_loadgen::results::Provenance {
        command_line: std::env::args().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: crate::COMMIT.to_string(),
        seed: args.seed,
        duration_s: args.duration.as_secs_f64(),
        // Per worker process, as each recorded it.
        threads: merged.provenance.threads,
    };
    imlab_loadgen::results::write_json(&out, &merged)
        .with_context(|| format!("writing {}", out.join("results.json").display()))?;
    crate::report::load_report(&out)?;
    print!("{}", merged.summary());
    println!(
        "results: {} (merged from {} workers)",
        out.join("results.json").display(),
        present.len()
    );
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(crate::load::verdict(&merged))
}
