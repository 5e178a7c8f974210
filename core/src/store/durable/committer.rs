//! The committer: the one task that turns pending writes into engine commits (group commit).
//!
//! Each round takes every pending write at once, commits them as one engine batch, then
//! makes them visible (advances committed seqs) and wakes every waiter of the batch. Rounds
//! run one after another, so batches become durable strictly in allocation order. A failed
//! commit poisons the store: the allocated seqs it held would be holes, so every waiter of
//! it and of the writes queued behind it hears the error, and later writes are refused.
//!
//! Cursor acks hold their record without a waiter, apart from the pending batch: the held
//! records join a round once the oldest of them is `CURSOR_COMMIT_DELAY` old (a round of their
//! own when nothing else is pending), or at once when a quarter of `pending_ops_max` is held,
//! or when the store closes. A device that acks again meanwhile replaces its record, so under
//! load, when rounds run back to back, a device writes one cursor record a
//! `CURSOR_COMMIT_DELAY` instead of one an ack (a record a message it is pushed), and a stream
//! of acks alone costs at most one commit (one fsync) a `CURSOR_COMMIT_DELAY`.
//!
//! The committer is a task ([`run`]) awaiting [`Engine::commit`], or, for an engine whose
//! commit blocks a thread ([`Engine::blocking`]: the disk's), a thread of its own
//! ([`run_on_thread`]) that goes from one round to the next without a hand-off: the task
//! would pass each round to the runtime's blocking pool and be woken back, two thread
//! wake-ups a commit, and a loaded server commits thousands of times a second. Both run the
//! same rounds ([`take_round`], [`finish_round`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use super::engine::{Engine, EngineError};
use super::state::{Batch, State};

/// Runs until the store is dropped or closed. Holds the store only while a round runs, so dropping
/// the last [`DurableStore`](super::DurableStore) handle frees the engine even while this
/// task waits.
pub(super) async fn run<E: Engine>(
    shared: Weak<Shared<E>>,
    wake: Arc<Notify>,
    wake_lazily: Arc<Notify>,
) {
    loop {
        let due = match shared.upgrade() {
            Some(shared) => cursors_due(&shared.lock()),
            None => return,
        };
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            // A cursor was held while none was: its deadline is read at the loop's top.
            () = wake_lazily.notified(), if due.is_none() => continue,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while commit_round(&shared).await {}
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// When the held cursor records are due for a round (`None`: none is held).
fn cursors_due(state: &State) -> Option<Instant> {
    state
        .held_cursors
        .since
        .map(|since| since + CURSOR_COMMIT_DELAY)
}

/// A cursor ack's record is committed at the latest this long after the oldest held one was
/// acked (and a commit round later than that under load).
pub const CURSOR_COMMIT_DELAY: Duration = Duration::from_millis(200);

/// Commits what is pending; false when nothing was.
async fn commit_round<E: Engine>(shared: &Shared<E>) -> bool {
    let Some(mut batch) = take_round(shared, &mut shared.lock()) else {
        return false;
    };
    let writes = std::mem::take(&mut batch.writes);
    let result = if writes.is_empty() {
        // Only duplicates waiting for earlier batches: nothing to write.
        Ok(())
    } else {
        let (records, started) = (writes.len(), Instant::now());
        let result = shared.engine.commit(writes).await;
        shared.commit_stats.record(records, started.elapsed());
        result
    };
    finish_round(shared, batch, result);
    true
}

/// How the committer thread sleeps, in [`Shared::thread_sleep`].
pub(super) const AWAKE: u8 = 0;
/// Asleep until the held cursors are due, or woken.
pub(super) const ASLEEP_UNTIL_DUE: u8 = 1;
/// Asleep until woken: no cursor was held when it went to sleep.
pub(super) const ASLEEP: u8 = 2;

/// The committer on a thread of its own, for an engine with a blocking commit: runs rounds
/// back to back while writes are pending and sleeps on the state's condition variable when
/// none are. Returns when the store is closed (after committing what is queued) or dropped
/// (at once, like a crash: what is queued is lost and no waiter is answered).
pub(super) fn run_on_thread<E: Engine>(shared: Arc<Shared<E>>) {
    let blocking = shared
        .engine
        .blocking()
        .expect("the committer runs on a thread only for an engine with a blocking commit");
    let mut state = shared.lock();
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        if let Some(mut batch) = take_round(&shared, &mut state) {
            drop(state);
            let writes = std::mem::take(&mut batch.writes);
            let result = if writes.is_empty() {
                Ok(())
            } else {
                let (records, started) = (writes.len(), Instant::now());
                let result = blocking.commit_blocking(writes);
                shared.commit_stats.record(records, started.elapsed());
                result
            };
            finish_round(&shared, batch, result);
            state = shared.lock();
            continue;
        }
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
        // Set under the lock, so a write queued after this sees it once it unlocks.
        let due = cursors_due(&state);
        let sleep = if due.is_some() {
            ASLEEP_UNTIL_DUE
        } else {
            ASLEEP
        };
        shared.thread_sleep.store(sleep, Ordering::Relaxed);
        state = match due {
            Some(due) => {
                let timeout = due.saturating_duration_since(Instant::now());
                shared
                    .wake_thread
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0
            }
            None => shared
                .wake_thread
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        };
        shared.thread_sleep.store(AWAKE, Ordering::Relaxed);
    }
}

/// What the next round commits, taken from `state`; `None` when nothing is due.
fn take_round<E: Engine>(shared: &Shared<E>, state: &mut State) -> Option<Batch> {
    let held = state.held_cursors.records.len();
    let take_cursors = held > 0
        && (held >= shared.limits.cursors_held_max()
            || shared.closing.load(Ordering::Relaxed)
            || cursors_due(state).is_some_and(|due| due <= Instant::now()));
    if state.pending.n_ops == 0 && !take_cursors {
        return None;
    }
    let mut batch = std::mem::take(&mut state.pending);
    if take_cursors {
        state.take_cursors(&mut batch);
    }
    Some(batch)
}

/// Makes a round's batch visible once `result` says it is durable and answers its waiters;
/// a failed commit poisons the store and fails every queued write too.
fn finish_round<E: Engine>(shared: &Shared<E>, batch: Batch, result: Result<(), EngineError>) {
    let mut state = shared.lock();
    let outcome = match result {
        Ok(()) => {
            state.mark_committed(&batch);
            Ok(())
        }
        Err(error) => {
            let reason = format!(
                "a commit failed, so this store takes no more writes until it is reopened: \
                 {error}"
            );
            tracing::error!(engine = shared.engine.name(), "{reason}");
            state.settle(&batch);
            state.poisoned = Some(reason.clone());
            let mut queued = std::mem::take(&mut state.pending);
            state.take_cursors(&mut queued);
            state.settle(&queued);
            for waiter in queued.waiters {
                let _ = waiter.send(Err(reason.clone()));
            }
            Err(reason)
        }
    };
    drop(state);
    for waiter in batch.waiters {
        // A waiter whose caller went away (a cancelled request) needs no answer.
        let _ = waiter.send(outcome.clone());
    }
}
