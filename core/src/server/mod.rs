//! The IM server core: sessions, store-first sends, delivery, sync, groups, offline push.
//!
//! [`Server::run`] takes its listener and shutdown signal as arguments, and [`Server::new`]
//! takes the store, clock, push provider and authenticator, so `imlab serve`, the tests and
//! the simulator run this same code over tokio sockets, in-memory pipes or turmoil sockets.
//!
//! Modules: `session` (one connection: the login, then each frame's handler), `live` (a
//! logged-in connection as one state machine: reading, reaping, writing replies and the
//! outbox, NotifyData ack tracking and the Notify fallback), `registry`
//! (who is online), `fanout` (the bounded group fan-out queue), `push` (offline pushes).

mod fanout;
mod live;
mod push;
mod registry;
mod session;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use push::{LoggingPushProvider, PushNotice, PushProvider};

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::net::Listener;
use crate::proto::{Frame, KickReason};
use crate::store::{Store, StoredMessage};
use fanout::Fanout;
pub(crate) use fanout::FanoutJob;
use registry::Registry;

/// The server's limits and timers. Every queue has a bound here.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// Bounds applied to the client's declared heartbeat interval before the 1.5x reap rule.
    pub heartbeat_interval_min: Duration,
    /// See `heartbeat_interval_min`.
    pub heartbeat_interval_max: Duration,
    /// Frames queued for one connection; a full outbox kicks the connection as a slow consumer.
    /// Frames buffered for it and not yet written are bounded by the same number.
    pub outbox_len_max: usize,
    /// Bytes buffered for one connection and not yet written: past it the peer is kicked as a
    /// slow consumer, as for a full outbox, whatever its frames' sizes (the frame bound alone
    /// let 1,024 sync pages of up to `max_frame_bytes` wait for a peer that sends requests and
    /// reads nothing: 64 MiB a connection). The buffer exceeds it by one frame at most. At
    /// least `max_frame_bytes`.
    pub write_buffer_bytes_max: usize,
    /// A NotifyData not acked within this time falls back to a Notify.
    pub notify_ack_timeout: Duration,
    /// What a device still syncing a backlog is pushed of a new message.
    pub push_when_behind: PushWhenBehind,
    /// Messages in one sync page at most (the frame size bounds it too).
    pub sync_page_len_max: usize,
    /// Group sends waiting for fan-out, across all workers.
    pub fanout_queue_len_max: usize,
    /// Fan-out workers (and shards).
    pub fanout_workers: usize,
    /// Concurrent connections; more are answered with OVERLOADED and closed.
    pub connections_max: usize,
    /// How long a closing connection may take to flush its last frames.
    pub close_flush_timeout: Duration,
    /// Sends per second one user may make over all of its devices (a burst of one second's
    /// worth); more are refused with RATE_LIMITED and stored nothing. 0 = no limit.
    pub send_rate_per_user: u32,
    /// Deliberate bugs (tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted: crate::planted::PlantedBugs,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            login_timeout: Duration::from_secs(10),
            heartbeat_interval_min: Duration::from_secs(5),
            heartbeat_interval_max: Duration::from_secs(3_600),
            outbox_len_max: 1_024,
            write_buffer_bytes_max: 4 << 20,
            notify_ack_timeout: Duration::from_secs(10),
            push_when_behind: PushWhenBehind::Notify,
            sync_page_len_max: 200,
            fanout_queue_len_max: 4_096,
            fanout_workers: 4,
            connections_max: 1_000_000,
            close_flush_timeout: Duration::from_secs(2),
            send_rate_per_user: 100,
            #[cfg(feature = "planted-bugs")]
            planted: crate::planted::PlantedBugs::default(),
        }
    }
}

impl ServerConfig {
    /// Largest message body a Send may carry: the frame limit less room for the envelope
    /// (ids, seq, timestamps), so every stored message fits in a NotifyData or sync frame.
    pub fn max_body_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_sub(ENVELOPE_BYTES_MAX)
    }
}

/// What the server pushes of a new message to a device that does not yet hold the messages
/// before it (one still syncing its backlog, page by page). Such a device drops a pushed
/// message as a gap and fetches it again in a later page, so on a slow link every message
/// stored during the sync crossed it twice: a fuzzed 2G case took 1.5-1.7 times its messages'
/// bytes down and did not catch up within 25 minutes of quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushWhenBehind {
    /// A `Notify{max_seq}`: the device learns there is more and fetches it in order. A push
    /// that a page already held is not sent at all.
    #[default]
    Notify,
    /// The whole message as a `NotifyData`, as a server that tracks nothing per connection
    /// does (every push of the protocol's plainest server). The simulator uses it to try the
    /// client's handling of gaps and repeats, which the default leaves almost unused.
    Message,
}

/// Room reserved in a frame for everything but a message's body.
const ENVELOPE_BYTES_MAX: usize = 1_024;

/// Counters a running server exposes.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused at `connections_max`.
    pub connections_refused: AtomicU64,
    /// Connections closed because the listener's handshake (TLS) failed or did not finish
    /// within the login timeout.
    pub handshakes_failed: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Messages stored (duplicates not counted).
    pub messages_stored: AtomicU64,
    /// Sends answered from the dedupe window.
    pub duplicate_sends: AtomicU64,
    /// Sends refused because the fan-out queue was full.
    pub overloaded_sends: AtomicU64,
    /// Sends refused because the user's send rate was spent.
    pub rate_limited_sends: AtomicU64,
    /// Pushes queued to live devices' connections (each then goes as a NotifyData, or as
    /// one of the two counted below).
    pub notify_data_sent: AtomicU64,
    /// Notify frames sent because a NotifyData was not acked in time.
    pub notify_fallbacks: AtomicU64,
    /// Pushes sent as a Notify, without the message, to a device behind (still syncing).
    pub pushes_as_notify: AtomicU64,
    /// Pushes not sent because the device's sync page already held the message.
    pub pushes_in_a_page: AtomicU64,
    /// Offline pushes handed to the push provider.
    pub pushes: AtomicU64,
    /// Connections closed for silence.
    pub reaped: AtomicU64,
    /// Logins refused: bad token or user.
    pub logins_refused_auth: AtomicU64,
    /// Logins refused: expired token.
    pub logins_refused_expired: AtomicU64,
    /// Connections closed for not logging in within `login_timeout`.
    pub login_timeouts: AtomicU64,
    /// Most pushes one connection found queued in its outbox at once: how close connections
    /// came to `outbox_len_max`.
    pub outbox_high_water: AtomicU64,
}

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub push: Arc<dyn PushProvider>,
    pub auth: Authenticator,
    pub registry: Registry,
    pub fanout: Fanout,
    pub counters: Arc<ServerCounters>,
    pub next_connection_id: AtomicU64,
}

impl Shared {
    /// Offers a stored message to every recipient's live devices but connection `skip` (the
    /// sender's, when its device takes its SendAck as its copy); pushes to users with none.
    pub fn deliver(
        &self,
        message: &Arc<StoredMessage>,
        deliveries: &[(String, u64)],
        skip: Option<u64>,
    ) {
        // Encoded once, shared by every delivery: each differs only in its seq.
        let encoded = crate::codec::encode_message_without_seq(message);
        for (user, seq) in deliveries {
            if let Some(queued) = self.registry.deliver(user, *seq, &encoded, skip) {
                self.counters
                    .notify_data_sent
                    .fetch_add(queued as u64, Ordering::Relaxed);
            } else {
                self.counters.pushes.fetch_add(1, Ordering::Relaxed);
                self.push.push(PushNotice {
                    user: user.clone(),
                    seq: *seq,
                    msg_id: message.msg_id,
                    from_user: message.from_user.clone(),
                });
            }
        }
    }
}

/// The dependencies a server is built from.
pub struct ServerDeps {
    /// Where messages live.
    pub store: Arc<dyn Store>,
    /// Wall-clock time for tokens and timestamps.
    pub clock: Arc<dyn Clock>,
    /// Offline pushes.
    pub push: Arc<dyn PushProvider>,
    /// Token checking.
    pub auth: Authenticator,
}

/// An IM server, ready to run on a listener.
pub struct Server {
    shared: Arc<Shared>,
    crashed: CancellationToken,
    fanout_jobs: Mutex<Option<Vec<tokio::sync::mpsc::Receiver<FanoutJob>>>>,
}

impl Server {
    /// Builds a server from its limits and dependencies.
    pub fn new(config: ServerConfig, deps: ServerDeps) -> Server {
        let (fanout, fanout_jobs) = Fanout::new(config.fanout_workers, config.fanout_queue_len_max);
        Server {
            shared: Arc::new(Shared {
                config,
                store: deps.store,
                clock: deps.clock,
                push: deps.push,
                auth: deps.auth,
                registry: Registry::default(),
                fanout,
                counters: Arc::new(ServerCounters::default()),
                next_connection_id: AtomicU64::new(1),
            }),
            fanout_jobs: Mutex::new(Some(fanout_jobs)),
            crashed: CancellationToken::new(),
        }
    }

    /// Drops every connection at once, with no Kick and no flush, as a killed process would;
    /// `run` returns. For simulators, which then crash the host: closing the sockets here, in
    /// a deterministic order, keeps a replay exact (a dropped runtime closes them in an order
    /// that depends on process-wide task ids).
    pub fn crash(&self) {
        self.crashed.cancel();
    }

    /// The server's counters; they stay readable after `run` returns.
    pub fn counters(&self) -> Arc<ServerCounters> {
        self.shared.counters.clone()
    }

    /// Live logged-in (user, device) sessions.
    pub fn n_sessions(&self) -> usize {
        self.shared.registry.n_sessions()
    }

    /// Most jobs one fan-out shard ever held (of its share of `fanout_queue_len_max`).
    pub fn fanout_queue_len_high_water(&self) -> u64 {
        self.shared.fanout.queue_len_high_water()
    }

    /// Connections kicked because their outbox was full.
    pub fn n_slow_consumer_kicks(&self) -> u64 {
        self.shared
            .registry
            .counters
            .slow_consumer_kicks
            .load(Ordering::Relaxed)
    }

    /// Accepts and serves connections until `shutdown` completes, then kicks every connection
    /// (Kick SERVER_SHUTDOWN) and waits up to `close_flush_timeout` for them to close.
    ///
    /// Must be called once; the fan-out workers and connection tasks run on the current
    /// tokio runtime.
    pub async fn run<L: Listener>(&self, mut listener: L, shutdown: impl Future<Output = ()>) {
        let jobs = self
            .fanout_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("Server::run is called once");
        let tasks = TaskTracker::new();
        for shard in jobs {
            tokio::spawn(fanout::worker(self.shared.clone(), shard));
        }
        let stop = self.crashed.child_token();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.crashed.cancelled() => {
                    // Logged-in connections end now, without a word; the others see `stop`
                    // (a child of `crashed`) in their handshake or login.
                    self.shared.registry.close(None);
                    tasks.close();
                    tasks.wait().await;
                    return;
                }
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((handshake, peer)) => {
                    // The handshake (TLS) runs in the connection's task: a slow peer must
                    // not hold up this loop.
                    let shared = self.shared.clone();
                    let stop = stop.clone();
                    tasks.spawn(session::serve_connection(shared, handshake, peer, stop));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Stop listening before the goodbyes: a kicked client that reconnects at once must
        // be refused now, not queued in a backlog nobody accepts from (a full backlog drops
        // SYNs, and each such client waits a second for its retry to reach the next server).
        drop(listener);
        tracing::info!(
            sessions = self.shared.registry.n_sessions(),
            "shutting down: closing connections"
        );
        self.shared.registry.close(Some(KickReason::ServerShutdown));
        stop.cancel();
        tasks.close();
        let grace = self.shared.config.close_flush_timeout + Duration::from_millis(500);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
    }
}

/// A frame holding an error answer.
pub(crate) fn error_frame(error: crate::proto::Error) -> Frame {
    Frame::new(crate::proto::Body::Error(error))
}
