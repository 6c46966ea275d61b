//! What a consumer's timer firing records.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{One, seconds};

/// The timer families of a registry.
pub(super) struct TimerFamilies {
    fired: Family<One, Counter>,
    lag: Family<One, Histogram, fn() -> Histogram>,
    overdue: Family<One, Counter>,
}

impl TimerFamilies {
    pub(super) fn new() -> Self {
        Self {
            fired: Family::default(),
            lag: Family::new_with_constructor(seconds),
            overdue: Family::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "timers_fired",
            "Timers fired (written to the outbox for the consumer's queue), by queue",
            self.fired.clone(),
        );
        registry.register(
            "timer_firing_lag_seconds",
            "Time from a timer's due instant to its firing, by the consumer's clock",
            self.lag.clone(),
        );
        registry.register(
            "timers_overdue",
            "Timers fired more than a second after their due instant (downtime, backlog)",
            self.overdue.clone(),
        );
    }

    /// `queue`'s timer metrics.
    pub(super) fn for_queue(&self, queue: &str) -> TimerMetrics {
        let label = [("queue", queue.to_owned())];
        TimerMetrics {
            fired: self.fired.get_or_create(&label).clone(),
            lag: self.lag.get_or_create(&label).clone(),
            overdue: self.overdue.get_or_create(&label).clone(),
        }
    }
}

/// One queue's timer metrics.
#[derive(Clone, Debug)]
pub(crate) struct TimerMetrics {
    fired: Counter,
    lag: Histogram,
    overdue: Counter,
}

impl TimerMetrics {
    /// A timer fired `lag` after its instant.
    pub(crate) fn fired(&self, lag: Duration) {
        self.fired.inc();
        self.lag.observe(lag.as_secs_f64());
        if lag > crate::timer::OVERDUE_AFTER {
            self.overdue.inc();
        }
    }
}
