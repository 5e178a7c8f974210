//! [`Store`] for [`DurableStore`]: each write checks and allocates under the mutex exactly
//! as [`MemoryStore`](crate::store::MemoryStore) does, queues its records, and answers once
//! they are durable; each read answers from committed data.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::engine::{Engine, Partition, WriteBatch};
use super::filter::KeyHash;
use super::state::{self, State};
use super::{DurableStore, corrupt, keys, record};
use crate::proto::Target;
use crate::store::{AppendOutcome, AppendRequest, Store, StoreError, StoredMessage, SyncPage};

/// What an append decided under the lock.
enum Decision {
    /// Stored anew once `wait` is answered.
    New {
        message: StoredMessage,
        sender_seq: u64,
        deliveries: Vec<(String, u64)>,
        wait: tokio::sync::oneshot::Receiver<Result<(), String>>,
    },
    /// A repeat of a stored send; when the original is not durable yet, `wait` is answered
    /// once it is.
    Duplicate {
        msg_id: u64,
        sender_seq: u64,
        wait: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    },
}

impl<E: Engine> DurableStore<E> {
    fn decide_append(&self, request: AppendRequest) -> Result<Decision, StoreError> {
        let shared = &*self.shared;
        let engine = &*shared.engine;
        let limits = &shared.limits;
        #[cfg(feature = "planted-bugs")]
        let skip_dedupe = limits.planted_skip_dedupe;
        #[cfg(not(feature = "planted-bugs"))]
        let skip_dedupe = false;

        let dedupe_key = keys::dedupe_key(&request.from_user, &request.client_msg_id);
        let dedupe_hash = KeyHash::of(&dedupe_key);
        // An id the sender's window lacks and the dedupe filter may hold is looked up in the
        // engine with the mutex released (a read of the disk's tables), then the window is
        // checked again: a send of the same id accepted meanwhile is in it, unless the window
        // evicted sends meanwhile, which only committed sends leave and so a second lookup
        // finds. That one is made under the mutex, so an append takes the lock at most twice.
        // Where the sender's window stood when the engine was asked (users let go, sends the
        // window evicted), and the engine's answer: the original's (msg_id, sender seq).
        type WindowMark = (u64, u64);
        let mut engine_answer: Option<(WindowMark, Option<(u64, u64)>)> = None;
        let (mut state, original, committed_seq) = loop {
            let mut state = shared.lock();
            state.check_writable()?;
            state.let_users_go(limits.users_loaded_max);
            let let_go = state.users_let_go;
            let sender = state.load_user(engine, &request.from_user)?;
            let in_window = sender.dedupe.get(&request.client_msg_id);
            // The window's evictions, and the users let go: a sender let go and loaded again
            // has a new window whose count starts again.
            let evicted = (let_go, sender.dedupe.evicted());
            let committed_seq = sender.committed_seq;
            let original = match (in_window, engine_answer) {
                _ if skip_dedupe => None,
                (Some(found), _) => Some(found),
                // New: the filter holds every key that is stored or queued.
                (None, _) if !state.dedupe_filter.may_hold(dedupe_hash) => None,
                (None, Some((asked_at, found))) if asked_at == evicted => found,
                (None, Some(_)) => self.lookup_dedupe(&dedupe_key)?,
                (None, None) => {
                    drop(state);
                    engine_answer = Some((evicted, self.lookup_dedupe(&dedupe_key)?));
                    continue;
                }
            };
            break (state, original, committed_seq);
        };
        if let Some((msg_id, sender_seq)) = original {
            let wait = if sender_seq > committed_seq {
                self.check_room(&state, 0)?;
                let wait = state.submit(WriteBatch::new(), [], 0);
                shared.wake_committer();
                Some(wait)
            } else {
                None
            };
            return Ok(Decision::Duplicate {
                msg_id,
                sender_seq,
                wait,
            });
        }

        let recipients = crate::store::recipients(&state.groups, &request)?;
        if state.allocated_msg_id >= limits.messages_max {
            let stored = state.allocated_msg_id;
            return Err(crate::store::messages_max_reached(
                stored,
                &mut state.full_warned,
            ));
        }
        // Every engine read happens before anything is allocated, so a failed read leaves
        // no trace.
        let mut deliveries = Vec::with_capacity(recipients.len());
        for user in recipients {
            let seq = state.load_user(engine, &user)?.allocated_seq + 1;
            deliveries.push((user, seq));
        }
        let sender_seq = deliveries
            .iter()
            .find(|(user, _)| *user == request.from_user)
            .map(|(_, seq)| *seq)
            .expect("the sender is always a recipient");
        let msg_id = state.allocated_msg_id + 1;
        let message = StoredMessage {
            msg_id,
            from_user: request.from_user,
            from_device: request.from_device,
            client_msg_id: request.client_msg_id,
            to: request.to,
            body: request.body,
            server_time_ms: request.server_time_ms,
        };
        let mut writes = WriteBatch::new();
        writes.put(
            Partition::Messages,
            keys::message_key(msg_id),
            record::encode_message(&message),
        );
        for (user, seq) in &deliveries {
            writes.put(
                Partition::Inbox,
                keys::inbox_key(user, *seq),
                record::encode_u64(msg_id),
            );
        }
        writes.put(
            Partition::Dedupe,
            dedupe_key,
            record::encode_dedupe(msg_id, sender_seq),
        );
        self.check_room(&state, writes.n_bytes())?;

        state.dedupe_filter.insert(dedupe_hash);
        state.allocated_msg_id = msg_id;
        for (user, seq) in &deliveries {
            let user = state.users.get_mut(user).expect("recipient was loaded");
            assert_eq!(user.allocated_seq + 1, *seq, "seqs are allocated gapless");
            user.allocated_seq = *seq;
        }
        state
            .users
            .get_mut(&message.from_user)
            .expect("sender was loaded")
            .remember_send(
                message.client_msg_id.clone(),
                msg_id,
                sender_seq,
                limits.dedupe_window_len,
            );
        let wait = state.submit(writes, deliveries.iter().cloned(), msg_id);
        drop(state);
        shared.wake_committer();
        Ok(Decision::New {
            message,
            sender_seq,
            deliveries,
            wait,
        })
    }

    /// The (msg_id, sender seq) the engine holds for a dedupe key.
    fn lookup_dedupe(&self, dedupe_key: &[u8]) -> Result<Option<(u64, u64)>, StoreError> {
        match self.shared.engine.get(Partition::Dedupe, dedupe_key)? {
            Some(value) => Ok(Some(
                record::decode_dedupe(dedupe_key, &value).map_err(corrupt)?,
            )),
            None => Ok(None),
        }
    }

    /// The committed newest seq of `user`.
    pub(super) fn committed_max_seq(&self, user: &str) -> Result<u64, StoreError> {
        if let Some(user) = self.shared.lock().users.get(user) {
            return Ok(user.committed_seq);
        }
        // Not loaded means no write touched the user since open, or it was let go with
        // nothing on its way to the disk: the engine is current either way.
        state::committed_seq_in_engine(&*self.shared.engine, user)
    }

    /// A message record by id.
    fn read_message(&self, msg_id: u64) -> Result<Arc<StoredMessage>, StoreError> {
        let key = keys::message_key(msg_id);
        match self.shared.engine.get(Partition::Messages, &key)? {
            Some(value) => Ok(Arc::new(
                record::decode_message(&key, &value).map_err(corrupt)?,
            )),
            None => Err(StoreError::Unavailable(format!(
                "message {msg_id} is referenced but missing from the {} store",
                self.shared.engine.name()
            ))),
        }
    }

    /// Up to `limit` committed entries of `user`'s inbox after `after_seq`.
    pub(super) fn read_page(
        &self,
        user: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<SyncPage, StoreError> {
        let max_seq = self.committed_max_seq(user)?;
        if after_seq >= max_seq || limit == 0 {
            return Ok(SyncPage {
                entries: Vec::new(),
                max_seq,
            });
        }
        let prefix = keys::id_prefix(user);
        let start = keys::inbox_key(user, after_seq + 1);
        let end = match max_seq.checked_add(1) {
            Some(end) => keys::inbox_key(user, end),
            None => keys::prefix_end(&prefix)
                .expect("an id prefix ends in its length or a UTF-8 byte, never 0xFF"),
        };
        let rows = self
            .shared
            .engine
            .scan(Partition::Inbox, &start, Some(&end), limit)?;
        let mut entries = Vec::with_capacity(rows.len());
        for (i, (key, value)) in rows.iter().enumerate() {
            let seq = keys::decode_inbox_seq(&prefix, key).map_err(corrupt)?;
            if seq != after_seq + 1 + i as u64 {
                return Err(StoreError::Unavailable(format!(
                    "inbox of {user:?} has a hole: seq {seq} where {} belongs",
                    after_seq + 1 + i as u64
                )));
            }
            let msg_id =
                record::decode_u64(Partition::Inbox, key, value, "msg_id").map_err(corrupt)?;
            entries.push((seq, self.read_message(msg_id)?));
        }
        let expected = ((max_seq - after_seq) as usize).min(limit);
        if entries.len() != expected {
            return Err(StoreError::Unavailable(format!(
                "inbox of {user:?} ends at seq {} but its newest committed seq is {max_seq}",
                after_seq + entries.len() as u64
            )));
        }
        Ok(SyncPage { entries, max_seq })
    }

    /// Queues `writes` (one group change) and waits until they are durable.
    fn submit_locked(
        &self,
        state: &mut State,
        writes: WriteBatch,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, StoreError> {
        self.check_room(state, writes.n_bytes())?;
        let wait = state.submit(writes, [], 0);
        self.shared.wake_committer();
        Ok(wait)
    }
}

#[async_trait::async_trait]
impl<E: Engine> Store for DurableStore<E> {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.check_id("user id", &request.from_user)?;
        self.check_id("client message id", &request.client_msg_id)?;
        match &request.to {
            Target::Peer(peer) => self.check_id("user id", peer)?,
            Target::Group(group) => self.check_id("group id", group)?,
        }
        match self.decide_append(request)? {
            Decision::New {
                message,
                sender_seq,
                deliveries,
                wait,
            } => {
                #[cfg(feature = "planted-bugs")]
                let skip_wait = self.shared.limits.planted_ack_before_commit;
                #[cfg(not(feature = "planted-bugs"))]
                let skip_wait = false;
                if !skip_wait {
                    Self::wait(wait).await?;
                }
                Ok(AppendOutcome {
                    message: Arc::new(message),
                    sender_seq,
                    deliveries,
                    duplicate: false,
                })
            }
            Decision::Duplicate {
                msg_id,
                sender_seq,
                wait,
            } => {
                if let Some(wait) = wait {
                    Self::wait(wait).await?;
                }
                Ok(AppendOutcome {
                    message: self.read_message(msg_id)?,
                    sender_seq,
                    deliveries: Vec::new(),
                    duplicate: true,
                })
            }
        }
    }

    async fn sync(&self, user: &str, after_seq: u64, limit: usize) -> Result<SyncPage, StoreError> {
        self.read_page(user, after_seq, limit)
    }

    async fn max_seq(&self, user: &str) -> Result<u64, StoreError> {
        self.committed_max_seq(user)
    }

    async fn ack_cursor(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError> {
        self.check_id("user id", user)?;
        self.check_id("device id", device)?;
        let engine = &*self.shared.engine;
        let mut state = self.shared.lock();
        state.check_writable()?;
        state.let_users_go(self.shared.limits.users_loaded_max);
        let user_state = state.load_user(engine, user)?;
        // A device cannot have processed entries it could not read yet.
        let seq = seq.min(user_state.committed_seq);
        let old = match user_state.cursors.get(device) {
            Some(cursor) => *cursor,
            None => state::cursor_in_engine(engine, user, device)?,
        };
        let cursor = old.max(seq);
        if cursor == old {
            // Nothing moved (a login's ack of what the device already had): nothing to write.
            return Ok(cursor);
        }
        let (key, value) = (keys::cursor_key(user, device), record::encode_u64(cursor));
        self.check_room(&state, key.len() + value.len())?;
        // Advisory: held for a later commit, not waited for (see `Store::ack_cursor` and the
        // committer).
        let held = state.submit_cursor(key, value, tokio::time::Instant::now());
        let cursor_write = state.cursor_writes;
        let user_state = state.users.get_mut(user).expect("user was loaded");
        user_state.cursors.insert(device.to_string(), cursor);
        user_state.last_cursor_write = cursor_write;
        drop(state);
        if held >= self.shared.limits.cursors_held_max() {
            self.shared.wake_committer();
        } else {
            self.shared.wake_committer_lazily();
        }
        Ok(cursor)
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        // An acked cursor may still wait for its commit: the loaded user has the newest.
        let loaded = self
            .shared
            .lock()
            .users
            .get(user)
            .and_then(|user_state| user_state.cursors.get(device).copied());
        match loaded {
            Some(cursor) => Ok(cursor),
            None => state::cursor_in_engine(&*self.shared.engine, user, device),
        }
    }

    async fn create_group(
        &self,
        group: &str,
        creator: &str,
        members: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.check_id("group id", group)?;
        self.check_id("user id", creator)?;
        for member in members {
            self.check_id("user id", member)?;
        }
        let limits = &self.shared.limits;
        let (sorted, wait) = {
            let mut state = self.shared.lock();
            state.check_writable()?;
            if state.groups.contains_key(group) {
                return Err(StoreError::GroupExists(group.to_string()));
            }
            if state.groups.len() >= limits.groups_max {
                return Err(StoreError::Full(format!(
                    "{} groups exist, the limit (groups_max)",
                    state.groups.len()
                )));
            }
            let mut set: BTreeSet<String> = members.iter().cloned().collect();
            set.insert(creator.to_string());
            if set.len() > limits.group_members_max {
                return Err(StoreError::Full(format!(
                    "group {group:?} would have {} members, over group_members_max {}",
                    set.len(),
                    limits.group_members_max
                )));
            }
            let mut writes = WriteBatch::new();
            writes.put(Partition::Groups, keys::group_key(group), Vec::new());
            for member in &set {
                writes.put(
                    Partition::Groups,
                    keys::group_member_key(group, member),
                    Vec::new(),
                );
            }
            let wait = self.submit_locked(&mut state, writes)?;
            let sorted = set.iter().cloned().collect();
            state.groups.insert(group.to_string(), set);
            (sorted, wait)
        };
        Self::wait(wait).await?;
        Ok(sorted)
    }

    async fn join_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError> {
        self.check_id("user id", user)?;
        let (sorted, wait) = {
            let mut state = self.shared.lock();
            state.check_writable()?;
            let members = state
                .groups
                .get(group)
                .ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
            if !members.contains(user) && members.len() >= self.shared.limits.group_members_max {
                return Err(StoreError::Full(format!(
                    "group {group:?} has {} members, the limit (group_members_max)",
                    members.len()
                )));
            }
            let mut writes = WriteBatch::new();
            writes.put(
                Partition::Groups,
                keys::group_member_key(group, user),
                Vec::new(),
            );
            let wait = self.submit_locked(&mut state, writes)?;
            let members = state.groups.get_mut(group).expect("group was found");
            members.insert(user.to_string());
            (members.iter().cloned().collect(), wait)
        };
        Self::wait(wait).await?;
        Ok(sorted)
    }

    async fn leave_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let (sorted, wait) = {
            let mut state = self.shared.lock();
            state.check_writable()?;
            let members = state
                .groups
                .get(group)
                .ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
            if !members.contains(user) {
                return Err(StoreError::NotGroupMember {
                    group: group.to_string(),
                    user: user.to_string(),
                });
            }
            let mut writes = WriteBatch::new();
            writes.delete(Partition::Groups, keys::group_member_key(group, user));
            let wait = self.submit_locked(&mut state, writes)?;
            let members = state.groups.get_mut(group).expect("group was found");
            members.remove(user);
            (members.iter().cloned().collect(), wait)
        };
        Self::wait(wait).await?;
        Ok(sorted)
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch
    }
}
