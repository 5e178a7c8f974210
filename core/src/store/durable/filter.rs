//! The dedupe filter: a Bloom filter over the dedupe keys the engine holds or a queued write
//! will hold, so that an append whose client message id is new (nearly every append) learns
//! it without reading the engine. Reading the engine for a key it lacks was a search of
//! fjall's in-memory table (a skiplist of up to 64 MiB: dozens of cache misses) and of every
//! table file's own filter: about a twentieth of `imlab serve --data-dir`'s CPU in a
//! profile, though the filter saved only 1-4% (the lookup had warmed the path its record's
//! insert walks next; `BENCHMARKS.md`).
//!
//! The filter answers "absent" only once it is [complete](DedupeFilter::mark_complete): every
//! key the engine held at open was inserted (by a scan of the dedupe partition, which the
//! store runs at open, on a thread of its own for an engine on disk) and every key written
//! since was inserted when its append was decided, under the store's mutex. Until then, and
//! after it reached its bound, it answers "maybe" and the engine is read as before. It never
//! forgets a key, so a false "absent" needs a key that was never inserted; a "maybe" for a
//! key never inserted (about 1 in 200 new ids) only costs the read it would have cost anyway.
//!
//! Layers: the first holds [`FIRST_LAYER_KEYS`] keys, each next one twice the keys of the one
//! before; a key goes into the newest layer and is looked for in all of them. A layer is
//! blocked (each key sets [`PROBES`] bits of one 64-byte block: one cache line read per layer
//! and lookup) at [`BITS_PER_KEY`] bits a key. The layers grow with the keys, so they are
//! bounded by [`DurableStoreLimits::dedupe_filter_bytes_max`](super::DurableStoreLimits):
//! a layer that would pass it is not made; the filter frees its layers and answers "maybe"
//! from then on (the store reads the engine for every id not in a sender's window, as it did
//! without a filter), and says so in the log once.

use xxhash_rust::xxh3::xxh3_64;

/// Bits of the filter per key it holds.
pub const BITS_PER_KEY: u64 = 12;
/// Bits a key sets in its block.
pub const PROBES: u32 = 8;
/// Keys the first layer holds (24 KiB).
pub const FIRST_LAYER_KEYS: u64 = 1 << 14;

const WORDS_PER_BLOCK: usize = 8;
type Block = [u64; WORDS_PER_BLOCK];
const BLOCK_BYTES: usize = std::mem::size_of::<Block>();
const BLOCK_BITS: u64 = (BLOCK_BYTES * 8) as u64;

/// A key's hash, computed once per append for the lookup and the insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(u64);

impl KeyHash {
    pub fn of(key: &[u8]) -> KeyHash {
        KeyHash(xxh3_64(key))
    }

    /// The bits the key sets in its block: a multiplicative sequence seeded by the hash,
    /// nine top bits per step.
    fn probes(self) -> impl Iterator<Item = (usize, u64)> {
        let mut state = self.0;
        (0..PROBES).map(move |_| {
            state = state
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(0x632B_E59B_D9B4_E019);
            let bit = state >> (64 - BLOCK_BITS.trailing_zeros());
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }
}

struct Layer {
    blocks: Box<[Block]>,
    /// Keys this layer takes before the next one is made.
    capacity: u64,
    len: u64,
}

impl Layer {
    fn with_capacity(capacity: u64) -> Layer {
        let n_blocks = (capacity * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1) as usize;
        Layer {
            blocks: vec![[0u64; WORDS_PER_BLOCK]; n_blocks].into_boxed_slice(),
            capacity,
            len: 0,
        }
    }

    fn bytes(capacity: u64) -> usize {
        ((capacity * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1) as usize) * BLOCK_BYTES
    }

    /// The block of `hash`: its high half scaled to the number of blocks.
    fn block(&self, hash: KeyHash) -> usize {
        (((hash.0 >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    fn insert(&mut self, hash: KeyHash) {
        let block = self.block(hash);
        let block = &mut self.blocks[block];
        for (word, bit) in hash.probes() {
            block[word] |= bit;
        }
        self.len += 1;
    }

    fn may_hold(&self, hash: KeyHash) -> bool {
        let block = &self.blocks[self.block(hash)];
        hash.probes().all(|(word, bit)| block[word] & bit != 0)
    }
}

/// See the module's documentation.
pub struct DedupeFilter {
    layers: Vec<Layer>,
    bytes: usize,
    bytes_max: usize,
    keys: u64,
    complete: bool,
    /// Reached `bytes_max`: holds no layer and answers "maybe" for good.
    saturated: bool,
}

impl std::fmt::Debug for DedupeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupeFilter")
            .field("layers", &self.layers.len())
            .field("keys", &self.keys)
            .field("bytes", &self.bytes)
            .field("complete", &self.complete)
            .field("saturated", &self.saturated)
            .finish()
    }
}

impl Default for DedupeFilter {
    /// A filter that is never used: it answers "maybe" for every key.
    fn default() -> Self {
        DedupeFilter::new(0)
    }
}

impl DedupeFilter {
    /// An empty, incomplete filter of at most `bytes_max` bytes; below the first layer's
    /// size (24 KiB) it is saturated from the start, which turns it off.
    pub fn new(bytes_max: usize) -> DedupeFilter {
        DedupeFilter {
            layers: Vec::new(),
            bytes: 0,
            bytes_max,
            keys: 0,
            complete: false,
            saturated: Layer::bytes(FIRST_LAYER_KEYS) > bytes_max,
        }
    }

    /// Adds a key; makes the next layer when the newest is full, or saturates at the bound.
    pub fn insert(&mut self, hash: KeyHash) {
        if self.saturated {
            return;
        }
        if self
            .layers
            .last()
            .is_none_or(|layer| layer.len >= layer.capacity)
        {
            let capacity = self
                .layers
                .last()
                .map_or(FIRST_LAYER_KEYS, |layer| layer.capacity * 2);
            if self.bytes + Layer::bytes(capacity) > self.bytes_max {
                tracing::warn!(
                    keys = self.keys,
                    bytes = self.bytes,
                    bytes_max = self.bytes_max,
                    "the dedupe filter reached its bound (dedupe_filter_bytes_max): from now \
                     on every client message id not in its sender's window is read from the \
                     store's engine"
                );
                self.saturated = true;
                self.layers = Vec::new();
                self.bytes = 0;
                return;
            }
            self.bytes += Layer::bytes(capacity);
            self.layers.push(Layer::with_capacity(capacity));
        }
        self.layers
            .last_mut()
            .expect("a layer with room was just ensured")
            .insert(hash);
        self.keys += 1;
    }

    /// False only when the key was certainly never inserted and the filter is complete.
    pub fn may_hold(&self, hash: KeyHash) -> bool {
        if !self.complete || self.saturated {
            return true;
        }
        self.layers.iter().any(|layer| layer.may_hold(hash))
    }

    /// Every key the engine held at open has been inserted: "absent" answers may begin.
    pub fn mark_complete(&mut self) {
        self.complete = true;
    }

    /// Whether the filter answers "absent": complete and not saturated.
    pub fn is_active(&self) -> bool {
        self.complete && !self.saturated
    }

    /// Whether it reached its bound (or was off from the start): it answers "maybe" for good,
    /// so inserting more is pointless.
    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// Keys inserted (counted until it saturated).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Bytes of its layers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> KeyHash {
        KeyHash::of(format!("\0\x05u{}d0-{i}", i % 97).as_bytes())
    }

    #[test]
    fn holds_every_inserted_key_across_layers() {
        let mut filter = DedupeFilter::new(64 << 20);
        filter.mark_complete();
        let n = FIRST_LAYER_KEYS * 7 + 5; // four layers: 1, 2 and 4 times the first, and more
        for i in 0..n {
            filter.insert(hash(i));
        }
        assert_eq!(filter.layers.len(), 4);
        assert_eq!(filter.keys(), n);
        assert!(
            (0..n).all(|i| filter.may_hold(hash(i))),
            "a key was forgotten"
        );
    }

    #[test]
    fn says_absent_for_nearly_every_key_never_inserted() {
        let mut filter = DedupeFilter::new(64 << 20);
        filter.mark_complete();
        for i in 0..FIRST_LAYER_KEYS {
            filter.insert(hash(i));
        }
        // A full layer of 12 bits a key, 8 probes in 512-bit blocks: about 0.4% theoretical
        // for a classic Bloom filter, somewhat more blocked; 1.5% is the bound here.
        let tried = 200_000;
        let maybe = (FIRST_LAYER_KEYS..FIRST_LAYER_KEYS + tried)
            .filter(|&i| filter.may_hold(hash(i)))
            .count();
        assert!(
            maybe * 1000 < tried as usize * 15,
            "{maybe} of {tried} new keys were 'maybe'"
        );
    }

    #[test]
    fn answers_maybe_until_complete() {
        let mut filter = DedupeFilter::new(64 << 20);
        filter.insert(hash(1));
        assert!(filter.may_hold(hash(2)), "incomplete, yet said absent");
        filter.mark_complete();
        assert!(!filter.may_hold(hash(2)));
        assert!(filter.may_hold(hash(1)));
    }

    #[test]
    fn at_its_bound_frees_its_layers_and_answers_maybe_for_good() {
        // Room for the first two layers (24 and 48 KiB), not the third.
        let bytes_max = Layer::bytes(FIRST_LAYER_KEYS) * 3;
        let mut filter = DedupeFilter::new(bytes_max);
        filter.mark_complete();
        for i in 0..FIRST_LAYER_KEYS * 3 {
            filter.insert(hash(i));
        }
        assert!(filter.is_active());
        assert_eq!(filter.bytes(), bytes_max);
        let absent = (1_000_000..1_000_100)
            .filter(|&i| !filter.may_hold(hash(i)))
            .count();
        assert!(absent > 90, "still a working filter before the bound");
        filter.insert(hash(FIRST_LAYER_KEYS * 3));
        assert!(!filter.is_active());
        assert_eq!(filter.bytes(), 0);
        assert!(filter.layers.is_empty());
        assert!((1_000_000..1_000_100).all(|i| filter.may_hold(hash(i))));
        filter.insert(hash(7));
        assert_eq!(filter.bytes(), 0, "grew again after saturating");
    }

    #[test]
    fn a_bound_below_the_first_layer_turns_it_off() {
        let mut filter = DedupeFilter::new(Layer::bytes(FIRST_LAYER_KEYS) - 1);
        filter.mark_complete();
        filter.insert(hash(1));
        assert!(!filter.is_active());
        assert!(filter.may_hold(hash(2)));
        assert_eq!(filter.bytes(), 0);
    }
}
