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
    imlab proxy ctl flows\n  \
    imlab proxy ctl fault outage --for 30s\n  \
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
    #[arg(long, required = true, value_name = "PRESET|FILE")]
    profile: Option<String>,
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
    /// Apply a fault now: outage or partition (with --for), or handover.
    Fault {
        /// outage, partition or handover (the scenario files' fault kinds).
        kind: String,
        /// How long, in model time (e.g. 30s, 4m30s).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
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
                .init();
            runtime.block_on(run_proxy(args))?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let (Some(listen), Some(upstream), Some(profile)) = (args.listen, args.upstream, args.profile)
    else {
        anyhow::bail!("imlab proxy needs --listen, --upstream and --profile");
    };
    let profile = imlab_carrier::table::preset_or_file(&profile).with_context(|| {
        format!(
            "--profile {profile:?} is neither a preset ({}) nor a usable carrier file",
            imlab_carrier::PRESET_NAMES.join(", ")
        )
    })?;
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
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}"))?;
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
    proxy.run(listener, shutdown).await;
    Ok(())
}

async fn run_ctl(ctl: CtlArgs) -> anyhow::Result<()> {
    let addr = ctl.control.as_str();
    let answer = match ctl.action {
        CtlAction::Flows => control::request(addr, "GET", "/flows", b"").await?,
        CtlAction::Fault { kind, duration } => {
            let mut body = serde_json::json!({ "kind": kind });
            if let Some(duration) = duration {
                body["for"] = duration.into();
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
