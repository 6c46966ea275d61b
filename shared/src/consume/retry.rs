//! When to try a failed message again.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Lookup};

/// Kept here, where the consumer's fault injection and the services have always found it;
/// it lives with the jitter it feeds.
pub use crate::backoff::random_unit;

/// Exponential backoff with jitter, bounded in delay and in attempts.
///
/// After failed attempt `n` (1-based) the message waits
/// `min(initial_delay * multiplier^(n-1), max_delay)`, spread uniformly by `± jitter` of
/// itself (so retries of many messages that failed together do not return together). After
/// attempt `max_attempts` fails it is dead-lettered as `retries-exhausted`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial_delay: Duration,
    /// Growth per attempt (2.0 doubles).
    pub multiplier: f64,
    /// Upper bound of the nominal delay.
    pub max_delay: Duration,
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// Relative spread, 0.0 to 1.0 (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 1 s doubling to 5 min, ±20 %, 8 attempts (about 4 minutes of retrying in all).
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            max_attempts: 8,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// This policy with what `config` sets of `RETRY_INITIAL_DELAY_MS`, `RETRY_MULTIPLIER`,
    /// `RETRY_MAX_DELAY_MS`, `RETRY_MAX_ATTEMPTS`, `RETRY_JITTER`: a setting left unset keeps
    /// this policy's value, not the kit's default.
    pub fn configured(self, config: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            initial_delay: config.millis("RETRY_INITIAL_DELAY_MS", self.initial_delay)?,
            multiplier: config.parse("RETRY_MULTIPLIER", self.multiplier)?.max(1.0),
            max_delay: config.millis("RETRY_MAX_DELAY_MS", self.max_delay)?,
            max_attempts: config
                .parse("RETRY_MAX_ATTEMPTS", self.max_attempts)?
                .max(1),
            jitter: config.parse("RETRY_JITTER", self.jitter)?.clamp(0.0, 1.0),
        })
    }

    /// The schedule this policy describes.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_delay, self.max_delay)
            .with_multiplier(self.multiplier)
            .with_jitter(self.jitter)
            .with_max_attempts(self.max_attempts)
    }

    /// The delay after failed attempt `attempt` before jitter.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        self.backoff().nominal_delay(attempt)
    }

    /// The delay after failed attempt `attempt`, jitter applied.
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt)
    }

    /// Whether a message whose attempt `attempt` failed may be tried again.
    pub(crate) fn allows_another_attempt(&self, attempt: u32) -> bool {
        self.backoff().allows_another_attempt(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            multiplier: 3.0,
            max_delay: Duration::from_secs(2),
            max_attempts: 5,
            jitter: 0.0,
        };
        assert_eq!(policy.nominal_delay(1), Duration::from_millis(100));
        assert_eq!(policy.nominal_delay(2), Duration::from_millis(300));
        assert_eq!(policy.nominal_delay(3), Duration::from_millis(900));
        assert_eq!(policy.nominal_delay(4), Duration::from_secs(2));
        assert_eq!(policy.delay_after(3), Duration::from_millis(900));
        assert!(policy.allows_another_attempt(4));
        assert!(!policy.allows_another_attempt(5));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let policy = RetryPolicy {
            jitter: 0.25,
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = (0..200).map(|_| policy.delay_after(1)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(750) && *d <= Duration::from_millis(1250))
        );
        assert!(delays.iter().any(|d| *d != delays[0]));
        assert!(
            delays.iter().any(|d| *d < Duration::from_millis(950)),
            "jitter shortens too"
        );
        assert!(
            delays.iter().any(|d| *d > Duration::from_millis(1050)),
            "jitter lengthens too"
        );
    }

    #[test]
    fn random_units_cover_the_whole_interval_evenly() {
        let draws: Vec<f64> = (0..20_000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        for decile in 0..10 {
            let low = f64::from(decile) / 10.0;
            let share = draws
                .iter()
                .filter(|u| **u >= low && **u < low + 0.1)
                .count() as f64
                / draws.len() as f64;
            assert!((share - 0.1).abs() < 0.02, "decile {decile} holds {share}");
        }
    }
}
