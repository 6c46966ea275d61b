//! One notification per final order state: a row in `notifications` (the primary key makes a
//! second one impossible) and a log line standing for the e-mail.

use contracts::OrderConcluded;
use contracts::event_type::{ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_REJECTED};
use msgkit::consume::{Context, HandlerError, Routes};

/// The `notify` queue's routes: every final state of an order.
pub fn routes() -> Routes {
    Routes::new()
        .route(ORDER_CONFIRMED, notify)
        .route(ORDER_REJECTED, notify)
        .route(ORDER_CANCELLED, notify)
}

async fn notify(mut ctx: Context<'_>, order: OrderConcluded) -> Result<(), HandlerError> {
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
    .execute(ctx.tx())
    .await?
    .rows_affected();
    if sent == 1 {
        tracing::info!(order_id = %order.order_id, customer_id = %order.customer_id, status = %order.status, message = %text, "notification sent");
    } else {
        tracing::warn!(order_id = %order.order_id, status = %order.status, "already notified");
    }
    Ok(())
}
