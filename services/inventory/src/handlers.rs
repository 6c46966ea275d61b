//! Inventory's side of the saga.
//!
//! `order.placed`: reserve every line or none, answer `inventory.reserved` (with the amount to
//! charge) or `inventory.rejected` (with the reason). `payment.failed`: put the reserved units
//! back and answer `inventory.released`. Both run in the kit's transaction, so a redelivery
//! never reserves or releases twice.

use contracts::{InventoryReserved, OrderPlaced, OrderSetback, event_type};
use msgkit::consume::{Handler, HandlerError, IncomingMessage};
use msgkit::outbox;
use sqlx::PgConnection;

use crate::stock;

/// Handles the `inventory` queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inventory;

impl Handler for Inventory {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        match message.message_type() {
            event_type::ORDER_PLACED => reserve(message, tx, message.decode()?).await,
            event_type::PAYMENT_FAILED => release(message, tx, message.decode()?).await,
            _ => Err(message.unknown_type()),
        }
    }

    /// Lock the stock of every SKU the batch reserves or releases, in SKU order, before any
    /// of its messages: each message alone locks its SKUs in order, but a batch would add its
    /// messages' locks up in correlation order, and two batches could then deadlock. What
    /// does not decode is left to `handle`, which dead-letters it.
    async fn before_batch(
        &self,
        messages: &[&IncomingMessage],
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let mut skus = Vec::new();
        let mut releases = Vec::new();
        for message in messages {
            match message.message_type() {
                event_type::ORDER_PLACED => {
                    if let Ok(order) = message.decode::<OrderPlaced>() {
                        skus.extend(order.items.into_iter().map(|line| line.sku));
                    }
                }
                event_type::PAYMENT_FAILED => {
                    if let Ok(failed) = message.decode::<OrderSetback>() {
                        releases.push(failed.order_id);
                    }
                }
                _ => {}
            }
        }
        stock::lock_for_batch(tx, &skus, &releases).await?;
        Ok(())
    }
}

async fn reserve(
    message: &IncomingMessage,
    tx: &mut PgConnection,
    order: OrderPlaced,
) -> Result<(), HandlerError> {
    // The inbox stops redeliveries; this stops a replayed copy with another message id.
    if stock::has_reservation(tx, order.order_id).await? {
        tracing::warn!(order_id = %order.order_id, "order already has a reservation; nothing to do");
        return Ok(());
    }
    let skus: Vec<String> = order.items.iter().map(|line| line.sku.clone()).collect();
    let levels = stock::lock(tx, &skus).await?;
    let mut shortfalls = Vec::new();
    let mut amount_cents: i64 = 0;
    for line in &order.items {
        match levels.iter().find(|level| level.sku == line.sku) {
            None => shortfalls.push(format!("unknown SKU {}", line.sku)),
            Some(level) if i64::from(level.available) < i64::from(line.quantity) => shortfalls
                .push(format!(
                    "{}: {} requested, {} available",
                    line.sku, line.quantity, level.available
                )),
            Some(level) => amount_cents += level.price_cents * i64::from(line.quantity),
        }
    }
    if !shortfalls.is_empty() {
        let reason = format!("out of stock: {}", shortfalls.join("; "));
        tracing::info!(order_id = %order.order_id, %reason, "order rejected");
        let event = OrderSetback {
            order_id: order.order_id,
            reason,
        };
        outbox::enqueue(
            tx,
            &message.follow_up(event_type::INVENTORY_REJECTED, &event)?,
        )
        .await?;
        return Ok(());
    }
    let quantities: Vec<i32> = order
        .items
        .iter()
        .map(|line| i32::try_from(line.quantity).unwrap_or(i32::MAX))
        .collect();
    stock::reserve(tx, order.order_id, &skus, &quantities).await?;
    let event = InventoryReserved {
        order_id: order.order_id,
        customer_id: order.customer_id,
        amount_cents,
    };
    outbox::enqueue(
        tx,
        &message.follow_up(event_type::INVENTORY_RESERVED, &event)?,
    )
    .await?;
    tracing::info!(order_id = %order.order_id, amount_cents, "stock reserved");
    Ok(())
}

async fn release(
    message: &IncomingMessage,
    tx: &mut PgConnection,
    failed: OrderSetback,
) -> Result<(), HandlerError> {
    let lines = stock::release(tx, failed.order_id).await?;
    if lines == 0 {
        tracing::warn!(order_id = %failed.order_id, "no reservation to release");
        return Ok(());
    }
    let event = OrderSetback {
        order_id: failed.order_id,
        reason: format!("released after payment failed: {}", failed.reason),
    };
    outbox::enqueue(
        tx,
        &message.follow_up(event_type::INVENTORY_RELEASED, &event)?,
    )
    .await?;
    tracing::info!(order_id = %failed.order_id, lines, "reservation released");
    Ok(())
}
