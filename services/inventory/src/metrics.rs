//! The inventory service's own metrics, served on `/metrics` after the kit's (`inventory_*`).

use msgkit::metrics::prometheus_client::metrics::gauge::Gauge;
use msgkit::metrics::prometheus_client::registry::Registry;

/// Handles into the service's registry; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct InventoryMetrics {
    /// Stock streams open on this replica.
    pub stock_streams_connected: Gauge,
}

impl InventoryMetrics {
    /// The metrics and the registry to hand to `Service::with_metrics`.
    pub fn new() -> (Self, Registry) {
        let metrics = Self::default();
        let mut registry = Registry::with_prefix("inventory");
        registry.register(
            "stock_streams_connected",
            "Stock streams (Server-Sent Events) open on this replica",
            metrics.stock_streams_connected.clone(),
        );
        (metrics, registry)
    }
}
