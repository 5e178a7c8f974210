//! One connection of the client core, from TCP connect to close.
//!
//! Order of work on a fresh connection: Login, wait for LoginReply, sync from the persistent
//! `last_seq`, resend every unacked send in order, then serve frames, app commands and timers
//! (heartbeat due, Pong overdue, send overdue, retry after an overload) until something ends
//! the connection.
//!
//! Delivery rules (one frame at a time, so `last_seq` only moves forward by one):
//! - a message with seq <= last_seq is a duplicate and is dropped;
//! - seq == last_seq + 1 is processed (reported as `ClientEvent::Message`) and acked;
//! - a higher seq is a gap: it is not processed; a sync from last_seq fetches it in order.
//!
//! - a next seq whose message identity (sender, client message id) was shown recently is
//!   consumed but not shown again: a volatile store's next generation can hold a message a
//!   second time (see `ShownIds`).
//!
//! While a sync runs, pushes that are not the next seq are left to the sync, and the highest
//! seq seen anywhere is remembered so that a final page that ends below it starts another sync.
//!
//! Weak links: a connection is alive while bytes arrive. A Pong or SendAck can be queued
//! behind a sync page that takes longer than any timeout to cross a 2G link, so the heartbeat
//! and send timeouts run from the later of the write and the last byte received. Sync pages
//! are sized to the link: each asks for the bytes the last page's throughput carries in
//! `sync_page_time`, so every page arrives, is acked and refreshes the NAT in seconds, and a
//! connection that breaks loses at most one short page.
//!
//! Send order: sends are written in queue order, at most `sends_in_flight_max` unacked. A send
//! refused as retryable (overloaded, rate limited) rewinds the window to it; the server refuses
//! later sends to the same conversation on that connection until the refused one is retried,
//! so a conversation's messages are stored in send order.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::mailbox::Sends;
use super::{Client, ClientEvent, ClientExit, Command, DisconnectCause, ShownIds, lock};
use crate::codec::FrameIoError;
use crate::framed::FrameIo;
use crate::heartbeat::HeartbeatEvent;
use crate::net::Connector;
use crate::proto::{self, Body, ErrorCode, Frame};

/// How a connection ended.
pub(super) enum Outcome {
    /// The client must stop.
    Exit(ClientExit),
    /// The connection is gone; the client reconnects after a backoff.
    Closed {
        cause: DisconnectCause,
        logged_in: bool,
    },
}

fn closed(cause: DisconnectCause, logged_in: bool) -> Outcome {
    Outcome::Closed { cause, logged_in }
}

/// A moment of a connection, exactly: nanoseconds since its client core started (plus one,
/// so that an `Option<At>` is 8 bytes too). 8 bytes where a tokio `Instant` takes 16; a
/// connection keeps five in every client's task (a load generator's tens of thousands), and
/// one per send in flight.
/// Converting an `Instant` at or after the start and back gives the same `Instant`, and the
/// order of `At`s is the order of their instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct At(NonZeroU64);

impl At {
    /// The core's start: no `At` is earlier.
    const EARLIEST: At = At(NonZeroU64::MIN);

    /// `instant` (not before `started`) as an `At`.
    pub(super) fn new(started: Instant, instant: Instant) -> At {
        let nanos = instant.saturating_duration_since(started).as_nanos();
        let nanos = u64::try_from(nanos).expect("a client core runs for less than 584 years");
        At(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The `Instant` this is.
    fn instant(self, started: Instant) -> Instant {
        started + Duration::from_nanos(self.0.get() - 1)
    }
}

/// The Ping awaiting its Pong (its id is `Live::next_ping_id - 1`).
struct PingInFlight {
    sent_at: At,
    /// The heartbeat interval it was sent at, in nanoseconds (exact: 8 bytes where a
    /// `Duration` takes 16, in every client's task).
    interval_nanos: u64,
}

impl PingInFlight {
    fn new(sent_at: At, interval: Duration) -> PingInFlight {
        let interval_nanos =
            u64::try_from(interval.as_nanos()).expect("a heartbeat interval under 584 years");
        PingInFlight {
            sent_at,
            interval_nanos,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }
}

/// Sends written on a connection and not yet acked, in write order, with their write time.
/// The queue is allocated at the connection's first send and kept for its life: a queue
/// inline took 24 bytes more in every client's task, sending or not.
#[derive(Default)]
#[allow(
    clippy::box_collection,
    reason = "8 bytes in the task while nothing was sent, where the queue takes 32"
)]
struct InFlight(Option<Box<VecDeque<(String, At)>>>);

impl InFlight {
    fn queue(&self) -> &VecDeque<(String, At)> {
        static EMPTY: VecDeque<(String, At)> = VecDeque::new();
        self.0.as_deref().unwrap_or(&EMPTY)
    }

    fn push_back(&mut self, client_msg_id: String, written_at: At) {
        self.0
            .get_or_insert_default()
            .push_back((client_msg_id, written_at));
    }

    fn retain(&mut self, keep: impl FnMut(&(String, At)) -> bool) {
        if let Some(queue) = self.0.as_deref_mut() {
            queue.retain(keep);
        }
    }

    fn truncate(&mut self, len: usize) {
        if let Some(queue) = self.0.as_deref_mut() {
            queue.truncate(len);
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(queue) = self.0.as_deref_mut() {
            queue.remove(index);
        }
    }
}

/// State of one live connection. The persistent state lives in the client.
struct Live {
    /// `FrameIo::bytes_read` when last looked at, and when that was: bytes arriving are
    /// proof of life even while no whole frame has come.
    bytes_seen: u64,
    progress_at: At,
    /// When the sync request now outstanding was written.
    sync_sent_at: Option<At>,
    syncing: bool,
    /// Highest seq seen in any push, notify or sync response.
    seen_seq_max: u64,
    /// Sends written on this connection and not yet acked, in write order, with write time.
    in_flight: InFlight,
    /// No sends are written before this (after a retryable refusal).
    retry_at: Option<At>,
    ping: Option<PingInFlight>,
    next_ping_at: At,
    /// The id of the next Ping written. 32 bits (a Ping a second for 136 years), so that it
    /// and the two flags share one word of every client's task.
    next_ping_id: u32,
    /// The only frame buffered for the next flush is a Ping (not traffic for the strategy).
    ping_just_fed: bool,
    /// Pushed messages processed up to `ack_seq` and not acked yet, and the latest time their
    /// DeviceAck is written (`ClientConfig::ack_delay` after the first of them): one DeviceAck
    /// covers every push handled until then, and it goes out sooner with any other frame.
    ack_by: Option<At>,
    ack_seq: u64,
}

/// The token the login carries, and whether it was issued for this login.
fn login_token<C: Connector>(client: &Client<C>, user: &str) -> (String, bool) {
    let Some(credentials) = &client.config.credentials else {
        return (client.config.token.clone(), false);
    };
    let mut state = lock(&client.state);
    let mut kept = state.token.take().map(|token| *token);
    let (token, renewal) = credentials.token_for_login(&mut kept, user);
    state.token = kept.map(Box::new);
    if let (Some(renewal), Some(issued)) = (renewal, &state.token) {
        let event = ClientEvent::TokenRenewed {
            renewal,
            expiry_unix_s: issued.expiry_unix_s,
        };
        client.observer.on_event(&state, &event);
    }
    (token, renewal.is_some())
}

/// A logged-in connection: its stream, framed (one value, not split halves: the split's shared
/// allocation cost 48 bytes per load-generator client, heaptrack), and the server's reply.
type LoggedIn<S> = (FrameIo<S>, proto::LoginReply);

/// Sends the Login and reads its reply before `connect_deadline`. Returns the framed stream
/// and the reply, or how the attempt ended.
async fn log_in<C: Connector>(
    client: &mut Client<C>,
    stream: C::Stream,
    connect_deadline: Instant,
) -> Result<LoggedIn<C::Stream>, Outcome> {
    let mut io = FrameIo::new(stream, client.config.max_frame_bytes);

    let (user, device) = {
        let state = lock(&client.state);
        (String::from(state.user()), String::from(state.device()))
    };
    let (token, renewed) = login_token(client, &user);
    let login = Frame::new(Body::Login(proto::Login {
        user,
        device,
        token,
        heartbeat_interval_max_s: client.heartbeat.interval_max().as_secs().max(1) as u32,
        // This client makes its own copy from each SendAck (see `take_own_copy`).
        send_ack_is_copy: true,
    }));
    io.feed(&login).expect("a login frame fits");
    let reply = tokio::time::timeout_at(connect_deadline, async {
        io.flush().await?;
        io.next().await
    })
    .await;
    let reply = match reply {
        Err(_) => {
            let cause = DisconnectCause::ConnectFailed("login timed out".into());
            return Err(closed(cause, false));
        }
        Ok(Err(error)) => return Err(closed(lost(&error), false)),
        Ok(Ok(None)) => {
            let cause = DisconnectCause::ConnectionLost("closed before login reply".into());
            return Err(closed(cause, false));
        }
        Ok(Ok(Some(frame))) => frame,
    };
    match reply.body {
        Some(Body::LoginReply(reply)) => Ok((io, reply)),
        Some(Body::Error(error)) => {
            let code = error.code();
            Err(match code {
                // A kept token the server finds expired (the device's clock runs late, or
                // the app slept past it): drop it; the next login renews it.
                ErrorCode::TokenExpired if client.config.credentials.is_some() && !renewed => {
                    lock(&client.state).token = None;
                    closed(DisconnectCause::LoginFailed(code, error.text), false)
                }
                ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::InvalidRequest => {
                    Outcome::Exit(ClientExit::LoginRefused(code, error.text))
                }
                _ => closed(DisconnectCause::LoginFailed(code, error.text), false),
            })
        }
        _ => {
            let text = format!("expected login_reply, got {}", reply.kind());
            Err(closed(DisconnectCause::ProtocolError(text), false))
        }
    }
}

/// Connects and logs in, both before the connect timeout.
async fn connect_and_log_in<C: Connector>(
    client: &mut Client<C>,
) -> Result<LoggedIn<C::Stream>, Outcome> {
    let connect_deadline = Instant::now() + client.config.connect_timeout;
    let stream = match tokio::time::timeout_at(connect_deadline, client.connector.connect()).await {
        Err(_) => {
            return Err(closed(
                DisconnectCause::ConnectFailed("timed out".into()),
                false,
            ));
        }
        Ok(Err(error)) => {
            return Err(closed(
                DisconnectCause::ConnectFailed(error.to_string()),
                false,
            ));
        }
        Ok(Ok(stream)) => stream,
    };
    log_in(client, stream, connect_deadline).await
}

/// Runs one connection attempt to its end.
///
/// A plain fn returning an async block: an `async fn` keeps its argument twice, in every
/// client's task.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn run<C: Connector>(client: &mut Client<C>) -> impl Future<Output = Outcome> + '_ {
    async move {
        // Boxed, the connect with the login: the connect's timer and the login's frames exist
        // only until logged in, not in the task for the whole connection (the login's were
        // about 500 bytes per idle client in a load generator, the connect's timer 128).
        // Matched as it comes, not bound to a name first: a named result is kept in the task
        // for the whole connection (144 bytes per client).
        let (mut io, login_reply) = match Box::pin(connect_and_log_in(client)).await {
            Ok(logged_in) => logged_in,
            Err(outcome) => return outcome,
        };
        {
            let mut state = lock(&client.state);
            if state.inbox_epoch != login_reply.inbox_epoch {
                // A new store generation: the seqs we remember name nothing there any more.
                let old_epoch = std::mem::replace(&mut state.inbox_epoch, login_reply.inbox_epoch);
                state.shown.new_generation();
                if old_epoch != 0 {
                    state.last_seq = 0;
                    let event = ClientEvent::InboxReset {
                        old_epoch,
                        new_epoch: login_reply.inbox_epoch,
                    };
                    client.observer.on_event(&state, &event);
                }
            }
        }
        client.emit(ClientEvent::Connected {
            connection_id: login_reply.connection_id,
            max_seq: login_reply.max_seq,
        });
        let network = client.network().to_owned();
        client.heartbeat_event(HeartbeatEvent::Connected { network });
        let now = client.now();
        let first_interval = client.heartbeat.interval(now);

        let last_seq = lock(&client.state).last_seq;
        let now = Instant::now();
        let mut live = Live {
            bytes_seen: io.bytes_read(),
            progress_at: client.at(now),
            sync_sent_at: None,
            ack_by: None,
            ack_seq: 0,
            syncing: false,
            seen_seq_max: login_reply.max_seq,
            in_flight: InFlight::default(),
            retry_at: None,
            ping: None,
            next_ping_at: client.at(now + first_interval),
            next_ping_id: 1,
            ping_just_fed: false,
        };
        #[cfg(feature = "planted-bugs")]
        if client.config.planted.resends_newest_first {
            // Planted bug: the unacked sends go again newest first.
            let mut state = lock(&client.state);
            state.outgoing.make_contiguous().reverse();
        }
        #[cfg(feature = "planted-bugs")]
        let sync_on_connect = !client.config.planted.no_sync_on_connect;
        #[cfg(not(feature = "planted-bugs"))]
        let sync_on_connect = true;
        if sync_on_connect {
            start_sync(client, &mut live, &mut io, last_seq);
        }
        for request in client.take_pending_requests() {
            feed(&mut io, group_request(request));
        }
        // Decided before the goodbye's await, in a block of its own: the cause and the failed
        // heartbeat, live across that await, took slots beside `serve`'s future (56 bytes in
        // every client's task).
        let (outcome, goodbye) = {
            let cause = serve(client, &mut live, &mut io).await;
            match live.ping.as_ref().map(PingInFlight::interval) {
                // Mars: a connection that dies while a heartbeat waits for its reply failed it.
                Some(interval)
                    if !matches!(
                        cause,
                        Err(_) | Ok(DisconnectCause::NetworkChanged | DisconnectCause::Requested)
                    ) =>
                {
                    client.heartbeat_event(HeartbeatEvent::Failed { interval });
                }
                _ => client.heartbeat_event(HeartbeatEvent::Disconnected),
            }
            match cause {
                Ok(cause) => {
                    let goodbye = matches!(cause, DisconnectCause::Requested);
                    (closed(cause, true), goodbye)
                }
                Err(exit) => (Outcome::Exit(exit), true),
            }
        };
        // The goodbye boxed: its timer would otherwise be laid out in the task for the whole
        // connection.
        if goodbye {
            let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), io.shutdown())).await;
        }
        outcome
    }
}

fn lost(error: &FrameIoError) -> DisconnectCause {
    match error {
        FrameIoError::Io(error) => DisconnectCause::ConnectionLost(error.to_string()),
        FrameIoError::Codec(error) => DisconnectCause::ProtocolError(error.to_string()),
    }
}

fn feed<S: AsyncRead + AsyncWrite + Unpin>(out: &mut FrameIo<S>, body: Body) {
    let frame = Frame::new(body);
    if let Err(error) = out.feed(&frame) {
        // Bodies are the app's; an oversized one is refused here rather than by the server.
        tracing::warn!(kind = frame.kind(), %error, "dropping an oversized outgoing frame");
    }
}

fn group_request(command: Command) -> Body {
    match command {
        Command::CreateGroup {
            request_id,
            group,
            members,
        } => Body::GroupCreate(proto::GroupCreate {
            request_id,
            group_id: group,
            members,
        }),
        Command::JoinGroup { request_id, group } => Body::GroupJoin(proto::GroupJoin {
            request_id,
            group_id: group,
        }),
        Command::LeaveGroup { request_id, group } => Body::GroupLeave(proto::GroupLeave {
            request_id,
            group_id: group,
        }),
        other => unreachable!("not a group request: {other:?}"),
    }
}

fn start_sync<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &Client<C>,
    live: &mut Live,
    out: &mut FrameIo<S>,
    after_seq: u64,
) {
    live.syncing = true;
    live.sync_sent_at = Some(client.at(Instant::now()));
    #[cfg(feature = "planted-bugs")]
    let max_bytes = if client.config.planted.weak_link_blind {
        0
    } else {
        client.sync_page_bytes
    };
    #[cfg(not(feature = "planted-bugs"))]
    let max_bytes = client.sync_page_bytes;
    feed(
        out,
        Body::SyncRequest(proto::SyncRequest {
            after_seq,
            limit: client.config.sync_page_len,
            max_bytes,
        }),
    );
}

impl Live {
    /// A DeviceAck of `seq` is due (it replaces any due before it), by `by` at the latest
    /// unless one was already due, which keeps its time.
    fn set_ack_due(&mut self, seq: u64, by: impl FnOnce() -> At) {
        self.ack_seq = seq;
        if self.ack_by.is_none() {
            self.ack_by = Some(by());
        }
    }

    /// The seq to ack now, if an ack is due and either other frames are being written
    /// (`writing`: it rides along in the same write) or its time has come; none is due after.
    fn take_ack_due(&mut self, writing: bool, now: impl FnOnce() -> At) -> Option<u64> {
        let by = self.ack_by?;
        if !writing && by > now() {
            return None;
        }
        self.ack_by = None;
        Some(self.ack_seq)
    }

    /// Notes bytes that arrived since the last look (whole frames or not).
    fn note_progress(&mut self, started: Instant, bytes_read: u64) {
        if bytes_read != self.bytes_seen {
            self.bytes_seen = bytes_read;
            self.progress_at = At::new(started, Instant::now());
        }
    }

    /// When a timeout of `timeout` for something written at `written_at` runs out: no
    /// earlier than `timeout` after the last byte received.
    fn overdue_at(&self, started: Instant, written_at: At, timeout: Duration) -> Instant {
        written_at.max(self.progress_at).instant(started) + timeout
    }
}

/// Smallest page budget a client asks for: a few messages even on the slowest link.
pub(super) const SYNC_PAGE_BYTES_MIN: u32 = 2 * 1024;

/// The byte budget for the next page, from how long the last one took to arrive: what the
/// link carried per second, times `target` (the page time wanted). Only a page that filled
/// its budget (`full`), or one slower than the target, says anything about the link; any
/// other keeps `current`. 0 means the frame limit (`frame_bytes`), and so does a zero target.
fn next_sync_page_bytes(
    current: u32,
    page_bytes: usize,
    full: bool,
    elapsed: Duration,
    target: Duration,
    frame_bytes: usize,
) -> u32 {
    if target.is_zero() {
        return 0;
    }
    if !full && elapsed <= target {
        return current;
    }
    let budget = page_bytes as f64 * target.as_secs_f64() / elapsed.as_secs_f64().max(1e-3);
    if budget >= frame_bytes as f64 {
        0
    } else {
        (budget as u32).max(SYNC_PAGE_BYTES_MIN)
    }
}

/// What processing one message did.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Next,
    Duplicate,
    Gap,
}

/// The device's own message as its SendAck makes it (the server does not push it back, see
/// `send_ack_is_copy` in the Login): processed now when it is the next seq; when it is
/// ahead, a sync fetches it with the seqs before it, as for a push past a gap; nothing when
/// the device has it already (a sync brought it first). Not acked: the next ack covers it.
fn take_own_copy<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &Client<C>,
    live: &mut Live,
    out: &mut FrameIo<S>,
    copy: &proto::Message,
) {
    // Seq 0: a server that answered before storing; the message comes by push.
    if copy.seq == 0 {
        return;
    }
    live.seen_seq_max = live.seen_seq_max.max(copy.seq);
    let last_seq = lock(&client.state).last_seq;
    if copy.seq <= last_seq {
        return;
    }
    if apply(client, copy) == Applied::Gap && !live.syncing {
        start_sync(client, live, out, last_seq);
    }
}

/// Processes one message against the persistent seq.
fn apply<C: Connector>(client: &Client<C>, message: &proto::Message) -> Applied {
    let mut state = lock(&client.state);
    if message.seq <= state.last_seq {
        client
            .observer
            .on_event(&state, &ClientEvent::DuplicateDropped { seq: message.seq });
        return Applied::Duplicate;
    }
    if message.seq != state.last_seq + 1 {
        return Applied::Gap;
    }
    state.last_seq = message.seq;
    if !message.client_msg_id.is_empty() {
        let fingerprint = ShownIds::fingerprint(&message.from_user, &message.client_msg_id);
        #[cfg(feature = "planted-bugs")]
        let check = !client.config.planted.repeats_shown_again;
        #[cfg(not(feature = "planted-bugs"))]
        let check = true;
        if check && state.shown.contains(fingerprint) {
            client
                .observer
                .on_event(&state, &ClientEvent::Repeat(message));
            return Applied::Next;
        }
        state.shown.insert(fingerprint);
    }
    client
        .observer
        .on_event(&state, &ClientEvent::Message(message));
    Applied::Next
}

/// Serves a logged-in connection. `Ok(cause)` to reconnect, `Err(exit)` to stop.
///
/// A plain fn returning an async block, as [`run`] is: its four references would be kept
/// twice (32 bytes in every client's task).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn serve<'a, C: Connector, S>(
    client: &'a mut Client<C>,
    live: &'a mut Live,
    io: &'a mut FrameIo<S>,
) -> impl Future<Output = Result<DisconnectCause, ClientExit>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        loop {
            note_progress(client, live, io);
            write_sends(client, live, io);
            let writing = io.buffered_bytes() > 0;
            if let Some(seq) = live.take_ack_due(writing, || client.at(Instant::now())) {
                feed(io, Body::DeviceAck(proto::DeviceAck { seq }));
            }
            if io.buffered_bytes() > 0 {
                if !live.ping_just_fed {
                    client.heartbeat_event(HeartbeatEvent::Traffic { outbound: true });
                    if live.ping.is_none() && client.heartbeat.restart_on_traffic() {
                        let now = client.now();
                        let interval = client.heartbeat.interval(now);
                        live.next_ping_at = client.at(Instant::now() + interval);
                    }
                }
                live.ping_just_fed = false;
                // The flush as one poll: `FrameIo::flush`'s own future took 16 bytes more
                // beside the timer.
                let flush = std::future::poll_fn(|cx| io.poll_flush(cx));
                match tokio::time::timeout(client.config.send_timeout, flush).await {
                    Err(_) => return Ok(DisconnectCause::ConnectionLost("write stalled".into())),
                    Ok(Err(error)) => {
                        return Ok(DisconnectCause::ConnectionLost(error.to_string()));
                    }
                    Ok(Ok(())) => {}
                }
            }
            let deadline = next_deadline(client, live);
            // The wait for sends and the timer are dropped before anything is handled.
            let woke = Wait {
                frames: &mut *io,
                sends: client.commands.0.sends(),
                timer: tokio::time::sleep_until(deadline),
            }
            .await;
            match woke {
                Woke::Frame(next) => {
                    let frame = match next {
                        Ok(Some(frame)) => frame,
                        Ok(None) => {
                            return Ok(DisconnectCause::ConnectionLost(
                                "server closed the connection".into(),
                            ));
                        }
                        Err(error) => return Ok(lost(&error)),
                    };
                    if frame.kind() != "pong" {
                        client.heartbeat_event(HeartbeatEvent::Traffic { outbound: false });
                    }
                    if let Some(end) = handle_frame(client, live, io, frame)? {
                        return Ok(end);
                    }
                    // Frames that arrived in the same read are handled before anything is
                    // written, so their acks and replies share one write.
                    loop {
                        let frame = match io.next_buffered() {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(error) => return Ok(lost(&error.into())),
                        };
                        if frame.kind() != "pong" {
                            client.heartbeat_event(HeartbeatEvent::Traffic { outbound: false });
                        }
                        if let Some(end) = handle_frame(client, live, io, frame)? {
                            return Ok(end);
                        }
                    }
                }
                Woke::Command(command) => match command {
                    None | Some(Command::Shutdown) => return Err(ClientExit::Shutdown),
                    Some(Command::GoOffline) => {
                        client.online = false;
                        return Ok(DisconnectCause::Requested);
                    }
                    Some(Command::GoOnline) => client.online = true,
                    Some(Command::NetworkChanged { network }) => {
                        client.set_network(network.clone());
                        client.sync_page_bytes = super::SYNC_PAGE_BYTES_INITIAL;
                        client.heartbeat_event(HeartbeatEvent::NetworkChanged { network });
                        return Ok(DisconnectCause::NetworkChanged);
                    }
                    Some(Command::AppState(app_state)) => {
                        client.app_state = app_state;
                        client.heartbeat_event(HeartbeatEvent::AppState(app_state));
                        if live.ping.is_none() {
                            let now = client.now();
                            let interval = client.heartbeat.interval(now);
                            let due = client.at(Instant::now() + interval);
                            live.next_ping_at = live.next_ping_at.min(due);
                        }
                    }
                    Some(request) => feed(io, group_request(request)),
                },
                Woke::Sends => {}
                Woke::Timer => {
                    note_progress(client, live, io);
                    if let Some(end) = on_timer(client, live, io) {
                        return Ok(end);
                    }
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A logged-in connection's wait: what `tokio::select!` (biased) over the frame, the
    /// command, the sends and the timer did, as one poll. It holds the timer itself and two
    /// pointers, where a `poll_fn` took a third pointer to the timer beside it, and the
    /// select's futures, mask and closure 40 bytes more, in every client's task.
    struct Wait<'a, S> {
        frames: &'a mut FrameIo<S>,
        sends: Sends<'a>,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Wait<'_, S> {
    type Output = Woke;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        let this = self.project();
        if let Poll::Ready(next) = this.frames.poll_next(cx) {
            return Poll::Ready(Woke::Frame(next));
        }
        if let Poll::Ready(command) = this.sends.poll_command(cx) {
            return Poll::Ready(Woke::Command(command));
        }
        if Pin::new(&mut *this.sends).poll(cx).is_ready() {
            return Poll::Ready(Woke::Sends);
        }
        if this.timer.poll(cx).is_ready() {
            return Poll::Ready(Woke::Timer);
        }
        Poll::Pending
    }
}

/// What ended a logged-in connection's wait.
enum Woke {
    Frame(Result<Option<Frame>, FrameIoError>),
    Command(Option<Command>),
    Sends,
    Timer,
}

fn note_progress<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &Client<C>,
    live: &mut Live,
    io: &FrameIo<S>,
) {
    #[cfg(feature = "planted-bugs")]
    if client.config.planted.weak_link_blind {
        // Planted bug: only whole frames count, and only the Pong or SendAck itself.
        return;
    }
    live.note_progress(client.started, io.bytes_read());
}

/// When a DeviceAck due from now is written at the latest: `ack_delay` from now (at once
/// when it is zero, without reading the clock).
fn ack_by<C: Connector>(client: &Client<C>) -> At {
    let delay = client.config.ack_delay;
    if delay.is_zero() {
        return At::EARLIEST;
    }
    client.at(Instant::now() + delay)
}

/// The earliest timer: Pong overdue, heartbeat due, send overdue, retry allowed.
fn next_deadline<C: Connector>(client: &Client<C>, live: &Live) -> Instant {
    let started = client.started;
    let mut deadline = match &live.ping {
        Some(ping) => live.overdue_at(started, ping.sent_at, client.config.heartbeat_timeout),
        None => live.next_ping_at.instant(started),
    };
    if let Some((_, written_at)) = live.in_flight.queue().front() {
        let overdue_at = live.overdue_at(started, *written_at, client.config.send_timeout);
        deadline = deadline.min(overdue_at);
    }
    if let Some(retry_at) = live.retry_at {
        deadline = deadline.min(retry_at.instant(started));
    }
    if let Some(ack_by) = live.ack_by {
        deadline = deadline.min(ack_by.instant(started));
    }
    deadline
}

fn on_timer<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    live: &mut Live,
    out: &mut FrameIo<S>,
) -> Option<DisconnectCause> {
    let now = Instant::now();
    let started = client.started;
    if live.retry_at.is_some_and(|at| at.instant(started) <= now) {
        live.retry_at = None;
    }
    if let Some((_, written_at)) = live.in_flight.queue().front()
        && live.overdue_at(started, *written_at, client.config.send_timeout) <= now
    {
        return Some(DisconnectCause::SendTimeout);
    }
    let heartbeat_timeout = client.config.heartbeat_timeout;
    match &live.ping {
        Some(ping) if live.overdue_at(started, ping.sent_at, heartbeat_timeout) <= now => {
            return Some(DisconnectCause::HeartbeatTimeout);
        }
        Some(_) => {}
        None if live.next_ping_at.instant(started) <= now => {
            let since = client.now();
            let interval = client.heartbeat.interval(since);
            let id = live.next_ping_id;
            live.next_ping_id = id.wrapping_add(1);
            live.ping = Some(PingInFlight::new(client.at(now), interval));
            feed(out, Body::Ping(proto::Ping { id: id.into() }));
            live.ping_just_fed = true;
            client.emit(ClientEvent::HeartbeatSent { interval });
        }
        None => {}
    }
    None
}

/// Writes queued sends up to the in-flight window, oldest first.
fn write_sends<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &Client<C>,
    live: &mut Live,
    out: &mut FrameIo<S>,
) {
    if live.retry_at.is_some() || live.in_flight.queue().len() >= client.config.sends_in_flight_max
    {
        return;
    }
    let mut state = lock(&client.state);
    let window = client.config.sends_in_flight_max;
    let start = live.in_flight.queue().len();
    let now = client.at(Instant::now());
    let state = &mut *state;
    for message in state.outgoing.iter_mut().skip(start) {
        if live.in_flight.queue().len() >= window {
            break;
        }
        message.n_attempts += 1;
        feed(
            out,
            Body::Send(proto::Send {
                client_msg_id: message.client_msg_id.clone(),
                to: Some(message.to.to_send_to()),
                body: message.body.clone(),
            }),
        );
        live.in_flight.push_back(message.client_msg_id.clone(), now);
    }
    for (client_msg_id, _) in live.in_flight.queue().iter().skip(start) {
        let attempt = state
            .outgoing
            .iter()
            .find(|m| m.client_msg_id == *client_msg_id)
            .map_or(1, |m| m.n_attempts);
        client.observer.on_event(
            state,
            &ClientEvent::SendWritten {
                client_msg_id,
                attempt,
            },
        );
    }
}

/// Handles one frame from the server. Returns a cause when the connection must end.
fn handle_frame<C: Connector, S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    live: &mut Live,
    out: &mut FrameIo<S>,
    frame: Frame,
) -> Result<Option<DisconnectCause>, ClientExit> {
    let Some(body) = frame.body else {
        unreachable!("the decoder rejects frames without a body")
    };
    match body {
        Body::NotifyData(notify) => {
            let Some(message) = notify.message else {
                return Ok(Some(DisconnectCause::ProtocolError(
                    "notify_data without a message".into(),
                )));
            };
            live.seen_seq_max = live.seen_seq_max.max(message.seq);
            #[cfg(feature = "planted-bugs")]
            if client.config.planted.push_skips_seq_check {
                // Planted bug: take the push as the next message, whatever its seq.
                let mut state = lock(&client.state);
                state.last_seq = message.seq;
                client
                    .observer
                    .on_event(&state, &ClientEvent::Message(&message));
                drop(state);
                feed(out, Body::DeviceAck(proto::DeviceAck { seq: message.seq }));
                return Ok(None);
            }
            #[cfg(feature = "planted-bugs")]
            if client.config.planted.gap_jumps_ahead && message.seq > lock(&client.state).last_seq {
                // Planted bug: a push past a gap is taken as the next message.
                let mut state = lock(&client.state);
                state.last_seq = message.seq;
                client
                    .observer
                    .on_event(&state, &ClientEvent::Message(&message));
                live.set_ack_due(message.seq, || ack_by(client));
                return Ok(None);
            }
            match apply(client, &message) {
                Applied::Next => live.set_ack_due(message.seq, || ack_by(client)),
                // Acked again (cumulatively, at the last seq): a server that pushes a
                // device's own sends back anyway (one that ignores `send_ack_is_copy`) sees
                // its push taken instead of falling back to a Notify.
                Applied::Duplicate => {
                    let last_seq = lock(&client.state).last_seq;
                    live.set_ack_due(last_seq, || ack_by(client));
                }
                Applied::Gap if live.syncing => {}
                Applied::Gap => {
                    let last_seq = lock(&client.state).last_seq;
                    start_sync(client, live, out, last_seq);
                }
            }
        }
        Body::Notify(notify) => {
            live.seen_seq_max = live.seen_seq_max.max(notify.max_seq);
            let last_seq = lock(&client.state).last_seq;
            if !live.syncing && notify.max_seq > last_seq {
                start_sync(client, live, out, last_seq);
            }
        }
        Body::SyncResponse(response) => {
            live.seen_seq_max = live.seen_seq_max.max(response.max_seq);
            if let Some(sent_at) = live.sync_sent_at.take() {
                let page_bytes = prost::Message::encoded_len(&response);
                client.sync_page_bytes = next_sync_page_bytes(
                    client.sync_page_bytes,
                    page_bytes,
                    response.has_more,
                    sent_at.instant(client.started).elapsed(),
                    client.config.sync_page_time,
                    client.config.max_frame_bytes,
                );
            }
            let mut gap = false;
            for message in &response.messages {
                if apply(client, message) == Applied::Gap {
                    gap = true;
                    break;
                }
            }
            let last_seq = lock(&client.state).last_seq;
            live.set_ack_due(last_seq, || ack_by(client));
            if gap || response.has_more || live.seen_seq_max > last_seq {
                start_sync(client, live, out, last_seq);
            } else {
                live.syncing = false;
            }
        }
        Body::SendAck(ack) => {
            live.in_flight.retain(|(id, _)| *id != ack.client_msg_id);
            let mut state = lock(&client.state);
            if let Some(position) = state
                .outgoing
                .iter()
                .position(|m| m.client_msg_id == ack.client_msg_id)
            {
                let sent = state.take_outgoing(position).expect("found above");
                client.observer.on_event(
                    &state,
                    &ClientEvent::SendAcked {
                        client_msg_id: &ack.client_msg_id,
                        seq: ack.seq,
                        msg_id: ack.msg_id,
                    },
                );
                let copy = proto::Message {
                    seq: ack.seq,
                    msg_id: ack.msg_id,
                    from_user: state.user().to_string(),
                    from_device: state.device().to_string(),
                    client_msg_id: ack.client_msg_id,
                    to: Some(sent.to.to_message_to()),
                    body: sent.body,
                    server_time_ms: ack.server_time_ms,
                };
                drop(state);
                take_own_copy(client, live, out, &copy);
            }
        }
        Body::Pong(pong) => {
            let in_flight_id = u64::from(live.next_ping_id.wrapping_sub(1));
            if let Some(ping) = live.ping.take_if(|_| pong.id == in_flight_id) {
                let rtt = ping.sent_at.instant(client.started).elapsed();
                client.heartbeat_event(HeartbeatEvent::Succeeded {
                    interval: ping.interval(),
                });
                client.emit(ClientEvent::HeartbeatAcked { rtt });
                let now = client.now();
                let interval = client.heartbeat.interval(now);
                live.next_ping_at = client.at(Instant::now() + interval);
            }
        }
        Body::GroupReply(reply) => client.emit(ClientEvent::GroupReply(&reply)),
        Body::Kick(kick) => {
            // REPLACED too leads to a reconnect after backoff: the replacing login is usually
            // this device's own stale connection (a login delayed in the network past its
            // timeout), and the reconnect takes the session back.
            return Ok(Some(DisconnectCause::Kicked(kick.reason())));
        }
        Body::Error(error) => on_error(client, live, error),
        other => {
            let text = format!("unexpected {} frame from the server", other.kind());
            return Ok(Some(DisconnectCause::ProtocolError(text)));
        }
    }
    Ok(None)
}

fn on_error<C: Connector>(client: &Client<C>, live: &mut Live, error: proto::Error) {
    if error.client_msg_id.is_empty() {
        client.emit(ClientEvent::ServerError(&error));
        return;
    }
    let code = error.code();
    let retryable = matches!(
        code,
        ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::StoreUnavailable
    );
    let Some(position) = live
        .in_flight
        .queue()
        .iter()
        .position(|(id, _)| *id == error.client_msg_id)
    else {
        return;
    };
    if retryable {
        // Rewind: this send and everything written after it go again, in order.
        live.in_flight.truncate(position);
        live.retry_at = Some(client.at(Instant::now() + client.config.retry_delay));
        client.emit(ClientEvent::SendRefused {
            client_msg_id: &error.client_msg_id,
            code,
        });
        return;
    }
    live.in_flight.remove(position);
    let mut state = lock(&client.state);
    if let Some(index) = state
        .outgoing
        .iter()
        .position(|m| m.client_msg_id == error.client_msg_id)
    {
        state.take_outgoing(index);
    }
    client.observer.on_event(
        &state,
        &ClientEvent::SendFailed {
            client_msg_id: &error.client_msg_id,
            code,
            text: &error.text,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn a_moment_is_kept_exactly_in_eight_bytes_and_in_order() {
        assert_eq!(std::mem::size_of::<Option<At>>(), 8);
        let started = Instant::now();
        let offsets = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999_999_999),
            Duration::from_millis(1_500),
            Duration::from_secs(86_400 * 365 * 100) + Duration::from_nanos(7),
        ];
        for pair in offsets.windows(2) {
            let [early, late] = [pair[0], pair[1]].map(|offset| started + offset);
            for instant in [early, late] {
                assert_eq!(At::new(started, instant).instant(started), instant);
            }
            assert!(At::new(started, early) < At::new(started, late));
        }
    }

    fn budget(current: u32, page_bytes: usize, full: bool, elapsed_ms: u64) -> u32 {
        let elapsed = Duration::from_millis(elapsed_ms);
        next_sync_page_bytes(
            current,
            page_bytes,
            full,
            elapsed,
            Duration::from_secs(4),
            64 * KIB,
        )
    }

    #[test]
    fn sync_pages_follow_the_link() {
        // A full 16 KiB page took 20 s (a 2G link): ask for what 4 s carry, 3,276 bytes.
        assert_eq!(budget(16 * 1024, 16 * KIB, true, 20_000), 3_276);
        // Slower still: never below the floor.
        assert_eq!(budget(3_276, 3 * KIB, true, 60_000), 2_048);
        // A full page in 50 ms (LTE): the frame limit.
        assert_eq!(budget(16 * 1024, 16 * KIB, true, 50), 0);
        // A short last page says nothing about the link when it was quick...
        assert_eq!(budget(3_276, 500, false, 2_500), 3_276);
        // ...but a slow one shrinks the budget: 12 KiB took 16 s, so ask for what 4 s carry...
        assert_eq!(budget(16 * 1024, 12 * KIB, false, 16_000), 3_072);
        // ...down to the floor: 4 KiB in 16 s would be 1 KiB.
        assert_eq!(budget(16 * 1024, 4 * KIB, false, 16_000), 2_048);
        // No target: pages fill the frame.
        let none = next_sync_page_bytes(
            3_276,
            16 * KIB,
            true,
            Duration::from_secs(20),
            Duration::ZERO,
            64 * KIB,
        );
        assert_eq!(none, 0);
    }
}
