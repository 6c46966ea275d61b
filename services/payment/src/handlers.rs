//! Payment's side of the saga: `inventory.reserved` -> charge -> `payment.succeeded` or
//! `payment.failed`.

use contracts::event_type::{INVENTORY_RESERVED, PAYMENT_FAILED, PAYMENT_SUCCEEDED};
use contracts::{InventoryReserved, PaymentFailed, PaymentSucceeded};
use msgkit::consume::{Context, HandlerError, Routes};

use crate::gateway::{ChargeOutcome, GatewayError, GatewaySimulator};

/// The `payment` queue's routes, charging through `gateway`.
pub fn routes(gateway: GatewaySimulator) -> Routes<GatewaySimulator> {
    Routes::with_state(gateway).route(INVENTORY_RESERVED, charge)
}

/// A gateway failure as the consumer treats it: an outage is retried, the rest dead-lettered.
fn gateway_failure(error: GatewayError) -> HandlerError {
    if error.is_transient() {
        HandlerError::transient(error)
    } else {
        HandlerError::poison(error)
    }
}

async fn charge(
    mut ctx: Context<'_, GatewaySimulator>,
    reserved: InventoryReserved,
) -> Result<(), HandlerError> {
    let order_id = reserved.order_id;
    let settled: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1)")
            .bind(order_id)
            .fetch_one(ctx.tx())
            .await?;
    if settled {
        tracing::warn!(%order_id, "order already has a payment; nothing to do");
        return Ok(());
    }
    // One idempotency key per order: if this transaction fails after the charge, the retry
    // gets the same charge back instead of a second one.
    let key = format!("order-{order_id}");
    let outcome = ctx
        .state()
        .charge(order_id, &key, reserved.amount_cents)
        .await
        .map_err(gateway_failure)?;
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
        .execute(ctx.tx())
        .await?;
    match outcome {
        ChargeOutcome::Captured { charge_id } => {
            let event = PaymentSucceeded {
                order_id,
                charge_id,
                amount_cents: reserved.amount_cents,
                customer_id: reserved.customer_id,
                location: reserved.location,
                // Risk evaluates the payment as a transaction at this time.
                occurred_at: Some(ctx.now()),
            };
            ctx.publish(PAYMENT_SUCCEEDED, &event).await?
        }
        ChargeOutcome::Declined { reason } => {
            ctx.publish(
                PAYMENT_FAILED,
                &PaymentFailed {
                    order_id,
                    reason,
                    amount_cents: Some(reserved.amount_cents),
                },
            )
            .await?
        }
    };
    tracing::info!(%order_id, status, "payment settled");
    Ok(())
}
