//! Event time: when an event happened, and each key's watermark, the largest event time its
//! consumer has seen for it, so that a route can tell a late event from an on-time one.
//!
//! An event's time comes from its payload when its [`crate::EventType`] says so
//! (`with_event_time`), else from the millisecond creation time the kit sends with every
//! message (`x-created-at-ms`; the AMQP timestamp has whole seconds only). A route that declares
//! an allowed lateness ([`crate::consume::Routes::route_with_lateness`]) keeps a durable
//! watermark per key (the message's correlation id, i.e. its aggregate): an event older than
//! the watermark minus the lateness goes to the route's late hook and is counted in
//! `msgkit_late_events_total`, never dropped silently. The watermark is kept in the handler's
//! transaction, under the key's state lock, so one key's events are judged one at a time and a
//! rolled-back handler leaves it as it was.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::state::{StateScope, lock_key};

/// Lock `key`, raise its watermark to `event_time` if that is later, and return the watermark
/// as it was before (`None` for a key never seen).
pub(crate) async fn advance(
    tx: &mut PgConnection,
    scope: &StateScope,
    key: &str,
    event_time: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    // Its own statement: the next one then reads with a snapshot taken after the lock.
    lock_key(tx, &scope.consumer, key).await?;
    sqlx::query_scalar(
        "WITH previous AS ( \
             SELECT watermark FROM msgkit_watermarks WHERE consumer = $1 AND key = $2 \
         ), raised AS ( \
             INSERT INTO msgkit_watermarks (consumer, key, watermark) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, key) DO UPDATE \
             SET watermark = GREATEST(msgkit_watermarks.watermark, EXCLUDED.watermark) \
         ) \
         SELECT watermark FROM previous",
    )
    .bind(&scope.consumer)
    .bind(key)
    .bind(event_time)
    .fetch_optional(tx)
    .await
}
