//! Reading what reconcile decided from its `reconciliations` table (schema `reconcile`), and
//! the figures made of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::CliError;

fn other(e: sqlx::Error) -> CliError {
    CliError::Other(anyhow::anyhow!(
        "reconcile stage: reading reconciliations: {e}"
    ))
}

/// Orders decided so far, and the latest decision's time (the handler's clock when it
/// handled the deciding side: this machine's).
pub async fn progress(pool: &PgPool) -> Result<(usize, Option<DateTime<Utc>>), CliError> {
    let (count, last): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), max(decided_at) FROM reconcile.reconciliations")
            .fetch_one(pool)
            .await
            .map_err(other)?;
    Ok((usize::try_from(count).unwrap_or_default(), last))
}

/// Decided orders by outcome.
pub async fn by_outcome(pool: &PgPool) -> Result<BTreeMap<String, i64>, CliError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM reconcile.reconciliations GROUP BY outcome")
            .fetch_all(pool)
            .await
            .map_err(other)?;
    Ok(rows.into_iter().collect())
}

/// Which of `orders` are decided.
pub async fn decided_among(pool: &PgPool, orders: &[Uuid]) -> Result<Vec<Uuid>, CliError> {
    sqlx::query_scalar("SELECT order_id FROM reconcile.reconciliations WHERE order_id = ANY($1)")
        .bind(orders)
        .fetch_all(pool)
        .await
        .map_err(other)
}

/// One decided order as the table holds it.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub order_id: Uuid,
    pub outcome: String,
    pub decided_at: DateTime<Utc>,
    /// reconcile's own time to match: its first side handled to its second.
    pub time_to_match_ms: Option<i64>,
}

/// The rows of `orders`.
pub async fn rows(pool: &PgPool, orders: &[Uuid]) -> Result<Vec<Row>, CliError> {
    sqlx::query_as(
        "SELECT order_id, outcome, decided_at, time_to_match_ms \
         FROM reconcile.reconciliations WHERE order_id = ANY($1)",
    )
    .bind(orders)
    .fetch_all(pool)
    .await
    .map_err(other)
}

/// Orders per second from the first publish to the last decision (0 when the clock went
/// backwards or nothing was decided).
pub fn per_second(orders: usize, first_publish: DateTime<Utc>, last: DateTime<Utc>) -> f64 {
    let elapsed = (last - first_publish).num_microseconds().unwrap_or(0) as f64 / 1e6;
    if elapsed <= 0.0 {
        return 0.0;
    }
    orders as f64 / elapsed
}

/// Milliseconds of each (from, to) pair, sorted, negative where `to` came first (reconcile
/// may begin handling a side before its publisher has the broker's confirm).
pub fn sorted_ms(pairs: impl IntoIterator<Item = (DateTime<Utc>, DateTime<Utc>)>) -> Vec<f64> {
    let mut ms: Vec<f64> = pairs
        .into_iter()
        .map(|(from, to)| (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn the_rate_is_orders_over_first_publish_to_last_decision() {
        let t0 = Utc::now();
        assert_eq!(per_second(1_000, t0, t0 + TimeDelta::seconds(4)), 250.0);
        assert_eq!(per_second(1_000, t0, t0), 0.0);
        assert_eq!(per_second(1_000, t0, t0 - TimeDelta::seconds(1)), 0.0);
    }

    #[test]
    fn latencies_are_sorted_milliseconds_negative_when_the_end_came_first() {
        let t0 = Utc::now();
        let ms = sorted_ms([
            (t0, t0 + TimeDelta::milliseconds(30)),
            (t0, t0 + TimeDelta::microseconds(1_500)),
            (t0, t0 - TimeDelta::milliseconds(2)),
        ]);
        assert_eq!(ms, vec![-2.0, 1.5, 30.0]);
    }
}
