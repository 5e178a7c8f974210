//! `imlab serve`: the server core on a tokio TCP listener (TLS with `--tls-cert`), and on a
//! WebSocket listener too with `--ws-listen`, with graceful shutdown and Prometheus metrics
//! (`--metrics-listen`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use imlab_core::auth::Authenticator;
use imlab_core::clock::{Clock, SystemClock};
use imlab_core::net::EitherListener;
use imlab_core::server::{LoggingPushProvider, Server, ServerConfig, ServerDeps};
use imlab_core::store::{
    DurableStore, DurableStoreLimits, FjallEngine, MemoryStore, MemoryStoreLimits, Store,
};
use imlab_core::tls::TlsListener;
use imlab_core::ws::WsListener;

/// Run the IM server on a real socket (in-memory store, or on disk with --data-dir).
#[derive(clap::Args)]
#[command(after_help = crate::help::examples(&[
    "imlab serve",
    "IMLAB_AUTH_SECRET=s3cret imlab serve --listen 127.0.0.1:7400",
    "imlab serve --data-dir /var/lib/imlab",
    "imlab serve --tls-cert cert.pem --tls-key key.pem",
    "imlab serve --listen 127.0.0.1:7400 --ws-listen 127.0.0.1:7480 --metrics-listen 127.0.0.1:9400",
    "RUST_LOG=imlab_core=debug imlab serve --max-connections 20000 --stats-every 5s",
]))]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port (printed at start-up).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Secret for HMAC-signed tokens. Without it the server runs in dev mode and accepts
    /// any token.
    #[arg(long, env = "IMLAB_AUTH_SECRET", hide_env_values = true,
          value_parser = crate::values::non_empty_secret)]
    auth_secret: Option<String>,
    /// Concurrent connections at most; more are refused with OVERLOADED.
    #[arg(long, default_value_t = ServerConfig::default().connections_max)]
    max_connections: usize,
    /// Largest frame in bytes.
    #[arg(long, default_value_t = ServerConfig::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Close connections that have not logged in by then.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    login_timeout: Duration,
    /// Frames queued per connection; a full queue disconnects the slow consumer.
    #[arg(long, default_value_t = ServerConfig::default().outbox_len_max)]
    outbox_len: usize,
    /// Bytes buffered for one connection and not yet written; past it the peer is
    /// disconnected as a slow consumer, as for a full queue (at least --max-frame-bytes).
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().write_buffer_bytes_max)]
    write_buffer_bytes: usize,
    /// Sends per second one user may make over all of its devices (bursts of one second's
    /// worth); more are refused with RATE_LIMITED, and the client retries. 0 = no limit.
    #[arg(long, default_value_t = ServerConfig::default().send_rate_per_user)]
    max_sends_per_user: u32,
    /// Keep messages, inboxes, cursors, groups and the dedupe window on disk here (created
    /// when missing). A send is acked only once it is durable (group commit: sends arriving
    /// together share one fsync); a restart resumes every seq. Without it the store is in
    /// memory and a restart loses everything.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Memory for --data-dir's dedupe filter, which tells a send that its client message id
    /// is new without reading the disk's tables (1.5-3 bytes a message stored; filled
    /// from the disk on a thread after a restart). Past it, or at 0, every id is read from
    /// the tables, as a retry always is.
    #[arg(long, default_value_t = DurableStoreLimits::default().dedupe_filter_bytes_max >> 20, value_name = "MIB", requires = "data_dir")]
    dedupe_filter_mib: usize,
    /// Messages the store holds at most, over its life; past it every send is refused
    /// (STORE_UNAVAILABLE, retried by clients) and the server warns once. Default: 20,000,000
    /// in memory (about 6 GB of 200-byte messages; a longer run belongs on --data-dir); no
    /// limit on --data-dir, whose messages live on the disk.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Bytes the in-memory store holds at most: every message's body and names, and 8 bytes
    /// an inbox entry; a send that would pass it is refused as past --max-messages. Reached
    /// first only by large bodies or groups (20,000,000 messages of 200 bytes count about
    /// 4.9 GB).
    #[arg(long, value_name = "BYTES", default_value_t = MemoryStoreLimits::default().bytes_max, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "data_dir")]
    max_stored_bytes: u64,
    /// Users --data-dir's store keeps loaded in memory (seqs, its last 64 sends for dedupe,
    /// touched devices' cursors: up to about 4 KB each); past it, a write first lets go of
    /// those with nothing on their way to the disk, loaded again from it when next written.
    #[arg(long, value_name = "N", default_value_t = DurableStoreLimits::default().users_loaded_max as u64, value_parser = clap::value_parser!(u64).range(1..), requires = "data_dir")]
    max_loaded_users: u64,
    /// How long a flush of --data-dir's store (a full 64 MiB memtable written out as a table,
    /// about a third of a core-second) runs in the kernel's idle CPU class, taking only CPU
    /// time the server leaves, before it competes for the CPU as the server does; 0s: never.
    /// Linux, with the privilege to raise a thread's priority back (root or CAP_SYS_NICE);
    /// otherwise flushes compete from the start.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION", requires = "data_dir")]
    flush_idle_for: std::time::Duration,
    /// Serve TLS with this PEM certificate chain (leaf first). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log a stats line (connections, logins and refusals by cause, messages in and out per
    /// second, queue high-water marks) this often at info level; 0 turns it off.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stats_every: Duration,
    /// Also serve imlab over WebSocket on this address (any path; one binary message per
    /// frame, subprotocol "imlab"), with the same limits and login timeout; wss with
    /// --tls-cert.
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (connections, logins, refusals by cause, messages stored and
    /// pushed) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Connections the kernel may hold for accept (the listen backlog of --listen and
    /// --ws-listen). A reconnection storm after a restart fills a short queue: each SYN
    /// dropped then waits a second for its retry. Linux caps it at net.core.somaxconn (a
    /// lower cap is logged as a warning at start).
    #[arg(long, default_value_t = LISTEN_BACKLOG, value_parser = clap::value_parser!(u32).range(1..))]
    listen_backlog: u32,
    /// Threads that run connections: 0 = one per core. 1 runs everything on one thread
    /// without work stealing (as mosquitto does): the least CPU per message where one core
    /// carries the load, and no wake-ups between threads. The durable store's fsyncs run on
    /// their own threads either way.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
}

/// The listen queue asked for by default (`imlab serve --listen-backlog`, `imlab proxy`).
pub(crate) const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` (`flag` names it in errors) with a listen queue of `backlog` connections.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    flag: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .with_context(|| format!("opening a socket for {flag} {addr}"))?;
    // As std's and tokio's bind: a restarted server may bind while old connections linger
    // in TIME_WAIT.
    #[cfg(unix)]
    socket
        .set_reuseaddr(true)
        .with_context(|| format!("setting SO_REUSEADDR for {flag} {addr}"))?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {flag} {addr}"))?;
    socket
        .listen(backlog)
        .with_context(|| format!("listening on {flag} {addr}"))
}

/// Warns when the kernel caps a listen queue of `backlog` (asked for by `asked`) lower.
pub(crate) fn warn_if_backlog_capped(backlog: u32, asked: &str) {
    if let Some(cap) = kernel_backlog_cap().filter(|&cap| cap < backlog) {
        tracing::warn!(
            "the listen queue holds {cap} connections, not {asked} {backlog}: the kernel caps \
             it at net.core.somaxconn. A reconnection storm beyond that many waiting connects \
             drops SYNs (each retried a second later); raise it with \
             `sysctl -w net.core.somaxconn={backlog}`"
        );
    }
}

/// The kernel's cap on any listen queue, where it can be read (Linux).
fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs piped to a file or journald stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = crate::runtime(args.threads).context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.max_frame_bytes >= 4_096,
        "--max-frame-bytes must be at least 4096"
    );
    anyhow::ensure!(args.outbox_len > 0, "--outbox-len must be positive");
    anyhow::ensure!(
        args.write_buffer_bytes >= args.max_frame_bytes,
        "--write-buffer-bytes ({}) must be at least --max-frame-bytes ({}): a reply of one \
         frame would disconnect its peer",
        args.write_buffer_bytes,
        args.max_frame_bytes
    );
    let config = ServerConfig {
        connections_max: args.max_connections,
        max_frame_bytes: args.max_frame_bytes,
        login_timeout: args.login_timeout,
        outbox_len_max: args.outbox_len,
        write_buffer_bytes_max: args.write_buffer_bytes,
        send_rate_per_user: args.max_sends_per_user,
        ..ServerConfig::default()
    };
    // Read the certificate and key before binding: a bad file fails at once, naming it.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            imlab_core::tls::server_config_from_files(cert, key)
                .context("loading --tls-cert/--tls-key")?,
        ),
        _ => None,
    };
    let auth = Authenticator::from_secret(args.auth_secret.as_deref());
    if auth.is_dev() {
        tracing::warn!(
            "DEV MODE: no --auth-secret or IMLAB_AUTH_SECRET given; ANY token is accepted. \
             Never expose this server."
        );
    }
    let listener = bind_listener(args.listen, args.listen_backlog, "--listen")?;
    let local = listener.local_addr().context("reading the bound address")?;
    let ws_listener = match args.ws_listen {
        Some(addr) => Some(bind_listener(addr, args.listen_backlog, "--ws-listen")?),
        None => None,
    };
    warn_if_backlog_capped(args.listen_backlog, "--listen-backlog");
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let (store, durable, store_name) = open_store(
        args.data_dir.as_deref(),
        args.dedupe_filter_mib,
        args.flush_idle_for,
        args.max_messages,
        args.max_stored_bytes,
        usize::try_from(args.max_loaded_users).unwrap_or(usize::MAX),
    )
    .await?;
    let server = Arc::new(Server::new(
        config,
        ServerDeps {
            store,
            clock: Arc::new(SystemClock),
            push: Arc::new(LoggingPushProvider),
            auth,
        },
    ));
    // Install the signal handlers before announcing the address, so a Ctrl-C right after
    // start-up shuts down gracefully instead of killing the process.
    let shutdown = shutdown_signal().context("installing signal handlers")?;
    let tls_state = match &args.tls_cert {
        Some(cert) => format!("on ({})", cert.display()),
        None => "off".to_string(),
    };
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%local, store = %store_name, tls = %tls_state, threads, "imlab serve listening");
    println!("listening: {local}");
    if let Some(ws) = &ws_listener {
        let ws_local = ws
            .local_addr()
            .context("reading the bound --ws-listen address")?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(local = %ws_local, scheme, "imlab serve listening for WebSocket");
        println!("listening {scheme}: {ws_local}");
    }
    let metrics = match metrics_listener {
        Some(listener) => {
            let metrics_local = listener
                .local_addr()
                .context("reading the --metrics-listen address")?;
            tracing::info!(local = %metrics_local, "serving Prometheus metrics at /metrics");
            println!("metrics: http://{metrics_local}/metrics");
            let collector = crate::serve_stats::ServerMetrics {
                server: server.clone(),
                store: durable.clone(),
            };
            Some(tokio::spawn(crate::metrics::serve(listener, collector)))
        }
        None => None,
    };
    let serving_since = std::time::Instant::now();
    let max_frame_bytes = args.max_frame_bytes;
    let serving = async {
        match (tls, ws_listener) {
            (None, None) => server.run(listener, shutdown).await,
            (Some(tls), None) => server.run(TlsListener::new(listener, tls), shutdown).await,
            (None, Some(ws)) => {
                let ws = WsListener::new(ws, max_frame_bytes);
                server
                    .run(EitherListener::new(listener, ws), shutdown)
                    .await;
            }
            (Some(tls), Some(ws)) => {
                let wss = WsListener::new(TlsListener::new(ws, tls.clone()), max_frame_bytes);
                let both = EitherListener::new(TlsListener::new(listener, tls), wss);
                server.run(both, shutdown).await;
            }
        }
    };
    if args.stats_every.is_zero() {
        serving.await;
    } else {
        tokio::select! {
            () = serving => {}
            () = crate::serve_stats::log_every(&server, durable.as_deref(), args.stats_every) => {}
        }
    }
    if let Some(metrics) = metrics {
        metrics.abort();
        let _ = metrics.await;
    }
    let counters = server.counters();
    tracing::info!(
        connections = counters
            .connections_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        messages = counters
            .messages_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        "imlab serve stopped"
    );
    if let Some(durable) = &durable {
        let commits = durable.engine().commits();
        let secs = serving_since.elapsed().as_secs_f64();
        let stats = durable.commit_stats();
        tracing::info!(
            commits,
            fsyncs_per_s = format!("{:.1}", commits as f64 / secs.max(0.001)),
            records_per_commit = crate::serve_stats::records_per_commit(&stats),
            commit_p50_us_at_most = crate::serve_stats::bound(&stats, 0.5),
            commit_p99_us_at_most = crate::serve_stats::bound(&stats, 0.99),
            commit_max_us_at_most = crate::serve_stats::bound(&stats, 1.0),
            messages = durable.n_messages(),
            "on-disk store: one fsync per commit"
        );
    }
    if let Some(durable) = durable {
        // Commit what is still queued (sends not acked yet) and let go of the files. A
        // connection task still holding the store (past its close grace) only delays this:
        // everything acked is durable already.
        drop(server);
        if let Some(store) = Arc::into_inner(durable) {
            store.close().await;
        }
    }
    Ok(())
}

/// The store `--data-dir` asks for: on disk (also returned as such, to close it), or in
/// memory, with `dedupe_filter_mib` for the dedupe filter, flushes in the idle CPU class
/// for up to `flush_idle_for`, and at most `max_messages` (the store's own default when
/// `None`). Returns a name for logs, with the bound.
async fn open_store(
    data_dir: Option<&std::path::Path>,
    dedupe_filter_mib: usize,
    flush_idle_for: std::time::Duration,
    max_messages: Option<u64>,
    max_stored_bytes: u64,
    max_loaded_users: usize,
) -> anyhow::Result<(
    Arc<dyn Store>,
    Option<Arc<DurableStore<FjallEngine>>>,
    String,
)> {
    let bound = |max: u64| match max {
        u64::MAX => "no message limit".to_string(),
        max => format!("at most {max} messages"),
    };
    let Some(dir) = data_dir else {
        let limits = MemoryStoreLimits {
            messages_max: max_messages.unwrap_or(MemoryStoreLimits::default().messages_max),
            bytes_max: max_stored_bytes,
            ..MemoryStoreLimits::default()
        };
        // A restarted process has an empty store: a new epoch tells clients so.
        let store = Arc::new(MemoryStore::with_limits(limits).with_epoch(SystemClock.unix_ms()));
        let name = format!(
            "memory, {} and {} bytes",
            bound(limits.messages_max),
            limits.bytes_max
        );
        return Ok((store, None, name));
    };
    let started = std::time::Instant::now();
    let engine = FjallEngine::open_with(dir, flush_idle_for)
        .with_context(|| format!("opening the store in --data-dir {}", dir.display()))?;
    let store = DurableStore::open(
        Arc::new(engine),
        DurableStoreLimits {
            dedupe_filter_bytes_max: dedupe_filter_mib << 20,
            messages_max: max_messages.unwrap_or(DurableStoreLimits::default().messages_max),
            users_loaded_max: max_loaded_users,
            ..DurableStoreLimits::default()
        },
        // The epoch of a new store; an existing one keeps its own, so clients' seqs stay
        // valid across restarts.
        SystemClock.unix_ms(),
    )
    .await
    .with_context(|| format!("opening the store in --data-dir {}", dir.display()))?;
    tracing::info!(
        dir = %dir.display(),
        messages = store.n_messages(),
        elapsed = ?started.elapsed(),
        "opened the on-disk store"
    );
    let name = format!(
        "fjall ({}), {}",
        dir.display(),
        bound(store.limits().messages_max)
    );
    let store = Arc::new(store);
    Ok((store.clone(), Some(store), name))
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM; the handlers are installed now.
pub(crate) fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("Ctrl-C: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}
