//! What a relay has done, for `/readyz`, the bench, tests and the loop's own decisions.

use crate::metrics::RelayMetrics;

/// A relay's counters (for `/readyz`, the bench and tests): a view of its metrics, which are
/// the only counters the kit keeps.
#[derive(Debug, Clone)]
pub struct RelayStats {
    metrics: RelayMetrics,
}

impl RelayStats {
    pub(super) fn new(metrics: RelayMetrics) -> Self {
        Self { metrics }
    }
    /// Messages published and confirmed.
    pub fn published(&self) -> u64 {
        self.metrics.published.get()
    }
    /// Of [`RelayStats::published`], the messages sent by direct dispatch, right after their
    /// transaction committed.
    pub fn dispatched(&self) -> u64 {
        self.metrics.dispatched.get()
    }
    /// Publish attempts the broker refused (returned as unroutable, or nacked).
    pub fn failed(&self) -> u64 {
        self.metrics.refused.get()
    }
    /// Batches abandoned because the connection failed (they are retried).
    pub fn broker_errors(&self) -> u64 {
        self.metrics.broker_errors.get()
    }
    /// Whether the relay currently holds a usable broker connection.
    pub fn connected(&self) -> bool {
        self.metrics.connection.connected()
    }
    /// The relay's registry as `/metrics` would serve it (its service's, when it runs in one).
    pub fn render_metrics(&self) -> String {
        self.metrics.registry.render(&[])
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
