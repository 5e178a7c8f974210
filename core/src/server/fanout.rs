//! Group fan-out: a bounded queue with workers.
//!
//! A group send first reserves a slot in its group's shard queue; only then is the message
//! stored. A full queue refuses the send with `OVERLOADED` before anything is written, so the
//! backlog never grows without bound and the client retries the same client message id later.
//! Each group maps to one shard (by a stable FNV hash), so one group's messages are delivered
//! in store order.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Shared;
use crate::store::StoredMessage;

/// One stored group message to deliver.
#[derive(Debug)]
pub(crate) struct FanoutJob {
    pub message: Arc<StoredMessage>,
    pub deliveries: Vec<(String, u64)>,
    /// The sending connection, when its device takes its SendAck as its copy.
    pub skip: Option<u64>,
}

/// The producer side of the shard queues.
pub(crate) struct Fanout {
    shards: Vec<mpsc::Sender<FanoutJob>>,
    queue_len_high_water: std::sync::atomic::AtomicU64,
}

/// Every shard queue is full.
#[derive(Debug)]
pub(crate) struct Overloaded;

impl Fanout {
    /// `n_workers` shards sharing `queue_len_max` slots.
    pub fn new(n_workers: usize, queue_len_max: usize) -> (Fanout, Vec<mpsc::Receiver<FanoutJob>>) {
        let n_workers = n_workers.max(1);
        let per_shard_len = (queue_len_max / n_workers).max(1);
        let (shards, receivers) = (0..n_workers).map(|_| mpsc::channel(per_shard_len)).unzip();
        (
            Fanout {
                shards,
                queue_len_high_water: std::sync::atomic::AtomicU64::new(0),
            },
            receivers,
        )
    }

    /// Reserves a slot for a message to `group`, or refuses when its shard is full.
    pub fn try_reserve(&self, group: &str) -> Result<mpsc::OwnedPermit<FanoutJob>, Overloaded> {
        let shard = &self.shards[(fnv1a(group.as_bytes()) % self.shards.len() as u64) as usize];
        let permit = shard.clone().try_reserve_owned().map_err(|_| Overloaded)?;
        let queued = shard.max_capacity() - shard.capacity();
        self.queue_len_high_water
            .fetch_max(queued as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(permit)
    }

    /// Most slots ever taken in one shard (jobs queued or reserved).
    pub fn queue_len_high_water(&self) -> u64 {
        self.queue_len_high_water
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Drains one shard until every producer is gone.
pub(crate) async fn worker(shared: Arc<Shared>, mut jobs: mpsc::Receiver<FanoutJob>) {
    while let Some(job) = jobs.recv().await {
        shared.deliver(&job.message, &job.deliveries, job.skip);
    }
}

/// FNV-1a: stable across runs and platforms, unlike std's randomly seeded hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
