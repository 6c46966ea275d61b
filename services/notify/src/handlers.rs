//! One notification per final order state: a row in `notifications` (the primary key makes a
//! second one impossible) and a log line standing for the e-mail.

use contracts::{OrderConcluded, event_type};
use msgkit::consume::{Handler, HandlerError, IncomingMessage};
use sqlx::PgConnection;

/// Handles the `notify` queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct Notifier;

impl Handler for Notifier {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        match message.message_type() {
            event_type::ORDER_CONFIRMED
            | event_type::ORDER_REJECTED
            | event_type::ORDER_CANCELLED => {
                let order: OrderConcluded = message.decode()?;
                let text = match order.status.as_str() {
                    "confirmed" => format!("Your order {} is confirmed.", order.order_id),
                    status => format!(
                        "Your order {} was {status}: {}.",
                        order.order_id,
                        order.reason.as_deref().unwrap_or("no reason given")
                    ),
                };
                let sent = sqlx::query(
                    "INSERT INTO notifications (order_id, status, customer_id, message) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (order_id, status) DO NOTHING",
                )
                .bind(order.order_id)
                .bind(&order.status)
                .bind(&order.customer_id)
                .bind(&text)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if sent == 1 {
                    tracing::info!(order_id = %order.order_id, customer_id = %order.customer_id, status = %order.status, message = %text, "notification sent");
                } else {
                    tracing::warn!(order_id = %order.order_id, status = %order.status, "already notified");
                }
                Ok(())
            }
            _ => Err(message.unknown_type()),
        }
    }
}
