//! The risk API and, at `/`, its page. (`/healthz`, `/readyz` and `/metrics` come from the
//! kit.) `/reconciliation*` is reconcile's API, proxied for the page.

mod error;
mod page;
mod queries;
mod reconciliation;
mod rules;
mod stream;
mod transactions;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use msgkit::Shutdown;
use msgkit::auth::TokenKey;
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
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/transactions", post(transactions::record))
        .route("/alerts", get(queries::alerts))
        .route("/alerts/stream", get(stream::stream))
        .route("/reconciliation", get(reconciliation::list))
        .route("/reconciliation/summary", get(reconciliation::summary))
        .route("/rules", get(rules::list).post(rules::create))
        .route("/rules/{id}", put(rules::update).delete(rules::disable))
        .route("/rules/{id}/enable", post(rules::enable))
        .route("/rules/{id}/disable", post(rules::disable))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
