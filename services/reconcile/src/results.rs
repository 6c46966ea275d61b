//! The results: one row per order in `reconciliations` and every transition in
//! `reconciliation_history`, written in the handler's transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::consume::HandlerError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::join::{Outcome, Pair, gateway_outcome_name};

/// A decision to record.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The order.
    pub order_id: Uuid,
    /// Its sides as they stand.
    pub pair: &'a Pair,
    /// The new outcome.
    pub outcome: Outcome,
    /// The outcome it replaces, if any.
    pub previous: Option<Outcome>,
    /// When (the consumer's clock).
    pub at: DateTime<Utc>,
    /// First side to agreement, for a match or a late match.
    pub time_to_match: Option<Duration>,
}

/// The status an operator filters on: `matched`, `open` or `resolved`.
pub fn status_of(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Matched => "matched",
        Outcome::LateMatch => "resolved",
        _ => "open",
    }
}

/// Upsert the order's row and append the transition to its history.
pub async fn record(
    tx: &mut PgConnection,
    decision: &Decision<'_>,
    message_id: &str,
) -> Result<(), HandlerError> {
    let pair = decision.pair;
    let time_to_match_ms = decision
        .time_to_match
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "INSERT INTO reconciliations (order_id, outcome, status, app_outcome, app_amount_cents, \
             gateway_outcome, gateway_amount_cents, callback_id, first_seen_at, decided_at, \
             updated_at, time_to_match_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) \
         ON CONFLICT (order_id) DO UPDATE SET outcome = EXCLUDED.outcome, status = EXCLUDED.status, \
             app_outcome = EXCLUDED.app_outcome, app_amount_cents = EXCLUDED.app_amount_cents, \
             gateway_outcome = EXCLUDED.gateway_outcome, \
             gateway_amount_cents = EXCLUDED.gateway_amount_cents, \
             callback_id = EXCLUDED.callback_id, updated_at = EXCLUDED.updated_at, \
             time_to_match_ms = EXCLUDED.time_to_match_ms",
    )
    .bind(decision.order_id)
    .bind(decision.outcome.as_str())
    .bind(status_of(decision.outcome))
    .bind(pair.app.as_ref().map(|app| app.outcome.as_str()))
    .bind(pair.app.as_ref().and_then(|app| app.amount_cents))
    .bind(
        pair.gateway
            .as_ref()
            .map(|gateway| gateway_outcome_name(gateway.outcome)),
    )
    .bind(pair.gateway.as_ref().map(|gateway| gateway.amount_cents))
    .bind(pair.gateway.as_ref().map(|gateway| gateway.callback_id.as_str()))
    .bind(pair.first_at)
    .bind(decision.at)
    .bind(time_to_match_ms)
    .execute(&mut *tx)
    .await?;
    append_history(
        tx,
        decision.order_id,
        decision.outcome.as_str(),
        decision.previous.map(Outcome::as_str),
        decision.at,
        message_id,
    )
    .await
}

/// The order's outcome, if it was ever decided.
pub async fn outcome_of(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<String>, HandlerError> {
    Ok(
        sqlx::query_scalar("SELECT outcome FROM reconciliations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(tx)
            .await?,
    )
}

/// History entry of a side that came after the order's retention (`after-retention`): no
/// decision changes, but the operator can see it came.
pub async fn note_after_retention(
    tx: &mut PgConnection,
    order_id: Uuid,
    at: DateTime<Utc>,
    message_id: &str,
) -> Result<(), HandlerError> {
    append_history(tx, order_id, "after-retention", None, at, message_id).await
}

async fn append_history(
    tx: &mut PgConnection,
    order_id: Uuid,
    outcome: &str,
    previous: Option<&str>,
    at: DateTime<Utc>,
    message_id: &str,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO reconciliation_history (order_id, outcome, previous, at, message_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(outcome)
    .bind(previous)
    .bind(at)
    .bind(message_id)
    .execute(tx)
    .await?;
    Ok(())
}
