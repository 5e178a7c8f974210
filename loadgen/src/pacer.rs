//! The open-loop schedule's clock: wakes the send loop when a planned send is due, within
//! tens of microseconds rather than tokio's millisecond timer.
//!
//! Latency is measured from the planned send time, so a send loop that wakes late adds its
//! lateness to every latency. `tokio::time::sleep_until` rounds a deadline up to the timer
//! wheel's next millisecond, and a parked runtime wakes on `epoll_wait`'s millisecond timeout:
//! a send planned at t left at t + 0..2 ms, which at 2,000 msg/s was most of the measured
//! deliver p50. A pacer thread sleeps with the OS's high-resolution timer until the next
//! planned time and wakes the loop through a [`Notify`]; at high rates it wakes at most once
//! per [`WAKE_GAP_MIN`] and the loop sends every message due by then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shortest time between two wakes of the send loop: above this rate, messages are sent in
/// small batches rather than each with a wake of its own.
pub const WAKE_GAP_MIN: Duration = Duration::from_micros(200);

/// Longest the pacer thread sleeps at once, so it notices it is no longer needed.
const SLEEP_MAX: Duration = Duration::from_millis(20);

/// Wakes a send loop at `start + k / rate` for k = 0, 1, 2... until dropped.
pub struct Pacer {
    start: Instant,
    rate: f64,
    shared: Arc<PacerShared>,
    /// The loop's handle (stops the thread when dropped), not the thread's own copy.
    owner: bool,
}

struct PacerShared {
    due: Notify,
    stopped: AtomicBool,
}

impl Pacer {
    /// Starts the pacer's thread for `rate` sends a second from `start`.
    pub fn start(start: Instant, rate: f64) -> Pacer {
        assert!(rate > 0.0, "a pacer needs a positive rate, got {rate}");
        let shared = Arc::new(PacerShared {
            due: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        let pacer = Pacer {
            start,
            rate,
            shared: shared.clone(),
            owner: true,
        };
        let schedule = Pacer {
            start,
            rate,
            shared,
            owner: false,
        };
        std::thread::Builder::new()
            .name("imlab-pacer".into())
            .spawn(move || schedule.run())
            .expect("starting the pacer thread");
        pacer
    }

    /// The planned time of send `k`: the one formula the loop and the pacer share.
    pub fn planned(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Waits until `planned` has come; false if `stop` was cancelled first.
    pub async fn wait_until(&self, planned: Instant, stop: &CancellationToken) -> bool {
        while Instant::now() < planned {
            tokio::select! {
                biased;
                () = stop.cancelled() => return false,
                () = self.shared.due.notified() => {}
            }
        }
        true
    }

    /// The pacer thread: sleep to the next planned send (or the wake gap), wake the loop.
    fn run(self) {
        let mut k = 0u64;
        let mut last_wake = Instant::now();
        while !self.shared.stopped.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wake_at = self.planned(k).max(last_wake + WAKE_GAP_MIN);
            if wake_at > now {
                std::thread::sleep((wake_at - now).min(SLEEP_MAX));
                continue;
            }
            last_wake = now;
            self.shared.due.notify_one();
            // The next send not yet due.
            let elapsed_s = now.saturating_duration_since(self.start).as_secs_f64();
            k = k.max((elapsed_s * self.rate) as u64);
            while self.planned(k) <= now {
                k += 1;
            }
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        if self.owner {
            self.shared.stopped.store(true, Ordering::Relaxed);
        }
    }
}
