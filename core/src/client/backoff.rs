//! Reconnect backoff: capped exponential, with jitter added after the cap.
//!
//! Adding the jitter after capping matters: after a server restart every client sits at the
//! cap, and jitter applied before the cap would be clipped away, sending every client back in
//! the same second (the reconnect storm real deployments report most).

use std::time::Duration;

use rand::Rng;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Cap of the exponential part.
    pub max: Duration,
    /// Uniform random delay in [0, jitter_max] added after the cap.
    pub jitter_max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        // Mars waits 0-19 s extra; our cap follows its foreground automatic reconnect (15-30 s).
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter_max: Duration::from_secs(19),
        }
    }
}

/// Consecutive-failure counter turning into delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    n_failures: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            n_failures: 0,
        }
    }

    /// The delay before the next attempt, counting one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let exponent = self.n_failures.min(20);
        self.n_failures = self.n_failures.saturating_add(1);
        let base = self
            .config
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.config.max);
        base + jitter(self.config.jitter_max, rng)
    }

    /// Consecutive failures so far.
    pub fn n_failures(&self) -> u32 {
        self.n_failures
    }

    /// Forgets past failures (after a successful login).
    pub fn reset(&mut self) {
        self.n_failures = 0;
    }
}

/// A uniform random duration in [0, max], at millisecond resolution.
pub fn jitter(max: Duration, rng: &mut impl Rng) -> Duration {
    Duration::from_millis(rng.random_range(0..=max.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn grows_exponentially_to_the_cap_then_jitters_above_it() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            jitter_max: Duration::ZERO,
        };
        let mut backoff = Backoff::new(config);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay(&mut rng).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
        backoff.reset();
        assert_eq!(backoff.next_delay(&mut rng), Duration::from_secs(1));

        // With jitter, delays at the cap spread over [cap, cap + jitter_max].
        let mut backoff = Backoff::new(BackoffConfig {
            jitter_max: Duration::from_secs(19),
            ..config
        });
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        let at_cap: Vec<Duration> = (0..200).map(|_| backoff.next_delay(&mut rng)).collect();
        assert!(
            at_cap
                .iter()
                .all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(27))
        );
        let distinct_seconds: std::collections::BTreeSet<u64> =
            at_cap.iter().map(Duration::as_secs).collect();
        assert!(
            distinct_seconds.len() >= 15,
            "jitter spreads retries: {distinct_seconds:?}"
        );
    }
}
