//! Reading balances and lines back, for the API and the streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Most lines `GET /rebates/{customer}` returns (the newest).
pub const LINES_LIMIT: i64 = 500;

/// A customer's balance, as the API and the stream show it. A customer with no line has
/// balance 0 at version 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The customer.
    pub customer: String,
    /// The sum of their lines' rebates, in cents.
    pub balance_cents: i64,
    /// How many lines it sums: grows by one with each change (the stream's event id).
    pub version: i64,
    /// Event time of the last line, if any.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One line of a customer's rebates.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Line {
    /// The order paid or refunded.
    pub order_id: Uuid,
    /// `payment` or `refund`.
    pub kind: String,
    /// The payment's amount, or minus it for a refund.
    pub amount_cents: i64,
    /// The credit, or its reversal.
    pub rebate_cents: i64,
    /// The rate applied, in basis points (100 = 1 %).
    pub rate_bp: i32,
    /// When the payment or refund happened.
    pub at: DateTime<Utc>,
}

/// `customer`'s balance (0 at version 0 when they have none).
pub async fn balance<'e>(db: impl PgExecutor<'e>, customer: &str) -> Result<Balance, sqlx::Error> {
    let row: Option<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT balance_cents, version, updated_at FROM rebate_balances WHERE customer_id = $1",
    )
    .bind(customer)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((balance_cents, version, updated_at)) => Balance {
            customer: customer.to_owned(),
            balance_cents,
            version,
            updated_at: Some(updated_at),
        },
        None => Balance {
            customer: customer.to_owned(),
            balance_cents: 0,
            version: 0,
            updated_at: None,
        },
    })
}

/// `customer`'s newest lines, newest first, at most [`LINES_LIMIT`].
pub async fn lines<'e>(db: impl PgExecutor<'e>, customer: &str) -> Result<Vec<Line>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, kind, amount_cents, rebate_cents, rate_bp, at FROM rebate_lines
          WHERE customer_id = $1 ORDER BY at DESC, order_id, kind DESC LIMIT $2",
    )
    .bind(customer)
    .bind(LINES_LIMIT)
    .fetch_all(db)
    .await
}
