//! The vendored lsm-tree's second edit (vendor/README.md): a table writer asks the kernel to
//! write the table out every 512 KiB as it goes, waiting for the range before, instead of
//! leaving all of it dirty for its closing fsync, which sent a flushed memtable's 58 MB to the
//! device at once while `imlab serve --data-dir`'s journal fsyncs waited behind it.
#![cfg(target_os = "linux")]

use std::sync::atomic::Ordering;

use lsm_tree::table::Writer;
use lsm_tree::table::writer::{WRITEBACK_REQUESTS, WRITEBACK_STEP};
use lsm_tree::{InternalValue, ValueType};

/// Writes a table of `records` records of 512-byte values and returns the writeback requests
/// its writer made before its closing fsync.
fn requests_while_writing(dir: &std::path::Path, id: u64, records: u64) -> u64 {
    let mut writer = Writer::new(dir.join(id.to_string()), id, 0).unwrap();
    let before = WRITEBACK_REQUESTS.load(Ordering::Relaxed);
    for i in 0..records {
        writer
            .write(InternalValue::from_components(
                i.to_be_bytes().to_vec(),
                vec![7u8; 512],
                i,
                ValueType::Value,
            ))
            .unwrap();
    }
    let made = WRITEBACK_REQUESTS.load(Ordering::Relaxed) - before;
    let finished = writer.finish().unwrap();
    assert!(finished.is_some(), "the table was written");
    made
}

#[test]
fn a_table_is_sent_to_the_disk_as_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // 16,384 records of about 530 bytes: 8.3 MiB of data blocks, 16 steps of 512 KiB.
    let made = requests_while_writing(dir.path(), 1, 16_384);
    let steps = (16_384 * 530) / WRITEBACK_STEP;
    assert!(made + 2 >= steps, "{made} requests for {steps} steps");
    assert!(made <= steps + 1, "{made} requests for {steps} steps");
    // A table under one step (plus the writer's 64 KiB buffer) is left to its closing fsync.
    assert_eq!(requests_while_writing(dir.path(), 2, 500), 0);
}
