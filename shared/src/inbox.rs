//! The inbox: which messages a consumer has already applied.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// Record that `consumer` applies `message_id`, in the caller's transaction. Returns `false`
/// if it was applied before (a duplicate: the caller skips the effects). A concurrent attempt
/// at the same message waits here for the first one's transaction and then sees it.
pub async fn record(
    conn: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    message_type: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO msgkit_inbox (consumer, message_id, message_type) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(message_type)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Delete `consumer`'s inbox rows older than `retention` (a duplicate older than that is no
/// longer recognised: keep it well above the longest retry and replay window).
pub async fn delete_older_than(
    pool: &PgPool,
    consumer: &str,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query(
        "DELETE FROM msgkit_inbox \
         WHERE consumer = $2 AND processed_at < now() - $1 * interval '1 millisecond'",
    )
    .bind(retention_ms)
    .bind(consumer)
    .execute(pool)
    .await?
    .rows_affected())
}
