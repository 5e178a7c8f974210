//! The client core: one device's connection manager, the same code in tests, the simulator
//! and the load generator.
//!
//! It connects, logs in, syncs after every connect, processes NotifyData, Notify and sync
//! results one at a time (its seq never goes backwards, duplicates are dropped by seq), acks,
//! sends with retries that reuse the client message id, sends heartbeats as its
//! [`HeartbeatStrategy`] says, and reconnects with capped exponential backoff plus jitter.
//! Its persistent state ([`ClientState`]) lives outside the connection; the app talks to it
//! through a [`ClientHandle`] and hears from it through a [`ClientObserver`].
//!
//! Modules: `state` (persistent state), `backoff`, `connection` (one connection's loop),
//! `credentials` (expiring tokens and the device's wall clock), `mailbox` (the app's commands
//! to the running core).

mod backoff;
mod connection;
mod credentials;
mod mailbox;
mod state;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

pub use backoff::{Backoff, BackoffConfig, ParkedRng, jitter};
pub use credentials::{IssuedCredentials, IssuedToken, Renewal, TokenIssuer};
pub use state::{
    ClientState, OutgoingMessage, SHOWN_IDS_LEN_MAX, SharedClientState, ShownIds, lock,
};

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::heartbeat::{AppState, HeartbeatEvent, HeartbeatStrategy};
use crate::net::Connector;
use crate::proto::{self, ErrorCode, KickReason, Target};
use mailbox::{CoreEnd, Mailbox};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Login token (anything in dev mode), unless `credentials` issues them.
    pub token: String,
    /// Expiring tokens from the app backend, renewed by the device's wall clock.
    pub credentials: Option<IssuedCredentials>,
    /// Label of the network the device starts on, for heartbeat strategies.
    pub network: String,
    /// Messages asked for per sync page.
    pub sync_page_len: u32,
    /// How long one sync page should take to arrive: page byte budgets follow the link's
    /// measured throughput so a page takes about this long (zero: pages fill the frame).
    pub sync_page_time: Duration,
    /// Give up on a connection attempt (TCP connect plus login) after this long.
    pub connect_timeout: Duration,
    /// A Ping unanswered for this long fails the heartbeat and the connection.
    pub heartbeat_timeout: Duration,
    /// A send unacked for this long means the connection is dead: reconnect and resend.
    pub send_timeout: Duration,
    /// Wait before resending a send refused as overloaded or rate limited.
    pub retry_delay: Duration,
    /// How long a pushed message's DeviceAck may wait for another frame to ride along with
    /// (a send, a Ping, a sync request): one write and one server read fewer whenever one
    /// comes in time, and one ack for every push in the meantime. As TCP's delayed ACK
    /// (BSD's 200 ms, within RFC 1122's 500) and MTProto's deferred `msgs_ack`. Zero acks at
    /// once. The server's fallback to a Notify waits far longer (`notify_ack_timeout`).
    pub ack_delay: Duration,
    /// Sends written but not yet acked, at most.
    pub sends_in_flight_max: usize,
    /// Unacked sends the app may queue; more are refused by [`ClientHandle::send`].
    pub outgoing_len_max: usize,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Deliberate bugs (tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted: crate::planted::PlantedBugs,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: String::new(),
            credentials: None,
            network: "default".into(),
            sync_page_len: 100,
            sync_page_time: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(20),
            heartbeat_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            ack_delay: Duration::from_millis(200),
            sends_in_flight_max: 16,
            outgoing_len_max: 1_024,
            backoff: BackoffConfig::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            #[cfg(feature = "planted-bugs")]
            planted: crate::planted::PlantedBugs::default(),
        }
    }
}

/// Why a connection ended (or never came up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectCause {
    /// TCP connect failed or timed out.
    ConnectFailed(String),
    /// The server refused the login for a reason worth retrying (overloaded, store down).
    LoginFailed(ErrorCode, String),
    /// The server closed the connection or it failed.
    ConnectionLost(String),
    /// A Ping went unanswered.
    HeartbeatTimeout,
    /// A send went unacked.
    SendTimeout,
    /// The server kicked this connection.
    Kicked(KickReason),
    /// The server sent bytes that are not a frame, or a frame out of place.
    ProtocolError(String),
    /// The app reported a network change; the old path is dead.
    NetworkChanged,
    /// The app asked to go offline or to stop.
    Requested,
}

/// What the client core reports to its observer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent<'a> {
    /// A connection attempt starts.
    Connecting,
    /// The login is about to carry a token just issued by the app backend.
    TokenRenewed {
        /// Why the kept one was not used.
        renewal: Renewal,
        /// The new token's expiry, in Unix seconds.
        expiry_unix_s: u64,
    },
    /// Logged in.
    Connected {
        /// The server's id for the connection.
        connection_id: u64,
        /// The inbox's newest seq at login.
        max_seq: u64,
    },
    /// A connection ended or an attempt failed.
    Disconnected(&'a DisconnectCause),
    /// A message was processed (seq is exactly the previous seq plus one). The app log.
    Message(&'a proto::Message),
    /// The next seq holds a message whose identity (sender, client message id) the app was
    /// already shown under an earlier generation of the server's store: a volatile store's
    /// new generation stored it again after its sender retried. The seq is processed (acked,
    /// never asked for again); the app shows nothing. Within one generation the server's
    /// idempotence is trusted: a send stored twice there is shown twice.
    Repeat(&'a proto::Message),
    /// The server's store is a new generation (see `LoginReply.inbox_epoch`): the processed
    /// seq went back to 0 and the next message is seq 1 of the new store.
    InboxReset {
        /// The generation the old seqs belonged to.
        old_epoch: u64,
        /// The new one.
        new_epoch: u64,
    },
    /// A message with an old seq arrived again and was dropped.
    DuplicateDropped {
        /// Its seq.
        seq: u64,
    },
    /// A frame was written for this send.
    SendWritten {
        /// The message.
        client_msg_id: &'a str,
        /// 1 for the first write, more for retries.
        attempt: u32,
    },
    /// The server stored a send.
    SendAcked {
        /// The message.
        client_msg_id: &'a str,
        /// Its seq in the sender's inbox.
        seq: u64,
        /// Server-wide id.
        msg_id: u64,
    },
    /// The server refused a send for good (unknown group, not a member, invalid).
    SendFailed {
        /// The message.
        client_msg_id: &'a str,
        /// Why.
        code: ErrorCode,
        /// The server's words.
        text: &'a str,
    },
    /// The server refused a send for now (rate limited, overloaded, store unavailable):
    /// nothing was stored and the client core will send it again.
    SendRefused {
        /// The message.
        client_msg_id: &'a str,
        /// Why.
        code: ErrorCode,
    },
    /// A Ping was written.
    HeartbeatSent {
        /// The silence it follows.
        interval: Duration,
    },
    /// A Pong arrived.
    HeartbeatAcked {
        /// Ping to Pong.
        rtt: Duration,
    },
    /// A group request was answered.
    GroupReply(&'a proto::GroupReply),
    /// The server answered a request with an error not tied to a send.
    ServerError(&'a proto::Error),
    /// The client stopped for good: the app asked or the login was refused.
    Stopped(&'a ClientExit),
}

/// Receives the client core's events. Called inline: keep it cheap and never block.
pub trait ClientObserver: Send + Sync + 'static {
    /// One event.
    fn on_event(&self, state: &ClientState, event: &ClientEvent<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl ClientObserver for NoObserver {
    fn on_event(&self, _state: &ClientState, _event: &ClientEvent<'_>) {}
}

/// Why [`Client::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientExit {
    /// [`ClientHandle::shutdown`] was called or every handle was dropped.
    Shutdown,
    /// The server refused the credentials; retrying cannot help.
    LoginRefused(ErrorCode, String),
}

/// Requests from the app to the running client core.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    CreateGroup {
        request_id: u64,
        group: String,
        members: Vec<String>,
    },
    JoinGroup {
        request_id: u64,
        group: String,
    },
    LeaveGroup {
        request_id: u64,
        group: String,
    },
    NetworkChanged {
        network: String,
    },
    AppState(AppState),
    GoOffline,
    GoOnline,
    Shutdown,
}

/// Commands queued for the client core at most; more are refused.
const COMMANDS_LEN_MAX: usize = 64;

/// Why the app's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Too many unacked sends are queued.
    #[error("{0} unacked sends are queued, the limit (outgoing_len_max)")]
    OutgoingFull(usize),
    /// Too many commands are queued, or the client core has stopped.
    #[error("the client core is not taking commands (stopped, or {COMMANDS_LEN_MAX} queued)")]
    Busy,
}

/// The app's side of a running client core. Its clones share one command queue and its
/// bound; when the last is dropped the core stops, as after [`ClientHandle::shutdown`].
pub struct ClientHandle {
    state: SharedClientState,
    /// A queue of its own rather than a channel: it holds no buffer while empty, and the
    /// handle's whole side is one allocation (see the module).
    mailbox: Arc<Mailbox>,
}

impl Clone for ClientHandle {
    fn clone(&self) -> ClientHandle {
        self.mailbox.handle_cloned();
        ClientHandle {
            state: self.state.clone(),
            mailbox: self.mailbox.clone(),
        }
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.mailbox.handle_dropped();
    }
}

impl ClientHandle {
    /// Queues a message; returns its client message id. The send survives reconnects and,
    /// since it lives in the persistent state, app restarts.
    pub fn send(&self, to: Target, body: Bytes) -> Result<String, ClientError> {
        let client_msg_id = self.new_client_msg_id();
        self.send_as(client_msg_id.clone(), to, body)?;
        Ok(client_msg_id)
    }

    /// A fresh client message id, for [`ClientHandle::send_as`]: a caller that must record a
    /// send before its ack can arrive (a load generator's ledger) takes the id first.
    pub fn new_client_msg_id(&self) -> String {
        lock(&self.state).next_client_msg_id()
    }

    /// Queues a message under an id from [`ClientHandle::new_client_msg_id`].
    pub fn send_as(
        &self,
        client_msg_id: String,
        to: Target,
        body: Bytes,
    ) -> Result<(), ClientError> {
        let mut state = lock(&self.state);
        if state.outgoing.len() >= state.outgoing_len_max() {
            return Err(ClientError::OutgoingFull(state.outgoing.len()));
        }
        state.outgoing.push_back(OutgoingMessage {
            client_msg_id: client_msg_id.clone(),
            to,
            body,
            n_attempts: 0,
        });
        drop(state);
        self.mailbox.sends_waiting();
        Ok(())
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        self.mailbox.command(command).map_err(|_| ClientError::Busy)
    }

    fn request_id(&self) -> u64 {
        self.mailbox.request_id()
    }

    /// Creates a group; the reply comes as [`ClientEvent::GroupReply`] with the returned id.
    pub fn create_group(&self, group: &str, members: Vec<String>) -> Result<u64, ClientError> {
        let request_id = self.request_id();
        self.command(Command::CreateGroup {
            request_id,
            group: group.to_string(),
            members,
        })?;
        Ok(request_id)
    }

    /// Joins a group.
    pub fn join_group(&self, group: &str) -> Result<u64, ClientError> {
        let request_id = self.request_id();
        self.command(Command::JoinGroup {
            request_id,
            group: group.to_string(),
        })?;
        Ok(request_id)
    }

    /// Leaves a group.
    pub fn leave_group(&self, group: &str) -> Result<u64, ClientError> {
        let request_id = self.request_id();
        self.command(Command::LeaveGroup {
            request_id,
            group: group.to_string(),
        })?;
        Ok(request_id)
    }

    /// The device moved to another network: the connection is dropped and remade at once.
    pub fn network_changed(&self, network: &str) -> Result<(), ClientError> {
        self.command(Command::NetworkChanged {
            network: network.to_string(),
        })
    }

    /// The app changed state.
    pub fn set_app_state(&self, app_state: AppState) -> Result<(), ClientError> {
        self.command(Command::AppState(app_state))
    }

    /// Drops the connection and stays offline until [`ClientHandle::go_online`].
    pub fn go_offline(&self) -> Result<(), ClientError> {
        self.command(Command::GoOffline)
    }

    /// Connects again after [`ClientHandle::go_offline`].
    pub fn go_online(&self) -> Result<(), ClientError> {
        self.command(Command::GoOnline)
    }

    /// Stops the client core.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.command(Command::Shutdown)
    }

    /// The persistent state.
    pub fn state(&self) -> &SharedClientState {
        &self.state
    }
}

/// One device's client core, ready to run.
pub struct Client<C: Connector> {
    connector: C,
    /// Shared by every client built from the same `Arc` (the load generator's thousands).
    config: Arc<ClientConfig>,
    state: SharedClientState,
    heartbeat: Box<dyn HeartbeatStrategy>,
    observer: Arc<dyn ClientObserver>,
    /// Draws the backoff's jitter.
    rng: ParkedRng,
    /// The app's commands and the signal that sends wait.
    commands: CoreEnd,
    started: Instant,
    app_state: AppState,
    /// The network the app moved the device to and the group requests waiting for a
    /// connection, boxed only while it holds either: 8 bytes in every client's task, where the
    /// two boxed apart took 16 (and inline 56).
    rare: Option<Box<Rare>>,
    online: bool,
    /// The byte budget asked for per sync page (0: the frame limit), learnt from the link
    /// and kept across reconnects on the same network.
    sync_page_bytes: u32,
}

/// What a client seldom has (see [`Client::rare`]).
#[derive(Debug, Default)]
struct Rare {
    /// The network the app said the device moved to; `None` while it is still on
    /// `ClientConfig::network`.
    network: Option<String>,
    /// Group requests waiting for a connection, in arrival order.
    pending_requests: std::collections::VecDeque<Command>,
}

/// The first sync page's byte budget, before the link has been measured: about 15 s on a
/// 9.6 kbps GSM data channel, one round trip's worth on anything faster.
const SYNC_PAGE_BYTES_INITIAL: u32 = 16 * 1024;

impl<C: Connector> Client<C> {
    /// Builds a client core on `state` and the handle to drive it.
    ///
    /// `config` may be an `Arc` shared by many clients: a client only reads it. The backoff's
    /// jitter is drawn from `ChaCha8Rng::seed_from_u64(rng_seed)`.
    pub fn new(
        connector: C,
        config: impl Into<Arc<ClientConfig>>,
        state: SharedClientState,
        heartbeat: Box<dyn HeartbeatStrategy>,
        observer: Arc<dyn ClientObserver>,
        rng_seed: u64,
    ) -> (Client<C>, ClientHandle) {
        let config = config.into();
        lock(&state).set_outgoing_len_max(config.outgoing_len_max);
        let mailbox = Mailbox::new(COMMANDS_LEN_MAX);
        let handle = ClientHandle {
            state: state.clone(),
            mailbox: mailbox.clone(),
        };
        let client = Client {
            connector,
            config,
            state,
            heartbeat,
            observer,
            rng: ParkedRng::new(rng_seed),
            commands: CoreEnd(mailbox),
            started: Instant::now(),
            app_state: AppState::Foreground,
            rare: None,
            online: true,
            sync_page_bytes: SYNC_PAGE_BYTES_INITIAL,
        };
        (client, handle)
    }

    /// The network the device is on, for heartbeat strategies.
    fn network(&self) -> &str {
        self.rare
            .as_ref()
            .and_then(|rare| rare.network.as_deref())
            .unwrap_or(&self.config.network)
    }

    /// The app moved the device to `network`.
    fn set_network(&mut self, network: String) {
        self.rare.get_or_insert_default().network = Some(network);
    }

    /// The group requests waiting for a connection, taken (the box goes if nothing else is
    /// in it).
    fn take_pending_requests(&mut self) -> std::collections::VecDeque<Command> {
        let Some(rare) = &mut self.rare else {
            return std::collections::VecDeque::new();
        };
        let pending = std::mem::take(&mut rare.pending_requests);
        if rare.network.is_none() {
            self.rare = None;
        }
        pending
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// `instant` (now or later) as a connection keeps it.
    fn at(&self, instant: Instant) -> connection::At {
        connection::At::new(self.started, instant)
    }

    fn emit(&self, event: ClientEvent<'_>) {
        let state = lock(&self.state);
        self.observer.on_event(&state, &event);
    }

    fn heartbeat_event(&mut self, event: HeartbeatEvent) {
        let now = self.now();
        self.heartbeat.on_event(&event, now);
    }

    /// Runs until the app shuts it down or the login is refused.
    ///
    /// A plain fn returning an async block, not an `async fn`: an async fn keeps its
    /// arguments twice in its future, and `self` is about 700 bytes, in every client's task.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn run(mut self) -> impl Future<Output = ClientExit> {
        async move {
            let mut backoff = Backoff::new();
            let mut delay = Duration::ZERO;
            let mut connect_now = false;
            let exit = loop {
                // Wait out the backoff (or stay offline), still taking commands. In a block of
                // its own: the deadline is not kept across the connection's await (16 bytes in
                // every client's task).
                {
                    let deadline = Instant::now() + delay;
                    while !(self.online && (connect_now || Instant::now() >= deadline)) {
                        let command = tokio::select! {
                            biased;
                            () = tokio::time::sleep_until(deadline), if self.online => continue,
                            command = self.commands.0.next_command() => command,
                        };
                        if let Some(exit) = self.apply_command(command, &mut connect_now) {
                            self.emit(ClientEvent::Stopped(&exit));
                            return exit;
                        }
                    }
                }
                connect_now = false;
                self.emit(ClientEvent::Connecting);
                let cause = match connection::run(&mut self).await {
                    connection::Outcome::Exit(exit) => break exit,
                    connection::Outcome::Closed { cause, logged_in } => {
                        if logged_in {
                            backoff.reset();
                        }
                        cause
                    }
                };
                self.emit(ClientEvent::Disconnected(&cause));
                delay = match cause {
                    // The old path is dead; the new one is worth trying at once (Mars: 0 s). A
                    // token refused as expired was dropped: the next login carries a new one.
                    DisconnectCause::NetworkChanged
                    | DisconnectCause::Requested
                    | DisconnectCause::LoginFailed(ErrorCode::TokenExpired, _) => Duration::ZERO,
                    _ => self
                        .rng
                        .with(|rng| backoff.next_delay(&self.config.backoff, rng)),
                };
            };
            self.emit(ClientEvent::Stopped(&exit));
            exit
        }
    }

    /// Applies an app command. Returns the exit when the client must stop; sets
    /// `connect_now` when a waiting client should connect without finishing its backoff.
    fn apply_command(
        &mut self,
        command: Option<Command>,
        connect_now: &mut bool,
    ) -> Option<ClientExit> {
        match command {
            None | Some(Command::Shutdown) => return Some(ClientExit::Shutdown),
            Some(Command::GoOffline) => self.online = false,
            Some(Command::GoOnline) => {
                self.online = true;
                *connect_now = true;
            }
            Some(Command::NetworkChanged { network }) => {
                self.set_network(network.clone());
                self.sync_page_bytes = SYNC_PAGE_BYTES_INITIAL;
                self.heartbeat_event(HeartbeatEvent::NetworkChanged { network });
                *connect_now = true;
            }
            Some(Command::AppState(app_state)) => {
                self.app_state = app_state;
                self.heartbeat_event(HeartbeatEvent::AppState(app_state));
            }
            Some(
                request @ (Command::CreateGroup { .. }
                | Command::JoinGroup { .. }
                | Command::LeaveGroup { .. }),
            ) => {
                let pending = &mut self.rare.get_or_insert_default().pending_requests;
                if pending.len() >= COMMANDS_LEN_MAX {
                    tracing::warn!(
                        ?request,
                        "dropping a group request: {COMMANDS_LEN_MAX} wait for a connection"
                    );
                } else {
                    pending.push_back(request);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TcpConnector;

    /// The handle refuses a send once `outgoing_len_max` wait unacked, keeps those it took,
    /// and takes sends again once one leaves the queue (acked).
    #[test]
    fn a_handle_refuses_sends_past_outgoing_len_max() {
        let config = ClientConfig {
            outgoing_len_max: 2,
            ..ClientConfig::default()
        };
        let state = ClientState::new("u1", "d1").shared();
        let (_core, handle) = Client::new(
            TcpConnector {
                target: "127.0.0.1:9".parse().unwrap(),
            },
            config,
            state.clone(),
            crate::heartbeat::parse_strategy("fixed:60s").unwrap(),
            Arc::new(NoObserver),
            1,
        );
        let send =
            |id: &str| handle.send_as(id.to_string(), Target::Peer("u2".into()), Bytes::new());
        assert_eq!(send("a"), Ok(()));
        assert_eq!(send("b"), Ok(()));
        assert_eq!(send("c"), Err(ClientError::OutgoingFull(2)));
        let queued: Vec<String> = lock(&state)
            .outgoing
            .iter()
            .map(|message| message.client_msg_id.clone())
            .collect();
        assert_eq!(queued, ["a", "b"], "the refused send took no place");
        lock(&state).outgoing.pop_front();
        assert_eq!(send("c"), Ok(()), "room again once one is acked");
    }

    /// The network the app moved to and the group requests waiting for a connection share
    /// one box, made when either is set and let go once neither is: taking the requests keeps
    /// the network, and the network stays the device's.
    #[test]
    fn rare_fields_share_one_box_made_and_let_go_as_needed() {
        let (mut core, _handle) = Client::new(
            TcpConnector {
                target: "127.0.0.1:9".parse().unwrap(),
            },
            ClientConfig::default(),
            ClientState::new("u1", "d1").shared(),
            crate::heartbeat::parse_strategy("fixed:60s").unwrap(),
            Arc::new(NoObserver),
            1,
        );
        let request = |n: u64| Command::JoinGroup {
            request_id: n,
            group: format!("g{n}"),
        };
        let mut connect_now = false;
        assert!(core.rare.is_none(), "a new client holds no box");
        assert_eq!(core.network(), "default");
        core.apply_command(Some(request(1)), &mut connect_now);
        core.apply_command(Some(request(2)), &mut connect_now);
        assert_eq!(core.network(), "default", "requests change no network");
        let taken: Vec<u64> = core
            .take_pending_requests()
            .into_iter()
            .map(|command| match command {
                Command::JoinGroup { request_id, .. } => request_id,
                other => panic!("not a waiting request: {other:?}"),
            })
            .collect();
        assert_eq!(taken, [1, 2], "the requests in arrival order");
        assert!(core.rare.is_none(), "the box goes with the last request");

        core.apply_command(
            Some(Command::NetworkChanged {
                network: "wifi".into(),
            }),
            &mut connect_now,
        );
        core.apply_command(Some(request(3)), &mut connect_now);
        assert_eq!(core.take_pending_requests().len(), 1);
        assert_eq!(
            core.network(),
            "wifi",
            "taking the requests keeps the network"
        );
        assert!(core.rare.is_some());
        assert!(core.take_pending_requests().is_empty());
    }
}
