//! Durable timers: a handler sets, resets or cancels a timer named by (name, key) for an
//! instant, with a small serde payload, in its own transaction. When the instant comes (by the
//! consumer's [`crate::clock::Clock`]) the timer fires as a message to the consumer's own queue
//! through the outbox, and a route handles it like any message: inbox, retries, dead letters
//! and tracing all apply.
//!
//! ```no_run
//! use chrono::{DateTime, Utc};
//! use msgkit::consume::{Context, HandlerError, Routes};
//! use msgkit::timer::{Fired, TimerType};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Payment { id: String }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Pending { payment_id: String }
//! const CALLBACK_DUE: TimerType<Pending> = TimerType::new("callback-due");
//!
//! async fn charged(mut ctx: Context<'_>, payment: Payment) -> Result<(), HandlerError> {
//!     let at = ctx.now() + chrono::Duration::minutes(10);
//!     let pending = Pending { payment_id: payment.id.clone() };
//!     ctx.timers().set(CALLBACK_DUE, &payment.id, at, &pending).await
//! }
//!
//! async fn callback_overdue(mut ctx: Context<'_>, fired: Fired<Pending>) -> Result<(), HandlerError> {
//!     if fired.overdue() {
//!         tracing::warn!(key = fired.key(), lateness = ?fired.lateness(), "fired late");
//!     }
//!     Ok(())
//! }
//! # #[allow(dead_code)] fn routes(r: Routes) -> Routes { r.on_timer(CALLBACK_DUE, callback_overdue) }
//! ```
//!
//! **Once.** Firing claims due timers with `FOR UPDATE SKIP LOCKED` and, in one transaction,
//! writes their outbox messages and deletes them: with any number of replicas each timer is
//! fired by one of them, and the inbox makes its handling once. A service whose routes handle
//! timers must run the outbox relay ([`crate::service::Service::with_relay`]).
//!
//! **Cancel and reset** act on a timer not yet fired. Once its message is in the outbox (the
//! timer no longer pending), `cancel` returns `false` and setting it again makes a new timer:
//! a handler that must ignore a fired timer after a cancel checks its own state.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::consume::{FailureKind, HandlerError, IncomingMessage};
use crate::outbox::{self, OutboxError, OutboxMessage};
use crate::state::StateScope;

/// Header of a fired timer: its due instant, milliseconds since the Unix epoch.
pub const DUE_AT_HEADER: &str = "x-timer-due-at-ms";
/// A fired timer handled later than this after its instant is overdue.
pub const OVERDUE_AFTER: Duration = Duration::from_secs(1);
/// Exception type of a timer message without a valid [`DUE_AT_HEADER`].
pub const NOT_A_TIMER: &str = "msgkit::timer::NotATimer";
/// Exception type of a timer whose payload is larger than the consumer's `state_entry_limit`.
pub const PAYLOAD_TOO_LARGE: &str = "msgkit::timer::PayloadTooLarge";
/// Message types of fired timers start with this, then the timer's name.
pub const MESSAGE_TYPE_PREFIX: &str = "msgkit.timer.";

/// A timer's name and, as a type parameter, its payload, declared once like an
/// [`crate::EventType`].
pub struct TimerType<P> {
    name: &'static str,
    payload: PhantomData<fn() -> P>,
}

impl<P> TimerType<P> {
    /// The timer named `name` (unique within its consumer).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            payload: PhantomData,
        }
    }

    /// The name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The AMQP `type` of its fired messages: `msgkit.timer.<name>`.
    pub fn message_type(&self) -> String {
        format!("{MESSAGE_TYPE_PREFIX}{}", self.name)
    }
}

impl<P> Clone for TimerType<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for TimerType<P> {}

impl<P> fmt::Debug for TimerType<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerType({:?})", self.name)
    }
}

/// The consumer's timers inside the handler's transaction (see the module docs).
pub struct Timers<'a> {
    pub(crate) tx: &'a mut PgConnection,
    pub(crate) scope: &'a StateScope,
}

impl Timers<'_> {
    /// Fire `timer` for `key` at `at` with `payload`, replacing the pending one of that name
    /// and key if any. An instant already past fires at once.
    pub async fn set<P: Serialize>(
        &mut self,
        timer: TimerType<P>,
        key: &str,
        at: DateTime<Utc>,
        payload: &P,
    ) -> Result<(), HandlerError> {
        let json = serde_json::to_value(payload).map_err(HandlerError::poison)?;
        // A timer's payload travels in an outbox row and a message: small, like a state entry.
        let size = json.to_string().len();
        if size > self.scope.entry_limit {
            return Err(HandlerError::new(
                crate::consume::FailureKind::Poison,
                PAYLOAD_TOO_LARGE,
                format!(
                    "timer {:?} for key {key:?} has a payload of {size} bytes of JSON, above the \
                     limit of {} (STATE_ENTRY_LIMIT)",
                    timer.name(),
                    self.scope.entry_limit
                ),
            ));
        }
        let trace = crate::telemetry::context::current().map(|trace| trace.to_string());
        let now = self.scope.clock.now();
        sqlx::query(
            "INSERT INTO msgkit_timers (consumer, name, key, due_at, payload, traceparent, set_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (consumer, name, key) DO UPDATE \
             SET due_at = EXCLUDED.due_at, payload = EXCLUDED.payload, \
                 traceparent = EXCLUDED.traceparent, set_at = EXCLUDED.set_at",
        )
        .bind(&self.scope.consumer)
        .bind(timer.name())
        .bind(key)
        .bind(at)
        .bind(json)
        .bind(trace)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        // A timer due later than the next poll is found by polling; a sooner one wakes the
        // firing task when this transaction commits.
        let poll = chrono::Duration::from_std(self.scope.timer_poll_interval)
            .unwrap_or(chrono::Duration::MAX);
        if now.checked_add_signed(poll).is_none_or(|soon| at <= soon) {
            sqlx::query("SELECT pg_notify('msgkit_timers_' || current_schema(), $1)")
                .bind(&self.scope.consumer)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// [`Timers::set`] for `after` from now, by the consumer's clock.
    pub async fn set_in<P: Serialize>(
        &mut self,
        timer: TimerType<P>,
        key: &str,
        after: Duration,
        payload: &P,
    ) -> Result<(), HandlerError> {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        let now = self.scope.clock.now();
        let at = now
            .checked_add_signed(after)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.set(timer, key, at, payload).await
    }

    /// Cancel `timer` for `key`; `true` if one was pending (not yet fired).
    pub async fn cancel<P>(
        &mut self,
        timer: TimerType<P>,
        key: &str,
    ) -> Result<bool, HandlerError> {
        let deleted =
            sqlx::query("DELETE FROM msgkit_timers WHERE consumer = $1 AND name = $2 AND key = $3")
                .bind(&self.scope.consumer)
                .bind(timer.name())
                .bind(key)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
        Ok(deleted > 0)
    }

    /// When `timer` for `key` is due, if it is pending.
    pub async fn due_at<P>(
        &mut self,
        timer: TimerType<P>,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, HandlerError> {
        Ok(sqlx::query_scalar(
            "SELECT due_at FROM msgkit_timers WHERE consumer = $1 AND name = $2 AND key = $3",
        )
        .bind(&self.scope.consumer)
        .bind(timer.name())
        .bind(key)
        .fetch_optional(&mut *self.tx)
        .await?)
    }
}

/// A timer that fired, as its route receives it.
#[derive(Clone, Debug)]
pub struct Fired<P> {
    key: String,
    due_at: DateTime<Utc>,
    handled_at: DateTime<Utc>,
    payload: P,
}

impl<P> Fired<P> {
    /// The key it was set for (also the message's correlation id).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instant it was set for.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.due_at
    }

    /// The payload it was set with.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The payload, owned.
    pub fn into_payload(self) -> P {
        self.payload
    }

    /// How long after its instant it is being handled, by the consumer's clock (zero if
    /// early, which only clocks apart across replicas can make).
    pub fn lateness(&self) -> Duration {
        (self.handled_at - self.due_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether it is handled more than [`OVERDUE_AFTER`] late (the service was down, or
    /// behind).
    pub fn overdue(&self) -> bool {
        self.lateness() > OVERDUE_AFTER
    }

    /// Decode a fired timer message, handled now at `handled_at`; anything undecodable is
    /// poison.
    pub(crate) fn decode(
        message: &IncomingMessage,
        handled_at: DateTime<Utc>,
    ) -> Result<Self, HandlerError>
    where
        P: serde::de::DeserializeOwned,
    {
        let due_at = message
            .header(DUE_AT_HEADER)
            .and_then(|millis| millis.parse::<i64>().ok())
            .and_then(|millis| Utc.timestamp_millis_opt(millis).single())
            .ok_or_else(|| {
                HandlerError::new(
                    FailureKind::Poison,
                    NOT_A_TIMER,
                    format!(
                        "{} has no valid {DUE_AT_HEADER} header",
                        message.message_type()
                    ),
                )
            })?;
        Ok(Self {
            key: message.correlation_id().unwrap_or_default().to_owned(),
            due_at,
            handled_at,
            payload: message.decode()?,
        })
    }
}

/// A timer just fired: when it was due.
pub(crate) struct FiredRow {
    pub(crate) due_at: DateTime<Utc>,
}

/// Fire up to `limit` of `consumer`'s timers due at `now` and not being fired by another
/// replica: one outbox message each to `queue` (through the default exchange), and the timers
/// deleted, in one transaction.
pub(crate) async fn fire_due(
    pool: &PgPool,
    consumer: &str,
    queue: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<FiredRow>, OutboxError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT name, key, due_at, payload, traceparent FROM msgkit_timers \
         WHERE consumer = $1 AND due_at <= $2 \
         ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(consumer)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let (mut names, mut keys, mut fired) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let name: String = row.try_get("name")?;
        let key: String = row.try_get("key")?;
        let due_at: DateTime<Utc> = row.try_get("due_at")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        let trace: Option<String> = row.try_get("traceparent")?;
        let mut message =
            OutboxMessage::event(format!("{MESSAGE_TYPE_PREFIX}{name}"), &key, &payload)?
                .with_exchange("")
                .with_routing_key(queue)
                .with_header(DUE_AT_HEADER, due_at.timestamp_millis().to_string());
        if let Some(trace) = trace.and_then(|trace| trace.parse().ok()) {
            message = message.with_trace(&trace);
        }
        outbox::enqueue(&mut tx, &message).await?;
        names.push(name);
        keys.push(key);
        fired.push(FiredRow { due_at });
    }
    if !fired.is_empty() {
        sqlx::query(
            "DELETE FROM msgkit_timers WHERE consumer = $1 \
             AND (name, key) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
        )
        .bind(consumer)
        .bind(&names)
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(fired)
}

/// When `consumer`'s next timer is due, if it has any.
pub(crate) async fn next_due(
    pool: &PgPool,
    consumer: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM msgkit_timers WHERE consumer = $1")
        .bind(consumer)
        .fetch_one(pool)
        .await
}
