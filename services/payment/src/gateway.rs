//! A payment-gateway simulator with the behaviour that matters to a consumer: latency,
//! transient errors, declines, and idempotency keys.
//!
//! | variable | default | effect |
//! | --- | --- | --- |
//! | `GATEWAY_LATENCY_MS` | 20 | time each charge or refund takes |
//! | `GATEWAY_ERROR_RATE` | 0 | fraction of calls (charges and refunds) that fail with "unavailable" (nothing charged or refunded) |
//! | `GATEWAY_DECLINE_ABOVE_CENTS` | 100000 | charges above this amount are declined |
//!
//! The first call with an idempotency key decides; every later call with the same key returns
//! that decision, so a retried charge is never taken twice. A refund gives a captured charge
//! back in full, once: a retried refund (same key) gets the first one back, and a second
//! refund of the same charge under another key is refused ([`GatewayError::AlreadyRefunded`]).
//! Refunds call nobody back. A decision, when callbacks are on
//! ([`GatewaySimulator::with_callbacks`]), is stored with the callback it owes the merchant
//! ([`crate::callbacks`]) in one statement: a charge taken always has its callback, once.

use std::time::Duration;

use contracts::GatewayOutcome;
use msgkit::config::{ConfigError, Lookup};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::callbacks::CallbackPlanner;

/// How the simulated gateway behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewaySettings {
    /// Time each charge takes.
    pub latency: Duration,
    /// Fraction of calls that fail as unavailable.
    pub error_rate: f64,
    /// Charges above this amount (cents) are declined.
    pub decline_above_cents: i64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            error_rate: 0.0,
            decline_above_cents: 100_000,
        }
    }
}

impl GatewaySettings {
    /// From `GATEWAY_*` (see the module docs).
    pub fn from_config(config: &impl Lookup) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            latency: config.millis("GATEWAY_LATENCY_MS", d.latency)?,
            error_rate: config
                .parse("GATEWAY_ERROR_RATE", d.error_rate)?
                .clamp(0.0, 1.0),
            decline_above_cents: config
                .parse("GATEWAY_DECLINE_ABOVE_CENTS", d.decline_above_cents)?,
        })
    }
}

/// What the gateway decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Money taken.
    Captured {
        /// The gateway's charge id.
        charge_id: String,
    },
    /// Refused, for good.
    Declined {
        /// Why.
        reason: String,
    },
}

/// The gateway could not decide this time.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A simulated outage: nothing was charged; try again later.
    #[error("payment gateway unavailable (simulated); nothing was charged")]
    Unavailable,
    /// The simulator's own storage failed.
    #[error("payment gateway storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// A callback could not be serialised (a bug).
    #[error("payment gateway callback is not serialisable: {0}")]
    Callback(#[from] serde_json::Error),
    /// A refund of a charge the gateway never took (unknown, or declined).
    #[error("payment gateway has no captured charge {0} to refund")]
    UnknownCharge(String),
    /// The charge was refunded already, under another idempotency key.
    #[error("charge {charge_id} was already refunded ({refund_id}) under another idempotency key")]
    AlreadyRefunded {
        /// The charge.
        charge_id: String,
        /// Its refund.
        refund_id: String,
    },
    /// The idempotency key was used for the refund of another charge.
    #[error("refund idempotency key {0} was already used for another charge")]
    RefundKeyReused(String),
}

/// A row of `gateway_refunds`.
#[derive(sqlx::FromRow)]
struct StoredRefund {
    idempotency_key: String,
    #[sqlx(flatten)]
    refund: Refund,
}

impl GatewayError {
    /// Whether trying again later can succeed: an outage or a storage failure can pass; a
    /// refused refund or a bug cannot.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable | Self::Storage(_))
    }
}

/// A charge given back.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Refund {
    /// The gateway's id of the refund.
    pub refund_id: String,
    /// The charge refunded.
    pub charge_id: String,
    /// What was given back, in cents: the whole charge.
    pub amount_cents: i64,
    /// When the gateway refunded it.
    pub refunded_at: chrono::DateTime<chrono::Utc>,
}

/// The simulator. Its ledger is the `gateway_charges` table, written in its own transactions,
/// as an external system would.
#[derive(Clone, Debug)]
pub struct GatewaySimulator {
    pool: PgPool,
    settings: GatewaySettings,
    callbacks: Option<CallbackPlanner>,
}

impl GatewaySimulator {
    /// A simulator keeping its ledger in `pool`, calling nobody back.
    pub fn new(pool: PgPool, settings: GatewaySettings) -> Self {
        Self {
            pool,
            settings,
            callbacks: None,
        }
    }

    /// Plan a callback with each new decision (see [`crate::callbacks`]).
    pub fn with_callbacks(mut self, planner: CallbackPlanner) -> Self {
        self.callbacks = Some(planner);
        self
    }

    /// Simulated latency, then a simulated outage at the configured rate.
    async fn call(&self) -> Result<(), GatewayError> {
        tokio::time::sleep(self.settings.latency).await;
        if self.settings.error_rate > 0.0
            && msgkit::consume::random_unit() < self.settings.error_rate
        {
            return Err(GatewayError::Unavailable);
        }
        Ok(())
    }

    /// Refund the captured charge `charge_id` in full under `idempotency_key`.
    #[tracing::instrument(skip(self))]
    pub async fn refund(
        &self,
        idempotency_key: &str,
        charge_id: &str,
    ) -> Result<Refund, GatewayError> {
        self.call().await?;
        let refund_id = format!("re_{}", Uuid::new_v4().simple());
        // The first refund of the charge stands: ours if the insert happened (the charge is
        // captured, neither it nor the key refunded yet), else the stored one.
        let inserted: Option<Refund> = sqlx::query_as(
            "INSERT INTO gateway_refunds (idempotency_key, charge_id, refund_id, amount_cents) \
             SELECT $1, charge_id, $3, amount_cents FROM gateway_charges \
             WHERE charge_id = $2 AND outcome = 'captured' \
             ON CONFLICT DO NOTHING \
             RETURNING refund_id, charge_id, amount_cents, created_at AS refunded_at",
        )
        .bind(idempotency_key)
        .bind(charge_id)
        .bind(&refund_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(refund) = inserted {
            return Ok(refund);
        }
        // A new statement sees a refund that a concurrent call committed while ours waited.
        let stored = sqlx::query_as::<_, StoredRefund>(
            "SELECT idempotency_key, refund_id, charge_id, amount_cents, created_at AS refunded_at \
             FROM gateway_refunds WHERE charge_id = $1",
        )
        .bind(charge_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| (row.idempotency_key, row.refund));
        match stored {
            Some((key, refund)) if key == idempotency_key => Ok(refund),
            Some((_, refund)) => Err(GatewayError::AlreadyRefunded {
                charge_id: refund.charge_id,
                refund_id: refund.refund_id,
            }),
            None => {
                let captured: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM gateway_charges \
                     WHERE charge_id = $1 AND outcome = 'captured')",
                )
                .bind(charge_id)
                .fetch_one(&self.pool)
                .await?;
                if captured {
                    Err(GatewayError::RefundKeyReused(idempotency_key.to_owned()))
                } else {
                    Err(GatewayError::UnknownCharge(charge_id.to_owned()))
                }
            }
        }
    }

    /// Charge `amount_cents` for the merchant's `order_id` (its reference, sent back in the
    /// callback) under `idempotency_key`.
    #[tracing::instrument(skip(self))]
    pub async fn charge(
        &self,
        order_id: Uuid,
        idempotency_key: &str,
        amount_cents: i64,
    ) -> Result<ChargeOutcome, GatewayError> {
        self.call().await?;
        let (outcome, reason) = if amount_cents > self.settings.decline_above_cents {
            (
                "declined",
                Some(format!(
                    "declined: amount {amount_cents} cents is above the limit of {} cents",
                    self.settings.decline_above_cents
                )),
            )
        } else {
            ("captured", None)
        };
        let charge_id = format!("ch_{}", Uuid::new_v4().simple());
        let callback = match &self.callbacks {
            Some(planner) => Some(if reason.is_none() {
                planner.plan(
                    order_id,
                    Some(charge_id.clone()),
                    GatewayOutcome::Success,
                    amount_cents,
                )?
            } else {
                planner.plan(order_id, None, GatewayOutcome::Declined, amount_cents)?
            }),
            None => None,
        };
        // The first decision under this key stands, whoever made it: ours if the insert
        // happened (with its callback, if any), else the stored one, in one round trip.
        let decided = sqlx::query(
            "WITH inserted AS ( \
                 INSERT INTO gateway_charges (idempotency_key, charge_id, amount_cents, outcome, reason) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING \
                 RETURNING charge_id, outcome, reason), \
             callback AS ( \
                 INSERT INTO gateway_callbacks (callback_id, idempotency_key, order_id, outcome, \
                     charged_amount_cents, amount_cents, body, copies, lost, due_at) \
                 SELECT $6, $1, $7, $8, $3, $9, $10, $11, $12, $13 FROM inserted \
                 WHERE $6::text IS NOT NULL) \
             SELECT charge_id, outcome, reason, true AS fresh FROM inserted \
             UNION ALL \
             SELECT charge_id, outcome, reason, false FROM gateway_charges WHERE idempotency_key = $1 \
             LIMIT 1",
        )
        .bind(idempotency_key)
        .bind(&charge_id)
        .bind(amount_cents)
        .bind(outcome)
        .bind(&reason)
        .bind(callback.as_ref().map(|c| &c.body.callback_id))
        .bind(order_id)
        .bind(callback.as_ref().map(|c| match c.body.outcome {
            GatewayOutcome::Success => "success",
            GatewayOutcome::Declined => "declined",
        }))
        .bind(callback.as_ref().map(|c| c.body.amount_cents))
        .bind(callback.as_ref().map(|c| &c.json))
        .bind(callback.as_ref().map(|c| c.copies))
        .bind(callback.as_ref().map(|c| c.lost))
        .bind(callback.as_ref().map(|c| c.due_at))
        .fetch_optional(&self.pool)
        .await?;
        let fresh = match &decided {
            Some(row) => row.try_get::<bool, _>("fresh")?,
            None => false,
        };
        if let (Some(planner), Some(planned), true) = (&self.callbacks, &callback, fresh) {
            planner.stored(planned);
        }
        let row = match decided {
            Some(row) => row,
            // A concurrent charge under the same key committed while ours waited on it: the
            // statement's snapshot predates that row, a new statement sees it.
            None => {
                sqlx::query(
                    "SELECT charge_id, outcome, reason, false AS fresh FROM gateway_charges \
                 WHERE idempotency_key = $1",
                )
                .bind(idempotency_key)
                .fetch_one(&self.pool)
                .await?
            }
        };
        let outcome: String = row.try_get("outcome")?;
        Ok(if outcome == "captured" {
            ChargeOutcome::Captured {
                charge_id: row.try_get("charge_id")?,
            }
        } else {
            ChargeOutcome::Declined {
                reason: row
                    .try_get::<Option<String>, _>("reason")?
                    .unwrap_or_default(),
            }
        })
    }
}
