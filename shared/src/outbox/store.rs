//! The outbox's SQL, in one place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::OutboxMessage;

/// A claimed, not yet published row.
#[derive(Debug)]
pub(crate) struct PendingRow {
    pub id: Uuid,
    pub aggregate_id: String,
    pub exchange: String,
    pub routing_key: String,
    pub message_type: String,
    pub payload: serde_json::Value,
    pub headers: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

/// A row that could not be published and when to try it again.
#[derive(Debug)]
pub(crate) struct FailedRow {
    pub id: Uuid,
    pub error: String,
    pub retry_in: Duration,
}

pub(crate) async fn insert(
    conn: &mut PgConnection,
    message: &OutboxMessage,
) -> Result<(), sqlx::Error> {
    let headers =
        serde_json::to_value(&message.headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(message.id)
    .bind(&message.aggregate_id)
    .bind(&message.exchange)
    .bind(&message.routing_key)
    .bind(&message.message_type)
    .bind(&message.payload)
    .bind(headers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lock up to `limit` publishable rows: each the oldest unpublished row of its aggregate, due
/// for an attempt, and not locked by another relay. Taking only heads of aggregates is what
/// keeps per-aggregate order with several relays: the second event of an order is not a
/// candidate until the first is marked published, and a head locked by one relay is skipped
/// (not waited for) by the others.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.aggregate_id, o.exchange, o.routing_key, o.message_type, o.payload, \
                o.headers, o.created_at, o.attempts \
         FROM msgkit_outbox o \
         WHERE o.published_at IS NULL \
           AND o.next_attempt_at <= now() \
           AND NOT EXISTS ( \
               SELECT 1 FROM msgkit_outbox e \
               WHERE e.aggregate_id = o.aggregate_id AND e.published_at IS NULL AND e.seq < o.seq) \
         ORDER BY o.seq \
         LIMIT $1 \
         FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(PendingRow {
                id: row.try_get("id")?,
                aggregate_id: row.try_get("aggregate_id")?,
                exchange: row.try_get("exchange")?,
                routing_key: row.try_get("routing_key")?,
                message_type: row.try_get("message_type")?,
                payload: row.try_get("payload")?,
                headers: row.try_get("headers")?,
                created_at: row.try_get("created_at")?,
                attempts: row.try_get("attempts")?,
            })
        })
        .collect()
}

pub(crate) async fn mark_published(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE msgkit_outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL \
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn mark_failed(
    conn: &mut PgConnection,
    failed: &[FailedRow],
) -> Result<(), sqlx::Error> {
    if failed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = failed.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    let delays: Vec<i64> = failed
        .iter()
        .map(|f| i64::try_from(f.retry_in.as_millis()).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(
        "UPDATE msgkit_outbox o \
         SET attempts = o.attempts + 1, last_error = f.error, \
             next_attempt_at = now() + f.delay_ms * interval '1 millisecond' \
         FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS f(id, error, delay_ms) \
         WHERE o.id = f.id",
    )
    .bind(ids)
    .bind(errors)
    .bind(delays)
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete up to `limit` rows published before `retention` ago; returns how many went.
pub(crate) async fn delete_published_before(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let result = sqlx::query(
        "DELETE FROM msgkit_outbox WHERE id IN ( \
             SELECT id FROM msgkit_outbox \
             WHERE published_at IS NOT NULL \
               AND published_at < now() - $1 * interval '1 millisecond' \
             LIMIT $2)",
    )
    .bind(retention_ms)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// How far behind the relay is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    /// Rows not yet published.
    pub pending: i64,
    /// Age of the oldest unpublished row (zero when there is none).
    pub oldest_pending_age: Duration,
    /// Unpublished rows whose last attempt failed (unroutable, nacked): the ones to look at.
    pub failing: i64,
}

/// The outbox backlog of the pool's schema.
pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS pending, \
                count(*) FILTER (WHERE last_error IS NOT NULL) AS failing, \
                COALESCE(EXTRACT(EPOCH FROM (now() - min(created_at)))::float8, 0) AS oldest_secs \
         FROM msgkit_outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    let oldest: f64 = row.try_get("oldest_secs")?;
    Ok(Backlog {
        pending: row.try_get("pending")?,
        failing: row.try_get("failing")?,
        oldest_pending_age: Duration::from_secs_f64(oldest.max(0.0)),
    })
}

/// The notification channel the outbox trigger of the pool's current schema signals.
pub(crate) async fn notify_channel(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT 'msgkit_outbox_' || current_schema()")
        .fetch_one(pool)
        .await
}
