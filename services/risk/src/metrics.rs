//! The risk service's own metrics, served on `/metrics` after the kit's (`risk_*`).

use msgkit::metrics::prometheus_client::metrics::counter::Counter;
use msgkit::metrics::prometheus_client::metrics::family::Family;
use msgkit::metrics::prometheus_client::metrics::gauge::Gauge;
use msgkit::metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use msgkit::metrics::prometheus_client::registry::Registry;

type RuleLabel = [(&'static str, String); 1];
type AlertLabels = [(&'static str, String); 2];

/// Handles into the service's registry; cheap to clone (every clone counts into the same
/// families).
#[derive(Clone, Debug)]
pub struct RiskMetrics {
    rule_errors: Family<RuleLabel, Counter>,
    alerts: Family<AlertLabels, Counter>,
    /// Transaction committed (its outbox row's creation) to alert committed.
    pub decision_seconds: Histogram,
    /// Alert committed to written to a connected stream.
    pub push_seconds: Histogram,
    /// Alert streams open on this replica.
    pub streams_connected: Gauge,
}

/// 1 ms to about 33 s, doubling: decisions take milliseconds, and a backlog shows as seconds.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl RiskMetrics {
    /// The families and the registry to hand to `Service::with_metrics`.
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            rule_errors: Family::default(),
            alerts: Family::default(),
            decision_seconds: latency(),
            push_seconds: latency(),
            streams_connected: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("risk");
        registry.register(
            "rule_errors",
            "Rule evaluations that failed (a stored rule that cannot run, or an expression failing on an event), by rule id; the other rules still decide",
            metrics.rule_errors.clone(),
        );
        registry.register(
            "alerts",
            "Alerts stored (each once), by rule id and severity",
            metrics.alerts.clone(),
        );
        registry.register(
            "decision_seconds",
            "From the transaction's commit (its outbox row) to its alert's commit",
            metrics.decision_seconds.clone(),
        );
        registry.register(
            "push_seconds",
            "From an alert's commit to its write on a connected stream",
            metrics.push_seconds.clone(),
        );
        registry.register(
            "streams_connected",
            "Alert streams (Server-Sent Events) open on this replica",
            metrics.streams_connected.clone(),
        );
        (metrics, registry)
    }

    /// Rule `rule_id` failed to run.
    pub fn rule_error(&self, rule_id: i64) {
        self.rule_errors
            .get_or_create(&[("rule", rule_id.to_string())])
            .inc();
    }

    /// Rule `rule_id` raised a new alert.
    pub fn alert(&self, rule_id: i64, severity: &str) {
        self.alerts
            .get_or_create(&[
                ("rule", rule_id.to_string()),
                ("severity", severity.to_owned()),
            ])
            .inc();
    }
}
