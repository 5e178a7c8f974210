//! Hash tables split in shards under one lock, so that no table's doubling moves every entry
//! at once: a table grows by doubling, moving every entry (and hashing its key again) while
//! its owner's lock is held. The in-memory store's users, the server's online users and the
//! load generator's open message records and reorder map are split so (`cargo bench -p
//! imlab-core --bench store_pauses`, `cargo bench -p imlab-loadgen --bench ledger_pauses`).
//!
//! [`ShardedTable`] holds entries that carry their own key (the server's online users, whose
//! name is read from their handles); [`ShardedMap`] is a map from a key to a value over it.
//! Both hash a key once (Fx: fixed and unkeyed, so nothing the simulator runs depends on a
//! random seed) and pick the shard and the slot from that one hash.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxBuildHasher;

/// The shard of `shards` for a key whose Fx hash is `hash`.
///
/// From bits of the hash its shard's table does not use (hashbrown's slot takes the low bits,
/// its tag the top seven), so the keys of one shard do not share the bits their table reads:
/// bits 25 to 56, as a fraction `u` of one.
///
/// The shards' shares are unequal on purpose, rising from the first to the last as 1 to 2 (the
/// shard is `shards * x` for `x` in [0, 1) whose density rises as `1 + x`): shards that fill
/// alike double at about the same total, so equal shares bunch a thousand doublings into a
/// short stretch of growth (`cargo bench -p imlab-core --bench store_pauses`: the slowest
/// 30,000 appends in a row 5 times the median), where these spread them over each doubling of
/// the total.
pub fn shard_of(hash: u64, shards: usize) -> usize {
    let u = f64::from((hash >> 25) as u32) / 4_294_967_296.0;
    // The inverse of the share's distribution: (x + x^2 / 2) / 1.5 = u.
    let x = (1.0 + 3.0 * u).sqrt() - 1.0;
    ((x * shards as f64) as usize).min(shards - 1)
}

/// Shards of a table made by `default()`: at 1,024, a doubling moves a thousandth of the
/// entries (256 left pauses of 9-102 ms at 2 million users, `store_pauses`), and the empty
/// tables cost 32 KB.
pub const SHARDS: usize = 1_024;

/// The hash every sharded table here takes of a key.
pub fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Entries in a fixed number of hash tables, each growing alone; the caller hashes an entry's
/// key (with [`hash_of`]) and says which entry is the one it means.
pub struct ShardedTable<T> {
    shards: Box<[HashTable<T>]>,
    len: usize,
}

impl<T> Default for ShardedTable<T> {
    fn default() -> ShardedTable<T> {
        ShardedTable::new(SHARDS)
    }
}

impl<T> ShardedTable<T> {
    /// `shards` empty tables.
    pub fn new(shards: usize) -> ShardedTable<T> {
        assert!(shards > 0, "a sharded table of no shards");
        ShardedTable {
            shards: (0..shards).map(|_| HashTable::new()).collect(),
            len: 0,
        }
    }

    fn shard(&self, hash: u64) -> usize {
        shard_of(hash, self.shards.len())
    }

    /// The entry of hash `hash` for which `eq` holds.
    pub fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.shards[self.shard(hash)].find(hash, eq)
    }

    /// The entry of hash `hash` for which `eq` holds.
    pub fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let shard = self.shard(hash);
        self.shards[shard].find_mut(hash, eq)
    }

    /// Adds `entry`, of hash `hash`, which no entry of the table equals; `hasher` gives the
    /// hash of the entries its shard moves if it grows.
    pub fn insert_unique(&mut self, hash: u64, entry: T, hasher: impl Fn(&T) -> u64) -> &mut T {
        let shard = self.shard(hash);
        self.len += 1;
        self.shards[shard]
            .insert_unique(hash, entry, hasher)
            .into_mut()
    }

    /// Removes and returns the entry of hash `hash` for which `eq` holds.
    pub fn remove(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<T> {
        let shard = self.shard(hash);
        let (removed, _) = self.shards[shard].find_entry(hash, eq).ok()?.remove();
        self.len -= 1;
        Some(removed)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no order that means anything.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// How many entries each shard holds (how evenly the keys spread).
    pub fn shard_lens(&self) -> Vec<usize> {
        self.shards.iter().map(HashTable::len).collect()
    }

    /// Shards: a walk of the table a shard at a time (a sweep spread over many calls, each
    /// under its owner's lock for a shard's worth) goes from 0 to this.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The entries shard `shard` holds.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.shards[shard].len()
    }

    /// The entries of shard `shard`.
    pub fn shard_iter(&self, shard: usize) -> impl Iterator<Item = &T> {
        self.shards[shard].iter()
    }

    /// Keeps the entries of shard `shard` for which `keep` holds.
    pub fn retain_shard(&mut self, shard: usize, mut keep: impl FnMut(&mut T) -> bool) {
        let table = &mut self.shards[shard];
        let before = table.len();
        table.retain(|entry| keep(entry));
        self.len -= before - table.len();
    }
}

/// A map from `K` to `V` in a [`ShardedTable`].
pub struct ShardedMap<K, V> {
    table: ShardedTable<(K, V)>,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> ShardedMap<K, V> {
        ShardedMap::new(SHARDS)
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map of `shards` tables.
    pub fn new(shards: usize) -> ShardedMap<K, V> {
        ShardedMap {
            table: ShardedTable::new(shards),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.table.find(hash_of(key), |(k, _)| k.borrow() == key);
        found.map(|(_, v)| v)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self
            .table
            .find_mut(hash_of(key), |(k, _)| k.borrow() == key);
        found.map(|(_, v)| v)
    }

    /// `key`'s entry in its shard's table (one probe), with the map's count, which a vacant
    /// entry's insert must raise.
    fn entry<Q>(&mut self, key: &Q) -> (Entry<'_, (K, V)>, &mut usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        let shard = self.table.shard(hash);
        let ShardedTable { shards, len } = &mut self.table;
        let entry = shards[shard].entry(hash, |(k, _)| k.borrow() == key, |(k, _)| hash_of(k));
        (entry, len)
    }

    /// `key`'s value, made by `make` (with `key` made owned by `own`) if it had none.
    pub fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        own: impl FnOnce(&Q) -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = match self.entry(key) {
            (Entry::Occupied(entry), _) => entry.into_mut(),
            (Entry::Vacant(entry), len) => {
                *len += 1;
                entry.insert((own(key), make())).into_mut()
            }
        };
        &mut entry.1
    }

    /// Sets `key`'s value; returns the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entry(&key) {
            (Entry::Occupied(mut entry), _) => {
                Some(std::mem::replace(&mut entry.get_mut().1, value))
            }
            (Entry::Vacant(entry), len) => {
                *len += 1;
                entry.insert((key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let removed = self.table.remove(hash_of(key), |(k, _)| k.borrow() == key);
        removed.map(|(_, v)| v)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every key, in no order that means anything.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.table.iter().map(|(k, _)| k)
    }

    /// Every value, in no order that means anything.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    /// How many keys each shard holds.
    pub fn shard_lens(&self) -> Vec<usize> {
        self.table.shard_lens()
    }

    /// Shards (see [`ShardedTable::shards`]).
    pub fn shards(&self) -> usize {
        self.table.shards()
    }

    /// The keys shard `shard` holds.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.table.shard_len(shard)
    }

    /// The keys and values of shard `shard`.
    pub fn shard_iter(&self, shard: usize) -> impl Iterator<Item = (&K, &V)> {
        self.table.shard_iter(shard).map(|(k, v)| (k, v))
    }

    /// Keeps the keys of shard `shard` for which `keep` holds.
    pub fn retain_shard(&mut self, shard: usize, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.table.retain_shard(shard, |(k, v)| keep(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's share of `x` in [0, 1): `(x + x^2 / 2) / 1.5`, the distribution `shard_of`
    /// draws from, written out again here.
    fn share_below(x: f64) -> f64 {
        (x + x * x / 2.0) / 1.5
    }

    /// Keys spread over the shards as their shares say (rising from the first shard to the
    /// last as 1 to 2), every shard within six standard deviations of its share, so no shard's
    /// doubling moves many more keys than its share; a shard picked by the hash's top bits,
    /// which its table's tag also reads, leaves most shards empty (planted, it fails here).
    #[test]
    fn keys_spread_over_the_shards_as_their_shares_say() {
        let mut names = ShardedMap::new(1_024);
        let mut pairs = ShardedMap::new(1_024);
        let n = 204_800u32;
        for i in 0..n {
            names.insert(format!("r1733u{i}"), i);
            pairs.insert((i % 1_000, i / 1_000), i);
        }
        for sizes in [names.shard_lens(), pairs.shard_lens()] {
            assert_eq!(sizes.iter().sum::<usize>(), n as usize);
            for (i, size) in sizes.iter().enumerate() {
                let share = share_below((i + 1) as f64 / 1_024.0) - share_below(i as f64 / 1_024.0);
                let expected = f64::from(n) * share;
                assert!(
                    (*size as f64 - expected).abs() <= 6.0 * expected.sqrt(),
                    "shard {i} holds {size} keys where its share is {expected:.0}"
                );
            }
        }
        assert_eq!(names.get("r1733u77"), Some(&77));
        assert_eq!(pairs.get(&(7, 3)), Some(&3_007));
    }

    /// The shards' tables double at totals spread over a doubling of the whole, not together:
    /// the middle half of the totals at which each table first holds 448 keys (512 slots) spans
    /// a fifth of their median or more (a third, by the shares: 1/1.32 to 1/1.80 of the
    /// median's 1/1.58). With equal shares they bunch within a tenth (planted, it fails here).
    #[test]
    fn the_shards_tables_double_at_totals_spread_apart() {
        let mut map: ShardedMap<u32, ()> = ShardedMap::new(1_024);
        let mut doubled_at = vec![0u32; 1_024];
        // 448 keys in each of 1,024 tables take about 460,000 at equal shares (up to 690,000
        // for the smallest share here): 1,048,576 bound the test's time.
        let mut k = 0u32;
        while doubled_at.contains(&0) && k < 1 << 20 {
            let shard = shard_of(hash_of(&k), 1_024);
            map.insert(k, ());
            k += 1;
            if doubled_at[shard] == 0 && map.table.shards[shard].capacity() >= 448 {
                doubled_at[shard] = k;
            }
        }
        let never = doubled_at.iter().filter(|at| **at == 0).count();
        assert_eq!(never, 0, "{never} tables never held 448 keys of {k}");
        doubled_at.sort_unstable();
        let (q1, median, q3) = (doubled_at[256], doubled_at[512], doubled_at[768]);
        let spread = f64::from(q3 - q1) / f64::from(median);
        assert!(
            spread >= 0.2,
            "tables reach 448 keys at totals {q1} to {q3} in their middle half (median {median})"
        );
    }

    /// The map keeps its count through every way a key comes and goes, and a key is found
    /// where it was put whether it came by `insert` or `get_or_insert_with`.
    #[test]
    fn a_map_counts_its_keys_and_finds_each_where_it_was_put() {
        let mut map: ShardedMap<String, u32> = ShardedMap::new(4);
        assert!(map.is_empty());
        assert_eq!(map.insert("a".into(), 1), None);
        assert_eq!(map.insert("a".into(), 2), Some(1));
        *map.get_or_insert_with("b", str::to_owned, || 10) += 1;
        *map.get_or_insert_with("b", str::to_owned, || 100) += 1;
        assert_eq!(
            (map.len(), map.get("a"), map.get("b")),
            (2, Some(&2), Some(&12))
        );
        for i in 0..1_000 {
            map.insert(format!("k{i}"), i);
        }
        assert_eq!(map.len(), 1_002);
        assert_eq!(map.remove("a"), Some(2));
        assert_eq!(map.remove("a"), None);
        for i in 0..1_000 {
            assert_eq!(map.remove(&format!("k{i}")), Some(i), "k{i}");
        }
        assert_eq!(map.len(), 1);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(map.shard_lens().iter().sum::<usize>(), 1);
        // A walk a shard at a time sees every key once, and a shard's retain counts what it
        // let go.
        for i in 0..100 {
            map.insert(format!("k{i}"), i);
        }
        let mut seen: Vec<u32> = (0..map.shards())
            .flat_map(|shard| map.shard_iter(shard).map(|(_, v)| *v).collect::<Vec<_>>())
            .collect();
        seen.sort_unstable();
        let mut expected: Vec<u32> = (0..100).chain([12]).collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        for shard in 0..map.shards() {
            map.retain_shard(shard, |_, v| *v % 2 == 0);
        }
        assert_eq!(map.len(), 51);
        assert_eq!((map.get("k3"), map.get("k4")), (None, Some(&4)));
    }
}
