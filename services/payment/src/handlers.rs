//! Payment's side of the saga: `inventory.reserved` -> charge -> `payment.succeeded` or
//! `payment.failed`.

use contracts::{InventoryReserved, OrderSetback, PaymentSucceeded, event_type};
use msgkit::consume::{Handler, HandlerError, IncomingMessage};
use msgkit::outbox;
use sqlx::PgConnection;

use crate::gateway::{ChargeOutcome, GatewayError, GatewaySimulator};

/// Handles the `payment` queue.
#[derive(Clone, Debug)]
pub struct Payments {
    gateway: GatewaySimulator,
}

impl Payments {
    /// Charging through `gateway`.
    pub fn new(gateway: GatewaySimulator) -> Self {
        Self { gateway }
    }
}

impl Handler for Payments {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        match message.message_type() {
            event_type::INVENTORY_RESERVED => self.charge(message, tx, message.decode()?).await,
            _ => Err(message.unknown_type()),
        }
    }
}

impl Payments {
    async fn charge(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
        reserved: InventoryReserved,
    ) -> Result<(), HandlerError> {
        let order_id = reserved.order_id;
        let settled: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1)")
                .bind(order_id)
                .fetch_one(&mut *tx)
                .await?;
        if settled {
            tracing::warn!(%order_id, "order already has a payment; nothing to do");
            return Ok(());
        }
        // One idempotency key per order: if this transaction fails after the charge, the retry
        // gets the same charge back instead of a second one.
        let key = format!("order-{order_id}");
        let outcome = self
            .gateway
            .charge(&key, reserved.amount_cents)
            .await
            .map_err(|error| match error {
                GatewayError::Unavailable | GatewayError::Storage(_) => {
                    HandlerError::transient(error)
                }
            })?;
        let (status, charge_id, reason) = match &outcome {
            ChargeOutcome::Captured { charge_id } => ("succeeded", Some(charge_id.as_str()), None),
            ChargeOutcome::Declined { reason } => ("failed", None, Some(reason.as_str())),
        };
        sqlx::query(
            "INSERT INTO payments (order_id, status, amount_cents, charge_id, reason) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_id)
        .bind(status)
        .bind(reserved.amount_cents)
        .bind(charge_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let event = match outcome {
            ChargeOutcome::Captured { charge_id } => message.follow_up(
                event_type::PAYMENT_SUCCEEDED,
                &PaymentSucceeded {
                    order_id,
                    charge_id,
                    amount_cents: reserved.amount_cents,
                },
            )?,
            ChargeOutcome::Declined { reason } => message.follow_up(
                event_type::PAYMENT_FAILED,
                &OrderSetback { order_id, reason },
            )?,
        };
        outbox::enqueue(tx, &event).await?;
        tracing::info!(%order_id, status, "payment settled");
        Ok(())
    }
}
