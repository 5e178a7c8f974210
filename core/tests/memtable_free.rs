//! The vendored lsm-tree's one edit (vendor/README.md): a memtable of at least 1 MiB is freed
//! on a thread of its own, not on the thread that drops its last reference (fjall's flush
//! holding a tree's version lock, or the commit thread inserting the next batch), where
//! freeing a full 64 MiB memtable stalled every write of `imlab serve --data-dir` for about
//! 120 ms. A smaller one is freed where it is dropped, as upstream frees every one.

mod counting_alloc;

use std::time::{Duration, Instant};

use lsm_tree::{InternalValue, Memtable, ValueType};

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

/// Bytes of each record's value (each value is a heap allocation of its own).
const VALUE_BYTES: usize = 512;

/// A memtable of `entries` records.
fn memtable(entries: u64) -> Memtable {
    let table = Memtable::new(1);
    for i in 0..entries {
        table.insert(InternalValue::from_components(
            i.to_be_bytes().to_vec(),
            vec![7u8; VALUE_BYTES],
            i,
            ValueType::Value,
        ));
    }
    table
}

#[test]
fn a_large_memtable_is_freed_on_another_thread() {
    // 4,096 records: 2 MiB of values, past the 1 MiB at which freeing moves.
    let table = memtable(4_096);
    assert!(table.size() >= 2 << 20, "size {}", table.size());
    let values_bytes = 4_096 * VALUE_BYTES;

    let before = counting_alloc::freed_by_all();
    let ((), live, _) = counting_alloc::count(|| drop(table));
    let freed_here = usize::try_from(-live).unwrap_or(0);
    assert!(
        freed_here < 64 << 10,
        "the dropping thread freed {freed_here} bytes of a memtable of {values_bytes} value bytes"
    );

    // The values are freed elsewhere, soon.
    let deadline = Instant::now() + Duration::from_secs(20);
    assert!(
        counting_alloc::wait_until_freed_by_all(before + values_bytes, deadline),
        "20 s after the drop only {} of the memtable's {values_bytes} value bytes were freed",
        counting_alloc::freed_by_all() - before
    );
}

#[test]
fn a_small_memtable_is_freed_where_it_is_dropped() {
    // 512 records: 256 KiB of values, under the 1 MiB.
    let table = memtable(512);
    assert!(table.size() < 1 << 20, "size {}", table.size());

    let ((), live, _) = counting_alloc::count(|| drop(table));
    let freed_here = usize::try_from(-live).unwrap_or(0);
    assert!(
        freed_here >= 512 * VALUE_BYTES,
        "the dropping thread freed only {freed_here} bytes of a memtable of 262,144 value bytes"
    );
}
