//! Inventory's side of the saga.
//!
//! `order.placed`: reserve every line or none, answer `inventory.reserved` (with the amount to
//! charge) or `inventory.rejected` (with the reason). `payment.failed`: put the reserved units
//! back and answer `inventory.released`. `payment.refunded` (a customer cancelled a confirmed
//! order): put its reserved units back, answering nothing (order cancels the order on the
//! same event). All run in the kit's transaction, so a redelivery never reserves or releases
//! twice, and a release touches only lines still reserved, so a replayed copy (another
//! message id) puts nothing back twice either.

use contracts::event_type::{
    INVENTORY_REJECTED, INVENTORY_RELEASED, INVENTORY_RESERVED, ORDER_PLACED, PAYMENT_FAILED,
    PAYMENT_REFUNDED,
};
use contracts::{InventoryReserved, OrderPlaced, OrderSetback, PaymentFailed, PaymentRefunded};
use msgkit::consume::{Batch, Context, FailureKind, HandlerError, Routes};
use sqlx::PgPool;

use crate::stock;

/// A deliberately broken inventory, for the chaos runner's proof that its SQL invariants catch
/// an effect applied outside the consumer's transaction: with a pool here, a reservation first
/// takes the stock through that pool (committed at once, whatever becomes of the message), and
/// its first attempt then fails, so the retry takes the stock again. Never in production; set
/// by `INVENTORY_BROKEN_STOCK_OUTSIDE_TRANSACTION=1`.
#[derive(Clone, Default)]
pub struct Broken(pub Option<PgPool>);

/// The `inventory` queue's routes.
pub fn routes() -> Routes<Broken> {
    routes_with(Broken::default())
}

/// The routes, deliberately broken when `broken` holds a pool (see [`Broken`]).
pub fn routes_with(broken: Broken) -> Routes<Broken> {
    Routes::with_state(broken)
        .route(ORDER_PLACED, reserve)
        .route(PAYMENT_FAILED, release)
        .route(PAYMENT_REFUNDED, restock)
        .before_batch(lock_batch_stock)
}

/// Lock the stock of every SKU the batch reserves or releases, in SKU order, before any of its
/// messages: each message alone locks its SKUs in order, but a batch would add its messages'
/// locks up in correlation order, and two batches could then deadlock. What does not decode
/// is left to its route, which dead-letters it.
async fn lock_batch_stock(mut batch: Batch<'_, Broken>) -> Result<(), HandlerError> {
    let skus: Vec<String> = batch
        .payloads(ORDER_PLACED)
        .flat_map(|order| order.items.into_iter().map(|line| line.sku))
        .collect();
    let releases: Vec<_> = batch
        .payloads(PAYMENT_FAILED)
        .map(|failed| failed.order_id)
        .chain(
            batch
                .payloads(PAYMENT_REFUNDED)
                .map(|refunded| refunded.order_id),
        )
        .collect();
    stock::lock_for_batch(batch.tx(), &skus, &releases).await?;
    Ok(())
}

async fn reserve(mut ctx: Context<'_, Broken>, order: OrderPlaced) -> Result<(), HandlerError> {
    if let Broken(Some(pool)) = ctx.state() {
        take_stock_outside_the_transaction(pool, &order, ctx.attempt()).await?;
    }
    let tx = ctx.tx();
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
        ctx.publish(INVENTORY_REJECTED, &event).await?;
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
        // Payment passes it on in `payment.succeeded`, for the risk rules.
        location: order.location,
    };
    ctx.publish(INVENTORY_RESERVED, &event).await?;
    tracing::info!(order_id = %order.order_id, amount_cents, "stock reserved");
    Ok(())
}

async fn release(mut ctx: Context<'_, Broken>, failed: PaymentFailed) -> Result<(), HandlerError> {
    let lines = stock::release(ctx.tx(), failed.order_id).await?;
    if lines == 0 {
        tracing::warn!(order_id = %failed.order_id, "no reservation to release");
        return Ok(());
    }
    let event = OrderSetback {
        order_id: failed.order_id,
        reason: format!("released after payment failed: {}", failed.reason),
    };
    ctx.publish(INVENTORY_RELEASED, &event).await?;
    tracing::info!(order_id = %failed.order_id, lines, "reservation released");
    Ok(())
}

async fn restock(
    mut ctx: Context<'_, Broken>,
    refunded: PaymentRefunded,
) -> Result<(), HandlerError> {
    let lines = stock::release(ctx.tx(), refunded.order_id).await?;
    if lines == 0 {
        tracing::warn!(order_id = %refunded.order_id, "refunded order has no reservation to put back");
    } else {
        tracing::info!(order_id = %refunded.order_id, lines, "stock of a refunded order put back");
    }
    Ok(())
}

/// The broken part of [`Broken`]: the effect commits on its own connection, then the first
/// attempt fails as a crash would, and the retry applies it again.
async fn take_stock_outside_the_transaction(
    pool: &PgPool,
    order: &OrderPlaced,
    attempt: u32,
) -> Result<(), HandlerError> {
    for line in &order.items {
        sqlx::query(
            "UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2",
        )
        .bind(&line.sku)
        .bind(i32::try_from(line.quantity).unwrap_or(i32::MAX))
        .execute(pool)
        .await?;
    }
    if attempt == 1 {
        return Err(HandlerError::new(
            FailureKind::Transient,
            "inventory::BrokenOnPurpose",
            "crashed after taking the stock outside the transaction",
        ));
    }
    Ok(())
}
