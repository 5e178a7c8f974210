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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use super::engine::Engine;
use super::state::State;

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
    let mut batch = {
        let mut state = shared.lock();
        let held = state.held_cursors.records.len();
        let take_cursors = held > 0
            && (held >= shared.limits.cursors_held_max()
                || shared.closing.load(Ordering::Relaxed)
                || cursors_due(&state).is_some_and(|due| due <= Instant::now()));
        if state.pending.n_ops == 0 && !take_cursors {
            return false;
        }
        let mut batch = std::mem::take(&mut state.pending);
        if take_cursors {
            state.take_cursors(&mut batch);
        }
        batch
    };
    let writes = std::mem::take(&mut batch.writes);
    let result = if writes.is_empty() {
        // Only duplicates waiting for earlier batches: nothing to write.
        Ok(())
    } else {
        shared.engine.commit(writes).await
    };
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
    true
}
