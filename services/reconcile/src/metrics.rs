//! The reconcile service's own metrics, served on `/metrics` after the kit's (`reconcile_*`).

use std::time::Duration;

use msgkit::Shutdown;
use msgkit::metrics::prometheus_client::metrics::counter::Counter;
use msgkit::metrics::prometheus_client::metrics::family::Family;
use msgkit::metrics::prometheus_client::metrics::gauge::Gauge;
use msgkit::metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use msgkit::metrics::prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::join::Outcome;

type OutcomeLabel = [(&'static str, &'static str); 1];

/// How often the open-mismatch gauge is read from the table.
pub const OPEN_MISMATCHES_REFRESH: Duration = Duration::from_secs(5);

/// Handles into the service's registry; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    outcomes: Family<OutcomeLabel, Counter>,
    /// First side to the matching second side, for orders matched within the window.
    pub time_to_match_seconds: Histogram,
    /// Mismatches not resolved, as the table holds them (every replica reports the same).
    pub open_mismatches: Gauge,
}

impl ReconcileMetrics {
    /// The families and the registry to hand to `Service::with_metrics`.
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            outcomes: Family::default(),
            // 10 ms to about 5.5 min, doubling: a match takes as long as the gateway's
            // callback delay, and a window is seconds.
            time_to_match_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            open_mismatches: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("reconcile");
        registry.register(
            "outcomes",
            "Reconciliation decisions, by outcome (matched, late-match, third-party-missing, app-missing, amount-mismatch, status-mismatch)",
            metrics.outcomes.clone(),
        );
        registry.register(
            "time_to_match_seconds",
            "From an order's first side to the matching second side, for orders matched within the window",
            metrics.time_to_match_seconds.clone(),
        );
        registry.register(
            "open_mismatches",
            "Mismatches not resolved (read from the table every 5 s)",
            metrics.open_mismatches.clone(),
        );
        (metrics, registry)
    }

    /// A decision was made.
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
    }
}

/// Keep `open_mismatches` at the table's count until `shutdown`: a count kept in memory would
/// differ between replicas and restart at zero.
pub async fn refresh_open_mismatches(pool: PgPool, metrics: ReconcileMetrics, shutdown: Shutdown) {
    loop {
        match sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM reconciliations WHERE status = 'open'",
        )
        .fetch_one(&pool)
        .await
        {
            Ok(open) => {
                metrics.open_mismatches.set(open);
            }
            Err(error) => tracing::warn!(%error, "counting open mismatches failed"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(OPEN_MISMATCHES_REFRESH) => {}
        }
    }
}
