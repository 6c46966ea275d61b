//! Payment's side of the saga: `inventory.reserved` -> charge -> `payment.succeeded` or
//! `payment.failed`; `order.cancel_requested` -> refund the charge -> `payment.refunded`.

use contracts::event_type::{
    INVENTORY_RESERVED, ORDER_CANCEL_REQUESTED, PAYMENT_FAILED, PAYMENT_REFUNDED, PAYMENT_SUCCEEDED,
};
use contracts::{
    InventoryReserved, OrderCancelRequested, PaymentFailed, PaymentRefunded, PaymentSucceeded,
};
use msgkit::consume::{Context, FailureKind, HandlerError, Routes};

use crate::gateway::{ChargeOutcome, GatewayError, GatewaySimulator};

/// The `payment` queue's routes, charging and refunding through `gateway`.
pub fn routes(gateway: GatewaySimulator) -> Routes<GatewaySimulator> {
    Routes::with_state(gateway)
        .route(INVENTORY_RESERVED, charge)
        .route(ORDER_CANCEL_REQUESTED, refund)
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

/// Refund a cancelled order's charge in full, once: the payment row is locked for the
/// transaction, a refund already recorded ends it (a replayed request), and the gateway's
/// idempotency key per order hands a retried refund the first one back. The refund is recorded
/// and `payment.refunded` enqueued in one transaction. An order never charged cannot be
/// refunded: dead-lettered at once, since no retry will charge it.
async fn refund(
    mut ctx: Context<'_, GatewaySimulator>,
    request: OrderCancelRequested,
) -> Result<(), HandlerError> {
    let order_id = request.order_id;
    let payment: Option<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT p.status, p.charge_id, r.order_id IS NOT NULL AS refunded \
         FROM payments p LEFT JOIN refunds r USING (order_id) \
         WHERE p.order_id = $1 FOR UPDATE OF p",
    )
    .bind(order_id)
    .fetch_optional(ctx.tx())
    .await?;
    let charge_id = match payment {
        None => {
            return Err(nothing_to_refund(format!(
                "order {order_id} was never charged: no payment to refund"
            )));
        }
        Some((_, _, true)) => {
            tracing::warn!(%order_id, "order already refunded; nothing to do");
            return Ok(());
        }
        Some((status, Some(charge_id), false)) if status == "succeeded" => charge_id,
        Some((status, _, false)) => {
            return Err(nothing_to_refund(format!(
                "order {order_id} was never charged: its payment {status}, nothing to refund"
            )));
        }
    };
    let key = format!("refund-{order_id}");
    let refunded = ctx
        .state()
        .refund(&key, &charge_id)
        .await
        .map_err(gateway_failure)?;
    sqlx::query(
        "INSERT INTO refunds (order_id, charge_id, refund_id, amount_cents, refunded_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(&refunded.charge_id)
    .bind(&refunded.refund_id)
    .bind(refunded.amount_cents)
    .bind(refunded.refunded_at)
    .execute(ctx.tx())
    .await?;
    let event = PaymentRefunded {
        order_id,
        customer_id: request.customer_id,
        charge_id: refunded.charge_id,
        refund_id: refunded.refund_id,
        amount_cents: refunded.amount_cents,
        occurred_at: refunded.refunded_at,
    };
    ctx.publish(PAYMENT_REFUNDED, &event).await?;
    tracing::info!(%order_id, refund_id = %event.refund_id, amount_cents = event.amount_cents, "charge refunded");
    Ok(())
}

/// A refund asked of an order that has no charge: a permanent business error.
fn nothing_to_refund(message: String) -> HandlerError {
    HandlerError::new(FailureKind::Poison, "payment::NothingToRefund", message)
}
