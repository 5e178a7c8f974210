//! An [`Engine`] in memory: the simulator's disk.
//!
//! Committed state lives in `BTreeSet`s (deterministic iteration) of [`Record`]s, each one
//! allocation holding its key and value: a simulated day keeps every message, inbox entry and
//! dedupe record of 10,000 devices, so the bytes per record are the simulator's memory per
//! message (see `Record`). A commit takes
//! `commit_latency` of tokio time before it applies, so under the simulator's virtual clock an
//! fsync costs simulated time, and a store dropped during that time (a crash) loses the batch.
//! Share the engine with an `Arc` to "restart" a store over the same committed data.

use std::borrow::Borrow;
use std::cmp::Ordering as KeyOrdering;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::engine::{Engine, EngineError, KeyValue, Partition, WriteBatch, WriteOp};

type Tree = BTreeSet<Record>;

/// One key and its value in one allocation: the key's length (u32, big-endian), the key, the
/// value. Ordered, compared and looked up by its key alone (`Borrow<[u8]>` returns the key),
/// so the set behaves as a map from key to value. Against a `BTreeMap<Vec<u8>, Vec<u8>>` an
/// inbox entry (a 20-byte key, an 8-byte value) takes 16 bytes in the tree and one 48-byte
/// heap chunk instead of 48 bytes and two 32-byte chunks.
#[derive(Debug)]
struct Record(Box<[u8]>);

const KEY_LEN_BYTES: usize = 4;

impl Record {
    fn new(key: &[u8], value: &[u8]) -> Record {
        let key_len = u32::try_from(key.len()).expect("a key is shorter than 4 GiB");
        let mut bytes = Vec::with_capacity(KEY_LEN_BYTES + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Record(bytes.into_boxed_slice())
    }

    fn key_len(&self) -> usize {
        let len: [u8; KEY_LEN_BYTES] = self.0[..KEY_LEN_BYTES]
            .try_into()
            .expect("a record starts with its key's length");
        u32::from_be_bytes(len) as usize
    }

    fn key(&self) -> &[u8] {
        &self.0[KEY_LEN_BYTES..KEY_LEN_BYTES + self.key_len()]
    }

    fn value(&self) -> &[u8] {
        &self.0[KEY_LEN_BYTES + self.key_len()..]
    }

    fn pair(&self) -> KeyValue {
        (self.key().to_vec(), self.value().to_vec())
    }
}

impl Borrow<[u8]> for Record {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Record {}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Record) -> Option<KeyOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Record {
    fn cmp(&self, other: &Record) -> KeyOrdering {
        self.key().cmp(other.key())
    }
}

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
        self.lock().iter().all(BTreeSet::is_empty)
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
        Ok(self.lock()[partition.index()]
            .get(key)
            .map(|record| record.value().to_vec()))
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError> {
        let trees = self.lock();
        let tree = &trees[partition.index()];
        let end = super::keys::prefix_end(prefix);
        let end = match &end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let last = tree
            .range::<[u8], _>((Bound::Included(prefix), end))
            .next_back();
        Ok(last.map(Record::pair))
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
        let end = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Ok(tree
            .range::<[u8], _>((Bound::Included(start), end))
            .take(limit)
            .map(Record::pair)
            .collect())
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
                    trees[partition.index()].replace(Record::new(&key, &value));
                }
                WriteOp::Delete { partition, key } => {
                    trees[partition.index()].remove(key.as_slice());
                }
            }
        }
        drop(trees);
        self.n_commits.fetch_add(1, Ordering::Relaxed);
        self.n_records_written.fetch_add(n_ops, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
    }

    /// Short keys over a small alphabet with 0xff in it, so keys share prefixes, overwrite
    /// each other and meet the prefix ends that carry.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 7, 0xfe, 0xff]), 0..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (key(), prop::collection::vec(any::<u8>(), 0..12))
                .prop_map(|(key, value)| Op::Put(key, value)),
            1 => key().prop_map(Op::Delete),
        ]
    }

    proptest! {
        /// The records answer every read as a `BTreeMap` from key to value would: gets,
        /// scans with and without an end, and the last key with a prefix.
        #[test]
        fn records_read_back_as_a_map_from_key_to_value(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..6), 0..8),
            probes in prop::collection::vec((key(), key(), 0usize..5), 1..8),
        ) {
            let engine = MemEngine::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            for ops in batches {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op {
                        Op::Put(key, value) => {
                            model.insert(key.clone(), value.clone());
                            batch.put(Partition::Inbox, key, value);
                        }
                        Op::Delete(key) => {
                            model.remove(&key);
                            batch.delete(Partition::Inbox, key);
                        }
                    }
                }
                runtime.block_on(engine.commit(batch)).unwrap();
            }
            prop_assert_eq!(engine.len(Partition::Inbox), model.len());
            prop_assert_eq!(engine.len(Partition::Messages), 0);
            for (start, end, limit) in probes {
                prop_assert_eq!(
                    engine.get(Partition::Inbox, &start).unwrap(),
                    model.get(&start).cloned()
                );
                let all: Vec<KeyValue> = model
                    .range(start.clone()..)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(
                    engine.scan(Partition::Inbox, &start, None, limit).unwrap(),
                    all.iter().take(limit).cloned().collect::<Vec<_>>()
                );
                let bounded: Vec<KeyValue> =
                    all.iter().filter(|(k, _)| *k < end).take(limit).cloned().collect();
                prop_assert_eq!(
                    engine.scan(Partition::Inbox, &start, Some(&end), limit).unwrap(),
                    bounded
                );
                let last = model
                    .iter()
                    .rfind(|(k, _)| k.starts_with(&start))
                    .map(|(k, v)| (k.clone(), v.clone()));
                prop_assert_eq!(
                    engine.last_with_prefix(Partition::Inbox, &start).unwrap(),
                    last
                );
            }
        }
    }
}
