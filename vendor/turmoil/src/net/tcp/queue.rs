//! The receive queue of one stream socket: the host's side pushes segments in order, the
//! stream's read half pops them.
//!
//! Edit to turmoil 0.7.2 (see the repository's `vendor/README.md`): upstream used a tokio
//! bounded `mpsc` channel, which allocates its channel state and a first block of 32 slots
//! when it is made, about 1.6 KB per stream socket and 2.7 KB once a second block has been
//! needed, whether or not anything is queued. This queue is one small allocation and holds
//! segments only while they wait. It keeps what the channel did for the stream: the bound
//! (`capacity` segments queued), `Closed` for the sender once the receiver is gone, the end of
//! the stream for the receiver once the sender is gone and the queue is drained, a wake-up
//! per pushed segment, and tokio's cooperative budget on `poll_recv`, so tasks are woken and
//! yield exactly as they did.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use crate::host::SequencedSegment;

/// Above this many slots an emptied queue gives its buffer back.
const IDLE_SLOTS_MAX: usize = 8;

struct State {
    segments: VecDeque<SequencedSegment>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Queue {
    capacity: usize,
    state: Mutex<State>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue bounded to `capacity` segments.
pub(crate) fn queue(capacity: usize) -> (SegmentSender, SegmentReceiver) {
    let queue = Arc::new(Queue {
        capacity,
        state: Mutex::new(State {
            segments: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
    });
    (SegmentSender(queue.clone()), SegmentReceiver(queue))
}

/// Why a segment was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The receiver is gone.
    Closed,
    /// `capacity` segments are queued.
    Full,
}

/// The host's end.
pub(crate) struct SegmentSender(Arc<Queue>);

impl SegmentSender {
    /// Queues the segment `make` returns, when there is room and a receiver; `make` is not
    /// called otherwise. Wakes the receiver.
    pub(crate) fn try_send_with(
        &self,
        make: impl FnOnce() -> SequencedSegment,
    ) -> Result<(), TrySendError> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(TrySendError::Closed);
            }
            if state.segments.len() >= self.0.capacity {
                return Err(TrySendError::Full);
            }
            state.segments.push_back(make());
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for SegmentSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The stream's end.
pub(crate) struct SegmentReceiver(Arc<Queue>);

impl SegmentReceiver {
    /// The next segment; `None` once the sender is gone and everything queued was taken.
    /// Spends one unit of the task's cooperative budget when it returns a value (as tokio's
    /// channels do), and yields when the budget is spent.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SequencedSegment>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.0.lock();
        if let Some(segment) = state.pop() {
            coop.made_progress();
            return Poll::Ready(Some(segment));
        }
        if state.sender_gone {
            coop.made_progress();
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next segment if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<SequencedSegment> {
        self.0.lock().pop()
    }
}

impl State {
    fn pop(&mut self) -> Option<SequencedSegment> {
        let segment = self.segments.pop_front()?;
        if self.segments.is_empty() && self.segments.capacity() > IDLE_SLOTS_MAX {
            self.segments = VecDeque::new();
        }
        Some(segment)
    }
}

impl Drop for SegmentReceiver {
    fn drop(&mut self) {
        let segments = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            state.waker = None;
            std::mem::take(&mut state.segments)
        };
        drop(segments);
    }
}

impl std::fmt::Debug for SegmentReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReceiver")
            .field("queued", &self.0.lock().segments.len())
            .finish()
    }
}
