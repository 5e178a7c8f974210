//! Hash tables split in shards under one lock, so that no table's doubling moves every entry
//! at once: a table grows by doubling, moving every entry (and hashing its key again) while
//! its owner's lock is held. The in-memory store's users, the server's online users and the
//! load generator's open message records are split so (`cargo bench -p imlab-core --bench
//! store_pauses`).

/// The shard of `shards` for a key whose Fx hash is `hash`: bits of the hash its shard's
/// table does not use (hashbrown's slot takes the low bits, its tag the top seven), so the
/// keys of one shard do not share the bits their table reads.
pub fn shard_of(hash: u64, shards: usize) -> usize {
    (hash >> 32) as usize % shards
}
