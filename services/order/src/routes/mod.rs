//! HTTP routes: the order API and the operational endpoints.

mod health;
mod orders;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use msgkit::outbox::RelayStats;
use sqlx::PgPool;

/// Largest accepted request body. An order of 100 lines is far below it.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// The outbox relay's live counters.
    pub relay: Arc<RelayStats>,
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(orders::place_order))
        .route("/orders/{id}", get(orders::get_order))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
