//! A consumer's counters, read by services (health, logs), the bench and tests: a view of the
//! consumer's metrics, which are the only counters the kit keeps.

use crate::metrics::{Outcome, QueueMetrics};

/// A consumer's counters, by outcome.
#[derive(Debug, Clone)]
pub struct ConsumerStats {
    metrics: QueueMetrics,
}

impl ConsumerStats {
    pub(super) fn new(metrics: QueueMetrics) -> Self {
        Self { metrics }
    }

    /// Messages handled (committed; acked, or about to be: acks go out in batches).
    pub fn handled(&self) -> u64 {
        self.metrics.count(Outcome::Ack)
    }
    /// Duplicates acked without running the handler.
    pub fn duplicates(&self) -> u64 {
        self.metrics.count(Outcome::Duplicate)
    }
    /// Failed attempts sent to a delayed retry.
    pub fn retried(&self) -> u64 {
        self.metrics.count(Outcome::Retry)
    }
    /// Messages dead-lettered after their last attempt.
    pub fn dead_lettered(&self) -> u64 {
        self.metrics.count(Outcome::DeadLetter)
    }
    /// Messages dead-lettered as poison.
    pub fn poison(&self) -> u64 {
        self.metrics.count(Outcome::Poison)
    }
    /// Delayed retries passed on to the next delay tier.
    pub fn deferred(&self) -> u64 {
        self.metrics.count(Outcome::Deferred)
    }
    /// Sessions (connection + channel + subscription) opened after the first.
    pub fn reconnects(&self) -> u64 {
        self.metrics.connection.reconnects()
    }
    /// Whether the consumer is subscribed right now.
    pub fn connected(&self) -> bool {
        self.metrics.connection.connected()
    }
    /// The consumer's registry as `/metrics` would serve it (its service's, when it runs in
    /// one).
    pub fn render_metrics(&self) -> String {
        self.metrics.registry.render(&[])
    }
}
