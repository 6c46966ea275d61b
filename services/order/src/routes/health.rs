//! `/healthz` (the process answers), `/readyz` (database and broker usable) and `/metrics`.

use std::fmt::Write;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// Alive: the process serves requests.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: the database answers and the outbox relay holds a broker connection. Orders are
/// still accepted when the broker is away; readiness reports it so operators see it.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .map_err(|_| "timed out".to_owned())
    .and_then(|result| result.map(|_| ()).map_err(|e| e.to_string()));
    let broker = state.relay.connected();
    let mut reasons = Vec::new();
    if let Err(error) = &database {
        reasons.push(format!("database: {error}"));
    }
    if !broker {
        reasons.push("broker: outbox relay is not connected".to_owned());
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if reasons.is_empty() { "ready" } else { "not ready" },
            "database": database.is_ok(),
            "broker": broker,
            "reasons": reasons,
        })),
    )
}

/// Prometheus text format: the outbox backlog and the relay's counters.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let Ok(backlog) = msgkit::outbox::backlog(&state.pool).await {
        gauge(
            "msgkit_outbox_pending",
            "Outbox rows not yet published.",
            "gauge",
            backlog.pending as f64,
        );
        gauge(
            "msgkit_outbox_failing",
            "Unpublished outbox rows whose last publish was refused by the broker.",
            "gauge",
            backlog.failing as f64,
        );
        gauge(
            "msgkit_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row.",
            "gauge",
            backlog.oldest_pending_age.as_secs_f64(),
        );
    }
    gauge(
        "msgkit_relay_published_total",
        "Messages published and confirmed by the outbox relay.",
        "counter",
        state.relay.published() as f64,
    );
    gauge(
        "msgkit_relay_refused_total",
        "Publishes refused by the broker (unroutable or nacked).",
        "counter",
        state.relay.failed() as f64,
    );
    gauge(
        "msgkit_relay_broker_connected",
        "1 while the outbox relay holds a broker connection.",
        "gauge",
        if state.relay.connected() { 1.0 } else { 0.0 },
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
