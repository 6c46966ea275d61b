//! What a relay has done, for `/metrics`, `/readyz` and the loop's own decisions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters a relay keeps while it runs; shared, cheap to read (for `/metrics`, `/readyz`).
#[derive(Debug, Default)]
pub struct RelayStats {
    published: AtomicU64,
    failed: AtomicU64,
    broker_errors: AtomicU64,
    connected: AtomicBool,
}

impl RelayStats {
    /// Messages published and confirmed.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Publish attempts the broker refused (returned as unroutable, or nacked).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Batches abandoned because the connection failed (they are retried).
    pub fn broker_errors(&self) -> u64 {
        self.broker_errors.load(Ordering::Relaxed)
    }
    /// Whether the relay currently holds a usable broker connection.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(super) fn add_relayed(&self, published: usize, failed: usize) {
        self.published
            .fetch_add(published as u64, Ordering::Relaxed);
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }

    pub(super) fn add_broker_error(&self) {
        self.broker_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed and marked published.
    pub published: usize,
    /// Rows refused by the broker, left unpublished for a later attempt.
    pub failed: usize,
    /// Of the refused rows, those the broker nacked (rather than returned as unroutable).
    pub nacked: usize,
}

impl BatchReport {
    pub(super) fn add(&mut self, other: &BatchReport) {
        self.claimed += other.claimed;
        self.published += other.published;
        self.failed += other.failed;
        self.nacked += other.nacked;
    }
}
