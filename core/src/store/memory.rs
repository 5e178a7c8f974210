//! The in-memory store: the embedded default and the simulator's store.
//!
//! One mutex guards everything, which makes every operation trivially atomic; operations are
//! short (no I/O under the lock). Every map that grows with input has a limit in
//! [`MemoryStoreLimits`]; at a limit the write is refused with [`StoreError::Full`] and nothing
//! already stored is touched.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use hashbrown::HashTable;

use crate::shards::{ShardedMap, hash_of};

use super::{AppendOutcome, AppendRequest, Store, StoreError, StoredMessage, SyncPage};

/// Bounds of the in-memory store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreLimits {
    /// Messages stored in all, across all conversations.
    pub messages_max: u64,
    /// Bytes stored in all: every message's body and names (sender, device, client message
    /// id) and 8 bytes for each inbox entry that points at it. `messages_max` alone let
    /// bodies of up to 64 KiB, or groups of 10,000 members, hold terabytes. 8 GiB by
    /// default, reached before `messages_max` only by such messages (20 million one-to-one
    /// messages of 200 bytes, with names of 30, count about 4.9 GB).
    pub bytes_max: u64,
    /// Client message ids remembered per sender for dedupe. A retry older than this many
    /// later sends of the same user would be stored again; clients keep far fewer in flight.
    pub dedupe_window_len: usize,
    /// Members of one group.
    pub group_members_max: usize,
    /// Groups in all.
    pub groups_max: usize,
    /// Devices of one user whose cursors are kept. A token names a user, not a device, so a
    /// client could make up device ids without end, each ack of a new one an insert into a
    /// sorted list under the store's mutex. Past the bound a new device's acks are answered
    /// but not kept: its cursor reads 0, as a device never seen, which costs it only an
    /// earlier NotifyData fallback (cursors are advisory), and the store warns once. (The
    /// durable store keeps every device's cursor on its disk and only touched devices'
    /// cursors, of users it has loaded, in memory.)
    pub devices_per_user_max: usize,
    /// Planted bug: ignore client message ids (tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted_skip_dedupe: bool,
}

impl Default for MemoryStoreLimits {
    fn default() -> Self {
        MemoryStoreLimits {
            messages_max: 20_000_000,
            bytes_max: 8 << 30,
            dedupe_window_len: 4_096,
            group_members_max: 10_000,
            groups_max: 1_000_000,
            devices_per_user_max: 1_024,
            #[cfg(feature = "planted-bugs")]
            planted_skip_dedupe: false,
        }
    }
}

#[derive(Default)]
struct UserState {
    inbox: Inbox,
    /// Device id and its processed-up-to seq, sorted by device. A sorted list, not a map: a
    /// user has a few devices, and a map's first node (room for 11) cost about 370 bytes a
    /// user. Lookups are binary searches either way.
    cursors: Vec<(Box<str>, u64)>,
    /// The client message ids of the newest `dedupe_window_len` sends.
    dedupe: DedupeWindow,
}

/// Entries in one full chunk of an [`Inbox`]: 32 KiB of pointers.
const INBOX_CHUNK_LEN: usize = 4_096;

/// A user's inbox, entry `i` at seq `i + 1`, in chunks of [`INBOX_CHUNK_LEN`] entries so
/// that it never moves as it grows. As one `Vec` it doubled under the store's lock, which
/// every send and sync of every user waits on: at 8,388,608 entries the append that doubled
/// two such inboxes took 284 ms (`examples/inbox_pause.rs`; the store holds 20 million
/// messages by default, and a member of a busy group gets one entry per message). A
/// user's first chunk grows as a `Vec` does, so a user with a few messages holds no more
/// than before.
#[derive(Default)]
struct Inbox {
    /// Full chunks, oldest first, each exactly `INBOX_CHUNK_LEN` entries.
    full: Vec<Box<[Arc<StoredMessage>]>>,
    /// The entries after them, fewer than `INBOX_CHUNK_LEN`.
    tail: Vec<Arc<StoredMessage>>,
}

impl Inbox {
    fn len(&self) -> usize {
        self.full.len() * INBOX_CHUNK_LEN + self.tail.len()
    }

    /// The entry at seq `seq` (from 1), which must exist.
    fn at(&self, seq: u64) -> &Arc<StoredMessage> {
        let i = (seq - 1) as usize;
        match self.full.get(i / INBOX_CHUNK_LEN) {
            Some(chunk) => &chunk[i % INBOX_CHUNK_LEN],
            None => &self.tail[i - self.full.len() * INBOX_CHUNK_LEN],
        }
    }

    /// Appends an entry; its seq is the new length.
    fn push(&mut self, message: Arc<StoredMessage>) {
        self.tail.push(message);
        if self.tail.len() == INBOX_CHUNK_LEN {
            let next = Vec::with_capacity(INBOX_CHUNK_LEN);
            let chunk = std::mem::replace(&mut self.tail, next);
            self.full.push(chunk.into_boxed_slice());
        }
    }

    /// The entries after seq `after`, oldest first.
    fn after(&self, after: usize) -> impl Iterator<Item = &Arc<StoredMessage>> {
        let chunk = after / INBOX_CHUNK_LEN;
        // The rest of the chunk `after` falls in, the full chunks after it, and the tail.
        let (first, middle, tail): (&[_], &[_], &[_]) = match self.full.get(chunk) {
            Some(entries) => (
                &entries[after % INBOX_CHUNK_LEN..],
                &self.full[chunk + 1..],
                &self.tail,
            ),
            None => {
                let start = after - self.full.len() * INBOX_CHUNK_LEN;
                (&[], &[], self.tail.get(start..).unwrap_or_default())
            }
        };
        (first.iter())
            .chain(middle.iter().flat_map(|chunk| chunk.iter()))
            .chain(tail.iter())
    }
}

/// A sender's newest client message ids, each as its hash and the sender seq its message got.
/// The message is the sender's inbox entry at that seq (this store never trims an inbox), so
/// the id itself is read only where the hashes are equal, and the window evicts its oldest
/// entry by hash and seq without reading the message. The hash is Fx, fixed and unkeyed: a
/// client can make its own ids collide, which costs at most its own window (4,096 ids, at its
/// send budget), nobody else's. 16 bytes an entry in the table and 16 in the order, where
/// the id as a `String` key beside the message and its seq took 40 and 8, and evicting read
/// the oldest message and its id from the heap (`cargo bench -p imlab-core --bench store --
/// memory_append`).
#[derive(Default)]
struct DedupeWindow {
    /// (hash, sender seq) of every id in the window.
    table: HashTable<(u64, u64)>,
    /// The same entries, oldest first: the next one out is at the front.
    order: VecDeque<(u64, u64)>,
}

impl DedupeWindow {
    /// The sender seq of the message `id` (whose hash is `hash`) was stored as, if it is in
    /// the window; `inbox` is the sender's.
    fn get(&self, inbox: &Inbox, hash: u64, id: &str) -> Option<u64> {
        let found = self.table.find(hash, |&(h, seq)| {
            h == hash && inbox.at(seq).client_msg_id == id
        });
        found.map(|&(_, seq)| seq)
    }

    /// Remembers the id hashed `hash`, stored at sender seq `seq`, and evicts the oldest id
    /// past `len_max`.
    fn insert(&mut self, hash: u64, seq: u64, len_max: usize) {
        self.table.insert_unique(hash, (hash, seq), |&(h, _)| h);
        self.order.push_back((hash, seq));
        if self.order.len() > len_max {
            let (hash, seq) = self.order.pop_front().expect("the window is not empty");
            if let Ok(entry) = self.table.find_entry(hash, |&entry| entry == (hash, seq)) {
                entry.remove();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

#[derive(Default)]
struct State {
    n_messages: u64,
    /// Bytes stored, as `MemoryStoreLimits::bytes_max` counts them.
    n_bytes: u64,
    /// The message bound's (or the byte bound's) first refusal was logged.
    full_warned: bool,
    /// A user's device bound was first reached and logged.
    devices_warned: bool,
    /// Every user with an inbox or a cursor, by name, in sharded tables (see `crate::shards`):
    /// one table of every user held the store's lock 2 s as it doubled at 1.8 million users,
    /// and every connection's sends and syncs waited. Each shard grows alone.
    users: ShardedMap<String, UserState>,
    groups: BTreeMap<String, BTreeSet<String>>,
}

/// The in-memory [`Store`].
#[derive(Default)]
pub struct MemoryStore {
    limits: MemoryStoreLimits,
    epoch: u64,
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store with default limits.
    pub fn new() -> MemoryStore {
        MemoryStore::with_limits(MemoryStoreLimits::default())
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: MemoryStoreLimits) -> MemoryStore {
        MemoryStore {
            limits,
            epoch: 1,
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the store's generation (see [`Store::epoch`]): a process that starts with an
    /// empty in-memory store must give it an epoch no earlier process used (`imlab serve`
    /// uses its start time in ms).
    pub fn with_epoch(mut self, epoch: u64) -> MemoryStore {
        self.epoch = epoch;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a broken invariant elsewhere; keep serving the
        // data, which every operation leaves consistent before it can panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Messages stored so far.
    pub fn n_messages(&self) -> u64 {
        self.lock().n_messages
    }

    /// Every user with an inbox or a cursor, sorted. For inspection (tests, the simulator's
    /// checker); copies the names.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.lock().users.keys().cloned().collect();
        users.sort_unstable();
        users
    }

    /// A whole inbox as (seq, message), for inspection.
    pub fn inbox(&self, user: &str) -> Vec<(u64, Arc<StoredMessage>)> {
        self.lock().users.get(user).map_or_else(Vec::new, |user| {
            user.inbox
                .after(0)
                .enumerate()
                .map(|(i, message)| (i as u64 + 1, message.clone()))
                .collect()
        })
    }

    fn append_locked(
        &self,
        state: &mut State,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        #[cfg(feature = "planted-bugs")]
        let skip_dedupe = self.limits.planted_skip_dedupe;
        #[cfg(not(feature = "planted-bugs"))]
        let skip_dedupe = false;
        let id_hash = hash_of(request.client_msg_id.as_str());
        if !skip_dedupe
            && let Some(user) = state.users.get(&request.from_user)
            && let Some(sender_seq) = user
                .dedupe
                .get(&user.inbox, id_hash, &request.client_msg_id)
        {
            return Ok(AppendOutcome {
                message: user.inbox.at(sender_seq).clone(),
                sender_seq,
                deliveries: Vec::new(),
                duplicate: true,
            });
        }
        let recipients = super::recipients(&state.groups, &request)?;
        if state.n_messages >= self.limits.messages_max {
            let stored = state.n_messages;
            return Err(super::messages_max_reached(stored, &mut state.full_warned));
        }
        let bytes = (request.body.len()
            + request.from_user.len()
            + request.from_device.len()
            + request.client_msg_id.len()
            + 8 * recipients.len()) as u64;
        if state.n_bytes.saturating_add(bytes) > self.limits.bytes_max {
            return Err(bytes_max_reached(
                state.n_bytes,
                self.limits.bytes_max,
                &mut state.full_warned,
            ));
        }
        state.n_bytes += bytes;
        state.n_messages += 1;
        let message = Arc::new(StoredMessage {
            msg_id: state.n_messages,
            from_user: request.from_user,
            from_device: request.from_device,
            client_msg_id: request.client_msg_id,
            to: request.to,
            body: request.body,
            server_time_ms: request.server_time_ms,
        });
        let mut deliveries = Vec::with_capacity(recipients.len());
        let mut sender_seq = None;
        for user in recipients {
            let user_state =
                (state.users).get_or_insert_with(user.as_str(), str::to_owned, UserState::default);
            user_state.inbox.push(message.clone());
            let seq = user_state.inbox.len() as u64;
            if user == message.from_user {
                // The sender's window, written while its entry is at hand.
                (user_state.dedupe).insert(id_hash, seq, self.limits.dedupe_window_len);
                sender_seq = Some(seq);
            }
            deliveries.push((user, seq));
        }
        let sender_seq = sender_seq.expect("the sender is always a recipient");
        Ok(AppendOutcome {
            message,
            sender_seq,
            deliveries,
            duplicate: false,
        })
    }
}

/// The refusal of a message the byte bound has no room for, warned about once.
fn bytes_max_reached(stored: u64, max: u64, warned: &mut bool) -> StoreError {
    if !std::mem::replace(warned, true) {
        tracing::warn!(
            stored,
            max,
            "the store is full: {stored} bytes of messages stored, its limit is {max} \
             (--max-stored-bytes); sends that do not fit are refused from now on"
        );
    }
    StoreError::Full(format!(
        "{stored} bytes of messages stored, a message more would pass the limit of {max} \
         (bytes_max)"
    ))
}

fn sorted_members(members: &BTreeSet<String>) -> Vec<String> {
    members.iter().cloned().collect()
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let mut state = self.lock();
        self.append_locked(&mut state, request)
    }

    async fn sync(&self, user: &str, after_seq: u64, limit: usize) -> Result<SyncPage, StoreError> {
        let state = self.lock();
        let Some(user) = state.users.get(user) else {
            return Ok(SyncPage::default());
        };
        let max_seq = user.inbox.len() as u64;
        let start = after_seq.min(max_seq) as usize;
        let entries = user
            .inbox
            .after(start)
            .take(limit)
            .enumerate()
            .map(|(i, message)| ((start + i + 1) as u64, message.clone()))
            .collect();
        Ok(SyncPage { entries, max_seq })
    }

    async fn max_seq(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .users
            .get(user)
            .map_or(0, |user| user.inbox.len() as u64))
    }

    async fn ack_cursor(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError> {
        let mut state = self.lock();
        // Every client acks what its login sync found, 0 for a user with nothing yet. A cursor
        // at 0 is what `cursor` answers for a user or device it has never seen, so such an
        // ack keeps no state: it cost about 300 bytes for every idle user
        // (`bench/conn-memory.sh`).
        let state = &mut *state;
        let Some(user_state) = state.users.get_mut(user) else {
            return Ok(0);
        };
        // A device cannot have processed entries that do not exist.
        let seq = seq.min(user_state.inbox.len() as u64);
        let i = match user_state
            .cursors
            .binary_search_by(|(d, _)| (**d).cmp(device))
        {
            Ok(i) => i,
            Err(_) if seq == 0 => return Ok(0),
            Err(_) if user_state.cursors.len() >= self.limits.devices_per_user_max => {
                if !std::mem::replace(&mut state.devices_warned, true) {
                    tracing::warn!(
                        user,
                        device,
                        "{user} has {} devices with cursors, the limit (devices_per_user_max): \
                         acks of further devices are answered and not kept",
                        user_state.cursors.len()
                    );
                }
                return Ok(seq);
            }
            Err(i) => {
                user_state.cursors.insert(i, (device.into(), 0));
                i
            }
        };
        let cursor = &mut user_state.cursors[i].1;
        *cursor = (*cursor).max(seq);
        Ok(*cursor)
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .users
            .get(user)
            .and_then(|user| {
                let i = user.cursors.binary_search_by(|(d, _)| (**d).cmp(device));
                i.ok().map(|i| user.cursors[i].1)
            })
            .unwrap_or(0))
    }

    async fn create_group(
        &self,
        group: &str,
        creator: &str,
        members: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut state = self.lock();
        if state.groups.contains_key(group) {
            return Err(StoreError::GroupExists(group.to_string()));
        }
        if state.groups.len() >= self.limits.groups_max {
            return Err(StoreError::Full(format!(
                "{} groups exist, the limit (groups_max)",
                state.groups.len()
            )));
        }
        let mut set: BTreeSet<String> = members.iter().cloned().collect();
        set.insert(creator.to_string());
        if set.len() > self.limits.group_members_max {
            return Err(StoreError::Full(format!(
                "group {group:?} would have {} members, over group_members_max {}",
                set.len(),
                self.limits.group_members_max
            )));
        }
        let sorted = sorted_members(&set);
        state.groups.insert(group.to_string(), set);
        Ok(sorted)
    }

    async fn join_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let mut state = self.lock();
        let members = state
            .groups
            .get_mut(group)
            .ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
        if !members.contains(user) && members.len() >= self.limits.group_members_max {
            return Err(StoreError::Full(format!(
                "group {group:?} has {} members, the limit (group_members_max)",
                members.len()
            )));
        }
        members.insert(user.to_string());
        Ok(sorted_members(members))
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn leave_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let mut state = self.lock();
        let members = state
            .groups
            .get_mut(group)
            .ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
        if !members.remove(user) {
            return Err(StoreError::NotGroupMember {
                group: group.to_string(),
                user: user.to_string(),
            });
        }
        Ok(sorted_members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Target;
    use bytes::Bytes;

    fn send(from: &str, id: &str, to: Target) -> AppendRequest {
        AppendRequest {
            from_user: from.into(),
            from_device: "d1".into(),
            client_msg_id: id.into(),
            to,
            body: Bytes::from_static(b"hi"),
            server_time_ms: 7,
        }
    }

    /// The store's users spread over every shard, none past its share by far (a shard taken
    /// from the hash's top bits, which a shard's table also uses, would leave most shards
    /// empty); each user is found in its own.
    #[tokio::test]
    async fn users_spread_evenly_over_the_shards() {
        let store = MemoryStore::new();
        let n = 20_480;
        for i in 0..n {
            let to = Target::Peer(format!("r1733u{}", i + 1));
            store
                .append(send(&format!("r1733u{i}"), "m", to))
                .await
                .unwrap();
        }
        let state = store.lock();
        let sizes = state.users.shard_lens();
        assert_eq!(sizes.iter().sum::<usize>(), n + 1);
        // 20 a shard on average, 13 to 27 by the shards' shares (see `shards::shard_of`):
        // none empty, none past 60.
        let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            *least > 0 && *most <= 60,
            "shards of {least} to {most} users"
        );
        assert_eq!(state.users.get("r1733u77").unwrap().inbox.len(), 2);
    }

    /// Users live in a hash map; the list of them is sorted all the same (the simulator's
    /// invariant checker walks it).
    #[tokio::test]
    async fn users_are_listed_sorted_whatever_order_they_came_in() {
        let store = MemoryStore::new();
        let names: Vec<String> = (0..64).map(|i| format!("u{}", (i * 37) % 64)).collect();
        for (i, name) in names.iter().enumerate() {
            store
                .append(send(name, &format!("m{i}"), Target::Peer(name.clone())))
                .await
                .unwrap();
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(store.users(), sorted);
    }

    #[tokio::test]
    async fn appends_write_gapless_inboxes_and_dedupe() {
        let store = MemoryStore::new();
        let first = store
            .append(send("a", "m1", Target::Peer("b".into())))
            .await
            .unwrap();
        assert_eq!(first.deliveries, vec![("a".into(), 1), ("b".into(), 1)]);
        let second = store
            .append(send("b", "m1", Target::Peer("a".into())))
            .await
            .unwrap();
        assert_eq!(second.deliveries, vec![("a".into(), 2), ("b".into(), 2)]);
        let retry = store
            .append(send("a", "m1", Target::Peer("b".into())))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(
            (retry.sender_seq, retry.message.msg_id),
            (1, first.message.msg_id)
        );
        assert!(retry.deliveries.is_empty());

        let page = store.sync("b", 0, 1).await.unwrap();
        assert_eq!(
            (page.entries.len(), page.max_seq, page.has_more()),
            (1, 2, true)
        );
        let page = store.sync("b", 1, 10).await.unwrap();
        assert_eq!(page.entries[0].0, 2);
        assert!(!page.has_more());
        assert_eq!(store.sync("b", 9, 10).await.unwrap().entries.len(), 0);
        assert_eq!(store.n_messages(), 2);
    }

    /// A sender's window keeps its newest `dedupe_window_len` ids, with received messages
    /// between its sends in its inbox: a retry inside it is answered with the message and seq
    /// it got, one just past it is stored again, the window never holds more, and another
    /// sender's id of the same text is its own.
    #[tokio::test]
    async fn the_dedupe_window_answers_its_newest_ids_and_forgets_the_oldest() {
        let store = MemoryStore::with_limits(MemoryStoreLimits {
            dedupe_window_len: 3,
            ..MemoryStoreLimits::default()
        });
        let mut stored = Vec::new();
        for i in 1..=5 {
            let id = format!("m{i}");
            let sent = store
                .append(send("a", &id, Target::Peer("b".into())))
                .await
                .unwrap();
            // b's message lands in a's inbox between a's sends: a's seqs are 1, 3, 5, 7, 9.
            store
                .append(send("b", &id, Target::Peer("a".into())))
                .await
                .unwrap();
            stored.push((id, sent.sender_seq, sent.message.msg_id));
        }
        assert_eq!(
            stored.iter().map(|(_, seq, _)| *seq).collect::<Vec<_>>(),
            [1, 3, 5, 7, 9]
        );
        for (id, seq, msg_id) in &stored[2..] {
            let retry = store
                .append(send("a", id, Target::Peer("b".into())))
                .await
                .unwrap();
            assert!(retry.duplicate, "{id} is in the window");
            assert_eq!((retry.sender_seq, retry.message.msg_id), (*seq, *msg_id));
            assert_eq!(&retry.message.client_msg_id, id);
        }
        let window_len = |user: &str| store.lock().users.get(user).unwrap().dedupe.len();
        assert_eq!(window_len("a"), 3);
        // m2 left the window when m5 came: its retry is a new message at a's next seq.
        let again = store
            .append(send("a", "m2", Target::Peer("b".into())))
            .await
            .unwrap();
        assert!(!again.duplicate);
        assert_eq!(again.sender_seq, 11);
        assert_eq!(window_len("a"), 3);
        // The window now holds m4, m5 and the new m2: m3 is out, m2 is answered as the new one.
        let retry = store
            .append(send("a", "m2", Target::Peer("b".into())))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.message.msg_id, again.message.msg_id);
        assert!(
            !store
                .append(send("a", "m3", Target::Peer("b".into())))
                .await
                .unwrap()
                .duplicate
        );
        // b sent the same texts: b's own window answers b's retry with b's message.
        let b_retry = store
            .append(send("b", "m5", Target::Peer("a".into())))
            .await
            .unwrap();
        assert!(b_retry.duplicate);
        assert_eq!(b_retry.message.from_user, "b");
        assert_eq!(b_retry.sender_seq, 10);
    }

    fn message(id: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            msg_id: 1,
            from_user: "a".into(),
            from_device: "d1".into(),
            client_msg_id: id.into(),
            to: Target::Peer("b".into()),
            body: Bytes::new(),
            server_time_ms: 0,
        })
    }

    /// An inbox in chunks reads as one sequence: every seq at its place, and every suffix,
    /// from inside a chunk, at a chunk's edges, in the tail and past the end.
    #[test]
    fn an_inbox_in_chunks_reads_every_seq_and_every_suffix_in_order() {
        let n = 3 * INBOX_CHUNK_LEN + 5;
        let mut inbox = Inbox::default();
        for seq in 1..=n {
            inbox.push(message(&seq.to_string()));
            assert_eq!(inbox.len(), seq);
        }
        assert_eq!(inbox.full.len(), 3, "three full chunks and a tail of 5");
        assert_eq!(inbox.tail.len(), 5);
        for seq in 1..=n {
            assert_eq!(inbox.at(seq as u64).client_msg_id, seq.to_string());
        }
        let c = INBOX_CHUNK_LEN;
        for after in [
            0,
            1,
            c - 1,
            c,
            c + 1,
            2 * c + 7,
            3 * c - 1,
            3 * c,
            3 * c + 4,
            n,
        ] {
            let ids: Vec<String> = (inbox.after(after))
                .map(|m| m.client_msg_id.clone())
                .collect();
            let expected: Vec<String> = (after + 1..=n).map(|seq| seq.to_string()).collect();
            assert_eq!(ids, expected, "after {after}");
        }
        assert_eq!(inbox.after(n + 1).count(), 0);
        assert_eq!(inbox.after(10 * c).count(), 0);
    }

    /// The window compares the id itself where two ids' entries share a hash: an entry whose
    /// hash matches but whose message has another id is not a duplicate.
    #[test]
    fn the_dedupe_window_reads_the_id_where_hashes_match() {
        let mut inbox = Inbox::default();
        inbox.push(message("x"));
        inbox.push(message("y"));
        let mut window = DedupeWindow::default();
        // Both ids filed under one hash, as a collision would file them.
        window.insert(42, 1, 10);
        window.insert(42, 2, 10);
        assert_eq!(window.get(&inbox, 42, "x"), Some(1));
        assert_eq!(window.get(&inbox, 42, "y"), Some(2));
        assert_eq!(window.get(&inbox, 42, "z"), None);
        assert_eq!(window.get(&inbox, 7, "x"), None);
        // Evicting the oldest removes that entry, not its hash's other one.
        window.insert(43, 2, 2);
        assert_eq!(window.get(&inbox, 42, "x"), None);
        assert_eq!(window.get(&inbox, 42, "y"), Some(2));
        assert_eq!(window.len(), 2);
    }

    /// A message the byte bound has no room for is refused, nothing stored is touched, and a
    /// retry of a stored message is still answered as one.
    #[tokio::test]
    async fn the_byte_bound_refuses_a_message_that_does_not_fit_and_keeps_the_rest() {
        // "a" + "d1" + "m1" + 100 bytes of body + two inbox entries (a and b): 121 bytes.
        let store = MemoryStore::with_limits(MemoryStoreLimits {
            bytes_max: 250,
            ..MemoryStoreLimits::default()
        });
        let sized = |id: &str, len: usize| AppendRequest {
            body: Bytes::from(vec![b'x'; len]),
            ..send("a", id, Target::Peer("b".into()))
        };
        store.append(sized("m1", 100)).await.unwrap();
        store.append(sized("m2", 100)).await.unwrap();
        // 242 stored: 22 more bytes do not fit, a retry of a stored message is still answered.
        let full = store.append(sized("m3", 1)).await;
        assert!(
            matches!(&full, Err(StoreError::Full(why)) if why.contains("242 bytes") && why.contains("250")),
            "{full:?}"
        );
        let retry = store.append(sized("m2", 100)).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(store.max_seq("b").await.unwrap(), 2);
        assert_eq!(store.n_messages(), 2);
    }

    /// Past `devices_per_user_max` a new device's ack is answered and not kept; the devices
    /// kept go on moving.
    #[tokio::test]
    async fn cursors_of_devices_past_the_bound_are_answered_and_not_kept() {
        let store = MemoryStore::with_limits(MemoryStoreLimits {
            devices_per_user_max: 2,
            ..MemoryStoreLimits::default()
        });
        for id in ["m1", "m2", "m3"] {
            store
                .append(send("b", id, Target::Peer("a".into())))
                .await
                .unwrap();
        }
        assert_eq!(store.ack_cursor("a", "d1", 1).await.unwrap(), 1);
        assert_eq!(store.ack_cursor("a", "d2", 2).await.unwrap(), 2);
        assert_eq!(store.ack_cursor("a", "d3", 3).await.unwrap(), 3);
        assert_eq!(store.cursor("a", "d3").await.unwrap(), 0);
        assert_eq!(store.ack_cursor("a", "d1", 3).await.unwrap(), 3);
        assert_eq!(store.cursor("a", "d1").await.unwrap(), 3);
        assert_eq!(store.cursor("a", "d2").await.unwrap(), 2);
    }

    #[tokio::test]
    #[allow(
        clippy::needless_update,
        reason = "the limits have one more field, the planted-bug switch, with planted-bugs on"
    )]
    async fn limits_refuse_without_touching_stored_data() {
        let store = MemoryStore::with_limits(MemoryStoreLimits {
            messages_max: 1,
            dedupe_window_len: 1,
            group_members_max: 2,
            groups_max: 1,
            ..MemoryStoreLimits::default()
        });
        store
            .append(send("a", "m1", Target::Peer("b".into())))
            .await
            .unwrap();
        let full = store
            .append(send("a", "m2", Target::Peer("b".into())))
            .await;
        assert!(matches!(full, Err(StoreError::Full(_))));
        assert_eq!(store.max_seq("b").await.unwrap(), 1);
        assert!(matches!(
            store
                .create_group("g", "a", &["b".into(), "c".into()])
                .await,
            Err(StoreError::Full(_))
        ));
        store.create_group("g", "a", &["b".into()]).await.unwrap();
        assert!(matches!(
            store.create_group("h", "a", &[]).await,
            Err(StoreError::Full(_))
        ));
        assert!(matches!(
            store.join_group("g", "c").await,
            Err(StoreError::Full(_))
        ));
    }

    #[tokio::test]
    async fn an_ack_that_moves_no_cursor_keeps_no_state() {
        let store = MemoryStore::new();
        // A new user's device acks its empty login sync: nothing to remember.
        assert_eq!(store.ack_cursor("new", "phone", 0).await.unwrap(), 0);
        assert_eq!(store.ack_cursor("new", "phone", 5).await.unwrap(), 0);
        assert!(store.users().is_empty(), "{:?}", store.users());
        assert_eq!(store.cursor("new", "phone").await.unwrap(), 0);
        // A user with an inbox: a second device acking 0 adds no cursor, a real ack does.
        store
            .append(send("a", "new", Target::Peer("new".into())))
            .await
            .unwrap();
        assert_eq!(store.ack_cursor("new", "tablet", 0).await.unwrap(), 0);
        assert!(store.lock().users.get("new").unwrap().cursors.is_empty());
        assert_eq!(store.ack_cursor("new", "phone", 5).await.unwrap(), 1);
        assert_eq!(store.cursor("new", "phone").await.unwrap(), 1);
        assert_eq!(store.cursor("new", "tablet").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn groups_and_cursors() {
        let store = MemoryStore::new();
        assert_eq!(
            store
                .create_group("g", "a", &["c".into(), "b".into()])
                .await
                .unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            store.create_group("g", "a", &[]).await,
            Err(StoreError::GroupExists("g".into()))
        );
        let outcome = store
            .append(send("b", "x", Target::Group("g".into())))
            .await
            .unwrap();
        assert_eq!(outcome.deliveries.len(), 3);
        assert_eq!(
            store
                .append(send("z", "y", Target::Group("g".into())))
                .await
                .unwrap_err(),
            StoreError::NotGroupMember {
                group: "g".into(),
                user: "z".into()
            }
        );
        assert_eq!(
            store
                .append(send("a", "y", Target::Group("nope".into())))
                .await
                .unwrap_err(),
            StoreError::UnknownGroup("nope".into())
        );
        assert_eq!(store.leave_group("g", "c").await.unwrap(), vec!["a", "b"]);
        assert_eq!(
            store.join_group("g", "d").await.unwrap(),
            vec!["a", "b", "d"]
        );
        assert_eq!(
            store.ack_cursor("a", "d1", 5).await.unwrap(),
            1,
            "clamped to inbox"
        );
        assert_eq!(
            store.ack_cursor("a", "d1", 0).await.unwrap(),
            1,
            "never backwards"
        );
        assert_eq!(store.cursor("a", "d1").await.unwrap(), 1);
    }
}
