//! What the durable store keeps in memory, all under one mutex: the counters that assign ids
//! (next msg_id, each loaded user's allocated and committed seq), group membership, each
//! user's recent dedupe window and device cursors, and the batch of writes waiting for the
//! committer.
//!
//! "Allocated" runs ahead of "committed" by the writes in the pending and in-flight batches.
//! Readers see committed values only; writers allocate from allocated values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::sync::oneshot;

use super::engine::{Engine, Partition, WriteBatch};
use super::{keys, record};
use crate::store::StoreError;

/// Told when the batch holding a write is durable (`Ok`) or failed (the engine's message).
pub type Waiter = oneshot::Sender<Result<(), String>>;

/// One loaded user.
#[derive(Debug, Default)]
pub struct UserState {
    /// Newest seq handed out (durable or not).
    pub allocated_seq: u64,
    /// Newest seq whose batch is durable.
    pub committed_seq: u64,
    /// client_msg_id -> (msg_id, sender seq) of recent sends, and the ids in send order.
    pub dedupe: BTreeMap<String, (u64, u64)>,
    pub dedupe_order: VecDeque<String>,
    /// Device -> newest cursor written (durable or not), for devices touched since open.
    pub cursors: BTreeMap<String, u64>,
}

impl UserState {
    /// Remembers a send for dedupe. The window keeps its `window_len` newest ids, plus any
    /// older ones still waiting for their commit: an evicted id is found in the engine
    /// instead, which only works once it is durable.
    pub fn remember_send(
        &mut self,
        client_msg_id: String,
        msg_id: u64,
        sender_seq: u64,
        window_len: usize,
    ) {
        self.dedupe
            .insert(client_msg_id.clone(), (msg_id, sender_seq));
        self.dedupe_order.push_back(client_msg_id);
        while self.dedupe_order.len() > window_len {
            let oldest = self.dedupe_order.front().expect("window is not empty");
            let (_, oldest_seq) = self.dedupe[oldest];
            if oldest_seq > self.committed_seq {
                break;
            }
            let oldest = self.dedupe_order.pop_front().expect("window is not empty");
            self.dedupe.remove(&oldest);
        }
    }
}

/// Writes waiting for one engine commit, and what committing them makes visible.
#[derive(Debug, Default)]
pub struct Batch {
    pub writes: WriteBatch,
    /// Cursor records queued without a waiter, by key: a device acked twice before the
    /// commit is written once, with its newest cursor.
    pub cursors: BTreeMap<Vec<u8>, Vec<u8>>,
    pub waiters: Vec<Waiter>,
    /// user -> newest seq written by this batch.
    pub seq_marks: BTreeMap<String, u64>,
    /// Newest msg_id written by this batch (0: none).
    pub msg_id_max: u64,
    /// Store operations in the batch (each counts against `pending_ops_max`).
    pub n_ops: usize,
    /// Bytes of keys and values in `writes` (each counts against `pending_bytes_max`).
    pub n_bytes: usize,
}

/// Everything under the store's mutex.
#[derive(Debug, Default)]
pub struct State {
    /// Set when a commit failed: allocated seqs now have holes, so nothing more is written.
    pub poisoned: Option<String>,
    /// Newest msg_id handed out; msg_ids are gapless from 1.
    pub allocated_msg_id: u64,
    /// Newest msg_id whose batch is durable: the number of messages stored.
    pub committed_msg_id: u64,
    pub users: BTreeMap<String, UserState>,
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// The batch the committer takes next.
    pub pending: Batch,
    /// Operations and bytes accepted but not yet durable (pending and in flight).
    pub unsettled_ops: usize,
    pub unsettled_bytes: usize,
}

impl State {
    /// Refuses writes after a failed commit.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// Loads `user`'s newest seq from the engine the first time the user is touched.
    pub fn load_user<E: Engine>(
        &mut self,
        engine: &E,
        user: &str,
    ) -> Result<&mut UserState, StoreError> {
        if !self.users.contains_key(user) {
            let seq = committed_seq_in_engine(engine, user)?;
            self.users.insert(
                user.to_string(),
                UserState {
                    allocated_seq: seq,
                    committed_seq: seq,
                    ..UserState::default()
                },
            );
        }
        Ok(self.users.get_mut(user).expect("user was just loaded"))
    }

    /// Queues one store operation's writes for the committer: `seq_marks` are the (user, seq)
    /// and `msg_id` (0: none) that become visible once they are durable. The receiver hears
    /// when they are.
    pub fn submit(
        &mut self,
        writes: WriteBatch,
        seq_marks: impl IntoIterator<Item = (String, u64)>,
        msg_id: u64,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (sender, receiver) = oneshot::channel();
        let n_bytes = writes.n_bytes();
        self.unsettled_ops += 1;
        self.unsettled_bytes += n_bytes;
        let pending = &mut self.pending;
        pending.writes.append(&mut { writes });
        pending.waiters.push(sender);
        for (user, seq) in seq_marks {
            let mark = pending.seq_marks.entry(user).or_default();
            *mark = (*mark).max(seq);
        }
        pending.msg_id_max = pending.msg_id_max.max(msg_id);
        pending.n_ops += 1;
        pending.n_bytes += n_bytes;
        receiver
    }

    /// Queues a cursor record for the next commit round, with no one waiting for it; it
    /// replaces one for the same key still queued.
    pub fn submit_cursor(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let n_bytes = key.len() + value.len();
        let pending = &mut self.pending;
        if pending.cursors.insert(key, value).is_none() {
            self.unsettled_ops += 1;
            self.unsettled_bytes += n_bytes;
            pending.n_ops += 1;
            pending.n_bytes += n_bytes;
        }
    }

    /// Makes a committed batch visible to readers.
    pub fn mark_committed(&mut self, batch: &Batch) {
        for (user, seq) in &batch.seq_marks {
            let user = self
                .users
                .get_mut(user)
                .expect("a user with a pending write is loaded");
            assert!(
                *seq <= user.allocated_seq,
                "committed seq {seq} past allocated {}",
                user.allocated_seq
            );
            user.committed_seq = user.committed_seq.max(*seq);
        }
        self.committed_msg_id = self.committed_msg_id.max(batch.msg_id_max);
        self.settle(batch);
    }

    /// Forgets a batch's share of the unsettled counts.
    pub fn settle(&mut self, batch: &Batch) {
        self.unsettled_ops -= batch.n_ops;
        self.unsettled_bytes -= batch.n_bytes;
    }
}

/// The newest seq of `user`'s inbox in the engine (0 when empty).
pub fn committed_seq_in_engine<E: Engine>(engine: &E, user: &str) -> Result<u64, StoreError> {
    let prefix = keys::id_prefix(user);
    match engine.last_with_prefix(Partition::Inbox, &prefix)? {
        Some((key, _)) => Ok(keys::decode_inbox_seq(&prefix, &key).map_err(super::corrupt)?),
        None => Ok(0),
    }
}

/// A device's cursor in the engine (0 when it never acked).
pub fn cursor_in_engine<E: Engine>(
    engine: &E,
    user: &str,
    device: &str,
) -> Result<u64, StoreError> {
    let key = keys::cursor_key(user, device);
    match engine.get(Partition::Cursors, &key)? {
        Some(value) => Ok(
            record::decode_u64(Partition::Cursors, &key, &value, "cursor")
                .map_err(super::corrupt)?,
        ),
        None => Ok(0),
    }
}
