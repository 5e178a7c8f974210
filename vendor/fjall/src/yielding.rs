// Edit (vendor/README.md, imlab's edit 2): not upstream's.
//
//! A flush that yields the CPU to the process's other threads (Linux).
//!
//! A flush turns a full memtable (64 MiB) into a table: about a third of a core-second of
//! iterating, encoding and writing, which upstream runs on a worker thread at the same
//! priority as everything else. On a server whose cores are nearly busy, that third of a
//! second is taken from the threads serving requests and committing writes, and their queues
//! grow for as long as it lasts. Here a flush runs on a thread of its own in the kernel's
//! idle scheduling class (`SCHED_IDLE`), which runs only when no other thread wants the CPU
//! and is preempted as soon as one does.
//!
//! Off unless asked for (`Builder::flush_idle_for`). The idle class would let a host that is
//! busy with other work starve the flush (and fjall then stalls writes until it ends), so it
//! is bounded: after the time asked for, the waiting worker moves the flush back to the normal
//! class. Moving a thread back needs the privilege to raise a thread's priority (root,
//! `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 or more); a process without it flushes as upstream
//! does, on the worker in the normal class. So does a flush that is behind (another memtable
//! of its keyspace already waiting: `worker_pool.rs` decides).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Flushes (or other work) run in the idle class by [`run`], in this process (for tests).
pub static RUN_AT_IDLE: AtomicU64 = AtomicU64::new(0);

/// Of those, the ones moved back to the normal class after their time was up (for tests).
pub static MOVED_BACK: AtomicU64 = AtomicU64::new(0);

/// Runs `work`: in the idle class on a thread of its own when `idle` and this process may move
/// a thread back (see the module's documentation), moved back to the normal class if it is
/// still running after `idle_for`; otherwise on this thread. `work`'s panic is resumed here.
pub fn run<T: Send>(idle: bool, idle_for: Duration, work: impl FnOnce() -> T + Send) -> T {
    #[cfg(target_os = "linux")]
    if idle && linux::may_move_back() {
        return linux::run_at_idle(idle_for, work);
    }
    let _ = (idle, idle_for);
    work()
}

#[cfg(target_os = "linux")]
mod linux {
    #![expect(unsafe_code, reason = "the scheduling calls have no safe wrapper in std")]

    use super::{Duration, MOVED_BACK, Ordering, RUN_AT_IDLE};
    use std::sync::{mpsc, Mutex, OnceLock};

    /// Sets the scheduling class of thread `tid` (0: the calling thread); true if it did.
    fn set_class(tid: libc::pid_t, policy: libc::c_int) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` that outlives the call.
        unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
    }

    /// The calling thread's scheduling class.
    pub fn class() -> libc::c_int {
        // SAFETY: no pointers; 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Whether a thread of this process may go from the idle class back to the normal one:
    /// tried once, on a thread made for it.
    pub fn may_move_back() -> bool {
        static MAY: OnceLock<bool> = OnceLock::new();
        *MAY.get_or_init(|| {
            std::thread::Builder::new()
                .name("fjall:probe".to_string())
                .spawn(|| set_class(0, libc::SCHED_IDLE) && set_class(0, libc::SCHED_OTHER))
                .ok()
                .and_then(|probe| probe.join().ok())
                .unwrap_or(false)
        })
    }

    pub fn run_at_idle<T: Send>(idle_for: Duration, work: impl FnOnce() -> T + Send) -> T {
        // The work is taken by the helper, or back here if no helper could be made.
        let slot = Mutex::new(Some(work));
        let take = || slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let take = &take;
        std::thread::scope(|scope| {
            let (started, tid) = mpsc::sync_channel::<Option<libc::pid_t>>(1);
            let (done, finished) = mpsc::sync_channel::<()>(1);
            let helper = std::thread::Builder::new()
                .name("fjall:flush".to_string())
                .spawn_scoped(scope, move || {
                    // SAFETY: no arguments; returns the calling thread's id.
                    let me = unsafe { libc::gettid() };
                    let at_idle = set_class(0, libc::SCHED_IDLE);
                    if at_idle {
                        RUN_AT_IDLE.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = started.send(at_idle.then_some(me));
                    let out = take().map(|work| work());
                    drop(done);
                    out
                });
            let Ok(helper) = helper else {
                return take().map(|work| work());
            };
            if let Ok(Some(tid)) = tid.recv() {
                // `Disconnected` once the helper has finished (or panicked): nothing to do.
                if finished.recv_timeout(idle_for) == Err(mpsc::RecvTimeoutError::Timeout)
                    && set_class(tid, libc::SCHED_OTHER)
                {
                    MOVED_BACK.fetch_add(1, Ordering::Relaxed);
                }
            }
            helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .expect("the work is run by the helper or, without one, here")
    }
}

/// The calling thread's scheduling class (for tests): [`IDLE`], [`NORMAL`] or another.
#[cfg(target_os = "linux")]
pub fn class() -> i32 {
    linux::class()
}

/// The idle class (`SCHED_IDLE`).
#[cfg(target_os = "linux")]
pub const IDLE: i32 = libc::SCHED_IDLE;

/// The normal class (`SCHED_OTHER`).
#[cfg(target_os = "linux")]
pub const NORMAL: i32 = libc::SCHED_OTHER;

/// Whether this process may move a thread from the idle class back to the normal one, and so
/// whether [`run`] uses the idle class at all (tried once per process).
#[cfg(target_os = "linux")]
pub fn may_move_back() -> bool {
    linux::may_move_back()
}
