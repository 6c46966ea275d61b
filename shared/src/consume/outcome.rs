//! What became of a delivery, and how that is counted: the consumer's stats, the queue's
//! metrics and the delivery's `process` span.

use std::time::Duration;

use chrono::Utc;

use super::dead_letter::FailureReason;
use super::pipeline::Received;
use crate::broker::BrokerError;
use crate::metrics::{Outcome, QueueMetrics};

/// Why a delivery was left unacknowledged (the broker redelivers it).
#[derive(Debug, thiserror::Error)]
pub(super) enum Unsettled {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the database stayed unavailable for {0:?}")]
    DatabaseUnavailable(Duration),
}

/// What became of one delivery (it is acked in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    Handled,
    Duplicate,
    Deferred,
    /// Ahead of its key's turn: kept until then ([`crate::key_order`]).
    Parked,
    Retried,
    DeadLettered(FailureReason),
}

/// Counts settled deliveries in the metrics and their spans.
#[derive(Debug, Clone)]
pub(super) struct Outcomes {
    pub(super) metrics: QueueMetrics,
}

impl Outcomes {
    /// The delivery's outcome is final: count it and close its span.
    pub(super) fn record(&self, one: &Received, settled: Settled) {
        let metrics = &self.metrics;
        metrics.handler_duration(one.started.elapsed());
        if settled == Settled::Handled
            && let Some(created) = one.message.created_at()
        {
            metrics.end_to_end((Utc::now() - created).to_std().unwrap_or_default());
        }
        let outcome = match settled {
            Settled::Handled => Outcome::Ack,
            Settled::Duplicate => Outcome::Duplicate,
            Settled::Deferred => Outcome::Deferred,
            Settled::Parked => Outcome::Parked,
            Settled::Retried => Outcome::Retry,
            Settled::DeadLettered(FailureReason::Poison) => Outcome::Poison,
            Settled::DeadLettered(FailureReason::RetriesExhausted) => Outcome::DeadLetter,
        };
        one.span.record("msgkit.outcome", outcome.label());
        if !matches!(
            settled,
            Settled::Handled | Settled::Duplicate | Settled::Deferred | Settled::Parked
        ) {
            one.span.record("otel.status_code", "error");
        }
        metrics.consumed(outcome);
        if one.message.redelivered() {
            metrics.redelivered();
        }
    }
}
