//! The committer: the one task that turns pending writes into engine commits (group commit).
//!
//! Each round takes every pending write at once, commits them as one engine batch, then
//! makes them visible (advances committed seqs) and wakes every waiter of the batch. Rounds
//! run one after another, so batches become durable strictly in allocation order. A failed
//! commit poisons the store: the allocated seqs it held would be holes, so every waiter of
//! it and of the writes queued behind it hears the error, and later writes are refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use super::Shared;
use super::engine::Engine;

/// Runs until the store is dropped or closed. Holds the store only while a round runs, so dropping
/// the last [`DurableStore`](super::DurableStore) handle frees the engine even while this
/// task waits.
pub(super) async fn run<E: Engine>(shared: Weak<Shared<E>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while commit_round(&shared).await {}
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Commits what is pending; false when nothing was.
async fn commit_round<E: Engine>(shared: &Shared<E>) -> bool {
    let mut batch = {
        let mut state = shared.lock();
        if state.pending.n_ops == 0 {
            return false;
        }
        std::mem::take(&mut state.pending)
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
