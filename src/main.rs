//! The `imlab` command: argument parsing and wiring only. Every capability lives in a member
//! crate (`imlab-core` for now).

mod heartbeat;
mod help;
mod load;
mod load_metrics;
mod load_workers;
mod metrics;
mod out_dir;
mod proxy;
mod report;
mod scenario_faults;
mod serve;
mod serve_stats;
mod sim;
mod sim_fuzz;
mod token;
mod values;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: a server or load generator holds tens of thousands of
/// small per-connection allocations, which glibc's chunk headers and bins cost about 350
/// bytes more of resident memory per connection (`bench/conn-memory.sh`; mimalloc cost more).
/// The `jemalloc` feature, on by default; CI's test build turns it off, as compiling jemalloc's
/// C sources was a tenth of its build's CPU time and the tests assert behaviour, not memory.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides
/// them). Freed pages go back to the kernel after a second, from one background thread: without
/// one, an arena returns pages only when its own thread allocates again, and the threads of a
/// server or load generator holding idle connections rarely do. A load generator's RSS per idle
/// client was 3,835-3,860 bytes with jemalloc's defaults and 3,586-3,661 with
/// `background_thread:true,dirty_decay_ms:1000` (`bench/conn-memory.sh 10000`, set through the
/// environment, one run or two each; the cap of one thread was not measured apart); the
/// server's did not move, nor did `sim run`'s peak.
#[cfg(feature = "jemalloc")]
#[allow(
    unsafe_code,
    reason = "jemalloc reads its settings from this symbol, a NUL-terminated C string"
)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 68] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000\0";

/// The git commit this binary was built from (`-dirty` when tracked files differed from
/// it), empty outside a git checkout: see build.rs. Results and sweeps carry it, since a
/// trace hash holds only for the build that produced it.
pub(crate) const COMMIT: &str = env!("IMLAB_COMMIT");

/// The build as `sim run` and `sim sweep` print it beside a seed: the commit, or "unnamed".
pub(crate) fn build_name() -> &'static str {
    if COMMIT.is_empty() { "unnamed" } else { COMMIT }
}

/// `imlab --version`: the version and the commit.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    if COMMIT.is_empty() {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        format!("{} ({COMMIT})", env!("CARGO_PKG_VERSION"))
    }
});

/// imlab: build, break and measure instant-messaging backends for mobile users.
#[derive(Parser)]
#[command(
    name = "imlab",
    version = VERSION.as_str(),
    about,
    after_help = help::examples(&[
        "imlab serve --listen 127.0.0.1:7400",
        "imlab token --user alice --secret s3cret --ttl 24h",
        "imlab sim run scenarios/cmcc-3g-nat.toml --seed 7",
        "imlab heartbeat compare --out report",
    ])
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the IM server on a real socket.
    Serve(serve::ServeArgs),
    /// Mint a signed login token for a user.
    Token(token::TokenArgs),
    /// Simulate scenarios deterministically under mobile carrier networks.
    Sim(sim::SimArgs),
    /// Compare heartbeat strategies across carrier profiles.
    Heartbeat(heartbeat::HeartbeatArgs),
    /// Load-test a server with real sockets.
    Load(Box<load::LoadArgs>),
    /// Regenerate charts and index.html from a results directory.
    Report(report::ReportArgs),
    /// Run the carrier model on real sockets as a TCP proxy, or steer one (`ctl`).
    Proxy(proxy::ProxyArgs),
}

/// The runtime for `--threads` (`imlab serve`, `imlab load`): 0 = tokio's default (a worker
/// per core), 1 = a current-thread runtime, N = N workers.
pub(crate) fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Token(args) => token::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Sim(args) => sim::run_command(args),
        Command::Heartbeat(args) => heartbeat::run_command(args),
        Command::Load(args) => load::run_command(*args),
        Command::Report(args) => report::run_command(args),
        Command::Proxy(args) => proxy::run_command(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
