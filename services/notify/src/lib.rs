//! The notify service: tells the customer once when an order reaches its final state (a row
//! in `notifications`, whose key makes a second one impossible, and a log line for the e-mail).

use contracts::OrderConcluded;
use contracts::event_type::{ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_REJECTED};
use msgkit::consume::{ConsumerConfig, Context, HandlerError, Routes};
use msgkit::service::{Service, ServiceError, ServiceSettings};

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "notify";

/// The notify service, ready to run. It only inserts rows, so it handles 16 deliveries per
/// transaction unless `NOTIFY_CONSUMER_BATCH` (or `CONSUMER_BATCH`) says otherwise.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let migrations = sqlx::migrate!("./migrations");
    Service::start(settings, contracts::topology(), migrations)
        .await?
        .consume_with(ConsumerConfig::new(NAME, NAME).batch(16), routes())
}

/// The `notify` queue's routes: every final state of an order.
pub fn routes() -> Routes {
    let routes = Routes::new().route(ORDER_CONFIRMED, notify);
    routes
        .route(ORDER_REJECTED, notify)
        .route(ORDER_CANCELLED, notify)
}

async fn notify(mut ctx: Context<'_>, order: OrderConcluded) -> Result<(), HandlerError> {
    let text = match order.reason.as_deref() {
        None => format!("Your order {} is {}.", order.order_id, order.status),
        Some(reason) => format!(
            "Your order {} was {}: {reason}.",
            order.order_id, order.status
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
    .await?;
    tracing::info!(order_id = %order.order_id, status = %order.status, message = %text, first = sent.rows_affected() == 1, "customer notified");
    Ok(())
}
