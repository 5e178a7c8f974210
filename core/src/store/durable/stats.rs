//! What the committer's engine commits cost, counted as they happen: commits, records, and
//! how long each commit took (its records written and, on the disk, its fsync) in fixed
//! buckets. An operator whose sends slow down asks first whether the disk is why; `imlab
//! serve` shows these as Prometheus metrics and in its stats line.
//!
//! Fixed buckets in atomics: a commit costs four relaxed additions, and a reader takes a
//! [`CommitStatsSnapshot`] whenever it likes, with no lock shared with the committer. The
//! durations come from the runtime's clock (tokio's `Instant`), as the rest of the committer's
//! timing does, so the simulator's paused clock times its commits too and nothing here reads
//! the wall clock. Nothing reads these counts back into the store: they change no behaviour.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit-time buckets, in microseconds (1-2-5 steps from 50 µs to 1 s);
/// a commit slower than the last lands in the overflow bucket.
pub const COMMIT_BUCKETS_US: [u64; 14] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];

/// Counts of the store's engine commits, shared by the committer and whoever reads them.
#[derive(Debug, Default)]
pub(super) struct CommitStats {
    commits: AtomicU64,
    records: AtomicU64,
    total_us: AtomicU64,
    /// One per bound of [`COMMIT_BUCKETS_US`], then the overflow.
    buckets: [AtomicU64; COMMIT_BUCKETS_US.len() + 1],
}

impl CommitStats {
    /// Counts one engine commit of `records` records that took `took`.
    pub(super) fn record(&self, records: usize, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = COMMIT_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> CommitStatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CommitStatsSnapshot {
            commits: load(&self.commits),
            records: load(&self.records),
            total_us: load(&self.total_us),
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
        }
    }
}

/// The commit counts at one moment ([`DurableStore::commit_stats`](super::DurableStore)).
/// Read without a lock while commits go on, the fields can be a commit apart from each other.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStatsSnapshot {
    /// Engine commits: on the disk, one fsync each.
    pub commits: u64,
    /// Records written by them.
    pub records: u64,
    /// Their durations added up, in microseconds.
    pub total_us: u64,
    /// Commits per bucket of [`COMMIT_BUCKETS_US`] (not cumulative), then those slower than
    /// its last bound.
    pub buckets: [u64; COMMIT_BUCKETS_US.len() + 1],
}

impl CommitStatsSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CommitStatsSnapshot) -> CommitStatsSnapshot {
        CommitStatsSnapshot {
            commits: self.commits.saturating_sub(earlier.commits),
            records: self.records.saturating_sub(earlier.records),
            total_us: self.total_us.saturating_sub(earlier.total_us),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    /// The upper bound, in microseconds, of the bucket holding the `q` quantile of the commit
    /// times (`None` when no commit was counted, or when it is in the overflow bucket: slower
    /// than the last bound).
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile among the commits, 1-based: at least the first.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return COMMIT_BUCKETS_US.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_lands_in_the_first_bucket_its_time_fits_under() {
        let stats = CommitStats::default();
        // On a bound, under it, past it, and past the last one.
        for us in [50, 49, 51, 1_000_000, 1_000_001, 0] {
            stats.record(2, Duration::from_micros(us));
        }
        let snapshot = stats.snapshot();
        let mut expected = [0; COMMIT_BUCKETS_US.len() + 1];
        expected[0] = 3; // 50, 49, 0
        expected[1] = 1; // 51
        expected[13] = 1; // 1 s, the last bound
        expected[14] = 1; // past it
        assert_eq!(snapshot.buckets, expected);
        assert_eq!(snapshot.commits, 6);
        assert_eq!(snapshot.records, 12);
        assert_eq!(snapshot.total_us, 50 + 49 + 51 + 1_000_000 + 1_000_001);
    }

    #[test]
    fn the_quantile_is_the_bound_of_the_bucket_that_holds_it() {
        let stats = CommitStats::default();
        // 98 fast commits, one of 3 ms, one of 30 ms.
        for _ in 0..98 {
            stats.record(1, Duration::from_micros(120));
        }
        stats.record(1, Duration::from_micros(3_000));
        stats.record(1, Duration::from_micros(30_000));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.quantile_bound_us(0.5), Some(200));
        assert_eq!(snapshot.quantile_bound_us(0.98), Some(200));
        assert_eq!(snapshot.quantile_bound_us(0.99), Some(5_000));
        assert_eq!(snapshot.quantile_bound_us(1.0), Some(50_000));
        assert_eq!(CommitStatsSnapshot::default().quantile_bound_us(0.99), None);
        let slow = CommitStats::default();
        slow.record(1, Duration::from_secs(3));
        assert_eq!(slow.snapshot().quantile_bound_us(0.5), None);
    }

    #[test]
    fn an_interval_is_the_difference_of_two_snapshots() {
        let stats = CommitStats::default();
        stats.record(4, Duration::from_micros(150));
        let earlier = stats.snapshot();
        stats.record(6, Duration::from_micros(15_000));
        stats.record(1, Duration::from_micros(150));
        let interval = stats.snapshot().since(&earlier);
        assert_eq!(interval.commits, 2);
        assert_eq!(interval.records, 7);
        assert_eq!(interval.total_us, 15_150);
        assert_eq!(interval.buckets.iter().sum::<u64>(), 2);
        // Only the later 15 ms commit is over 1 ms.
        assert_eq!(interval.quantile_bound_us(1.0), Some(20_000));
        assert_eq!(interval.quantile_bound_us(0.5), Some(200));
    }
}
