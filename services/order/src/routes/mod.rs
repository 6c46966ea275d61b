//! The order API. (`/healthz`, `/readyz` and `/metrics` come from the kit.)

mod orders;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use msgkit::admission::Admission;
use msgkit::rate_limit::{self, RateLimit};
use sqlx::PgPool;

/// Largest accepted request body. An order of 100 lines is far below it.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// Whether new orders are admitted (`POST /orders` asks it; reads and cancels do not).
    pub admission: Admission,
    /// Each client's limit on `POST /orders` (429), when configured.
    pub rate_limit: Option<RateLimit>,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let mut place = post(orders::place_order);
    if let Some(limit) = state.rate_limit.clone() {
        place = place.route_layer(from_fn_with_state(limit, rate_limit::guard));
    }
    Router::new()
        .route("/orders", place)
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/cancel", post(orders::cancel_order))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
