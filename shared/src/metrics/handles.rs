//! Handles into a registry's families, looked up once per component: a consumer records
//! several metrics per message, and a family lookup costs a lock, a hash and label strings.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, TimerMetrics, Two};

/// How a consumed message was settled (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ack,
    Duplicate,
    Deferred,
    Parked,
    Retry,
    Poison,
    DeadLetter,
}

impl Outcome {
    pub(super) const ALL: [Self; 7] = [
        Self::Ack,
        Self::Duplicate,
        Self::Deferred,
        Self::Parked,
        Self::Retry,
        Self::Poison,
        Self::DeadLetter,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Duplicate => "duplicate",
            Self::Deferred => "deferred",
            Self::Parked => "parked",
            Self::Retry => "retry",
            Self::Poison => "poison",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// Who waited for a publish confirm (the `publisher` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publisher {
    /// The outbox relay.
    Relay,
    /// A consumer republishing a message to a delay tier.
    Retry,
    /// A consumer moving a message to its dead-letter queue.
    DeadLetter,
}

impl Publisher {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Retry => "retry",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// A component's broker connection: reconnects and whether it is connected.
#[derive(Clone, Debug)]
pub(crate) struct ComponentMetrics {
    pub(super) reconnects: Counter,
    pub(super) connected: Gauge,
}

impl ComponentMetrics {
    /// The component re-opened its broker session.
    pub(crate) fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Whether the component holds a broker connection.
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.get()
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.get() == 1
    }
}

/// One queue's consumer metrics (handles into its registry's families).
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    pub(super) consumed: [Counter; Outcome::ALL.len()],
    pub(super) redelivered: Counter,
    pub(super) handler_duration: Histogram,
    pub(super) batch_size: Histogram,
    pub(super) batch_rollbacks: Counter,
    pub(super) end_to_end: Histogram,
    pub(super) late_events: Family<Two, Counter>,
    /// When its handler handles timers.
    pub(crate) timers: Option<TimerMetrics>,
    pub(super) queue: String,
    pub(crate) connection: ComponentMetrics,
    pub(crate) registry: Metrics,
}

impl QueueMetrics {
    /// Messages settled with `outcome` so far.
    pub(crate) fn count(&self, outcome: Outcome) -> u64 {
        self.consumed[outcome as usize].get()
    }

    /// A message settled with `outcome`.
    pub(crate) fn consumed(&self, outcome: Outcome) {
        self.consumed[outcome as usize].inc();
    }

    /// The broker redelivered a message.
    pub(crate) fn redelivered(&self) {
        self.redelivered.inc();
    }

    /// How long settling one delivery took.
    pub(crate) fn handler_duration(&self, took: Duration) {
        self.handler_duration.observe(took.as_secs_f64());
    }

    /// A transaction of a batching consumer committed `size` deliveries.
    pub(crate) fn batch_committed(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// A batch was rolled back (its messages are handled one by one next).
    pub(crate) fn batch_rolled_back(&self) {
        self.batch_rollbacks.inc();
    }

    /// A late event of `message_type` went to its route's late hook.
    pub(crate) fn late_event(&self, message_type: &str) {
        self.late_events
            .get_or_create(&[
                ("queue", self.queue.clone()),
                ("type", message_type.to_owned()),
            ])
            .inc();
    }

    /// From the message's creation to the end of its handling.
    pub(crate) fn end_to_end(&self, took: Duration) {
        self.end_to_end.observe(took.as_secs_f64());
    }
}

/// One relay's metrics (handles into its registry's families).
#[derive(Clone, Debug)]
pub(crate) struct RelayMetrics {
    pub(crate) published: Counter,
    /// Of `published`, those sent by direct dispatch.
    pub(crate) dispatched: Counter,
    pub(crate) refused: Counter,
    pub(crate) broker_errors: Counter,
    pub(crate) connection: ComponentMetrics,
    pub(crate) registry: Metrics,
}
