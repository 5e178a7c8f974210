//! A logged-in connection: one hand-written future that reads the client's frames, hands each
//! to its handler, and writes the replies and the pushes other connections queue in its
//! outbox, tracking which pushed NotifyData the device has acked.
//!
//! One state machine rather than a reader and a writer future selected in the connection's
//! task: an idle connection holds one timer and the fields below (its kill switch is a flag
//! and a waker in the registry's [`SessionControl`], no waiter of its own), not two
//! futures' worth of suspended locals (`bench/conn-memory.sh`), and a reply is written into the
//! connection's buffer without a trip through the outbox.
//!
//! Each wake-up, in this order: a kill ends the connection; the timer (the idle deadline and
//! the ack check share it) may reap it or send a Notify; pushes waiting in the outbox are
//! buffered; a handler in progress is polled, and once it is done the next frames are read and
//! handled, at most `outbox_len_max / 4` per wake-up before the task yields; then everything
//! buffered is written in one go. Pushes that a handler caused (the sender's own echo) are
//! buffered before its reply, as they were queued first.
//!
//! Bounds: the outbox holds `outbox_len_max` pushes; what is buffered and not yet written is
//! bounded the same way in frames, and by `write_buffer_bytes_max` in bytes: a peer that does
//! not read while frames keep coming is kicked as a slow consumer (its messages stay in its
//! inbox). A peer's frames are read even while writes to it wait, so a slow downlink does not
//! make a live peer look silent.
//!
//! Fallback rule: when a NotifyData at seq S is pushed and no check is pending, a check is
//! armed for S at now + `notify_ack_timeout`. When it fires and the device's acked seq is
//! below S, a Notify carrying the highest pushed seq is sent (the device then syncs). Then the
//! check re-arms for the highest pushed seq if that is still unacked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::registry::{Outbound, SessionControl};
use super::session::{Closed, Handled, Handling, Open, SendBarrier, Session, codec_error_code};
use super::{PushWhenBehind, Shared};
use crate::codec::FrameIoError;
use crate::framed::FrameIo;
use crate::net::Stream;
use crate::proto::{self, Body, ErrorCode, Frame, Kick, KickReason, Notify};

/// Buffered bytes at which the replies are written before more frames are read: a burst's
/// replies go out in writes of about this size.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

struct AckCheck {
    deadline: Instant,
    seq: u64,
}

pin_project! {
    /// A logged-in connection: the future that serves it until it closes, then hands its state
    /// back for [`Conn::close`]. It owns everything the connection holds, its stream inline,
    /// and is awaited in place, so the connection's task is this future and little more
    /// (`-Zprint-type-sizes`: a plain-TCP connection's task cell is 512 bytes).
    pub(super) struct Live<S> {
        // Taken when the connection closes.
        conn: Option<Conn<S>>,
        // Dropped when the connection closes, so it fires no more.
        #[pin]
        timer: Option<Sleep>,
    }
}

/// The connection's state between wake-ups, all but the timer, which [`Live`] pins and passes
/// to [`Conn::poll`].
pub(super) struct Conn<S> {
    /// The connection in the server's count, and the server's state.
    open: Open,
    /// Who it is, its outbox and its kill switch.
    session: Session,
    io: FrameIo<S>,
    idle_timeout: Duration,
    last_frame_at: Instant,
    /// When the timer next looks at the idle deadline: moved only when it fires early, so a
    /// frame costs no timer-wheel insert and remove. (The timer's own deadline is the sooner
    /// of this and the ack check's.)
    idle_check_at: Instant,
    check: Option<AckCheck>,
    pushed_seq_max: u64,
    acked_seq: u64,
    /// The seq up to which the device holds every message of its inbox, or will once it reads
    /// what is buffered: its acks, its sync pages, its own sends' acks and the pushes that
    /// followed on. A push past it (a device still syncing a backlog) goes as a `Notify`,
    /// without the message's bytes: the device would drop the message as a gap and fetch it
    /// again in a page. A push at or below it is in a page already and is not sent twice.
    sent_through: u64,
    /// Frames buffered since the buffer was last written out whole.
    unflushed_frames: usize,
    /// Lent to the handler in progress, if any (left empty meanwhile; an empty barrier
    /// allocates nothing).
    barrier: SendBarrier,
    handling: Option<Handling>,
}

/// A logged-in connection's parts, as the login left them.
pub(super) struct LoggedIn<S> {
    pub open: Open,
    pub session: Session,
    pub io: FrameIo<S>,
    pub idle_timeout: Duration,
    /// The device's acked cursor.
    pub acked_seq: u64,
}

impl<S: Stream> Live<S> {
    /// The connection just after its login reply was buffered.
    pub(super) fn new(logged_in: LoggedIn<S>) -> Self {
        let LoggedIn {
            open,
            session,
            io,
            idle_timeout,
            acked_seq,
        } = logged_in;
        let now = Instant::now();
        let conn = Conn {
            open,
            session,
            io,
            idle_timeout,
            last_frame_at: now,
            idle_check_at: now + idle_timeout,
            check: None,
            pushed_seq_max: 0,
            acked_seq,
            sent_through: acked_seq,
            unflushed_frames: 0,
            barrier: SendBarrier::default(),
            handling: None,
        };
        Live {
            timer: Some(tokio::time::sleep_until(conn.idle_check_at)),
            conn: Some(conn),
        }
    }
}

impl<S: Stream> Future for Live<S> {
    /// Why the connection closed, and its state for [`Conn::close`].
    type Output = (Closed, Conn<S>);

    /// Runs the connection until it closes; `Pending` while it waits for anything.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let (Some(conn), Some(timer)) = (this.conn.as_mut(), this.timer.as_mut().as_pin_mut())
        else {
            panic!("a live connection is not polled after it closed");
        };
        let closed = std::task::ready!(conn.poll(cx, timer));
        this.timer.set(None);
        let conn = this.conn.take().expect("taken only here");
        Poll::Ready((closed, conn))
    }
}

impl<S: Stream> Conn<S> {
    /// After the connection closed for `closed`: leaves the registry (so no more pushes come),
    /// then writes what is owed (a Kick, or the last frames and the pushes still queued) within
    /// `close_flush_timeout`. Callers box it: it runs once per connection, and inline its
    /// state would sit in every idle connection's task.
    pub(super) async fn close(mut self, closed: Closed) {
        let shared = self.open.shared();
        let session = &self.session;
        // Once unregistered, no more pushes come: what is queued is all there is.
        shared
            .registry
            .unregister(session.user(), session.device(), session.connection_id());
        match closed {
            // The socket failed: nothing more can be written.
            Closed::Io => {}
            Closed::Killed | Closed::SlowConsumer => {
                write_kick(shared, &mut self.io, self.session.kick_reason()).await;
            }
            // The last frames (an Error, say) and the pushes still queued.
            _ => {
                let _ = tokio::time::timeout(
                    shared.config.close_flush_timeout,
                    finish(&mut self.io, &self.session),
                )
                .await;
            }
        }
        tracing::debug!(
            connection_id = self.session.connection_id(),
            user = self.session.user(),
            device = self.session.device(),
            ?closed,
            kick = ?self.session.kick_reason(),
            "connection closed"
        );
    }

    fn shared(&self) -> &Arc<Shared> {
        self.open.shared()
    }

    /// Runs the connection until it closes; `Pending` while it waits for anything.
    fn poll(&mut self, cx: &mut Context<'_>, timer: Pin<&mut Sleep>) -> Poll<Closed> {
        if self.session.poll_killed(cx) {
            return Poll::Ready(Closed::Killed);
        }
        match self.work(cx, timer) {
            Ok(()) => Poll::Pending,
            Err(closed) => Poll::Ready(closed),
        }
    }

    fn work(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Result<(), Closed> {
        self.poll_timer(cx, timer.as_mut())?;
        let frames_per_yield = (self.shared().config.outbox_len_max / 4).max(1);
        let mut frames = 0;
        loop {
            self.drain_outbox(cx)?;
            if let Some(handling) = self.handling.as_mut() {
                let Poll::Ready((handled, barrier)) = handling.as_mut().poll(cx) else {
                    break;
                };
                self.handling = None;
                self.barrier = barrier;
                // What the handler queued for this connection (a send's echo) goes first.
                self.drain_outbox(cx)?;
                self.apply(handled?)?;
            }
            if frames >= frames_per_yield {
                // Other connections' turn; this one is woken again at once.
                cx.waker().wake_by_ref();
                break;
            }
            if self.io.buffered_bytes() >= WRITE_BATCH_BYTES {
                // Written in batches; frames go on being read while the peer is slow to take
                // them (its heartbeats keep it alive), up to the slow-consumer bound.
                let _ = self.poll_flush(cx)?;
            }
            let frame = match self.io.poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(Some(frame))) => frame,
                Poll::Ready(Ok(None)) => return Err(Closed::PeerEnded),
                Poll::Ready(Err(FrameIoError::Io(_))) => return Err(Closed::Io),
                Poll::Ready(Err(FrameIoError::Codec(error))) => {
                    let error = proto::Error::new(codec_error_code(&error), error.to_string());
                    self.feed_frame(&super::error_frame(error))?;
                    return Err(Closed::BadFrame);
                }
            };
            self.last_frame_at = Instant::now();
            frames += 1;
            self.start(frame)?;
        }
        // A push buffered above may have started an ack check due before the armed time.
        if self.due() != timer.deadline() {
            self.poll_timer(cx, timer)?;
        }
        // Pending or not, the write waker is registered by the flush.
        let _ = self.poll_flush(cx)?;
        Ok(())
    }

    /// Starts handling a frame: a ping is answered here, anything else by its handler, boxed,
    /// so its state exists only while it runs.
    fn start(&mut self, frame: Frame) -> Result<(), Closed> {
        if let Some(Body::Ping(ping)) = &frame.body {
            let pong = Body::Pong(proto::Pong {
                id: ping.id,
                server_time_ms: self.shared().clock.unix_ms(),
            });
            return self.apply(Handled::Reply(Frame::new(pong)));
        }
        debug_assert!(self.handling.is_none(), "one handler at a time");
        let barrier = std::mem::take(&mut self.barrier);
        self.handling = Some(Box::pin(super::session::handle_frame(
            self.shared().clone(),
            self.session.clone(),
            frame,
            barrier,
        )));
        Ok(())
    }

    fn apply(&mut self, handled: Handled) -> Result<(), Closed> {
        match handled {
            Handled::Reply(frame) => {
                self.note_sent(&frame);
                self.feed_frame(&frame)
            }
            Handled::Acked(cursor) => {
                self.acked_seq = self.acked_seq.max(cursor);
                self.sent_through = self.sent_through.max(cursor);
                Ok(())
            }
        }
    }

    /// Moves [`Conn::sent_through`] past what a reply hands the device: a sync page's
    /// messages (the page starts after the seq the device said it holds; an empty one means it
    /// holds them all), or, for a device that takes each SendAck as its copy
    /// (`send_ack_is_copy`), the seq of its own send when that is the next one. (A device
    /// without it is pushed its own send, which then follows on.)
    fn note_sent(&mut self, frame: &Frame) {
        match &frame.body {
            Some(Body::SyncResponse(page)) => {
                let through = page.messages.last().map_or(page.max_seq, |m| m.seq);
                self.sent_through = self.sent_through.max(through);
            }
            Some(Body::SendAck(ack))
                if ack.seq == self.sent_through + 1 && self.session.echo_skipped().is_some() =>
            {
                self.sent_through = ack.seq;
            }
            _ => {}
        }
    }

    /// When the timer should fire: the sooner of the idle check and the ack check.
    fn due(&self) -> Instant {
        match &self.check {
            Some(check) => check.deadline.min(self.idle_check_at),
            None => self.idle_check_at,
        }
    }

    /// The idle deadline and the ack check, on the one timer.
    fn poll_timer(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<(), Closed> {
        loop {
            let due = self.due();
            if due != timer.deadline() {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(check) = self.check.take_if(|check| check.deadline <= now) {
                self.check_acks(check.seq, now)?;
            }
            if self.idle_check_at <= now {
                let idle_deadline = self.last_frame_at + self.idle_timeout;
                if self.handling.is_some() {
                    // The peer waits on the server, not the other way round.
                    self.idle_check_at = now + self.idle_timeout;
                } else if idle_deadline > now {
                    self.idle_check_at = idle_deadline;
                } else {
                    self.shared()
                        .counters
                        .reaped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        user = self.session.user(),
                        device = self.session.device(),
                        idle_timeout = ?self.idle_timeout,
                        "reaping silent connection"
                    );
                    return Err(Closed::Reaped);
                }
            }
        }
    }

    /// The ack check for `want_seq` fired: one Notify, for everything pushed so far, when the
    /// device has not acked it; otherwise the next check while anything pushed is unacked.
    ///
    /// A Notify is not repeated: TCP delivers it or ends the connection, and a device that
    /// reads it syncs through its `max_seq`, now or after the sync it is in. Repeated every
    /// `notify_ack_timeout` until an ack, it went on for as long as a connection behind an
    /// expired NAT mapping stayed unreaped (1.5 heartbeats): `cmcc-3g-nat` at seed 1 sent
    /// 2,414 of them for 167 pushes. The next push sets the next check.
    fn check_acks(&mut self, want_seq: u64, now: Instant) -> Result<(), Closed> {
        let acked = self.acked_seq;
        if acked < want_seq {
            self.shared()
                .counters
                .notify_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            let notify = Frame::new(Body::Notify(Notify {
                max_seq: self.pushed_seq_max,
            }));
            self.feed_frame(&notify)?;
        } else if acked < self.pushed_seq_max {
            self.check = Some(AckCheck {
                deadline: now + self.shared().config.notify_ack_timeout,
                seq: self.pushed_seq_max,
            });
        }
        Ok(())
    }

    /// Buffers every push waiting in the outbox.
    fn drain_outbox(&mut self, cx: &mut Context<'_>) -> Result<(), Closed> {
        let pushes = self.session.poll_pushes(cx);
        let batch = pushes.len() as u64;
        for item in pushes {
            self.feed(item)?;
        }
        if batch > 0 {
            self.shared()
                .counters
                .outbox_high_water
                .fetch_max(batch, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Buffers a push from the outbox; over the bound of unwritten frames, the peer is a slow
    /// consumer.
    fn feed(&mut self, item: Outbound) -> Result<(), Closed> {
        let seq = item.seq;
        let whole = self.shared().config.push_when_behind == PushWhenBehind::Message;
        if !whole && seq <= self.sent_through {
            // Already in a page the device was sent.
            self.shared()
                .counters
                .pushes_in_a_page
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.count_unflushed()?;
        if whole || seq == self.sent_through + 1 {
            feed(&mut self.io, item);
            if seq == self.sent_through + 1 {
                self.sent_through = seq;
            }
        } else {
            // The device is behind (syncing): it learns there is more, and fetches it in order.
            self.shared()
                .counters
                .pushes_as_notify
                .fetch_add(1, Ordering::Relaxed);
            feed_frame(
                &mut self.io,
                &Frame::new(Body::Notify(Notify { max_seq: seq })),
            );
        }
        self.pushed_seq_max = self.pushed_seq_max.max(seq);
        self.check.get_or_insert(AckCheck {
            deadline: Instant::now() + self.shared().config.notify_ack_timeout,
            seq,
        });
        Ok(())
    }

    /// Buffers a reply or a control frame of this connection's own, under the same bound.
    fn feed_frame(&mut self, frame: &Frame) -> Result<(), Closed> {
        self.count_unflushed()?;
        feed_frame(&mut self.io, frame);
        Ok(())
    }

    /// One more frame buffered; past `outbox_len_max` frames or `write_buffer_bytes_max`
    /// bytes unwritten, the peer is kicked.
    fn count_unflushed(&mut self) -> Result<(), Closed> {
        let config = &self.shared().config;
        if self.unflushed_frames >= config.outbox_len_max
            || self.io.buffered_bytes() >= config.write_buffer_bytes_max
        {
            self.shared()
                .registry
                .counters
                .slow_consumer_kicks
                .fetch_add(1, Ordering::Relaxed);
            self.session.kick(KickReason::SlowConsumer);
            return Err(Closed::SlowConsumer);
        }
        self.unflushed_frames += 1;
        Ok(())
    }

    /// Writes what the socket takes; `Ready` once everything buffered is written.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Result<Poll<()>, Closed> {
        if self.io.buffered_bytes() == 0 {
            self.unflushed_frames = 0;
            return Ok(Poll::Ready(()));
        }
        match self.io.poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed_frames = 0;
                Ok(Poll::Ready(()))
            }
            Poll::Ready(Err(_)) => Err(Closed::Io),
            Poll::Pending => Ok(Poll::Pending),
        }
    }
}

/// After a close that is not the peer's or the socket's fault, and after the session left
/// the registry (so no more pushes come): the pushes still queued and everything buffered.
/// The caller bounds it with `close_flush_timeout`.
async fn finish<S: Stream>(out: &mut FrameIo<S>, control: &SessionControl) {
    for item in control.take_pushes() {
        feed(out, item);
    }
    let _ = out.flush().await;
}

/// Buffers a pushed message as NotifyData; returns its seq.
fn feed<S: Stream>(out: &mut FrameIo<S>, item: Outbound) -> u64 {
    let Outbound { seq, message } = item;
    // Bodies are capped at send time, so a message fits; one that does not would be a bug,
    // and the device is told rather than sent a frame it would refuse.
    if let Err(error) = out.feed_notify_data(seq, &message) {
        tracing::warn!(seq, %error, "a stored message is over the frame limit");
        feed_frame(
            out,
            &Frame::new(Body::Error(crate::proto::Error {
                code: ErrorCode::InvalidRequest as i32,
                text: format!("message at seq {seq} exceeds the frame limit: {error}"),
                client_msg_id: String::new(),
                request_id: 0,
            })),
        );
    }
    seq
}

/// Buffers one frame. Messages fit (bodies are capped at send time), but a reply can outgrow
/// the limit through a request near it (a group of long member ids, say): the peer gets a
/// short error in its place.
fn feed_frame<S: Stream>(out: &mut FrameIo<S>, frame: &Frame) {
    let Err(error) = out.feed(frame) else {
        return;
    };
    tracing::info!(kind = frame.kind(), %error, "reply over the frame limit: sending an error instead");
    let request_id = match &frame.body {
        Some(Body::GroupReply(reply)) => reply.request_id,
        Some(Body::Error(error)) => error.request_id,
        _ => 0,
    };
    let text = format!(
        "the {} reply would exceed the frame limit: {error}",
        frame.kind()
    );
    let short = Frame::new(Body::Error(crate::proto::Error {
        code: ErrorCode::InvalidRequest as i32,
        text,
        client_msg_id: String::new(),
        request_id,
    }));
    out.feed(&short).expect("a short error fits in any frame");
}

/// Best effort: a Kick frame saying why the server closes, bounded by `close_flush_timeout`.
/// A slow consumer is not reading, so it gets none.
async fn write_kick<S: Stream>(shared: &Shared, out: &mut FrameIo<S>, reason: Option<KickReason>) {
    let Some(reason) = reason else { return };
    if reason == KickReason::SlowConsumer {
        return;
    }
    let text = match reason {
        KickReason::Replaced => "this device logged in on another connection",
        KickReason::ServerShutdown => "server is shutting down",
        KickReason::SlowConsumer | KickReason::Unspecified => "closed by server",
    };
    let kick = Frame::new(Body::Kick(Kick {
        reason: reason as i32,
        text: text.to_string(),
    }));
    let _ = tokio::time::timeout(shared.config.close_flush_timeout, out.send(&kick)).await;
}
