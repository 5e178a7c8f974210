//! Reconnect backoff: capped exponential, with jitter added after the cap.
//!
//! Adding the jitter after capping matters: after a server restart every client sits at the
//! cap, and jitter applied before the cap would be clipped away, sending every client back in
//! the same second (the reconnect storm real deployments report most).

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

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

/// Consecutive-failure counter turning into delays. It holds only the count: the settings
/// are passed to each [`Backoff::next_delay`] from where they already live (every client's
/// task would otherwise carry a copy of them).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    n_failures: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The delay before the next attempt under `config`, counting one more failure.
    pub fn next_delay(&mut self, config: &BackoffConfig, rng: &mut impl Rng) -> Duration {
        let exponent = self.n_failures.min(20);
        self.n_failures = self.n_failures.saturating_add(1);
        let base = config
            .initial
            .saturating_mul(1u32 << exponent)
            .min(config.max);
        base + jitter(config.jitter_max, rng)
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

/// `ChaCha8Rng::seed_from_u64(seed)` parked as its seed and position: 16 bytes instead of the
/// generator's 320 (most of them its four-block output buffer). Every client core holds one,
/// tens of thousands of them in the load generator and the simulator, and draws from it only
/// for backoff jitter, a few times per connection; each draw rebuilds the generator at the
/// parked position, which yields exactly the words the unparked generator would have.
#[derive(Debug, Clone)]
pub struct ParkedRng {
    seed: u64,
    /// The next word's offset in the stream. A u64 holds 2^64 words, far more than any client
    /// draws; the generator's own counter has 68 bits.
    word_pos: u64,
}

impl ParkedRng {
    /// `ChaCha8Rng::seed_from_u64(seed)`, parked before its first word.
    pub fn new(seed: u64) -> ParkedRng {
        ParkedRng { seed, word_pos: 0 }
    }

    /// Runs `draw` on the generator at the parked position and parks it after the words drawn.
    pub fn with<T>(&mut self, draw: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        if self.word_pos > 0 {
            rng.set_word_pos(u128::from(self.word_pos));
        }
        let drawn = draw(&mut rng);
        self.word_pos = u64::try_from(rng.get_word_pos()).expect("fewer than 2^64 words drawn");
        drawn
    }
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
        let mut backoff = Backoff::new();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay(&config, &mut rng).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
        backoff.reset();
        assert_eq!(
            backoff.next_delay(&config, &mut rng),
            Duration::from_secs(1)
        );

        // With jitter, delays at the cap spread over [cap, cap + jitter_max].
        let config = BackoffConfig {
            jitter_max: Duration::from_secs(19),
            ..config
        };
        let mut backoff = Backoff::new();
        for _ in 0..10 {
            backoff.next_delay(&config, &mut rng);
        }
        let at_cap: Vec<Duration> = (0..200)
            .map(|_| backoff.next_delay(&config, &mut rng))
            .collect();
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

    /// Draws through a parked generator, a few words at a time and across its buffer's
    /// 64-word refills, are the words of one generator drawn without pause.
    #[test]
    fn a_parked_generator_draws_what_the_generator_would() {
        for seed in [0, 42] {
            let mut reference = ChaCha8Rng::seed_from_u64(seed);
            let mut parked = ParkedRng::new(seed);
            // Start off a block boundary.
            let _: u32 = reference.random();
            let _: u32 = parked.with(|rng| rng.random());
            let mut via_parked = Vec::new();
            let mut direct = Vec::new();
            for n in (1..40).cycle().take(200) {
                via_parked.extend(parked.with(|rng| {
                    (0..n)
                        .map(|_| rng.random_range(0..=19_000u64))
                        .collect::<Vec<_>>()
                }));
                direct.extend((0..n).map(|_| reference.random_range(0..=19_000u64)));
            }
            assert!(
                direct.len() > 64 * 10,
                "the draws cross many buffer refills"
            );
            assert_eq!(via_parked, direct, "seed {seed}");
        }
        assert_eq!(std::mem::size_of::<ParkedRng>(), 16);
    }
}
