//! Keyed state: a consumer's serde values by key (a user, an order, an account), read and
//! written in the handler's transaction, so that state, effects, outgoing events and the
//! message's inbox row commit together or not at all.
//!
//! ```no_run
//! # use msgkit::consume::{Context, HandlerError};
//! # #[derive(serde::Deserialize)] struct Payment { customer_id: String, amount_cents: i64 }
//! async fn add_up(mut ctx: Context<'_>, payment: Payment) -> Result<(), HandlerError> {
//!     let mut state = ctx.keyed_state();
//!     let total: i64 = state.get(&payment.customer_id).await?.unwrap_or(0);
//!     state.put(&payment.customer_id, &(total + payment.amount_cents)).await?;
//!     Ok(())
//! }
//! ```
//!
//! **One key at a time.** The first access to a key in a transaction takes a transaction-scoped
//! advisory lock on (consumer, key), held until commit: two deliveries of one key never
//! interleave, whichever replica or batch handles them. A batch handles its messages in
//! correlation order, so state keyed by the message's correlation id (the aggregate) cannot
//! deadlock; a handler whose keys are something else takes its batch's keys up front with
//! [`crate::consume::Batch::lock_state`], which locks them in one global order.
//!
//! **Expiry.** An entry written with a time to live is never returned once it has expired by
//! the consumer's [`Clock`], even before the consumer's sweep deletes it.
//!
//! **Size.** An entry larger than the consumer's `state_entry_limit` (JSON bytes) is refused as
//! poison: the same message would be refused on every attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};

use crate::clock::Clock;
use crate::consume::{FailureKind, HandlerError};

/// Exception type of a refused entry (`x-exception-type` of its dead letter).
pub const ENTRY_TOO_LARGE: &str = "msgkit::state::EntryTooLarge";
/// Exception type of a stored entry that no longer decodes into the type asked for.
pub const UNDECODABLE_ENTRY: &str = "msgkit::state::UndecodableEntry";

/// Whose state and by which clock: set by the consumer that runs the handler.
#[derive(Clone, Debug)]
pub struct StateScope {
    pub(crate) consumer: String,
    pub(crate) clock: Clock,
    pub(crate) entry_limit: usize,
    /// The consumer's metrics (late events), once a consumer runs the handler.
    pub(crate) metrics: Option<crate::metrics::QueueMetrics>,
    /// How often the consumer looks for due timers: a timer due sooner wakes it when set.
    pub(crate) timer_poll_interval: Duration,
}

impl Default for StateScope {
    fn default() -> Self {
        Self {
            consumer: String::new(),
            clock: Clock::system(),
            entry_limit: DEFAULT_ENTRY_LIMIT,
            metrics: None,
            timer_poll_interval: Duration::from_secs(1),
        }
    }
}

/// The largest entry by default: 64 KiB of JSON.
pub const DEFAULT_ENTRY_LIMIT: usize = 64 * 1024;

/// The consumer's keyed state inside the handler's transaction (see the module docs).
pub struct KeyedState<'a> {
    pub(crate) tx: &'a mut PgConnection,
    pub(crate) scope: &'a StateScope,
    /// Keys this handle has locked already: one lock statement per key and transaction.
    pub(crate) locked: Vec<String>,
}

impl KeyedState<'_> {
    /// The value under `key`, `None` when there is none or it has expired.
    pub async fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, HandlerError> {
        self.lock(key).await?;
        let value: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT value FROM msgkit_state \
             WHERE consumer = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(&self.scope.consumer)
        .bind(key)
        .bind(self.scope.clock.now())
        .fetch_optional(&mut *self.tx)
        .await?;
        value
            .map(|value| {
                serde_json::from_value(value).map_err(|error| {
                    HandlerError::new(
                        FailureKind::Poison,
                        UNDECODABLE_ENTRY,
                        format!("state entry {key:?} does not decode: {error}"),
                    )
                })
            })
            .transpose()
    }

    /// Store `value` under `key`, replacing what was there, without expiry.
    pub async fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), HandlerError> {
        self.write(key, value, None).await
    }

    /// Store `value` under `key` for `ttl`: after that it reads as absent.
    pub async fn put_for<T: Serialize>(
        &mut self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), HandlerError> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = self.scope.clock.now().checked_add_signed(ttl);
        self.write(
            key,
            value,
            Some(expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC)),
        )
        .await
    }

    /// Remove `key`'s entry; `true` if there was one (expired or not).
    pub async fn delete(&mut self, key: &str) -> Result<bool, HandlerError> {
        self.lock(key).await?;
        let deleted = sqlx::query("DELETE FROM msgkit_state WHERE consumer = $1 AND key = $2")
            .bind(&self.scope.consumer)
            .bind(key)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn write<T: Serialize>(
        &mut self,
        key: &str,
        value: &T,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), HandlerError> {
        let json = serde_json::to_value(value).map_err(HandlerError::poison)?;
        let size = json.to_string().len();
        if size > self.scope.entry_limit {
            return Err(HandlerError::new(
                FailureKind::Poison,
                ENTRY_TOO_LARGE,
                format!(
                    "state entry {key:?} is {size} bytes of JSON, above the limit of {} \
                     (STATE_ENTRY_LIMIT)",
                    self.scope.entry_limit
                ),
            ));
        }
        self.lock(key).await?;
        sqlx::query(
            "INSERT INTO msgkit_state (consumer, key, value, expires_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer, key) DO UPDATE \
             SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(&self.scope.consumer)
        .bind(key)
        .bind(json)
        .bind(expires_at)
        .bind(self.scope.clock.now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn lock(&mut self, key: &str) -> Result<(), sqlx::Error> {
        if self.locked.iter().any(|locked| locked == key) {
            return Ok(());
        }
        lock_key(self.tx, &self.scope.consumer, key).await?;
        self.locked.push(key.to_owned());
        Ok(())
    }
}

/// Lock (consumer, key) until the transaction ends. The two-key advisory lock space is apart
/// from the one-key space that applications tend to use; a hash collision only makes two keys
/// wait for each other.
pub(crate) async fn lock_key(
    tx: &mut PgConnection,
    consumer: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
        .bind(consumer)
        .bind(key)
        .execute(tx)
        .await?;
    Ok(())
}

/// Delete `consumer`'s entries that expired before `now`.
pub(crate) async fn delete_expired(
    pool: &PgPool,
    consumer: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM msgkit_state WHERE consumer = $1 AND expires_at <= $2")
            .bind(consumer)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
