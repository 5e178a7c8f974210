//! An [`Engine`] in memory: the simulator's disk.
//!
//! Committed state lives in `BTreeMap`s (deterministic iteration). A commit takes
//! `commit_latency` of tokio time before it applies, so under the simulator's virtual clock an
//! fsync costs simulated time, and a store dropped during that time (a crash) loses the batch.
//! Share the engine with an `Arc` to "restart" a store over the same committed data.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::engine::{Engine, EngineError, KeyValue, Partition, WriteBatch, WriteOp};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory [`Engine`].
#[derive(Debug, Default)]
pub struct MemEngine {
    commit_latency: Duration,
    trees: Mutex<[Tree; Partition::ALL.len()]>,
    n_commits: AtomicU64,
    n_records_written: AtomicU64,
    fail_commits: AtomicBool,
}

impl MemEngine {
    /// An empty engine whose commits take no time.
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// An empty engine whose commits each take `commit_latency` (a simulated fsync).
    pub fn with_commit_latency(commit_latency: Duration) -> MemEngine {
        MemEngine {
            commit_latency,
            ..MemEngine::default()
        }
    }

    /// Commits applied so far.
    pub fn commits(&self) -> u64 {
        self.n_commits.load(Ordering::Relaxed)
    }

    /// Writes (puts and deletes) applied so far.
    pub fn records_written(&self) -> u64 {
        self.n_records_written.load(Ordering::Relaxed)
    }

    /// Makes every later commit fail (a dead disk) until called with `false`. A failed commit
    /// applies nothing.
    pub fn set_fail_commits(&self, fail: bool) {
        self.fail_commits.store(fail, Ordering::Relaxed);
    }

    /// Keys in `partition`, for inspection.
    pub fn len(&self, partition: Partition) -> usize {
        self.lock()[partition.index()].len()
    }

    /// True when no partition holds a key.
    pub fn is_empty(&self) -> bool {
        self.lock().iter().all(BTreeMap::is_empty)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Tree; Partition::ALL.len()]> {
        // Every operation leaves the maps consistent before it can panic.
        self.trees
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Engine for MemEngine {
    fn name(&self) -> &'static str {
        "mem"
    }

    fn get(&self, partition: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.lock()[partition.index()].get(key).cloned())
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError> {
        let trees = self.lock();
        let tree = &trees[partition.index()];
        let last = match super::keys::prefix_end(prefix) {
            Some(end) => tree.range(prefix.to_vec()..end).next_back(),
            None => tree.range(prefix.to_vec()..).next_back(),
        };
        Ok(last.map(|(key, value)| (key.clone(), value.clone())))
    }

    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let trees = self.lock();
        let tree = &trees[partition.index()];
        let pairs = |(key, value): (&Vec<u8>, &Vec<u8>)| (key.clone(), value.clone());
        Ok(match end {
            Some(end) if end <= start => Vec::new(),
            Some(end) => tree
                .range(start.to_vec()..end.to_vec())
                .take(limit)
                .map(pairs)
                .collect(),
            None => tree
                .range(start.to_vec()..)
                .take(limit)
                .map(pairs)
                .collect(),
        })
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if !self.commit_latency.is_zero() {
            tokio::time::sleep(self.commit_latency).await;
        }
        if self.fail_commits.load(Ordering::Relaxed) {
            return Err(EngineError::Failed {
                operation: "commit".into(),
                detail: "injected disk failure (MemEngine::set_fail_commits)".into(),
            });
        }
        let n_ops = batch.len() as u64;
        let mut trees = self.lock();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put {
                    partition,
                    key,
                    value,
                } => {
                    trees[partition.index()].insert(key, value);
                }
                WriteOp::Delete { partition, key } => {
                    trees[partition.index()].remove(&key);
                }
            }
        }
        drop(trees);
        self.n_commits.fetch_add(1, Ordering::Relaxed);
        self.n_records_written.fetch_add(n_ops, Ordering::Relaxed);
        Ok(())
    }
}
