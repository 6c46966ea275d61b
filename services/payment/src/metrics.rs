//! The payment service's own metrics, served on `/metrics` after the kit's (`payment_*`).

use msgkit::metrics::prometheus_client::metrics::counter::Counter;
use msgkit::metrics::prometheus_client::metrics::family::Family;
use msgkit::metrics::prometheus_client::registry::Registry;

type ResultLabel = [(&'static str, &'static str); 1];

/// Handles into the service's registry; cheap to clone (every clone counts into the same
/// families).
#[derive(Clone, Debug, Default)]
pub struct PaymentMetrics {
    attempts: Family<ResultLabel, Counter>,
    lost: Counter,
    received: Family<ResultLabel, Counter>,
}

impl PaymentMetrics {
    /// The families and the registry to hand to `Service::with_metrics`.
    pub fn new() -> (Self, Registry) {
        let metrics = Self::default();
        let mut registry = Registry::with_prefix("payment");
        registry.register(
            "gateway_callback_attempts",
            "The gateway simulator's attempts to send a callback, by result: accepted (2xx), refused (another status) or failed (no answer)",
            metrics.attempts.clone(),
        );
        registry.register(
            "gateway_callbacks_lost",
            "Callbacks the loss fault (GATEWAY_CALLBACK_LOSS_RATE) dropped: never to be sent",
            metrics.lost.clone(),
        );
        registry.register(
            "callbacks_received",
            "Callbacks received on POST /payments/callback, by result: stored, duplicate, unauthorized or invalid",
            metrics.received.clone(),
        );
        (metrics, registry)
    }

    /// The gateway tried to send a callback: `accepted`, `refused` or `failed`.
    pub fn attempt(&self, result: &'static str) {
        self.attempts.get_or_create(&[("result", result)]).inc();
    }

    /// The loss fault dropped a callback.
    pub fn lost(&self) {
        self.lost.inc();
    }

    /// A callback was received: `stored`, `duplicate`, `unauthorized` or `invalid`.
    pub fn received(&self, result: &'static str) {
        self.received.get_or_create(&[("result", result)]).inc();
    }
}
