//! A bounded queue between a simulated device's tasks, for the per-device channels (commands
//! to a device, wake-ups from its push channel).
//!
//! A tokio `mpsc` channel allocates its state and a first block of 32 slots when it is made:
//! 0.5-1 KB each, three for every simulated device, kept for the whole run whether anything
//! is queued or not (heaptrack: 23 MB of `scale-10k`'s heap). This queue is one small
//! allocation and holds values only while they wait. It does for its users what the channel
//! did: the bound (`try_send` reports `Full`), `Closed` once the receiver is gone, the end
//! (`None`) once every sender is gone and the queue is drained, a wake-up per value, and
//! tokio's cooperative budget on every receive, so tasks wake and yield as they did and a
//! simulation's events are the same.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

struct State<T> {
    values: VecDeque<T>,
    waker: Option<Waker>,
    senders: usize,
    receiver_gone: bool,
}

struct Shared<T> {
    capacity: usize,
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue bounded to `capacity` values.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        capacity,
        state: Mutex::new(State {
            values: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_gone: false,
        }),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// Why `try_send` handed its value back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// `capacity` values wait.
    #[error("the queue is full")]
    Full(T),
    /// The receiver is gone.
    #[error("the receiver is gone")]
    Closed(T),
}

/// A sending end; clones send to the same receiver.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `value` when there is room and a receiver, and wakes the receiver.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(TrySendError::Closed(value));
            }
            if state.values.len() >= self.0.capacity {
                return Err(TrySendError::Full(value));
            }
            state.values.push_back(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next value; `None` once every sender is gone and everything queued was taken.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// As [`Receiver::recv`]. Spends one unit of the task's cooperative budget when it
    /// returns (as tokio's channels do), and yields when the budget is spent.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.0.lock();
        if let Some(value) = state.values.pop_front() {
            coop.made_progress();
            return Poll::Ready(Some(value));
        }
        if state.senders == 0 {
            coop.made_progress();
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let values = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            state.waker = None;
            std::mem::take(&mut state.values)
        };
        drop(values);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn values_arrive_in_order_up_to_the_bound_then_the_end() {
        runtime().block_on(async {
            let (tx, mut rx) = bounded(3);
            let second = tx.clone();
            for i in 0..3 {
                tx.try_send(i).unwrap();
            }
            assert_eq!(second.try_send(3), Err(TrySendError::Full(3)));
            assert_eq!(rx.recv().await, Some(0));
            second.try_send(3).unwrap();
            drop((tx, second));
            let mut rest = Vec::new();
            while let Some(value) = rx.recv().await {
                rest.push(value);
            }
            assert_eq!(rest, [1, 2, 3], "what was queued before the senders went");
        });
    }

    #[test]
    fn a_sender_hears_when_the_receiver_is_gone() {
        let (tx, rx) = bounded(2);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Closed(7)));
    }

    #[test]
    fn a_waiting_receiver_wakes_for_a_value_and_for_the_end() {
        runtime().block_on(async {
            let (tx, mut rx) = bounded::<u32>(1);
            let waiting = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
            tokio::task::yield_now().await;
            tx.try_send(5).unwrap();
            tokio::task::yield_now().await;
            drop(tx);
            assert_eq!(waiting.await.unwrap(), (Some(5), None));
        });
    }

    #[test]
    fn a_receiver_of_a_long_queue_yields_when_its_task_budget_is_spent() {
        // As with tokio's channel: taking 300 waiting values in one poll of a task spends its
        // budget (128 a poll), so the task yields and another one runs before the last.
        runtime().block_on(async {
            let (tx, mut rx) = bounded(300);
            for i in 0..300 {
                tx.try_send(i).unwrap();
            }
            let (ticks, done) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicBool::new(false)),
            );
            let ticker = tokio::spawn({
                let (ticks, done) = (ticks.clone(), done.clone());
                async move {
                    while !done.load(Ordering::Relaxed) {
                        ticks.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            });
            let reader = tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..300 {
                    assert_eq!(rx.recv().await, Some(i));
                    seen.push(ticks.load(Ordering::Relaxed));
                }
                done.store(true, Ordering::Relaxed);
                seen
            });
            let seen = reader.await.unwrap();
            ticker.await.unwrap();
            assert!(
                seen[299] > seen[0],
                "the reader never yielded while taking 300 values"
            );
        });
    }
}
