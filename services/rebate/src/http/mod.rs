//! The rebate API: `GET /rebates/{customer}` and its stream. (`/healthz`, `/readyz` and
//! `/metrics` come from the kit.)

mod customer;
mod error;
mod rebates;
mod stream;

use axum::Router;
use axum::routing::get;
use msgkit::Shutdown;
use msgkit::auth::TokenKey;
use sqlx::PgPool;

use crate::feed::Feed;
use crate::metrics::RebateMetrics;

pub use customer::{CustomerId, MAX_CUSTOMER_CHARS};
pub use error::ApiError;
pub use rebates::Rebates;
pub use stream::KEEP_ALIVE;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// Verifies the API's tokens (a customer reads their own rebates, an operator anyone's);
    /// `None` when no secret is configured: every endpoint then answers 503.
    pub tokens: Option<TokenKey>,
    /// This replica's balance feed.
    pub feed: Feed,
    /// The service's metrics.
    pub metrics: RebateMetrics,
    /// Triggered when the service stops: open streams end on it.
    pub shutdown: Shutdown,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/rebates/{customer}", get(rebates::rebates))
        .route("/rebates/{customer}/stream", get(stream::stream))
        .with_state(state)
}
