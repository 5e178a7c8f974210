//! What the durable store keeps in memory, all under one mutex: the counters that assign ids
//! (next msg_id, each loaded user's allocated and committed seq), group membership, each
//! user's recent dedupe window and device cursors, and the batch of writes waiting for the
//! committer.
//!
//! "Allocated" runs ahead of "committed" by the writes in the pending and in-flight batches.
//! Readers see committed values only; writers allocate from allocated values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::HashTable;
use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use tokio::sync::oneshot;

use super::engine::{Engine, Partition, WriteBatch};
use super::filter::DedupeFilter;
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
    /// Recent sends by client message id.
    pub dedupe: DedupeWindow,
    /// Device -> newest cursor written (durable or not), for devices touched since loaded.
    pub cursors: BTreeMap<String, u64>,
    /// [`State::cursor_writes`] at this user's newest cursor write: durable once
    /// [`State::cursor_writes_durable`] reaches it.
    pub last_cursor_write: u64,
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
        self.dedupe.push(client_msg_id, msg_id, sender_seq);
        while self.dedupe.len() > window_len {
            if self.dedupe.oldest_seq().expect("window is not empty") > self.committed_seq {
                break;
            }
            self.dedupe.pop_oldest();
        }
    }
}

/// A sender's recent sends, oldest first, found by client message id. Each id is stored once,
/// in the list; the index is a hash table (Fx, never iterated) of positions in the list, so an
/// entry costs about 60 bytes where a map from the id plus a list of the ids cost about 130.
/// The hasher is fixed and unkeyed, so a client can make its own ids collide: that slows only
/// its own window, which holds at most `dedupe_window_len` sends and those not yet durable.
#[derive(Debug, Default)]
pub struct DedupeWindow {
    /// (client message id, msg_id, sender seq), oldest first.
    sends: VecDeque<(Box<str>, u64, u64)>,
    /// Sends taken off the front so far: the `n`-th send remembered is `sends[n - popped]`.
    popped: u64,
    /// `n` of each send in `sends`, by its id's hash; an id remembered twice names the newer.
    index: HashTable<u64>,
}

impl DedupeWindow {
    fn hash(id: &str) -> u64 {
        FxBuildHasher.hash_one(id)
    }

    fn at(&self, n: u64) -> &(Box<str>, u64, u64) {
        &self.sends[(n - self.popped) as usize]
    }

    /// The (msg_id, sender seq) remembered for `client_msg_id`.
    pub fn get(&self, client_msg_id: &str) -> Option<(u64, u64)> {
        self.index
            .find(Self::hash(client_msg_id), |n| {
                *self.at(*n).0 == *client_msg_id
            })
            .map(|n| {
                let (_, msg_id, sender_seq) = self.at(*n);
                (*msg_id, *sender_seq)
            })
    }

    /// Sends taken off the front since the window was made: it changes whenever the window
    /// forgets a send.
    pub fn evicted(&self) -> u64 {
        self.popped
    }

    /// Sends remembered.
    fn len(&self) -> usize {
        self.sends.len()
    }

    /// The sender seq of the oldest send.
    fn oldest_seq(&self) -> Option<u64> {
        self.sends.front().map(|(_, _, sender_seq)| *sender_seq)
    }

    fn push(&mut self, client_msg_id: String, msg_id: u64, sender_seq: u64) {
        let n = self.popped + self.sends.len() as u64;
        let hash = Self::hash(&client_msg_id);
        let (sends, popped) = (&self.sends, self.popped);
        let id_of = |n: u64| &*sends[(n - popped) as usize].0;
        match self.index.entry(
            hash,
            |known| id_of(*known) == client_msg_id,
            |known| Self::hash(id_of(*known)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut known) => *known.get_mut() = n,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(n);
            }
        }
        self.sends
            .push_back((client_msg_id.into_boxed_str(), msg_id, sender_seq));
    }

    fn pop_oldest(&mut self) {
        let n = self.popped;
        let Some((client_msg_id, _, _)) = self.sends.front() else {
            return;
        };
        // The index names this send unless the same id was remembered again since.
        if let Ok(entry) = self
            .index
            .find_entry(Self::hash(client_msg_id), |known| *known == n)
        {
            entry.remove();
        }
        self.sends.pop_front();
        self.popped += 1;
    }
}

/// Writes waiting for one engine commit, and what committing them makes visible.
#[derive(Debug, Default)]
pub struct Batch {
    /// Every record of the batch, the held cursor records it took included.
    pub writes: WriteBatch,
    pub waiters: Vec<Waiter>,
    /// user -> newest seq written by this batch.
    pub seq_marks: BTreeMap<String, u64>,
    /// Newest msg_id written by this batch (0: none).
    pub msg_id_max: u64,
    /// Store operations in the batch (each counts against `pending_ops_max`).
    pub n_ops: usize,
    /// Bytes of keys and values in `writes` (each counts against `pending_bytes_max`).
    pub n_bytes: usize,
    /// [`State::cursor_writes`] when the held cursor records joined this batch (0: none
    /// did): every cursor write up to it is durable once the batch is.
    pub cursor_writes_upto: u64,
}

/// Cursor records held back from the commit rounds, by key: a device that acks again before
/// they are taken is written once, with its newest cursor. They count against
/// `pending_ops_max` and `pending_bytes_max` like any accepted write.
#[derive(Debug, Default)]
pub struct HeldCursors {
    pub records: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When the oldest of them was acked (`None` when none is held).
    pub since: Option<tokio::time::Instant>,
    /// Bytes of their keys and values.
    pub n_bytes: usize,
}

/// Users [`State::let_users_go`] looks at in a call at least, once the bound is reached.
pub const LET_GO_STEP: usize = 16;

/// Loaded users at which the store makes room for `users_loaded_max` of them (at most
/// [`USERS_RESERVED_MAX`]) at once, instead of growing its table by doubling under the mutex
/// (the doublings before it take up to about 15 ms).
pub const USERS_RESERVE_AT: usize = 1 << 18;

/// Loaded users the store makes room for at most: past it, the table grows by doubling.
pub const USERS_RESERVED_MAX: usize = 1 << 20;

/// Everything under the store's mutex.
#[derive(Debug, Default)]
pub struct State {
    /// Set when a commit failed: allocated seqs now have holes, so nothing more is written.
    pub poisoned: Option<String>,
    /// Newest msg_id handed out; msg_ids are gapless from 1.
    pub allocated_msg_id: u64,
    /// Newest msg_id whose batch is durable: the number of messages stored.
    pub committed_msg_id: u64,
    /// Looked up by name: a hash table (at 100,000 users a tree's search was seventeen
    /// string comparisons, each a cache miss, on every store operation), its entries kept
    /// dense in load order so that [`State::let_users_go`] can walk them a few at a time.
    pub users: IndexMap<String, UserState, FxBuildHasher>,
    /// Where [`State::let_users_go`] looks next (an index into `users`).
    pub users_hand: usize,
    /// `users` has room for the bound's users (see [`USERS_RESERVE_AT`]).
    pub users_reserved: bool,
    /// Writes that let a user go: a dedupe lookup made in the engine with the mutex released
    /// is trusted only if none happened meanwhile (a user let go and loaded again has a new
    /// window, whose eviction count starts again).
    pub users_let_go: u64,
    /// Cursor writes accepted since open, each numbered by this count.
    pub cursor_writes: u64,
    /// Cursor writes up to this number are durable.
    pub cursor_writes_durable: u64,
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// The batch the committer takes next.
    pub pending: Batch,
    /// Cursor records waiting to join a batch (see [`committer`](super::committer)).
    pub held_cursors: HeldCursors,
    /// Every dedupe key held or queued, once complete (see [`filter`](super::filter)).
    pub dedupe_filter: DedupeFilter,
    /// Operations and bytes accepted but not yet durable (pending and in flight).
    pub unsettled_ops: usize,
    pub unsettled_bytes: usize,
    /// The message bound's first refusal was logged.
    pub full_warned: bool,
}

impl State {
    /// Refuses writes after a failed commit.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// When `users_loaded_max` users or more are loaded, lets go of users with nothing on
    /// their way to the disk until fewer are: no seq allocated past its committed one (so its
    /// dedupe window holds only durable sends, which the engine answers for, and no batch in
    /// flight names it) and no cursor record not yet durable (so the engine has its newest
    /// cursors). It looks at a few users a call, walking them round from where it stopped
    /// ([`LET_GO_STEP`] and twice the users over the bound): a sweep of every loaded user at
    /// once held the store's mutex 1.1-1.3 s at a million. Users with writes on their way are
    /// passed over, so more may stay loaded for a while. Call it before an operation loads
    /// its users, never between their loads.
    pub fn let_users_go(&mut self, users_loaded_max: usize) {
        if self.users.len() >= USERS_RESERVE_AT && !self.users_reserved {
            // Room for the bound's users from now on: growing the table at 917,504 users
            // moved every loaded user's entry under the mutex, 49 ms. Made only once this
            // many are loaded: its index (8 bytes a slot, 2^21 slots for a million, in pages
            // touched at random) is 16 MB resident at once, against about 100 MB of these
            // users' own state then (a sixth more) and 26 MB at 65,536 (three fifths more).
            let room = users_loaded_max.min(USERS_RESERVED_MAX);
            self.users.reserve(room.saturating_sub(self.users.len()));
            self.users_reserved = true;
        }
        let over = (self.users.len() + 1).saturating_sub(users_loaded_max);
        if over == 0 {
            return;
        }
        let durable = self.cursor_writes_durable;
        let mut let_go = false;
        for _ in 0..LET_GO_STEP + 2 * over {
            if self.users.len() < users_loaded_max {
                break;
            }
            if self.users_hand >= self.users.len() {
                self.users_hand = 0;
            }
            let (_, user) = self
                .users
                .get_index(self.users_hand)
                .expect("the hand is in range");
            if user.allocated_seq == user.committed_seq && user.last_cursor_write <= durable {
                // The last loaded takes its place, passed over until the next round.
                self.users.swap_remove_index(self.users_hand);
                let_go = true;
            }
            self.users_hand += 1;
        }
        if let_go {
            self.users_let_go += 1;
        }
    }

    /// Loads `user`'s newest seq from the engine the first time the user is touched.
    pub fn load_user<E: Engine>(
        &mut self,
        engine: &E,
        user: &str,
    ) -> Result<&mut UserState, StoreError> {
        let index = match self.users.get_index_of(user) {
            Some(loaded) => loaded,
            None => {
                let seq = committed_seq_in_engine(engine, user)?;
                let state = UserState {
                    allocated_seq: seq,
                    committed_seq: seq,
                    ..UserState::default()
                };
                self.users.insert_full(user.to_owned(), state).0
            }
        };
        Ok(&mut self.users[index])
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

    /// Holds a cursor record for a later commit round, with no one waiting for it; it
    /// replaces one for the same key still held. Returns how many are held.
    pub fn submit_cursor(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        now: tokio::time::Instant,
    ) -> usize {
        let n_bytes = key.len() + value.len();
        self.cursor_writes += 1;
        let held = &mut self.held_cursors;
        if held.records.insert(key, value).is_none() {
            self.unsettled_ops += 1;
            self.unsettled_bytes += n_bytes;
            held.n_bytes += n_bytes;
        }
        held.since.get_or_insert(now);
        held.records.len()
    }

    /// Moves every held cursor record into `batch`'s writes.
    pub fn take_cursors(&mut self, batch: &mut Batch) {
        let held = std::mem::take(&mut self.held_cursors);
        if !held.records.is_empty() {
            batch.cursor_writes_upto = self.cursor_writes;
        }
        batch.n_ops += held.records.len();
        batch.n_bytes += held.n_bytes;
        for (key, value) in held.records {
            batch.writes.put(Partition::Cursors, key, value);
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
        self.cursor_writes_durable = self.cursor_writes_durable.max(batch.cursor_writes_upto);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_finds_what_it_holds_and_forgets_what_it_evicts() {
        let mut user = UserState {
            committed_seq: 1_000,
            ..UserState::default()
        };
        for n in 0..300u64 {
            user.remember_send(format!("d0-{n}"), 10 + n, n + 1, 200);
        }
        // The 100 oldest are evicted (all committed), the 200 newest are found.
        assert_eq!(user.dedupe.len(), 200);
        for n in 0..100u64 {
            assert_eq!(user.dedupe.get(&format!("d0-{n}")), None, "d0-{n}");
        }
        for n in 100..300u64 {
            assert_eq!(
                user.dedupe.get(&format!("d0-{n}")),
                Some((10 + n, n + 1)),
                "d0-{n}"
            );
        }
        assert_eq!(user.dedupe.get("d0-300"), None);
    }

    #[test]
    fn sends_waiting_for_their_commit_stay_past_the_window() {
        let mut user = UserState {
            committed_seq: 2,
            ..UserState::default()
        };
        for n in 0..5u64 {
            user.remember_send(format!("d0-{n}"), n, n + 1, 2);
        }
        // Seqs 3, 4 and 5 are not durable: an evicted id would be looked up in the engine,
        // which does not have it yet. Seqs 1 and 2 are.
        assert_eq!(user.dedupe.len(), 3);
        assert_eq!(user.dedupe.get("d0-1"), None);
        assert_eq!(user.dedupe.get("d0-2"), Some((2, 3)));
    }

    #[test]
    fn an_id_remembered_twice_names_the_newer_send_until_that_one_goes() {
        let mut user = UserState {
            committed_seq: 100,
            ..UserState::default()
        };
        user.remember_send("a".into(), 1, 1, 2);
        user.remember_send("a".into(), 2, 2, 2);
        assert_eq!(user.dedupe.get("a"), Some((2, 2)));
        // The older copy leaves; the newer one still answers.
        user.remember_send("b".into(), 3, 3, 2);
        assert_eq!(user.dedupe.get("a"), Some((2, 2)));
        user.remember_send("c".into(), 4, 4, 2);
        assert_eq!(user.dedupe.get("a"), None);
        assert_eq!(user.dedupe.get("b"), Some((3, 3)));
    }
}
