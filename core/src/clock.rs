//! Injected wall-clock time.
//!
//! The server needs wall-clock time for token expiry and message timestamps. It never reads
//! the system clock itself: `imlab serve` passes [`SystemClock`]; tests and the simulator pass
//! [`TokioClock`], which follows tokio's (possibly paused or simulated) time from a fixed epoch.
//! Timers everywhere use `tokio::time`, which the simulator drives.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn unix_ms(&self) -> u64;
}

/// The operating system's clock, for real servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64
    }
}

/// `epoch_unix_ms` plus the tokio time elapsed since the clock was made. Deterministic under
/// paused tokio time and under turmoil.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_unix_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch_unix_ms` now. Must be called inside a tokio runtime.
    pub fn new(epoch_unix_ms: u64) -> TokioClock {
        TokioClock {
            epoch_unix_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn unix_ms(&self) -> u64 {
        self.epoch_unix_ms + self.start.elapsed().as_millis() as u64
    }
}
