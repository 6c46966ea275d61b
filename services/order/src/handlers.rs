//! The order's side of the saga: results from inventory and payment move the order to its
//! final state, and the final state is announced to notify.
//!
//! Duplicates are absorbed by the kit's inbox. Out-of-order or late events cannot corrupt the
//! state: only a `pending` order moves, to one final state, once; anything after that is
//! recorded in the history and otherwise ignored. The one move out of a final state is a
//! customer's cancellation: once payment has refunded a `confirmed` order's charge
//! (`payment.refunded`), the order becomes `cancelled` and notify is told.

use contracts::event_type::{
    INVENTORY_REJECTED, INVENTORY_RELEASED, INVENTORY_RESERVED, ORDER_CANCELLED, ORDER_CONFIRMED,
    ORDER_REJECTED, PAYMENT_FAILED, PAYMENT_REFUNDED, PAYMENT_SUCCEEDED,
};
use contracts::{
    InventoryReserved, OrderConcluded, OrderSetback, PaymentFailed, PaymentRefunded,
    PaymentSucceeded,
};
use msgkit::consume::{Context, FailureKind, HandlerError, Routes};
use uuid::Uuid;

use crate::domain::OrderStatus;
use crate::storage;

/// The `order` queue's routes: every result of inventory and payment, refunds included.
pub fn routes() -> Routes {
    Routes::new()
        .route(INVENTORY_RESERVED, reserved)
        .route(INVENTORY_RELEASED, released)
        .route(INVENTORY_REJECTED, rejected)
        .route(PAYMENT_FAILED, payment_failed)
        .route(PAYMENT_SUCCEEDED, payment_succeeded)
        .route(PAYMENT_REFUNDED, refunded)
}

async fn reserved(ctx: Context<'_>, event: InventoryReserved) -> Result<(), HandlerError> {
    note(ctx, event.order_id, None).await
}

async fn released(ctx: Context<'_>, event: OrderSetback) -> Result<(), HandlerError> {
    note(ctx, event.order_id, Some(&event.reason)).await
}

async fn rejected(ctx: Context<'_>, event: OrderSetback) -> Result<(), HandlerError> {
    conclude(
        ctx,
        event.order_id,
        OrderStatus::Rejected,
        Some(&event.reason),
    )
    .await
}

async fn payment_failed(ctx: Context<'_>, event: PaymentFailed) -> Result<(), HandlerError> {
    conclude(
        ctx,
        event.order_id,
        OrderStatus::Cancelled,
        Some(&event.reason),
    )
    .await
}

async fn payment_succeeded(ctx: Context<'_>, event: PaymentSucceeded) -> Result<(), HandlerError> {
    conclude(ctx, event.order_id, OrderStatus::Confirmed, None).await
}

/// The charge of a confirmed order was refunded (the customer cancelled it): the order becomes
/// `cancelled` and notify tells the customer. A refund for an order in any other state only
/// leaves a trace in the history.
async fn refunded(mut ctx: Context<'_>, event: PaymentRefunded) -> Result<(), HandlerError> {
    let (message_type, message_id) = (ctx.message_type(), ctx.message_uuid());
    let order_id = event.order_id;
    let Some((current, customer_id)) = storage::lock_order(ctx.tx(), order_id).await? else {
        return Err(unknown_order(order_id));
    };
    if current != OrderStatus::Confirmed.as_str() {
        tracing::warn!(%order_id, %current, "refund for an order that is not confirmed ignored");
        let note = format!("ignored: order already {current}");
        storage::record_history(
            ctx.tx(),
            order_id,
            &current,
            message_type,
            Some(&note),
            message_id,
        )
        .await?;
        return Ok(());
    }
    let refunded = format!("refunded {}", money(event.amount_cents));
    let reason = if storage::cancellation_request(ctx.tx(), order_id)
        .await?
        .is_some()
    {
        format!("cancelled by the customer; {refunded}")
    } else {
        // Not asked for through this API; the money is back with the customer all the same.
        tracing::warn!(%order_id, "refund of an order whose cancellation was never requested");
        refunded
    };
    let status = OrderStatus::Cancelled;
    storage::move_to(
        ctx.tx(),
        order_id,
        status,
        message_type,
        Some(&reason),
        message_id,
    )
    .await?;
    let announced = OrderConcluded {
        order_id,
        customer_id,
        status: status.as_str().to_owned(),
        reason: Some(reason),
    };
    ctx.publish(ORDER_CANCELLED, &announced).await?;
    tracing::info!(%order_id, refund_id = %event.refund_id, "order cancelled and refunded");
    Ok(())
}

/// Cents as an amount with two decimals: `1234` is `12.34`.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

/// A step that does not change the order's state: recorded in its history.
async fn note(
    mut ctx: Context<'_>,
    order_id: Uuid,
    reason: Option<&str>,
) -> Result<(), HandlerError> {
    let (message_type, message_id) = (ctx.message_type(), ctx.message_uuid());
    let Some((status, _)) = storage::lock_order(ctx.tx(), order_id).await? else {
        return Err(unknown_order(order_id));
    };
    storage::record_history(
        ctx.tx(),
        order_id,
        &status,
        message_type,
        reason,
        message_id,
    )
    .await?;
    Ok(())
}

/// Move a pending order to its final `status` and announce it; a late event for an order that
/// is already final only leaves a trace in the history.
async fn conclude(
    mut ctx: Context<'_>,
    order_id: Uuid,
    status: OrderStatus,
    reason: Option<&str>,
) -> Result<(), HandlerError> {
    let (message_type, message_id) = (ctx.message_type(), ctx.message_uuid());
    let Some((current, customer_id)) = storage::lock_order(ctx.tx(), order_id).await? else {
        return Err(unknown_order(order_id));
    };
    if current != OrderStatus::Pending.as_str() {
        tracing::warn!(%order_id, %current, event = message_type, "event for a concluded order ignored");
        let note = format!("ignored: order already {current}");
        storage::record_history(
            ctx.tx(),
            order_id,
            &current,
            message_type,
            Some(&note),
            message_id,
        )
        .await?;
        return Ok(());
    }
    storage::move_to(ctx.tx(), order_id, status, message_type, reason, message_id).await?;
    let announced = match status {
        OrderStatus::Confirmed => ORDER_CONFIRMED,
        OrderStatus::Rejected => ORDER_REJECTED,
        OrderStatus::Cancelled => ORDER_CANCELLED,
        OrderStatus::Pending => return Ok(()),
    };
    let event = OrderConcluded {
        order_id,
        customer_id,
        status: status.as_str().to_owned(),
        reason: reason.map(str::to_owned),
    };
    ctx.publish(announced, &event).await?;
    tracing::info!(%order_id, status = status.as_str(), "order concluded");
    Ok(())
}

/// An event about an order this service never accepted: no retry will make it exist.
fn unknown_order(order_id: Uuid) -> HandlerError {
    HandlerError::new(
        FailureKind::Poison,
        "order::UnknownOrder",
        format!("no order {order_id}"),
    )
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn cents_read_as_money() {
        assert_eq!(money(1234), "12.34");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(250_000), "2500.00");
        assert_eq!(money(-1), "-0.01");
    }
}
