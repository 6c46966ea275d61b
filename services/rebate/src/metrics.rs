//! The rebate service's own metrics, served on `/metrics` after the kit's (`rebate_*`; the
//! projection's own are the kit's `msgkit_projection_*`).

use msgkit::metrics::prometheus_client::metrics::counter::Counter;
use msgkit::metrics::prometheus_client::metrics::family::Family;
use msgkit::metrics::prometheus_client::metrics::gauge::Gauge;
use msgkit::metrics::prometheus_client::registry::Registry;

type KindLabel = [(&'static str, &'static str); 1];

/// Handles into the service's registry; cheap to clone (every clone counts into the same
/// families).
#[derive(Clone, Debug)]
pub struct RebateMetrics {
    lines: Family<KindLabel, Counter>,
    /// Balance streams open on this replica.
    pub streams_connected: Gauge,
}

impl RebateMetrics {
    /// The families and the registry to hand to `Service::with_metrics`.
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            lines: Family::default(),
            streams_connected: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("rebate");
        registry.register(
            "lines",
            "Rebate lines written by this replica's projection, by kind (payment, refund); a \
             batch that rolled back and was applied again, or a rebuild, counts its lines again",
            metrics.lines.clone(),
        );
        registry.register(
            "streams_connected",
            "Balance streams (Server-Sent Events) open on this replica",
            metrics.streams_connected.clone(),
        );
        (metrics, registry)
    }

    /// A line of `kind` was written.
    pub fn line(&self, kind: &'static str) {
        self.lines.get_or_create(&[("kind", kind)]).inc();
    }
}
