//! The inbox: which messages a consumer has already applied.

use std::collections::HashSet;
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

/// Record a batch of messages that `consumer` applies in the caller's transaction, in one
/// statement: for each of `messages` (id, type), whether it is new. Only the first of two
/// equal ids in the batch is new. Rows are inserted in id order, so two batches that share ids
/// (a redelivery racing the original) wait for each other instead of deadlocking.
pub async fn record_batch(
    conn: &mut PgConnection,
    consumer: &str,
    messages: &[(&str, &str)],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut sorted: Vec<(&str, &str)> = messages.to_vec();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let (ids, types): (Vec<&str>, Vec<&str>) = sorted.into_iter().unzip();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO msgkit_inbox (consumer, message_id, message_type) \
         SELECT $1, id, kind FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS m(id, kind, n) \
         ORDER BY n \
         ON CONFLICT (consumer, message_id) DO NOTHING \
         RETURNING message_id",
    )
    .bind(consumer)
    .bind(&ids)
    .bind(&types)
    .fetch_all(conn)
    .await?;
    let mut new: HashSet<String> = inserted.into_iter().collect();
    Ok(messages.iter().map(|(id, _)| new.remove(*id)).collect())
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
