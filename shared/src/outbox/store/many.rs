//! The outbox's multi-row statements: a batch's rows in one insert (for the relay, or for
//! direct dispatch), and the marks and hand-overs of direct dispatch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection, PgPool};
use uuid::Uuid;

use super::{FailedRow, PendingRow, insert, mark_failed};
use crate::outbox::OutboxMessage;

/// Insert plain messages (none numbered in a key sequence) with one statement; `seq` follows
/// their order.
pub(crate) async fn insert_many(
    conn: &mut PgConnection,
    messages: &[OutboxMessage],
) -> Result<(), sqlx::Error> {
    if let [message] = messages {
        return insert(conn, message).await;
    }
    sqlx::query_with(
        "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers) \
         SELECT id, aggregate_id, exchange, routing_key, message_type, payload, headers \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
              WITH ORDINALITY AS m(id, aggregate_id, exchange, routing_key, message_type, payload, headers, n) \
         ORDER BY n",
        columns(messages)?,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `messages` as the arrays an `UNNEST` insert binds as `$1` to `$7`: ids, aggregates,
/// exchanges, routing keys, types, payloads, headers.
fn columns(messages: &[OutboxMessage]) -> Result<PgArguments, sqlx::Error> {
    let mut headers = Vec::with_capacity(messages.len());
    for message in messages {
        headers.push(
            serde_json::to_value(&message.headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        );
    }
    let text =
        |field: fn(&OutboxMessage) -> &str| -> Vec<&str> { messages.iter().map(field).collect() };
    let mut arguments = PgArguments::default();
    arguments
        .add(messages.iter().map(|m| m.id).collect::<Vec<_>>())
        .and_then(|()| arguments.add(text(|m| &m.aggregate_id)))
        .and_then(|()| arguments.add(text(|m| &m.exchange)))
        .and_then(|()| arguments.add(text(|m| &m.routing_key)))
        .and_then(|()| arguments.add(text(|m| &m.message_type)))
        .and_then(|()| arguments.add(messages.iter().map(|m| &m.payload).collect::<Vec<_>>()))
        .and_then(|()| arguments.add(headers))
        .map_err(sqlx::Error::Encode)?;
    Ok(arguments)
}

/// Insert plain messages like [`insert_many`], each marked for direct dispatch (see the
/// relay's `direct` module) when it can be published as soon as the transaction commits: it is
/// the first of its aggregate in `messages` and no earlier row of its aggregate is unpublished
/// (anything else would overtake it). Those get `next_attempt_at` `lease` ahead, so no relay
/// claims them unless their process dies before publishing them, and come back as the rows to
/// publish. The others are the relay's, as [`insert_many`] writes them.
pub(crate) async fn insert_many_direct(
    conn: &mut PgConnection,
    messages: &[OutboxMessage],
    lease: Duration,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let mut arguments = columns(messages)?;
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    arguments.add(lease_ms).map_err(sqlx::Error::Encode)?;
    // The unpublished-head probe is an index lookup (`msgkit_outbox_pending_by_aggregate`).
    // Callers lock their aggregate before writing its events, so an earlier transaction of the
    // same aggregate has committed and is visible here.
    let direct: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as_with(
        "WITH m AS ( \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
                 WITH ORDINALITY AS m(id, aggregate_id, exchange, routing_key, message_type, payload, headers, n)), \
         decided AS ( \
             SELECT m.*, \
                    row_number() OVER (PARTITION BY m.aggregate_id ORDER BY m.n) = 1 \
                    AND NOT EXISTS (SELECT 1 FROM msgkit_outbox e \
                                    WHERE e.aggregate_id = m.aggregate_id AND e.published_at IS NULL) AS direct \
             FROM m), \
         inserted AS ( \
             INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers, next_attempt_at) \
             SELECT id, aggregate_id, exchange, routing_key, message_type, payload, headers, \
                    CASE WHEN direct THEN now() + $8 * interval '1 millisecond' ELSE now() END \
             FROM decided ORDER BY n \
             RETURNING id, created_at, next_attempt_at > created_at AS direct) \
         SELECT id, created_at FROM inserted WHERE direct",
        arguments,
    )
    .fetch_all(&mut *conn)
    .await?;
    let created: std::collections::HashMap<Uuid, DateTime<Utc>> = direct.into_iter().collect();
    Ok(messages
        .iter()
        .filter_map(|message| {
            let created_at = *created.get(&message.id)?;
            Some(PendingRow {
                id: message.id,
                aggregate_id: message.aggregate_id.clone(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                message_type: message.message_type.clone(),
                payload: message.payload.clone(),
                headers: serde_json::to_value(&message.headers).ok()?,
                created_at,
                attempts: 0,
                archived: false,
            })
        })
        .collect())
}

/// Mark rows published by direct dispatch (no claim's transaction holds them) and, when a
/// later row of one of their aggregates waits for them (the relay's: it was written while
/// they were unpublished), wake the relays: nothing else would before their next poll.
/// Rows the broker refused are marked for a later attempt, by a relay.
pub(crate) async fn mark_dispatched(
    pool: &PgPool,
    ids: &[Uuid],
    failed: &[FailedRow],
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    mark_failed(&mut conn, failed).await?;
    if ids.is_empty() {
        return Ok(());
    }
    // The outer query does not see the CTE's update: the marked rows still look unpublished
    // to it, hence the `NOT ... ANY`.
    let waiting: bool = sqlx::query_scalar(
        "WITH marked AS ( \
             UPDATE msgkit_outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL \
             WHERE id = ANY($1) RETURNING aggregate_id) \
         SELECT EXISTS (SELECT 1 FROM msgkit_outbox e \
                        WHERE e.published_at IS NULL AND NOT (e.id = ANY($1)) \
                          AND e.aggregate_id IN (SELECT aggregate_id FROM marked))",
    )
    .bind(ids)
    .fetch_one(&mut *conn)
    .await?;
    if waiting {
        sqlx::query("SELECT pg_notify('msgkit_outbox_' || current_schema(), '')")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Hand rows written for direct dispatch to the relays now, instead of when their lease ends
/// (their process could not publish them: broker away, shutting down).
pub(crate) async fn release(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "UPDATE msgkit_outbox SET next_attempt_at = now() \
         WHERE id = ANY($1) AND published_at IS NULL",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify('msgkit_outbox_' || current_schema(), '')")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
