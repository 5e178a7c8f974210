//! `imlab proxy`: the carrier model on real sockets (imlab-proxy), and `imlab proxy ctl`, the
//! client of its control API. Wiring only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use imlab_proxy::control;
use imlab_proxy::proxy::FLOWS_MAX_DEFAULT;
use imlab_proxy::{Proxy, ProxyConfig};

/// Run a TCP proxy that applies a carrier profile (NAT idle expiry, lossy link, outages) to
/// every connection, or steer a running one (`imlab proxy ctl`).
#[derive(clap::Args)]
#[command(
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    imlab proxy --listen 127.0.0.1:7401 --upstream 127.0.0.1:7400 --profile cmcc-3g\n  \
    imlab proxy --listen 127.0.0.1:7401 --upstream 127.0.0.1:7400 --profile my-nat.toml \\\n    \
      --time-scale 60 --control 127.0.0.1:7402 --trace decisions.jsonl --seed 7\n  \
    imlab proxy --listen 127.0.0.1:7401 --upstream 127.0.0.1:7400 \\\n    \
      --scenario scenarios/flaky-carrier.toml --scenario-carrier flaky --time-scale 10\n  \
    imlab proxy ctl flows\n  \
    imlab proxy ctl fault outage --for 30s\n  \
    imlab proxy ctl fault latency_spike --for 1m --set added=2s --at 10m\n  \
    imlab proxy ctl profile cu-2g\n  \
    imlab proxy ctl reset"
)]
pub struct ProxyArgs {
    #[command(subcommand)]
    command: Option<ProxyCommand>,
    /// Address phones connect to.
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// The server every connection is relayed to.
    #[arg(long, required = true)]
    upstream: Option<SocketAddr>,
    /// A carrier preset (cmcc-3g, cu-2g, ct-3g, us-lte, home-wifi, subway, elevator) or a
    /// TOML file holding one carrier table (the keys of a scenario's [carriers.X]).
    /// Required unless --scenario gives the carrier.
    #[arg(long, required_unless_present = "scenario", value_name = "PRESET|FILE")]
    profile: Option<String>,
    /// Replay a scenario's carrier faults (`[[faults]]` on the chosen carrier) on the
    /// proxy's clock, from its start; the carrier's profile is the proxy's unless --profile
    /// is given.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// The scenario carrier this proxy plays (needed when the scenario has several).
    #[arg(long, value_name = "NAME", requires = "scenario")]
    scenario_carrier: Option<String>,
    /// Replay only the scenario's carrier faults, skipping (and listing) the server's,
    /// devices' and push service's, which a proxy cannot cause.
    #[arg(long, requires = "scenario")]
    carrier_faults_only: bool,
    /// Seed of the model's draws; connection n's draws depend only on it and n.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the model K times faster than wall time: every model duration (NAT timeout, RTT,
    /// RTO, outages) is divided by K. Valid while the scaled durations stay well above the
    /// host's own latencies (see README).
    #[arg(long, default_value_t = 1.0, value_name = "K")]
    time_scale: f64,
    /// Serve the HTTP/JSON control API here (see `imlab proxy ctl`).
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Write every model decision, per flow, as JSON Lines.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Live connections at most; more are reset at once (each takes two of the process's
    /// open files).
    #[arg(long, default_value_t = FLOWS_MAX_DEFAULT)]
    max_flows: usize,
}

#[derive(clap::Subcommand)]
enum ProxyCommand {
    /// Steer a running proxy through its control API.
    Ctl(CtlArgs),
}

/// Steer a running `imlab proxy` through its --control address.
#[derive(clap::Args)]
struct CtlArgs {
    /// The proxy's --control address.
    #[arg(
        long = "control",
        id = "ctl_control",
        default_value = "127.0.0.1:7402",
        global = true
    )]
    control: String,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(clap::Subcommand)]
enum CtlAction {
    /// List live flows: NAT state, idle time, bytes, the model's decisions (JSON).
    Flows,
    /// Apply a carrier fault now, or at a model time: outage, partition, handover,
    /// latency_spike, bandwidth, loss_burst, reset, blackhole, slow_close, close_after_bytes,
    /// nat_rebind, max_age.
    Fault {
        /// The fault kind (the scenario files' words).
        kind: String,
        /// How long, in model time (e.g. 30s, 4m30s); instant kinds take none.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// When, in model time since the proxy started (default: now).
        #[arg(long, value_name = "DURATION")]
        at: Option<String>,
        /// A parameter of the kind, as in a scenario file: `--set added=300ms`,
        /// `--set kbps=16`, `--set direction=down` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Replace the profile: a preset name or a carrier table file.
    Profile {
        /// PRESET or FILE.
        profile: String,
    },
    /// Reset every connection and forget all faults.
    Reset,
}

pub fn run_command(args: ProxyArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match args.command {
        Some(ProxyCommand::Ctl(ctl)) => runtime.block_on(run_ctl(ctl))?,
        None => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                // Colour codes only on a terminal, as imlab serve's log.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            runtime.block_on(run_proxy(args))?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let (Some(listen), Some(upstream)) = (args.listen, args.upstream) else {
        anyhow::bail!("imlab proxy needs --listen and --upstream");
    };
    let replay = match &args.scenario {
        Some(file) => Some(scenario_replay(
            file,
            args.scenario_carrier.as_deref(),
            args.carrier_faults_only,
        )?),
        None => None,
    };
    let profile = match (&args.profile, &replay) {
        (Some(profile), _) => imlab_carrier::table::preset_or_file(profile).with_context(|| {
            format!(
                "--profile {profile:?} is neither a preset ({}) nor a usable carrier file",
                imlab_carrier::PRESET_NAMES.join(", ")
            )
        })?,
        (None, Some(replay)) => replay.profile.clone(),
        (None, None) => anyhow::bail!("imlab proxy needs --profile or --scenario"),
    };
    anyhow::ensure!(args.max_flows > 0, "--max-flows must be positive");
    let profile_name = profile.name.clone();
    let proxy = Proxy::new(ProxyConfig {
        upstream,
        profile,
        seed: args.seed,
        time_scale: args.time_scale,
        flows_max: args.max_flows,
        trace: args.trace,
    })
    .context("--time-scale / --trace")?;
    // Phones behind the carrier come back together after an outage: the same listen queue
    // as imlab serve's.
    let listener = crate::serve::bind_listener(listen, crate::serve::LISTEN_BACKLOG, "--listen")?;
    crate::serve::warn_if_backlog_capped(crate::serve::LISTEN_BACKLOG, "the proxy's backlog");
    if let Some(control) = args.control {
        let control_listener = tokio::net::TcpListener::bind(control)
            .await
            .with_context(|| format!("--control {control}"))?;
        println!("control API on {}", control_listener.local_addr()?);
        proxy.spawn_control(control_listener);
    }
    let shutdown = crate::serve::shutdown_signal().context("installing signal handlers")?;
    println!(
        "proxy on {} -> {upstream}, profile {profile_name}, seed {}, time scale {}",
        listener.local_addr()?,
        args.seed,
        args.time_scale
    );
    if let Some(replay) = replay {
        let n = replay.faults.len();
        proxy
            .schedule(replay.faults)
            .map_err(|error| anyhow::anyhow!("--scenario: {error}"))?;
        println!(
            "replaying {n} carrier faults of {} (carrier {}) on the proxy's clock{}",
            replay.file.display(),
            replay.carrier,
            if replay.skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped {}", replay.skipped.join(", "))
            }
        );
    }
    proxy.run(listener, shutdown).await;
    Ok(())
}

/// What `--scenario` replays on a proxy.
struct Replay {
    file: PathBuf,
    carrier: String,
    profile: imlab_carrier::CarrierProfile,
    faults: Vec<imlab_proxy::ScheduledFault>,
    skipped: Vec<String>,
}

fn scenario_replay(
    file: &Path,
    carrier: Option<&str>,
    carrier_faults_only: bool,
) -> anyhow::Result<Replay> {
    let scenario = imlab_sim::scenario::Scenario::load(file)?;
    let names: Vec<&str> = scenario.carriers.iter().map(|c| c.name.as_str()).collect();
    let k = match carrier {
        Some(name) => names.iter().position(|n| *n == name).with_context(|| {
            format!(
                "--scenario-carrier {name:?}: {} has the carriers {}",
                file.display(),
                names.join(", ")
            )
        })?,
        None if names.len() == 1 => 0,
        None => anyhow::bail!(
            "--scenario {}: it has the carriers {}; choose the one this proxy plays with \
             --scenario-carrier",
            file.display(),
            names.join(", ")
        ),
    };
    let mut faults = crate::scenario_faults::socket_faults(&scenario, scenario.duration);
    if !faults.machine.is_empty() && !carrier_faults_only {
        anyhow::bail!(crate::scenario_faults::machine_faults_error(
            file,
            &faults.machine,
            "a proxy"
        ));
    }
    Ok(Replay {
        file: file.to_path_buf(),
        carrier: names[k].to_string(),
        profile: scenario.carriers[k].clone(),
        faults: std::mem::take(&mut faults.by_carrier[k]),
        skipped: faults.machine,
    })
}

async fn run_ctl(ctl: CtlArgs) -> anyhow::Result<()> {
    let addr = ctl.control.as_str();
    let answer = match ctl.action {
        CtlAction::Flows => control::request(addr, "GET", "/flows", b"").await?,
        CtlAction::Fault {
            kind,
            duration,
            at,
            params,
        } => {
            let mut body = serde_json::json!({ "kind": kind });
            if let Some(duration) = duration {
                body["for"] = duration.into();
            }
            if let Some(at) = at {
                body["at"] = at.into();
            }
            for param in params {
                let (key, value) = param
                    .split_once('=')
                    .with_context(|| format!("--set {param:?}: use KEY=VALUE"))?;
                // Numbers stay numbers (kbps, bytes, probabilities); the rest are strings.
                body[key] = serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .filter(serde_json::Value::is_number)
                    .unwrap_or_else(|| value.into());
            }
            control::request(addr, "POST", "/faults", body.to_string().as_bytes()).await?
        }
        CtlAction::Profile { profile } => {
            let (name, table) = if imlab_carrier::preset(&profile).is_some() {
                (profile.clone(), format!("preset = {profile:?}\n"))
            } else {
                let file = Path::new(&profile);
                let table = std::fs::read_to_string(file)
                    .with_context(|| format!("reading carrier profile {}", file.display()))?;
                let name = file
                    .file_stem()
                    .map_or("profile".into(), |stem| stem.to_string_lossy().into_owned());
                (name, table)
            };
            let target = format!("/profile?name={name}");
            control::request(addr, "PUT", &target, table.as_bytes()).await?
        }
        CtlAction::Reset => control::request(addr, "POST", "/reset", b"").await?,
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
