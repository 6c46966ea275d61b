//! After the cluster test: the example saga's invariants, read from its databases, and the
//! figures.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::CliError;

/// Stock of every SKU.
pub async fn stock(pool: &PgPool) -> Result<BTreeMap<String, i64>, CliError> {
    let rows = sqlx::query("SELECT sku, available::bigint AS available FROM inventory.stock")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("sku").map_err(db)?,
                r.try_get("available").map_err(db)?,
            ))
        })
        .collect()
}

fn db(error: sqlx::Error) -> CliError {
    CliError::Other(anyhow::anyhow!("reading the run's database: {error}"))
}

/// Order ids among `ids` that are not yet in a final state.
pub async fn pending(pool: &PgPool, ids: &[uuid::Uuid]) -> Result<Vec<uuid::Uuid>, CliError> {
    sqlx::query_scalar("SELECT id FROM orders.orders WHERE id = ANY($1) AND status = 'pending'")
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(db)
}

/// Unpublished outbox rows across the services' schemas.
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, CliError> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM orders.msgkit_outbox WHERE published_at IS NULL) \
              + (SELECT count(*) FROM inventory.msgkit_outbox WHERE published_at IS NULL) \
              + (SELECT count(*) FROM payment.msgkit_outbox WHERE published_at IS NULL)",
    )
    .fetch_one(pool)
    .await
    .map_err(db)
}

/// What the checks found.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub violations: Vec<String>,
    pub by_status: BTreeMap<String, i64>,
    pub stuck_in_dlq: usize,
    pub charges: i64,
    pub notifications: i64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Check every invariant of the run.
pub async fn invariants(
    pool: &PgPool,
    accepted: &BTreeSet<uuid::Uuid>,
    initial_stock: &BTreeMap<String, i64>,
) -> Result<Findings, CliError> {
    let mut f = Findings::default();
    let ids: Vec<uuid::Uuid> = accepted.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT o.id, o.status, \
                count(r.*) FILTER (WHERE r.status = 'reserved') AS reserved, \
                count(r.*) FILTER (WHERE r.status = 'released') AS released, \
                (SELECT count(*) FROM payment.gateway_charges c \
                  WHERE c.idempotency_key = 'order-' || o.id::text AND c.outcome = 'captured') AS captured, \
                (SELECT count(*) FROM notify.notifications n WHERE n.order_id = o.id) AS notified, \
                (SELECT count(*) FROM notify.notifications n WHERE n.order_id = o.id AND n.status = o.status) AS notified_right \
         FROM orders.orders o LEFT JOIN inventory.reservations r ON r.order_id = o.id \
         WHERE o.id = ANY($1) GROUP BY o.id, o.status",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    if rows.len() != accepted.len() {
        f.violations.push(format!(
            "{} order(s) got a 202 but are not in the database",
            accepted.len() - rows.len()
        ));
    }
    for row in &rows {
        let id: uuid::Uuid = row.try_get("id").map_err(db)?;
        let status: String = row.try_get("status").map_err(db)?;
        let reserved: i64 = row.try_get("reserved").map_err(db)?;
        let released: i64 = row.try_get("released").map_err(db)?;
        let captured: i64 = row.try_get("captured").map_err(db)?;
        let notified: i64 = row.try_get("notified").map_err(db)?;
        let notified_right: i64 = row.try_get("notified_right").map_err(db)?;
        *f.by_status.entry(status.clone()).or_default() += 1;
        f.charges += captured;
        f.notifications += notified;
        let mut bad = |what: String| f.violations.push(format!("order {id}: {what}"));
        match status.as_str() {
            "pending" => {
                bad("never reached a final state (lost)".to_owned());
                if notified > 0 {
                    bad("notified while pending".to_owned());
                }
            }
            "confirmed" => {
                if reserved == 0 || released > 0 {
                    bad(format!(
                        "confirmed with {reserved} reserved / {released} released lines"
                    ));
                }
                if captured != 1 {
                    bad(format!("confirmed with {captured} captured charges"));
                }
            }
            "cancelled" => {
                if reserved > 0 {
                    bad(format!("cancelled but {reserved} line(s) still reserved"));
                }
                if captured > 0 {
                    bad("cancelled but charged".to_owned());
                }
            }
            "rejected" => {
                if reserved + released > 0 || captured > 0 {
                    bad("rejected but stock was reserved or a charge taken".to_owned());
                }
            }
            other => bad(format!("unknown status {other}")),
        }
        if status != "pending" && (notified != 1 || notified_right != 1) {
            f.violations
                .push(format!("order {id}: {notified} notification(s) for final state {status} (expected exactly one)"));
        }
    }
    // Stock: what is missing is exactly what is still reserved.
    let now = stock(pool).await?;
    let reserved: BTreeMap<String, i64> = sqlx::query(
        "SELECT sku, sum(quantity)::bigint AS q FROM inventory.reservations WHERE status = 'reserved' GROUP BY sku",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?
    .iter()
    .filter_map(|r| Some((r.try_get("sku").ok()?, r.try_get("q").ok()?)))
    .collect();
    for (sku, initial) in initial_stock {
        let expected = initial - reserved.get(sku).copied().unwrap_or(0);
        let actual = now.get(sku).copied().unwrap_or(0);
        if actual != expected {
            f.violations.push(format!(
                "stock of {sku} is {actual}, expected {expected} (initial {initial} minus reserved)"
            ));
        }
    }
    // End-to-end latency: accepted to notified.
    let latency = sqlx::query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 \
         FROM (SELECT EXTRACT(EPOCH FROM (n.sent_at - o.created_at)) * 1000 AS ms \
               FROM orders.orders o JOIN notify.notifications n ON n.order_id = o.id \
               WHERE o.id = ANY($1)) t",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    f.latency_p50_ms = latency.try_get::<Option<f64>, _>("p50").map_err(db)?;
    f.latency_p99_ms = latency.try_get::<Option<f64>, _>("p99").map_err(db)?;
    Ok(f)
}

/// From `at` (the fault) until an order placed after `ended` (the fault's action over) had
/// gone through every service.
pub async fn recovery(
    pool: &PgPool,
    at: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> Result<Option<f64>, CliError> {
    let first: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(n.sent_at) FROM notify.notifications n JOIN orders.orders o ON o.id = n.order_id \
         WHERE o.created_at >= $1",
    )
    .bind(ended)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(first.map(|t| (t - at).num_milliseconds() as f64 / 1000.0))
}
