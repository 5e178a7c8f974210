//! The committer: the one task that turns pending writes into engine commits (group commit).
//!
//! Each round takes every pending write at once, commits them as one engine batch, then
//! makes them visible (advances committed seqs) and wakes every waiter of the batch. Rounds
//! run one after another, so batches become durable strictly in allocation order. A failed
//! commit poisons the store: the allocated seqs it held would be holes, so every waiter of
//! it and of the writes queued behind it hears the error, and later writes are refused.
//!
//! Cursor acks queue their record without a waiter and without waking a round of their own:
//! they ride in the next round that anything else starts, or in one started
//! `CURSOR_COMMIT_DELAY` after the first of them, so a stream of acks costs at most one
//! commit (one fsync) a `CURSOR_COMMIT_DELAY` instead of one each.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use super::engine::{Engine, Partition};

/// Runs until the store is dropped or closed. Holds the store only while a round runs, so dropping
/// the last [`DurableStore`](super::DurableStore) handle frees the engine even while this
/// task waits.
pub(super) async fn run<E: Engine>(
    shared: Weak<Shared<E>>,
    wake: Arc<Notify>,
    wake_lazily: Arc<Notify>,
) {
    loop {
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = async {
                wake_lazily.notified().await;
                tokio::time::sleep(CURSOR_COMMIT_DELAY).await;
            } => {}
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

/// A cursor queued alone is committed at the latest this long after it was acked.
pub const CURSOR_COMMIT_DELAY: Duration = Duration::from_millis(200);

/// Commits what is pending; false when nothing was.
async fn commit_round<E: Engine>(shared: &Shared<E>) -> bool {
    let mut batch = {
        let mut state = shared.lock();
        if state.pending.n_ops == 0 {
            return false;
        }
        std::mem::take(&mut state.pending)
    };
    let mut writes = std::mem::take(&mut batch.writes);
    for (key, value) in std::mem::take(&mut batch.cursors) {
        writes.put(Partition::Cursors, key, value);
    }
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
            let queued = std::mem::take(&mut state.pending);
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
