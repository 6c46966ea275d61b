//! The operational endpoints every service serves: `/healthz` (the process answers),
//! `/readyz` (database and broker usable; 503 with the reasons when not; whether the API
//! sheds new work, and why, without changing the status) and `/metrics`
//! (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::json;
use sqlx::PgPool;

use crate::admission::Admission;
use crate::consume::ConsumerStats;
use crate::metrics::Metrics;
use crate::outbox::RelayStats;
use crate::projection::ProjectionStats;

/// What the endpoints look at.
#[derive(Clone, Debug)]
pub struct OpsState {
    pool: Option<PgPool>,
    /// The service's registry, which its relay and consumers count into.
    metrics: Metrics,
    /// The service whose outbox backlog `/metrics` reports, once it runs a relay.
    outbox_of: Option<String>,
    relays: Vec<Arc<RelayStats>>,
    consumers: Vec<(String, Arc<ConsumerStats>)>,
    /// The consumers' names (in the inbox, state and timers tables).
    consumer_names: Vec<String>,
    /// The service's own metrics, served after the kit's.
    own: Vec<Arc<Registry>>,
    projections: Vec<Arc<ProjectionStats>>,
    /// The API's admission guard, whose decision `/readyz` reports.
    admission: Option<Admission>,
}

impl OpsState {
    /// Readiness over this database, metrics from this registry.
    pub fn new(pool: PgPool, metrics: Metrics) -> Self {
        Self {
            pool: Some(pool),
            metrics,
            outbox_of: None,
            relays: Vec::new(),
            consumers: Vec::new(),
            consumer_names: Vec::new(),
            own: Vec::new(),
            projections: Vec::new(),
            admission: None,
        }
    }

    /// Include a projection (ready unless it leads and is catching up, or is failing).
    pub(crate) fn with_projection(mut self, stats: Arc<ProjectionStats>) -> Self {
        self.projections.push(stats);
        self
    }

    /// Report `admission`'s decision in `/readyz`.
    pub(crate) fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Whether an admission guard is reported already.
    pub(crate) fn has_admission(&self) -> bool {
        self.admission.is_some()
    }

    /// Serve the service's own `registry` too.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.own.push(Arc::new(registry));
        self
    }

    /// Include the outbox relay of `service`.
    pub fn with_relay(mut self, service: impl Into<String>, stats: Arc<RelayStats>) -> Self {
        self.outbox_of = Some(service.into());
        self.relays.push(stats);
        self
    }

    /// Include the consumer `name` of `queue`.
    pub fn with_consumer(
        mut self,
        queue: impl Into<String>,
        name: impl Into<String>,
        stats: Arc<ConsumerStats>,
    ) -> Self {
        self.consumers.push((queue.into(), stats));
        self.consumer_names.push(name.into());
        self
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if let Some(pool) = &state.pool {
        let check = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(pool),
        )
        .await;
        match check {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => reasons.push(format!("database: {error}")),
            Err(_) => reasons.push("database: no answer within 2 s".to_owned()),
        }
    }
    if state.relays.iter().any(|relay| !relay.connected()) {
        reasons.push("broker: the outbox relay is not connected".to_owned());
    }
    for (queue, consumer) in &state.consumers {
        if !consumer.connected() {
            reasons.push(format!("broker: the consumer of {queue} is not subscribed"));
        }
    }
    reasons.extend(
        state
            .projections
            .iter()
            .filter_map(|projection| projection.not_ready_reason()),
    );
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = reasons.is_empty();
    let mut body = json!({"status": if ready { "ready" } else { "not ready" }, "reasons": reasons});
    // Shedding does not make the replica unready: every replica reads the same backlog, so a
    // 503 here would take all of them out of the load balancer at once and turn the API's
    // 503 + Retry-After into connection errors, for reads too (docs/architecture.md).
    if let Some(admission) = &state.admission {
        body["admission"] = admission.status();
    }
    (status, Json(body))
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let metrics = &state.metrics;
    // The backlog is read from the database at scrape time, so it is right even while the
    // relay is stuck (broker away) and therefore not updating anything.
    if let Some(pool) = &state.pool
        && let Some(service) = &state.outbox_of
    {
        match tokio::time::timeout(Duration::from_secs(2), crate::outbox::backlog(pool)).await {
            Ok(Ok(backlog)) => metrics.set_backlog(service, &backlog),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the outbox backlog"),
            Err(_) => tracing::warn!("reading the outbox backlog timed out"),
        }
    }
    if let Some(pool) = &state.pool
        && !state.consumer_names.is_empty()
    {
        metrics.read_kept(pool, &state.consumer_names).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(&state.own),
    )
}
