//! The open-loop schedule's clock: wakes the send loop when a planned send is due, within
//! tens of microseconds rather than tokio's millisecond timer.
//!
//! Latency is measured from the planned send time, so a send loop that wakes late adds its
//! lateness to every latency. `tokio::time::sleep_until` rounds a deadline up to the timer
//! wheel's next millisecond, and a parked runtime wakes on `epoll_wait`'s millisecond timeout:
//! a send planned at t left at t + 0..2 ms, which at 2,000 msg/s was most of the measured
//! deliver p50. On Linux the pacer is a `timerfd` in the runtime's own epoll set, armed with
//! the OS's high-resolution timer for the next planned time: the runtime wakes when it fires,
//! and while the runtime is busy its readiness is picked up by the poll the runtime makes
//! anyway. At high rates it fires at most once per [`WAKE_GAP_MIN`] and the loop sends every
//! message due by then.
//!
//! It was a thread sleeping to each planned time and waking the loop through a `Notify`: at
//! 12,000 msg/s that thread slept and woke about 3,500 times a second, 7% of a core, and each
//! wake was one more write to the runtime's eventfd (BENCHMARKS.md). Other systems than Linux
//! get tokio's timer (millisecond precision).

use std::io;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Shortest time between two wakes of the send loop: above this rate, messages are sent in
/// small batches rather than each with a wake of its own.
pub const WAKE_GAP_MIN: Duration = Duration::from_micros(200);

/// Wakes a send loop at `start + k / rate` for k = 0, 1, 2...
pub struct Pacer {
    start: Instant,
    rate: f64,
    timer: Timer,
    /// When the timer last woke the loop: the next wake is at least [`WAKE_GAP_MIN`] later.
    last_wake: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate` sends a second from `start`, on `timer` (made before the run's
    /// clients take their files).
    pub fn new(timer: Timer, start: Instant, rate: f64) -> Pacer {
        assert!(rate > 0.0, "a pacer needs a positive rate, got {rate}");
        Pacer {
            start,
            rate,
            timer,
            last_wake: None,
        }
    }

    /// The planned time of send `k`: the one formula the schedule has.
    pub fn planned(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Waits until `planned` has come; false if `stop` was cancelled first. A send already
    /// due returns at once; otherwise the wake comes at `planned`, or [`WAKE_GAP_MIN`] after
    /// the last wake if that is later.
    pub async fn wait_until(&mut self, planned: Instant, stop: &CancellationToken) -> bool {
        if Instant::now() >= planned {
            return true;
        }
        let wake_at = match self.last_wake {
            Some(last) => planned.max(last + WAKE_GAP_MIN),
            None => planned,
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            () = self.timer.sleep_until(wake_at) => {}
        }
        self.last_wake = Some(Instant::now());
        true
    }
}

/// The pacer's timer: a `timerfd` on Linux, registered with the runtime's reactor.
#[cfg(target_os = "linux")]
pub struct Timer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl Timer {
    /// A timer in the current runtime's reactor (one open file).
    pub fn new() -> io::Result<Timer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // Deprecated for types whose descriptor may be closed or swapped while registered;
        // an `OwnedFd` moved into the `AsyncFd` is neither, which is the contract of the
        // `unsafe` replacement (the workspace allows no unsafe code).
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Returns at `at` or later (at once if it has passed).
    pub async fn sleep_until(&mut self, at: Instant) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let now = Instant::now();
        if at <= now {
            return;
        }
        let after = at - now;
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs() as _,
                tv_nsec: after.subsec_nanos() as _,
            },
        };
        // Arming a timerfd with a valid time cannot fail; if it ever did, tokio's timer keeps
        // the schedule at its lower precision.
        if timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &value).is_err() {
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        // The expirations are never read (a system call per wake, one in six of the load
        // generator's a message): the reactor's poll is edge-triggered, so each expiry is
        // reported anew whatever the count, and arming the timer again cancels the one
        // before. This arming expires at `at` or later on the same monotonic clock as
        // `Instant`, so readiness seen before `at` is left from a wait given up before (a
        // cancelled select): cleared, and the wait goes on.
        while let Ok(mut ready) = self.fd.readable_mut().await {
            ready.clear_ready();
            if Instant::now() >= at {
                return;
            }
        }
        // The reactor is gone (the runtime is shutting down).
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The pacer's timer elsewhere: tokio's (millisecond precision).
#[cfg(not(target_os = "linux"))]
pub struct Timer;

#[cfg(not(target_os = "linux"))]
impl Timer {
    /// Tokio's timer needs no file.
    pub fn new() -> io::Result<Timer> {
        Ok(Timer)
    }

    /// Returns at `at` or later, rounded up to tokio's millisecond.
    pub async fn sleep_until(&mut self, at: Instant) {
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time, a real runtime: the timer's whole point is the OS's clock.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_timer_wakes_at_its_time_not_before() {
        runtime().block_on(async {
            let mut timer = Timer::new().unwrap();
            for micros in [50, 300, 1_000, 2_500] {
                let at = Instant::now() + Duration::from_micros(micros);
                timer.sleep_until(at).await;
                let woke = Instant::now();
                assert!(woke >= at, "woke {:?} early for {micros} µs", at - woke);
            }
            // A time that has passed returns at once.
            let past = Instant::now();
            timer.sleep_until(past).await;
        });
    }

    #[test]
    fn a_wait_given_up_leaves_nothing_that_ends_the_next_one_early() {
        runtime().block_on(async {
            let mut timer = Timer::new().unwrap();
            // Given up before its time: the timer fires later, unread. Biased, and far apart:
            // a thread preempted past both times must still take the short sleep (unbiased, a
            // loaded machine once let the timer win the draw).
            let given_up = Instant::now() + Duration::from_millis(20);
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_micros(100)) => {}
                () = timer.sleep_until(given_up) => panic!("the short sleep should win"),
            }
            // Let it fire unread, so its readiness waits in the reactor.
            std::thread::sleep(Duration::from_millis(30));
            let at = Instant::now() + Duration::from_millis(5);
            timer.sleep_until(at).await;
            let woke = Instant::now();
            assert!(woke >= at, "woke {:?} early on the old expiry", at - woke);
        });
    }

    #[test]
    fn the_pacer_sends_what_is_due_at_once_and_spaces_its_wakes() {
        runtime().block_on(async {
            let stop = CancellationToken::new();
            let start = Instant::now();
            // 100,000 a second: a send every 10 µs, far closer than the wake gap.
            let mut pacer = Pacer::new(Timer::new().unwrap(), start, 100_000.0);
            assert_eq!(pacer.planned(0), start);
            assert_eq!(pacer.planned(100_000), start + Duration::from_secs(1));
            // The wakes as the pacer took them (its own clock reading after each timer wake):
            // read from outside, after `wait_until` returns, a preempted thread or a send that
            // fell due between the test's reading and the pacer's would put two readings closer
            // than the wakes were (seen once under CI's load: 2 µs).
            let mut wakes = Vec::new();
            for k in 0..2_000 {
                let planned = pacer.planned(k);
                assert!(pacer.wait_until(planned, &stop).await);
                assert!(Instant::now() >= planned, "send {k} left before its time");
                if let Some(wake) = pacer.last_wake
                    && wakes.last() != Some(&wake)
                {
                    wakes.push(wake);
                }
            }
            // 20 ms of schedule: with a wake per send it would be about 2,000 wakes; spaced by
            // the gap, at most one per 200 µs (about 100).
            assert!(!wakes.is_empty());
            assert!(wakes.len() <= 101, "{} wakes", wakes.len());
            for pair in wakes.windows(2) {
                assert!(
                    pair[1] - pair[0] >= WAKE_GAP_MIN,
                    "wakes {:?} apart",
                    pair[1] - pair[0]
                );
            }
        });
    }

    #[test]
    fn a_cancelled_stop_ends_the_wait() {
        runtime().block_on(async {
            let stop = CancellationToken::new();
            let start = Instant::now();
            let mut pacer = Pacer::new(Timer::new().unwrap(), start, 1.0);
            let planned = pacer.planned(3_600);
            let canceller = stop.clone();
            tokio::spawn(async move { canceller.cancel() });
            assert!(!pacer.wait_until(planned, &stop).await);
            assert!(!pacer.wait_until(planned, &stop).await);
        });
    }
}
