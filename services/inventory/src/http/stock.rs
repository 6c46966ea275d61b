//! `GET /stock/{sku}`: one SKU's current stock.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use msgkit::http::Problem;

use super::AppState;
use crate::stock_feed::{self, StockValue};

/// The SKU's stock, or 404 when it is not stocked.
pub async fn one(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<StockValue>, Problem> {
    stock_feed::current(&state.pool, &sku)
        .await
        .map_err(|error| Problem::database(&error))?
        .map(Json)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no stock for SKU {sku}"),
            )
            .field("sku")
        })
}
