//! Exponential backoff with jitter, and waiting that gives way to shutdown or a deadline.
//!
//! One scheme for every wait in the kit: a message's retry delay
//! ([`crate::consume::RetryPolicy`]), a refused outbox row's next attempt
//! ([`crate::RelayConfig`]) and reconnecting to the broker or the database (the reconnect
//! settings of [`crate::BrokerSettings`]).
//!
//! ```
//! # async fn example(shutdown: msgkit::Shutdown) {
//! use std::time::Duration;
//! use msgkit::backoff::{Backoff, wait};
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(0.2);
//! for delay in backoff.delays() {
//!     // ... try something; on success, break ...
//!     if !wait(delay, &shutdown).await {
//!         break; // shutting down
//!     }
//! }
//! # }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// Delays that grow by `multiplier` from `initial` up to `max`, each spread uniformly by
/// `± jitter` of itself so that clients that failed together do not return together.
///
/// The delay after failed attempt `n` (1-based) is
/// `min(initial * multiplier^(n-1), max) * (1 ± jitter)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Growth per attempt (2.0 doubles).
    pub multiplier: f64,
    /// Upper bound of the nominal delay (jitter may exceed it by `jitter` of itself).
    pub max: Duration,
    /// Total attempts, the first included; `None` never gives up.
    pub max_attempts: Option<u32>,
    /// Relative spread, 0.0 to 1.0 (0.2 = ±20 %).
    pub jitter: f64,
}

impl Backoff {
    /// Doubling from `initial` to `max`, without jitter, never giving up.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max,
            max_attempts: None,
            jitter: 0.0,
        }
    }

    /// Grow by `multiplier` per attempt instead of doubling.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Spread each delay by `± jitter` of itself (clamped to 0.0..=1.0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Give up after `attempts` attempts in all (the first included).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The delay after failed attempt `attempt` (1-based), before jitter.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = secs.min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max)
    }

    /// The delay after failed attempt `attempt` (1-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        if self.jitter == 0.0 {
            return nominal;
        }
        let spread = (random_unit() * 2.0 - 1.0) * self.jitter;
        Duration::try_from_secs_f64((nominal.as_secs_f64() * (1.0 + spread)).max(0.0))
            .unwrap_or_default()
    }

    /// Whether an operation whose attempt `attempt` (1-based) failed may be tried again.
    pub fn allows_another_attempt(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt < max)
    }

    /// The delays between attempts, in order: one fewer than `max_attempts`, or endless.
    pub fn delays(&self) -> Delays {
        Delays {
            backoff: self.clone(),
            failed: 0,
        }
    }
}

/// The delays of a [`Backoff`], one per failed attempt; see [`Backoff::delays`].
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    failed: u32,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failed = self.failed.saturating_add(1);
        self.backoff
            .allows_another_attempt(self.failed)
            .then(|| self.backoff.delay(self.failed))
    }
}

/// Sleep for `delay` unless shutdown comes first. Returns `true` when the whole delay passed,
/// `false` when shutdown cut it short (the caller should stop retrying).
pub async fn wait(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => !shutdown.is_triggered(),
        () = shutdown.triggered() => false,
    }
}

/// Why [`retry_until`] stopped without a success.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The deadline passed or the delays ran out; the last attempt's error.
    #[error("gave up retrying: {0}")]
    Exhausted(E),
    /// Shutdown was requested.
    #[error("gave up retrying: shutdown requested")]
    ShuttingDown,
}

/// Run `operation` until it succeeds, waiting the next of `delays` after each failure.
///
/// Stops with [`RetryError::Exhausted`] when the delays run out or when an attempt fails at or
/// after `deadline` (a wait never overshoots the deadline: the last attempt is made at it),
/// and with [`RetryError::ShuttingDown`] as soon as `shutdown` is triggered, also mid-wait.
/// Each failure is logged at debug level as `what` failed.
pub async fn retry_until<T, E, F, Fut>(
    what: &str,
    delays: impl IntoIterator<Item = Duration>,
    deadline: Option<Instant>,
    shutdown: &Shutdown,
    mut operation: F,
) -> Result<T, RetryError<E>>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = delays.into_iter();
    loop {
        if shutdown.is_triggered() {
            return Err(RetryError::ShuttingDown);
        }
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Some(delay) = next_wait(&mut delays, deadline) else {
            return Err(RetryError::Exhausted(error));
        };
        tracing::debug!(%error, retry_in = ?delay, "{what} failed");
        if !wait(delay, shutdown).await {
            return Err(RetryError::ShuttingDown);
        }
    }
}

/// [`retry_until`] for work that must go on through shutdown (marking messages the broker
/// already took, say): only `deadline` or the end of `delays` stops it, with the last error.
pub async fn retry_until_deadline<T, E, F, Fut>(
    what: &str,
    delays: impl IntoIterator<Item = Duration>,
    deadline: Instant,
    mut operation: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = delays.into_iter();
    loop {
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Some(delay) = next_wait(&mut delays, Some(deadline)) else {
            return Err(error);
        };
        tracing::debug!(%error, retry_in = ?delay, "{what} failed");
        tokio::time::sleep(delay).await;
    }
}

/// The wait before the next attempt: the next delay, cut to what is left before `deadline`;
/// `None` when there is no next attempt.
fn next_wait(
    delays: &mut impl Iterator<Item = Duration>,
    deadline: Option<Instant>,
) -> Option<Duration> {
    let remaining = match deadline {
        Some(deadline) => Some(
            deadline
                .checked_duration_since(Instant::now())
                .filter(|remaining| !remaining.is_zero())?,
        ),
        None => None,
    };
    let delay = delays.next()?;
    Some(remaining.map_or(delay, |remaining| delay.min(remaining)))
}

/// A uniform number in [0, 1), from the v4 UUID generator's randomness (no extra dependency
/// for jitter, which needs no cryptographic quality but must differ between processes).
///
/// Only the low 62 bits of a v4 UUID are random: bits 62-63 hold the variant (`10`) and
/// bits 76-79 the version. (Taking the low 64 bits made every draw land in [0.5, 0.75): fault
/// injection rates below one half never fired and jitter only ever lengthened delays, which
/// the chaos runner exposed.)
pub fn random_unit() -> f64 {
    const RANDOM_BITS: u32 = 62;
    let bits = (uuid::Uuid::new_v4().as_u128() as u64) & ((1u64 << RANDOM_BITS) - 1);
    bits as f64 / (1u64 << RANDOM_BITS) as f64
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap_and_stop_after_the_last_attempt() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_multiplier(3.0)
            .with_max_attempts(5);
        let delays: Vec<Duration> = backoff.delays().collect();
        assert_eq!(
            delays,
            [
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(900),
                Duration::from_secs(1),
            ],
            "four waits between five attempts"
        );
        let endless = Backoff::new(Duration::from_millis(1), Duration::from_millis(8));
        assert_eq!(endless.delays().nth(1000), Some(Duration::from_millis(8)));
    }

    #[test]
    fn jittered_delays_spread_both_ways_within_their_bounds() {
        let backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(0.25);
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(1)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(750) && *d <= Duration::from_millis(1250))
        );
        assert!(delays.iter().any(|d| *d < Duration::from_millis(950)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(1050)));
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait_early() {
        let shutdown = Shutdown::new();
        let started = Instant::now();
        // `join!` polls the wait first, so shutdown comes while it is sleeping.
        let (waited, ()) = tokio::join!(wait(Duration::from_secs(3600), &shutdown), async {
            shutdown.trigger()
        });
        assert!(!waited, "a wait cut short by shutdown reports it");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(wait(Duration::ZERO, &Shutdown::new()).await);
    }

    /// Fails every time, numbering its failures.
    fn failing(attempts: &AtomicU32) -> impl std::future::Future<Output = Result<(), String>> {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        async move { Err(format!("failure {attempt}")) }
    }

    #[tokio::test]
    async fn a_deadline_stops_retries_and_returns_the_last_error() {
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        let result = retry_until(
            "test operation",
            Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).delays(),
            Some(deadline),
            &Shutdown::new(),
            || failing(&attempts),
        )
        .await;
        // The hour-long wait is cut to the deadline, where the last attempt is made.
        match result {
            Err(RetryError::Exhausted(error)) => assert_eq!(error, "failure 2"),
            other => panic!("expected the deadline to stop the retries, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(60));

        let passed = retry_until(
            "test operation",
            Backoff::new(Duration::ZERO, Duration::ZERO).delays(),
            Some(Instant::now()),
            &Shutdown::new(),
            || failing(&attempts),
        )
        .await;
        assert!(
            matches!(passed, Err(RetryError::Exhausted(error)) if error == "failure 3"),
            "a deadline already passed allows one attempt"
        );
    }

    #[tokio::test]
    async fn work_that_outlives_shutdown_is_stopped_by_its_deadline_alone() {
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let result = retry_until_deadline(
            "test operation",
            Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).delays(),
            started + Duration::from_millis(50),
            || failing(&attempts),
        )
        .await;
        assert_eq!(result, Err("failure 2".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn shutdown_stops_retries_mid_wait() {
        let shutdown = Shutdown::new();
        let attempts = AtomicU32::new(0);
        // `join!` polls the retries first: one attempt fails, its wait begins, then shutdown.
        let (result, ()) = tokio::join!(
            retry_until(
                "test operation",
                Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).delays(),
                None,
                &shutdown,
                || failing(&attempts),
            ),
            async { shutdown.trigger() }
        );
        assert!(matches!(result, Err(RetryError::ShuttingDown)));
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_success_after_failures_is_returned() {
        let attempts = AtomicU32::new(0);
        let result = retry_until(
            "test operation",
            Backoff::new(Duration::ZERO, Duration::ZERO)
                .with_max_attempts(3)
                .delays(),
            None,
            &Shutdown::new(),
            || async {
                match attempts.fetch_add(1, Ordering::Relaxed) {
                    0 | 1 => Err("not yet"),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(result.ok(), Some(2));
    }
}
