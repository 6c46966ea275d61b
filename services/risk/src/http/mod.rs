//! The risk API and, at `/`, its page. (`/healthz`, `/readyz` and `/metrics` come from the
//! kit.) `/reconciliation*` is reconcile's API, proxied for the page.

mod error;
mod page;
mod queries;
mod reconciliation;
mod rules;
mod stream;
mod tokens;
mod transactions;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use msgkit::Shutdown;
use msgkit::auth::Need;
use msgkit::auth::TokenKey;
use msgkit::rate_limit::{self, RateLimit};
use sqlx::PgPool;

use crate::feed::Feed;
use crate::metrics::RiskMetrics;

pub use error::{ApiError, InvalidField};
pub use page::{PAGE, content_security_policy};
pub use reconciliation::{DEFAULT_RECONCILE_TIMEOUT, DEFAULT_RECONCILE_URL, ReconcileClient};
pub use stream::KEEP_ALIVE;
pub use transactions::NewTransaction;

/// Largest accepted request body: a transaction is a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// Verifies the stream's tokens; `None` when no secret is configured (the stream then
    /// answers 503, the rest of the API works).
    pub tokens: Option<TokenKey>,
    /// This replica's alert feed.
    pub feed: Feed,
    /// The service's metrics.
    pub metrics: RiskMetrics,
    /// Triggered when the service stops: open streams end on it.
    pub shutdown: Shutdown,
    /// The reconcile service, for the page's reconciliation section.
    pub reconcile: ReconcileClient,
    /// Each client's limit on `POST /transactions` (429), when configured.
    pub rate_limit: Option<RateLimit>,
}

/// The request's claims when its token (`Authorization: Bearer`) allows `need`.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    need: Need<'_>,
) -> Result<msgkit::auth::Claims, ApiError> {
    msgkit::auth::authorize(state.tokens.as_ref(), headers, need, chrono::Utc::now())
        .map_err(ApiError::Denied)
}

/// A JSON body as `T`: 400 when it is not JSON, 422 naming the field when it has the wrong
/// shape.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError::MalformedJson(rejection.body_text()))?;
    let raw: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(&raw)
        .map_err(|error| ApiError::Invalid(InvalidField::from_serde(&error)))
}

/// The API's routes. Changing rules, reading them, issuing tokens and the reconciliation
/// section need an operator's token; alerts need a token and show a user only their own;
/// recording a transaction needs none (it is what clients do), limited per client when
/// `RISK_RATE_LIMIT_PER_SEC` is set.
pub fn router(state: AppState) -> Router {
    let mut record = post(transactions::record);
    if let Some(limit) = state.rate_limit.clone() {
        record = record.route_layer(from_fn_with_state(limit, rate_limit::guard));
    }
    Router::new()
        .route("/", get(page::page))
        .route("/transactions", record)
        .route("/alerts", get(queries::alerts))
        .route("/alerts/stream", get(stream::stream))
        .route("/reconciliation", get(reconciliation::list))
        .route("/reconciliation/summary", get(reconciliation::summary))
        .route("/rules", get(rules::list).post(rules::create))
        .route("/rules/{id}", put(rules::update).delete(rules::disable))
        .route("/rules/{id}/enable", post(rules::enable))
        .route("/rules/{id}/disable", post(rules::disable))
        .route("/tokens", post(tokens::issue))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
