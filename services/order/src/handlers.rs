//! The order's side of the saga: results from inventory and payment move the order to its
//! final state, and the final state is announced to notify.
//!
//! Duplicates are absorbed by the kit's inbox. Out-of-order or late events cannot corrupt the
//! state: only a `pending` order moves, to one final state, once; anything after that is
//! recorded in the history and otherwise ignored.

use contracts::{OrderConcluded, OrderSetback, PaymentSucceeded, event_type};
use msgkit::consume::{FailureKind, Handler, HandlerError, IncomingMessage};
use msgkit::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::OrderStatus;
use crate::storage;

/// Handles the `order` queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderSaga;

impl Handler for OrderSaga {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        match message.message_type() {
            event_type::INVENTORY_RESERVED | event_type::INVENTORY_RELEASED => {
                let event: serde_json::Value = message.decode()?;
                let order_id = order_id_of(&event)?;
                let reason = event["reason"].as_str();
                let Some((status, _)) = storage::lock_order(tx, order_id).await? else {
                    return Err(unknown_order(order_id));
                };
                storage::record_history(
                    tx,
                    order_id,
                    &status,
                    message.message_type(),
                    reason,
                    message_uuid(message),
                )
                .await?;
                Ok(())
            }
            event_type::INVENTORY_REJECTED => {
                let event: OrderSetback = message.decode()?;
                conclude(
                    message,
                    tx,
                    event.order_id,
                    OrderStatus::Rejected,
                    Some(&event.reason),
                )
                .await
            }
            event_type::PAYMENT_FAILED => {
                let event: OrderSetback = message.decode()?;
                conclude(
                    message,
                    tx,
                    event.order_id,
                    OrderStatus::Cancelled,
                    Some(&event.reason),
                )
                .await
            }
            event_type::PAYMENT_SUCCEEDED => {
                let event: PaymentSucceeded = message.decode()?;
                conclude(message, tx, event.order_id, OrderStatus::Confirmed, None).await
            }
            _ => Err(message.unknown_type()),
        }
    }
}

/// Move a pending order to its final `status` and announce it; a late event for an order that
/// is already final only leaves a trace in the history.
async fn conclude(
    message: &IncomingMessage,
    tx: &mut PgConnection,
    order_id: Uuid,
    status: OrderStatus,
    reason: Option<&str>,
) -> Result<(), HandlerError> {
    let Some((current, customer_id)) = storage::lock_order(tx, order_id).await? else {
        return Err(unknown_order(order_id));
    };
    if current != OrderStatus::Pending.as_str() {
        tracing::warn!(%order_id, %current, event = message.message_type(), "event for a concluded order ignored");
        let note = format!("ignored: order already {current}");
        storage::record_history(
            tx,
            order_id,
            &current,
            message.message_type(),
            Some(&note),
            message_uuid(message),
        )
        .await?;
        return Ok(());
    }
    storage::move_to(
        tx,
        order_id,
        status,
        message.message_type(),
        reason,
        message_uuid(message),
    )
    .await?;
    let announced = match status {
        OrderStatus::Confirmed => event_type::ORDER_CONFIRMED,
        OrderStatus::Rejected => event_type::ORDER_REJECTED,
        OrderStatus::Cancelled => event_type::ORDER_CANCELLED,
        OrderStatus::Pending => return Ok(()),
    };
    let event = OrderConcluded {
        order_id,
        customer_id,
        status: status.as_str().to_owned(),
        reason: reason.map(str::to_owned),
    };
    outbox::enqueue(tx, &message.follow_up(announced, &event)?).await?;
    tracing::info!(%order_id, status = status.as_str(), "order concluded");
    Ok(())
}

fn order_id_of(event: &serde_json::Value) -> Result<Uuid, HandlerError> {
    event["order_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            HandlerError::new(
                FailureKind::Poison,
                "order::MissingOrderId",
                "event has no valid order_id",
            )
        })
}

fn message_uuid(message: &IncomingMessage) -> Option<Uuid> {
    message.message_id().and_then(|id| id.parse().ok())
}

/// An event about an order this service never accepted: no retry will make it exist.
fn unknown_order(order_id: Uuid) -> HandlerError {
    HandlerError::new(
        FailureKind::Poison,
        "order::UnknownOrder",
        format!("no order {order_id}"),
    )
}
