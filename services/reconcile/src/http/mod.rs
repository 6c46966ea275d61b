//! The reconcile API: `GET /reconciliation` and `GET /reconciliation/summary`. (`/healthz`,
//! `/readyz` and `/metrics` come from the kit.)

mod error;
mod queries;

use axum::Router;
use axum::routing::get;
use sqlx::PgPool;

pub use error::ApiError;
pub use queries::{MAX_ROWS, ReconciliationView, Summary};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/reconciliation", get(queries::list))
        .route("/reconciliation/summary", get(queries::summary))
        .with_state(state)
}
