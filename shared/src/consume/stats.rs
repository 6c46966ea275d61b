//! A consumer's counters, read by services (health, logs) and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A consumer's counters, by outcome.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub(super) handled: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) poison: AtomicU64,
    pub(super) deferred: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) connected: AtomicBool,
}

impl ConsumerStats {
    /// Messages handled (committed; acked, or about to be: acks go out in batches).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
    /// Duplicates acked without running the handler.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Failed attempts sent to a delayed retry.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }
    /// Messages dead-lettered after their last attempt.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
    /// Messages dead-lettered as poison.
    pub fn poison(&self) -> u64 {
        self.poison.load(Ordering::Relaxed)
    }
    /// Delayed retries passed on to the next delay tier.
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }
    /// Sessions (connection + channel + subscription) opened after the first.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    /// Whether the consumer is subscribed right now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}
