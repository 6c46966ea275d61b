//! The reconcile API: `GET /reconciliation` and `GET /reconciliation/summary`. (`/healthz`,
//! `/readyz` and `/metrics` come from the kit.)

mod error;
mod queries;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use msgkit::auth::{Need, TokenKey};
use sqlx::PgPool;

pub use error::ApiError;
pub use queries::{MAX_ROWS, ReconciliationView, Summary};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// Verifies operators' tokens (`RECONCILE_TOKEN_SECRET`, else `TOKEN_SECRET`); `None`: the
    /// API answers 503, since nobody could be let in.
    pub tokens: Option<TokenKey>,
}

/// That the request carries an operator's token (`Authorization: Bearer`): reconciliations
/// are every customer's payments.
fn operator_only(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    msgkit::auth::authorize(
        state.tokens.as_ref(),
        headers,
        Need::Operator,
        chrono::Utc::now(),
    )
    .map(|_| ())
    .map_err(ApiError::Denied)
}

/// The API's routes, for operators only.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/reconciliation", get(queries::list))
        .route("/reconciliation/summary", get(queries::summary))
        .with_state(state)
}
