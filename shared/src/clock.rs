//! The kit's clock: the system's, moved by an offset that tests advance instead of waiting.
//!
//! Whatever the kit decides by wall-clock time in a consumer (a keyed-state entry's expiry,
//! later its timers) asks the consumer's [`Clock`], and every comparison is made with the
//! instant it gives, not the database's `now()`, so that a test can move time forward for one
//! consumer without touching any other.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The system clock plus an offset shared by every clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, not moved.
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, as this clock tells it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Move this clock (and every clone of it) forward by `by`: for tests, instead of waiting.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(millis, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_moves_every_clone_and_no_other_clock() {
        let clock = Clock::system();
        let clone = clock.clone();
        let other = Clock::system();
        clock.advance(Duration::from_secs(3600));
        let ahead = (clone.now() - other.now()).num_seconds();
        assert!((3599..=3601).contains(&ahead), "{ahead}");
    }
}
