//! The order's side of the saga: results from inventory and payment move the order to its
//! final state, and the final state is announced to notify.
//!
//! Duplicates are absorbed by the kit's inbox. Out-of-order or late events cannot corrupt the
//! state: only a `pending` order moves, to one final state, once; anything after that is
//! recorded in the history and otherwise ignored.

use contracts::event_type::{
    INVENTORY_REJECTED, INVENTORY_RELEASED, INVENTORY_RESERVED, ORDER_CANCELLED, ORDER_CONFIRMED,
    ORDER_REJECTED, PAYMENT_FAILED, PAYMENT_SUCCEEDED,
};
use contracts::{InventoryReserved, OrderConcluded, OrderSetback, PaymentFailed, PaymentSucceeded};
use msgkit::consume::{Context, FailureKind, HandlerError, Routes};
use uuid::Uuid;

use crate::domain::OrderStatus;
use crate::storage;

/// The `order` queue's routes: every result of inventory and payment.
pub fn routes() -> Routes {
    Routes::new()
        .route(INVENTORY_RESERVED, reserved)
        .route(INVENTORY_RELEASED, released)
        .route(INVENTORY_REJECTED, rejected)
        .route(PAYMENT_FAILED, payment_failed)
        .route(PAYMENT_SUCCEEDED, payment_succeeded)
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
