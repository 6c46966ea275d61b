//! The operational endpoints every service serves: `/healthz` (the process answers),
//! `/readyz` (database and broker usable; 503 with the reasons when not) and `/metrics`
//! (Prometheus text format).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;

use crate::consume::ConsumerStats;
use crate::outbox::RelayStats;

/// What the endpoints look at.
#[derive(Clone, Debug, Default)]
pub struct OpsState {
    pool: Option<PgPool>,
    relays: Vec<Arc<RelayStats>>,
    consumers: Vec<(String, Arc<ConsumerStats>)>,
}

impl OpsState {
    /// Readiness and metrics over this database.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool: Some(pool),
            ..Self::default()
        }
    }

    /// Include an outbox relay.
    pub fn with_relay(mut self, stats: Arc<RelayStats>) -> Self {
        self.relays.push(stats);
        self
    }

    /// Include a consumer of `queue`.
    pub fn with_consumer(mut self, queue: impl Into<String>, stats: Arc<ConsumerStats>) -> Self {
        self.consumers.push((queue.into(), stats));
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
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = reasons.is_empty();
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not ready" }, "reasons": reasons})),
    )
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    if let Some(pool) = &state.pool
        && !state.relays.is_empty()
        && let Ok(backlog) = crate::outbox::backlog(pool).await
    {
        metric(
            "msgkit_outbox_pending",
            "Outbox rows not yet published.",
            "gauge",
            &[(String::new(), backlog.pending as f64)],
        );
        metric(
            "msgkit_outbox_failing",
            "Unpublished outbox rows whose last publish was refused by the broker.",
            "gauge",
            &[(String::new(), backlog.failing as f64)],
        );
        metric(
            "msgkit_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row.",
            "gauge",
            &[(String::new(), backlog.oldest_pending_age.as_secs_f64())],
        );
    }
    let relays = |f: fn(&RelayStats) -> u64| -> Vec<(String, f64)> {
        vec![(
            String::new(),
            state.relays.iter().map(|r| f(r) as f64).sum(),
        )]
    };
    if !state.relays.is_empty() {
        metric(
            "msgkit_relay_published_total",
            "Messages published and confirmed by the outbox relay.",
            "counter",
            &relays(RelayStats::published),
        );
        metric(
            "msgkit_relay_refused_total",
            "Publishes refused by the broker (unroutable or nacked).",
            "counter",
            &relays(RelayStats::failed),
        );
    }
    let mut consumed = Vec::new();
    for (queue, stats) in &state.consumers {
        for (outcome, value) in [
            ("ack", stats.handled()),
            ("duplicate", stats.duplicates()),
            ("retry", stats.retried()),
            ("dead_letter", stats.dead_lettered()),
            ("poison", stats.poison()),
        ] {
            consumed.push((
                format!("{{queue=\"{queue}\",outcome=\"{outcome}\"}}"),
                value as f64,
            ));
        }
    }
    if !consumed.is_empty() {
        metric(
            "msgkit_consumed_total",
            "Messages consumed, by queue and outcome.",
            "counter",
            &consumed,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
