//! A payment-gateway simulator with the behaviour that matters to a consumer: latency,
//! transient errors, declines, and idempotency keys.
//!
//! | variable | default | effect |
//! | --- | --- | --- |
//! | `GATEWAY_LATENCY_MS` | 20 | time each charge takes |
//! | `GATEWAY_ERROR_RATE` | 0 | fraction of calls that fail with "unavailable" (nothing charged) |
//! | `GATEWAY_DECLINE_ABOVE_CENTS` | 100000 | charges above this amount are declined |
//!
//! The first call with an idempotency key decides; every later call with the same key returns
//! that decision, so a retried charge is never taken twice. A decision, when callbacks are on
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

    /// Charge `amount_cents` for the merchant's `order_id` (its reference, sent back in the
    /// callback) under `idempotency_key`.
    #[tracing::instrument(skip(self))]
    pub async fn charge(
        &self,
        order_id: Uuid,
        idempotency_key: &str,
        amount_cents: i64,
    ) -> Result<ChargeOutcome, GatewayError> {
        tokio::time::sleep(self.settings.latency).await;
        if self.settings.error_rate > 0.0
            && msgkit::consume::random_unit() < self.settings.error_rate
        {
            return Err(GatewayError::Unavailable);
        }
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
