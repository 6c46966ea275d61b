//! What a projection records: its lag, what it applied, whether this replica is the active one.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::One;

/// The projection families of a registry.
pub(super) struct ProjectionFamilies {
    lag: Family<One, Gauge<f64, AtomicU64>>,
    applied: Family<One, Counter>,
    active: Family<One, Gauge>,
    position: Family<One, Gauge>,
    failures: Family<One, Counter>,
}

impl ProjectionFamilies {
    pub(super) fn new() -> Self {
        Self {
            lag: Family::default(),
            applied: Family::default(),
            active: Family::default(),
            position: Family::default(),
            failures: Family::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "projection_lag_seconds",
            "How far behind the archive the projection is: the age of the event it applied last while more are waiting, 0 once it waits for new ones",
            self.lag.clone(),
        );
        registry.register(
            "projection_events_applied",
            "Archive events applied (in committed batches), by projection",
            self.applied.clone(),
        );
        registry.register(
            "projection_active",
            "1 on the replica that applies the projection, 0 on a standby",
            self.active.clone(),
        );
        registry.register(
            "projection_position",
            "The archive offset of the last event applied, by projection",
            self.position.clone(),
        );
        registry.register(
            "projection_failures",
            "Batches that failed to apply (rolled back and retried), by projection",
            self.failures.clone(),
        );
    }

    /// `projection`'s metrics, created at 0 so that a dashboard shows them before the first
    /// event.
    pub(super) fn for_projection(&self, projection: &str) -> ProjectionMetrics {
        let label = [("projection", projection.to_owned())];
        ProjectionMetrics {
            lag: self.lag.get_or_create(&label).clone(),
            applied: self.applied.get_or_create(&label).clone(),
            active: self.active.get_or_create(&label).clone(),
            position: self.position.get_or_create(&label).clone(),
            failures: self.failures.get_or_create(&label).clone(),
        }
    }
}

/// One projection's metrics.
#[derive(Clone, Debug)]
pub(crate) struct ProjectionMetrics {
    pub(crate) lag: Gauge<f64, AtomicU64>,
    pub(crate) applied: Counter,
    pub(crate) active: Gauge,
    pub(crate) position: Gauge,
    pub(crate) failures: Counter,
}
