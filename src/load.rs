//! `imlab load`: wiring for imlab-loadgen.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use imlab_loadgen::config::{LoadConfig, Pattern, ProtocolChoice};
use imlab_loadgen::target::Targets;
use imlab_loadgen::transport::Transport;
use tokio_util::sync::CancellationToken;

use crate::values::{non_empty_secret, non_negative_rate, positive_count, positive_rate};

/// Load-test a deployed server with real sockets; latency and reconnection report.
#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    after_help = crate::help::examples(&[
        "imlab load --target 127.0.0.1:7400 --clients 1000 --duration 30s --msg-rate 5000 --out out/load",
        "imlab load --target im.example.com:7400 --clients 200 --duration 1m --pattern group:20 --heartbeat wechat",
        "imlab load --target localhost:7400 --clients 1000 --duration 30s --tls --ca cert.pem",
        "imlab load --target 10.0.0.1:7400,10.0.0.2:7400 --clients 2000 --duration 1m --out out/gateways",
        "imlab load --target 127.0.0.1:7400 --scenario scenarios/flaky-carrier.toml --duration 5m --out out/flaky",
        "imlab load merge out/load-a out/load-b --out out/load-all",
    ]),
    after_long_help = crate::help::examples_with(&[
        "imlab load --target 127.0.0.1:7400 --clients 1000 --duration 30s --msg-rate 5000 --out out/load",
        "imlab load --target im.example.com:7400 --clients 200 --duration 1m --pattern group:20 --heartbeat wechat",
        "imlab load --target localhost:7400 --clients 1000 --duration 30s --tls --ca cert.pem",
        "imlab load --target 10.0.0.1:7400,10.0.0.2:7400 --clients 2000 --duration 1m --out out/gateways",
        "imlab load --target 127.0.0.1:7400 --scenario scenarios/flaky-carrier.toml --duration 5m --out out/flaky",
        "imlab load merge out/load-a out/load-b --out out/load-all",
    ], LOAD_EXIT_CODES),
)]
pub struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    /// The server as HOST:PORT (an address or a name, resolved at start), or several
    /// separated by commas, all one service. Clients are dealt round every address the
    /// entries resolve to (client i tries address i mod N first) and move on to the next
    /// address when a connect fails. Required.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    target: Option<Targets>,
    /// Virtual devices, one per user. Required.
    #[arg(long, value_parser = positive_count)]
    clients: Option<usize>,
    /// How long to send, after the ramp. Required.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// New connections per second during the ramp: 500, 500/s or 30000/m.
    #[arg(long, default_value_t = 500.0, value_parser = positive_rate)]
    connect_rate: f64,
    /// Messages over all clients, on an open-loop schedule: 5000 (per second), 5000/s or
    /// 300000/m.
    #[arg(long, default_value_t = 100.0, value_parser = non_negative_rate)]
    msg_rate: f64,
    /// one-to-one or group:SIZE.
    #[arg(long, default_value = "one-to-one")]
    pattern: Pattern,
    /// Heartbeat strategy of every client.
    #[arg(long, default_value = "fixed:30s")]
    heartbeat: String,
    /// A Ping unanswered this long means the connection is dead (a silent NAT drop is
    /// noticed only so): the client reconnects.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    heartbeat_timeout: Duration,
    /// How long a client's DeviceAck of a pushed message may wait for another frame to ride
    /// along with (its next send, a Ping), as TCP's delayed ACK; 0s acks every push at once.
    /// Keep it well under the server's fallback for unacked pushes (imlab serve: a Notify
    /// after 10 s). imlab's protocol only (an MQTT QoS 1 PUBACK goes at once).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    ack_delay: Duration,
    /// Sign tokens with this secret (the server's --auth-secret).
    #[arg(long, env = "IMLAB_AUTH_SECRET", hide_env_values = true, value_parser = non_empty_secret)]
    auth_secret: Option<String>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Time after the last send for stragglers.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// After the drain, wait at most this long for recipients that are offline (a server
    /// restart) to log in again and sync; what they still lack then is pending, not lost.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    reconnect_wait: Duration,
    /// The most messages in flight the ledger follows (each process's, with --workers):
    /// planned and not yet acked and delivered to every recipient. At it the run stops
    /// sending, drains, and exits INCOMPLETE: only a target that acks what it does not
    /// deliver, or recipients that stay away, reach it. 80 to 150 bytes a message.
    #[arg(long, default_value_t = imlab_loadgen::ledger::OPEN_MESSAGES_MAX)]
    max_open_messages: usize,
    /// How a device waits before it reconnects: INITIAL after a first failure, doubling up to
    /// CAP, plus a uniform random JITTER up to the given most, added after the cap (Mars's
    /// policy; the jitter spreads a restart's reconnection storm). 0s jitter brings every
    /// device back at once.
    #[arg(long, value_name = "INITIAL,CAP,JITTER", default_value = "1s,30s,19s",
          value_parser = crate::values::backoff)]
    reconnect_backoff: imlab_core::client::BackoffConfig,
    /// Seed of the send schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write results.json and timeseries.csv here (every second: results.json rewritten,
    /// timeseries.csv appended).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Local loopback addresses to spread connections over: A-B, A/PREFIX or one address.
    #[arg(long)]
    source_ips: Option<String>,
    /// Split the clients (and the message rate) over this many worker processes, each
    /// writing DIR/worker-N, merged into DIR. Needed beyond one process's open-file limit.
    /// One-to-one messages go to any client, of any worker; groups stay within a worker.
    /// With --scenario, each worker runs its share of the scenario's devices, and together
    /// they send the one plan a single process would.
    #[arg(long, default_value_t = 1, value_parser = positive_count)]
    workers: usize,
    /// Threads that run each process's clients: 0 = one per core. 1 runs every client on
    /// one thread without work stealing: the least CPU per message when the generator shares
    /// the machine with the server it measures. results.json records how many ran.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Speak TLS to the server. Needs --ca: this build carries no public root certificates.
    #[arg(long)]
    tls: bool,
    /// PEM file of the certificates to trust with --tls: the server's CA, or its self-signed
    /// certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Name the server's certificate must carry (DNS name or IP) with --tls. Default: the
    /// --target host.
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
    /// Run the carrier model (NAT expiry, loss, delay, bandwidth) on every connection, in
    /// this process: a preset or a carrier TOML file, with a weight after a colon. Several,
    /// comma-separated or repeated, spread the clients by weight, e.g. cmcc-3g:0.6,us-lte:0.4.
    /// Presets: cmcc-3g, cu-2g, ct-3g, us-lte, home-wifi, subway, elevator.
    #[arg(long, value_name = "PRESET|FILE[:WEIGHT],...")]
    carrier: Vec<String>,
    /// Log every carrier-model decision to FILE (JSON Lines); with several carriers, one file
    /// each (FILE.0.EXT, FILE.1.EXT...).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Speak the protocol over WebSocket, upgrading at this path (e.g. /, /imlab, /mqtt):
    /// imlab sends one binary message per frame with subprotocol "imlab"; MQTT its packets in
    /// binary messages with subprotocol "mqtt". With --tls it is wss.
    #[arg(long, value_name = "PATH")]
    ws: Option<String>,
    /// Serve the run's live metrics (counters, gauges, latency quantiles) in the Prometheus
    /// text format at http://ADDR/metrics, for Grafana beside the server's own.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Run a scenario file's devices on real sockets against --target: its device groups
    /// (count, carrier, heartbeat, app-state cycle, devices per user, traffic) through the
    /// in-process carrier model, and its carrier faults on the carriers' clocks from the
    /// start. Runs the scenario's duration unless --duration is given. Faults of the server,
    /// devices or push service are refused by name (see --carrier-faults-only).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["clients", "pattern", "heartbeat", "body_bytes", "carrier", "msg_rate"]
    )]
    scenario: Option<PathBuf>,
    /// With --scenario: about N devices in all, each device group keeping its share of the
    /// file's (at least one a group), as `imlab sim run --devices`.
    #[arg(long, value_name = "N", requires = "scenario", value_parser = positive_count)]
    devices: Option<usize>,
    /// With --scenario: multiply every device's message rates by K.
    #[arg(long, value_name = "K", default_value_t = 1.0, requires = "scenario", value_parser = positive_rate)]
    traffic_scale: f64,
    /// With --scenario: replay only its carrier faults, skipping (and listing) those a load
    /// generator cannot cause on a server it does not run (server_crash, disk_stall...).
    #[arg(long, requires = "scenario")]
    carrier_faults_only: bool,
    #[command(flatten)]
    mqtt: MqttArgs,
    /// (Internal) this process is worker N of a --workers run.
    #[arg(long, hide = true)]
    worker_index: Option<usize>,
    /// (Internal) a --workers run's tag, shared by its workers.
    #[arg(long, hide = true, requires_all = ["worker_index", "first_client", "clients_total"])]
    run_tag: Option<String>,
    /// (Internal) the number of this worker's first client.
    #[arg(long, hide = true, requires = "run_tag")]
    first_client: Option<u32>,
    /// (Internal) clients over all workers of the run.
    #[arg(long, hide = true, requires = "run_tag")]
    clients_total: Option<usize>,
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
        /// Merge runs against different targets too (by default that is refused).
        #[arg(long)]
        force: bool,
    },
}

/// The exit codes, for `--help`.
const LOAD_EXIT_CODES: &str = "Exit codes:\n  0  every message acked and delivered\n  \
    1  a delivery was lost or duplicated, or the run could not start\n  \
    3  incomplete: sends refused, failed or unacked, deliveries pending, or logins refused";

pub fn run_command(args: LoadArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(LoadCommand::Merge { dirs, out, force }) = &args.command {
        crate::out_dir::check(out)?;
        let targets = if *force {
            imlab_loadgen::merge::Targets::MayDiffer
        } else {
            imlab_loadgen::merge::Targets::MustMatch
        };
        let merged = imlab_loadgen::merge::merge(dirs, out, targets).map_err(anyhow::Error::msg)?;
        crate::report::load_report(out)?;
        print!("{}", merged.summary());
        println!("results: {}", out.join("results.json").display());
        return Ok(verdict(&merged));
    }
    let scenario = match &args.scenario {
        Some(file) => Some(scenario_population(file, &args)?),
        None => None,
    };
    let (target, clients, duration) = match (&scenario, &args.target) {
        (Some(scenario), Some(target)) => (
            target.clone(),
            match args.worker_index {
                // A worker runs its share of the scenario's devices.
                Some(worker) => {
                    crate::load_workers::share_of(
                        scenario.population.clients(),
                        args.workers,
                        worker,
                    )
                    .1
                }
                None => scenario.population.clients(),
            },
            args.duration.unwrap_or(scenario.duration),
        ),
        _ => {
            let (Some(target), Some(clients), Some(duration)) =
                (args.target.clone(), args.clients, args.duration)
            else {
                anyhow::bail!(
                    "imlab load needs --target, and --clients and --duration or --scenario \
                     (or the merge subcommand)"
                );
            };
            (target, clients, duration)
        }
    };
    let source_ips = match &args.source_ips {
        Some(text) => imlab_loadgen::source::parse_source_ips(text).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let addresses = target.resolve_all().map_err(anyhow::Error::msg)?;
    // Said once, by the command the user typed, not again by each of its workers.
    if addresses.len() > 1 && args.worker_index.is_none() {
        let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        eprintln!(
            "--target {target}: {} addresses ({}); client i tries address i mod {} first and \
             the next ones when a connect fails",
            addresses.len(),
            listed.join(", "),
            addresses.len()
        );
    }
    let tls = tls_client(&args, &target)?;
    let mut carriers = Vec::new();
    for text in &args.carrier {
        carriers.extend(imlab_loadgen::carrier::parse_mix(text).map_err(anyhow::Error::msg)?);
    }
    anyhow::ensure!(
        args.trace.is_none() || !carriers.is_empty() || scenario.is_some(),
        "--trace logs the carrier model's decisions: it needs --carrier or --scenario"
    );
    if let Some(scenario) = &scenario {
        carriers.clone_from(&scenario.carriers);
        // Said once, by the command the user typed, not again by each of its workers.
        if args.worker_index.is_none() {
            eprintln!("{}", scenario.describe());
        }
    }
    let protocol = args.mqtt.choice(args.auth_secret.is_some())?;
    let connect_timeout = protocol.connect_timeout();
    let ws = match &args.ws {
        Some(path) => Some(
            imlab_core::ws::WsClient::new(
                &target.first().host,
                addresses[0],
                path,
                Some(protocol.ws_subprotocol()),
            )
            .map(|client| match protocol {
                // MQTT over WebSocket is a byte stream in binary messages.
                ProtocolChoice::Mqtt(_) => client.carrying_bytes(),
                ProtocolChoice::Imlab => client,
            })
            .map_err(|error| anyhow::anyhow!("--ws: {error}"))?,
        ),
        None => None,
    };
    // Before any work, workers or not: a run that cannot write its results is wasted.
    if let Some(dir) = &args.out {
        crate::out_dir::check(dir)?;
    }
    if args.workers > 1 && args.worker_index.is_none() {
        // The merge of the workers' results holds what crossed between them.
        let (msg_rate, to_anyone) = match &scenario {
            Some(scenario) => (
                scenario.msg_rate,
                scenario.population.peer_devices_per_message(),
            ),
            None => (args.msg_rate, imlab_loadgen::run::to_anyone(args.pattern)),
        };
        imlab_loadgen::run::check_merge_memory(msg_rate, duration, to_anyone, args.workers)?;
        return crate::load_workers::run_workers(&args.worker_view(duration), clients);
    }
    let config = LoadConfig {
        protocol,
        transport: Transport {
            targets: imlab_loadgen::source::TargetAddresses::new(addresses, connect_timeout),
            source_ips,
            tls,
            ws,
        },
        target_name: target.to_string(),
        clients,
        duration,
        connect_rate: args.connect_rate,
        pattern: args.pattern,
        heartbeat: args.heartbeat.clone(),
        heartbeat_timeout: args.heartbeat_timeout,
        ack_delay: args.ack_delay,
        auth_secret: args.auth_secret.clone(),
        body_bytes: args.body_bytes,
        drain: args.drain,
        reconnect_wait: args.reconnect_wait,
        open_messages_max: args.max_open_messages,
        backoff: args.reconnect_backoff,
        out: args.out.clone(),
        seed: args.seed,
        worker: args.worker_index.unwrap_or(0),
        carriers,
        carrier_trace: args.trace.clone(),
        share: match (&args.run_tag, args.first_client, args.clients_total) {
            (Some(run_tag), Some(first_client), Some(clients_total)) => {
                Some(imlab_loadgen::config::Share {
                    run_tag: run_tag.clone(),
                    first_client,
                    clients_total,
                    // A worker writes DIR/worker-N: its siblings are beside it.
                    others: match (&args.out, args.worker_index) {
                        (Some(dir), Some(index)) => (0..args.workers)
                            .filter(|k| *k != index)
                            .map(|k| {
                                crate::load_workers::worker_dir(dir.parent().unwrap_or(dir), k)
                            })
                            .collect(),
                        _ => Vec::new(),
                    },
                })
            }
            _ => None,
        },
        command_line: std::env::args().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: crate::COMMIT.to_string(),
        msg_rate: match &scenario {
            Some(scenario) => scenario.msg_rate,
            None => args.msg_rate,
        },
        population: scenario.map(|scenario| Arc::new(scenario.population)),
    };
    imlab_loadgen::run::validate(&config)?;
    let runtime = crate::runtime(args.threads).context("starting the tokio runtime")?;
    let stop = CancellationToken::new();
    runtime.spawn(ctrl_c(stop.clone()));
    let (progress, bar) = progress();
    let progress = match args.metrics_listen {
        Some(addr) => crate::load_metrics::serve_alongside(&runtime, addr, progress)?,
        None => progress,
    };
    let results = runtime.block_on(imlab_loadgen::run::run(config, progress, stop));
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

/// The first Ctrl-C (or SIGTERM) finishes the run early, with its results and page; the
/// second aborts at once.
async fn ctrl_c(stop: CancellationToken) {
    let signals = futures::stream::unfold((), |()| async {
        tokio::signal::ctrl_c().await.ok().map(|()| ((), ()))
    });
    on_interrupts(signals, stop, || {
        eprintln!("imlab load: aborted");
        std::process::exit(130);
    })
    .await;
}

/// The first interrupt stops the run (which then finishes its results); the second aborts.
async fn on_interrupts(
    signals: impl futures::Stream<Item = ()>,
    stop: CancellationToken,
    abort: impl FnOnce(),
) {
    use futures::StreamExt;
    let mut signals = std::pin::pin!(signals);
    if signals.next().await.is_none() {
        return;
    }
    eprintln!("imlab load: interrupted; finishing the results (Ctrl-C again to abort)");
    stop.cancel();
    if signals.next().await.is_some() {
        abort();
    }
}

/// A live line on a terminal (connected, sends, acks, refusals, p99 so far, errors); a line
/// per phase otherwise, so logs and scripts see the run advance.
fn progress() -> (imlab_loadgen::run::Progress, Option<indicatif::ProgressBar>) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let line = bar.clone();
    let last_phase = std::sync::Mutex::new((String::new(), Vec::<String>::new()));
    let progress: imlab_loadgen::run::Progress = Arc::new(move |results| {
        let (m, c) = (&results.messages, &results.connections);
        let Some(bar) = &line else {
            let mut last = last_phase.lock().unwrap_or_else(|p| p.into_inner());
            if last.0 != results.phase {
                last.0.clone_from(&results.phase);
                eprintln!(
                    "imlab load ({}): {} at {:.1}s ({} clients logged in, {} sent)",
                    results.protocol_line(),
                    results.phase,
                    results.elapsed_s,
                    results.connected_now,
                    m.sent
                );
            }
            // A new cause of failed logins is said as it appears, not only at the end.
            let causes: Vec<String> = c.login_failures_by_cause.keys().cloned().collect();
            if causes != last.1 {
                last.1 = causes;
                eprintln!(
                    "imlab load: logins failing at {:.1}s: {}",
                    results.elapsed_s,
                    imlab_loadgen::causes::list(&c.login_failures_by_cause)
                );
            }
            return;
        };
        let refused_logins: u64 = c.login_failures_by_cause.values().sum();
        let mut text = format!(
            "{} {:.0}s {}  connected {}  sent {}  acked {}  refused {}  deliver p99 {:.1} ms  \
             disconnects {}  errors {}",
            results.protocol,
            results.elapsed_s,
            results.phase,
            results.connected_now,
            m.sent,
            m.acked,
            m.refusals_by_cause.values().sum::<u64>(),
            results.latency_ms.deliver.p99,
            c.disconnects,
            c.failed + m.failed,
        );
        if refused_logins > 0 {
            text += &format!(
                "  logins failed: {}",
                imlab_loadgen::causes::list(&c.login_failures_by_cause)
            );
        }
        bar.set_message(text);
    });
    (progress, bar)
}

/// The TLS settings of `--tls`, with the `--ca` file read and checked now. The certificate
/// must name `--tls-server-name`, else the target's host name (or its IP address; each
/// address its own when `--target` lists addresses).
fn tls_client(
    args: &LoadArgs,
    target: &Targets,
) -> anyhow::Result<Option<imlab_core::tls::TlsClient>> {
    if !args.tls {
        return Ok(None);
    }
    let ca = args.ca.as_deref().context(
        "--tls needs --ca FILE, the PEM certificate (the server's CA, or its self-signed \
         certificate) to trust: this build carries no public root certificates",
    )?;
    let name = match &args.tls_server_name {
        Some(name) => Some(name.clone()),
        None => target
            .tls_name()
            .map_err(anyhow::Error::msg)?
            .map(str::to_string),
    };
    let tls = imlab_core::tls::TlsClient::from_ca_file(ca, name.as_deref()).context("--ca")?;
    Ok(Some(tls))
}

impl LoadArgs {
    /// What `--workers` passes on to each worker.
    fn worker_view(&self, duration: Duration) -> crate::load_workers::WorkerArgs {
        crate::load_workers::WorkerArgs {
            target: self.target.as_ref().expect("checked").to_string(),
            duration,
            scenario: self
                .scenario
                .clone()
                .map(|file| crate::load_workers::ScenarioArgs {
                    file,
                    devices: self.devices,
                    traffic_scale: self.traffic_scale,
                    carrier_faults_only: self.carrier_faults_only,
                }),
            connect_rate: self.connect_rate,
            msg_rate: self.msg_rate,
            pattern: self.pattern,
            heartbeat: self.heartbeat.clone(),
            heartbeat_timeout: self.heartbeat_timeout,
            ack_delay: self.ack_delay,
            auth_secret: self.auth_secret.clone(),
            body_bytes: self.body_bytes,
            drain: self.drain,
            reconnect_wait: self.reconnect_wait,
            max_open_messages: self.max_open_messages,
            backoff: self.reconnect_backoff,
            seed: self.seed,
            out: self.out.clone(),
            source_ips: self.source_ips.clone(),
            workers: self.workers,
            threads: self.threads,
            tls: self.tls,
            ca: self.ca.clone(),
            tls_server_name: self.tls_server_name.clone(),
            carrier: self.carrier.clone(),
            trace: self.trace.clone(),
            ws: self.ws.clone(),
            metrics_listen: self.metrics_listen,
            protocol_args: self.mqtt.worker_args(),
            mqtt_password: self.mqtt.password.clone(),
        }
    }
}

/// Exit 1 when a delivery was lost or duplicated: the run's honest answer; 3 when the run
/// is incomplete (sends refused or unanswered, deliveries pending, logins refused), with
/// what is missing said.
pub fn verdict(results: &imlab_loadgen::results::LoadResults) -> std::process::ExitCode {
    let m = &results.messages;
    if m.lost > 0 || m.duplicated > 0 {
        println!(
            "FAILED: {} deliveries lost, {} duplicated",
            m.lost, m.duplicated
        );
        return std::process::ExitCode::from(1);
    }
    let mut missing = Vec::new();
    if m.refused > 0 {
        missing.push(format!(
            "{} sends refused by the server ({})",
            m.refused,
            imlab_loadgen::causes::list(&m.refusals_by_cause)
        ));
    }
    if m.unacked > 0 {
        missing.push(format!("{} sends unacked at the end", m.unacked));
    }
    if m.failed > 0 {
        missing.push(format!(
            "{} sends failed (refused for good, or no ack within the protocol's timeout)",
            m.failed
        ));
    }
    if m.pending > 0 {
        missing.push(format!(
            "{} deliveries pending (recipients not back by the end of the drain)",
            m.pending
        ));
    }
    if results.connections.clients_refused > 0 {
        missing.push(format!(
            "{} clients never logged in ({})",
            results.connections.clients_refused,
            imlab_loadgen::causes::list(&results.connections.login_failures_by_cause)
        ));
    }
    if let Some(stopped) = &m.sending_stopped {
        missing.push(format!(
            "sending stopped at {:.1} s with {} messages in flight (--max-open-messages)",
            stopped.at_s, stopped.open_messages_max
        ));
    }
    if results.phase == "interrupted" {
        missing.push(format!("interrupted after {:.1} s", results.elapsed_s));
    }
    if !missing.is_empty() {
        println!("INCOMPLETE: {}", missing.join("; "));
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}

// ---- MQTT (`--protocol mqtt`): its flags, kept together. ----

/// Which protocol the devices speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProtocolName {
    /// imlab's own protocol (imlab-core's client core).
    Imlab,
    /// MQTT 3.1.1 or 5 (see --mqtt-version), against any broker.
    Mqtt,
}

/// The protocol flags: `--protocol`, and the MQTT options (refused with `--protocol imlab`).
#[derive(clap::Args)]
struct MqttArgs {
    /// The devices' protocol.
    #[arg(long, value_enum, default_value = "imlab")]
    protocol: ProtocolName,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, value_name = "3.1.1|5")]
    mqtt_version: Option<imlab_loadgen::protocol::mqtt::Version>,
    /// MQTT QoS of every publish and subscription: 0 (loss allowed), 1 (redelivery allowed)
    /// or 2 (exactly once). Default 1.
    #[arg(long, value_name = "0|1|2")]
    qos: Option<imlab_loadgen::protocol::mqtt::Qos>,
    /// MQTT clean start (clean session in 3.1.1). false keeps each device's session and its
    /// offline queue at the broker: what was sent while a device was away must arrive.
    #[arg(long, value_name = "true|false")]
    clean_start: Option<bool>,
    /// MQTT 5: how long the broker keeps a session after a disconnect (with --clean-start false).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    session_expiry: Option<Duration>,
    /// MQTT user name of every device.
    #[arg(long)]
    username: Option<String>,
    /// MQTT password of every device (needs --username).
    #[arg(long, env = "IMLAB_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// MQTT client ids are PREFIX, the run tag, `-` and the device number. Default imlab-.
    #[arg(long, value_name = "PREFIX")]
    client_id_prefix: Option<String>,
    /// MQTT inbox topic of a device: {user} is its number, {run} the run tag. Default
    /// imlab/{run}/u/{user}.
    #[arg(long, value_name = "TEMPLATE")]
    topic_template: Option<String>,
    /// MQTT topic of a group (--pattern group:N): {group} is its number, {run} the run tag.
    /// Default imlab/{run}/g/{group}.
    #[arg(long, value_name = "TEMPLATE")]
    group_topic_template: Option<String>,
    /// MQTT QoS 1/2 publishes each device has unacknowledged at once (lowered to an MQTT 5
    /// broker's receive maximum); further sends wait in a queue of 1024, then are refused.
    /// Default 16.
    #[arg(long, value_name = "N")]
    inflight: Option<u16>,
    /// How long a PUBACK/PUBCOMP, CONNACK, SUBACK or PINGRESP may take: then the send counts
    /// as failed and the device reconnects with backoff. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ack_timeout: Option<Duration>,
}

impl MqttArgs {
    /// The MQTT flags given, by name.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--mqtt-version", self.mqtt_version.is_some()),
            ("--qos", self.qos.is_some()),
            ("--clean-start", self.clean_start.is_some()),
            ("--session-expiry", self.session_expiry.is_some()),
            ("--username", self.username.is_some()),
            ("--password", self.password.is_some()),
            ("--client-id-prefix", self.client_id_prefix.is_some()),
            ("--topic-template", self.topic_template.is_some()),
            (
                "--group-topic-template",
                self.group_topic_template.is_some(),
            ),
            ("--inflight", self.inflight.is_some()),
            ("--ack-timeout", self.ack_timeout.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// The protocol and its options; MQTT flags with `--protocol imlab` (and imlab's
    /// `--auth-secret` with MQTT) are errors naming the flag.
    fn choice(&self, auth_secret: bool) -> anyhow::Result<ProtocolChoice> {
        if self.protocol == ProtocolName::Imlab {
            if let Some(flag) = self.given().first() {
                anyhow::bail!("{flag} is an MQTT option: add --protocol mqtt");
            }
            return Ok(ProtocolChoice::Imlab);
        }
        anyhow::ensure!(
            !auth_secret,
            "--auth-secret signs imlab login tokens: MQTT brokers take --username and --password"
        );
        let default = imlab_loadgen::protocol::mqtt::MqttOptions::default();
        let options = imlab_loadgen::protocol::mqtt::MqttOptions {
            version: self.mqtt_version.unwrap_or(default.version),
            qos: self.qos.unwrap_or(default.qos),
            clean_start: self.clean_start.unwrap_or(default.clean_start),
            session_expiry: self.session_expiry,
            username: self.username.clone(),
            password: self.password.clone(),
            client_id_prefix: self
                .client_id_prefix
                .clone()
                .unwrap_or(default.client_id_prefix),
            topic_template: self
                .topic_template
                .clone()
                .unwrap_or(default.topic_template),
            group_topic_template: self
                .group_topic_template
                .clone()
                .unwrap_or(default.group_topic_template),
            inflight: self.inflight.unwrap_or(default.inflight),
            ack_timeout: self.ack_timeout.unwrap_or(default.ack_timeout),
        };
        options.check().map_err(anyhow::Error::msg)?;
        Ok(ProtocolChoice::Mqtt(options))
    }

    /// The same flags for a `--workers` child (the password goes by environment).
    fn worker_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push(flag.to_string());
                out.push(value);
            }
        };
        let duration = |d: &Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
        add(
            "--protocol",
            Some(match self.protocol {
                ProtocolName::Imlab => "imlab".into(),
                ProtocolName::Mqtt => "mqtt".into(),
            }),
        );
        add("--mqtt-version", self.mqtt_version.map(|v| v.name().into()));
        add("--qos", self.qos.map(|q| (q as u8).to_string()));
        add("--clean-start", self.clean_start.map(|c| c.to_string()));
        add("--session-expiry", duration(&self.session_expiry));
        add("--username", self.username.clone());
        add("--client-id-prefix", self.client_id_prefix.clone());
        add("--topic-template", self.topic_template.clone());
        add("--group-topic-template", self.group_topic_template.clone());
        add("--inflight", self.inflight.map(|n| n.to_string()));
        add("--ack-timeout", duration(&self.ack_timeout));
        out
    }
}

/// A scenario file as a load run: its population, carriers and total message rate.
struct ScenarioRun {
    population: imlab_loadgen::population::Population,
    carriers: Vec<imlab_loadgen::carrier::CarrierShare>,
    duration: Duration,
    msg_rate: f64,
    skipped: Vec<String>,
    handovers: Vec<String>,
}

impl ScenarioRun {
    /// What the run will do, for the terminal.
    fn describe(&self) -> String {
        let p = &self.population;
        let mut text = format!(
            "scenario {}: {} devices of {} users in {} device groups, {} chats, {} carriers, \
             {:.2} msg/s, {} carrier faults",
            p.name,
            p.clients(),
            p.users.len(),
            p.groups.len(),
            p.chats.len(),
            self.carriers.len(),
            self.msg_rate,
            p.faults.iter().map(Vec::len).sum::<usize>()
        );
        if !self.skipped.is_empty() {
            text += &format!("; skipped {}", self.skipped.join(", "));
        }
        if !self.handovers.is_empty() {
            text += &format!(
                "; the handovers {} move every connection of their group's carrier",
                self.handovers.join(", ")
            );
        }
        text
    }
}

/// Loads `--scenario FILE` with the simulator's own loader and layout.
fn scenario_population(file: &std::path::Path, args: &LoadArgs) -> anyhow::Result<ScenarioRun> {
    use imlab_loadgen::population::{DeviceGroup, DeviceSlot, Population};
    let (traffic_scale, seed) = (args.traffic_scale, args.seed);
    let mut scenario = imlab_sim::scenario::Scenario::load(file)?;
    if let Some(devices) = args.devices {
        scenario
            .scale_devices(devices)
            .map_err(anyhow::Error::msg)?;
    }
    let faults = crate::scenario_faults::socket_faults(&scenario, scenario.duration);
    if !faults.machine.is_empty() && !args.carrier_faults_only {
        anyhow::bail!(crate::scenario_faults::machine_faults_error(
            file,
            &faults.machine,
            "a load generator"
        ));
    }
    let layout = imlab_sim::world::Layout::new(&scenario, seed);
    let population = Population {
        name: scenario.name.clone(),
        groups: scenario
            .groups
            .iter()
            .map(|group| DeviceGroup {
                name: group.name.clone(),
                carrier: group.carrier,
                heartbeat: group.heartbeat.clone(),
                app_states: group.app_states.clone(),
                one_to_one_per_hour: group.traffic.one_to_one_per_hour * traffic_scale,
                group_per_hour: group.traffic.group_per_hour * traffic_scale,
                body_bytes: group.traffic.body_bytes,
            })
            .collect(),
        devices: layout
            .devices
            .iter()
            .map(|device| DeviceSlot {
                user: device.user,
                group: device.group,
            })
            .collect(),
        users: layout
            .users
            .iter()
            .map(|user| user.devices.clone())
            .collect(),
        chats: layout.chat_groups.clone(),
        faults: faults.by_carrier,
    };
    anyhow::ensure!(
        population.clients() <= 1_000_000,
        "--scenario {}: {} devices, at most 1,000,000 in one load run",
        file.display(),
        population.clients()
    );
    let msg_rate = population.chooser().map_or(0.0, |chooser| chooser.rate());
    let carriers = scenario
        .carriers
        .iter()
        .map(|profile| imlab_loadgen::carrier::CarrierShare {
            name: profile.name.clone(),
            profile: profile.clone(),
            weight: 1.0,
        })
        .collect();
    Ok(ScenarioRun {
        population,
        carriers,
        duration: scenario.duration,
        msg_rate,
        skipped: faults.machine,
        handovers: faults.handovers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_interrupt_stops_the_run_and_the_second_aborts_it() {
        let (signal, signals) = futures::channel::mpsc::unbounded::<()>();
        let stop = CancellationToken::new();
        let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = tokio::spawn(on_interrupts(signals, stop.clone(), {
            let aborted = aborted.clone();
            move || aborted.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
        signal.unbounded_send(()).unwrap();
        stop.cancelled().await;
        assert!(
            !aborted.load(std::sync::atomic::Ordering::SeqCst),
            "one Ctrl-C only stops"
        );
        signal.unbounded_send(()).unwrap();
        handler.await.unwrap();
        assert!(
            aborted.load(std::sync::atomic::Ordering::SeqCst),
            "the second aborts"
        );
    }
}
