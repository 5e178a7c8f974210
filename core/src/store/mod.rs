//! The store behind the server: messages, per-user inboxes with gapless seqs, device cursors,
//! groups and the send-dedupe window.
//!
//! The server is store-first: a message is acked to its sender only after [`Store::append`]
//! returned, and every recipient's inbox entry exists before any delivery is attempted. The
//! trait is async so that a durable store can batch concurrent appends into one commit (group
//! commit) and answer each caller once its batch is durable.

mod durable;
mod memory;

use std::sync::Arc;

use bytes::Bytes;

pub use durable::{
    BlockingCommit, COMMIT_BUCKETS_US, CURSOR_COMMIT_DELAY, CommitStatsSnapshot, DurableStore,
    DurableStoreLimits, Engine, EngineError, FjallEngine, KeyValue, MemEngine, Partition,
    RecordError, WriteBatch, WriteOp,
};
/// The durable store's on-disk layout, public (hidden) so the store bench writes records
/// exactly as the store does.
#[doc(hidden)]
pub use durable::{keys as durable_keys, record as durable_record};
pub use memory::{MemoryStore, MemoryStoreLimits};

use crate::proto::{self, Target};

/// A message as stored once, shared by every inbox that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server-wide id, strictly increasing in store order.
    pub msg_id: u64,
    /// Sender.
    pub from_user: String,
    /// The sender's device.
    pub from_device: String,
    /// The sender's id for this message; unique per sender user.
    pub client_msg_id: String,
    /// The conversation.
    pub to: Target,
    /// Opaque payload.
    pub body: Bytes,
    /// Wall-clock time the server accepted the message.
    pub server_time_ms: u64,
}

impl StoredMessage {
    /// The wire form of this message at position `seq` of some inbox.
    pub fn to_proto(&self, seq: u64) -> proto::Message {
        proto::Message {
            seq,
            msg_id: self.msg_id,
            from_user: self.from_user.clone(),
            from_device: self.from_device.clone(),
            client_msg_id: self.client_msg_id.clone(),
            to: Some(self.to.to_message_to()),
            body: self.body.clone(),
            server_time_ms: self.server_time_ms,
        }
    }
}

/// A send to be stored.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Sender.
    pub from_user: String,
    /// Sender's device.
    pub from_device: String,
    /// Sender's id for the message; a repeat within the dedupe window is not stored again.
    pub client_msg_id: String,
    /// The conversation.
    pub to: Target,
    /// Payload.
    pub body: Bytes,
    /// Server wall-clock time of acceptance.
    pub server_time_ms: u64,
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// The stored message (the original one, for a duplicate).
    pub message: Arc<StoredMessage>,
    /// The message's seq in the sender's own inbox.
    pub sender_seq: u64,
    /// Every inbox the message was written to by this call, as (user, seq), sorted by user.
    /// Empty for a duplicate: the original call wrote them.
    pub deliveries: Vec<(String, u64)>,
    /// True when `client_msg_id` was already stored and nothing new was written.
    pub duplicate: bool,
}

/// A page of one inbox.
#[derive(Debug, Clone, Default)]
pub struct SyncPage {
    /// Entries with seq greater than the requested `after_seq`, in seq order.
    pub entries: Vec<(u64, Arc<StoredMessage>)>,
    /// The inbox's newest seq.
    pub max_seq: u64,
}

impl SyncPage {
    /// True when the inbox holds entries past this page.
    pub fn has_more(&self) -> bool {
        self.entries
            .last()
            .map(|(seq, _)| *seq)
            .unwrap_or(self.max_seq)
            < self.max_seq
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The group does not exist.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// The user is not in the group.
    #[error("user {user:?} is not a member of group {group:?}")]
    NotGroupMember {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// A group with this id exists already.
    #[error("group {0:?} exists already")]
    GroupExists(String),
    /// A bound was reached; nothing was written.
    #[error("store is full: {0}")]
    Full(String),
    /// The store failed (I/O, corruption); nothing was acked.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The server's storage. Implementations must make every method atomic: an append is either
/// entirely visible (message, every inbox entry, the dedupe record) or not at all.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a message and writes it to every recipient's inbox (and the sender's), assigning
    /// each the next seq of that inbox. A `client_msg_id` already stored for this sender
    /// returns the original outcome with `duplicate: true`.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` entries of `user`'s inbox after `after_seq`, in order.
    async fn sync(&self, user: &str, after_seq: u64, limit: usize) -> Result<SyncPage, StoreError>;

    /// The newest seq of `user`'s inbox (0 when empty).
    async fn max_seq(&self, user: &str) -> Result<u64, StoreError>;

    /// Moves a device's cursor forward to `seq` (never backward) and returns the cursor.
    /// Cursors are advisory (a device re-syncs from its own newest seq, and dedupes by seq),
    /// so a store may make them durable later than it returns (the durable store holds them
    /// up to `CURSOR_COMMIT_DELAY`); one lost in a crash only makes a device receive again
    /// what it had.
    async fn ack_cursor(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError>;

    /// A device's cursor (0 when the device never acked).
    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError>;

    /// Creates a group with `creator` and `members`; returns the sorted member list.
    async fn create_group(
        &self,
        group: &str,
        creator: &str,
        members: &[String],
    ) -> Result<Vec<String>, StoreError>;

    /// Adds `user` to a group; returns the sorted member list.
    async fn join_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError>;

    /// Removes `user` from a group; returns the sorted member list.
    async fn leave_group(&self, group: &str, user: &str) -> Result<Vec<String>, StoreError>;

    /// The store's generation: changes whenever the store's contents are replaced rather than
    /// extended (an in-memory store recreated after a crash), never otherwise.
    fn epoch(&self) -> u64;
}

/// Who receives `request`, sorted: both sides of a 1:1 chat, or every member of the group
/// (the sender must be one). Shared by both stores.
fn recipients(
    groups: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    request: &AppendRequest,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    match &request.to {
        Target::Peer(peer) => Ok([peer.clone(), request.from_user.clone()].into()),
        Target::Group(group) => {
            let members = groups
                .get(group)
                .ok_or_else(|| StoreError::UnknownGroup(group.clone()))?;
            if !members.contains(&request.from_user) {
                return Err(StoreError::NotGroupMember {
                    group: group.clone(),
                    user: request.from_user.clone(),
                });
            }
            Ok(members.clone())
        }
    }
}

/// The refusal of an append past the store's message bound (`messages_max`, `imlab serve
/// --max-messages`); the first one is logged (`warned` remembers it), as every later send
/// is refused too.
pub(crate) fn messages_max_reached(stored: u64, warned: &mut bool) -> StoreError {
    if !std::mem::replace(warned, true) {
        tracing::warn!(
            stored,
            "the store is full: {stored} messages stored, its limit (--max-messages); every \
             send is refused from now on"
        );
    }
    StoreError::Full(format!(
        "{stored} messages stored, the limit (messages_max)"
    ))
}
