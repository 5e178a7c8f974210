//! An [`Engine`] in memory: the simulator's disk.
//!
//! Committed state lives in one `Tree` per partition: records kept sorted, packed end to end
//! in blocks of at most 2 KB, the blocks in a `BTreeMap` by their first key (deterministic
//! iteration). A simulated day keeps every message, inbox entry and dedupe record of 10,000
//! devices, so the bytes per record are the simulator's memory per message: a record costs
//! its key, its value and two bytes of lengths, where a `BTreeSet` of one-chunk records spent
//! a 16-byte tree slot (in nodes about half full under rising keys) and a heap chunk rounded up
//! to its size class on each (an inbox entry, a 20-byte key and an 8-byte value: about 30 bytes
//! against about 57).
//!
//! A block that a split leaves behind (the half the write did not land in) is packed with LZ4,
//! as an LSM engine compresses its sealed blocks: the store's keys mostly rise (message ids, a
//! user's inbox seqs), so that half is seldom written again, and a day's records take about a
//! third of their bytes. A write into a packed block unpacks it for good (until it splits
//! again); a read of one unpacks a copy.
//!
//! A commit takes `commit_latency` of tokio time before it applies, so under the simulator's
//! virtual clock an fsync costs simulated time, and a store dropped during that time (a crash)
//! loses the batch. Share the engine with an `Arc` to "restart" a
//! store over the same committed data.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::engine::{Engine, EngineError, KeyValue, Partition, WriteBatch, WriteOp};

/// A block is split in two once it holds more than this many bytes (and two records).
const BLOCK_BYTES_MAX: usize = 2_048;

/// One record's place in a block: `key_len` and `value_len` as LEB128 varints, then the key,
/// then the value.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where the record starts in its block.
    start: usize,
    /// Where its key starts.
    key: usize,
    /// Where its value starts.
    value: usize,
    /// Where the next record starts.
    end: usize,
}

/// The LEB128 varint at `at` (protobuf's, through prost), moving `at` past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> usize {
    let mut rest = &bytes[*at..];
    let value = prost::encoding::decode_varint(&mut rest).expect("a block holds whole records");
    *at = bytes.len() - rest.len();
    usize::try_from(value).expect("a length written from a usize")
}

/// A record's key and value lengths as they lead it in a block: two varints of at most 10
/// bytes each.
fn header(key_len: usize, value_len: usize) -> ([u8; 20], usize) {
    let mut bytes = [0; 20];
    let mut rest = &mut bytes[..];
    for n in [key_len, value_len] {
        prost::encoding::encode_varint(n as u64, &mut rest);
    }
    let len = 20 - rest.len();
    (bytes, len)
}

/// Sorted records end to end (never empty while in a tree).
#[derive(Debug, Default, Clone)]
struct Block(Vec<u8>);

impl Block {
    fn slot(&self, start: usize) -> Slot {
        let mut at = start;
        let key_len = read_varint(&self.0, &mut at);
        let value_len = read_varint(&self.0, &mut at);
        Slot {
            start,
            key: at,
            value: at + key_len,
            end: at + key_len + value_len,
        }
    }

    fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            (start < self.0.len()).then(|| {
                let slot = self.slot(start);
                start = slot.end;
                slot
            })
        })
    }

    fn key(&self, slot: Slot) -> &[u8] {
        &self.0[slot.key..slot.value]
    }

    fn value(&self, slot: Slot) -> &[u8] {
        &self.0[slot.value..slot.end]
    }

    fn pair(&self, slot: Slot) -> KeyValue {
        (self.key(slot).to_vec(), self.value(slot).to_vec())
    }

    fn first_key(&self) -> &[u8] {
        self.key(self.slot(0))
    }

    /// The first record whose key is at least `key`, if any.
    fn seek(&self, key: &[u8]) -> Option<Slot> {
        self.slots().find(|slot| self.key(*slot) >= key)
    }

    /// Replaces the bytes of `range` with the record of `key` and `value`, growing the
    /// allocation by no more than needed (a block's spare capacity is memory the simulator
    /// keeps all run).
    fn splice(&mut self, range: std::ops::Range<usize>, key: &[u8], value: &[u8]) {
        let (header, header_len) = header(key.len(), value.len());
        let header = &header[..header_len];
        let grows = (header.len() + key.len() + value.len()).saturating_sub(range.len());
        self.0.reserve_exact(grows);
        let record = header.iter().chain(key).chain(value).copied();
        self.0.splice(range, record);
    }

    /// Splits off an upper part when the block holds more than `bytes_max` bytes, if that
    /// leaves both parts a record; `written` is the record just written. A record written
    /// last goes alone into the upper part, and one written first keeps the lower part to
    /// itself (keys written in rising or falling order leave full blocks behind them);
    /// otherwise the split is at the first record boundary past the middle.
    fn split_if_over(&mut self, bytes_max: usize, written: Range<usize>) -> Option<Block> {
        let len = self.0.len();
        if len <= bytes_max {
            return None;
        }
        let split = if written.end == len && written.start > 0 {
            written.start
        } else if written.start == 0 && written.end < len {
            written.end
        } else {
            let middle = len / 2;
            self.slots()
                .map(|slot| slot.end)
                .find(|end| *end >= middle)
                .filter(|end| *end < len)?
        };
        let upper = Block(self.0.split_off(split));
        self.0.shrink_to_fit();
        Some(upper)
    }
}

/// When a tree packs the blocks a split leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// When LZ4 makes them smaller.
    WhenSmaller,
    /// Always (tests: tiny blocks seldom shrink, and the packed paths must run too).
    #[cfg(test)]
    Always,
}

/// A block as a tree keeps it: raw while it takes writes, packed once a split leaves it behind.
#[derive(Debug)]
enum Kept {
    Raw(Block),
    /// The block's bytes in one LZ4 block, and their length.
    Packed {
        raw_len: u32,
        lz4: Box<[u8]>,
    },
}

impl Kept {
    /// The records, unpacked into a copy when packed.
    fn view(&self) -> Cow<'_, Block> {
        match self {
            Kept::Raw(block) => Cow::Borrowed(block),
            Kept::Packed { raw_len, lz4 } => Cow::Owned(unpack(*raw_len, lz4)),
        }
    }

    /// The records to write, unpacked in place when packed.
    fn raw_mut(&mut self) -> &mut Block {
        if let Kept::Packed { raw_len, lz4 } = self {
            *self = Kept::Raw(unpack(*raw_len, lz4));
        }
        match self {
            Kept::Raw(block) => block,
            Kept::Packed { .. } => unreachable!("unpacked above"),
        }
    }

    /// Packs a raw block (when `packing` says so).
    fn pack(&mut self, packing: Packing) {
        let Kept::Raw(block) = self else {
            return;
        };
        let lz4 = lz4_flex::block::compress(&block.0);
        if packing == Packing::WhenSmaller && lz4.len() >= block.0.len() {
            return;
        }
        let raw_len = u32::try_from(block.0.len()).expect("a block is far below 4 GiB");
        *self = Kept::Packed {
            raw_len,
            lz4: lz4.into_boxed_slice(),
        };
    }

    /// Bytes of memory it holds (its allocation's capacity).
    #[cfg(test)]
    fn held(&self) -> usize {
        match self {
            Kept::Raw(block) => block.0.capacity(),
            Kept::Packed { lz4, .. } => lz4.len(),
        }
    }
}

/// A packed block's records. Only this engine packs them, so bytes that do not unpack to
/// their length are a bug here, not a fault on a disk.
fn unpack(raw_len: u32, lz4: &[u8]) -> Block {
    let bytes = lz4_flex::block::decompress(lz4, raw_len as usize)
        .expect("a packed block unpacks (the engine packed it)");
    assert_eq!(bytes.len(), raw_len as usize, "a packed block's length");
    Block(bytes)
}

/// One partition's records, sorted by key.
#[derive(Debug)]
struct Tree {
    /// Blocks by their first key; each block's keys are below the next block's first key.
    blocks: BTreeMap<Box<[u8]>, Kept>,
    /// Records in all blocks.
    len: usize,
    /// Split a block past this many bytes.
    block_bytes_max: usize,
    packing: Packing,
}

impl Tree {
    fn new(block_bytes_max: usize, packing: Packing) -> Tree {
        Tree {
            blocks: BTreeMap::new(),
            len: 0,
            block_bytes_max,
            packing,
        }
    }

    /// The first key of the block that holds `key` if anything does: the last block
    /// starting at or before it.
    fn block_key_of(&self, key: &[u8]) -> Option<&[u8]> {
        self.blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(first, _)| &**first)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (_, kept) = self
            .blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let block = kept.view();
        let slot = block.seek(key)?;
        (block.key(slot) == key).then(|| block.value(slot).to_vec())
    }

    /// Records from the first at or after `start`, in order, while `keep` says so.
    fn for_each_from(&self, start: &[u8], mut keep: impl FnMut(&Block, Slot) -> bool) {
        let from = match self.block_key_of(start) {
            Some(first) => Bound::Included(first),
            None => Bound::Unbounded,
        };
        for (_, kept) in self.blocks.range::<[u8], _>((from, Bound::Unbounded)) {
            let block = kept.view();
            for slot in block.slots() {
                if block.key(slot) >= start && !keep(&block, slot) {
                    return;
                }
            }
        }
    }

    /// The record with the greatest key below `end` (below nothing: the last).
    fn last_below(&self, end: Option<&[u8]>) -> Option<KeyValue> {
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let (_, kept) = self
            .blocks
            .range::<[u8], _>((Bound::Unbounded, upper))
            .next_back()?;
        let block = kept.view();
        let slot = block
            .slots()
            .take_while(|slot| end.is_none_or(|end| block.key(*slot) < end))
            .last()
            .expect("a block's first key is below end");
        Some(block.pair(slot))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        // Before every block when the first block starts above it: the tree's first entry, not
        // a second descent for the key (the one below finds its block).
        if self
            .blocks
            .first_key_value()
            .is_none_or(|(first, _)| **first > *key)
        {
            // Before every block: the first block (or a new one) takes it, under a new first
            // key.
            let block = self
                .blocks
                .pop_first()
                .map_or_else(|| Kept::Raw(Block::default()), |(_, block)| block);
            self.blocks.insert(key.into(), block);
        }
        let (_, kept) = self
            .blocks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .expect("a block starts at or before the key");
        let block = kept.raw_mut();
        let (at, replaced) = match block.seek(key) {
            Some(slot) if block.key(slot) == key => (slot.start, slot.end - slot.start),
            found => {
                self.len += 1;
                (found.map_or(block.0.len(), |slot| slot.start), 0)
            }
        };
        let before = block.0.len();
        block.splice(at..at + replaced, key, value);
        let written = at..at + replaced + block.0.len() - before;
        if let Some(upper) = block.split_if_over(self.block_bytes_max, written.clone()) {
            // The part the write did not land in is left behind: packed. The upper part's
            // first key is taken while it is raw.
            let first = upper.first_key().into();
            let mut upper = Kept::Raw(upper);
            if written.start < block.0.len() {
                upper.pack(self.packing);
            } else {
                kept.pack(self.packing);
            }
            self.blocks.insert(first, upper);
        }
    }

    fn delete(&mut self, key: &[u8]) {
        let Some((first, kept)) = self
            .blocks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
        else {
            return;
        };
        // Looked up in a view first: deleting a key that is not there unpacks nothing.
        let slot = {
            let view = kept.view();
            view.seek(key).filter(|slot| view.key(*slot) == key)
        };
        let Some(slot) = slot else {
            return;
        };
        let block = kept.raw_mut();
        block.0.drain(slot.start..slot.end);
        self.len -= 1;
        if slot.start == 0 {
            // Its first record is gone: under its new first key, or not at all.
            let first = first.clone();
            let Some(Kept::Raw(block)) = self.blocks.remove(&first) else {
                unreachable!("the block just found, unpacked above");
            };
            if !block.0.is_empty() {
                self.blocks
                    .insert(block.first_key().into(), Kept::Raw(block));
            }
        }
    }
}

/// The in-memory [`Engine`].
#[derive(Debug)]
pub struct MemEngine {
    commit_latency: Duration,
    trees: Mutex<[Tree; Partition::ALL.len()]>,
    n_commits: AtomicU64,
    n_records_written: AtomicU64,
    fail_commits: AtomicBool,
}

impl Default for MemEngine {
    fn default() -> MemEngine {
        MemEngine::with_blocks(Duration::ZERO, BLOCK_BYTES_MAX, Packing::WhenSmaller)
    }
}

impl MemEngine {
    /// An empty engine whose commits take no time.
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// An empty engine whose commits each take `commit_latency` (a simulated fsync).
    pub fn with_commit_latency(commit_latency: Duration) -> MemEngine {
        MemEngine::with_blocks(commit_latency, BLOCK_BYTES_MAX, Packing::WhenSmaller)
    }

    /// An engine that splits its blocks past `block_bytes_max` bytes (tests use tiny blocks)
    /// and packs the blocks left behind as `packing` says.
    fn with_blocks(
        commit_latency: Duration,
        block_bytes_max: usize,
        packing: Packing,
    ) -> MemEngine {
        MemEngine {
            commit_latency,
            trees: Mutex::new(std::array::from_fn(|_| Tree::new(block_bytes_max, packing))),
            n_commits: AtomicU64::new(0),
            n_records_written: AtomicU64::new(0),
            fail_commits: AtomicBool::new(false),
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
        self.lock()[partition.index()].len
    }

    /// True when no partition holds a key.
    pub fn is_empty(&self) -> bool {
        self.lock().iter().all(|tree| tree.len == 0)
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
        Ok(self.lock()[partition.index()].get(key))
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError> {
        let trees = self.lock();
        let end = super::keys::prefix_end(prefix);
        let last = trees[partition.index()].last_below(end.as_deref());
        Ok(last.filter(|(key, _)| key.as_slice() >= prefix))
    }

    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        if end.is_some_and(|end| end <= start) || limit == 0 {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        self.lock()[partition.index()].for_each_from(start, |block, slot| {
            if end.is_some_and(|end| block.key(slot) >= end) {
                return false;
            }
            found.push(block.pair(slot));
            found.len() < limit
        });
        Ok(found)
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
                    trees[partition.index()].put(&key, &value);
                }
                WriteOp::Delete { partition, key } => {
                    trees[partition.index()].delete(&key);
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
            // The default blocks, and tiny ones that split at every second or third record.
            let engines = [
                MemEngine::new(),
                MemEngine::with_blocks(Duration::ZERO, 8, Packing::Always),
                MemEngine::with_blocks(Duration::ZERO, 24, Packing::Always),
                MemEngine::with_blocks(Duration::ZERO, 24, Packing::WhenSmaller),
            ];
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
                for engine in &engines {
                    runtime.block_on(engine.commit(batch.clone())).unwrap();
                }
            }
            for engine in &engines {
                prop_assert_eq!(engine.len(Partition::Inbox), model.len());
                prop_assert_eq!(engine.len(Partition::Messages), 0);
                prop_assert_eq!(engine.is_empty(), model.is_empty());
                for (start, end, limit) in &probes {
                    let (start, end, limit) = (start.clone(), end.clone(), *limit);
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

    /// An inbox of `users` users with `per_user` entries each, in the order a day's traffic
    /// makes them (round robin over users, each user's seqs rising), or in falling key order.
    fn fill(engine: &MemEngine, users: u32, per_user: u64, falling: bool) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut keys: Vec<Vec<u8>> = (1..=per_user)
            .flat_map(|seq| {
                (0..users).map(move |user| super::super::keys::inbox_key(&format!("u{user}"), seq))
            })
            .collect();
        if falling {
            keys.sort_unstable_by(|a, b| b.cmp(a));
        }
        let mut raw = 0;
        for chunk in keys.chunks(64) {
            let mut batch = WriteBatch::new();
            for key in chunk {
                raw += key.len() + 8;
                batch.put(Partition::Inbox, key.clone(), 42u64.to_be_bytes().to_vec());
            }
            runtime.block_on(engine.commit(batch)).unwrap();
        }
        raw
    }

    /// Bytes the partition's blocks hold, capacity and first keys included.
    fn held(engine: &MemEngine, partition: Partition) -> (usize, usize, usize) {
        let trees = engine.lock();
        let tree = &trees[partition.index()];
        let bytes = tree
            .blocks
            .iter()
            .map(|(first, kept)| first.len() + kept.held())
            .sum();
        let largest = tree
            .blocks
            .values()
            .map(|kept| kept.view().0.len())
            .max()
            .unwrap_or(0);
        (bytes, tree.blocks.len(), largest)
    }

    #[test]
    fn a_day_of_inbox_entries_costs_their_bytes_and_two_more_each() {
        let engine = MemEngine::new();
        let raw = fill(&engine, 500, 40, false);
        let (bytes, blocks, largest) = held(&engine, Partition::Inbox);
        assert_eq!(engine.len(Partition::Inbox), 20_000);
        // Two bytes of lengths a record and the blocks' spare capacity: a quarter at most.
        // A BTreeSet of one-chunk records took about twice the raw bytes.
        assert!(bytes <= raw + raw / 4, "{bytes} bytes held for {raw} raw");
        assert!(largest <= BLOCK_BYTES_MAX, "largest block {largest} bytes");
        assert!(blocks >= raw / BLOCK_BYTES_MAX, "{blocks} blocks");
        let probe = super::super::keys::inbox_key("u77", 13);
        assert_eq!(
            engine.get(Partition::Inbox, &probe).unwrap(),
            Some(42u64.to_be_bytes().to_vec())
        );
    }

    /// Raw blocks and packed blocks in the partition.
    fn kinds(engine: &MemEngine, partition: Partition) -> (usize, usize) {
        let trees = engine.lock();
        let raw = trees[partition.index()]
            .blocks
            .values()
            .filter(|kept| matches!(kept, Kept::Raw(_)))
            .count();
        (raw, trees[partition.index()].blocks.len() - raw)
    }

    #[test]
    fn messages_left_behind_by_splits_are_packed_and_read_back() {
        let engine = MemEngine::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A message record as the store writes one: a few ids and a 100-byte body.
        let record = |msg_id: u64| {
            let mut value =
                format!("u{}u{}d{}-{msg_id}", msg_id % 97, msg_id % 89, msg_id % 89).into_bytes();
            value.extend_from_slice(&[b'm'; 100]);
            value
        };
        let mut raw = 0;
        for first in (1..=20_000u64).step_by(50) {
            let mut batch = WriteBatch::new();
            for msg_id in first..first + 50 {
                let (key, value) = (super::super::keys::message_key(msg_id), record(msg_id));
                raw += key.len() + value.len();
                batch.put(Partition::Messages, key, value);
            }
            runtime.block_on(engine.commit(batch)).unwrap();
        }
        let (bytes, blocks, largest) = held(&engine, Partition::Messages);
        assert!(bytes * 3 < raw, "{bytes} bytes held for {raw} raw");
        assert!(largest <= BLOCK_BYTES_MAX, "largest block {largest} bytes");
        // Rising keys: every block but the last one written is left behind, full.
        assert_eq!(kinds(&engine, Partition::Messages), (1, blocks - 1));
        assert!(
            blocks <= raw / (BLOCK_BYTES_MAX * 9 / 10) + 1,
            "{blocks} blocks"
        );
        for msg_id in [1, 2, 777, 19_999, 20_000] {
            let key = super::super::keys::message_key(msg_id);
            assert_eq!(
                engine.get(Partition::Messages, &key).unwrap(),
                Some(record(msg_id))
            );
        }
        let all = engine
            .scan(Partition::Messages, &[], None, usize::MAX)
            .unwrap();
        assert_eq!(all.len(), 20_000);
        assert!(all.iter().zip(1u64..).all(|((key, value), msg_id)| {
            *key == super::super::keys::message_key(msg_id) && *value == record(msg_id)
        }));
        // A write into a packed block unpacks it; deleting a key that is not there does not.
        let (old, absent) = (
            super::super::keys::message_key(500),
            super::super::keys::message_key(20_001),
        );
        let mut batch = WriteBatch::new();
        batch.delete(Partition::Messages, absent);
        runtime.block_on(engine.commit(batch)).unwrap();
        assert_eq!(kinds(&engine, Partition::Messages), (1, blocks - 1));
        let mut batch = WriteBatch::new();
        batch.put(Partition::Messages, old.clone(), b"again".to_vec());
        runtime.block_on(engine.commit(batch)).unwrap();
        assert_eq!(kinds(&engine, Partition::Messages), (2, blocks - 2));
        assert_eq!(
            engine.get(Partition::Messages, &old).unwrap(),
            Some(b"again".to_vec())
        );
    }

    #[test]
    fn keys_written_in_falling_order_still_split_into_bounded_blocks() {
        // Every key lands before every block: the first block takes it, and must split too,
        // leaving the blocks behind it packed.
        let engine = MemEngine::new();
        let raw = fill(&engine, 50, 40, true);
        let (bytes, blocks, largest) = held(&engine, Partition::Inbox);
        assert_eq!(engine.len(Partition::Inbox), 2_000);
        assert!(largest <= BLOCK_BYTES_MAX, "largest block {largest} bytes");
        assert_eq!(kinds(&engine, Partition::Inbox), (1, blocks - 1));
        assert!(bytes * 2 < raw, "{bytes} bytes held for {raw} raw");
        let all = engine
            .scan(Partition::Inbox, &[], None, usize::MAX)
            .unwrap();
        assert_eq!(all.len(), 2_000);
        assert!(
            all.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "in key order"
        );
    }

    #[test]
    fn varints_round_trip_at_their_byte_boundaries() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 1 << 21] {
            let (key, value) = (vec![7; len], vec![9; 130]);
            let mut block = Block::default();
            block.splice(0..0, &key, &value);
            let (header, header_len) = header(key.len(), value.len());
            assert_eq!(block.0.len(), header_len + len + 130, "{len}");
            assert_eq!(&block.0[..header_len], &header[..header_len]);
            let slot = block.slot(0);
            assert_eq!(
                (block.key(slot), block.value(slot)),
                (&key[..], &value[..]),
                "{len}"
            );
        }
        let (header, header_len) = header(usize::MAX, 1 << 28);
        let mut at = 0;
        assert_eq!((read_varint(&header, &mut at), at), (usize::MAX, 10));
        assert_eq!((read_varint(&header, &mut at), at), (1 << 28, header_len));
        assert_eq!(header_len, 15);
    }
}
