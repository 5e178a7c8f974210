//! The key/value engine under [`DurableStore`](super::DurableStore): named partitions of
//! byte keys in byte order, point and range reads, and atomic durable batch commits.
//!
//! The trait is deliberately small so that an in-memory engine for the simulator
//! ([`MemEngine`](super::MemEngine)) and an on-disk one ([`FjallEngine`](super::FjallEngine))
//! both fit. Reads are synchronous (they hit caches and are short); only `commit` is async,
//! because it waits for the disk (or, in the simulator, for simulated fsync time).

use std::future::Future;
use std::path::PathBuf;

use super::record::RecordError;

/// A named set of keys, like a table. Every key of the store lives in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// Store-wide facts: the epoch.
    Meta,
    /// msg_id -> message record.
    Messages,
    /// (user, seq) -> msg_id.
    Inbox,
    /// (sender user, client_msg_id) -> (msg_id, sender seq).
    Dedupe,
    /// (user, device) -> cursor.
    Cursors,
    /// (group) -> existence, (group, member) -> membership.
    Groups,
}

impl Partition {
    /// Every partition, in a fixed order ([`Partition::index`]).
    pub const ALL: [Partition; 6] = [
        Partition::Meta,
        Partition::Messages,
        Partition::Inbox,
        Partition::Dedupe,
        Partition::Cursors,
        Partition::Groups,
    ];

    /// A stable name: the on-disk name of the partition, and what error messages say.
    pub fn name(self) -> &'static str {
        match self {
            Partition::Meta => "meta",
            Partition::Messages => "messages",
            Partition::Inbox => "inbox",
            Partition::Dedupe => "dedupe",
            Partition::Cursors => "cursors",
            Partition::Groups => "groups",
        }
    }

    /// The position of this partition in [`Partition::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// Where.
        partition: Partition,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (nothing happens when it is absent).
    Delete {
        /// Where.
        partition: Partition,
        /// The key.
        key: Vec<u8>,
    },
}

/// Writes applied atomically, in order, by [`Engine::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    n_bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, partition: Partition, key: Vec<u8>, value: Vec<u8>) {
        self.n_bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put {
            partition,
            key,
            value,
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, partition: Partition, key: Vec<u8>) {
        self.n_bytes += key.len();
        self.ops.push(WriteOp::Delete { partition, key });
    }

    /// Moves every write of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.n_bytes += other.n_bytes;
        other.n_bytes = 0;
        self.ops.append(&mut other.ops);
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The writes, in order, by value.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values in the batch.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be opened or created at `path`.
    #[error("cannot open store at {path}: {detail}", path = path.display())]
    Open {
        /// The directory or file at fault.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// A read or a commit failed.
    #[error("{operation} failed: {detail}")]
    Failed {
        /// What was being done ("commit", "read inbox", ...).
        operation: String,
        /// The engine's own message.
        detail: String,
    },
    /// A stored record does not decode.
    #[error(transparent)]
    Corrupt(#[from] RecordError),
}

/// A key/value engine with named partitions, ordered byte keys and atomic durable batches.
///
/// Reads see only committed batches, and see each batch whole or not at all.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name, for messages and results ("mem", "fjall").
    fn name(&self) -> &'static str;

    /// The value of `key`, if any.
    fn get(&self, partition: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// The greatest key starting with `prefix`, with its value.
    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError>;

    /// Up to `limit` keys in `start..end` (`start..` when `end` is `None`), in key order.
    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// Applies `batch` atomically across partitions; returns once it is durable. An error
    /// means the batch may or may not be durable: the caller must stop writing.
    fn commit(&self, batch: WriteBatch) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The engine's blocking commit, if its commit is blocking work (a disk's write and
    /// fsync): the store then commits from a thread of its own, round after round, instead
    /// of handing each round to the runtime's blocking pool and back (two thread wake-ups a
    /// commit). `None` (the default) keeps the committer a task awaiting
    /// [`commit`](Engine::commit), as an engine whose commit waits on the runtime's (in the
    /// simulator, simulated) time needs.
    fn blocking(&self) -> Option<&dyn BlockingCommit> {
        None
    }
}

/// A commit that blocks the calling thread until the batch is durable; what
/// [`Engine::blocking`] returns.
pub trait BlockingCommit {
    /// [`Engine::commit`]'s work, done on the calling thread.
    fn commit_blocking(&self, batch: WriteBatch) -> Result<(), EngineError>;
}
