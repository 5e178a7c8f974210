//! The vendored fjall's second edit (vendor/README.md): a flush that is not behind runs on a
//! thread of its own in the kernel's idle scheduling class, so that it takes only CPU time the
//! server's threads leave, and is moved back to the normal class if it runs too long.
#![cfg(target_os = "linux")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fjall::AbstractTree;
use fjall::yielding::{self, IDLE, MOVED_BACK, NORMAL, RUN_AT_IDLE};

/// These tests run as root (CI and the development machines), which may move a thread back
/// from the idle class; a process that may not flushes on the worker, as upstream does, and
/// would test nothing here.
fn assert_privileged() {
    assert!(
        yielding::may_move_back(),
        "run these tests as root (or with CAP_SYS_NICE)"
    );
}

#[test]
fn a_flush_runs_in_the_idle_class_and_its_table_reads_back() {
    assert_privileged();
    let dir = tempfile::tempdir().unwrap();
    let before = RUN_AT_IDLE.load(Ordering::Relaxed);
    {
        let db = fjall::Database::builder(dir.path())
            .flush_idle_for(Duration::from_secs(60))
            .open()
            .unwrap();
        let keyspace = db
            .keyspace("k", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        for i in 0..1_000u32 {
            keyspace.insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
        }
        // Through the worker pool, as a full memtable is.
        keyspace.rotate_memtable_and_wait().unwrap();
        assert!(keyspace.tree.table_count() >= 1, "the flush wrote a table");
    }
    assert!(
        RUN_AT_IDLE.load(Ordering::Relaxed) > before,
        "the flush ran in the idle class"
    );
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let keyspace = db
        .keyspace("k", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(
        keyspace.get(999u32.to_be_bytes()).unwrap().as_deref(),
        Some(&[7u8; 100][..])
    );
}

#[test]
fn work_runs_in_the_idle_class_on_a_thread_of_its_own_and_work_not_asked_runs_here() {
    assert_privileged();
    let here = std::thread::current().id();
    let (class, thread) = yielding::run(true, Duration::from_secs(60), || {
        (yielding::class(), std::thread::current().id())
    });
    assert_eq!(class, IDLE);
    assert_ne!(thread, here);
    // This thread's class is untouched, and work not asked to yield runs here, as it is.
    assert_eq!(yielding::class(), NORMAL);
    let (class, thread) = yielding::run(false, Duration::from_secs(60), || {
        (yielding::class(), std::thread::current().id())
    });
    assert_eq!((class, thread), (NORMAL, here));
}

#[test]
fn work_past_its_time_is_moved_back_to_the_normal_class() {
    assert_privileged();
    let before = MOVED_BACK.load(Ordering::Relaxed);
    let moved_back_within = yielding::run(true, Duration::ZERO, || {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        while yielding::class() == IDLE && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        (yielding::class(), started.elapsed())
    });
    assert_eq!(
        moved_back_within.0, NORMAL,
        "still idle after {:?}",
        moved_back_within.1
    );
    assert_eq!(MOVED_BACK.load(Ordering::Relaxed), before + 1);
}

#[test]
fn a_panic_in_the_work_reaches_the_caller() {
    assert_privileged();
    let caught = std::panic::catch_unwind(|| {
        yielding::run(true, Duration::from_secs(60), || -> u32 {
            panic!("flush failed")
        })
    });
    let panic = caught.expect_err("the panic is resumed");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"flush failed"));
}
