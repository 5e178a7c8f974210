//! The durable store: [`MemoryStore`](super::MemoryStore)'s semantics on a key/value
//! [`Engine`], with group commit.
//!
//! Memory holds only what assigns ids (next msg_id, each touched user's allocated and
//! committed seq, a bounded recent dedupe window, touched devices' cursors), group
//! membership, loaded whole at open, and the bounded dedupe [`filter`], filled at open. A
//! write allocates its ids under one mutex, queues its records for the [`committer`], and
//! returns once the engine commit holding them is durable; the committer writes everything
//! queued meanwhile in one commit. Reads see committed data only. A loaded user stays loaded
//! (about 100 bytes plus its window and devices) until `users_loaded_max` are, when each write
//! first lets go of a few with nothing on their way to the disk.
//!
//! Modules: [`engine`] (the trait), [`keys`] and [`record`] (the layout), [`state`] (the
//! in-memory part), [`filter`] (the dedupe filter), [`store`] (the `Store` methods), [`mem`]
//! and [`fjall`] (the engines), [`marker`] (an on-disk engine's marker and commit watermark
//! files), [`fjall_check`] (names the damaged file when fjall reports damage by folder only).

mod committer;
mod engine;
mod filter;
mod fjall;
mod fjall_check;
#[doc(hidden)]
pub mod keys;
mod marker;
mod mem;
#[doc(hidden)]
pub mod record;
mod state;
mod stats;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

pub use self::committer::CURSOR_COMMIT_DELAY;
pub use self::engine::{
    BlockingCommit, Engine, EngineError, KeyValue, Partition, WriteBatch, WriteOp,
};
use self::filter::{DedupeFilter, KeyHash};
pub use self::fjall::FjallEngine;
pub use self::mem::MemEngine;
pub use self::record::RecordError;
use self::state::State;
use self::stats::CommitStats;
pub use self::stats::{COMMIT_BUCKETS_US, CommitStatsSnapshot};
use super::{MemoryStoreLimits, StoreError, StoredMessage};

/// Bounds of the durable store. The first four mean what they mean for
/// [`MemoryStoreLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableStoreLimits {
    /// Messages stored in all.
    pub messages_max: u64,
    /// Client message ids per sender kept in memory for dedupe, plus any not yet durable;
    /// older ones are looked up in the engine, so dedupe itself is not limited to the window
    /// (a retry is a duplicate however old, where [`MemoryStore`](super::MemoryStore) stores
    /// a retry older than its window again).
    pub dedupe_window_len: usize,
    /// Bytes of the dedupe filter (`durable/filter.rs`), which tells an append that its client
    /// message id is new without reading the engine: 1.5-3 bytes a message stored (its
    /// layers double), so 32 MiB holds 16.8 million. Past it the filter is dropped and every
    /// id not in its sender's window is read from the engine; below 24 KiB there is no
    /// filter.
    pub dedupe_filter_bytes_max: usize,
    /// Members of one group.
    pub group_members_max: usize,
    /// Groups in all.
    pub groups_max: usize,
    /// Writes (appends, cursor acks, group changes) accepted but not yet durable. At the
    /// limit a write is refused with [`StoreError::Full`] before anything is allocated.
    pub pending_ops_max: usize,
    /// Bytes of records accepted but not yet durable; refused like `pending_ops_max`.
    pub pending_bytes_max: usize,
    /// Bytes of a user, device, group or client message id (they are parts of keys).
    /// Capped at 65,535.
    pub id_bytes_max: usize,
    /// Users kept loaded in memory (their seqs, dedupe window and touched devices' cursors):
    /// at it, a write first lets go of users with nothing on their way to the disk (no seq
    /// allocated past the committed one, no cursor record not yet durable) until fewer are
    /// loaded, looking at a few a write (`state::LET_GO_STEP` and twice the users over the
    /// bound); the next write to such a user loads it again from the engine. So the store
    /// holds this many, and the users one operation loads, and users with writes on their
    /// way for as long as those take.
    pub users_loaded_max: usize,
    /// Planted bug: answer an append as soon as its ids are allocated, before its commit is
    /// durable; a crash in between loses an acked message (tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted_ack_before_commit: bool,
    /// Planted bug: ignore client message ids, so a retried send is stored again (tests
    /// only).
    #[cfg(feature = "planted-bugs")]
    pub planted_skip_dedupe: bool,
    /// Planted bug: trust the dedupe filter without the ids the engine held at open, so a
    /// retry of a send made before a restart is stored again (tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted_dedupe_filter_unfilled: bool,
}

impl DurableStoreLimits {
    /// Cursor records held for a later commit round before a round takes them at once: a
    /// quarter of `pending_ops_max` (at least one), so held cursors never crowd out appends.
    pub fn cursors_held_max(&self) -> usize {
        (self.pending_ops_max / 4).max(1)
    }
}

impl Default for DurableStoreLimits {
    /// [`MemoryStoreLimits`]' defaults, but a short dedupe window (the engine holds every
    /// dedupe record, so the window is only a cache and need not cost 4,096 ids per user) and
    /// no bound on messages: they live in the engine, and what memory holds per message (the
    /// dedupe filter) has its own bound. A store that refused every send after the memory
    /// store's 20 million would stop for good (ids are never reused).
    fn default() -> Self {
        DurableStoreLimits {
            messages_max: u64::MAX,
            dedupe_window_len: 64,
            ..DurableStoreLimits::from(MemoryStoreLimits::default())
        }
    }
}

impl From<MemoryStoreLimits> for DurableStoreLimits {
    /// The same bounds, and the default bounds on writes waiting for the disk and on ids.
    fn from(memory: MemoryStoreLimits) -> Self {
        DurableStoreLimits {
            messages_max: memory.messages_max,
            dedupe_window_len: memory.dedupe_window_len,
            dedupe_filter_bytes_max: 32 << 20,
            group_members_max: memory.group_members_max,
            groups_max: memory.groups_max,
            pending_ops_max: 10_000,
            pending_bytes_max: 64 << 20,
            id_bytes_max: 1_024,
            users_loaded_max: 1_000_000,
            #[cfg(feature = "planted-bugs")]
            planted_ack_before_commit: false,
            #[cfg(feature = "planted-bugs")]
            planted_skip_dedupe: memory.planted_skip_dedupe,
            #[cfg(feature = "planted-bugs")]
            planted_dedupe_filter_unfilled: false,
        }
    }
}

/// The durable [`Store`](super::Store) over engine `E`.
pub struct DurableStore<E: Engine> {
    shared: Arc<Shared<E>>,
    /// The committer; `None` once [`DurableStore::close`] took it.
    committer: Option<Committer>,
    /// The thread filling the dedupe filter from an on-disk engine, while it runs.
    filter_scan: Option<std::thread::JoinHandle<()>>,
}

/// The committer (see [`committer`]): a task, or a thread for an engine whose commit blocks.
enum Committer {
    Task(tokio::task::JoinHandle<()>),
    Thread {
        thread: std::thread::JoinHandle<()>,
        /// Closed when the thread ends.
        done: oneshot::Receiver<()>,
    },
}

/// What the store and its committer share.
struct Shared<E: Engine> {
    engine: Arc<E>,
    limits: DurableStoreLimits,
    epoch: u64,
    state: Mutex<State>,
    /// Whether the committer is a thread ([`Engine::blocking`]) rather than a task.
    on_thread: bool,
    /// The committer task's wake-up.
    wake_committer: Arc<Notify>,
    /// Told of a cursor held without a commit of its own: the committer commits it
    /// `CURSOR_COMMIT_DELAY` after the oldest held one (see `committer`).
    wake_committer_lazily: Arc<Notify>,
    /// The committer thread's wake-up, on `state`'s mutex, and how it sleeps
    /// (`committer::AWAKE`...): a write wakes it only when it sleeps.
    wake_thread: Condvar,
    thread_sleep: AtomicU8,
    /// Set by [`DurableStore::close`]: the committer drains what is queued and stops.
    closing: AtomicBool,
    /// Set when the store is dropped: the committer thread stops without committing more.
    stopping: AtomicBool,
    /// What the engine's commits cost (`stats.rs`), counted by the committer.
    commit_stats: CommitStats,
}

impl<E: Engine> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a broken invariant elsewhere; the state is consistent
        // between operations, which never panic halfway through a change.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the committer that writes are queued (or that the store is closing).
    fn wake_committer(&self) {
        if !self.on_thread {
            self.wake_committer.notify_one();
        } else if self.thread_sleep.load(Ordering::Relaxed) != committer::AWAKE {
            self.wake_thread.notify_one();
        }
    }

    /// Tells the committer that a cursor is held: it needs to know only if it sleeps
    /// without a deadline.
    fn wake_committer_lazily(&self) {
        if !self.on_thread {
            self.wake_committer_lazily.notify_one();
        } else if self.thread_sleep.load(Ordering::Relaxed) == committer::ASLEEP {
            self.wake_thread.notify_one();
        }
    }
}

impl<E: Engine> Drop for DurableStore<E> {
    fn drop(&mut self) {
        // Like a crash: writes not yet durable are lost, and no waiter is answered.
        self.shared.stopping.store(true, Ordering::Relaxed);
        // At most the page it reads: then the engine is let go of.
        if let Some(scan) = self.filter_scan.take() {
            let _ = scan.join();
        }
        match self.committer.take() {
            Some(Committer::Task(task)) => task.abort(),
            Some(Committer::Thread { thread, .. }) => {
                // Under the lock, so the thread is either past its check or asleep.
                drop(self.shared.lock());
                self.shared.wake_thread.notify_one();
                // At most the commit it is in: then the engine is let go of, as by a task.
                let _ = thread.join();
            }
            None => {}
        }
    }
}

/// Dedupe keys read per page when the filter is filled at open; the store's mutex is held
/// only while a page's keys are inserted.
const FILTER_SCAN_PAGE: usize = 1_024;

/// Fills the dedupe filter with the key of every dedupe record in the engine, then lets it
/// answer. An in-memory engine (the simulator's) is read here, before the store takes
/// writes; an on-disk one on a thread of its own, returned, so that opening a large store
/// does not wait for it (until it is done, every id not in a window is read from the
/// engine, as without a filter). Keys written meanwhile are inserted by their appends, so
/// the scan needs no snapshot: a key present at open is found by some page.
fn fill_dedupe_filter<E: Engine>(
    shared: &Arc<Shared<E>>,
) -> Result<Option<std::thread::JoinHandle<()>>, StoreError> {
    #[cfg(feature = "planted-bugs")]
    if shared.limits.planted_dedupe_filter_unfilled {
        shared.lock().dedupe_filter.mark_complete();
        return Ok(None);
    }
    // Saturated before any insert: the bound is below the first layer, so there is no filter.
    if shared.lock().dedupe_filter.is_saturated() {
        return Ok(None);
    }
    if !shared.on_thread {
        let mut start = Vec::new();
        while fill_filter_page(shared, &mut start)? {}
        shared.lock().dedupe_filter.mark_complete();
        return Ok(None);
    }
    let weak = Arc::downgrade(shared);
    let thread = std::thread::Builder::new()
        .name("imlab-dedupe-scan".into())
        .spawn(move || {
            let began = std::time::Instant::now();
            let mut start = Vec::new();
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if shared.stopping.load(Ordering::Relaxed) || shared.closing.load(Ordering::Relaxed)
                {
                    return;
                }
                match fill_filter_page(&shared, &mut start) {
                    Ok(true) => continue,
                    Ok(false) => {
                        let mut state = shared.lock();
                        state.dedupe_filter.mark_complete();
                        if state.dedupe_filter.is_saturated() {
                            // It said so when it reached the bound.
                            return;
                        }
                        tracing::info!(
                            keys = state.dedupe_filter.keys(),
                            bytes = state.dedupe_filter.bytes(),
                            ms = began.elapsed().as_millis() as u64,
                            "dedupe filter filled: new client message ids no longer read \
                             the engine"
                        );
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(
                            engine = shared.engine.name(),
                            "cannot fill the dedupe filter, so every client message id not \
                             in its sender's window is read from the engine: {error}"
                        );
                        return;
                    }
                }
            }
        })
        .map_err(|error| {
            StoreError::Unavailable(format!("cannot start the dedupe filter's scan: {error}"))
        })?;
    Ok(Some(thread))
}

/// Inserts the next page of dedupe keys from `start` on, and moves `start` past it; false
/// when it was the last, or when the filter reached its bound (reading the rest of a store
/// too large for it would be for nothing).
fn fill_filter_page<E: Engine>(
    shared: &Shared<E>,
    start: &mut Vec<u8>,
) -> Result<bool, StoreError> {
    let page = shared
        .engine
        .scan(Partition::Dedupe, start, None, FILTER_SCAN_PAGE)?;
    let hashes: Vec<KeyHash> = page.iter().map(|(key, _)| KeyHash::of(key)).collect();
    {
        let mut state = shared.lock();
        for hash in hashes {
            state.dedupe_filter.insert(hash);
        }
        if state.dedupe_filter.is_saturated() {
            return Ok(false);
        }
    }
    let Some((last, _)) = page.last() else {
        return Ok(false);
    };
    // The first key after `last`.
    start.clone_from(last);
    start.push(0);
    Ok(page.len() == FILTER_SCAN_PAGE)
}

fn corrupt(error: RecordError) -> StoreError {
    StoreError::from(EngineError::Corrupt(error))
}

impl From<EngineError> for StoreError {
    fn from(error: EngineError) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

impl<E: Engine> DurableStore<E> {
    /// Opens the store kept in `engine`. An engine that was never written gets the epoch
    /// `epoch_if_new` (the caller's clock in unix ms), made durable before this returns; an
    /// existing store keeps the epoch it was created with. Spawns the committer task, so
    /// this must run inside a tokio runtime (in the simulator: inside the server's host).
    pub async fn open(
        engine: Arc<E>,
        limits: DurableStoreLimits,
        epoch_if_new: u64,
    ) -> Result<DurableStore<E>, StoreError> {
        let limits = DurableStoreLimits {
            id_bytes_max: limits.id_bytes_max.min(keys::ID_BYTES_MAX),
            ..limits
        };
        let epoch = match engine.get(Partition::Meta, keys::EPOCH_KEY)? {
            Some(value) => record::decode_u64(Partition::Meta, keys::EPOCH_KEY, &value, "epoch")
                .map_err(corrupt)?,
            None => {
                if !engine.scan(Partition::Messages, &[], None, 1)?.is_empty() {
                    return Err(StoreError::Unavailable(format!(
                        "the {} store holds messages but no epoch record: refusing to \
                         start a new generation over old data",
                        engine.name()
                    )));
                }
                let mut batch = WriteBatch::new();
                batch.put(
                    Partition::Meta,
                    keys::EPOCH_KEY.to_vec(),
                    record::encode_u64(epoch_if_new),
                );
                engine.commit(batch).await?;
                epoch_if_new
            }
        };
        let last_msg_id = match engine.last_with_prefix(Partition::Messages, &[])? {
            Some((key, _)) => keys::decode_message_key(&key).map_err(corrupt)?,
            None => 0,
        };
        let state = State {
            allocated_msg_id: last_msg_id,
            committed_msg_id: last_msg_id,
            groups: load_groups(&*engine)?,
            dedupe_filter: DedupeFilter::new(limits.dedupe_filter_bytes_max),
            ..State::default()
        };
        let wake_committer = Arc::new(Notify::new());
        let wake_committer_lazily = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            on_thread: engine.blocking().is_some(),
            engine,
            limits,
            epoch,
            state: Mutex::new(state),
            wake_committer: wake_committer.clone(),
            wake_committer_lazily: wake_committer_lazily.clone(),
            wake_thread: Condvar::new(),
            thread_sleep: AtomicU8::new(committer::AWAKE),
            closing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            commit_stats: CommitStats::default(),
        });
        let filter_scan = fill_dedupe_filter(&shared)?;
        let committer = if shared.on_thread {
            let (done_sender, done) = oneshot::channel::<()>();
            let thread_shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name("imlab-commit".into())
                .spawn(move || {
                    committer::run_on_thread(thread_shared);
                    drop(done_sender);
                })
                .map_err(|error| {
                    StoreError::Unavailable(format!("cannot start the commit thread: {error}"))
                })?;
            Committer::Thread { thread, done }
        } else {
            Committer::Task(tokio::spawn(committer::run(
                Arc::downgrade(&shared),
                wake_committer,
                wake_committer_lazily,
            )))
        };
        Ok(DurableStore {
            shared,
            committer: Some(committer),
            filter_scan,
        })
    }

    /// Commits what is queued, stops the committer and lets go of the engine once the last
    /// handle is gone (an on-disk engine can then be opened again). Dropping the store
    /// instead is a crash: queued writes are lost.
    pub async fn close(mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        // It stops after the page it reads (milliseconds), so the join blocks no longer.
        if let Some(scan) = self.filter_scan.take() {
            let _ = scan.join();
        }
        match self.committer.take() {
            // The task only ends by returning or by being aborted; both are fine here.
            Some(Committer::Task(task)) => {
                self.shared.wake_committer();
                let _ = task.await;
            }
            Some(Committer::Thread { thread, done }) => {
                drop(self.shared.lock());
                self.shared.wake_thread.notify_one();
                // Closed when the thread has returned; joining it then does not block.
                let _ = done.await;
                let _ = thread.join();
            }
            None => {}
        }
    }

    /// Whether the dedupe filter answers "absent" (it is filled and below its bound), so a
    /// test can wait for it.
    #[doc(hidden)]
    pub fn dedupe_filter_active(&self) -> bool {
        self.shared.lock().dedupe_filter.is_active()
    }

    /// Whether the committer thread sleeps with nothing queued and no held cursor to wait
    /// for (always false for a committer task), so a test can act while it does.
    #[doc(hidden)]
    pub fn committer_idle(&self) -> bool {
        self.shared.on_thread
            && self.shared.thread_sleep.load(Ordering::Relaxed) == committer::ASLEEP
    }

    /// The engine, for its counters.
    pub fn engine(&self) -> &Arc<E> {
        &self.shared.engine
    }

    /// The engine commits so far, their records and how long they took (on the disk, each
    /// with its fsync), read without the store's lock.
    pub fn commit_stats(&self) -> CommitStatsSnapshot {
        self.shared.commit_stats.snapshot()
    }

    /// The store's limits.
    pub fn limits(&self) -> DurableStoreLimits {
        self.shared.limits
    }

    /// Users loaded in memory now (see `DurableStoreLimits::users_loaded_max`).
    pub fn loaded_users(&self) -> usize {
        self.shared.lock().users.len()
    }

    /// Whether `user` is loaded in memory now.
    pub fn is_loaded(&self, user: &str) -> bool {
        self.shared.lock().users.contains_key(user)
    }

    /// Messages stored (durable) so far.
    pub fn n_messages(&self) -> u64 {
        self.shared.lock().committed_msg_id
    }

    /// Every user with an inbox entry or a cursor, sorted. For inspection; reads the engine.
    pub fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut users = distinct_ids(&*self.shared.engine, Partition::Inbox)?;
        users.append(&mut distinct_ids(&*self.shared.engine, Partition::Cursors)?);
        Ok(users.into_iter().collect())
    }

    /// A user's whole (durable) inbox as (seq, message), for inspection.
    pub fn inbox(&self, user: &str) -> Result<Vec<(u64, Arc<StoredMessage>)>, StoreError> {
        Ok(self.read_page(user, 0, usize::MAX)?.entries)
    }

    /// A user's durable inbox as (seq, msg_id), as stored (a hole is left for the caller to
    /// find), for inspection: no message is read. The entries up to the user's newest
    /// committed seq, like [`inbox`](Self::inbox).
    pub fn inbox_msg_ids(&self, user: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let max_seq = self.committed_max_seq(user)?;
        let prefix = keys::id_prefix(user);
        let end = match max_seq.checked_add(1) {
            Some(end) => keys::inbox_key(user, end),
            None => keys::prefix_end(&prefix)
                .expect("an id prefix ends in its length or a UTF-8 byte, never 0xFF"),
        };
        self.shared
            .engine
            .scan(Partition::Inbox, &prefix, Some(&end), usize::MAX)?
            .iter()
            .map(|(key, value)| {
                let seq = keys::decode_inbox_seq(&prefix, key).map_err(corrupt)?;
                let msg_id =
                    record::decode_u64(Partition::Inbox, key, value, "msg_id").map_err(corrupt)?;
                Ok((seq, msg_id))
            })
            .collect()
    }

    /// Hands `each` every stored message whose msg_id `wanted` takes, once, in msg_id order,
    /// for inspection: the messages are scanned a page at a time (an engine reads each of its
    /// blocks once), not looked up one by one.
    pub fn messages_where(
        &self,
        mut wanted: impl FnMut(u64) -> bool,
        mut each: impl FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        const PAGE: usize = 1_024;
        let mut start = keys::message_key(0);
        loop {
            let rows = self
                .shared
                .engine
                .scan(Partition::Messages, &start, None, PAGE)?;
            let mut last = None;
            for (key, value) in &rows {
                let msg_id = keys::decode_message_key(key).map_err(corrupt)?;
                if wanted(msg_id) {
                    each(record::decode_message(key, value).map_err(corrupt)?);
                }
                last = Some(msg_id);
            }
            match last.and_then(|last| last.checked_add(1)) {
                Some(next) if rows.len() == PAGE => start = keys::message_key(next),
                _ => return Ok(()),
            }
        }
    }

    fn check_id(&self, what: &str, id: &str) -> Result<(), StoreError> {
        let max = self.shared.limits.id_bytes_max;
        if id.len() > max {
            return Err(StoreError::Full(format!(
                "{what} of {} bytes is over id_bytes_max {max}",
                id.len()
            )));
        }
        Ok(())
    }

    /// Refuses a write of `n_bytes` when the not-yet-durable writes are at a limit.
    fn check_room(&self, state: &State, n_bytes: usize) -> Result<(), StoreError> {
        let limits = &self.shared.limits;
        if state.unsettled_ops >= limits.pending_ops_max {
            return Err(StoreError::Full(format!(
                "{} writes are waiting for the disk, the limit (pending_ops_max)",
                state.unsettled_ops
            )));
        }
        if state.unsettled_ops > 0 && state.unsettled_bytes + n_bytes > limits.pending_bytes_max {
            return Err(StoreError::Full(format!(
                "{} bytes are waiting for the disk and this write adds {n_bytes}, over \
                 pending_bytes_max {}",
                state.unsettled_bytes, limits.pending_bytes_max
            )));
        }
        Ok(())
    }

    /// Waits until the batch of a submitted write is durable.
    async fn wait(receiver: oneshot::Receiver<Result<(), String>>) -> Result<(), StoreError> {
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StoreError::Unavailable(reason)),
            Err(_closed) => Err(StoreError::Unavailable(
                "the store was closed before the write was durable".into(),
            )),
        }
    }
}

/// Every group and its members, from the engine.
fn load_groups<E: Engine>(engine: &E) -> Result<BTreeMap<String, BTreeSet<String>>, StoreError> {
    const PAGE_LEN: usize = 4_096;
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut start = Vec::new();
    loop {
        let page = engine.scan(Partition::Groups, &start, None, PAGE_LEN)?;
        for (key, _) in &page {
            match keys::decode_group_key(key).map_err(corrupt)? {
                keys::GroupKey::Group(group) => {
                    groups.entry(group).or_default();
                }
                keys::GroupKey::Member(group, member) => {
                    let Some(members) = groups.get_mut(&group) else {
                        return Err(corrupt(RecordError::new(
                            Partition::Groups,
                            key,
                            format!("member of group {group:?}, which has no group record"),
                        )));
                    };
                    members.insert(member);
                }
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == PAGE_LEN => {
                start = key.clone();
                start.push(0);
            }
            _ => return Ok(groups),
        }
    }
}

/// The distinct ids leading the keys of `partition`, one seek per id.
fn distinct_ids<E: Engine>(
    engine: &E,
    partition: Partition,
) -> Result<BTreeSet<String>, StoreError> {
    let mut ids = BTreeSet::new();
    let mut start = Vec::new();
    while let Some((key, _)) = engine.scan(partition, &start, None, 1)?.pop() {
        let (id, _) = keys::split_id(partition, &key).map_err(corrupt)?;
        let next = keys::prefix_end(&keys::id_prefix(&id));
        ids.insert(id);
        match next {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(ids)
}
