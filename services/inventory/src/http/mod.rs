//! Inventory's public API: stock availability, as values and as a live stream. No token:
//! availability is public. (`/healthz`, `/readyz` and `/metrics` come from the kit.)

mod stock;
mod stream;

use axum::Router;
use axum::routing::get;
use msgkit::Shutdown;
use sqlx::PgPool;

use crate::metrics::InventoryMetrics;
use crate::stock_feed::Feed;

pub use stream::{KEEP_ALIVE, MAX_SKUS};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service's database (its schema on the search path).
    pub pool: PgPool,
    /// This replica's stock feed.
    pub feed: Feed,
    /// The service's metrics.
    pub metrics: InventoryMetrics,
    /// Triggered when the service stops: open streams end on it.
    pub shutdown: Shutdown,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        // The literal segment wins over the capture in axum's router.
        .route("/stock/stream", get(stream::stream))
        .route("/stock/{sku}", get(stock::one))
        .with_state(state)
}
