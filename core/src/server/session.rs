//! One connection: the login phase, then the logged-in connection (`live.rs`) that reads the
//! client's frames, hands each to its handler here, and writes the replies and pushes.
//!
//! Close rules: no finished handshake and Login within `login_timeout`; a failed handshake; a
//! bad frame, a frame before login or a refused token (each answered with a typed Error
//! first); silence longer than the idle timeout (1.5x the client's declared heartbeat
//! interval, clamped); a kick (same device logged in elsewhere, slow consumer, shutdown). Only
//! this connection is affected.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::live::{Live, LoggedIn};
use super::registry::{SessionControl, SessionOptions};
use super::{Shared, error_frame};
use crate::auth::{AuthError, validate_id};
use crate::codec::{CodecError, FrameIoError};
use crate::framed::FrameIo;
use crate::net::Stream;
use crate::proto::{self, Body, ErrorCode, Frame, Target};
use crate::store::{AppendRequest, StoreError, StoredMessage};

/// Why a connection ended, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    PeerEnded,
    Io,
    BadFrame,
    Reaped,
    Killed,
    SlowConsumer,
    StoreFailed,
    TooManyRefusals,
}

/// A logged-in connection's identity (user, device, connection id, the user's send budget),
/// kept with its outbox and kill switch in the registry's one allocation per connection, the
/// two names in one string.
pub(super) type Session = SessionControl;

/// Serves one accepted connection to the end: first the listener's handshake (a TLS
/// handshake, or nothing for plain sockets), here in the connection's task rather than in the
/// accept loop, then the login and the session.
///
/// The handshake and the login are one future, boxed and in the connection's span (its id and
/// peer), made before the connection's own future: what only they need (the handshake's
/// future, the stop token, the login deadline, the span) is then one pointer in the task that
/// lives as long as the connection: the connection's future with its span went from 632 to
/// 496 bytes and the task cell from 768 to 640 (`-Zprint-type-sizes`, plain TCP; TLS and
/// WebSocket alike). The logged-in phase's events name the user and device instead.
/// A plain fn returning an async block, not an `async fn`: an async fn keeps its arguments
/// twice. The connection's id is taken here, in accept order.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn serve_connection<S: Stream>(
    shared: Arc<Shared>,
    handshake: impl Future<Output = io::Result<S>>,
    peer: SocketAddr,
    stop: CancellationToken,
) -> impl Future<Output = ()> {
    let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", id = connection_id, %peer);
    let opening = Box::pin(open(shared, handshake, stop, connection_id).instrument(span));
    async move {
        let Some(logged_in) = opening.await else {
            return;
        };
        let (closed, conn) = Live::new(logged_in).await;
        Box::pin(conn.close(closed)).await;
    }
}

/// One open connection in the server's count, from the first poll of its future until the
/// future ends or is dropped (a crash drops it unfinished).
pub(super) struct Open(Arc<Shared>);

impl Open {
    /// The server's state.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }

    /// Counts one more open connection; returns the guard and whether the connections open
    /// with it are more than `connections_max`.
    fn count(shared: Arc<Shared>) -> (Open, bool) {
        let n_open = shared
            .counters
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let over_limit = n_open > shared.config.connections_max as u64;
        (Open(shared), over_limit)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handshake and the login (see [`serve_connection`]); `None` when the connection is to
/// close, the peer told why where it can be.
async fn open<S: Stream>(
    shared: Arc<Shared>,
    handshake: impl Future<Output = io::Result<S>>,
    stop: CancellationToken,
    connection_id: u64,
) -> Option<LoggedIn<S>> {
    shared
        .counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    let (open, over_limit) = Open::count(shared.clone());
    // One deadline for handshake and login: a peer that never finishes its handshake is
    // closed when one that never logs in would be.
    let login_deadline = Instant::now() + shared.config.login_timeout;
    let stream = finish_handshake(&shared, handshake, login_deadline, &stop).await?;
    let max_frame_bytes = shared.config.max_frame_bytes;
    let mut io = FrameIo::new(stream, max_frame_bytes);
    if over_limit {
        shared
            .counters
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "server holds {} connections, its limit (connections_max)",
            shared.config.connections_max
        );
        refuse(&shared, &mut io, ErrorCode::Overloaded, text).await;
        return None;
    }
    let (session, idle_timeout, acked_seq) =
        log_in(&shared, &mut io, login_deadline, stop, connection_id).await?;
    Some(LoggedIn {
        open,
        session,
        io,
        idle_timeout,
        acked_seq,
    })
}

/// Awaits the listener's handshake until the login deadline; `None` if it failed, timed out
/// or the server stopped.
async fn finish_handshake<S>(
    shared: &Shared,
    handshake: impl Future<Output = io::Result<S>>,
    login_deadline: Instant,
    stop: &CancellationToken,
) -> Option<S> {
    let outcome = tokio::select! {
        // Biased: a fixed poll order draws nothing from tokio's RNG, so simulations replay
        // exactly as they did before handshakes existed (theirs are ready at once).
        biased;
        () = stop.cancelled() => return None,
        outcome = tokio::time::timeout_at(login_deadline, handshake) => outcome,
    };
    let error = match outcome {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => error.to_string(),
        Err(_elapsed) => format!(
            "handshake not finished within the login timeout ({:?})",
            shared.config.login_timeout
        ),
    };
    shared
        .counters
        .handshakes_failed
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!("closing: {error}");
    None
}

/// What a login sets up: the session, its kill switch, its outbox, its idle timeout and the
/// device's acked cursor.
type Login = (Session, Duration, u64);

/// The login phase: reads and checks the Login, registers the session, reads its cursor and
/// max_seq and buffers the LoginReply; `None` when the connection is to close (refused, timed
/// out, the store failed), the peer told why where it can be.
async fn log_in<S: Stream>(
    shared: &Arc<Shared>,
    io: &mut FrameIo<S>,
    login_deadline: Instant,
    stop: CancellationToken,
    connection_id: u64,
) -> Option<Login> {
    let (user, device, idle_timeout, send_ack_is_copy) =
        read_login(shared, io, login_deadline, &stop).await?;
    let options = SessionOptions {
        outbox_len_max: shared.config.outbox_len_max,
        send_ack_is_copy,
    };
    let session = shared.registry.register(
        &user,
        &device,
        connection_id,
        options,
        shared.config.send_rate_per_user,
    );
    // Read after registering: a message stored from now on is pushed to this
    // connection, and one stored earlier is within max_seq, so none falls between the
    // two (a message in both is deduped by seq on the client).
    let (acked_seq, max_seq) = match login_reads(shared, &session).await {
        Ok(reads) => reads,
        Err(error) => {
            shared
                .registry
                .unregister(session.user(), session.device(), connection_id);
            let text = format!("store failed at login: {error}");
            Box::pin(refuse(shared, io, ErrorCode::StoreUnavailable, text)).await;
            return None;
        }
    };
    shared.counters.logins.fetch_add(1, Ordering::Relaxed);
    // Ahead of the outbox, which may hold pushes queued since registering.
    io.feed(&Frame::new(Body::LoginReply(proto::LoginReply {
        max_seq,
        server_time_ms: shared.clock.unix_ms(),
        idle_timeout_s: idle_timeout.as_secs() as u32,
        connection_id,
        inbox_epoch: shared.store.epoch(),
    })))
    .expect("a login reply fits in any frame");
    tracing::debug!(
        user = session.user(),
        device = session.device(),
        ?idle_timeout,
        "logged in"
    );
    Some((session, idle_timeout, acked_seq))
}

/// The Login frame: the first frame must be a valid Login before `login_deadline`; anything
/// else is answered with an Error and `None`. Returns the user, the device, the idle timeout
/// and whether the device takes its SendAcks as its copies.
async fn read_login<S: Stream>(
    shared: &Shared,
    io: &mut FrameIo<S>,
    login_deadline: Instant,
    stop: &CancellationToken,
) -> Option<(String, String, Duration, bool)> {
    let first = tokio::select! {
        biased;
        () = stop.cancelled() => return None,
        first = tokio::time::timeout_at(login_deadline, io.next()) => first,
    };
    let login = match first {
        Err(_elapsed) => {
            let text = format!("no login within {:?}", shared.config.login_timeout);
            Box::pin(refuse(shared, io, ErrorCode::LoginTimeout, text)).await;
            return None;
        }
        Ok(Ok(None) | Err(FrameIoError::Io(_))) => return None,
        Ok(Err(FrameIoError::Codec(error))) => {
            let mut text = error.to_string();
            if starts_like_tls(&error) {
                tracing::info!("closing: a TLS client reached this plaintext listener");
                text = format!("this server speaks plaintext, not TLS ({text})");
            }
            Box::pin(refuse(shared, io, codec_error_code(&error), text)).await;
            return None;
        }
        Ok(Ok(Some(frame))) => match frame.body {
            Some(Body::Login(login)) => login,
            _ => {
                let text = format!("expected a login frame first, got {}", frame.kind());
                Box::pin(refuse(shared, io, ErrorCode::NotLoggedIn, text)).await;
                return None;
            }
        },
    };
    let idle_timeout = match check_login(shared, &login) {
        Ok(idle_timeout) => idle_timeout,
        Err((code, text)) => {
            tracing::info!(user = %login.user, device = %login.device, "login refused: {text}");
            Box::pin(refuse(shared, io, code, text)).await;
            return None;
        }
    };
    // The token and the rest of the frame are dropped here, not kept for the session.
    Some((
        login.user,
        login.device,
        idle_timeout,
        login.send_ack_is_copy,
    ))
}

/// Validates a Login; returns the idle timeout for the connection.
fn check_login(shared: &Shared, login: &proto::Login) -> Result<Duration, (ErrorCode, String)> {
    validate_id("user", &login.user).map_err(|text| (ErrorCode::InvalidRequest, text))?;
    validate_id("device", &login.device).map_err(|text| (ErrorCode::InvalidRequest, text))?;
    let now_unix_s = shared.clock.unix_ms() / 1_000;
    shared
        .auth
        .verify(&login.token, &login.user, now_unix_s)
        .map_err(|error| {
            let code = match error {
                AuthError::Expired { .. } => ErrorCode::TokenExpired,
                _ => ErrorCode::AuthFailed,
            };
            (code, error.to_string())
        })?;
    let declared = Duration::from_secs(u64::from(login.heartbeat_interval_max_s));
    let heartbeat = declared.clamp(
        shared.config.heartbeat_interval_min,
        shared.config.heartbeat_interval_max,
    );
    Ok(heartbeat.mul_f64(1.5))
}

async fn login_reads(shared: &Shared, session: &Session) -> Result<(u64, u64), StoreError> {
    let cursor = shared
        .store
        .cursor(session.user(), session.device())
        .await?;
    let max_seq = shared.store.max_seq(session.user()).await?;
    Ok((cursor, max_seq))
}

/// Answers a connection that never logged in with an error frame, then closes it. Callers
/// box it, so its state is not part of every connection's task.
async fn refuse<S: Stream>(shared: &Shared, io: &mut FrameIo<S>, code: ErrorCode, text: String) {
    let counter = match code {
        ErrorCode::AuthFailed => Some(&shared.counters.logins_refused_auth),
        ErrorCode::TokenExpired => Some(&shared.counters.logins_refused_expired),
        ErrorCode::LoginTimeout => Some(&shared.counters.login_timeouts),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let frame = error_frame(proto::Error::new(code, text));
    let _ = tokio::time::timeout(shared.config.close_flush_timeout, async {
        io.send(&frame).await?;
        io.shutdown().await?;
        Ok::<(), FrameIoError>(())
    })
    .await;
}

/// Whether a refused length prefix was really the start of a TLS record (type 0x16,
/// version 0x03xx): a TLS client talking to a plaintext listener.
fn starts_like_tls(error: &CodecError) -> bool {
    matches!(error, CodecError::FrameTooLarge { declared_bytes, .. }
        if declared_bytes >> 24 == 0x16 && (declared_bytes >> 16) & 0xff == 0x03)
}

pub(super) fn codec_error_code(error: &CodecError) -> ErrorCode {
    match error {
        CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        CodecError::Malformed { .. } | CodecError::EmptyFrame => ErrorCode::BadFrame,
    }
}

/// What handling a frame produced for the connection.
pub(super) enum Handled {
    Reply(Frame),
    /// The device's acked cursor after a DeviceAck.
    Acked(u64),
}

/// A frame's handler in progress: it owns what it needs, the connection's send barrier
/// included, which it hands back.
pub(super) type Handling =
    Pin<Box<dyn Future<Output = (Result<Handled, Closed>, SendBarrier)> + Send>>;

/// Handles one frame of a logged-in connection (pings are answered by the connection itself).
pub(super) async fn handle_frame(
    shared: Arc<Shared>,
    session: Session,
    frame: Frame,
    mut barrier: SendBarrier,
) -> (Result<Handled, Closed>, SendBarrier) {
    let handled = handle_body(&shared, &session, frame, &mut barrier).await;
    (handled, barrier)
}

async fn handle_body(
    shared: &Arc<Shared>,
    session: &Session,
    frame: Frame,
    barrier: &mut SendBarrier,
) -> Result<Handled, Closed> {
    let Some(body) = frame.body else {
        unreachable!("the decoder rejects frames without a body")
    };
    let reply = match body {
        Body::Ping(ping) => Body::Pong(proto::Pong {
            id: ping.id,
            server_time_ms: shared.clock.unix_ms(),
        }),
        Body::Send(send) => handle_send(shared, session, send, barrier).await?,
        Body::DeviceAck(ack) => {
            let cursor = shared
                .store
                .ack_cursor(session.user(), session.device(), ack.seq)
                .await
                .map_err(|_| Closed::StoreFailed)?;
            return Ok(Handled::Acked(cursor));
        }
        Body::SyncRequest(request) => handle_sync(shared, session, request).await?,
        Body::GroupCreate(request) => {
            let result = shared
                .store
                .create_group(&request.group_id, session.user(), &request.members)
                .await;
            group_reply(
                request.request_id,
                &request.group_id,
                result,
                validate_group(&request.group_id, &request.members),
            )
        }
        Body::GroupJoin(request) => {
            let result = shared
                .store
                .join_group(&request.group_id, session.user())
                .await;
            group_reply(request.request_id, &request.group_id, result, Ok(()))
        }
        Body::GroupLeave(request) => {
            let result = shared
                .store
                .leave_group(&request.group_id, session.user())
                .await;
            group_reply(request.request_id, &request.group_id, result, Ok(()))
        }
        Body::Login(_) => Body::Error(proto::Error::new(
            ErrorCode::InvalidRequest,
            "already logged in on this connection",
        )),
        other @ (Body::LoginReply(_)
        | Body::Pong(_)
        | Body::SendAck(_)
        | Body::NotifyData(_)
        | Body::Notify(_)
        | Body::SyncResponse(_)
        | Body::GroupReply(_)
        | Body::Kick(_)
        | Body::Error(_)) => Body::Error(proto::Error::new(
            ErrorCode::InvalidRequest,
            format!("{} frames are sent by the server, not to it", other.kind()),
        )),
    };
    Ok(Handled::Reply(Frame::new(reply)))
}

fn validate_group(group: &str, members: &[String]) -> Result<(), String> {
    validate_id("group", group)?;
    members
        .iter()
        .try_for_each(|member| validate_id("user", member))
}

fn group_reply(
    request_id: u64,
    group: &str,
    result: Result<Vec<String>, StoreError>,
    validation: Result<(), String>,
) -> Body {
    let error = |code: ErrorCode, text: String| {
        Body::Error(proto::Error {
            code: code as i32,
            text,
            client_msg_id: String::new(),
            request_id,
        })
    };
    if let Err(text) = validation {
        return error(ErrorCode::InvalidRequest, text);
    }
    match result {
        Ok(members) => Body::GroupReply(proto::GroupReply {
            request_id,
            group_id: group.to_string(),
            members,
        }),
        Err(store_error) => error(store_error_code(&store_error), store_error.to_string()),
    }
}

fn store_error_code(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::UnknownGroup(_) => ErrorCode::UnknownGroup,
        StoreError::NotGroupMember { .. } => ErrorCode::NotGroupMember,
        StoreError::GroupExists(_) => ErrorCode::GroupExists,
        StoreError::Full(_) | StoreError::Unavailable(_) => ErrorCode::StoreUnavailable,
    }
}

/// Conversations on this connection with a send refused as retryable, and that send's id.
///
/// Until the refused send is retried, later sends to the same conversation are refused too:
/// a client pipelining sends would otherwise get a later message stored before the refused
/// one, breaking the conversation's send order.
///
/// Boxed, and only while a conversation is blocked: every idle connection keeps a barrier, and
/// a map inline is 24 bytes of its task where a pointer is 8.
#[derive(Default)]
pub(super) struct SendBarrier {
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every connection's task instead of the map's 24"
    )]
    refused: Option<Box<std::collections::BTreeMap<Target, String>>>,
}

impl SendBarrier {
    /// The refused send blocking conversation `to`, if any.
    fn refused(&self, to: &Target) -> Option<&String> {
        self.refused.as_ref()?.get(to)
    }

    /// Unblocks conversation `to`.
    fn unblock(&mut self, to: &Target) {
        if let Some(refused) = self.refused.as_mut() {
            refused.remove(to);
            if refused.is_empty() {
                self.refused = None;
            }
        }
    }
}

/// Conversations one connection may have blocked at once; more close the connection (the
/// client resends everything, in order, after reconnecting).
const SEND_BARRIERS_MAX: usize = 64;

async fn handle_send(
    shared: &Arc<Shared>,
    session: &Session,
    send: proto::Send,
    barrier: &mut SendBarrier,
) -> Result<Body, Closed> {
    // An answer echoes the client's id only when it is a valid one: an unvalidated id could
    // be as long as a frame, and its echo longer.
    let echoed_id = if send.client_msg_id.len() <= crate::auth::ID_LEN_MAX {
        send.client_msg_id.as_str()
    } else {
        ""
    };
    let error = |code: ErrorCode, text: String| {
        Body::Error(proto::Error {
            code: code as i32,
            text,
            client_msg_id: echoed_id.to_string(),
            request_id: 0,
        })
    };
    let Some(to) = send.to.as_ref().map(Target::from_send_to) else {
        return Ok(error(
            ErrorCode::InvalidRequest,
            "send names no peer or group".into(),
        ));
    };
    if let Err(text) = validate_id("client message", &send.client_msg_id).and_then(|()| match &to {
        Target::Peer(user) => validate_id("peer user", user),
        Target::Group(group) => validate_id("group", group),
    }) {
        return Ok(error(ErrorCode::InvalidRequest, text));
    }
    if let Some(refused_id) = barrier.refused(&to) {
        if *refused_id != send.client_msg_id {
            let text =
                format!("send {refused_id:?} to this conversation was refused; retry it first");
            return Ok(error(ErrorCode::Overloaded, text));
        }
        barrier.unblock(&to);
    }
    if !shared.registry.take_send(session) {
        shared
            .counters
            .rate_limited_sends
            .fetch_add(1, Ordering::Relaxed);
        block(barrier, &to, &send.client_msg_id)?;
        let text = format!(
            "user {} is over its {} sends per second; retry with the same client_msg_id",
            session.user(),
            shared.config.send_rate_per_user
        );
        return Ok(error(ErrorCode::RateLimited, text));
    }
    let max_body_bytes = shared.config.max_body_bytes();
    if send.body.len() > max_body_bytes {
        let text = format!("body of {} bytes exceeds {max_body_bytes}", send.body.len());
        return Ok(error(ErrorCode::InvalidRequest, text));
    }
    // A group send reserves its fan-out slot before anything is stored, so an overloaded
    // server refuses cleanly instead of storing a message it cannot deliver.
    let permit = match &to {
        Target::Group(group) => match shared.fanout.try_reserve(group) {
            Ok(permit) => Some(permit),
            Err(_) => {
                shared
                    .counters
                    .overloaded_sends
                    .fetch_add(1, Ordering::Relaxed);
                block(barrier, &to, &send.client_msg_id)?;
                let text = "group fan-out queue is full; retry with the same client_msg_id".into();
                return Ok(error(ErrorCode::Overloaded, text));
            }
        },
        Target::Peer(_) => None,
    };
    let request_to = to.clone();
    let request = AppendRequest {
        from_user: session.user().to_string(),
        from_device: session.device().to_string(),
        client_msg_id: send.client_msg_id.clone(),
        to,
        body: send.body.clone(),
        server_time_ms: shared.clock.unix_ms(),
    };
    #[cfg(feature = "planted-bugs")]
    if shared.config.planted.ack_before_store {
        return Ok(planted_ack_before_store(
            shared,
            send.client_msg_id,
            request,
        ));
    }
    // Once the store has a message, its delivery must not depend on the sender's connection,
    // which may be killed (replaced by the sender's reconnect, say) while the append waits
    // for its commit: a retry of the same id is a duplicate and delivers nothing, so a
    // delivery dropped here would be lost until each recipient's next sync.
    let skip = session.echo_skipped();
    let stored = FinishOnDrop::new(store_and_deliver(shared.clone(), request, permit, skip));
    let (message, sender_seq) = match stored.await {
        Ok(stored) => stored,
        Err(store_error) => {
            let code = store_error_code(&store_error);
            if code == ErrorCode::StoreUnavailable {
                block(barrier, &request_to, &send.client_msg_id)?;
            }
            return Ok(error(code, store_error.to_string()));
        }
    };
    Ok(Body::SendAck(proto::SendAck {
        client_msg_id: send.client_msg_id,
        seq: sender_seq,
        server_time_ms: message.server_time_ms,
        msg_id: message.msg_id,
    }))
}

/// A future that runs to completion even when the task awaiting it is cancelled: dropped
/// before it is done, it moves to a task of its own (its output is then discarded). Polled
/// in place otherwise, so it costs no task and no extra scheduling on the common path.
struct FinishOnDrop<F: Future + Send + 'static>
where
    F::Output: Send,
{
    inner: Option<std::pin::Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> FinishOnDrop<F>
where
    F::Output: Send,
{
    fn new(future: F) -> Self {
        FinishOnDrop {
            inner: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let inner = self.inner.as_mut().expect("polled after completion");
        let output = std::task::ready!(inner.as_mut().poll(cx));
        self.inner = None;
        std::task::Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        // Without a runtime the process (or the simulated host) is going down: nothing
        // finishes then, as in a crash.
        if let Some(future) = self.inner.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(future);
        }
    }
}

/// Stores a send and hands a new message to delivery (a group's to its reserved fan-out
/// slot), to every live device of its recipients but connection `skip`; returns the message
/// and its seq in the sender's inbox.
async fn store_and_deliver(
    shared: Arc<Shared>,
    request: AppendRequest,
    permit: Option<tokio::sync::mpsc::OwnedPermit<super::FanoutJob>>,
    skip: Option<u64>,
) -> Result<(Arc<StoredMessage>, u64), StoreError> {
    let outcome = shared.store.append(request).await?;
    if outcome.duplicate {
        shared
            .counters
            .duplicate_sends
            .fetch_add(1, Ordering::Relaxed);
    } else {
        shared
            .counters
            .messages_stored
            .fetch_add(1, Ordering::Relaxed);
        match permit {
            Some(permit) => {
                permit.send(super::FanoutJob {
                    message: outcome.message.clone(),
                    deliveries: outcome.deliveries,
                    skip,
                });
            }
            None => shared.deliver(&outcome.message, &outcome.deliveries, skip),
        }
    }
    Ok((outcome.message, outcome.sender_seq))
}

/// Planted bug: ack now, store a second later (write-behind). A crash in between loses an
/// acked message.
#[cfg(feature = "planted-bugs")]
fn planted_ack_before_store(
    shared: &Arc<Shared>,
    client_msg_id: String,
    request: AppendRequest,
) -> Body {
    let behind = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(outcome) = behind.store.append(request).await
            && !outcome.duplicate
        {
            // The ack said seq 0: every device, the sender's included, learns the seq by push.
            behind.deliver(&outcome.message, &outcome.deliveries, None);
        }
    });
    Body::SendAck(proto::SendAck {
        client_msg_id,
        seq: 0,
        server_time_ms: shared.clock.unix_ms(),
        msg_id: 0,
    })
}

/// Records a retryable refusal in the barrier; too many blocked conversations close the
/// connection.
fn block(barrier: &mut SendBarrier, to: &Target, client_msg_id: &str) -> Result<(), Closed> {
    let refused = barrier.refused.get_or_insert_default();
    if !refused.contains_key(to) {
        if refused.len() >= SEND_BARRIERS_MAX {
            return Err(Closed::TooManyRefusals);
        }
        refused.insert(to.clone(), client_msg_id.to_string());
    }
    Ok(())
}

async fn handle_sync(
    shared: &Arc<Shared>,
    session: &Session,
    request: proto::SyncRequest,
) -> Result<Body, Closed> {
    let limit = match request.limit as usize {
        0 => shared.config.sync_page_len_max,
        limit => limit.min(shared.config.sync_page_len_max),
    };
    let page = shared
        .store
        .sync(session.user(), request.after_seq, limit)
        .await
        .map_err(|_| Closed::StoreFailed)?;
    // Fill the page up to the frame limit, or the client's byte budget when smaller; every
    // single message fits (bodies are capped) and a page holds at least one.
    let frame_budget_bytes = shared.config.max_frame_bytes - 64;
    let budget_bytes = match request.max_bytes as usize {
        0 => frame_budget_bytes,
        max_bytes => max_bytes.min(frame_budget_bytes),
    };
    let mut used_bytes = 0;
    let mut messages = Vec::with_capacity(page.entries.len());
    for (seq, message) in &page.entries {
        let message = message.to_proto(*seq);
        let message_bytes = prost::Message::encoded_len(&message) + 8;
        if !messages.is_empty() && used_bytes + message_bytes > budget_bytes {
            break;
        }
        used_bytes += message_bytes;
        messages.push(message);
    }
    let last_seq = messages.last().map_or(request.after_seq, |m| m.seq);
    Ok(Body::SyncResponse(proto::SyncResponse {
        has_more: last_seq < page.max_seq,
        max_seq: page.max_seq,
        messages,
    }))
}
