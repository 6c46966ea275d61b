//! Per-key order through retries: a key's events are applied in the order they were written
//! to the outbox, even while one of them waits for a retry, with any concurrency and any
//! number of replicas; other keys flow meanwhile.
//!
//! **Producer.** An event type declared in a *sequence* ([`crate::EventType::in_sequence`])
//! is numbered per key (its aggregate id, which travels as the correlation id) when it is
//! written to the outbox: headers `x-key-sequence` (the sequence's name) and `x-key-seq`
//! (1, 2, 3, ... per key). Several event types may share one sequence (`account.credited`
//! and `account.debited` in `account`): they are numbered together. One sequence has one
//! producer, the service that owns its aggregates.
//!
//! **Consumer.** A consumer whose routes ask for it ([`crate::consume::Routes::in_key_order`])
//! keeps, per (sequence, key), the number it expects next, and applies a sequenced message
//! only in its turn, holding that key's row lock while its handler runs:
//! - the expected one is handled; on success (or once it is dead-lettered) the key expects
//!   the next number, and a message of that number parked meanwhile is released to the
//!   queue, in the same transaction (through the outbox, under its own message id);
//! - a later one is *parked*: kept in `msgkit_key_parked` and acknowledged, so it holds no
//!   consumer slot and no prefetch while it waits (outcome `parked`);
//! - an earlier one that the inbox has not seen is a replay of a dead-lettered message: it is
//!   applied at once, after what the key has done since, which is what an operator replaying
//!   it asks for.
//!
//! While the expected message waits for a retry, the key waits with it (however long the
//! backoff), then goes on in order. A number that never comes (the producer wrote it before
//! this consumer existed, or to a type this queue is not bound to) would stall its key: after
//! `key_order_gap_timeout` without it, and with no retry pending, the key skips to its lowest
//! parked message (`msgkit_key_order_gaps_total`, and a warning). So a consumer ordering a
//! sequence must be bound to every type in it.
//!
//! Ordered consumers handle one message per transaction (no batches), and need the inbox
//! (a released message may meet its own redelivered original) and the outbox relay.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use crate::consume::IncomingMessage;
use crate::message::CREATED_AT_HEADER;
use crate::outbox::{self, OutboxError, OutboxMessage};

/// The header naming an event's sequence.
pub const KEY_SEQUENCE_HEADER: &str = "x-key-sequence";
/// The header carrying an event's number in its key's sequence (1, 2, ...).
pub const KEY_SEQ_HEADER: &str = "x-key-seq";
/// A row header the relay publishes as the message id instead of the row's own: a released
/// parked message keeps the id its inbox row will be recorded under.
pub(crate) const MESSAGE_ID_HEADER: &str = "x-msgkit-message-id";

/// Where a sequenced message stands: its sequence, its key and its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) sequence: String,
    pub(crate) key: String,
    pub(crate) seq: i64,
}

impl Position {
    /// The position of `message`, when it is sequenced (and well formed).
    pub(crate) fn of(message: &IncomingMessage) -> Option<Self> {
        let sequence = message.header(KEY_SEQUENCE_HEADER)?;
        let seq = message.header(KEY_SEQ_HEADER)?.parse::<i64>().ok()?;
        Some(Self {
            sequence: sequence.to_owned(),
            key: message.correlation_id().unwrap_or_default().to_owned(),
            seq,
        })
    }
}

/// A sequenced message's turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It is the one its key expects.
    Next,
    /// An earlier one has not been applied yet: park it.
    Ahead { expected: i64 },
    /// Its key has gone past it: a replay (or a duplicate, which the inbox tells).
    Behind { expected: i64 },
}

/// Lock `position`'s key for this transaction and tell its turn. A key seen for the first
/// time expects number 1.
pub(crate) async fn turn(
    conn: &mut PgConnection,
    consumer: &str,
    position: &Position,
) -> Result<Turn, sqlx::Error> {
    // The no-op update takes the row lock and returns the row in one round trip, created or not.
    let expected: i64 = sqlx::query_scalar(
        "INSERT INTO msgkit_key_order (consumer, sequence, key, next_seq) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (consumer, sequence, key) DO UPDATE SET next_seq = msgkit_key_order.next_seq \
         RETURNING next_seq",
    )
    .bind(consumer)
    .bind(&position.sequence)
    .bind(&position.key)
    .fetch_one(conn)
    .await?;
    Ok(match position.seq.cmp(&expected) {
        std::cmp::Ordering::Equal => Turn::Next,
        std::cmp::Ordering::Greater => Turn::Ahead { expected },
        std::cmp::Ordering::Less => Turn::Behind { expected },
    })
}

/// Keep `message` until its turn. Parking it twice (a redelivery) keeps one copy.
pub(crate) async fn park(
    conn: &mut PgConnection,
    consumer: &str,
    position: &Position,
    message: &IncomingMessage,
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let payload: serde_json::Value = serde_json::from_slice(message.body())?;
    let outgoing = message.to_outgoing("", "");
    let mut headers = outgoing.headers;
    // Kept as text like the other row headers; the relay gives it back its own place.
    headers.insert(
        CREATED_AT_HEADER.to_owned(),
        outgoing.created_at.timestamp_millis().to_string(),
    );
    sqlx::query(
        "INSERT INTO msgkit_key_parked \
         (consumer, sequence, key, seq, message_id, message_type, headers, payload, parked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(&position.sequence)
    .bind(&position.key)
    .bind(position.seq)
    .bind(&outgoing.message_id)
    .bind(&outgoing.message_type)
    .bind(serde_json::to_value(&headers)?)
    .bind(payload)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `position` is done with (applied or dead-lettered): its key expects the next number, and
/// the parked message of that number, if any, is released to `queue`.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    consumer: &str,
    queue: &str,
    position: &Position,
) -> Result<(), OutboxError> {
    sqlx::query(
        "UPDATE msgkit_key_order SET next_seq = $4 + 1, retrying_since = NULL \
         WHERE consumer = $1 AND sequence = $2 AND key = $3 AND next_seq = $4",
    )
    .bind(consumer)
    .bind(&position.sequence)
    .bind(&position.key)
    .bind(position.seq)
    .execute(&mut *conn)
    .await?;
    let next = Position {
        seq: position.seq + 1,
        ..position.clone()
    };
    release(conn, consumer, queue, &next).await?;
    Ok(())
}

/// The expected message of `position`'s key failed and waits for a retry: no gap timeout may
/// skip it.
pub(crate) async fn mark_retrying(
    conn: &mut PgConnection,
    consumer: &str,
    position: &Position,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE msgkit_key_order SET retrying_since = COALESCE(retrying_since, $5) \
         WHERE consumer = $1 AND sequence = $2 AND key = $3 AND next_seq = $4",
    )
    .bind(consumer)
    .bind(&position.sequence)
    .bind(&position.key)
    .bind(position.seq)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Send the parked message at `position` back to `queue` through the outbox, under its own
/// message id; `false` when none is parked there.
async fn release(
    conn: &mut PgConnection,
    consumer: &str,
    queue: &str,
    position: &Position,
) -> Result<bool, OutboxError> {
    let row = sqlx::query(
        "DELETE FROM msgkit_key_parked \
         WHERE consumer = $1 AND sequence = $2 AND key = $3 AND seq = $4 \
         RETURNING message_id, message_type, headers, payload",
    )
    .bind(consumer)
    .bind(&position.sequence)
    .bind(&position.key)
    .bind(position.seq)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let message_id: String = row.try_get("message_id")?;
    let message_type: String = row.try_get("message_type")?;
    let headers: serde_json::Value = row.try_get("headers")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let mut message = OutboxMessage::event(message_type, &position.key, &payload)?
        .with_exchange("")
        .with_routing_key(queue)
        .with_header(MESSAGE_ID_HEADER, message_id);
    if let serde_json::Value::Object(headers) = headers {
        for (name, value) in headers {
            if let serde_json::Value::String(value) = value {
                message = message.with_header(name, value);
            }
        }
    }
    outbox::enqueue(conn, &message).await?;
    Ok(true)
}

/// Skip the gaps of `consumer`'s keys: a key whose oldest parked message has waited longer than
/// `timeout` (by `now`) for a number that never came, and which has no retry pending, goes on
/// from its lowest parked message. Returns how many keys skipped.
pub(crate) async fn skip_gaps(
    pool: &PgPool,
    consumer: &str,
    queue: &str,
    now: DateTime<Utc>,
    timeout: std::time::Duration,
) -> Result<u64, OutboxError> {
    let cutoff = now - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let stalled: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT sequence, key FROM msgkit_key_parked \
         WHERE consumer = $1 AND parked_at < $2 LIMIT 500",
    )
    .bind(consumer)
    .bind(cutoff)
    .fetch_all(pool)
    .await?;
    let mut skipped = 0;
    for (sequence, key) in stalled {
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "SELECT o.next_seq, o.retrying_since, \
                    (SELECT min(p.seq) FROM msgkit_key_parked p WHERE p.consumer = o.consumer \
                       AND p.sequence = o.sequence AND p.key = o.key) AS lowest \
             FROM msgkit_key_order o WHERE o.consumer = $1 AND o.sequence = $2 AND o.key = $3 \
             FOR UPDATE OF o",
        )
        .bind(consumer)
        .bind(&sequence)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let next: i64 = row.try_get("next_seq")?;
        let retrying: Option<DateTime<Utc>> = row.try_get("retrying_since")?;
        let Some(lowest) = row.try_get::<Option<i64>, _>("lowest")? else {
            continue;
        };
        if lowest > next {
            if retrying.is_some() {
                continue;
            }
            tracing::warn!(
                sequence,
                key,
                expected = next,
                skipped_to = lowest,
                "a key's expected message never came; going on with its next parked one"
            );
            sqlx::query(
                "UPDATE msgkit_key_order SET next_seq = $4 \
                 WHERE consumer = $1 AND sequence = $2 AND key = $3",
            )
            .bind(consumer)
            .bind(&sequence)
            .bind(&key)
            .bind(lowest)
            .execute(&mut *tx)
            .await?;
            skipped += 1;
        }
        // At or behind its key's turn (its release was lost with a crash): it goes through the
        // queue again, where the inbox tells a duplicate.
        let position = Position {
            sequence,
            key,
            seq: lowest,
        };
        release(&mut tx, consumer, queue, &position).await?;
        tx.commit().await?;
    }
    Ok(skipped)
}
