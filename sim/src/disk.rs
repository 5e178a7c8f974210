//! The simulated server's disk: imlab-core's `MemEngine` (commits take `commit_latency` of
//! simulated time and survive server crashes) behind the scenario's disk faults, known in
//! advance like a carrier's outages: a commit started in a `disk_stall` window hangs until the
//! window ends, a commit started in a `disk_failure` window fails, which poisons the durable
//! store (the server answers STORE_UNAVAILABLE) until the server restarts over the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imlab_core::store::{Engine, EngineError, KeyValue, MemEngine, Partition, WriteBatch};

use crate::world::{Window, now};

/// A `MemEngine` with stall and failure windows.
pub struct SimDisk {
    engine: Arc<MemEngine>,
    stalls: Vec<Window>,
    failures: Vec<Window>,
    failed_commits: Arc<AtomicU64>,
}

impl SimDisk {
    /// The disk `engine` with the scenario's fault windows; `failed_commits` counts the
    /// commits a failure window refused (shared across server restarts).
    pub fn new(
        engine: Arc<MemEngine>,
        stalls: Vec<Window>,
        failures: Vec<Window>,
        failed_commits: Arc<AtomicU64>,
    ) -> SimDisk {
        SimDisk {
            engine,
            stalls,
            failures,
            failed_commits,
        }
    }

    /// The end of the stall window holding `at`, if any.
    fn stalled_until(&self, at: Duration) -> Option<Duration> {
        self.stalls
            .iter()
            .filter(|(start, end)| *start <= at && at < *end)
            .map(|(_, end)| *end)
            .max()
    }
}

impl Engine for SimDisk {
    fn name(&self) -> &'static str {
        "sim-disk"
    }

    fn get(&self, partition: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.engine.get(partition, key)
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError> {
        self.engine.last_with_prefix(partition, prefix)
    }

    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.engine.scan(partition, start, end, limit)
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let at = now();
        if let Some(until) = self.stalled_until(at) {
            tokio::time::sleep(until - at).await;
        }
        let at = now();
        if self
            .failures
            .iter()
            .any(|(start, end)| *start <= at && at < *end)
        {
            self.failed_commits.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Failed {
                operation: "commit".into(),
                detail: "simulated disk failure (disk_failure fault)".into(),
            });
        }
        self.engine.commit(batch).await
    }
}
