//! `GET /rebates/{customer}`: the balance and the newest lines, read in one snapshot so that
//! the lines match the balance's version.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use msgkit::auth::Need;
use serde::Serialize;
use sqlx::Executor;

use super::{ApiError, AppState, CustomerId};
use crate::balances::{self, Line};

/// The answer: a customer nothing was credited to has balance 0, version 0 and no lines
/// (200, not 404: a customer who has not paid yet is not an error, and the stream starts
/// from the same zero).
#[derive(Debug, Serialize)]
pub struct Rebates {
    /// The customer.
    pub customer: String,
    /// The balance, in cents.
    pub balance_cents: i64,
    /// The balance's version: the number of lines, the stream's event id.
    pub version: i64,
    /// Event time of the last line.
    pub updated_at: Option<DateTime<Utc>>,
    /// The newest lines first, at most [`balances::LINES_LIMIT`] (`version` counts them all).
    pub lines: Vec<Line>,
}

/// The customer's balance and lines, for a token that may read them (`Authorization:
/// Bearer`): the customer's own, or an operator's.
pub async fn rebates(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(customer): Path<String>,
) -> Result<Json<Rebates>, ApiError> {
    let customer = CustomerId::parse(customer)?;
    msgkit::auth::authorize(
        state.tokens.as_ref(),
        &headers,
        Need::ReadOf(customer.as_str()),
        Utc::now(),
    )
    .map_err(ApiError::Denied)?;
    let mut tx = state.pool.begin().await?;
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let balance = balances::balance(&mut *tx, customer.as_str()).await?;
    let lines = balances::lines(&mut *tx, customer.as_str()).await?;
    tx.commit().await?;
    Ok(Json(Rebates {
        customer: balance.customer,
        balance_cents: balance.balance_cents,
        version: balance.version,
        updated_at: balance.updated_at,
        lines,
    }))
}
