//! One connection's writer: drains the outbox into the socket, tracks which pushed
//! NotifyData the device has acked, and falls back to a Notify when an ack is late.
//!
//! Fallback rule: when a NotifyData at seq S is pushed and no check is pending, a check is
//! armed for S at now + `notify_ack_timeout`. When it fires and the device's acked seq is
//! below S, a Notify carrying the highest pushed seq is sent (the device then syncs). Then the
//! check re-arms for the highest pushed seq if that is still unacked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::channel::mpsc;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::Shared;
use super::registry::{Outbound, SessionControl};
use crate::framed::FrameWriter;
use crate::proto::{Body, ErrorCode, Frame, Kick, KickReason, Notify};

struct AckCheck {
    deadline: Instant,
    seq: u64,
}

/// Runs until the outbox closes (the reader is done and the session unregistered), the
/// session is killed, or a write fails. Always cancels the session's kill token on exit.
///
/// A plain fn returning an async block, not an `async fn`: an async fn keeps its arguments
/// twice in its future (as arguments and as locals), in every idle connection's task.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn run<'a, W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    out: &'a mut FrameWriter<W>,
    mut outbox: mpsc::Receiver<Outbound>,
    handle: SessionControl,
    acked_seq: Arc<AtomicU64>,
) -> impl Future<Output = ()> + 'a {
    async move {
        let notify_ack_timeout = shared.config.notify_ack_timeout;
        let mut pushed_seq_max = 0u64;
        let mut check: Option<AckCheck> = None;
        // One timer for the connection's life, reset only when the check's deadline changes (a
        // new sleep per batch cost a timer-wheel insert and remove per batch).
        let ack_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(ack_timer);
        let mut armed_deadline: Option<Instant> = None;
        loop {
            // First, and after each batch: write what is buffered (the login reply starts it).
            if out.buffered_bytes() > 0 {
                let flushed = tokio::select! {
                    biased;
                    () = handle.kill.cancelled() => false,
                    result = out.flush() => result.is_ok(),
                };
                if !flushed {
                    // Killed mid-write or the socket failed: say why if we still can.
                    Box::pin(write_kick(&shared, out, handle.kick_reason())).await;
                    break;
                }
            }
            let check_deadline = check.as_ref().map(|c| c.deadline);
            if let Some(deadline) = check_deadline
                && armed_deadline != Some(deadline)
            {
                ack_timer.as_mut().reset(deadline);
                armed_deadline = Some(deadline);
            }
            tokio::select! {
                biased;
                () = handle.kill.cancelled() => {
                    Box::pin(write_kick(&shared, out, handle.kick_reason())).await;
                    break;
                }
                () = &mut ack_timer, if check_deadline.is_some() => {
                    armed_deadline = None;
                    let want_seq = check.take().map_or(0, |c| c.seq);
                    let acked = acked_seq.load(Ordering::Relaxed);
                    if acked < want_seq {
                        shared.counters.notify_fallbacks.fetch_add(1, Ordering::Relaxed);
                        let notify = Frame::new(Body::Notify(Notify { max_seq: pushed_seq_max }));
                        out.feed(&notify).expect("a Notify fits in any frame");
                    }
                    if acked < pushed_seq_max {
                        check = Some(AckCheck {
                            deadline: Instant::now() + notify_ack_timeout,
                            seq: pushed_seq_max,
                        });
                    }
                }
                item = outbox.next() => {
                    let Some(item) = item else { break };
                    feed(out, item, &mut pushed_seq_max, &mut check, notify_ack_timeout);
                    // Batch what is already queued into one write; the queue bounds the batch.
                    let mut batch = 1u64;
                    while let Ok(item) = outbox.try_recv() {
                        feed(out, item, &mut pushed_seq_max, &mut check, notify_ack_timeout);
                        batch += 1;
                    }
                    shared.counters.outbox_high_water.fetch_max(batch, Ordering::Relaxed);
                }
            }
        }
        handle.kill.cancel();
    }
}

fn feed<W: AsyncWrite + Unpin>(
    out: &mut FrameWriter<W>,
    item: Outbound,
    pushed_seq_max: &mut u64,
    check: &mut Option<AckCheck>,
    notify_ack_timeout: std::time::Duration,
) {
    let frame = match item {
        Outbound::Frame(frame) => *frame,
        Outbound::Deliver { seq, message } => {
            *pushed_seq_max = (*pushed_seq_max).max(seq);
            check.get_or_insert(AckCheck {
                deadline: Instant::now() + notify_ack_timeout,
                seq,
            });
            // Bodies are capped at send time, so a message fits; one that does not would be
            // a bug, and the device is told rather than sent a frame it would refuse.
            let Err(error) = out.feed_notify_data(seq, &message) else {
                return;
            };
            tracing::warn!(seq, %error, "a stored message is over the frame limit");
            Frame::new(Body::Error(crate::proto::Error {
                code: ErrorCode::InvalidRequest as i32,
                text: format!("message at seq {seq} exceeds the frame limit: {error}"),
                client_msg_id: String::new(),
                request_id: 0,
            }))
        }
    };
    if let Err(error) = out.feed(&frame) {
        // Messages fit (bodies are capped at send time), but a reply can outgrow the limit
        // through a request near it (a group of long member ids, say): the peer gets a short
        // error in its place.
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
}

/// Best effort: a Kick frame saying why the server closes, bounded by `close_flush_timeout`.
/// A slow consumer is not reading, so it gets none. Callers box it: it runs once per
/// connection, and inline its state would sit in every idle connection's task.
async fn write_kick<W: AsyncWrite + Unpin>(
    shared: &Shared,
    out: &mut FrameWriter<W>,
    reason: Option<KickReason>,
) {
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
