//! The bandwidth cap: a token bucket per direction, shared by every connection of a proxy.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::control::Faults;

/// How much unused bandwidth may be saved up: enough to pass small chunks without waiting,
/// too little to let a bulk transfer beat the cap noticeably.
const BURST: Duration = Duration::from_millis(50);

/// Tokens are bytes. A chunk may be taken whenever the bucket is not in debt, and may leave it
/// in debt: chunks are never split, yet the long-run rate is exactly the cap.
#[derive(Debug, Default)]
pub(super) struct TokenBucket {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` while there is no cap, so that a cap
    /// set later starts from a full bucket rather than from savings made while unlimited.
    refilled: Option<Instant>,
}

/// What a taker must do.
#[derive(Debug, PartialEq)]
enum Grant {
    Now,
    After(Duration),
    /// The cap is zero: only a change of faults can let bytes through.
    Never,
}

impl TokenBucket {
    /// Wait until `bytes` may pass under the current cap. A change of the cap (seen on
    /// `faults`) applies to a wait already under way.
    pub(super) async fn take(&self, bytes: usize, faults: &mut watch::Receiver<Faults>) {
        loop {
            let cap = faults.borrow_and_update().bandwidth;
            let grant = match cap {
                Some(rate) => self.grant(bytes, rate, Instant::now()),
                None => {
                    self.lock().refilled = None;
                    Grant::Now
                }
            };
            let wait = match grant {
                Grant::Now => return,
                Grant::After(wait) => wait,
                Grant::Never => Duration::MAX,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = faults.changed() => {
                    // The proxy is gone: nobody is left to enforce a cap for.
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn grant(&self, bytes: usize, rate: u64, now: Instant) -> Grant {
        if rate == 0 {
            return Grant::Never;
        }
        let rate = rate as f64;
        let burst = rate * BURST.as_secs_f64();
        let mut state = self.lock();
        state.tokens = match state.refilled {
            Some(then) => (state.tokens + now.duration_since(then).as_secs_f64() * rate).min(burst),
            None => burst,
        };
        state.refilled = Some(now);
        if state.tokens < 0.0 {
            return Grant::After(Duration::from_secs_f64(-state.tokens / rate));
        }
        state.tokens -= bytes as f64;
        Grant::Now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two numbers, consistent after every statement: a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_passes_at_once_and_the_next_waits_for_the_debt_to_be_paid() {
        let bucket = TokenBucket::default();
        let start = Instant::now();
        // 1000 B/s: the bucket starts with 50 bytes; 1050 bytes leave a debt of 1000.
        assert_eq!(bucket.grant(1050, 1000, start), Grant::Now);
        assert_eq!(
            bucket.grant(10, 1000, start),
            Grant::After(Duration::from_secs(1))
        );
        let later = start + Duration::from_millis(400);
        assert_eq!(
            bucket.grant(10, 1000, later),
            Grant::After(Duration::from_millis(600))
        );
        assert_eq!(
            bucket.grant(10, 1000, start + Duration::from_secs(1)),
            Grant::Now
        );
    }

    #[test]
    fn savings_are_capped_at_the_burst() {
        let bucket = TokenBucket::default();
        let start = Instant::now();
        assert_eq!(bucket.grant(0, 1000, start), Grant::Now);
        // An idle hour saves only 50 ms worth: 100 bytes leave a debt of 50.
        let hour = start + Duration::from_secs(3600);
        assert_eq!(bucket.grant(100, 1000, hour), Grant::Now);
        assert_eq!(
            bucket.grant(1, 1000, hour),
            Grant::After(Duration::from_millis(50))
        );
    }

    #[test]
    fn a_zero_cap_lets_nothing_through() {
        let bucket = TokenBucket::default();
        assert_eq!(bucket.grant(1, 0, Instant::now()), Grant::Never);
    }
}
